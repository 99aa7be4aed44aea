"""The statistics of `vppo compare`, pure: means, bootstrap intervals, differences paired by seed.

Everything here is a fixed function of its inputs (the bootstrap's generator is seeded), so the
same runs always give the same table. Nothing here trains, reads or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

BOOTSTRAP_RESAMPLES = 10_000
"""Bootstrap resamples behind every confidence interval of the table."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's random generator: the same runs always give the same table."""
CI_LEVEL = 0.95
"""Coverage of the confidence intervals."""
BASELINE = "dapo"
"""The method the others are compared with, seed by seed (VPPO and the ablations build on DAPO)."""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for a single value) of n >= 1 floats.

    Raises ``ValueError`` on an empty sequence.
    """
    if not values:
        raise ValueError("mean_std needs at least one value.")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _final_reward(curve: Sequence[Mapping[str, float]], fraction: float = 0.25) -> float | None:
    """Mean ``"reward"`` over the last ``fraction`` of a run's curve rows that have one (at least
    one row); None when no row has a reward.

    Args:
        curve: a run's training curve, one mapping per logged step (``{"step", "reward", ...}``).
    """
    rewards = [row["reward"] for row in curve if "reward" in row]
    if not rewards:
        return None
    tail = rewards[-max(1, int(round(len(rewards) * fraction))) :]
    return sum(tail) / len(tail)


def bootstrap_ci(
    values: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values``.

    Draws ``resamples`` samples of ``len(values)`` values with replacement (a `numpy` generator
    seeded with ``seed``, so the interval is a fixed function of its inputs), takes each sample's
    mean, and returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means. One
    value, or values that are all equal, give the zero-width interval ``(value, value)``. With few
    values (under about 8) the interval is too narrow: it only knows the spread it has seen.

    Args:
        values: n >= 1 floats (a flat sequence).
        resamples: positive int; level: in (0, 1); seed: the generator's seed.

    Returns:
        (low, high), floats within ``[min(values), max(values)]``.
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
    summary: Mapping[str, Mapping[str, Any]],
    baseline: str = BASELINE,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, dict[str, Any]]:
    """Each method's score minus ``baseline``'s, seed by seed, over the seeds both have.

    Pairing by seed removes what a seed does to both methods (the same data order, sampling
    and perturbation seeds), so the differences vary less than either method's scores. The
    interval is `bootstrap_ci` of the differences: resampling them resamples the seeds, each with
    both of its runs.

    Args:
        summary: `aggregate`'s output, method -> row; each row's ``seeds`` (ints) and
            ``scores`` (floats) are equally long lists.
        baseline: the method subtracted.

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
        pairs = [
            (s, float(x) - base[s])
            for s, x in zip(row["seeds"], row["scores"], strict=True)
            if s in base
        ]
        if not pairs:
            continue
        diffs = [d for _, d in pairs]
        low, high = bootstrap_ci(diffs, resamples=resamples, level=level, seed=seed)
        table[method] = {
            "seeds": [s for s, _ in pairs],
            "differences": diffs,
            "n": len(diffs),
            "mean": sum(diffs) / len(diffs),
            "ci": [low, high],
            "wins": sum(d > 0 for d in diffs),
            "ties": sum(d == 0 for d in diffs),
        }
    return table


def aggregate(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, dict[str, Any]]:
    """Per method: seeds, test avg@k per seed, mean, its bootstrap CI, sd, min, max,
    final-quarter training reward mean/sd and training minutes per run.

    Args:
        results: method -> its runs, each a run file's dict (``seed``: int, ``after``: test
            avg@k in %, ``curve``: list of per-step dicts, ``seconds``: {"train": s, ...}).
            Methods without runs are left out.

    Returns:
        method -> {"seeds": [int], "scores": [float], "mean", "ci": [low, high], "sd", "min",
        "max", "minutes", and "final_reward_mean" / "final_reward_sd" when a run has rewards}.
    """
    table: dict[str, dict[str, Any]] = {}
    for method, runs in results.items():
        if not runs:
            continue
        scores = [float(r["after"]) for r in runs]
        rewards = [x for x in (_final_reward(r["curve"]) for r in runs) if x is not None]
        mean, sd = mean_std(scores)
        low, high = bootstrap_ci(scores, resamples=resamples, level=level, seed=seed)
        row = {
            "seeds": [r["seed"] for r in runs],
            "scores": scores,
            "mean": mean,
            "ci": [low, high],
            "sd": sd,
            "min": min(scores),
            "max": max(scores),
            "minutes": sum(r["seconds"].get("train", 0.0) for r in runs) / 60 / len(runs),
        }
        if rewards:
            row["final_reward_mean"], row["final_reward_sd"] = mean_std(rewards)
        table[method] = row
    return table
