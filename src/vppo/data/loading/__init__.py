"""Load training data in the ViRL39K schema into TRL's conversational VLM format (see ``convert``)."""

from __future__ import annotations

from vppo.data.loading.convert import (
    DATA_FILE_SUFFIXES,
    OUTPUT_COLUMNS,
    json_error_detail,
    load_training_dataset,
    quiet_datasets_json_errors,
    text_file_problem,
)
from vppo.data.loading.convert import _json_problem as _json_problem
from vppo.data.loading.convert import _utf8_problem as _utf8_problem

__all__ = [
    "DATA_FILE_SUFFIXES",
    "OUTPUT_COLUMNS",
    "json_error_detail",
    "load_training_dataset",
    "quiet_datasets_json_errors",
    "text_file_problem",
]
