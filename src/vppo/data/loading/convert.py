"""Checking and converting a part's rows into the common form, once, up front.

Every row is checked (text, answer, image count, and by default each image's header) and written
as TRL conversational messages; image bytes are referenced, not decoded, until a row is read.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from vppo.data.images import (
    _resolve_path,
    check_image_geometry,
    describe_location,
    image_size,
    pixel_limited_size,
)
from vppo.data.loading.options import TrainingDataOptions
from vppo.data.loading.sources import _Part
from vppo.data.prompts import build_prompt_messages
from vppo.rewards.grader import unwrap_boxed

logger = logging.getLogger("vppo.data.loading")  # the package's logger (docs/data.md)

_ERROR, _ROW = "__vppo_error__", "__vppo_row__"


class _BadRow(ValueError):
    """A bad row; ``field`` feeds the skip report."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


# --------------------------------------------------------------------------- columns


def _has_binary(t: pa.DataType) -> bool:
    if isinstance(t, pa.ExtensionType):
        return _has_binary(t.storage_type)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return True
    if getattr(pa.types, "is_binary_view", None) and pa.types.is_binary_view(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_binary(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_binary(t.value_type)
    return False


def _imagefolder_aliases(columns: list[str]) -> dict[str, str]:
    """HF imagefolder naming: file_name -> image, file_names -> images, x_file_name(s) -> x."""
    aliases = {}
    for col in columns:
        if col == "file_name":
            aliases["image"] = col
        elif col == "file_names":
            aliases["images"] = col
        elif col.endswith("_file_name") or col.endswith("_file_names"):
            aliases[col.rsplit("_file_name", 1)[0]] = col
    return aliases


def _missing_column(
    kind: str, name: str, part: _Part, columns: list[str], hint: str = ""
) -> ValueError:
    return ValueError(
        f"{kind} column '{name}' not found in {part.label}; available columns: {', '.join(columns)}{hint}."
    )


def _image_columns(part: _Part, opts: TrainingDataOptions) -> list[str]:
    columns = part.dataset.column_names
    if opts.image_column is None:
        return []
    aliases = _imagefolder_aliases(columns) if part.is_metadata else {}
    resolved = []
    for name in opts.image_column:
        if name in columns:
            resolved.append(name)
        elif name in aliases:
            resolved.append(aliases[name])
        elif opts.image_column == ("images",) and "image" in columns:
            resolved.append("image")
        elif opts.image_column == ("images",) and part.is_metadata and aliases:
            resolved.extend(aliases.values())
        else:
            raise _missing_column(
                "image",
                name,
                part,
                columns,
                " (set image_column=..., or image_column=None for text-only data)",
            )
    return resolved


# --------------------------------------------------------------------------- conversion


def _clean_answer(value: Any, where: str, unwrap: bool) -> str:
    if value is None:
        raise _BadRow(f"{where} is null; every training row needs a ground-truth answer.", "answer")
    if isinstance(value, float) and not math.isfinite(value):
        raise _BadRow(f"{where} is {value}, not a usable ground-truth answer.", "answer")
    if isinstance(value, (bool, int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise _BadRow(
            f"{where} must be a string or a number, got {type(value).__name__}.", "answer"
        )
    text = value.strip()
    if unwrap:
        text = unwrap_boxed(text)
    if not text:
        raise _BadRow(
            f"{where} is empty; every training row needs a ground-truth answer.", "answer"
        )
    return text


def _row_images(
    batch: dict, j: int, cols: list[str], where_row: str
) -> list[tuple[str, int | None, Any]]:
    """(column, index in column, raw value) for every image of row ``j``."""
    entries = []
    for col in cols:
        value = batch[col][j]
        if value is None:
            continue
        if isinstance(value, list):
            for k, item in enumerate(value):
                if item is None:
                    raise _BadRow(f"{where_row}, field '{col}', image {k} is null.", "images")
                entries.append((col, k, item))
        else:
            entries.append((col, None, value))
    return entries


def _materialize(value: Any, base_dir: Path | None) -> dict[str, Any]:
    """A path-like image value as a {"bytes", "path"} struct with an absolute path."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data, path = bytes(value), None
    else:
        data, path = None, value
    if (
        data is None
        and isinstance(path, (str, os.PathLike))
        and not str(path).startswith(("http://", "https://"))
    ):
        path = str(_resolve_path(path, base_dir).absolute())
    return {"bytes": data, "path": None if path is None else str(path)}


@dataclass
class _PartPlan:
    image_cols: list[str]
    by_reference: bool  # keep the image column's storage as is (it holds bytes)
    template_vars: list[str]


def _plan(part: _Part, opts: TrainingDataOptions) -> _PartPlan:
    ds = part.dataset
    columns = ds.column_names
    chat = next((c for c in ("messages", "conversations") if c in columns), None)
    if chat is not None and opts.problem_column not in columns:
        # --problem_column cannot help: the question and the answer are turns inside one column.
        raise ValueError(
            f"{part.label} is in ShareGPT form (a '{chat}' column of chat turns), which vppo eval reads "
            "but vppo train does not: training rows need a problem column (the question, <image> where "
            "each image goes), an answer column and images; write the user turn as problem and the "
            "answer as answer (docs/data.md)."
        )
    for kind, name in (("problem", opts.problem_column), ("answer", opts.answer_column)):
        if name not in columns:
            raise _missing_column(kind, name, part, columns, f" (set {kind}_column=...)")
    for name in opts.keep_columns:
        if name not in columns:
            raise _missing_column("keep", name, part, columns)
    image_cols = _image_columns(part, opts)
    extra_vars = sorted(opts.prompt_template.variables - {"problem", "content"})
    for name in extra_vars:
        if name not in columns:
            raise ValueError(
                f"prompt template {opts.prompt_template.name} uses variable '{name}', which is not a column of "
                f"{part.label}; available columns: {', '.join(columns)}."
            )
    schema = ds.data.schema
    by_reference = (
        len(image_cols) == 1
        and _has_binary(schema.field(image_cols[0]).type)
        and image_cols[0] not in opts.keep_columns
    )
    return _PartPlan(image_cols, by_reference, extra_vars)


def _convert_part(part: _Part, rows: list[int] | None, opts: TrainingDataOptions):
    """Check and convert one part; returns (dataset, [(row, field, message), ...] of skipped rows)."""
    import datasets
    from datasets import Features, Image, List, Value

    plan = _plan(part, opts)
    ds = part.dataset if rows is None else part.dataset.select(rows)
    base_dir = opts.image_dir or part.base_dir
    inputs = list(
        dict.fromkeys(
            [opts.problem_column, opts.answer_column, *plan.template_vars, *plan.image_cols]
        )
    )
    decode_features = _undecoded(ds.features, inputs)

    content = List({"type": Value("string"), "text": Value("string")})
    out_features = {
        "prompt": List({"role": Value("string"), "content": content}),
        "answer": Value("string"),
        _ERROR: Value("string"),
        _ROW: Value("int64"),
    }
    if not plan.by_reference:
        out_features["images"] = List(Image(decode=False))

    def convert(table: pa.Table, indices: list[int]) -> dict[str, list]:
        batch = decode_features.decode_batch(table.select(inputs).to_pydict())
        out: dict[str, list] = {name: [] for name in out_features}
        texts: list[str | None] = []
        for j, pos in enumerate(indices):
            row = rows[pos] if rows is not None else pos
            try:
                prompt, answer, images, text = _convert_row(
                    batch, j, row, part, plan, opts, base_dir
                )
                error = None
            except (_BadRow, ValueError, FileNotFoundError) as exc:
                if opts.on_error == "raise":
                    raise
                prompt, answer, images, text = [], "", [], None
                error = (getattr(exc, "field", "row"), str(exc))
            out["prompt"].append(prompt)
            out["answer"].append(answer)
            out[_ERROR].append(None if error is None else f"{error[0]}\t{error[1]}")
            out[_ROW].append(row)
            if "images" in out:
                out["images"].append(images)
            texts.append(text)
        if opts.max_prompt_tokens is not None:
            _check_token_counts(out, texts, part, opts)
        return out

    fingerprint = hashlib.sha256(
        repr((ds._fingerprint, rows is None or tuple(rows), opts, part.label)).encode()
    ).hexdigest()[:32]
    meta = (
        ds.with_format("arrow")
        .map(
            convert,
            batched=True,
            batch_size=256,
            with_indices=True,
            remove_columns=ds.column_names,
            features=Features(out_features),
            keep_in_memory=True,
            load_from_cache_file=False,
            new_fingerprint=fingerprint,
            desc=f"Checking {Path(part.label).name if os.path.sep in part.label else part.label}",
        )
        .with_format(None)
    )

    errors = [
        (row, *e.split("\t", 1))
        for row, e in zip(meta[_ROW], meta[_ERROR], strict=True)
        if e is not None
    ]
    meta = meta.remove_columns([_ERROR, _ROW])
    ref_cols = list(opts.keep_columns) + ([plan.image_cols[0]] if plan.by_reference else [])
    if ref_cols:
        ref = ds.select_columns(ref_cols)
        if ref._indices is not None:
            ref = ref.flatten_indices(keep_in_memory=True)
        meta = datasets.concatenate_datasets([meta, ref], axis=1)
        if plan.by_reference and plan.image_cols[0] != "images":
            meta = meta.rename_column(plan.image_cols[0], "images")
    if errors:
        bad = {row for row, *_ in errors}
        source_rows = rows if rows is not None else range(len(ds))
        meta = meta.select([i for i, row in enumerate(source_rows) if row not in bad])
    return meta, errors


def _undecoded(features, columns: list[str]):
    """``features`` restricted to ``columns`` with image decoding off, to read raw image structs."""
    import copy

    from datasets import Features, Image

    def strip(feature):
        if isinstance(feature, Image):
            feature = copy.copy(feature)
            feature.decode = False
            return feature
        if isinstance(feature, dict):
            return {k: strip(v) for k, v in feature.items()}
        if hasattr(feature, "feature"):
            feature = copy.copy(feature)
            feature.feature = strip(feature.feature)
            return feature
        return feature

    return Features({c: strip(features[c]) for c in columns})


def _convert_row(batch, j, row, part, plan, opts, base_dir):
    """Prompt messages, answer, materialized images and prompt text of one row (or _BadRow)."""
    where_row = describe_location(row, part.label)

    problem = batch[opts.problem_column][j]
    where = describe_location(row, part.label, opts.problem_column)
    if problem is None:
        raise _BadRow(f"{where} is null; every training row needs a problem text.", "problem")
    if not isinstance(problem, str):
        raise _BadRow(f"{where} must be a string, got {type(problem).__name__}.", "problem")
    if not problem.strip():
        raise _BadRow(f"{where} is empty.", "problem")

    answer = _clean_answer(
        batch[opts.answer_column][j],
        describe_location(row, part.label, opts.answer_column),
        opts.unwrap_boxed_answer,
    )

    entries = _row_images(batch, j, plan.image_cols, where_row)
    variables = {name: batch[name][j] for name in plan.template_vars}
    try:
        text = opts.prompt_template.render(problem, **variables)
    except Exception as exc:  # jinja raises assorted errors on bad values
        raise _BadRow(
            f"{where_row}: rendering prompt template {opts.prompt_template.name} failed ({exc}).",
            "prompt",
        ) from exc
    count = text.count(opts.image_placeholder)
    if count and count != len(entries):
        fields = "+".join(plan.image_cols) if plan.image_cols else "images"
        raise _BadRow(
            f"{where_row}: field '{opts.problem_column}' has {count} '{opts.image_placeholder}' "
            f"placeholder{'s' * (count != 1)} but field '{fields}' holds {len(entries)} "
            f"image{'s' * (len(entries) != 1)}.",
            "images",
        )
    materialized = []
    for n, (col, k, value) in enumerate(entries):
        index = n if len(plan.image_cols) == 1 else k
        if opts.validate != "none":
            try:
                w, h = image_size(
                    value,
                    base_dir=base_dir,
                    decode=opts.validate == "full",
                    row=row,
                    field=col,
                    source=part.label,
                    index=index,
                )
                tw, th = pixel_limited_size(
                    w, h, opts.min_pixels, opts.max_pixels, opts.resize_rounding
                )
                path = value if isinstance(value, str) else None
                if isinstance(value, dict) and not value.get("bytes"):
                    path = value.get("path")
                check_image_geometry(
                    tw,
                    th,
                    min_side=opts.min_image_side,
                    max_aspect_ratio=opts.max_aspect_ratio,
                    row=row,
                    field=col,
                    source=part.label,
                    index=index,
                    path=path,
                )
            except (ValueError, FileNotFoundError) as exc:
                exc.field = "images"  # for the skip report; the type stays (FileNotFoundError)
                raise
        if not plan.by_reference:
            materialized.append(_materialize(value, base_dir))

    messages = build_prompt_messages(
        text, len(entries), system_prompt=opts.system_prompt, placeholder=opts.image_placeholder
    )
    for message in messages:
        message["content"] = [
            {"type": p["type"], "text": p.get("text")} for p in message["content"]
        ]
    token_text = text.replace(opts.image_placeholder, "")
    if opts.system_prompt:
        token_text = opts.system_prompt + "\n" + token_text
    return messages, answer, materialized, token_text


def _check_token_counts(
    out: dict, texts: list[str | None], part: _Part, opts: TrainingDataOptions
) -> None:
    todo = [i for i, t in enumerate(texts) if t is not None]
    if not todo:
        return
    ids = opts.tokenizer([texts[i] for i in todo], add_special_tokens=False)["input_ids"]
    for i, token_ids in zip(todo, ids, strict=True):
        if len(token_ids) <= opts.max_prompt_tokens:
            continue
        message = (
            f"{describe_location(out[_ROW][i], part.label, 'prompt')} has {len(token_ids)} text tokens, "
            f"more than max_prompt_tokens={opts.max_prompt_tokens} (image tokens not counted)."
        )
        if opts.on_error == "raise" and not opts.skip_long_prompts:
            raise ValueError(message)
        out[_ERROR][i] = f"prompt\t{message}"
        out["prompt"][i], out["answer"][i] = [], ""
        if "images" in out:
            out["images"][i] = []


def _log_skipped(skipped: list[tuple[str, int, str, str]], considered: int, label: str) -> None:
    by_field = Counter(field for _, _, field, _ in skipped)
    counts = ", ".join(f"{field}: {n}" for field, n in sorted(by_field.items()))
    shown = [
        f"{Path(src).name if os.path.sep in src else src}#{row}" for src, row, _, _ in skipped[:20]
    ]
    more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    logger.warning(
        "Skipped %d of %d rows of %s (%s); rows: %s%s. First error: %s",
        len(skipped),
        considered,
        label,
        counts,
        ", ".join(shown),
        more,
        skipped[0][3],
    )
