"""Token-perception statistics on per-token dependency tensors (pure: no model, no I/O).

Shapes: ``B`` responses, ``T`` response tokens (right-padded); ``mask`` [B, T] is True at valid
response tokens. Every function accepts torch tensors or numpy arrays and returns plain Python
numbers (JSON-serialisable), with ``None`` where a statistic is undefined (and a ``note`` that
says why).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vppo.algorithm import entropy_mask, kept_token_counts, tgf_mask

__all__ = [
    "DEFAULT_MASS_FRACTIONS",
    "DEFAULT_QUANTILES",
    "DEFAULT_THRESHOLDS",
    "correlation_summary",
    "distribution_summary",
    "gini",
    "mass_share_top",
    "pearson",
    "perception_statistics",
    "selection_overlap",
    "spearman",
    "token_string_table",
]

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0, 2.0, 5.0)
DEFAULT_MASS_FRACTIONS: tuple[float, ...] = (0.1, 0.4)


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a tensor or array, got {type(x).__name__}.") from err


def _as_float_matrix(x: Any, mask: torch.Tensor, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    if t.shape != mask.shape:
        raise ValueError(
            f"{name} must have the shape of mask {tuple(mask.shape)}, got {tuple(t.shape)}."
        )
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}.")
    t = t.to(torch.float64)
    bad = int((~torch.isfinite(t) & mask).sum())
    if bad:
        raise ValueError(f"{name} has {bad} NaN/inf values at valid positions.")
    return torch.where(mask, t, torch.zeros((), dtype=torch.float64))


def _as_mask(mask: Any) -> torch.Tensor:
    m = _as_tensor(mask, "mask")
    if m.dim() != 2:
        raise ValueError(f"mask must be a 2-D [B, T] array, got shape {tuple(m.shape)}.")
    if m.dtype != torch.bool:
        if (
            m.is_floating_point()
            and not torch.isin(m, torch.tensor([0.0, 1.0], dtype=m.dtype)).all()
        ):
            raise ValueError("mask must hold only 0/1 (or booleans).")
        m = m != 0
    return m


def _as_vector(x: Any, size: int, name: str) -> np.ndarray:
    arr = np.asarray(_as_tensor(x, name).to(torch.float64).numpy(), dtype=np.float64)
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN/inf values.")
    return arr


def _valid_tokens(tokens: Sequence[Sequence[str]], mask: torch.Tensor) -> list[list[str]]:
    """tokens per response: either aligned with T or listing the valid tokens in order."""
    if len(tokens) != mask.shape[0]:
        raise ValueError(
            f"tokens must hold one list per response ({mask.shape[0]}), got {len(tokens)}."
        )
    out = []
    for b, row in enumerate(tokens):
        row = list(row)
        n_valid = int(mask[b].sum())
        if len(row) == mask.shape[1]:
            row = [row[t] for t in torch.nonzero(mask[b]).flatten().tolist()]
        elif len(row) != n_valid:
            raise ValueError(
                f"tokens[{b}] has {len(row)} strings; expected {n_valid} (the valid tokens) or "
                f"{mask.shape[1]} (aligned with T)."
            )
        out.append([str(s) for s in row])
    return out


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def _pct_key(fraction: float) -> str:
    return f"top_{fraction * 100:g}%"


def distribution_summary(
    values: Any, quantiles: Sequence[float] = DEFAULT_QUANTILES
) -> dict[str, Any]:
    """count, mean, std (population), min, max, median, skewness and quantiles of a 1-D sample.

    Skewness is the moment coefficient m3 / m2^1.5 (``None`` for a constant sample or fewer
    than 3 values). An empty sample gives ``count = 0`` and ``None`` everywhere else.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    keys = ["mean", "std", "min", "max", "median", "skewness"]
    if x.size == 0:
        return {
            "count": 0,
            **dict.fromkeys(keys),
            "quantiles": {f"p{q * 100:g}": None for q in quantiles},
        }
    mean = float(x.mean())
    centred = x - mean
    m2 = float((centred**2).mean())
    m3 = float((centred**3).mean())
    skew = m3 / m2**1.5 if x.size >= 3 and m2 > 1e-300 else None
    return {
        "count": int(x.size),
        "mean": mean,
        "std": math.sqrt(m2),
        "min": float(x.min()),
        "max": float(x.max()),
        "median": float(np.median(x)),
        "skewness": skew,
        "quantiles": {f"p{q * 100:g}": float(np.quantile(x, q)) for q in quantiles},
    }


def mass_share_top(values: Any, fraction: float) -> float | None:
    """Share of the total held by the largest ceil(fraction · n) values of a non-negative sample.

    All mass on one value gives 1.0; n equal values give ceil(fraction · n) / n. ``None`` when
    the sample is empty or sums to 0 (no dependency to share).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    total = float(x.sum())
    if x.size == 0 or total <= 0.0:
        return None
    k = int(kept_token_counts(torch.tensor([x.size]), fraction)[0])
    top = np.sort(x)[::-1][:k]
    return float(top.sum() / total)


def gini(values: Any) -> float | None:
    """Gini coefficient of a non-negative sample: 0 for equal values, (n-1)/n for one non-zero."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    total = float(x.sum())
    if x.size == 0 or total <= 0.0:
        return None
    n = x.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float((2.0 * (ranks * x).sum() / (n * total)) - (n + 1.0) / n)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson(x: Any, y: Any) -> float | None:
    """Pearson correlation; ``None`` if either input is constant or has fewer than 2 values."""
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"pearson needs inputs of equal length, got {a.size} and {b.size}.")
    if a.size < 2:
        return None
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if denom <= 1e-300:
        return None
    return float(np.clip((a * b).sum() / denom, -1.0, 1.0))


def spearman(x: Any, y: Any) -> float | None:
    """Spearman rank correlation (Pearson on average ranks); ``None`` for constant inputs."""
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman needs inputs of equal length, got {a.size} and {b.size}.")
    return pearson(_ranks(a), _ranks(b))


def _fisher_ci(r: float | None, n: int) -> list[float] | None:
    """Approximate 95% interval of a correlation through Fisher's z (n > 3)."""
    if r is None or n <= 3:
        return None
    z = math.atanh(min(max(r, -0.999999), 0.999999))
    half = 1.959963984540054 / math.sqrt(n - 3)
    return [math.tanh(z - half), math.tanh(z + half)]


def correlation_summary(traj: Any, correct: Any) -> dict[str, Any]:
    """How trajectory dependency relates to correctness (both [B]).

    ``point_biserial`` is the Pearson correlation with the 0/1 correctness, with a Fisher-z 95%
    interval; ``spearman`` is the rank correlation. Both are ``None`` (and ``note`` says why)
    when either input is constant, e.g. when every response is wrong.
    """
    t = np.asarray(traj, dtype=np.float64).ravel()
    c = np.asarray(correct, dtype=np.float64).ravel()
    if t.shape != c.shape:
        raise ValueError(f"correct must have one value per response ({t.size}), got {c.size}.")
    if not np.isin(c, (0.0, 1.0)).all():
        raise ValueError("correct must hold only 0/1 (or booleans).")
    n = int(t.size)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": float(c.mean()) if n else None,
        "mean_dependency_correct": float(t[c == 1].mean()) if (c == 1).any() else None,
        "mean_dependency_incorrect": float(t[c == 0].mean()) if (c == 0).any() else None,
        "point_biserial": None,
        "point_biserial_ci95": None,
        "spearman": None,
        "note": None,
    }
    if n < 2:
        out["note"] = "fewer than 2 responses"
    elif np.all(c == c[0]):
        out["note"] = (
            "correctness is constant (all " + ("correct" if c[0] == 1 else "incorrect") + ")"
        )
    elif np.all(t == t[0]):
        out["note"] = "trajectory dependency is constant"
    else:
        r = pearson(t, c)
        out["point_biserial"] = r
        out["point_biserial_ci95"] = _fisher_ci(r, n)
        out["spearman"] = spearman(t, c)
    return out


def selection_overlap(
    dep: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, ratio: float
) -> dict[str, Any]:
    """Overlap of the top-``ratio`` tokens by dependency (TGF) and by entropy, per response.

    Both selections keep ceil(ratio · n_i) tokens of response i (same counting and tie-break
    as :func:`vppo.algorithm.tgf_mask`). ``jaccard`` is the mean over non-empty responses of
    |D ∩ E| / |D ∪ E|; ``overlap_fraction`` the mean of |D ∩ E| / |D| (equal set sizes, so
    this is also the share of entropy-selected tokens that TGF keeps); ``*_pooled`` divide
    the summed counts instead. ``random_overlap_fraction`` is the mean k_i / n_i that two
    independent random selections would share in expectation.
    """
    by_dep = tgf_mask(dep, mask, ratio)
    by_entropy = entropy_mask(entropy, mask, ratio)
    inter = (by_dep & by_entropy).sum(-1).double()
    union = (by_dep | by_entropy).sum(-1).double()
    size = by_dep.sum(-1).double()
    n_valid = mask.sum(-1).double()
    rows = n_valid > 0
    if not bool(rows.any()):
        return {
            "ratio": ratio,
            "jaccard": None,
            "overlap_fraction": None,
            "jaccard_pooled": None,
            "overlap_fraction_pooled": None,
            "random_overlap_fraction": None,
            "spearman_tokens": None,
            "pearson_tokens": None,
        }
    valid = mask
    dep_v = dep[valid].numpy()
    ent_v = entropy[valid].numpy()
    return {
        "ratio": ratio,
        "jaccard": float((inter[rows] / union[rows]).mean()),
        "overlap_fraction": float((inter[rows] / size[rows]).mean()),
        "jaccard_pooled": float(inter.sum() / union.sum()),
        "overlap_fraction_pooled": float(inter.sum() / size.sum()),
        "random_overlap_fraction": float((size[rows] / n_valid[rows]).mean()),
        "spearman_tokens": spearman(dep_v, ent_v),
        "pearson_tokens": pearson(dep_v, ent_v),
    }


def token_string_table(
    dep: torch.Tensor,
    mask: torch.Tensor,
    selected: torch.Tensor,
    tokens: list[list[str]],
    *,
    top: int = 25,
    min_count: int = 2,
) -> dict[str, list[dict[str, Any]]]:
    """Per token string: count, mean dependency and the share of its occurrences TGF selects.

    Strings are stripped of surrounding whitespace (" 25" and "25" are one entry); whitespace-only
    tokens are grouped under their ``repr``. Returns the ``top`` strings with at least
    ``min_count`` occurrences sorted by mean dependency (``by_mean_dependency``) and sorted by
    their total dependency (``by_total_dependency``: frequent and dependent).
    """
    stats: dict[str, list[float]] = {}
    for b, row in enumerate(tokens):
        positions = torch.nonzero(mask[b]).flatten().tolist()
        for text, t in zip(row, positions, strict=True):
            key = text.strip() or repr(text)
            entry = stats.setdefault(key, [0.0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += float(dep[b, t])
            entry[2] += float(selected[b, t])
    rows = [
        {
            "token": key,
            "count": int(c),
            "mean_dependency": s / c,
            "total_dependency": s,
            "selected_share": k / c,
        }
        for key, (c, s, k) in stats.items()
    ]
    frequent = [r for r in rows if r["count"] >= min_count]
    return {
        "by_mean_dependency": sorted(frequent, key=lambda r: (-r["mean_dependency"], r["token"]))[
            :top
        ],
        "by_total_dependency": sorted(rows, key=lambda r: (-r["total_dependency"], r["token"]))[
            :top
        ],
    }


# --------------------------------------------------------------------------------------------
# the whole report
# --------------------------------------------------------------------------------------------


def perception_statistics(
    dep: Any,
    mask: Any,
    *,
    entropy: Any = None,
    correct: Any = None,
    tokens: Sequence[Sequence[str]] | None = None,
    ratio: float = 0.4,
    clip: float | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    mass_fractions: Sequence[float] = DEFAULT_MASS_FRACTIONS,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    top_tokens: int = 25,
    min_token_count: int = 2,
) -> dict[str, Any]:
    """Statistics of per-token visual dependency: how large, how sparse, what it predicts.

    Args:
        dep: [B, T] non-negative per-token dependency (any estimator), finite at valid tokens.
        mask: [B, T] bool (or 0/1), True at valid response tokens.
        entropy: optional [B, T] per-token policy entropy; adds the dependency-vs-entropy
            selection overlap (paper Table 4 contrasts the two signals).
        correct: optional [B] 0/1 correctness; adds the correlation with trajectory dependency.
        tokens: optional token strings per response (valid tokens in order, or aligned with
            T); adds the most dependent token strings.
        ratio: TGF keep ratio k (paper: 0.4), in (0, 1].
        clip: the estimator's upper clamp (k3: 10.0); adds the share of tokens at the clamp.
        thresholds: dependency levels for ``share_above`` (fraction of tokens with dep > level).
        mass_fractions: top fractions of tokens whose share of the total dependency is reported
            (``ratio`` is always added).
        quantiles: token-dependency quantiles to report.
        top_tokens, min_token_count: size of the token-string tables and the minimum count for
            the by-mean table.

    Returns:
        JSON-ready dict with sections ``token_dependency``, ``trajectory_dependency``,
        ``selection`` and, when their inputs are given, ``correctness``, ``entropy`` and
        ``token_strings``. Undefined statistics are ``None``.
    """
    mask_t = _as_mask(mask)
    dep_t = _as_float_matrix(dep, mask_t, "dep")
    if bool((dep_t < 0).any()):
        raise ValueError("dep must be non-negative at valid positions (a dependency score).")
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}.")
    ratio = float(ratio)
    fractions = sorted({float(f) for f in mass_fractions} | {ratio})
    n_valid = mask_t.sum(-1)
    values = dep_t[mask_t].numpy()
    total = float(values.sum())

    token_section: dict[str, Any] = distribution_summary(values, quantiles)
    token_section["share_above"] = {
        f"{level:g}": (float((values > level).mean()) if values.size else None)
        for level in thresholds
    }
    if clip is not None and math.isfinite(clip):
        token_section["clip"] = float(clip)
        token_section["share_at_clip"] = float((values >= clip).mean()) if values.size else None
    token_section["share_zero"] = float((values == 0).mean()) if values.size else None
    token_section["mass_share_top"] = {_pct_key(f): mass_share_top(values, f) for f in fractions}
    per_response: dict[str, float | None] = {}
    for f in fractions:
        shares = [mass_share_top(dep_t[b][mask_t[b]].numpy(), f) for b in range(mask_t.shape[0])]
        shares = [s for s in shares if s is not None]
        per_response[_pct_key(f)] = float(np.mean(shares)) if shares else None
    token_section["mass_share_top_per_response"] = per_response
    token_section["gini"] = gini(values)

    traj = (dep_t.sum(-1) / n_valid.clamp(min=1)).numpy()
    nonempty = n_valid.numpy() > 0
    traj_section = distribution_summary(traj[nonempty], quantiles)
    traj_section["coefficient_of_variation"] = (
        traj_section["std"] / traj_section["mean"]
        if traj_section["count"] and traj_section["mean"] and traj_section["mean"] > 0
        else None
    )

    selected = tgf_mask(dep_t, mask_t, ratio)
    kept = selected.sum()
    rejected = mask_t & ~selected
    stats: dict[str, Any] = {
        "num_responses": int(mask_t.shape[0]),
        "num_empty_responses": int((~torch.as_tensor(nonempty)).sum()),
        "num_tokens": int(values.size),
        "mean_response_tokens": float(n_valid.double().mean()) if mask_t.shape[0] else None,
        "token_dependency": token_section,
        "trajectory_dependency": traj_section,
        "selection": {
            "ratio": ratio,
            "selected_tokens": int(kept),
            "selected_fraction": float(kept / max(values.size, 1)),
            "mean_dependency_selected": float(dep_t[selected].mean()) if int(kept) else None,
            "mean_dependency_rejected": float(dep_t[rejected].mean())
            if bool(rejected.any())
            else None,
            "dependency_share_selected": float(dep_t[selected].sum() / total)
            if total > 0
            else None,
        },
    }
    if correct is not None:
        c = _as_vector(correct, mask_t.shape[0], "correct")
        stats["correctness"] = correlation_summary(traj[nonempty], c[nonempty])
    if entropy is not None:
        ent_t = _as_float_matrix(entropy, mask_t, "entropy")
        section = selection_overlap(dep_t, ent_t, mask_t, ratio)
        section["entropy"] = distribution_summary(ent_t[mask_t].numpy(), (0.5, 0.9))
        stats["entropy"] = section
    if tokens is not None:
        strings = _valid_tokens(tokens, mask_t)
        stats["token_strings"] = token_string_table(
            dep_t, mask_t, selected, strings, top=top_tokens, min_count=min_token_count
        )
    return stats
