"""The command line of `vppo compare`: its parser, the run settings of its arguments, `main`."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from vppo.data.synthetic import TASK_FAMILIES
from vppo.toy.compare.runner import _QUICK, COMPARE_DEFAULTS, run_comparison
from vppo.toy.demo import METHODS, TASK_MAX_COMPLETION_LENGTH, DemoSettings, quiet_library_noise
from vppo.toy.warmstart import choose_num_threads


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{name} must be comma-separated integers, got {text!r}."
        ) from err


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
    parser.add_argument(
        "--methods",
        default="grpo,dapo,vppo",
        help=f"Comma-separated methods from {', '.join(METHODS)}.",
    )
    parser.add_argument(
        "--seeds",
        default="0,1,2",
        help="Comma-separated seeds (8 or more to resolve a 1-2 point difference).",
    )
    parser.add_argument(
        "--task",
        default=d.task,
        choices=list(TASK_FAMILIES),
        help=f"Synthetic task family: its warm start, training and test rows (default {d.task}).",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help=f"RL steps per run (default {d.steps})."
    )
    parser.add_argument(
        "--eval-size", type=int, default=None, help=f"Test questions (default {d.eval_size})."
    )
    parser.add_argument(
        "--eval-k", type=int, default=None, help=f"Samples per test question (default {d.eval_k})."
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"Adam learning rate (default {d.learning_rate}).",
    )
    parser.add_argument(
        "--max-completion-length",
        type=_positive_int,
        default=None,
        help=f"Response tokens in training and test (default per task: {lengths}).",
    )
    parser.add_argument("--output-dir", default="runs/compare", help="Where runs and results go.")
    parser.add_argument(
        "--table", default=None, help="Markdown table path (default in output dir)."
    )
    parser.add_argument("--plot", default=None, help="PNG path (default in output dir).")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="Warm-start folder (default: the one shipped for --task).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="A tiny budget that checks the pipeline."
    )
    parser.add_argument(
        "--device",
        default=d.device,
        choices=("cpu", "cuda"),
        help="Where runs train and are scored: cpu, or cuda to run many small runs "
        "at once on one GPU with --jobs (runs on different devices are not mixed: "
        "the device is part of a run's fingerprint).",
    )
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        help="Runs at once, each in its own process (default 1).",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="Torch CPU threads per run (default: the free cores, divided among --jobs).",
    )
    parser.add_argument(
        "--run-progress",
        action="store_true",
        help="Each run's training and evaluation bars too (readable with --jobs 1).",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide all progress bars.")
    from vppo.data.settings import accept_underscores

    return accept_underscores(parser)  # --output_dir as in vppo train


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """The runs' `DemoSettings` of parsed `vppo compare` arguments (the task's response length
    unless --max-completion-length is given)."""
    settings = _QUICK if args.quick else COMPARE_DEFAULTS
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("steps", args.steps),
            ("eval_size", args.eval_size),
            ("eval_k", args.eval_k),
            ("learning_rate", args.learning_rate),
        )
        if value is not None
    }
    changes["task"] = args.task
    changes["device"] = args.device
    changes["max_completion_length"] = (
        args.max_completion_length or TASK_MAX_COMPLETION_LENGTH[args.task]
    )
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
    run_comparison(
        methods,
        seeds,
        settings,
        args.output_dir,
        checkpoint=args.checkpoint,
        table_path=args.table,
        plot_path=args.plot,
        progress=progress,
        run_progress=progress and args.run_progress,
        jobs=args.jobs,
        threads=args.threads,
    )
    return 0
