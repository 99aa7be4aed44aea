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

The package, by job:

- `vppo.toy.compare.stats`: means, bootstrap intervals, differences paired by seed (pure).
- `vppo.toy.compare.runner`: one (method, seed) run, its fingerprint and stored result, and
  `run_comparison`, which runs what is missing and writes the report and ``summary.json``.
- `vppo.toy.compare.report`: the markdown tables and the training-curve plot.
- `vppo.toy.compare.cli`: `build_parser`, `settings_from_args` and `main` (``python -m
  vppo.toy.compare`` runs `main`).

This module re-exports their public names.
"""

from vppo.toy.compare.cli import build_parser, main, settings_from_args
from vppo.toy.compare.report import FEW_SEEDS, METHOD_TITLES, format_table, plot_curves
from vppo.toy.compare.runner import _QUICK as _QUICK  # the tests' tiny budget
from vppo.toy.compare.runner import COMPARE_DEFAULTS, run_comparison, run_fingerprint
from vppo.toy.compare.stats import (
    BASELINE,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CI_LEVEL,
    aggregate,
    bootstrap_ci,
    mean_std,
    paired_differences,
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
