"""The report of `vppo compare`: the markdown tables and the training-curve plot.

`format_table` is pure (a summary in, markdown out); `plot_curves` writes one PNG. The JSON files
a comparison leaves (runs, ``summary.json``) are written by `vppo.toy.compare.runner`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vppo.toy.compare.stats import BASELINE, BOOTSTRAP_RESAMPLES, CI_LEVEL, paired_differences

METHOD_TITLES: dict[str, str] = {
    "grpo": "GRPO",
    "dapo": "DAPO",
    "vppo": "VPPO",
    "tas_only": "DAPO + TAS only",
    "tgf_only": "DAPO + TGF only",
    "entropy_80_20": "DAPO + 80/20 entropy",
    "papo": "PAPO_D (DAPO + PAPO)",
}
FEW_SEEDS = 8
"""Below this many seeds the table warns that its bootstrap intervals are too narrow."""


def _signed(value: float) -> str:
    """``value`` with its sign and one decimal: ``+1.5``, ``-0.3``."""
    return f"{value:+.1f}"


def format_table(
    summary: Mapping[str, Mapping[str, Any]],
    *,
    before: float | None,
    k: int,
    steps: int,
    eval_size: int,
    baseline: str = BASELINE,
    level: float = CI_LEVEL,
) -> str:
    """Markdown: the comparison table (one row per method), a per-seed table, and notes.

    Main table columns: seeds n; test avg@k mean [CI]; the paired difference to ``baseline``
    [CI] and the seeds it wins (`paired_differences`; left out, with a note, when ``baseline``
    did not run); sd over seeds; change from the warm start; final-quarter training reward;
    training minutes per run. The per-seed table has a column per seed, one row per method and
    one row of differences to ``baseline`` per other method.

    Args:
        summary: `aggregate`'s output, method -> row (``seeds``, ``scores``, ``mean``, ``ci``,
            ``sd``, ``minutes`` and optionally ``final_reward_mean`` / ``final_reward_sd``).
        before: the warm start's test avg@k in %, or None (no warm-start row, no Δ vs start).
        k, steps, eval_size: the run settings named in the header and the notes.

    Returns:
        The markdown, lines joined by newlines, without a trailing newline.
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
        cells = [
            METHOD_TITLES.get(method, method),
            str(len(row["scores"])),
            f"{row['mean']:.1f} [{low:.1f}, {high:.1f}]",
        ]
        if has_base:
            diff = paired.get(method)
            if method == baseline:
                cells += ["(baseline)", "–"]
            elif diff is None:
                cells += ["no common seed", "–"]
            else:
                cells += [
                    f"{_signed(diff['mean'])} [{_signed(diff['ci'][0])}, {_signed(diff['ci'][1])}]",
                    f"{diff['wins']}/{diff['n']}"
                    + (f" ({diff['ties']} tied)" if diff["ties"] else ""),
                ]
        cells += [
            f"{row['sd']:.1f}",
            _signed(row["mean"] - before) if before is not None else "–",
            (
                f"{row['final_reward_mean']:.3f} ± {row['final_reward_sd']:.3f}"
                if "final_reward_mean" in row
                else "–"
            ),
            f"{row['minutes']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")

    seeds = sorted({s for row in summary.values() for s in row["seeds"]})
    lines += [
        "",
        f"| Test avg@{k} (%) per seed | " + " | ".join(str(s) for s in seeds) + " |",
        "|" + "---|" * (len(seeds) + 1),
    ]
    for method, row in summary.items():
        by_seed = dict(zip(row["seeds"], row["scores"], strict=True))
        lines.append(
            f"| {METHOD_TITLES.get(method, method)} | "
            + " | ".join(f"{by_seed[s]:.1f}" if s in by_seed else "–" for s in seeds)
            + " |"
        )
    for method, diff in paired.items():
        by_seed = dict(zip(diff["seeds"], diff["differences"], strict=True))
        lines.append(
            f"| {METHOD_TITLES.get(method, method)} − {base_title} | "
            + " | ".join(_signed(by_seed[s]) if s in by_seed else "–" for s in seeds)
            + " |"
        )

    n = max((len(r["scores"]) for r in summary.values()), default=0)
    lines += [
        "",
        f"{n} seed(s) per method, {steps} steps each; test split of {eval_size} "
        f"questions x {k} samples at T = 1. [{pct} CI]: percentile bootstrap over seeds "
        f"({BOOTSTRAP_RESAMPLES:,} resamples, fixed generator seed) of the mean over "
        f"training seeds, on this one test set.",
    ]
    if 0 < min(len(r["scores"]) for r in summary.values()) < FEW_SEEDS:
        lines.append(
            f"With fewer than {FEW_SEEDS} seeds a percentile bootstrap is too narrow (it "
            f"knows only the spread it has seen): read these intervals as rough."
        )
    if has_base:
        lines.append(
            f"Δ vs {base_title}: the method's score minus {base_title}'s in the same "
            f"seed, averaged over the seeds both ran; its CI resamples those seeds. "
            f"Wins: seeds in which the method scored higher (ties are not wins). sd: "
            f"sample standard deviation over seeds."
        )
    else:
        lines.append(
            f"{base_title} is not among the methods: no paired differences. sd: sample "
            f"standard deviation over seeds."
        )
    return "\n".join(lines)


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing running mean over ``window`` >= 1 points (the first points average what there
    is): a list as long as ``values``."""
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def plot_curves(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    *,
    window: int = 5,
    title: str | None = None,
) -> Path:
    """Training reward vs step per method: mean over seeds of the running mean, ±1 sd band.

    Args:
        results: method -> runs, each with a ``curve`` of per-step dicts (``step``, ``reward``);
            a method is drawn over the steps all its runs logged.
        path: the PNG written (folders made). window: running-mean length, >= 1.

    Returns:
        ``path`` as a `Path`. Raises ``ValueError`` when no run has a curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if window < 1:
        raise ValueError(f"window must be a positive integer, got {window}.")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colours = {
        "grpo": "#7f7f7f",
        "dapo": "#1f77b4",
        "vppo": "#d62728",
        "tas_only": "#2ca02c",
        "tgf_only": "#9467bd",
        "entropy_80_20": "#ff7f0e",
        "papo": "#8c564b",
    }
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
    ax.set_title(
        title or "Training reward on the synthetic task (mean ± 1 sd over seeds)", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
