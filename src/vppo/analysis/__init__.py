"""Token-perception analysis: which response tokens depend on the image.

    from vppo.analysis import score_responses, analyze_records, write_report

    records = score_responses(model, processor, prompts, images, responses, estimator="k3")
    stats = analyze_records(records, ratio=0.4, clip=10.0)
    write_report(records, stats, "analysis_results/my-model")   # JSON, summary, PNGs, HTML

``perception_statistics(dep, mask, ...)`` works on [B, T] tensors from any trainer, with no
model. The command line is ``vppo analyze`` (`vppo.analysis.cli`). See docs/analysis.md.
"""

from __future__ import annotations

from vppo.analysis.html import ColourScale, display_text, render_html, write_html
from vppo.analysis.plots import (
    plot_dependency_vs_entropy,
    plot_token_dependency_histogram,
    plot_top_tokens,
    plot_trajectory_histogram,
)
from vppo.analysis.report import (
    REPORT_FILES,
    analyze_records,
    format_summary,
    load_records,
    write_report,
)
from vppo.analysis.scoring import (
    ESTIMATORS,
    PERTURBATIONS,
    ResponseRecord,
    TokenRecord,
    generate_responses,
    perturb_pixel_values,
    pixel_value_slices,
    records_to_tensors,
    response_seed,
    score_responses,
    token_logprobs_and_entropy,
    token_strings,
)
from vppo.analysis.stats import (
    correlation_summary,
    distribution_summary,
    gini,
    mass_share_top,
    pearson,
    perception_statistics,
    selection_overlap,
    spearman,
    token_string_table,
)

__all__ = [
    "ESTIMATORS",
    "PERTURBATIONS",
    "REPORT_FILES",
    "ColourScale",
    "ResponseRecord",
    "TokenRecord",
    "analyze_records",
    "correlation_summary",
    "display_text",
    "distribution_summary",
    "format_summary",
    "generate_responses",
    "gini",
    "load_records",
    "mass_share_top",
    "pearson",
    "perception_statistics",
    "perturb_pixel_values",
    "pixel_value_slices",
    "plot_dependency_vs_entropy",
    "plot_token_dependency_histogram",
    "plot_top_tokens",
    "plot_trajectory_histogram",
    "records_to_tensors",
    "render_html",
    "response_seed",
    "score_responses",
    "selection_overlap",
    "spearman",
    "token_logprobs_and_entropy",
    "token_string_table",
    "token_strings",
    "write_html",
    "write_report",
]
