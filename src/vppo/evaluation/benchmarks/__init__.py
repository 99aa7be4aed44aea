"""Benchmark loaders: every supported schema into one common form, `EvalExample`.

The paper scores the LLaMA-Factory ShareGPT files of PAPO-Eval (six benchmarks) and VPPO-Eval
(DynaMath, MathVision); those are the default sources. The raw Hugging Face schemas of the eight
benchmarks, the EasyR1 training schema (ViRL39K, the MMK12 validation set, hiyouga/geometry3k) and
the original TIGER-Lab ViRL39K schema load too, from the Hub or from local files.

Common form: `EvalExample` (id, problem text with ``<image>`` placeholders and *without* the
output-format instruction, answer, benchmark name, images). Images are decoded lazily, when
`EvalExample.images` is read, so loading a 3,666-question benchmark holds only compressed bytes
or file paths. A row that cannot become an example (no answer, a missing image file, a placeholder
count that does not match its images) is recorded in `LoadedBenchmark.skipped` with a reason and
never stops the rest of the benchmark.

The package is split by job, in a plain import stack (each module imports only the ones before
it): `rows` (the common form and row access), `registry` (the benchmark list and its names),
`schemas` (text helpers, one converter per schema, `detect_schema`, `rows_to_examples`) and
`sources` (reading files, ShareGPT image paths, locating files, Hub loading, `load_benchmark`).
"""

from __future__ import annotations

from vppo.evaluation.benchmarks.registry import (
    BENCHMARKS,
    PAPO_EVAL_REPO,
    VPPO_EVAL_REPO,
    BenchmarkSpec,
    HubSource,
    canonical_name,
    resolve_benchmark_names,
)
from vppo.evaluation.benchmarks.rows import (
    IMAGE_PLACEHOLDER,
    EvalExample,
    LoadedBenchmark,
    SkippedRow,
)
from vppo.evaluation.benchmarks.schemas import (
    MATHVERSE_VISION_ONLY_QUESTION,
    MMMU_PRO_VISION_QUESTION,
    SCHEMAS,
    detect_schema,
    rows_to_examples,
    strip_instruction,
)
from vppo.evaluation.benchmarks.sources import (
    find_sharegpt_file,
    load_benchmark,
    load_examples_from_path,
    load_raw_from_hub,
    load_sharegpt_from_hub,
)

# The first 13 are the single-file module's `__all__`; the rest were its other public names.
__all__ = [
    "BENCHMARKS",
    "IMAGE_PLACEHOLDER",
    "BenchmarkSpec",
    "EvalExample",
    "HubSource",
    "LoadedBenchmark",
    "SkippedRow",
    "detect_schema",
    "find_sharegpt_file",
    "load_benchmark",
    "load_examples_from_path",
    "resolve_benchmark_names",
    "rows_to_examples",
    "MATHVERSE_VISION_ONLY_QUESTION",
    "MMMU_PRO_VISION_QUESTION",
    "PAPO_EVAL_REPO",
    "SCHEMAS",
    "VPPO_EVAL_REPO",
    "canonical_name",
    "load_raw_from_hub",
    "load_sharegpt_from_hub",
    "strip_instruction",
]
