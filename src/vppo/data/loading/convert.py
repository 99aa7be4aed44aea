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

import hashlib
import logging
import math
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from vppo.data.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    ALPHA_MODES,
    ROUNDING_MODES,
    _check_limits,
    _resolve_path,
    check_image_geometry,
    describe_location,
    image_size,
    pixel_limited_size,
    prepare_image,
)
from vppo.data.prompts import (
    IMAGE_PLACEHOLDER,
    PromptTemplate,
    build_prompt_messages,
    load_template,
)

__all__ = ["DATA_FILE_SUFFIXES", "OUTPUT_COLUMNS", "load_training_dataset"]

logger = logging.getLogger("vppo.data.loading")  # the package's logger (docs/data.md)

_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".arrow": "arrow"}
DATA_FILE_SUFFIXES = tuple(_BUILDERS)  # the datasets builder of each file type above
OUTPUT_COLUMNS = ("prompt", "images", "answer")
_METADATA_NAMES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
_DATASETS_BOOKKEEPING = {
    "dataset_info.json",
    "dataset_infos.json",
    "state.json",
    "dataset_dict.json",
}
_ON_ERROR = ("raise", "skip")
_VALIDATE = {True: "header", False: "none", "header": "header", "full": "full", "none": "none"}
_HUB_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_ERROR, _ROW = "__vppo_error__", "__vppo_row__"


@dataclass
class _Part:
    """One table to convert: a file, a split of a saved/Hub dataset, or an in-memory dataset."""

    dataset: Any  # datasets.Dataset
    label: str  # names the source in error messages
    base_dir: Path | None  # relative image paths resolve here
    is_metadata: bool = False  # an imagefolder metadata file (file_name columns)


@dataclass
class _Options:
    image_columns: tuple[str, ...] | None
    problem_column: str
    answer_column: str
    template: PromptTemplate
    system_prompt: str | None
    placeholder: str
    min_pixels: int | None
    max_pixels: int | None
    min_side: int | None
    max_aspect_ratio: float | None
    alpha: str
    rounding: str
    validate: str
    on_error: str
    max_prompt_tokens: int | None
    tokenizer: Any
    skip_long_prompts: bool
    keep_columns: tuple[str, ...]
    unwrap_boxed_answer: bool
    image_dir: Path | None


class _RowError(ValueError):
    """A bad row; ``field`` feeds the skip report."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


# --------------------------------------------------------------------------- public entry point


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


# --------------------------------------------------------------------------- argument checks


def _build_options(**kw) -> _Options:
    if kw["on_error"] not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {kw['on_error']!r}.")
    validate = kw["validate"]
    if not isinstance(validate, (bool, str)) or validate not in _VALIDATE:
        raise ValueError(
            f"validate must be True, False, 'header', 'full' or 'none', got {validate!r}."
        )
    if kw["alpha"] not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {ALPHA_MODES}, got {kw['alpha']!r}.")
    if kw["resize_rounding"] not in ROUNDING_MODES:
        raise ValueError(
            f"resize_rounding must be one of {ROUNDING_MODES}, got {kw['resize_rounding']!r}."
        )
    _check_limits(kw["min_pixels"], kw["max_pixels"])
    side = kw["min_image_side"]
    if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side <= 0):
        raise ValueError(f"min_image_side must be a positive integer or None, got {side!r}.")
    ratio = kw["max_aspect_ratio"]
    if ratio is not None and (
        isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio >= 1
    ):
        raise ValueError(f"max_aspect_ratio must be a number >= 1 or None, got {ratio!r}.")
    for name in ("problem_column", "answer_column"):
        if not isinstance(kw[name], str) or not kw[name]:
            raise ValueError(f"{name} must be a non-empty column name, got {kw[name]!r}.")
    image_columns = kw["image_column"]
    if image_columns is not None:
        image_columns = (image_columns,) if isinstance(image_columns, str) else tuple(image_columns)
        if not image_columns or not all(isinstance(c, str) and c for c in image_columns):
            raise ValueError(
                f"image_column must be a column name, a list of names or None, got {kw['image_column']!r}."
            )
    keep = kw["keep_columns"]
    keep = (keep,) if isinstance(keep, str) else tuple(keep)
    for col in keep:
        if not isinstance(col, str) or not col:
            raise ValueError(f"keep_columns must hold column names, got {col!r}.")
        if col in OUTPUT_COLUMNS:
            raise ValueError(
                f"keep_columns cannot include '{col}': the loader writes that column itself."
            )
    if len(set(keep)) != len(keep):
        raise ValueError(f"keep_columns lists a column twice: {list(keep)}.")
    system_prompt = kw["system_prompt"]
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ValueError(
            f"system_prompt must be a string or None, got {type(system_prompt).__name__}."
        )
    placeholder = kw["image_placeholder"]
    if not isinstance(placeholder, str) or not placeholder:
        raise ValueError(f"image_placeholder must be a non-empty string, got {placeholder!r}.")
    max_tokens, tokenizer = kw["max_prompt_tokens"], kw["tokenizer"]
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise ValueError(
                f"max_prompt_tokens must be a positive integer or None, got {max_tokens!r}."
            )
        if tokenizer is None:
            raise ValueError(
                "max_prompt_tokens needs a tokenizer (or processor) to count tokens; pass tokenizer=."
            )
        tokenizer = getattr(tokenizer, "tokenizer", None) or tokenizer
        if not callable(tokenizer):
            raise ValueError(
                f"tokenizer must be a callable Hugging Face tokenizer, got {type(tokenizer).__name__}."
            )
    image_dir = kw["image_dir"]
    if image_dir is not None:
        image_dir = Path(os.path.expanduser(os.fspath(image_dir))).resolve()
        if not image_dir.is_dir():
            raise FileNotFoundError(f"image_dir {image_dir} is not an existing folder.")
    return _Options(
        image_columns=image_columns,
        problem_column=kw["problem_column"],
        answer_column=kw["answer_column"],
        template=load_template(kw["prompt_template"]),
        system_prompt=system_prompt,
        placeholder=placeholder,
        min_pixels=kw["min_pixels"],
        max_pixels=kw["max_pixels"],
        min_side=side,
        max_aspect_ratio=ratio,
        alpha=kw["alpha"],
        rounding=kw["resize_rounding"],
        validate=_VALIDATE[validate],
        on_error=kw["on_error"],
        max_prompt_tokens=max_tokens,
        tokenizer=tokenizer,
        skip_long_prompts=bool(kw["skip_long_prompts"]),
        keep_columns=keep,
        unwrap_boxed_answer=bool(kw["unwrap_boxed_answer"]),
        image_dir=image_dir,
    )


# --------------------------------------------------------------------------- reading sources


def _root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause (datasets wraps the informative error)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0].rstrip('.') if text else ''}".rstrip(": ")


def _describe_source(source: Any, parts: list[_Part]) -> str:
    if len(parts) == 1:
        return parts[0].label
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the given dataset"


def _load_parts(source: Any, split: str, cache_dir) -> list[_Part]:
    import datasets

    cache = os.fspath(cache_dir) if cache_dir is not None else None
    if isinstance(source, datasets.Dataset):
        return [_Part(source, "the given dataset", None)]
    if isinstance(source, datasets.DatasetDict):
        if split not in source:
            raise ValueError(
                f"split '{split}' is not in the given DatasetDict; splits: {', '.join(source)}."
            )
        return [_Part(source[split], f"split '{split}' of the given DatasetDict", None)]
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"source must be a Hub dataset name, a local path or a datasets.Dataset, got {type(source).__name__}."
        )
    text = os.fspath(source)
    path = Path(os.path.expanduser(text))
    if path.exists():
        path = path.resolve()
        return _load_local(path, split, cache)
    if (
        not _HUB_NAME_RE.match(text)
        or text.lower().endswith(DATA_FILE_SUFFIXES)
        or text.count("/") > 1
    ):
        raise FileNotFoundError(
            f"data source {text} does not exist (and is not a Hub dataset name)."
        )
    try:
        ds = datasets.load_dataset(text, split=split, cache_dir=cache)
    except Exception as exc:  # network, auth, unknown name or split: all end here
        raise FileNotFoundError(
            f"could not load the Hub dataset '{text}' (split '{split}'): {_root_cause(exc)}; check the name, the split and your connection, or pass a local path."
        ) from exc
    return [_Part(ds, f"Hub dataset '{text}' (split '{split}')", None)]


def _load_local(path: Path, split: str, cache: str | None) -> list[_Part]:
    import datasets

    if path.is_file():
        if path.suffix.lower() not in DATA_FILE_SUFFIXES:
            raise ValueError(
                f"data file {path} has an unsupported type; expected one of {', '.join(DATA_FILE_SUFFIXES)}."
            )
        return [_read_file(path, cache)]
    if (path / "dataset_dict.json").is_file():
        dd = datasets.load_from_disk(str(path))
        if split not in dd:
            raise ValueError(
                f"split '{split}' is not in the saved dataset {path}; splits: {', '.join(dd)}."
            )
        return [_Part(dd[split], f"split '{split}' of {path}", path)]
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        return [_Part(datasets.load_from_disk(str(path)), str(path), path)]
    files = _files_for_split(path, split)
    _check_one_format(files, path, split)
    return [_read_file(f, cache) for f in files]


def _check_one_format(files: list[Path], root: Path, split: str) -> None:
    """Refuse a split stored in two formats (``train.jsonl`` next to ``train.parquet``).

    Such a folder almost always holds one table written twice; reading both would double the
    data, and no rule can say which copy is current, so the user picks one.
    """
    first_of_format: dict[str, Path] = {}
    for f in files:
        first_of_format.setdefault(f.suffix.lower(), f)
    if len(first_of_format) > 1:
        names = [f.relative_to(root).as_posix() for f in first_of_format.values()]
        raise ValueError(
            f"folder {root} holds split '{split}' in {len(names)} formats "
            f"({', '.join(names[:-1])} and {names[-1]}); keep one format in the folder or pass "
            "one file as the dataset."
        )


def _data_files(folder: Path, patterns: dict[str, list[str]]) -> dict[str, list[Path]]:
    """Per split, the data files (by suffix, bookkeeping left out) that ``patterns`` match."""
    from datasets.data_files import DataFilesDict

    found = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    kept = {
        str(name): sorted(Path(f) for f in files if f.lower().endswith(DATA_FILE_SUFFIXES)
                          and Path(f).name not in _DATASETS_BOOKKEEPING)
        for name, files in found.items()
    }
    return {name: files for name, files in kept.items() if files}


class _DropFailedJsonLoad(logging.Filter):
    """datasets logs "Failed to load JSON from file ..." and then raises; we re-raise that failure in
    one line naming the file and the line, so its log record would only say the same thing worse."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load JSON from file")


def quiet_datasets_json_errors() -> None:
    """Install `_DropFailedJsonLoad` on datasets' JSON builder logger (once)."""
    json_logger = logging.getLogger("datasets.packaged_modules.json.json")
    if not any(isinstance(f, _DropFailedJsonLoad) for f in json_logger.filters):
        json_logger.addFilter(_DropFailedJsonLoad())


def _utf8_problem(data: bytes) -> str | None:
    """ "line N is not UTF-8 (byte 0x..)" for the first undecodable byte of a text file, or None."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        return f"line {line} is not UTF-8 (byte 0x{data[err.start]:02x}); save the file as UTF-8"
    return None


def text_file_problem(data: bytes) -> str | None:
    """What makes a JSON / JSON Lines file's bytes unreadable before parsing (not UTF-8, empty), or None."""
    return _utf8_problem(data) or (None if data.strip() else "the file is empty")


def json_error_detail(text: str, err: Any) -> str:
    """A JSONDecodeError of `text` as "<msg> at column N", naming a trailing comma when that is the cause."""
    comma = _trailing_comma(text, err)
    why = f": a trailing comma at column {comma[1]}; {_NO_TRAILING_COMMA}" if comma else ""
    return f"{err.msg} at column {err.colno}{why}"


def _trailing_comma(text: str, err: Any) -> tuple[int, int] | None:
    """(line, column) of the comma before a closing bracket that `err` (a JSONDecodeError) stopped
    at, or None: Python's decoder reports the bracket after it, often on the next line."""
    if not err.msg.startswith(("Expecting value", "Expecting property name")) or text[err.pos: err.pos + 1] not in ("]", "}"):
        return None
    before = text[: err.pos].rstrip()
    if not before.endswith(","):
        return None
    return before.count("\n") + 1, len(before) - before.rfind("\n") - 1


_NO_TRAILING_COMMA = "JSON allows no comma before a closing ] or }"


def _json_problem(path: Path) -> str | None:
    """Where a JSON / JSON Lines file goes wrong, as "line N ...", read with Python's own decoder
    (pyarrow's errors name no line); None when this reader finds nothing wrong."""
    import json

    data = path.read_bytes()
    problem = _utf8_problem(data)
    if problem:
        return problem
    text = data.decode("utf-8-sig")
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                return f"line {number} is not one JSON object ({json_error_detail(line, err)})"
        return None
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        comma = _trailing_comma(text, err)
        if comma:
            return f"line {comma[0]} is not valid JSON (a trailing comma at column {comma[1]}; {_NO_TRAILING_COMMA})"
        return f"line {err.lineno} is not valid JSON ({err.msg} at column {err.colno})"
    return None


def _files_for_split(folder: Path, split: str) -> list[Path]:
    """The files of ``split``, by the split inference of ``datasets.load_dataset(folder)``.

    Standard split names and their aliases (``val``, ``dev``, ``eval``, ...) in a file or folder
    name pick the split; when no file names a split, all files are ``train``. Another split name
    is matched the same way (``holdout.jsonl``, ``holdout/...``). Where ``metadata.*`` files are
    present (an imagefolder), they alone are the table.
    """
    from datasets.data_files import (
        KEYWORDS_IN_DIR_NAME_BASE_PATTERNS,
        KEYWORDS_IN_FILENAME_BASE_PATTERNS,
        NON_WORDS_CHARS,
        SPLIT_KEYWORDS,
        get_data_patterns,
    )

    wanted = next((str(n) for n, words in SPLIT_KEYWORDS.items() if split.lower() in words), split)
    try:
        splits = _data_files(folder, get_data_patterns(str(folder)))
    except FileNotFoundError:  # no files at all
        splits = {}
    if not splits:
        raise FileNotFoundError(
            f"folder {folder} holds no data files ({', '.join(DATA_FILE_SUFFIXES)}), no metadata.jsonl "
            "and no save_to_disk dataset."
        )
    if wanted not in splits:
        own = [p.format(keyword=split, sep=NON_WORDS_CHARS)
               for p in KEYWORDS_IN_FILENAME_BASE_PATTERNS + KEYWORDS_IN_DIR_NAME_BASE_PATTERNS]
        try:
            splits.update(_data_files(folder, {wanted: own}))
        except FileNotFoundError:  # no file names that split
            pass
    if wanted not in splits:
        raise ValueError(
            f"folder {folder} has no file for split '{split}'; splits found: {', '.join(sorted(splits))}."
        )
    files = splits[wanted]
    return [f for f in files if f.name in _METADATA_NAMES] or files


def _read_file(path: Path, cache: str | None) -> _Part:
    import datasets

    if path.suffix.lower() in (".json", ".jsonl"):
        # pyarrow's JSON reader takes invalid UTF-8 into string columns and fails later, nameless.
        data = path.read_bytes()
        problem = text_file_problem(data)
        if problem:
            raise ValueError(f"could not read data file {path}: {problem}.")
    quiet_datasets_json_errors()
    try:
        ds = datasets.load_dataset(
            _BUILDERS[path.suffix.lower()], data_files=str(path), split="train", cache_dir=cache
        )
    except Exception as exc:  # pyarrow and datasets raise many types for unreadable files
        problem = _json_problem(path) if path.suffix.lower() in (".json", ".jsonl") else None
        raise ValueError(f"could not read data file {path}: {problem or _root_cause(exc)}.") from exc
    return _Part(ds, str(path), path.parent, is_metadata=path.name in _METADATA_NAMES)


# --------------------------------------------------------------------------- row selection


def _select_rows(
    lengths: list[int], max_samples: int | None, seed: int | None
) -> list[list[int] | None]:
    """Per part, the row indices to use (``None``: all), at most ``max_samples`` in total."""
    total = sum(lengths)
    if max_samples is None or max_samples >= total:
        return [None] * len(lengths)
    if seed is None:
        chosen = range(max_samples)
    else:
        chosen = sorted(random.Random(seed).sample(range(total), max_samples))
    selections: list[list[int] | None] = [[] for _ in lengths]
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    part = 0
    for g in chosen:
        while g >= offsets[part + 1]:
            part += 1
        selections[part].append(g - offsets[part])
    return selections


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


def _image_columns(part: _Part, opts: _Options) -> list[str]:
    columns = part.dataset.column_names
    if opts.image_columns is None:
        return []
    aliases = _imagefolder_aliases(columns) if part.is_metadata else {}
    resolved = []
    for name in opts.image_columns:
        if name in columns:
            resolved.append(name)
        elif name in aliases:
            resolved.append(aliases[name])
        elif opts.image_columns == ("images",) and "image" in columns:
            resolved.append("image")
        elif opts.image_columns == ("images",) and part.is_metadata and aliases:
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


def _unwrap_boxed(text: str) -> str:
    prefix = "\\boxed{"
    if not (text.startswith(prefix) and text.endswith("}")):
        return text
    depth = 0
    for i in range(len(prefix) - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[len(prefix) : -1].strip() if i == len(text) - 1 else text
    return text


def _clean_answer(value: Any, where: str, unwrap: bool) -> str:
    if value is None:
        raise _RowError(
            f"{where} is null; every training row needs a ground-truth answer.", "answer"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise _RowError(f"{where} is {value}, not a usable ground-truth answer.", "answer")
    if isinstance(value, (bool, int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise _RowError(
            f"{where} must be a string or a number, got {type(value).__name__}.", "answer"
        )
    text = value.strip()
    if unwrap:
        text = _unwrap_boxed(text)
    if not text:
        raise _RowError(
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
                    raise _RowError(f"{where_row}, field '{col}', image {k} is null.", "images")
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


def _plan(part: _Part, opts: _Options) -> _PartPlan:
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
    extra_vars = sorted(opts.template.variables - {"problem", "content"})
    for name in extra_vars:
        if name not in columns:
            raise ValueError(
                f"prompt template {opts.template.name} uses variable '{name}', which is not a column of "
                f"{part.label}; available columns: {', '.join(columns)}."
            )
    schema = ds.data.schema
    by_reference = (
        len(image_cols) == 1
        and _has_binary(schema.field(image_cols[0]).type)
        and image_cols[0] not in opts.keep_columns
    )
    return _PartPlan(image_cols, by_reference, extra_vars)


def _convert_part(part: _Part, rows: list[int] | None, opts: _Options):
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
            except (_RowError, ValueError, FileNotFoundError) as exc:
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
    """Prompt messages, answer, materialized images and prompt text of one row (or _RowError)."""
    where_row = describe_location(row, part.label)

    problem = batch[opts.problem_column][j]
    where = describe_location(row, part.label, opts.problem_column)
    if problem is None:
        raise _RowError(f"{where} is null; every training row needs a problem text.", "problem")
    if not isinstance(problem, str):
        raise _RowError(f"{where} must be a string, got {type(problem).__name__}.", "problem")
    if not problem.strip():
        raise _RowError(f"{where} is empty.", "problem")

    answer = _clean_answer(
        batch[opts.answer_column][j],
        describe_location(row, part.label, opts.answer_column),
        opts.unwrap_boxed_answer,
    )

    entries = _row_images(batch, j, plan.image_cols, where_row)
    variables = {name: batch[name][j] for name in plan.template_vars}
    try:
        text = opts.template.render(problem, **variables)
    except Exception as exc:  # jinja raises assorted errors on bad values
        raise _RowError(
            f"{where_row}: rendering prompt template {opts.template.name} failed ({exc}).",
            "prompt",
        ) from exc
    count = text.count(opts.placeholder)
    if count and count != len(entries):
        fields = "+".join(plan.image_cols) if plan.image_cols else "images"
        raise _RowError(
            f"{where_row}: field '{opts.problem_column}' has {count} '{opts.placeholder}' "
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
                tw, th = pixel_limited_size(w, h, opts.min_pixels, opts.max_pixels, opts.rounding)
                path = value if isinstance(value, str) else None
                if isinstance(value, dict) and not value.get("bytes"):
                    path = value.get("path")
                check_image_geometry(
                    tw,
                    th,
                    min_side=opts.min_side,
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
        text, len(entries), system_prompt=opts.system_prompt, placeholder=opts.placeholder
    )
    for message in messages:
        message["content"] = [
            {"type": p["type"], "text": p.get("text")} for p in message["content"]
        ]
    token_text = text.replace(opts.placeholder, "")
    if opts.system_prompt:
        token_text = opts.system_prompt + "\n" + token_text
    return messages, answer, materialized, token_text


def _check_token_counts(out: dict, texts: list[str | None], part: _Part, opts: _Options) -> None:
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


# --------------------------------------------------------------------------- lazy image decoding


class _RowFormatter:
    """``datasets`` transform: decode, convert and resize each row's images when it is read.

    A top-level class (not a closure) so that datasets with it can be pickled to DataLoader workers.
    """

    def __init__(
        self, *, base_dir, min_pixels, max_pixels, min_side, max_aspect_ratio, alpha, rounding
    ):
        self.base_dir = base_dir
        self.source = None  # the untransformed rows; set by load_training_dataset
        self._fallback_row: dict | None = None
        self.image_kwargs = {
            "min_pixels": min_pixels,
            "max_pixels": max_pixels,
            "min_side": min_side,
            "max_aspect_ratio": max_aspect_ratio,
            "alpha": alpha,
            "rounding": rounding,
        }

    def _images(self, value: Any) -> list:
        if value is None:
            return []
        values = value if isinstance(value, list) else [value]
        return [
            prepare_image(v, base_dir=self.base_dir, index=k, **self.image_kwargs)
            for k, v in enumerate(values)
        ]

    @staticmethod
    def _prompt(messages: list) -> list:
        return [
            {**m, "content": [{k: v for k, v in p.items() if v is not None} for p in m["content"]]}
            for m in messages
        ]

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {key: list(values) for key, values in batch.items()}
        if "prompt" in batch:
            out["prompt"] = [self._prompt(messages) for messages in batch["prompt"]]
        if "images" in batch:
            images = []
            for i, value in enumerate(batch["images"]):
                try:
                    images.append(self._images(value))
                except (ValueError, OSError) as exc:
                    if self.source is None:
                        raise
                    # A crash here would end a long run: train on a readable row instead.
                    row, fallback = self._unreadable_row(value), self._fallback()
                    logger.warning(
                        "training row %s: %s Replaced by row %d for this step (validate_images="
                        "'full' refuses such rows before training).",
                        "?" if row is None else row, str(exc).rstrip(), fallback["__row__"],
                    )
                    for key in out:
                        if key != "images" and key in fallback:
                            out[key][i] = fallback[key]
                    images.append(fallback["images"])
            out["images"] = images
        return out

    def _unreadable_row(self, value: Any) -> int | None:
        """The index of the row whose images are ``value`` (searched only when one fails)."""
        start = 0
        for chunk in self.source.select_columns(["images"]).iter(batch_size=256):
            for j, candidate in enumerate(chunk["images"]):
                if candidate == value:
                    return start + j
            start += len(chunk["images"])
        return None

    def _fallback(self) -> dict:
        """The first row whose images decode, formatted (computed once)."""
        if self._fallback_row is None:
            for j in range(len(self.source)):
                raw = self.source[j]
                try:
                    images = self._images(raw.get("images"))
                except (ValueError, OSError):
                    continue
                prompt = self._prompt(raw["prompt"]) if "prompt" in raw else None
                self._fallback_row = {**raw, "prompt": prompt, "images": images, "__row__": j}
                break
            else:
                raise ValueError("no row of the training data has images that can be decoded.")
        return self._fallback_row

    def __repr__(self) -> str:  # stable, so dataset fingerprints do not depend on object ids
        return f"_RowFormatter(base_dir={self.base_dir!r}, {self.image_kwargs!r})"
