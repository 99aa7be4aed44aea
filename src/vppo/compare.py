"""`vppo compare`: GRPO vs DAPO vs VPPO (and the TAS-only / TGF-only ablations) on the synthetic task.

Every (method, seed) run starts from the same warm-started model, trains for the same number of
steps with the same prompts per step through the same `VPPOTrainer` (only the method's switches
differ, read from the recipes by `vppo.demo.method_overrides`), and is scored by test avg@k. The
command writes a markdown table in the style of the paper's Tables 1/2 (mean ± standard deviation
over seeds) and a training-curve plot in the style of its Figure 5 (training reward per step, mean
over seeds with a ±1 sd band).

Runs are resumable: each finished run writes ``runs/<method>/seed<k>.json``; a rerun with the
same settings skips it, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from vppo.demo import (
    METHODS,
    DemoSettings,
    RunResult,
    default_checkpoint,
    load_policy,
    quiet_library_noise,
    synthetic_split,
    train_rl,
    training_dataset,
)
from vppo.warmstart import (
    choose_num_threads,
    evaluate_pass_rate,
    synthetic_benchmark,
    synthetic_eval_settings,
)

__all__ = [
    "COMPARE_DEFAULTS",
    "METHOD_TITLES",
    "aggregate",
    "format_table",
    "main",
    "mean_std",
    "plot_curves",
    "run_comparison",
    "run_fingerprint",
]

METHOD_TITLES: dict[str, str] = {
    "grpo": "GRPO",
    "dapo": "DAPO",
    "vppo": "VPPO",
    "tas_only": "DAPO + TAS only",
    "tgf_only": "DAPO + TGF only",
}
COMPARE_DEFAULTS = DemoSettings(steps=40, eval_size=128, eval_k=8, summary_responses=0)
"""Every run's set-up: the demo's, without the perception summary."""
_QUICK = replace(COMPARE_DEFAULTS, steps=1, prompts_per_step=2, num_generations=4, train_size=16,
                 eval_size=4, eval_k=1)


# DemoSettings fields added after runs were stored, with the value every earlier run had. A field
# at this value is left out of the fingerprint, so the runs made before it existed keep theirs.
_FINGERPRINT_SINCE: dict[str, Any] = {"task": "shapes"}


def run_fingerprint(settings: DemoSettings, checkpoint: str) -> str:
    """12 hex digits over everything that changes a run's result except method and seed.

    Fields added to `DemoSettings` later (``task``) count only when they differ from the value
    every earlier run had, so adding a field does not invalidate the stored runs: the shipped
    shapes set-up, ``run_fingerprint(COMPARE_DEFAULTS, "shipped")``, is ``456479f196a5`` as before.
    """
    payload = asdict(replace(settings, seed=0))
    for name, old_value in _FINGERPRINT_SINCE.items():
        if payload[name] == old_value:
            del payload[name]
    payload["checkpoint"] = checkpoint
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for a single value)."""
    if not values:
        raise ValueError("mean_std needs at least one value.")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _final_reward(curve: Sequence[Mapping[str, float]], fraction: float = 0.25) -> float | None:
    rewards = [row["reward"] for row in curve if "reward" in row]
    if not rewards:
        return None
    tail = rewards[-max(1, int(round(len(rewards) * fraction))):]
    return sum(tail) / len(tail)


def aggregate(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per method: seeds, test avg@k per seed, mean/sd, final-quarter training reward mean/sd."""
    table: dict[str, dict[str, Any]] = {}
    for method, runs in results.items():
        if not runs:
            continue
        scores = [float(r["after"]) for r in runs]
        rewards = [x for x in (_final_reward(r["curve"]) for r in runs) if x is not None]
        mean, sd = mean_std(scores)
        row = {"seeds": [r["seed"] for r in runs], "scores": scores, "mean": mean, "sd": sd,
               "min": min(scores), "max": max(scores),
               "minutes": sum(r["seconds"].get("train", 0.0) for r in runs) / 60 / len(runs)}
        if rewards:
            row["final_reward_mean"], row["final_reward_sd"] = mean_std(rewards)
        table[method] = row
    return table


def format_table(
    summary: Mapping[str, Mapping[str, Any]], *, before: float | None, k: int, steps: int,
    eval_size: int,
) -> str:
    """A markdown table: one row per method, test avg@k mean ± sd over seeds and per seed."""
    lines = [
        f"| Method | Test avg@{k} (%) mean ± sd | Δ vs start | Per seed | "
        f"Train reward, last 25% of steps | Minutes / run |",
        "|---|---|---|---|---|---|",
    ]
    if before is not None:
        lines.append(f"| Warm start (no RL) | {before:.1f} | – | – | – | – |")
    for method, row in summary.items():
        title = METHOD_TITLES.get(method, method)
        per_seed = ", ".join(f"{s:.1f}" for s in row["scores"])
        delta = f"{row['mean'] - before:+.1f}" if before is not None else "–"
        reward = (f"{row['final_reward_mean']:.3f} ± {row['final_reward_sd']:.3f}"
                  if "final_reward_mean" in row else "–")
        lines.append(f"| {title} | {row['mean']:.1f} ± {row['sd']:.1f} | {delta} | {per_seed} | "
                     f"{reward} | {row['minutes']:.1f} |")
    n = max((len(r["scores"]) for r in summary.values()), default=0)
    lines.append("")
    lines.append(f"{n} seed(s) per method, {steps} steps each; test split of {eval_size} "
                 f"questions x {k} samples at T = 1; sd is the sample standard deviation over seeds.")
    return "\n".join(lines)


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing running mean (the first points average what there is)."""
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1): i + 1]
        out.append(sum(part) / len(part))
    return out


def plot_curves(
    results: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, *, window: int = 5,
    title: str | None = None,
) -> Path:
    """Training reward vs step per method: mean over seeds of the running mean, ±1 sd band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if window < 1:
        raise ValueError(f"window must be a positive integer, got {window}.")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colours = {"grpo": "#7f7f7f", "dapo": "#1f77b4", "vppo": "#d62728", "tas_only": "#2ca02c",
               "tgf_only": "#9467bd"}
    drawn = 0
    for method, runs in results.items():
        curves = []
        for run in runs:
            points = [(int(r["step"]), r["reward"]) for r in run["curve"] if "reward" in r]
            if points:
                curves.append(dict(points))
        if not curves:
            continue
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        if not steps:
            continue
        matrix = np.array([_smooth([c[s] for s in steps], window) for c in curves])
        mean = matrix.mean(0)
        sd = matrix.std(0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
        colour = colours.get(method)
        label = f"{METHOD_TITLES.get(method, method)} (n={len(curves)})"
        ax.plot(steps, mean, color=colour, label=label, linewidth=1.8)
        ax.fill_between(steps, mean - sd, mean + sd, color=colour, alpha=0.15, linewidth=0)
        drawn += 1
    if drawn == 0:
        plt.close(fig)
        raise ValueError("plot_curves: no run has a training curve to plot.")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training reward, running mean of {window} batches")
    ax.set_title(title or "Training reward on the synthetic task (mean ± 1 sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_comparison(
    methods: Sequence[str],
    seeds: Sequence[int],
    settings: DemoSettings,
    output_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    table_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    progress: bool = True,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every missing (method, seed), then write the table and the plot.

    Returns:
        ``{"before": warm-start test avg@k, "summary": aggregate(...), "table": markdown,
        "table_path", "plot_path"}``.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty list from {', '.join(METHODS)}, got "
                         f"{list(methods)}.")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list without repeats, got {list(seeds)}.")
    output = Path(output_dir)
    ckpt = str(checkpoint) if checkpoint is not None else str(default_checkpoint())
    fingerprint = run_fingerprint(settings, "shipped" if checkpoint is None else ckpt)
    test = synthetic_split("test", settings.eval_size, settings.eval_seed)
    benchmark = synthetic_benchmark(test, "synthetic-test")
    eval_settings = synthetic_eval_settings(settings.eval_k, seed=settings.eval_seed,
                                            max_new_tokens=settings.max_completion_length)

    before_file = output / "before.json"
    cached = _read_json(before_file)
    if cached and cached.get("fingerprint") == fingerprint:
        before = float(cached["score"])
    else:
        model, processor = load_policy(checkpoint)
        before = evaluate_pass_rate(model, processor, benchmark, eval_settings,
                                    output / "eval" / "before", model_id=f"before-{fingerprint}",
                                    progress=progress).score
        _write_json(before_file, {"fingerprint": fingerprint, "score": before})
    out(f"warm start: test avg@{settings.eval_k} {before:.1f}%")

    raw_train = synthetic_split("train", settings.train_size, 0)
    train_rows = training_dataset(raw_train)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for seed in seeds:
        for method in methods:
            file = output / "runs" / method / f"seed{seed}.json"
            done = _read_json(file)
            if done and done.get("fingerprint") == fingerprint:
                out(f"{method} seed {seed}: done earlier, test avg@{settings.eval_k} "
                    f"{done['after']:.1f}%")
                results[method].append(done)
                continue
            run_settings = replace(settings, seed=seed)
            started = time.perf_counter()
            model, processor = load_policy(checkpoint)
            _, curve = train_rl(model, processor, train_rows, method, run_settings,
                                output / "trainer_tmp", progress=progress,
                                desc=f"{method} seed {seed}")
            trained = time.perf_counter()
            shutil.rmtree(output / "trainer_tmp", ignore_errors=True)
            eval_dir = output / "eval" / method / f"seed{seed}"
            shutil.rmtree(eval_dir, ignore_errors=True)  # samples of an interrupted earlier attempt
            after = evaluate_pass_rate(model, processor, benchmark, eval_settings, eval_dir,
                                       model_id=f"{method}-seed{seed}-{fingerprint}",
                                       progress=progress).score
            seconds = {"train": round(trained - started, 1),
                       "eval": round(time.perf_counter() - trained, 1)}
            run = RunResult(method, seed, settings.steps, before, after, curve, seconds,
                            asdict(run_settings)).to_dict()
            run["fingerprint"] = fingerprint
            _write_json(file, run)
            results[method].append(run)
            out(f"{method} seed {seed}: test avg@{settings.eval_k} {after:.1f}% "
                f"({after - before:+.1f}), {seconds['train']:.0f} s training")

    summary = aggregate(results)
    table = format_table(summary, before=before, k=settings.eval_k, steps=settings.steps,
                         eval_size=settings.eval_size)
    table_file = Path(table_path) if table_path is not None else output / "comparison.md"
    table_file.parent.mkdir(parents=True, exist_ok=True)
    table_file.write_text(table + "\n", encoding="utf-8")
    plot_file = plot_curves(results, plot_path if plot_path is not None else
                            output / "compare_curves.png")
    _write_json(output / "summary.json", {"before": before, "summary": summary,
                                           "fingerprint": fingerprint,
                                           "settings": asdict(settings)})
    out("")
    out(table)
    out(f"\ntable: {table_file}\nplot: {plot_file}")
    return {"before": before, "summary": summary, "table": table, "table_path": table_file,
            "plot_path": plot_file}


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{name} must be comma-separated integers, got {text!r}.") \
            from err


def build_parser() -> argparse.ArgumentParser:
    d = COMPARE_DEFAULTS
    parser = argparse.ArgumentParser(
        prog="vppo compare",
        description="GRPO vs DAPO vs VPPO (and ablations) on the synthetic task, several seeds "
        "each, same budget: a markdown table of test avg@k and a training-curve plot.",
    )
    parser.add_argument("--methods", default="grpo,dapo,vppo",
                        help=f"Comma-separated methods from {', '.join(METHODS)}.")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds.")
    parser.add_argument("--steps", type=int, default=None, help=f"RL steps per run (default {d.steps}).")
    parser.add_argument("--eval-size", type=int, default=None,
                        help=f"Test questions (default {d.eval_size}).")
    parser.add_argument("--eval-k", type=int, default=None,
                        help=f"Samples per test question (default {d.eval_k}).")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help=f"Adam learning rate (default {d.learning_rate}).")
    parser.add_argument("--output-dir", default="runs/compare", help="Where runs and results go.")
    parser.add_argument("--table", default=None, help="Markdown table path (default in output dir).")
    parser.add_argument("--plot", default=None, help="PNG path (default in output dir).")
    parser.add_argument("--checkpoint", default=None, help="Warm-start folder (default: shipped).")
    parser.add_argument("--quick", action="store_true", help="A tiny budget that checks the pipeline.")
    parser.add_argument("--threads", type=int, default=None, help="Torch CPU threads (default: free cores).")
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    from vppo.data.settings import accept_underscores

    return accept_underscores(parser)  # --output_dir as in vppo train


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = build_parser()
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        seeds = _int_list(args.seeds, "--seeds")
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    settings = _QUICK if args.quick else COMPARE_DEFAULTS
    changes = {name: value for name, value in (("steps", args.steps), ("eval_size", args.eval_size),
                                               ("eval_k", args.eval_k),
                                               ("learning_rate", args.learning_rate))
               if value is not None}
    settings = replace(settings, **changes)
    torch.set_num_threads(choose_num_threads(args.threads))
    quiet_library_noise()
    run_comparison(methods, seeds, settings, args.output_dir, checkpoint=args.checkpoint,
                   table_path=args.table, plot_path=args.plot, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
