"""The paper's own avg@8 numbers (VPPO Table 1 and the README's Qwen3-VL-8B table).

All numbers are avg@8 accuracy in percent at temperature 1.0, scored by exact match on the last
``\\boxed{}`` (notes/paper.md §3). Columns follow the paper's order; ``Avg`` is the paper's printed
average (the mean of the eight columns, rounded by the authors).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# Paper column order; the keys are the benchmark registry names of `vppo.evaluation.benchmarks`.
PAPER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mathverse", "MathVerse"),
    ("dynamath", "DynaMath"),
    ("mmk12", "MMK12"),
    ("geo3k", "Geo3k"),
    ("mathvision", "MathVision"),
    ("wemath", "We-Math"),
    ("logicvista", "LogicVista"),
    ("mmmu_pro", "MMMU-Pro"),
)
PAPER_BENCHMARKS: tuple[str, ...] = tuple(name for name, _ in PAPER_COLUMNS)
COLUMN_TITLES: dict[str, str] = dict(PAPER_COLUMNS)


def _row(values: tuple[float, ...], avg: float) -> dict[str, float]:
    if len(values) != len(PAPER_BENCHMARKS):
        raise ValueError(f"a reference row needs {len(PAPER_BENCHMARKS)} values, got {len(values)}")
    return {**dict(zip(PAPER_BENCHMARKS, values, strict=True)), "avg": avg}


# name -> {benchmark: score, "avg": paper average}. Table 1 of arXiv 2510.09285 and the VPPO
# README's Qwen3-VL-8B table. Rows marked † in the paper were re-evaluated by the VPPO authors.
REFERENCE_RESULTS: dict[str, dict[str, float]] = {
    "Qwen2.5-VL-7B": _row((39.0, 55.7, 42.5, 37.1, 18.4, 46.4, 42.4, 25.1), 38.3),
    "Qwen2.5-VL-7B+GRPO": _row((66.5, 65.8, 72.3, 40.2, 30.7, 68.1, 45.6, 35.2), 53.1),
    "Qwen2.5-VL-7B+DAPO": _row((68.3, 66.6, 82.1, 41.5, 30.5, 68.0, 46.8, 35.9), 55.0),
    "Qwen2.5-VL-7B+VPPO": _row((71.6, 68.1, 82.8, 46.5, 33.3, 71.5, 47.9, 37.9), 57.5),
    "Qwen2.5-VL-32B": _row((68.5, 68.7, 68.8, 47.0, 39.3, 71.0, 52.8, 39.6), 57.0),
    "Qwen2.5-VL-32B+GRPO": _row((74.2, 71.6, 80.7, 51.4, 42.8, 76.7, 58.3, 45.4), 62.6),
    "Qwen2.5-VL-32B+DAPO": _row((73.3, 72.6, 86.4, 51.4, 42.8, 76.2, 58.9, 46.4), 63.5),
    "Qwen2.5-VL-32B+VPPO": _row((75.1, 73.1, 86.3, 53.4, 44.6, 77.7, 59.2, 47.1), 64.6),
    "Qwen3-VL-8B-Instruct": _row((67.7, 72.2, 62.0, 57.5, 37.8, 69.0, 50.1, 33.7), 56.3),
    "Qwen3-VL-8B-Instruct+VPPO": _row((83.8, 80.0, 80.6, 71.9, 55.9, 84.3, 62.3, 52.4), 71.4),
    "MM-Eureka-7B": _row((67.1, 65.4, 67.5, 40.3, 31.1, 65.5, 46.3, 30.3), 51.7),
    "ThinkLite-7B": _row((64.2, 64.6, 62.6, 37.6, 32.0, 66.5, 39.4, 28.0), 49.4),
    "VL-Rethinker-7B": _row((68.8, 65.7, 68.3, 40.7, 31.9, 68.9, 46.3, 37.0), 53.5),
    "NoisyRollout-7B": _row((67.8, 65.5, 50.0, 51.8, 22.1, 71.0, 47.3, 34.5), 51.3),
    "R1-ShareVL-7B": _row((68.0, 65.1, 70.9, 41.2, 30.1, 69.9, 45.6, 35.1), 53.2),
    "PAPO-D-7B": _row((68.6, 66.8, 80.6, 44.1, 30.6, 68.3, 46.7, 36.3), 55.3),
    "MM-Eureka-32B": _row((71.8, 72.0, 73.4, 51.0, 43.2, 75.0, 56.8, 43.1), 60.8),
    "NoisyRollout-32B": _row((73.0, 72.2, 60.2, 56.6, 27.9, 75.7, 56.2, 43.1), 58.1),
}

# Other spellings people type for the same rows.
_ALIASES: dict[str, str] = {
    "vppo-7b": "Qwen2.5-VL-7B+VPPO",
    "vppo-32b": "Qwen2.5-VL-32B+VPPO",
    "vppo-8b": "Qwen3-VL-8B-Instruct+VPPO",
    "qwen3-vl-8b": "Qwen3-VL-8B-Instruct",
    "qwen3-vl-8b+vppo": "Qwen3-VL-8B-Instruct+VPPO",
    "qwen3-vl-8b-ins": "Qwen3-VL-8B-Instruct",
    "qwen3-vl-8b-ins+vppo": "Qwen3-VL-8B-Instruct+VPPO",
    "qwen2.5-vl-7b-instruct": "Qwen2.5-VL-7B",
    "qwen2.5-vl-32b-instruct": "Qwen2.5-VL-32B",
}


def _key(name: str) -> str:
    return "".join(name.lower().split())


def reference_row(name: str) -> dict[str, float]:
    """Return the paper's row ``name`` (case and spaces ignored; e.g. ``"Qwen2.5-VL-7B + VPPO"``)."""
    wanted = _key(name)
    for row_name, row in REFERENCE_RESULTS.items():
        if _key(row_name) == wanted:
            return dict(row)
    alias = {_key(k): v for k, v in _ALIASES.items()}.get(wanted)
    if alias is not None:
        return dict(REFERENCE_RESULTS[alias])
    raise ValueError(
        f"--compare-to {name!r} is not a reference row; choose one of: {', '.join(REFERENCE_RESULTS)}."
    )


def compare_to_reference(scores: Mapping[str, float | None], name: str) -> dict[str, float]:
    """Differences ``ours - paper`` (percentage points) for every paper column present in ``scores``.

    ``scores`` maps benchmark names (and optionally ``"avg"``) to avg@k in percent; missing or
    ``None`` entries are left out. The ``"avg"`` difference uses the paper's printed average when
    all eight columns were evaluated, else the mean of the paper's numbers on the evaluated columns,
    so both sides average over the same benchmarks.
    """
    ref = reference_row(name)
    diffs: dict[str, float] = {}
    evaluated = [b for b in PAPER_BENCHMARKS if scores.get(b) is not None]
    for bench in evaluated:
        diffs[bench] = float(scores[bench]) - ref[bench]
    if evaluated:
        ours = sum(float(scores[b]) for b in evaluated) / len(evaluated)
        theirs = (
            ref["avg"]
            if len(evaluated) == len(PAPER_BENCHMARKS)
            else sum(ref[b] for b in evaluated) / len(evaluated)
        )
        diffs["avg"] = ours - theirs
    return diffs


def paper_average_is_consistent(name: str, tol: float = 0.06) -> bool:
    """True when the paper's printed ``Avg`` equals the mean of its eight columns up to rounding."""
    row = REFERENCE_RESULTS[name]
    mean = sum(row[b] for b in PAPER_BENCHMARKS) / len(PAPER_BENCHMARKS)
    return math.isclose(mean, row["avg"], abs_tol=tol)
