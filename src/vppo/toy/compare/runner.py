"""The runs of `vppo compare`: one (method, seed) trained and scored, and the whole comparison.

Every run starts from the same warm start with the same settings but its seed (`COMPARE_DEFAULTS`
unless told otherwise) and is stored as ``runs/<method>/seed<k>.json`` under a fingerprint of
those settings (`run_fingerprint`); `run_comparison` skips the runs stored with its fingerprint,
runs the rest (``jobs`` at once, each in its own process), then writes the report and
``summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from vppo.toy.compare.report import format_table, plot_curves
from vppo.toy.compare.stats import (
    BASELINE,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CI_LEVEL,
    aggregate,
    paired_differences,
)
from vppo.toy.demo import (
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
from vppo.toy.warmstart import (
    choose_num_threads,
    evaluate_pass_rate,
    synthetic_benchmark,
    synthetic_eval_settings,
)

COMPARE_DEFAULTS = DemoSettings(steps=40, eval_size=128, eval_k=8, summary_responses=0)
"""Every run's set-up: the demo's, without the perception summary."""
_QUICK = replace(
    COMPARE_DEFAULTS,
    steps=1,
    prompts_per_step=2,
    num_generations=4,
    train_size=16,
    eval_size=4,
    eval_k=1,
)


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
    return synthetic_eval_settings(
        settings.eval_k, seed=settings.eval_seed, max_new_tokens=settings.max_completion_length
    )


def _run_one(
    method: str,
    seed: int,
    settings: DemoSettings,
    checkpoint: Path,
    output: Path,
    fingerprint: str,
    before: float,
    train_rows: Any,
    benchmark: Any,
    progress: bool,
) -> dict[str, Any]:
    """Train and score one (method, seed) and write ``runs/<method>/seed<k>.json`` (atomically).

    The one run function of both the sequential and the parallel path.
    """
    run_settings = replace(settings, seed=seed)
    tmp = output / "trainer_tmp" / f"{method}-seed{seed}"  # one per run: runs may be concurrent
    started = time.perf_counter()
    model, processor = load_policy(checkpoint)  # the trainer puts it on settings.device
    _, curve = train_rl(
        model,
        processor,
        train_rows,
        method,
        run_settings,
        tmp,
        progress=progress,
        desc=f"{method} seed {seed}",
    )
    trained = time.perf_counter()
    shutil.rmtree(tmp, ignore_errors=True)
    eval_dir = output / "eval" / method / f"seed{seed}"
    shutil.rmtree(eval_dir, ignore_errors=True)  # samples of an interrupted earlier attempt
    after = evaluate_pass_rate(
        model,
        processor,
        benchmark,
        _eval_settings(settings),
        eval_dir,
        model_id=f"{method}-seed{seed}-{fingerprint}",
        progress=progress,
    ).score
    seconds = {
        "train": round(trained - started, 1),
        "eval": round(time.perf_counter() - trained, 1),
    }
    run = RunResult(
        method, seed, settings.steps, before, after, curve, seconds, asdict(run_settings)
    ).to_dict()
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
    method: str,
    seed: int,
    settings: DemoSettings,
    checkpoint: str,
    output: str,
    fingerprint: str,
    before: float,
    progress: bool,
) -> dict[str, Any]:
    return _run_one(
        method,
        seed,
        settings,
        Path(checkpoint),
        Path(output),
        fingerprint,
        before,
        _WORKER_DATA["train_rows"],
        _WORKER_DATA["benchmark"],
        progress,
    )


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
        raise ValueError(
            f"methods must be a non-empty list from {', '.join(METHODS)}, got {list(methods)}."
        )
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
        before = evaluate_pass_rate(
            model,
            processor,
            benchmark,
            _eval_settings(settings),
            output / "eval" / "before",
            model_id=f"before-{fingerprint}",
            progress=progress,
        ).score
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

    bar = tqdm(
        total=len(methods) * len(seeds),
        initial=len(runs),
        desc="runs",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )
    say = bar.write if progress and out is print else out

    def finished(method: str, seed: int, run: dict[str, Any]) -> None:
        runs[method, seed] = run
        say(
            f"{method} seed {seed}: test avg@{k} {run['after']:.1f}% "
            f"({run['after'] - before:+.1f}), {run['seconds']['train']:.0f} s training"
        )
        bar.update(1)

    try:
        if pending and jobs == 1:
            train_rows = _train_rows(settings)
            for method, seed in pending:
                bar.set_postfix_str(f"{method} seed {seed}")
                finished(
                    method,
                    seed,
                    _run_one(
                        method,
                        seed,
                        settings,
                        ckpt,
                        output,
                        fingerprint,
                        before,
                        train_rows,
                        benchmark,
                        run_progress,
                    ),
                )
        elif pending:
            workers = min(jobs, len(pending))
            per_run = threads if threads is not None else max(1, choose_num_threads() // workers)
            queue = list(pending)
            running: dict[Future, tuple[str, int]] = {}
            with ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(per_run, settings),
            ) as pool:
                while queue or running:
                    while queue and len(running) < workers:
                        method, seed = queue.pop(0)
                        future = pool.submit(
                            _worker_run,
                            method,
                            seed,
                            settings,
                            str(ckpt),
                            str(output),
                            fingerprint,
                            before,
                            run_progress,
                        )
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
    table = format_table(
        summary, before=before, k=k, steps=settings.steps, eval_size=settings.eval_size
    )
    table_file = Path(table_path) if table_path is not None else output / "comparison.md"
    table_file.parent.mkdir(parents=True, exist_ok=True)
    table_file.write_text(table + "\n", encoding="utf-8")
    plot_file = plot_curves(
        results,
        plot_path if plot_path is not None else output / "compare_curves.png",
        title=f"Training reward on the synthetic {settings.task} task (mean ± 1 sd over seeds)",
    )
    _write_json(
        output / "summary.json",
        {
            "before": before,
            "summary": summary,
            "paired": {"baseline": BASELINE, "differences": paired},
            "bootstrap": {
                "resamples": BOOTSTRAP_RESAMPLES,
                "level": CI_LEVEL,
                "seed": BOOTSTRAP_SEED,
            },
            "fingerprint": fingerprint,
            "settings": asdict(settings),
        },
    )
    out("")
    out(table)
    out(f"\ntable: {table_file}\nplot: {plot_file}")
    return {
        "before": before,
        "summary": summary,
        "paired": paired,
        "table": table,
        "table_path": table_file,
        "plot_path": plot_file,
    }
