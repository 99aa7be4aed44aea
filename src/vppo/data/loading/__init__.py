"""Load training data in the ViRL39K schema into TRL's conversational VLM format.

``load_training_dataset`` reads a Hub dataset, a data file (parquet, JSON, JSON Lines, CSV, Arrow),
a folder of such files, a ``save_to_disk`` folder, an image folder with ``metadata.jsonl`` /
``metadata.csv``, or an in-memory ``datasets.Dataset``. Every row becomes::

    {"prompt": [{"role": "system", ...}?, {"role": "user", "content": [{"type": "image"}, ...,
                {"type": "text", "text": ...}]}],
     "images": [PIL.Image (RGB), ...],
     "answer": "ground truth",
     **keep_columns}

Text, answers and image headers are checked once, up front (no pixel is decoded unless
``validate="full"``). Images are decoded, converted to RGB and resized when a row is read, through a
``datasets`` transform, so image bytes stay memory-mapped and are decoded exactly once per read.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from vppo.data.loading.convert import _convert_part, _log_skipped
from vppo.data.loading.formatter import _RowFormatter
from vppo.data.loading.options import OUTPUT_COLUMNS, TrainingDataOptions
from vppo.data.loading.sources import (
    DATA_FILE_SUFFIXES,
    _describe_source,
    _load_parts,
    _select_rows,
    json_error_detail,
    quiet_datasets_json_errors,
    text_file_problem,
)
from vppo.data.loading.sources import _json_problem as _json_problem
from vppo.data.loading.sources import _utf8_problem as _utf8_problem

__all__ = [
    "DATA_FILE_SUFFIXES",
    "OUTPUT_COLUMNS",
    "TrainingDataOptions",
    "json_error_detail",
    "load_training_dataset",
    "quiet_datasets_json_errors",
    "text_file_problem",
]

_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(TrainingDataOptions))


def load_training_dataset(
    source: str | os.PathLike | Any,
    *,
    options: TrainingDataOptions | None = None,
    **kwargs: Any,
):
    """Load a VLM RL training set (ViRL39K schema by default) as a TRL-ready ``datasets.Dataset``.

    Args:
        source: a Hub dataset name (``datasets.load_dataset(source, split=split)``); a local data
            file (``.parquet``, ``.json`` list, ``.jsonl``, ``.csv``, ``.arrow``); a folder of such
            files (files whose path names a split, e.g. ``train-00000.parquet`` or ``test/``, are
            picked by ``split``; with no split names every file is ``train``); a ``save_to_disk``
            folder; an image folder with ``metadata.jsonl``/``metadata.csv`` whose ``file_name``
            (one path) / ``file_names`` (list) columns name the images; or a ``datasets.Dataset``
            / ``DatasetDict``.
        options: a `TrainingDataOptions`; keywords given with it replace those of its fields.
        **kwargs: the fields of `TrainingDataOptions` (``split``, ``image_column``, ``min_pixels``,
            ``on_error``, ...; each field's ``help`` says what it does), read as
            ``TrainingDataOptions(**kwargs)``.

    Returns:
        ``datasets.Dataset`` whose rows read as dicts with ``prompt`` (TRL conversational messages),
        ``images`` (list of RGB ``PIL.Image``), ``answer`` (str) and the ``keep_columns``.

    Raises:
        FileNotFoundError: the source or an image file does not exist.
        ValueError: a bad argument, a missing column, or (with ``on_error="raise"``) a bad row.
    """
    import datasets

    unknown = next((name for name in kwargs if name not in _OPTION_NAMES), None)
    if unknown is not None:  # the message Python gives for a keyword-only signature
        raise TypeError(f"load_training_dataset() got an unexpected keyword argument {unknown!r}")
    if options is None:
        options = TrainingDataOptions(**kwargs)
    elif not isinstance(options, TrainingDataOptions):
        raise ValueError(f"options must be a TrainingDataOptions, got {type(options).__name__}.")
    elif kwargs:
        options = dataclasses.replace(options, **kwargs)

    parts = _load_parts(source, options.split, options.cache_dir)
    total = sum(len(p.dataset) for p in parts)
    if total == 0:
        raise ValueError(f"{_describe_source(source, parts)} has no rows.")
    selections = _select_rows([len(p.dataset) for p in parts], options.max_samples, options.seed)

    converted, skipped = [], []
    for part, rows in zip(parts, selections, strict=True):
        if rows is not None and len(rows) == 0:
            continue
        table, errors = _convert_part(part, rows, options)
        skipped.extend((part.label, *e) for e in errors)
        if len(table):
            converted.append(table)
    considered = sum(
        len(p.dataset) if r is None else len(r) for p, r in zip(parts, selections, strict=True)
    )
    if skipped:
        _log_skipped(skipped, considered, _describe_source(source, parts))
    if not converted:
        raise ValueError(
            f"no usable rows in {_describe_source(source, parts)}: all {considered} rows were skipped "
            f"(first: {skipped[0][3]})."
        )
    try:
        result = converted[0] if len(converted) == 1 else datasets.concatenate_datasets(converted)
    except ValueError as exc:
        raise ValueError(
            f"the data files of {_describe_source(source, parts)} have different column types and "
            f"cannot be combined ({exc})."
        ) from exc
    base_dirs = {p.base_dir for p in parts}
    formatter = _RowFormatter(
        base_dir=options.image_dir or (base_dirs.pop() if len(base_dirs) == 1 else None),
        options=options,
    )
    dataset = result.with_transform(formatter)
    # Set after `with_transform` fingerprints the formatter: rows to fall back on when an image
    # that passed the up-front checks still fails to decode during training.
    formatter.source = result
    return dataset
