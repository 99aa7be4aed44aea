"""Where benchmark rows come from: local files and folders, and the Hugging Face Hub.

Reads JSON/JSON Lines/parquet files and ``save_to_disk`` folders, maps the image paths stored in
ShareGPT files to files on disk, finds a benchmark's ShareGPT file under a LLaMA-Factory style
data folder, downloads raw Hub datasets and the PAPO-Eval / VPPO-Eval files the paper scored, and
ties them together in `load_benchmark`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vppo.evaluation.benchmarks.registry import (
    _BENCHMARK_SCHEMA_HINTS,
    BENCHMARKS,
    PAPO_EVAL_REPO,
    VPPO_EVAL_REPO,
    HubSource,
    canonical_name,
)
from vppo.evaluation.benchmarks.rows import LoadedBenchmark, _ArrowRows, _ListRows, _Rows
from vppo.evaluation.benchmarks.schemas import detect_schema, rows_to_examples

__all__ = [
    "find_sharegpt_file",
    "load_benchmark",
    "load_examples_from_path",
    "load_raw_from_hub",
    "load_sharegpt_from_hub",
]

# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------

# Not vppo.data.loading.DATA_FILE_SUFFIXES: that list also has .csv and .arrow, which
# `_read_files` cannot read, and puts .jsonl before .json, while `find_sharegpt_file` takes the
# first suffix that exists.
_DATA_SUFFIXES = (".parquet", ".json", ".jsonl")


def _read_files(paths: Sequence[Path]) -> _Rows:
    """Parquet files as lazy Arrow rows, JSON (a list, JSON Lines, or ``{"data": [...]}``) as
    dict rows, both read by ``datasets.load_dataset``."""
    import datasets

    suffixes = {p.suffix for p in paths}
    if len(suffixes) > 1 and not suffixes <= {".json", ".jsonl"}:
        raise ValueError(
            f"cannot mix file types {sorted(suffixes)} in one benchmark: {list(map(str, paths))}."
        )
    builder = "parquet" if suffixes == {".parquet"} else "json"
    files = [str(p) for p in paths]
    if builder == "json":
        from vppo.data.loading import text_file_problem

        for (
            path
        ) in paths:  # pyarrow takes invalid UTF-8 into string columns and fails later, nameless
            problem = text_file_problem(Path(path).read_bytes())
            if problem:
                raise ValueError(f"could not read {path}: {problem}.")
    from vppo.data.loading import quiet_datasets_json_errors

    quiet_datasets_json_errors()
    try:
        dataset = datasets.load_dataset(builder, data_files=files, split="train")
        if (
            builder == "json"
            and dataset.column_names == ["data"]
            and dataset.num_rows == len(files)
        ):
            dataset = datasets.load_dataset(builder, data_files=files, field="data", split="train")
    except Exception as err:  # pyarrow and datasets raise many types for unreadable files
        if builder == "json":  # pyarrow's JSON errors name no line: Python's decoder does
            from vppo.data.loading import _json_problem

            for path in paths:
                problem = _json_problem(Path(path))
                if problem:
                    raise ValueError(f"could not read {path}: {problem}.") from err
        while err.__cause__ is not None:
            err = err.__cause__
        raise ValueError(
            f"could not read {', '.join(files)} (expected parquet, a JSON list of row objects or "
            f"JSON Lines): {(str(err).strip().splitlines() or [type(err).__name__])[0]}."
        ) from err
    return _dataset_to_rows(dataset) if builder == "parquet" else _ListRows(dataset.to_list())


def _dataset_to_rows(dataset: Any) -> _Rows:
    """A ``datasets.Dataset`` as Arrow rows; image columns stay undecoded (lazy)."""
    table = dataset.with_format("arrow")[0 : len(dataset)]
    return _ArrowRows(table)


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _load_saved_dataset(path: Path, split: str | None) -> _Rows:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        choice = split if split in loaded else ("test" if "test" in loaded else None)
        if choice is None and len(names) == 1:
            choice = names[0]
        if choice is None:
            raise ValueError(f"{path} holds splits {names}; name one with PATH@SPLIT.")
        loaded = loaded[choice]
    return _dataset_to_rows(loaded)


# --------------------------------------------------------------------------------------------
# ShareGPT image paths
# --------------------------------------------------------------------------------------------


class _ImageResolver:
    """Map a stored ShareGPT image path (``./data/images/<folder>/<file>``) to an existing file.

    Candidates, in order: the path under each root as stored, without its ``data/`` prefix and
    without its ``data/images/`` prefix; then a search by file name under each root's ``images/``
    folder (image archives do not always keep the stored folder layout).
    """

    def __init__(self, roots: Sequence[Path], search_dirs: Sequence[Path] | None = None):
        self.roots = list(dict.fromkeys(Path(r).absolute() for r in roots))
        dirs = [r / "images" for r in self.roots] if search_dirs is None else search_dirs
        self.search_dirs = [Path(d) for d in dict.fromkeys(dirs) if Path(d).is_dir()]
        self._index: dict[str, list[Path]] | None = None

    def __call__(self, stored: str) -> str:
        rel = stored.strip().replace("\\", "/")
        if os.path.isabs(rel):
            if os.path.isfile(rel):
                return rel
            rel = rel.lstrip("/")
        while rel.startswith("./"):
            rel = rel[2:]
        variants = [rel]
        if rel.startswith("data/"):
            variants.append(rel[len("data/") :])
        if rel.startswith("data/images/"):
            variants.append(rel[len("data/images/") :])
        for root in self.roots:
            for variant in variants:
                candidate = root / variant
                if candidate.is_file():
                    return str(candidate)
        found = self._search(rel)
        if found is None:
            raise FileNotFoundError(
                f"image file {stored!r} not found under {', '.join(map(str, self.roots))}"
            )
        return str(found)

    def _search(self, rel: str) -> Path | None:
        if self._index is None:
            self._index = {}
            for folder in self.search_dirs:
                for dirpath, _, files in os.walk(folder):
                    for name in files:
                        self._index.setdefault(name, []).append(Path(dirpath) / name)
        matches = self._index.get(Path(rel).name, [])
        if len(matches) <= 1:
            return matches[0] if matches else None
        parts = Path(rel).parts

        # Prefer the match that shares the longest tail of the stored path.
        def shared_tail(path: Path) -> int:
            count = 0
            for a, b in zip(reversed(path.parts), reversed(parts), strict=False):
                if a != b:
                    break
                count += 1
            return count

        return max(matches, key=shared_tail)


def _sharegpt_roots(path: Path, extra: Sequence[Path] = ()) -> list[Path]:
    parent = path.parent
    roots = [*extra, parent, parent.parent, parent.parent.parent]
    return [r for r in roots if r.is_dir()]


# --------------------------------------------------------------------------------------------
# Locating files for a benchmark
# --------------------------------------------------------------------------------------------

_SHAREGPT_SUBDIRS = ("", "papo", "vppo", "data", "data/papo", "data/vppo")


def find_sharegpt_file(name: str, data_dir: str | Path) -> list[Path] | None:
    """The ShareGPT file(s) of benchmark ``name`` under a LLaMA-Factory style ``data_dir``.

    Looks for ``<sub>/<stem>.{json,jsonl,parquet}`` and ``<sub>/<stem>-*.parquet`` (Hub shards)
    for every known stem of the benchmark and ``sub`` in ``"", papo, vppo, data, data/papo,
    data/vppo``, then ``<name>/test.{parquet,json,jsonl}``. Returns None when nothing matches.
    """
    root = Path(data_dir)
    spec = BENCHMARKS.get(name)
    stems = list(spec.sharegpt_names if spec else ()) + [name]
    stems += [s.replace("_", "-") for s in stems if "_" in s]
    for sub in _SHAREGPT_SUBDIRS:
        folder = root / sub if sub else root
        if not folder.is_dir():
            continue
        for stem in dict.fromkeys(stems):
            for suffix in _DATA_SUFFIXES:
                candidate = folder / f"{stem}{suffix}"
                if candidate.is_file():
                    return [candidate]
            shards = sorted(folder.glob(f"{stem}-*.parquet"))
            if shards:
                return shards
    for suffix in _DATA_SUFFIXES:
        candidate = root / name / f"test{suffix}"
        if candidate.is_file():
            return [candidate]
    return None


def _data_files_in_dir(directory: Path, splits: Sequence[str]) -> list[Path]:
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and p.suffix in _DATA_SUFFIXES
        and not p.name.startswith(".")
        and p.name not in ("dataset_info.json", "state.json")
    )
    chosen = [p for p in files if any(p.name.startswith(f"{s}-") or p.stem == s for s in splits)]
    return chosen or files


def _split_path_spec(text: str) -> tuple[str, str | None, str | None]:
    """``repo[:config][@split]`` -> (repo, config, split)."""
    split = None
    if "@" in text:
        text, split = text.rsplit("@", 1)
    config = None
    if ":" in text:
        text, config = text.split(":", 1)
    return text, config or None, split or None


def load_examples_from_path(
    benchmark: str,
    path: str | Path,
    *,
    schema: str | None = None,
    limit: int | None = None,
    extra_image_roots: Sequence[str | Path] = (),
) -> LoadedBenchmark:
    """Load ``benchmark`` from a local file or folder, or from a Hub dataset name.

    ``path`` may be: a ``.json``/``.jsonl``/``.parquet`` file; a folder of such files (a Hub
    snapshot; files named after the split are preferred) or a ``save_to_disk`` folder, either
    with an optional ``@split``; or a Hub name ``[hub:]owner/name[:config][@split]`` when no
    such local path exists. The schema is detected from the columns unless given.
    """
    text = str(path)
    if not text.startswith("hub:"):
        if os.path.exists(text):
            return _load_local(benchmark, Path(text), None, schema, limit, extra_image_roots)
        head, _, split = text.rpartition("@")
        if head and os.path.exists(head):
            return _load_local(benchmark, Path(head), split, schema, limit, extra_image_roots)
    repo, config, split = _split_path_spec(text.removeprefix("hub:"))
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise FileNotFoundError(
            f"benchmark path {text!r} is neither an existing file or folder nor a Hub name."
        )
    spec = BENCHMARKS.get(benchmark)
    default = spec.raw if spec is not None and spec.raw.repo == repo else HubSource(repo)
    source = HubSource(
        repo,
        config if config is not None else default.config,
        (split,) if split else default.splits,
    )
    return load_raw_from_hub(benchmark, source, schema=schema, limit=limit)


def _load_local(
    benchmark: str,
    path: Path,
    split: str | None,
    schema: str | None,
    limit: int | None,
    extra_image_roots: Sequence[str | Path],
    files: list[Path] | None = None,
) -> LoadedBenchmark:
    spec = BENCHMARKS.get(benchmark)
    if files is None and path.is_dir() and _is_saved_dataset(path):
        rows, files, base = _load_saved_dataset(path, split), [], path
    else:
        splits = (split,) if split else (spec.raw.splits if spec is not None else ("test",))
        if files is None:
            files = [path] if path.is_file() else _data_files_in_dir(path, splits)
        if not files:
            raise FileNotFoundError(f"no .json, .jsonl or .parquet file under {path}.")
        rows, base = _read_files(files), (path if path.is_dir() else path.parent)
    found = schema or detect_schema(rows.columns, hint=_BENCHMARK_SCHEMA_HINTS.get(benchmark))
    resolver = None
    if found.startswith("sharegpt"):
        extra = [Path(p) for p in extra_image_roots]
        roots = _sharegpt_roots(files[0], extra) if files else [base, *extra]
        resolver = _ImageResolver(roots)
    loaded = rows_to_examples(
        rows, benchmark, schema=found, base_dir=base, image_resolver=resolver, limit=limit
    )
    loaded.source = f"local:{path}{'@' + split if split else ''} ({found})"
    return loaded


# --------------------------------------------------------------------------------------------
# Hub loading
# --------------------------------------------------------------------------------------------


def _cache_root() -> Path:
    base = os.environ.get("VPPO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vppo"
    )
    return Path(base)


def load_raw_from_hub(
    benchmark: str, source: HubSource, *, schema: str | None = None, limit: int | None = None
) -> LoadedBenchmark:
    """Load a raw Hub dataset (``datasets.load_dataset``); several splits are concatenated and
    their ids prefixed with ``<split>/``."""
    import datasets

    result = LoadedBenchmark(name=benchmark, examples=[], source=source.describe())
    for split in source.splits:
        remaining = None if limit is None else limit - len(result.examples)
        if remaining is not None and remaining <= 0:
            break
        dataset = datasets.load_dataset(source.repo, source.config, split=split)
        part = rows_to_examples(
            _dataset_to_rows(dataset),
            benchmark,
            schema=schema,
            limit=remaining,
            id_prefix=f"{split}/" if len(source.splits) > 1 else "",
        )
        result.examples.extend(part.examples)
        result.skipped.extend(part.skipped)
        result.filtered += part.filtered
        result.schema = part.schema
    return result


def _extract_zip_once(archive: Path, target: Path) -> None:
    import zipfile

    marker = target / f".extracted-{archive.name}"
    if marker.is_file():
        return
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.namelist()
        root = target.resolve()
        for member in members:  # never write outside the target folder
            if not (target / member).resolve().is_relative_to(root):
                raise ValueError(f"{archive} holds the unsafe member path {member!r}.")
        for member in tqdm(
            members, desc=f"extract {archive.name}", unit="file", disable=len(members) < 1000
        ):
            zipped.extract(member, target)
    marker.write_text("ok\n", encoding="utf-8")


def load_sharegpt_from_hub(name: str, *, limit: int | None = None) -> LoadedBenchmark:
    """Download the ShareGPT file the paper scored (PAPO-Eval or VPPO-Eval) and load it.

    PAPO-Eval: ``data/<split>-*.parquet`` plus the split's image archive, extracted once into
    ``$VPPO_CACHE/eval_images/<split>`` (default ``~/.cache/vppo``). VPPO-Eval:
    ``data/vppo/<name>.json`` and ``data/images/<name>/``.
    """
    from huggingface_hub import snapshot_download

    spec = BENCHMARKS[name]
    if spec.sharegpt_hub is None:
        raise ValueError(
            f"{name} has no ShareGPT evaluation file on the Hub; pass --benchmark-path."
        )
    stem = spec.sharegpt_names[0]
    if spec.sharegpt_hub == "papo":
        patterns = [f"data/{stem}-*.parquet"] + ([spec.sharegpt_zip] if spec.sharegpt_zip else [])
        snapshot = Path(
            snapshot_download(PAPO_EVAL_REPO, repo_type="dataset", allow_patterns=patterns)
        )
        files = sorted((snapshot / "data").glob(f"{stem}-*.parquet"))
        roots, search = [snapshot], None
        if spec.sharegpt_zip and (snapshot / spec.sharegpt_zip).is_file():
            extracted = _cache_root() / "eval_images" / stem
            _extract_zip_once(snapshot / spec.sharegpt_zip, extracted)
            roots = [extracted, extracted / "images", snapshot]
            search = [extracted]
        where = f"hub:{PAPO_EVAL_REPO} split {stem}"
    else:
        patterns = [f"data/vppo/{stem}.json", f"data/images/{stem}/*"]
        snapshot = Path(
            snapshot_download(VPPO_EVAL_REPO, repo_type="dataset", allow_patterns=patterns)
        )
        files = [snapshot / "data" / "vppo" / f"{stem}.json"]
        roots, search = [snapshot, snapshot / "data"], None
        where = f"hub:{VPPO_EVAL_REPO} data/vppo/{stem}.json"
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"the Hub snapshot for {name} has no ShareGPT file {stem}.")
    rows = _read_files(files)
    loaded = rows_to_examples(
        rows,
        name,
        schema=detect_schema(rows.columns),
        image_resolver=_ImageResolver(roots, search),
        limit=limit,
    )
    loaded.source = f"{where} (sharegpt)"
    return loaded


def load_benchmark(
    name: str,
    *,
    path: str | Path | None = None,
    data_dir: str | Path | None = None,
    source: str = "auto",
    limit: int | None = None,
) -> LoadedBenchmark:
    """Load one benchmark in the common form.

    Resolution order: ``path`` (file, folder or Hub name; see `load_examples_from_path`); else
    the benchmark's ShareGPT file under ``data_dir`` (see `find_sharegpt_file`); else the Hub:
    with ``source="auto"`` or ``"sharegpt"`` the ShareGPT file the paper scored, with
    ``source="raw"`` (and for ViRL39K / MMK12-validation) the raw Hub dataset.
    """
    if source not in ("auto", "sharegpt", "raw"):
        raise ValueError(f"source must be 'auto', 'sharegpt' or 'raw', got {source!r}.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of questions, got {limit}.")
    name = canonical_name(name)
    if path is not None:
        return load_examples_from_path(
            name, path, limit=limit, extra_image_roots=[data_dir] if data_dir else ()
        )
    spec = BENCHMARKS.get(name)
    if spec is None:
        raise ValueError(
            f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)} or give its file "
            "with --benchmark-path NAME=PATH."
        )
    if data_dir is not None and source != "raw":
        files = find_sharegpt_file(name, data_dir)
        if files is None:
            raise FileNotFoundError(
                f"no ShareGPT file for {name} under {data_dir} (looked for "
                f"{', '.join(spec.sharegpt_names or (name,))} as .json/.jsonl/.parquet in "
                f"{', '.join(s or '.' for s in _SHAREGPT_SUBDIRS)})."
            )
        return _load_local(name, files[0], None, None, limit, [Path(data_dir)], files=files)
    if source == "raw" or spec.sharegpt_hub is None:
        return load_raw_from_hub(name, spec.raw, limit=limit)
    return load_sharegpt_from_hub(name, limit=limit)
