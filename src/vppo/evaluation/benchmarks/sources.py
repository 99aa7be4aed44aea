"""Benchmark loaders: every supported schema into one common form, `EvalExample`.

The paper scores the LLaMA-Factory ShareGPT files of PAPO-Eval (six benchmarks) and VPPO-Eval
(DynaMath, MathVision); those are the default sources. The raw Hugging Face schemas of the eight
benchmarks, the EasyR1 training schema (ViRL39K, the MMK12 validation set, hiyouga/geometry3k) and
the original TIGER-Lab ViRL39K schema load too, from the Hub or from local files.

Common form: `EvalExample` (id, problem text with ``<image>`` placeholders and *without* the
output-format instruction, answer, benchmark name, images). Images are decoded lazily, when
`EvalExample.images` is read, so loading a 3,666-question benchmark holds only compressed bytes
or file paths. A row that cannot become an example (no answer, a missing image file, a placeholder
count that does not match its images) is recorded in `LoadedBenchmark.skipped` with a reason and
never stops the rest of the benchmark.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from vppo.data.images import to_rgb_image
from vppo.data.prompts import DEFAULT_TEMPLATE, load_template, remove_instruction
from vppo.evaluation.reference import PAPER_BENCHMARKS

__all__ = [
    "BENCHMARKS",
    "IMAGE_PLACEHOLDER",
    "BenchmarkSpec",
    "EvalExample",
    "HubSource",
    "LoadedBenchmark",
    "SkippedRow",
    "detect_schema",
    "find_sharegpt_file",
    "load_benchmark",
    "load_examples_from_path",
    "resolve_benchmark_names",
    "rows_to_examples",
]

IMAGE_PLACEHOLDER = "<image>"


# --------------------------------------------------------------------------------------------
# Common form
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ArrowImageRef:
    """A lazily read image cell of a (memory-mapped) Arrow table: row, column, list position."""

    table: Any = field(repr=False)
    row: int
    column: str
    position: int | None = None

    def fetch(self) -> Any:
        cell = self.table.column(self.column)[self.row]
        if self.position is not None:
            cell = cell.values[self.position]
        return cell.as_py()


@dataclass(frozen=True)
class EvalExample:
    """One benchmark question in the common form.

    ``problem`` holds one ``<image>`` placeholder per image, in image order, and no output-format
    instruction (the prompt template adds it). ``image_refs`` are the raw stored values (decoded
    PIL images, ``{"bytes", "path"}`` structs, bytes, absolute paths or lazy Arrow cells);
    `images` decodes them to RGB PIL images on each access.
    """

    id: str
    problem: str
    answer: str
    benchmark: str
    image_refs: tuple[Any, ...] = ()
    base_dir: str | None = None
    row: int | None = None

    @property
    def num_images(self) -> int:
        return len(self.image_refs)

    @property
    def images(self) -> list[Image.Image]:
        """The question's images as RGB PIL images (ValueError/FileNotFoundError if unreadable)."""
        out = []
        for ref in self.image_refs:
            value = ref.fetch() if isinstance(ref, _ArrowImageRef) else ref
            out.append(
                to_rgb_image(
                    value, base_dir=self.base_dir, row=self.row, field=f"{self.benchmark} images"
                )
            )
        return out

    def image_digest(self) -> str:
        """16 hex digits over the question's images as stored: the bytes of an encoded image or its
        file, or the pixels of a decoded one. What the evaluation cache keys each question on, so a
        question whose images changed is generated again. ValueError/OSError if one is unreadable."""
        digest = hashlib.sha256()
        for ref in self.image_refs:
            value = ref.fetch() if isinstance(ref, _ArrowImageRef) else ref
            digest.update(_image_bytes(value, self.base_dir))
        return digest.hexdigest()[:16]


def _image_bytes(value: Any, base_dir: str | None) -> bytes:
    """The bytes that identify one stored image (see `EvalExample.image_digest`)."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"bytes:" + bytes(value)
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():  # a folder, a device (/dev/zero would be read without end), a pipe
            raise ValueError(f"image path {path} is not a regular file.")
        return b"file:" + path.read_bytes()
    if isinstance(value, Image.Image):
        return f"pixels:{value.mode}:{value.size}:".encode() + value.tobytes()
    raise ValueError(f"cannot identify an image stored as {type(value).__name__}.")


@dataclass(frozen=True)
class SkippedRow:
    """A row (or question) left out of the evaluation, and why."""

    id: str
    reason: str


@dataclass
class LoadedBenchmark:
    """The examples of one benchmark plus what was left out while loading."""

    name: str
    examples: list[EvalExample]
    skipped: list[SkippedRow] = field(default_factory=list)
    source: str = ""
    schema: str = ""
    filtered: int = 0  # rows removed by the benchmark's documented filter (not errors)

    def __len__(self) -> int:
        return len(self.examples)


class _RowError(ValueError):
    """A row that cannot become an example; the loader records it and moves on."""


# --------------------------------------------------------------------------------------------
# Row access: Arrow tables (parquet, Hub datasets) and lists of dicts (JSON)
# --------------------------------------------------------------------------------------------


class _Rows(ABC):
    """Column access shared by Arrow tables and lists of dicts."""

    columns: list[str]

    @abstractmethod
    def __len__(self) -> int: ...

    def row(self, index: int) -> _RowView:
        return _RowView(self, index)

    @abstractmethod
    def value(self, index: int, column: str) -> Any: ...

    @abstractmethod
    def image_refs(self, index: int, column: str) -> list[Any]: ...


class _ArrowRows(_Rows):
    def __init__(self, table: Any):
        self.table = table
        self.columns = list(table.column_names)
        self._names = set(self.columns)

    def __len__(self) -> int:
        return self.table.num_rows

    def value(self, index: int, column: str) -> Any:
        if column not in self._names:
            return None
        return self.table.column(column)[index].as_py()

    def image_refs(self, index: int, column: str) -> list[Any]:
        import pyarrow as pa

        if column not in self._names:
            return []
        kind = self.table.schema.field(column).type
        cell = self.table.column(column)[index]
        if not cell.is_valid:
            return []
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            inner = kind.value_type
            if pa.types.is_struct(inner) or pa.types.is_binary(inner) or pa.types.is_large_binary(
                inner
            ):
                return [_ArrowImageRef(self.table, index, column, j) for j in range(len(cell))]
            return [item for item in cell.as_py() if item is not None]
        if pa.types.is_struct(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            return [_ArrowImageRef(self.table, index, column)]
        return [cell.as_py()]


class _ListRows(_Rows):
    def __init__(self, rows: Sequence[Mapping[str, Any]]):
        self.rows = rows
        names: dict[str, None] = {}
        for row in rows[:50]:
            names.update(dict.fromkeys(row))
        self.columns = list(names)

    def __len__(self) -> int:
        return len(self.rows)

    def value(self, index: int, column: str) -> Any:
        return self.rows[index].get(column)

    def image_refs(self, index: int, column: str) -> list[Any]:
        value = self.rows[index].get(column)
        if value is None:
            return []
        if isinstance(value, list | tuple):
            return [item for item in value if item is not None]
        return [value]


@dataclass
class _RowView:
    rows: _Rows
    index: int

    def get(self, column: str, default: Any = None) -> Any:
        value = self.rows.value(self.index, column)
        return default if value is None else value

    def images(self, column: str) -> list[Any]:
        return self.rows.image_refs(self.index, column)

    def has(self, column: str) -> bool:
        return column in self.rows.columns


# --------------------------------------------------------------------------------------------
# Text helpers shared by the schema converters
# --------------------------------------------------------------------------------------------

_IMAGE_REF = re.compile(r"<image\s*(\d+)>")
_BOXED_PREFIX = "\\boxed{"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _answer(value: Any, column: str) -> str:
    text = _unwrap_boxed(_text(value).strip())
    if not text:
        raise _RowError(f"the answer field {column!r} is missing or empty")
    return text


def _unwrap_boxed(text: str) -> str:
    """``\\boxed{17}`` -> ``17`` when the whole string is one box (ViRL39K stores answers so)."""
    if not (text.startswith(_BOXED_PREFIX) and text.endswith("}")):
        return text
    depth = 0
    for pos in range(len(_BOXED_PREFIX) - 1, len(text)):
        char = text[pos]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[len(_BOXED_PREFIX) : -1].strip() if pos == len(text) - 1 else text
    return text


def _options_list(value: Any) -> list[str]:
    """Options stored as a list, a Python/JSON list literal or one ``"A. x; B. y"`` string."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as err:
                raise _RowError(f"the options string {text[:40]!r}... is not a list") from err
        if not isinstance(parsed, list):
            raise _RowError(f"the options string {text[:40]!r}... is not a list")
        return [_text(v) for v in parsed]
    return [text] if text else []


def _format_choices(options: Sequence[str]) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if len(options) > len(letters):
        raise _RowError(f"{len(options)} options are more than the letters A-Z")
    return "\nChoices:\n" + "\n".join(f"{letters[i]}. {opt}" for i, opt in enumerate(options))


def _numbered_placeholders(text: str, available: Mapping[int, Any]) -> tuple[str, list[Any]]:
    """Turn ``<image N>`` / ``<imageN>`` references into ``<image>`` placeholders.

    The first reference to an available image becomes a placeholder (images follow reference
    order); a repeated reference stays as text. Available images that the text never references
    are put first, each with its own placeholder.
    """
    order: list[int] = []

    def substitute(match: re.Match[str]) -> str:
        number = int(match.group(1))
        if number in available and number not in order:
            order.append(number)
            return IMAGE_PLACEHOLDER
        return match.group(0)

    text = _IMAGE_REF.sub(substitute, text)
    unused = [n for n in sorted(available) if n not in order]
    text = IMAGE_PLACEHOLDER * len(unused) + text
    return text, [available[n] for n in unused + order]


def _with_placeholders(problem: str, num_images: int) -> str:
    count = problem.count(IMAGE_PLACEHOLDER)
    if count == num_images:
        return problem
    if count == 0:
        return IMAGE_PLACEHOLDER * num_images + problem
    raise _RowError(f"the text has {count} <image> placeholders but the row has {num_images} images")


def strip_instruction(text: str) -> str:
    """Remove the output-format instruction of the default template from a stored user turn.

    PAPO/VPPO-Eval files end each question with it; a file of your own may carry it anywhere, with
    other line breaks or spacing (matched with whitespace normalised). Rendering the result with
    the default template gives back the stored PAPO user text exactly, with the instruction once.
    """
    for instruction in load_template(DEFAULT_TEMPLATE).instructions:
        text = remove_instruction(text, instruction)
    return text


# --------------------------------------------------------------------------------------------
# Schema converters: one row -> (id, problem, answer, image refs)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Converted:
    id: str | None
    problem: str
    answer: str
    images: list[Any]


def _first_present(row: _RowView, *columns: str) -> Any:
    for column in columns:
        value = row.get(column)
        if value is not None and value != "":
            return value
    return None


def _sharegpt(row: _RowView) -> _Converted:
    turns = row.get("messages")
    role_key, content_key, user, assistant = "role", "content", "user", "assistant"
    if turns is None and row.has("conversations"):
        turns = row.get("conversations")
        role_key, content_key, user, assistant = "from", "value", "human", "gpt"
    if not isinstance(turns, list | tuple) or not turns:
        raise _RowError("the 'messages' field is missing or empty")
    question = next(
        (t for t in turns if isinstance(t, Mapping) and t.get(role_key) == user), None
    )
    reply = next(
        (t for t in turns if isinstance(t, Mapping) and t.get(role_key) == assistant), None
    )
    if question is None:
        raise _RowError("'messages' has no user turn")
    if reply is None:
        raise _RowError("'messages' has no assistant turn holding the answer")
    return _Converted(
        _text(row.get("id")) or None,
        strip_instruction(_text(question.get(content_key))),
        _answer(reply.get(content_key), "messages[assistant]"),
        row.images("images"),
    )


def _easyr1(row: _RowView) -> _Converted:
    images = row.images("images") or row.images("image")
    return _Converted(
        _text(row.get("id")) or None,
        _text(row.get("problem")),
        _answer(row.get("answer"), "answer"),
        images,
    )


def _virl39k_original(row: _RowView) -> _Converted:
    return _Converted(
        _text(row.get("qid")) or None,
        _text(row.get("question")),
        _answer(row.get("answer"), "answer"),
        row.images("image"),
    )


def _wemath(row: _RowView) -> _Converted:
    question = _text(row.get("question")).strip()
    option = _text(row.get("option")).strip()
    problem = f"{question}\nOptions: {option}" if option else question
    return _Converted(
        _text(_first_present(row, "ID", "id")) or None,
        problem,
        _answer(row.get("answer"), "answer"),
        row.images("image_path"),
    )


def _single_image_question(row: _RowView) -> _Converted:
    """MMK12 and LogicVista: options inline in ``question``, one ``image``."""
    return _Converted(
        _text(row.get("id")) or None,
        _text(row.get("question")),
        _answer(row.get("answer"), "answer"),
        row.images("image"),
    )


# MathVerse "Vision Only" rows have an empty ``question``: the question is drawn in the image.
MATHVERSE_VISION_ONLY_QUESTION = (
    "Answer the question shown in the image and give the letter of the correct option."
)


def _mathverse(row: _RowView) -> _Converted:
    question = _text(row.get("question")).strip() or MATHVERSE_VISION_ONLY_QUESTION
    return _Converted(
        _text(_first_present(row, "sample_index", "id")) or None,
        question,
        _answer(row.get("answer"), "answer"),
        row.images("image"),
    )


def _decoded_or_path(row: _RowView) -> list[Any]:
    return row.images("decoded_image") or row.images("image")


def _mathvision(row: _RowView) -> _Converted:
    options = _options_list(row.get("options"))
    text, images = _numbered_placeholders(
        _text(row.get("question")).strip(), dict(enumerate(_decoded_or_path(row), start=1))
    )
    if options:
        text += _format_choices(options)
    return _Converted(
        _text(row.get("id")) or None, text, _answer(row.get("answer"), "answer"), images
    )


def _dynamath(row: _RowView) -> _Converted:
    return _Converted(
        _text(row.get("id")) or None,
        _text(row.get("question")),
        _answer(row.get("ground_truth"), "ground_truth"),
        _decoded_or_path(row),
    )


MMMU_PRO_VISION_QUESTION = (
    "Answer the multiple-choice question shown in the image with the letter of the correct option."
)


def _mmmu_pro(row: _RowView) -> _Converted:
    answer = _answer(row.get("answer"), "answer")
    row_id = _text(row.get("id")) or None
    if not row.has("question"):  # the "vision" configuration: question and options in the image
        return _Converted(
            row_id, IMAGE_PLACEHOLDER + MMMU_PRO_VISION_QUESTION, answer, row.images("image")
        )
    available: dict[int, Any] = {}
    for number in range(1, 8):
        refs = row.images(f"image_{number}")
        if refs:
            available[number] = refs[0]
    text = _text(row.get("question")).strip()
    options = _options_list(row.get("options"))
    if options:
        text += _format_choices(options)
    text, images = _numbered_placeholders(text, available)
    return _Converted(row_id, text, answer, images)


@dataclass(frozen=True)
class _Schema:
    name: str
    required: tuple[str, ...]
    convert: Callable[[_RowView], _Converted]
    keep: Callable[[_RowView], bool] | None = None  # documented benchmark filter


def _is_multi_choice(row: _RowView) -> bool:
    return _text(row.get("question_type")).strip().lower() in ("multi-choice", "multiple-choice")


# Detection order matters: the more specific column sets come first.
SCHEMAS: dict[str, _Schema] = {
    s.name: s
    for s in (
        _Schema("sharegpt", ("messages", "images"), _sharegpt),
        _Schema("wemath", ("question", "option", "answer", "image_path"), _wemath),
        _Schema(
            "mathverse",
            ("question", "answer", "image", "question_type", "problem_version"),
            _mathverse,
            keep=_is_multi_choice,
        ),
        _Schema("mathvision", ("question", "options", "answer", "decoded_image", "level"), _mathvision),
        _Schema("dynamath", ("question", "ground_truth", "decoded_image"), _dynamath),
        _Schema("mmmu_pro", ("question", "options", "answer", "image_1"), _mmmu_pro),
        _Schema("mmmu_pro_vision", ("options", "answer", "image", "subject"), _mmmu_pro),
        _Schema("logicvista", ("question", "answer", "image", "skill"), _single_image_question),
        _Schema("virl39k_original", ("qid", "question", "answer", "image"), _virl39k_original),
        _Schema("easyr1", ("problem", "answer"), _easyr1),
        _Schema("mmk12", ("question", "answer", "image"), _single_image_question),
    )
}
SCHEMAS["sharegpt_conversations"] = _Schema(
    "sharegpt_conversations", ("conversations", "images"), _sharegpt
)


def detect_schema(columns: Sequence[str], hint: str | None = None) -> str:
    """Name of the schema whose required columns are all in ``columns``.

    ShareGPT always wins (the paper's files); then ``hint`` (the benchmark's raw schema) if it
    fits; then the first match in `SCHEMAS` order.
    """
    present = set(columns)
    for name in ("sharegpt", "sharegpt_conversations"):
        if set(SCHEMAS[name].required) <= present:
            return name
    if hint is not None and hint in SCHEMAS and set(SCHEMAS[hint].required) <= present:
        return hint
    for name, schema in SCHEMAS.items():
        if set(schema.required) <= present:
            return name
    raise ValueError(
        f"cannot tell the schema from the columns {sorted(present)}; expected ShareGPT "
        "(messages, images), EasyR1 (problem, answer, images) or one of the raw benchmark schemas."
    )


def rows_to_examples(
    rows: _Rows | Sequence[Mapping[str, Any]] | Any,
    benchmark: str,
    *,
    schema: str | None = None,
    base_dir: str | Path | None = None,
    image_resolver: Callable[[str], str] | None = None,
    limit: int | None = None,
    id_prefix: str = "",
) -> LoadedBenchmark:
    """Convert rows (a list of dicts or a pyarrow Table) of one schema into a `LoadedBenchmark`.

    Args:
        rows: a list of dict rows, a ``pyarrow.Table``, or an internal row source.
        benchmark: name written into every example.
        schema: a `SCHEMAS` key; detected from the columns when None.
        base_dir: directory that relative image paths are resolved against.
        image_resolver: maps a stored image path to an existing file path (ShareGPT files); it
            raises FileNotFoundError for a missing file, which skips the row.
        limit: stop after this many examples.
        id_prefix: prepended to every id (used when one benchmark spans several splits).
    """
    source = _as_rows(rows)
    if schema is None:
        schema = detect_schema(source.columns, hint=_BENCHMARK_SCHEMA_HINTS.get(benchmark))
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {sorted(SCHEMAS)}, got {schema!r}.")
    spec = SCHEMAS[schema]
    missing = [c for c in spec.required if c not in source.columns]
    if missing:
        raise ValueError(f"{benchmark}: the rows lack the {schema} column(s) {missing}.")
    base = None if base_dir is None else str(base_dir)
    loaded = LoadedBenchmark(name=benchmark, examples=[], schema=schema)
    seen: dict[str, int] = {}
    for index in range(len(source)):
        if limit is not None and len(loaded.examples) >= limit:
            break
        view = source.row(index)
        fallback_id = f"{id_prefix}{index}"
        try:
            if spec.keep is not None and not spec.keep(view):
                loaded.filtered += 1
                continue
            converted = spec.convert(view)
            images = list(converted.images)
            if image_resolver is not None:
                images = [image_resolver(r) if isinstance(r, str) else r for r in images]
            problem = _with_placeholders(converted.problem, len(images))
        except (_RowError, FileNotFoundError) as err:
            loaded.skipped.append(SkippedRow(fallback_id, f"row {index}: {err}"))
            continue
        qid = f"{id_prefix}{converted.id}" if converted.id is not None else fallback_id
        if qid in seen:  # ids must be unique for the sample cache
            seen[qid] += 1
            qid = f"{qid}#{seen[qid]}"
        else:
            seen[qid] = 1
        loaded.examples.append(
            EvalExample(qid, problem, converted.answer, benchmark, tuple(images), base, index)
        )
    return loaded


def _as_rows(rows: Any) -> _Rows:
    if isinstance(rows, _Rows):
        return rows
    if isinstance(rows, list | tuple):
        if rows and not all(isinstance(r, Mapping) for r in rows):
            raise ValueError("rows must be dicts (one per question).")
        return _ListRows(list(rows))
    if hasattr(rows, "column_names") and hasattr(rows, "num_rows"):
        return _ArrowRows(rows)
    raise ValueError(f"rows must be a list of dicts or a pyarrow Table, got {type(rows).__name__}.")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face dataset: repository, optional configuration, one or more splits."""

    repo: str
    config: str | None = None
    splits: tuple[str, ...] = ("test",)

    def describe(self) -> str:
        config = f" config {self.config!r}" if self.config else ""
        return f"hub:{self.repo}{config} split {'+'.join(self.splits)}"


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and how it is read.

    ``sharegpt_names`` are the file stems / split names of its PAPO-Eval or VPPO-Eval ShareGPT
    file (several spellings occur); ``sharegpt_hub`` says which of the two repositories holds it.
    """

    name: str
    title: str
    raw: HubSource
    raw_schema: str
    sharegpt_names: tuple[str, ...] = ()
    sharegpt_hub: str | None = None  # "papo" or "vppo"
    sharegpt_zip: str | None = None  # PAPO-Eval image archive at the repository root
    paper_rows: int | None = None  # question count of the files the paper scored
    in_paper: bool = True


PAPO_EVAL_REPO = "PAPO-Galaxy/PAPO_eval"
VPPO_EVAL_REPO = "chamber111/VPPO-Eval"

BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in (
        BenchmarkSpec(
            "mathverse", "MathVerse", HubSource("AI4Math/MathVerse", "testmini", ("testmini",)),
            "mathverse", ("AI4Math_MathVerse",), "papo", "AI4Math_MathVerse_images.zip", 2180,
        ),
        BenchmarkSpec(
            "dynamath", "DynaMath",
            HubSource(
                "DynaMath/DynaMath_Sample", None, tuple(f"sample_variant{i}" for i in range(1, 11))
            ),
            "dynamath", ("DynaMath_DynaMath_Sample",), "vppo", None, 3666,
        ),
        BenchmarkSpec(
            "mmk12", "MMK12", HubSource("FanqingM/MMK12"), "mmk12",
            ("PAPO_MMK12", "PAPO_MMK12_test"), "papo", "PAPO_MMK12_test_images.zip", 2000,
        ),
        BenchmarkSpec(
            "geo3k", "Geo3k", HubSource("hiyouga/geometry3k"), "easyr1",
            ("hiyouga_geometry3k",), "papo", "hiyouga_geometry3k_images.zip", 601,
        ),
        BenchmarkSpec(
            "mathvision", "MathVision", HubSource("MathLLMs/MathVision"), "mathvision",
            ("MathLLMs_MathVision",), "vppo", None, 2907,
        ),
        BenchmarkSpec(
            "wemath", "We-Math", HubSource("We-Math/We-Math", None, ("testmini",)), "wemath",
            ("We_Math", "We-Math_We-Math"), "papo", "We-Math_We-Math_images.zip", 1740,
        ),
        BenchmarkSpec(
            "logicvista", "LogicVista", HubSource("lscpku/LogicVista"), "logicvista",
            ("lscpku_LogicVista",), "papo", "lscpku_LogicVista_images.zip", 447,
        ),
        BenchmarkSpec(
            "mmmu_pro", "MMMU-Pro", HubSource("MMMU/MMMU_Pro", "standard (10 options)"),
            "mmmu_pro", ("MMMU_MMMU_Pro",), "papo", "MMMU_MMMU_Pro_images.zip", 1730,
        ),
        BenchmarkSpec(
            "virl39k", "ViRL39K (train)",
            HubSource("chamber111/VPPO_ViRL39K_train", None, ("train",)), "easyr1",
            in_paper=False,
        ),
        BenchmarkSpec(
            "mmk12_val", "MMK12 (validation)",
            HubSource("chamber111/VPPO_MMK12_validation", None, ("train",)), "easyr1",
            in_paper=False,
        ),
    )
}

_BENCHMARK_SCHEMA_HINTS = {name: spec.raw_schema for name, spec in BENCHMARKS.items()}
_ALIASES = {
    "we-math": "wemath", "we_math": "wemath", "geometry3k": "geo3k", "mmmu-pro": "mmmu_pro",
    "mmmupro": "mmmu_pro", "math_vision": "mathvision", "math-vision": "mathvision",
    "math_verse": "mathverse", "dyna_math": "dynamath", "logic_vista": "logicvista",
    "mmk12-val": "mmk12_val", "vppo_mmk12_validation": "mmk12_val", "vppo_virl39k_train": "virl39k",
}


def canonical_name(name: str) -> str:
    """Registry name for a user-typed benchmark name (``We-Math`` -> ``wemath``); else unchanged."""
    key = name.strip().lower()
    if key in BENCHMARKS:
        return key
    return _ALIASES.get(key, key)


def resolve_benchmark_names(text: str | Sequence[str]) -> list[str]:
    """``"all"`` -> the paper's eight in column order; a comma list -> canonical names, in order.

    Unknown names are kept as custom benchmarks (they need a ``--benchmark-path``).
    """
    parts = [p for p in (text.split(",") if isinstance(text, str) else text)]
    names: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        for name in PAPER_BENCHMARKS if part.lower() == "all" else (canonical_name(part),):
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("--benchmarks names no benchmark; give e.g. 'all' or 'geo3k,wemath'.")
    return names


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------

_DATA_SUFFIXES = (".parquet", ".json", ".jsonl")


def _read_files(paths: Sequence[Path]) -> _Rows:
    """Parquet files as lazy Arrow rows, JSON (a list, JSON Lines, or ``{"data": [...]}``) as
    dict rows, both read by ``datasets.load_dataset``."""
    import datasets

    suffixes = {p.suffix for p in paths}
    if len(suffixes) > 1 and not suffixes <= {".json", ".jsonl"}:
        raise ValueError(f"cannot mix file types {sorted(suffixes)} in one benchmark: {list(map(str, paths))}.")
    builder = "parquet" if suffixes == {".parquet"} else "json"
    files = [str(p) for p in paths]
    if builder == "json":
        from vppo.data.loading import text_file_problem

        for path in paths:  # pyarrow takes invalid UTF-8 into string columns and fails later, nameless
            problem = text_file_problem(Path(path).read_bytes())
            if problem:
                raise ValueError(f"could not read {path}: {problem}.")
    from vppo.data.loading import quiet_datasets_json_errors

    quiet_datasets_json_errors()
    try:
        dataset = datasets.load_dataset(builder, data_files=files, split="train")
        if builder == "json" and dataset.column_names == ["data"] and dataset.num_rows == len(files):
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
        p for p in directory.rglob("*") if p.is_file() and p.suffix in _DATA_SUFFIXES
        and not p.name.startswith(".") and p.name not in ("dataset_info.json", "state.json")
    )
    chosen = [
        p for p in files if any(p.name.startswith(f"{s}-") or p.stem == s for s in splits)
    ]
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
        for member in tqdm(members, desc=f"extract {archive.name}", unit="file",
                           disable=len(members) < 1000):
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
        raise ValueError(f"{name} has no ShareGPT evaluation file on the Hub; pass --benchmark-path.")
    stem = spec.sharegpt_names[0]
    if spec.sharegpt_hub == "papo":
        patterns = [f"data/{stem}-*.parquet"] + ([spec.sharegpt_zip] if spec.sharegpt_zip else [])
        snapshot = Path(snapshot_download(PAPO_EVAL_REPO, repo_type="dataset", allow_patterns=patterns))
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
        snapshot = Path(snapshot_download(VPPO_EVAL_REPO, repo_type="dataset", allow_patterns=patterns))
        files = [snapshot / "data" / "vppo" / f"{stem}.json"]
        roots, search = [snapshot, snapshot / "data"], None
        where = f"hub:{VPPO_EVAL_REPO} data/vppo/{stem}.json"
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"the Hub snapshot for {name} has no ShareGPT file {stem}.")
    rows = _read_files(files)
    loaded = rows_to_examples(
        rows, name, schema=detect_schema(rows.columns), image_resolver=_ImageResolver(roots, search),
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

