"""PNG plots of token perception (matplotlib, Agg canvas; no pyplot global state).

- token-dependency histogram on a log-count axis, with a separate "≥clip" bar (paper Fig. 3);
- trajectory-dependency histogram with its mean (paper Fig. 4);
- dependency vs entropy scatter, marking the top-k% tokens of each signal (paper Table 4);
- the token strings with the highest mean dependency.

matplotlib is the optional ``plots`` extra (``pip install 'vppo[plots]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "plot_dependency_vs_entropy",
    "plot_token_dependency_histogram",
    "plot_top_tokens",
    "plot_trajectory_histogram",
]

_BLUE = "#3b6ea8"
_RED = "#c8553d"
_PURPLE = "#7b4fa0"
_GREY = "#9a9a9a"
_MAX_SCATTER_POINTS = 20000


def _figure(width: float = 6.4, height: float = 4.2) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "the analysis plots need matplotlib, which is not installed; install it with "
            "`pip install 'vppo[plots]'`."
        ) from err
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _style(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(axis="y", alpha=0.25, linewidth=0.6)


def _label(text: str) -> str:
    """A token string matplotlib can draw on one line."""
    stripped = text.strip()
    if stripped and stripped.isprintable():
        return stripped if len(stripped) <= 18 else stripped[:17] + "…"
    return repr(text)


def plot_token_dependency_histogram(
    values: Sequence[float] | np.ndarray,
    path: str | Path,
    *,
    clip: float | None = None,
    bins: int = 40,
    estimator: str = "k3",
) -> Path:
    """Histogram of token dependency on a log-count axis; values ≥ ``clip`` get their own bar.

    Args:
        values: 1-D token dependencies (valid tokens only).
        path: output PNG.
        clip: the estimator's clamp (k3: 10.0): bins cover [0, clip) (or [0, largest value]
            when no value reaches clip / 2) and a separate "≥clip" bar counts the clamped
            tokens, as in the paper's Fig. 3. ``None``: bins cover [0, max].
        bins: number of regular bins.
        estimator: shown in the axis label.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    fig = _figure()
    ax = fig.add_subplot()
    _style(ax)
    if x.size == 0:
        ax.text(0.5, 0.5, "no tokens", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)
    below = x[x < clip] if clip is not None else x
    # Regular bins span the data below the clamp; when nothing comes near the clamp they stop
    # at the largest value, so small dependencies are not squeezed into one bin.
    top = (
        float(clip)
        if clip is not None and x.max() >= 0.5 * clip
        else (float(below.max()) if below.size else float(x.max()))
    )
    top = max(top, 1e-12)
    edges = np.linspace(0.0, top, bins + 1)
    counts, _ = np.histogram(below, bins=edges)
    width = edges[1] - edges[0]
    ax.bar(
        edges[:-1],
        counts,
        width=width,
        align="edge",
        color=_BLUE,
        edgecolor="white",
        linewidth=0.4,
        log=True,
        label="tokens",
    )
    if clip is not None:
        at_clip = int((x >= clip).sum())
        gap = 2.5 * width
        ax.bar(
            [top + gap],
            [max(at_clip, 0)],
            width=2 * width,
            align="edge",
            color=_RED,
            log=True,
            label=f"≥{clip:g} (clamped): {at_clip}",
        )
        ticks = list(np.linspace(0.0, top, 5))
        ax.set_xticks([*ticks, top + gap + width])
        ax.set_xticklabels([f"{t:.3g}" for t in ticks] + [f"≥{clip:g}"])
        ax.set_xlim(-width, top + gap + 3 * width)
    ax.set_ylim(bottom=0.8)
    ax.set_xlabel(f"token visual dependency ({estimator})")
    ax.set_ylabel("tokens (log scale)")
    q50, q90, q99 = np.quantile(x, [0.5, 0.9, 0.99])
    ax.set_title(
        f"Token dependency: {x.size} tokens, median {q50:.3g}, p90 {q90:.3g}, p99 {q99:.3g}",
        fontsize=10,
    )
    ax.legend(frameon=False, fontsize=9)
    return _save(fig, path)


def plot_trajectory_histogram(
    values: Sequence[float] | np.ndarray,
    path: str | Path,
    *,
    bins: int = 30,
    correct: Sequence[float] | np.ndarray | None = None,
) -> Path:
    """Histogram of trajectory (mean token) dependency with its mean, like the paper's Fig. 4.

    With ``correct`` (0/1 per response) the bars are stacked by correctness.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    fig = _figure()
    ax = fig.add_subplot()
    _style(ax)
    if x.size == 0:
        ax.text(0.5, 0.5, "no responses", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        hi = lo + max(abs(lo) * 0.1, 1e-6)
    edges = np.linspace(lo, hi, bins + 1)
    if correct is not None:
        c = np.asarray(correct, dtype=np.float64).ravel()
        ax.hist(
            [x[c == 1], x[c == 0]],
            bins=edges,
            stacked=True,
            color=[_BLUE, _GREY],
            label=["correct", "incorrect"],
            edgecolor="white",
            linewidth=0.4,
        )
    else:
        ax.hist(x, bins=edges, color=_BLUE, edgecolor="white", linewidth=0.4, label="responses")
    mean, std = float(x.mean()), float(x.std())
    ax.axvline(mean, color=_RED, linestyle="--", linewidth=1.2, label=f"mean {mean:.3g}")
    centred = x - mean
    skew = float((centred**3).mean() / std**3) if std > 0 and x.size >= 3 else float("nan")
    ax.set_xlabel("trajectory dependency (mean over response tokens)")
    ax.set_ylabel("responses")
    ax.set_title(
        f"Trajectory dependency: {x.size} responses, std {std:.3g}, skew {skew:.2f}", fontsize=10
    )
    ax.legend(frameon=False, fontsize=9)
    return _save(fig, path)


def plot_dependency_vs_entropy(
    dep: Sequence[float] | np.ndarray,
    entropy: Sequence[float] | np.ndarray,
    selected_by_dependency: Sequence[bool] | np.ndarray,
    selected_by_entropy: Sequence[bool] | np.ndarray,
    path: str | Path,
    *,
    ratio: float = 0.4,
    jaccard: float | None = None,
    seed: int = 0,
) -> Path:
    """Scatter of token entropy (x) against dependency (y, symlog), coloured by selection.

    Each point is a valid token; colours say whether it is in the top-``ratio`` of its
    response by dependency (TGF), by entropy, both or neither. At most 20,000 points are
    drawn (a seeded subsample); the legend counts all tokens.
    """
    d = np.asarray(dep, dtype=np.float64).ravel()
    e = np.asarray(entropy, dtype=np.float64).ravel()
    by_dep = np.asarray(selected_by_dependency, dtype=bool).ravel()
    by_ent = np.asarray(selected_by_entropy, dtype=bool).ravel()
    if not d.size == e.size == by_dep.size == by_ent.size:
        raise ValueError("dep, entropy and both selections must have one value per token.")
    fig = _figure(6.4, 5.0)
    ax = fig.add_subplot()
    _style(ax)
    keep = np.arange(d.size)
    if d.size > _MAX_SCATTER_POINTS:
        keep = np.sort(
            np.random.default_rng(seed).choice(d.size, _MAX_SCATTER_POINTS, replace=False)
        )
    pct = f"{ratio * 100:g}%"
    groups = [
        (~by_dep & ~by_ent, _GREY, "neither", 6, 0.35),
        (by_ent & ~by_dep, _BLUE, f"top {pct} by entropy only", 10, 0.7),
        (by_dep & ~by_ent, _RED, f"top {pct} by dependency only", 10, 0.75),
        (by_dep & by_ent, _PURPLE, "both", 12, 0.8),
    ]
    for members, colour, name, size, alpha in groups:
        shown = keep[members[keep]]
        ax.scatter(
            e[shown],
            d[shown],
            s=size,
            c=colour,
            alpha=alpha,
            linewidths=0,
            label=f"{name} ({int(members.sum())})",
        )
    positive = d[d > 0]
    linthresh = float(np.quantile(positive, 0.25)) if positive.size else 1e-3
    ax.set_yscale("symlog", linthresh=max(linthresh, 1e-12))
    ax.set_xlabel("policy entropy (nats)")
    ax.set_ylabel("visual dependency (symlog)")
    title = f"Dependency vs entropy, top {pct} per response"
    if jaccard is not None:
        title += f": Jaccard {jaccard:.2f}"
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    return _save(fig, path)


def plot_top_tokens(rows: Sequence[dict[str, Any]], path: str | Path, *, limit: int = 20) -> Path:
    """Horizontal bars of the token strings with the highest mean dependency.

    ``rows`` are ``statistics["token_strings"]["by_mean_dependency"]`` entries (token, count,
    mean_dependency, selected_share).
    """
    rows = list(rows)[:limit]
    fig = _figure(6.4, max(2.4, 0.28 * len(rows) + 1.2))
    ax = fig.add_subplot()
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    if not rows:
        ax.text(
            0.5,
            0.5,
            "no token string occurs often enough",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return _save(fig, path)
    labels = [_label(r["token"]) for r in rows][::-1]
    means = [r["mean_dependency"] for r in rows][::-1]
    ax.barh(range(len(rows)), means, color=_BLUE)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8, fontfamily="monospace")
    for y, r in enumerate(rows[::-1]):
        ax.text(
            r["mean_dependency"],
            y,
            f"  n={r['count']}, {r['selected_share'] * 100:.0f}% kept",
            va="center",
            fontsize=7,
            color="#444444",
        )
    ax.set_xlim(0, max(means) * 1.45 if max(means) > 0 else 1)
    ax.set_xlabel("mean token dependency")
    ax.set_title("Most visually dependent token strings", fontsize=10)
    return _save(fig, path)
