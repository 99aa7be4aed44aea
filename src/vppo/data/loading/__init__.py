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

import os
from collections.abc import Sequence
from typing import Any

from vppo.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from vppo.data.loading.convert import _convert_part, _log_skipped
from vppo.data.loading.formatter import _RowFormatter
from vppo.data.loading.options import OUTPUT_COLUMNS, _build_options
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
from vppo.data.prompts import IMAGE_PLACEHOLDER, PromptTemplate

__all__ = [
    "DATA_FILE_SUFFIXES",
    "OUTPUT_COLUMNS",
    "json_error_detail",
    "load_training_dataset",
    "quiet_datasets_json_errors",
    "text_file_problem",
]


def load_training_dataset(
    source: str | os.PathLike | Any,
    *,
    split: str = "train",
    image_column: str | Sequence[str] | None = "images",
    problem_column: str = "problem",
    answer_column: str = "answer",
    prompt_template: str | os.PathLike | PromptTemplate | None = None,
    system_prompt: str | None = None,
    min_pixels: int | None = DEFAULT_MIN_PIXELS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_image_side: int | None = 28,
    max_aspect_ratio: float | None = 200.0,
    alpha: str = "white",
    resize_rounding: str = "bounded",
    image_dir: str | os.PathLike | None = None,
    max_samples: int | None = None,
    seed: int | None = 0,
    validate: bool | str = True,
    on_error: str = "raise",
    max_prompt_tokens: int | None = None,
    tokenizer: Any = None,
    skip_long_prompts: bool = False,
    keep_columns: Sequence[str] = (),
    unwrap_boxed_answer: bool = True,
    image_placeholder: str = IMAGE_PLACEHOLDER,
    cache_dir: str | os.PathLike | None = None,
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
        split: split to read from Hub datasets, ``DatasetDict`` folders and split-named files.
        image_column: column(s) holding the images: one column of single images or lists, or
            several columns whose non-null values are concatenated in order (e.g. MMMU's
            ``image_1``..``image_7``). The default ``"images"`` falls back to ``"image"``, and for
            image folders to the ``file_name(s)`` columns. ``None``: text-only data.
        problem_column, answer_column: the question text (``<image>`` marks where images go) and
            the ground truth; the output always names them ``prompt`` and ``answer``.
        prompt_template: built-in name (``vppo_math``, ``plain``), ``.jinja`` path or inline Jinja
            source; ``None`` means ``vppo_math``, the official VPPO format prompt. Templates may use
            other columns by name.
        system_prompt: system message text; ``None`` adds none (Qwen2.5-VL's chat template then
            inserts "You are a helpful assistant.", as in the official runs).
        min_pixels, max_pixels: images are rescaled (aspect ratio kept) so that
            min_pixels <= H*W <= max_pixels; ``None`` disables a bound. Defaults: DEFAULT_MIN_PIXELS
            and DEFAULT_MAX_PIXELS (32^2 and 768^2, every command's); the official recipes set
            256*28*28 and 1280*28*28.
        min_image_side: reject images whose short side is below this after resizing (one 28-px
            merged patch of Qwen2.5-VL); ``None`` disables the check.
        max_aspect_ratio: reject images whose long/short side ratio exceeds this (Qwen-VL
            processors fail above 200); ``None`` disables the check.
        alpha: ``"white"`` composites transparent images onto white; ``"drop"`` discards alpha
            like the official code (transparent pixels then show their stored colour, often black).
        resize_rounding: ``"bounded"`` (always lands inside the pixel range) or ``"official"``
            (``int()`` truncation, bit-for-bit the official sizes); see ``pixel_limited_size``.
        image_dir: folder that relative image paths resolve against; default: the folder of the
            data file (the working directory for Hub and in-memory datasets).
        max_samples: keep at most this many rows, chosen before any check runs.
        seed: with ``max_samples``, rows are a random subset drawn with this seed (kept in source
            order); ``None`` takes the first ``max_samples`` rows.
        validate: ``True``/``"header"`` opens every image's header (missing files, non-image data,
            sizes); ``"full"`` also decodes every image (catches truncated data; slow);
            ``False``/``"none"`` checks only text fields and image counts.
        on_error: ``"raise"`` stops at the first bad row with one sentence naming row, file and
            field; ``"skip"`` drops bad rows and logs a warning with counts per field and row ids.
        max_prompt_tokens: with ``tokenizer`` (a tokenizer or a processor), rows whose text prompt
            (system prompt plus rendered problem, no chat-template markup, no image tokens) has
            more tokens are bad rows. Image tokens depend on the model; TRL counts them.
        tokenizer: tokenizer or processor used by ``max_prompt_tokens``.
        skip_long_prompts: drop rows over ``max_prompt_tokens`` (counted in the skip warning) even
            when ``on_error="raise"``, as ``vppo train`` and ``vppo eval`` do.
        keep_columns: extra source columns to carry through unchanged (e.g. ``("id",)``); reward
            functions receive them as keyword arguments in TRL.
        unwrap_boxed_answer: turn an answer written as one ``\\boxed{X}`` into ``X`` (the original
            TIGER-Lab ViRL39K stores answers that way).
        image_placeholder: the token that marks image positions in the problem text.
        cache_dir: ``datasets`` cache folder for converting local files and Hub downloads.

    Returns:
        ``datasets.Dataset`` whose rows read as dicts with ``prompt`` (TRL conversational messages),
        ``images`` (list of RGB ``PIL.Image``), ``answer`` (str) and the ``keep_columns``.

    Raises:
        FileNotFoundError: the source or an image file does not exist.
        ValueError: a bad argument, a missing column, or (with ``on_error="raise"``) a bad row.
    """
    import datasets

    options = _build_options(
        image_column=image_column,
        problem_column=problem_column,
        answer_column=answer_column,
        prompt_template=prompt_template,
        system_prompt=system_prompt,
        image_placeholder=image_placeholder,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        min_image_side=min_image_side,
        max_aspect_ratio=max_aspect_ratio,
        alpha=alpha,
        resize_rounding=resize_rounding,
        validate=validate,
        on_error=on_error,
        max_prompt_tokens=max_prompt_tokens,
        tokenizer=tokenizer,
        skip_long_prompts=skip_long_prompts,
        keep_columns=keep_columns,
        unwrap_boxed_answer=unwrap_boxed_answer,
        image_dir=image_dir,
    )
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples <= 0
    ):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}.")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}.")

    parts = _load_parts(source, split, cache_dir)
    total = sum(len(p.dataset) for p in parts)
    if total == 0:
        raise ValueError(f"{_describe_source(source, parts)} has no rows.")
    selections = _select_rows([len(p.dataset) for p in parts], max_samples, seed)

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
        min_pixels=options.min_pixels,
        max_pixels=options.max_pixels,
        min_side=options.min_side,
        max_aspect_ratio=options.max_aspect_ratio,
        alpha=options.alpha,
        rounding=options.rounding,
    )
    dataset = result.with_transform(formatter)
    # Set after `with_transform` fingerprints the formatter: rows to fall back on when an image
    # that passed the up-front checks still fails to decode during training.
    formatter.source = result
    return dataset
