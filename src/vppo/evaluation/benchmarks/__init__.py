"""Benchmark loaders (being split by job; see `vppo.evaluation.benchmarks.sources`)."""

from vppo.evaluation.benchmarks.sources import *  # noqa: F403
from vppo.evaluation.benchmarks.sources import (  # noqa: F401
    MATHVERSE_VISION_ONLY_QUESTION,
    MMMU_PRO_VISION_QUESTION,
    PAPO_EVAL_REPO,
    SCHEMAS,
    VPPO_EVAL_REPO,
    __all__,
    canonical_name,
    load_raw_from_hub,
    load_sharegpt_from_hub,
    strip_instruction,
)
