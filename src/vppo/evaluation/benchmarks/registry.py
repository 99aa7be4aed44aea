"""The benchmark registry: where each benchmark lives (Hub repository, ShareGPT file) and its names.

`BENCHMARKS` maps a registry name to its `BenchmarkSpec`; `canonical_name` turns a user-typed name
(``We-Math``) into a registry name and `resolve_benchmark_names` parses a ``--benchmarks`` value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vppo.evaluation.reference import PAPER_BENCHMARKS

__all__ = [
    "BENCHMARKS",
    "PAPO_EVAL_REPO",
    "VPPO_EVAL_REPO",
    "BenchmarkSpec",
    "HubSource",
    "canonical_name",
    "resolve_benchmark_names",
]


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face dataset: repository, optional configuration, one or more splits."""

    repo: str
    config: str | None = None
    splits: tuple[str, ...] = ("test",)

    def describe(self) -> str:
        config = f" config {self.config!r}" if self.config else ""
        return f"hub:{self.repo}{config} split {'+'.join(self.splits)}"


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and how it is read.

    ``sharegpt_names`` are the file stems / split names of its PAPO-Eval or VPPO-Eval ShareGPT
    file (several spellings occur); ``sharegpt_hub`` says which of the two repositories holds it.
    """

    name: str
    title: str
    raw: HubSource
    raw_schema: str
    sharegpt_names: tuple[str, ...] = ()
    sharegpt_hub: str | None = None  # "papo" or "vppo"
    sharegpt_zip: str | None = None  # PAPO-Eval image archive at the repository root
    paper_rows: int | None = None  # question count of the files the paper scored
    in_paper: bool = True


PAPO_EVAL_REPO = "PAPO-Galaxy/PAPO_eval"
VPPO_EVAL_REPO = "chamber111/VPPO-Eval"

BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in (
        BenchmarkSpec(
            "mathverse",
            "MathVerse",
            HubSource("AI4Math/MathVerse", "testmini", ("testmini",)),
            "mathverse",
            ("AI4Math_MathVerse",),
            "papo",
            "AI4Math_MathVerse_images.zip",
            2180,
        ),
        BenchmarkSpec(
            "dynamath",
            "DynaMath",
            HubSource(
                "DynaMath/DynaMath_Sample", None, tuple(f"sample_variant{i}" for i in range(1, 11))
            ),
            "dynamath",
            ("DynaMath_DynaMath_Sample",),
            "vppo",
            None,
            3666,
        ),
        BenchmarkSpec(
            "mmk12",
            "MMK12",
            HubSource("FanqingM/MMK12"),
            "mmk12",
            ("PAPO_MMK12", "PAPO_MMK12_test"),
            "papo",
            "PAPO_MMK12_test_images.zip",
            2000,
        ),
        BenchmarkSpec(
            "geo3k",
            "Geo3k",
            HubSource("hiyouga/geometry3k"),
            "easyr1",
            ("hiyouga_geometry3k",),
            "papo",
            "hiyouga_geometry3k_images.zip",
            601,
        ),
        BenchmarkSpec(
            "mathvision",
            "MathVision",
            HubSource("MathLLMs/MathVision"),
            "mathvision",
            ("MathLLMs_MathVision",),
            "vppo",
            None,
            2907,
        ),
        BenchmarkSpec(
            "wemath",
            "We-Math",
            HubSource("We-Math/We-Math", None, ("testmini",)),
            "wemath",
            ("We_Math", "We-Math_We-Math"),
            "papo",
            "We-Math_We-Math_images.zip",
            1740,
        ),
        BenchmarkSpec(
            "logicvista",
            "LogicVista",
            HubSource("lscpku/LogicVista"),
            "logicvista",
            ("lscpku_LogicVista",),
            "papo",
            "lscpku_LogicVista_images.zip",
            447,
        ),
        BenchmarkSpec(
            "mmmu_pro",
            "MMMU-Pro",
            HubSource("MMMU/MMMU_Pro", "standard (10 options)"),
            "mmmu_pro",
            ("MMMU_MMMU_Pro",),
            "papo",
            "MMMU_MMMU_Pro_images.zip",
            1730,
        ),
        BenchmarkSpec(
            "virl39k",
            "ViRL39K (train)",
            HubSource("chamber111/VPPO_ViRL39K_train", None, ("train",)),
            "easyr1",
            in_paper=False,
        ),
        BenchmarkSpec(
            "mmk12_val",
            "MMK12 (validation)",
            HubSource("chamber111/VPPO_MMK12_validation", None, ("train",)),
            "easyr1",
            in_paper=False,
        ),
    )
}

_BENCHMARK_SCHEMA_HINTS = {name: spec.raw_schema for name, spec in BENCHMARKS.items()}
_ALIASES = {
    "we-math": "wemath",
    "we_math": "wemath",
    "geometry3k": "geo3k",
    "mmmu-pro": "mmmu_pro",
    "mmmupro": "mmmu_pro",
    "math_vision": "mathvision",
    "math-vision": "mathvision",
    "math_verse": "mathverse",
    "dyna_math": "dynamath",
    "logic_vista": "logicvista",
    "mmk12-val": "mmk12_val",
    "vppo_mmk12_validation": "mmk12_val",
    "vppo_virl39k_train": "virl39k",
}


def canonical_name(name: str) -> str:
    """Registry name for a user-typed benchmark name (``We-Math`` -> ``wemath``); else unchanged."""
    key = name.strip().lower()
    if key in BENCHMARKS:
        return key
    return _ALIASES.get(key, key)


def resolve_benchmark_names(text: str | Sequence[str]) -> list[str]:
    """``"all"`` -> the paper's eight in column order; a comma list -> canonical names, in order.

    Unknown names are kept as custom benchmarks (they need a ``--benchmark-path``).
    """
    parts = [p for p in (text.split(",") if isinstance(text, str) else text)]
    names: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        for name in PAPER_BENCHMARKS if part.lower() == "all" else (canonical_name(part),):
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("--benchmarks names no benchmark; give e.g. 'all' or 'geo3k,wemath'.")
    return names
