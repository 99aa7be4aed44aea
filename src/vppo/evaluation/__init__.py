"""Evaluation with the paper's protocol: avg@k over the eight benchmarks, resumable.

    from vppo.evaluation import EvalSettings, TransformersBackend, evaluate, load_benchmark

    geo3k = load_benchmark("geo3k", data_dir="PAPO-Eval/data")
    backend = TransformersBackend.from_pretrained("runs/vppo-7b")
    report = evaluate([geo3k], backend, EvalSettings(), "eval_results/vppo-7b", model_id="vppo-7b")
    print(report.scores["geo3k"])

The command line is ``vppo eval`` (`vppo.evaluation.cli`).
"""

from __future__ import annotations

from vppo.evaluation.benchmarks import (
    BENCHMARKS,
    BenchmarkSpec,
    EvalExample,
    HubSource,
    LoadedBenchmark,
    SkippedRow,
    detect_schema,
    load_benchmark,
    load_examples_from_path,
    resolve_benchmark_names,
    rows_to_examples,
)
from vppo.evaluation.generation import (
    DEFAULT_SYSTEM_PROMPT,
    GenerationBackend,
    GenerationRequest,
    SamplingConfig,
    TransformersBackend,
    VLLMBackend,
    build_backend,
)
from vppo.evaluation.reference import (
    PAPER_BENCHMARKS,
    REFERENCE_RESULTS,
    compare_to_reference,
    reference_row,
)
from vppo.evaluation.runner import (
    BenchmarkResult,
    EvalReport,
    EvalSettings,
    QuestionResult,
    SampleCache,
    avg_at_k,
    evaluate,
    evaluate_benchmark,
    format_table,
    grade_sample,
)

__all__ = [
    "BENCHMARKS",
    "DEFAULT_SYSTEM_PROMPT",
    "PAPER_BENCHMARKS",
    "REFERENCE_RESULTS",
    "BenchmarkResult",
    "BenchmarkSpec",
    "EvalExample",
    "EvalReport",
    "EvalSettings",
    "GenerationBackend",
    "GenerationRequest",
    "HubSource",
    "LoadedBenchmark",
    "QuestionResult",
    "SampleCache",
    "SamplingConfig",
    "SkippedRow",
    "TransformersBackend",
    "VLLMBackend",
    "avg_at_k",
    "build_backend",
    "compare_to_reference",
    "detect_schema",
    "evaluate",
    "evaluate_benchmark",
    "format_table",
    "grade_sample",
    "load_benchmark",
    "load_examples_from_path",
    "reference_row",
    "resolve_benchmark_names",
    "rows_to_examples",
]
