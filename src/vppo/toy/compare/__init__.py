"""`vppo compare`: GRPO vs DAPO vs VPPO (and the TAS-only / TGF-only ablations) on a synthetic task.

Every (method, seed) run starts from the same warm-started model of the task family (``--task``),
trains for the same number of steps with the same prompts per step through the same
`VPPOTrainer` (only the method's switches differ, read from the recipes by
`vppo.toy.demo.method_overrides`), and is scored by test avg@k. The command writes a markdown table
in the style of the paper's Tables 1/2 — per method the mean over seeds with a 95% bootstrap
confidence interval, and the difference to DAPO paired by seed with its own interval — plus a
per-seed table, and a training-curve plot in the style of its Figure 5 (training reward per step,
mean over seeds with a ±1 sd band).

Runs are resumable: each finished run writes ``runs/<method>/seed<k>.json``; a rerun with the
same settings skips it, so an interrupted comparison continues where it stopped. ``--jobs N`` runs
N of them at once, each in its own process with the same run function.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from vppo.data.synthetic import TASK_FAMILIES
from vppo.toy.demo import (
    METHODS,
    TASK_MAX_COMPLETION_LENGTH,
    DemoSettings,
    RunResult,
    default_checkpoint,
    load_policy,
    quiet_library_noise,
    synthetic_split,
    train_rl,
    training_dataset,
)
from vppo.toy.warmstart import (
    choose_num_threads,
    evaluate_pass_rate,
    synthetic_benchmark,
    synthetic_eval_settings,
)

__all__ = [
    "BASELINE",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CI_LEVEL",
    "COMPARE_DEFAULTS",
    "FEW_SEEDS",
    "METHOD_TITLES",
    "aggregate",
    "bootstrap_ci",
    "build_parser",
    "format_table",
    "main",
    "mean_std",
    "paired_differences",
    "plot_curves",
    "run_comparison",
    "run_fingerprint",
    "settings_from_args",
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

BOOTSTRAP_RESAMPLES = 10_000
"""Bootstrap resamples behind every confidence interval of the table."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's random generator: the same runs always give the same table."""
CI_LEVEL = 0.95
"""Coverage of the confidence intervals."""
FEW_SEEDS = 8
"""Below this many seeds the table warns that its bootstrap intervals are too narrow."""
BASELINE = "dapo"
"""The method the others are compared with, seed by seed (VPPO and the ablations build on DAPO)."""

# DemoSettings fields added after runs were stored, with the value every earlier run had. A field
# at this value is left out of the fingerprint, so the runs made before it existed keep theirs
# (the 40-step shapes runs behind docs/comparison.md took hours of CPU).
_FINGERPRINT_SINCE: dict[str, Any] = {"task": "shapes", "device": "cpu"}


def run_fingerprint(settings: DemoSettings, checkpoint: str) -> str:
    """12 hex digits over everything that changes a run's result except method and seed.

    Fields added to `DemoSettings` later (``task``, ``device``) count only when they differ from
    the value every earlier run had, so adding a field does not invalidate the stored runs: the
    shipped shapes set-up, ``run_fingerprint(COMPARE_DEFAULTS, "shipped")``, is ``456479f196a5``
    as before.
    """
    payload = asdict(replace(settings, seed=0))
    for name, old_value in _FINGERPRINT_SINCE.items():
        if name in payload and payload[name] == old_value:
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


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values``.

    Draws ``resamples`` samples of ``len(values)`` values with replacement (a `numpy` generator
    seeded with ``seed``, so the interval is a fixed function of its inputs), takes each sample's
    mean, and returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means. One
    value, or values that are all equal, give the zero-width interval ``(value, value)``. With few
    values (under about 8) the interval is too narrow: it only knows the spread it has seen.

    Returns:
        (low, high).
    """
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty list of numbers, got {values!r}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}.")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}.")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2, (1.0 + level) / 2])
    # An all-equal sample's means can differ from the value in the last bit (summation order).
    return float(max(low, data.min())), float(min(high, data.max()))


def paired_differences(
    summary: Mapping[str, Mapping[str, Any]], baseline: str = BASELINE, *,
    resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL, seed: int = BOOTSTRAP_SEED,
) -> dict[str, dict[str, Any]]:
    """Each method's score minus ``baseline``'s, seed by seed, over the seeds both have.

    Pairing by seed removes what a seed does to both methods (the same data order, sampling
    and perturbation seeds), so the differences vary less than either method's scores. The
    interval is `bootstrap_ci` of the differences: resampling them resamples the seeds, each with
    both of its runs.

    Args:
        summary: `aggregate`'s output (per method ``seeds`` and ``scores``).

    Returns:
        method -> {"seeds": common seeds (the method's order), "differences": method - baseline
        per seed, "n", "mean", "ci": [low, high], "wins": seeds in which the method scored strictly
        higher, "ties": seeds with equal scores}. Empty when ``baseline`` is not in ``summary``;
        the baseline itself and methods without a common seed are left out.
    """
    if baseline not in summary:
        return {}
    base = dict(zip(summary[baseline]["seeds"], summary[baseline]["scores"], strict=True))
    table: dict[str, dict[str, Any]] = {}
    for method, row in summary.items():
        if method == baseline:
            continue
        pairs = [(s, float(x) - base[s]) for s, x in zip(row["seeds"], row["scores"], strict=True)
                 if s in base]
        if not pairs:
            continue
        diffs = [d for _, d in pairs]
        low, high = bootstrap_ci(diffs, resamples=resamples, level=level, seed=seed)
        table[method] = {"seeds": [s for s, _ in pairs], "differences": diffs, "n": len(diffs),
                         "mean": sum(diffs) / len(diffs), "ci": [low, high],
                         "wins": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs)}
    return table


def aggregate(
    results: Mapping[str, Sequence[Mapping[str, Any]]], *, resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL, seed: int = BOOTSTRAP_SEED,
) -> dict[str, dict[str, Any]]:
    """Per method: seeds, test avg@k per seed, mean, its bootstrap CI, sd, min, max,
    final-quarter training reward mean/sd and training minutes per run."""
    table: dict[str, dict[str, Any]] = {}
    for method, runs in results.items():
        if not runs:
            continue
        scores = [float(r["after"]) for r in runs]
        rewards = [x for x in (_final_reward(r["curve"]) for r in runs) if x is not None]
        mean, sd = mean_std(scores)
        low, high = bootstrap_ci(scores, resamples=resamples, level=level, seed=seed)
        row = {"seeds": [r["seed"] for r in runs], "scores": scores, "mean": mean,
               "ci": [low, high], "sd": sd, "min": min(scores), "max": max(scores),
               "minutes": sum(r["seconds"].get("train", 0.0) for r in runs) / 60 / len(runs)}
        if rewards:
            row["final_reward_mean"], row["final_reward_sd"] = mean_std(rewards)
        table[method] = row
    return table


def _signed(value: float) -> str:
    return f"{value:+.1f}"


def format_table(
    summary: Mapping[str, Mapping[str, Any]], *, before: float | None, k: int, steps: int,
    eval_size: int, baseline: str = BASELINE, level: float = CI_LEVEL,
) -> str:
    """Markdown: the comparison table (one row per method), a per-seed table, and notes.

    Main table columns: seeds n; test avg@k mean [CI]; the paired difference to ``baseline``
    [CI] and the seeds it wins (`paired_differences`; left out, with a note, when ``baseline``
    did not run); sd over seeds; change from the warm start; final-quarter training reward;
    training minutes per run. The per-seed table has a column per seed, one row per method and
    one row of differences to ``baseline`` per other method.
    """
    pct = f"{level:.0%}"
    paired = paired_differences(summary, baseline)
    base_title = METHOD_TITLES.get(baseline, baseline)
    has_base = baseline in summary
    head = ["Method", "n", f"Test avg@{k} (%) mean [{pct} CI]"]
    if has_base:
        head += [f"Δ vs {base_title}, paired [{pct} CI]", f"Wins vs {base_title}"]
    head += ["sd", "Δ vs start", "Train reward, last 25% of steps", "Minutes / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if before is not None:
        cells = ["Warm start (no RL)", "–", f"{before:.1f}"] + ["–"] * (len(head) - 3)
        lines.append("| " + " | ".join(cells) + " |")
    for method, row in summary.items():
        low, high = row["ci"]
        cells = [METHOD_TITLES.get(method, method), str(len(row["scores"])),
                 f"{row['mean']:.1f} [{low:.1f}, {high:.1f}]"]
        if has_base:
            diff = paired.get(method)
            if method == baseline:
                cells += ["(baseline)", "–"]
            elif diff is None:
                cells += ["no common seed", "–"]
            else:
                cells += [f"{_signed(diff['mean'])} [{_signed(diff['ci'][0])}, "
                          f"{_signed(diff['ci'][1])}]",
                          f"{diff['wins']}/{diff['n']}"
                          + (f" ({diff['ties']} tied)" if diff["ties"] else "")]
        cells += [f"{row['sd']:.1f}",
                  _signed(row["mean"] - before) if before is not None else "–",
                  (f"{row['final_reward_mean']:.3f} ± {row['final_reward_sd']:.3f}"
                   if "final_reward_mean" in row else "–"),
                  f"{row['minutes']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")

    seeds = sorted({s for row in summary.values() for s in row["seeds"]})
    lines += ["", f"| Test avg@{k} (%) per seed | " + " | ".join(str(s) for s in seeds)
              + " |", "|" + "---|" * (len(seeds) + 1)]
    for method, row in summary.items():
        by_seed = dict(zip(row["seeds"], row["scores"], strict=True))
        lines.append(f"| {METHOD_TITLES.get(method, method)} | "
                     + " | ".join(f"{by_seed[s]:.1f}" if s in by_seed else "–" for s in seeds)
                     + " |")
    for method, diff in paired.items():
        by_seed = dict(zip(diff["seeds"], diff["differences"], strict=True))
        lines.append(f"| {METHOD_TITLES.get(method, method)} − {base_title} | "
                     + " | ".join(_signed(by_seed[s]) if s in by_seed else "–" for s in seeds)
                     + " |")

    n = max((len(r["scores"]) for r in summary.values()), default=0)
    lines += ["", f"{n} seed(s) per method, {steps} steps each; test split of {eval_size} "
              f"questions x {k} samples at T = 1. [{pct} CI]: percentile bootstrap over seeds "
              f"({BOOTSTRAP_RESAMPLES:,} resamples, fixed generator seed) of the mean over "
              f"training seeds, on this one test set."]
    if 0 < min(len(r["scores"]) for r in summary.values()) < FEW_SEEDS:
        lines.append(f"With fewer than {FEW_SEEDS} seeds a percentile bootstrap is too narrow (it "
                     f"knows only the spread it has seen): read these intervals as rough.")
    if has_base:
        lines.append(f"Δ vs {base_title}: the method's score minus {base_title}'s in the same "
                     f"seed, averaged over the seeds both ran; its CI resamples those seeds. "
                     f"Wins: seeds in which the method scored higher (ties are not wins). sd: "
                     f"sample standard deviation over seeds.")
    else:
        lines.append(f"{base_title} is not among the methods: no paired differences. sd: sample "
                     f"standard deviation over seeds.")
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
    ax.set_title(title or "Training reward on the synthetic task (mean ± 1 sd over seeds)", fontsize=10)
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


def _test_benchmark(settings: DemoSettings) -> Any:
    """The fixed test split of ``settings.task`` as an evaluation benchmark."""
    test = synthetic_split("test", settings.eval_size, settings.eval_seed, family=settings.task)
    return synthetic_benchmark(test, "synthetic-test")


def _train_rows(settings: DemoSettings) -> Any:
    """The training rows of ``settings.task`` (fixed: the seed varies the training randomness)."""
    return training_dataset(synthetic_split("train", settings.train_size, 0, family=settings.task))


def _eval_settings(settings: DemoSettings) -> Any:
    return synthetic_eval_settings(settings.eval_k, seed=settings.eval_seed,
                                   max_new_tokens=settings.max_completion_length)


def _run_one(
    method: str, seed: int, settings: DemoSettings, checkpoint: Path, output: Path,
    fingerprint: str, before: float, train_rows: Any, benchmark: Any, progress: bool,
) -> dict[str, Any]:
    """Train and score one (method, seed) and write ``runs/<method>/seed<k>.json`` (atomically).

    The one run function of both the sequential and the parallel path.
    """
    run_settings = replace(settings, seed=seed)
    tmp = output / "trainer_tmp" / f"{method}-seed{seed}"  # one per run: runs may be concurrent
    started = time.perf_counter()
    model, processor = load_policy(checkpoint)  # the trainer puts it on settings.device
    _, curve = train_rl(model, processor, train_rows, method, run_settings, tmp, progress=progress,
                        desc=f"{method} seed {seed}")
    trained = time.perf_counter()
    shutil.rmtree(tmp, ignore_errors=True)
    eval_dir = output / "eval" / method / f"seed{seed}"
    shutil.rmtree(eval_dir, ignore_errors=True)  # samples of an interrupted earlier attempt
    after = evaluate_pass_rate(model, processor, benchmark, _eval_settings(settings), eval_dir,
                               model_id=f"{method}-seed{seed}-{fingerprint}",
                               progress=progress).score
    seconds = {"train": round(trained - started, 1),
               "eval": round(time.perf_counter() - trained, 1)}
    run = RunResult(method, seed, settings.steps, before, after, curve, seconds,
                    asdict(run_settings)).to_dict()
    run["fingerprint"] = fingerprint
    _write_json(output / "runs" / method / f"seed{seed}.json", run)
    return run


# Per worker process of `--jobs N`: the task's rows, built once by `_init_worker`.
_WORKER_DATA: dict[str, Any] = {}


def _init_worker(threads: int, settings: DemoSettings) -> None:
    import torch

    torch.set_num_threads(threads)
    quiet_library_noise()
    _WORKER_DATA["train_rows"] = _train_rows(settings)
    _WORKER_DATA["benchmark"] = _test_benchmark(settings)


def _worker_run(
    method: str, seed: int, settings: DemoSettings, checkpoint: str, output: str,
    fingerprint: str, before: float, progress: bool,
) -> dict[str, Any]:
    return _run_one(method, seed, settings, Path(checkpoint), Path(output), fingerprint, before,
                    _WORKER_DATA["train_rows"], _WORKER_DATA["benchmark"], progress)


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
    run_progress: bool = False,
    jobs: int = 1,
    threads: int | None = None,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every missing (method, seed), then write the tables, the plot and ``summary.json``.

    Args:
        checkpoint: warm-start folder; default the one shipped for ``settings.task``.
        progress: one bar over all methods x seeds (runs done earlier count as done), the
            running runs in its postfix; also the warm start's evaluation bar.
        run_progress: each run's training and evaluation bars as well (readable with ``jobs=1``).
        jobs: runs at once, each in its own process (spawned; the same run function as
            ``jobs=1``, so the same results). The warm start is scored once, before.
        threads: torch CPU threads of each worker process when ``jobs > 1`` (default: the free
            cores divided among the jobs); with ``jobs=1`` runs use this process's setting.
        out: where the per-run lines and the tables go (``print`` goes through the bar).

    Returns:
        ``{"before": warm-start test avg@k, "summary": aggregate(...), "paired":
        paired_differences(...), "table": markdown, "table_path", "plot_path"}``.
    """
    from tqdm.auto import tqdm

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty list from {', '.join(METHODS)}, got "
                         f"{list(methods)}.")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list without repeats, got {list(seeds)}.")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}.")
    output = Path(output_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else default_checkpoint(settings.task)
    fingerprint = run_fingerprint(settings, "shipped" if checkpoint is None else str(ckpt))
    benchmark = _test_benchmark(settings)
    k = settings.eval_k

    before_file = output / "before.json"
    cached = _read_json(before_file)
    if cached and cached.get("fingerprint") == fingerprint:
        before = float(cached["score"])
    else:
        model, processor = load_policy(ckpt)
        model.to(settings.device)
        before = evaluate_pass_rate(model, processor, benchmark, _eval_settings(settings),
                                    output / "eval" / "before", model_id=f"before-{fingerprint}",
                                    progress=progress).score
        del model
        _write_json(before_file, {"fingerprint": fingerprint, "score": before})
    out(f"warm start ({settings.task}): test avg@{k} {before:.1f}%")

    runs: dict[tuple[str, int], dict[str, Any]] = {}
    pending: list[tuple[str, int]] = []
    for seed in seeds:
        for method in methods:
            done = _read_json(output / "runs" / method / f"seed{seed}.json")
            if done and done.get("fingerprint") == fingerprint:
                runs[method, seed] = done
                out(f"{method} seed {seed}: done earlier, test avg@{k} {done['after']:.1f}%")
            else:
                pending.append((method, seed))

    bar = tqdm(total=len(methods) * len(seeds), initial=len(runs), desc="runs", unit="run",
               disable=not progress, dynamic_ncols=True)
    say = bar.write if progress and out is print else out

    def finished(method: str, seed: int, run: dict[str, Any]) -> None:
        runs[method, seed] = run
        say(f"{method} seed {seed}: test avg@{k} {run['after']:.1f}% "
            f"({run['after'] - before:+.1f}), {run['seconds']['train']:.0f} s training")
        bar.update(1)

    try:
        if pending and jobs == 1:
            train_rows = _train_rows(settings)
            for method, seed in pending:
                bar.set_postfix_str(f"{method} seed {seed}")
                finished(method, seed, _run_one(method, seed, settings, ckpt, output, fingerprint,
                                                before, train_rows, benchmark, run_progress))
        elif pending:
            workers = min(jobs, len(pending))
            per_run = threads if threads is not None else max(1, choose_num_threads() // workers)
            queue = list(pending)
            running: dict[Future, tuple[str, int]] = {}
            with ProcessPoolExecutor(max_workers=workers,
                                     mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init_worker,
                                     initargs=(per_run, settings)) as pool:
                while queue or running:
                    while queue and len(running) < workers:
                        method, seed = queue.pop(0)
                        future = pool.submit(_worker_run, method, seed, settings, str(ckpt),
                                             str(output), fingerprint, before, run_progress)
                        running[future] = (method, seed)
                    bar.set_postfix_str(", ".join(f"{m} seed {s}" for m, s in running.values()))
                    done_now, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done_now:
                        method, seed = running.pop(future)
                        # A failed run raises here; the runs under way finish (and are kept).
                        finished(method, seed, future.result())
    finally:
        bar.close()
        try:
            (output / "trainer_tmp").rmdir()
        except OSError:
            pass

    results = {m: [runs[m, s] for s in seeds] for m in methods}
    summary = aggregate(results)
    paired = paired_differences(summary)
    table = format_table(summary, before=before, k=k, steps=settings.steps,
                         eval_size=settings.eval_size)
    table_file = Path(table_path) if table_path is not None else output / "comparison.md"
    table_file.parent.mkdir(parents=True, exist_ok=True)
    table_file.write_text(table + "\n", encoding="utf-8")
    plot_file = plot_curves(results, plot_path if plot_path is not None else
                            output / "compare_curves.png",
                            title=f"Training reward on the synthetic {settings.task} task "
                            "(mean ± 1 sd over seeds)")
    _write_json(output / "summary.json", {
        "before": before, "summary": summary,
        "paired": {"baseline": BASELINE, "differences": paired},
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "level": CI_LEVEL, "seed": BOOTSTRAP_SEED},
        "fingerprint": fingerprint, "settings": asdict(settings)})
    out("")
    out(table)
    out(f"\ntable: {table_file}\nplot: {plot_file}")
    return {"before": before, "summary": summary, "paired": paired, "table": table,
            "table_path": table_file, "plot_path": plot_file}


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{name} must be comma-separated integers, got {text!r}.") \
            from err


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    d = COMPARE_DEFAULTS
    lengths = ", ".join(f"{task}: {n}" for task, n in TASK_MAX_COMPLETION_LENGTH.items())
    parser = argparse.ArgumentParser(
        prog="vppo compare",
        description="GRPO vs DAPO vs VPPO (and ablations) on a synthetic task, several seeds "
        "each, same budget: a markdown table of test avg@k (mean with a 95% bootstrap CI over "
        "seeds, difference to DAPO paired by seed) and a training-curve plot.",
    )
    parser.add_argument("--methods", default="grpo,dapo,vppo",
                        help=f"Comma-separated methods from {', '.join(METHODS)}.")
    parser.add_argument("--seeds", default="0,1,2",
                        help="Comma-separated seeds (8 or more to resolve a 1-2 point difference).")
    parser.add_argument("--task", default=d.task, choices=list(TASK_FAMILIES),
                        help="Synthetic task family: its warm start, training and test rows "
                        f"(default {d.task}).")
    parser.add_argument("--steps", type=int, default=None, help=f"RL steps per run (default {d.steps}).")
    parser.add_argument("--eval-size", type=int, default=None,
                        help=f"Test questions (default {d.eval_size}).")
    parser.add_argument("--eval-k", type=int, default=None,
                        help=f"Samples per test question (default {d.eval_k}).")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help=f"Adam learning rate (default {d.learning_rate}).")
    parser.add_argument("--max-completion-length", type=_positive_int, default=None,
                        help=f"Response tokens in training and test (default per task: {lengths}).")
    parser.add_argument("--output-dir", default="runs/compare", help="Where runs and results go.")
    parser.add_argument("--table", default=None, help="Markdown table path (default in output dir).")
    parser.add_argument("--plot", default=None, help="PNG path (default in output dir).")
    parser.add_argument("--checkpoint", default=None,
                        help="Warm-start folder (default: the one shipped for --task).")
    parser.add_argument("--quick", action="store_true", help="A tiny budget that checks the pipeline.")
    parser.add_argument("--device", default=d.device, choices=("cpu", "cuda"),
                        help="Where runs train and are scored: cpu, or cuda to run many small runs "
                        "at once on one GPU with --jobs (runs on different devices are not mixed: "
                        "the device is part of a run's fingerprint).")
    parser.add_argument("--jobs", type=_positive_int, default=1,
                        help="Runs at once, each in its own process (default 1).")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="Torch CPU threads per run (default: the free cores, divided among "
                        "--jobs).")
    parser.add_argument("--run-progress", action="store_true",
                        help="Each run's training and evaluation bars too (readable with "
                        "--jobs 1).")
    parser.add_argument("--no-progress", action="store_true", help="Hide all progress bars.")
    from vppo.data.settings import accept_underscores

    return accept_underscores(parser)  # --output_dir as in vppo train


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """The runs' `DemoSettings` of parsed `vppo compare` arguments (the task's response length
    unless --max-completion-length is given)."""
    settings = _QUICK if args.quick else COMPARE_DEFAULTS
    changes: dict[str, Any] = {
        name: value for name, value in (("steps", args.steps), ("eval_size", args.eval_size),
                                        ("eval_k", args.eval_k),
                                        ("learning_rate", args.learning_rate)) if value is not None}
    changes["task"] = args.task
    changes["device"] = args.device
    changes["max_completion_length"] = (args.max_completion_length
                                        or TASK_MAX_COMPLETION_LENGTH[args.task])
    return replace(settings, **changes)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = build_parser()
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        seeds = _int_list(args.seeds, "--seeds")
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    try:
        settings = settings_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(choose_num_threads(args.threads))
    quiet_library_noise()
    progress = not args.no_progress
    run_comparison(methods, seeds, settings, args.output_dir, checkpoint=args.checkpoint,
                   table_path=args.table, plot_path=args.plot, progress=progress,
                   run_progress=progress and args.run_progress, jobs=args.jobs,
                   threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
