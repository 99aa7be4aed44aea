"""Reading a training source into parts: Hub datasets, data files, folders, saved and in-memory datasets.

Also the readable one-line reasons a JSON / JSON Lines file cannot be read (``vppo eval`` and
``vppo analyze`` use them too), and the choice of rows for ``max_samples``.
"""

from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_BUILDERS = {
    ".parquet": "parquet",
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".arrow": "arrow",
}
DATA_FILE_SUFFIXES = tuple(_BUILDERS)  # the datasets builder of each file type above
_METADATA_NAMES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
_DATASETS_BOOKKEEPING = {
    "dataset_info.json",
    "dataset_infos.json",
    "state.json",
    "dataset_dict.json",
}
_HUB_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class _Part:
    """One table to convert: a file, a split of a saved/Hub dataset, or an in-memory dataset."""

    dataset: Any  # datasets.Dataset
    label: str  # names the source in error messages
    base_dir: Path | None  # relative image paths resolve here
    is_metadata: bool = False  # an imagefolder metadata file (file_name columns)


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
        return _local_parts(path, split, cache)
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


def _local_parts(path: Path, split: str, cache: str | None) -> list[_Part]:
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
        str(name): sorted(
            Path(f)
            for f in files
            if f.lower().endswith(DATA_FILE_SUFFIXES) and Path(f).name not in _DATASETS_BOOKKEEPING
        )
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
    if not err.msg.startswith(("Expecting value", "Expecting property name")) or text[
        err.pos : err.pos + 1
    ] not in ("]", "}"):
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
        own = [
            p.format(keyword=split, sep=NON_WORDS_CHARS)
            for p in KEYWORDS_IN_FILENAME_BASE_PATTERNS + KEYWORDS_IN_DIR_NAME_BASE_PATTERNS
        ]
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
        raise ValueError(
            f"could not read data file {path}: {problem or _root_cause(exc)}."
        ) from exc
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
