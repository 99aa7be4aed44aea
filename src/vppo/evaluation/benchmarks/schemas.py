"""Schema converters: one row of a known schema into the common form, `EvalExample`.

One converter per schema (the PAPO/VPPO-Eval ShareGPT files, EasyR1, the original ViRL39K and the
raw Hugging Face schemas of the eight benchmarks), registered in `SCHEMAS` with the columns that
identify it; `detect_schema` picks one from a table's columns and `rows_to_examples` converts a
whole table, recording the rows that cannot become an example instead of stopping.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vppo.data.prompts import DEFAULT_TEMPLATE, load_template, remove_instruction
from vppo.evaluation.benchmarks.registry import _BENCHMARK_SCHEMA_HINTS
from vppo.evaluation.benchmarks.rows import (
    IMAGE_PLACEHOLDER,
    EvalExample,
    LoadedBenchmark,
    SkippedRow,
    _as_rows,
    _RowError,
    _Rows,
    _RowView,
)
from vppo.rewards.grader import unwrap_boxed

__all__ = [
    "MATHVERSE_VISION_ONLY_QUESTION",
    "MMMU_PRO_VISION_QUESTION",
    "SCHEMAS",
    "detect_schema",
    "rows_to_examples",
    "strip_instruction",
]

# --------------------------------------------------------------------------------------------
# Text helpers shared by the schema converters
# --------------------------------------------------------------------------------------------

_IMAGE_REF = re.compile(r"<image\s*(\d+)>")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _answer(value: Any, column: str) -> str:
    text = unwrap_boxed(_text(value).strip())
    if not text:
        raise _RowError(f"the answer field {column!r} is missing or empty")
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
    raise _RowError(
        f"the text has {count} <image> placeholders but the row has {num_images} images"
    )


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
    question = next((t for t in turns if isinstance(t, Mapping) and t.get(role_key) == user), None)
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
        _Schema(
            "mathvision", ("question", "options", "answer", "decoded_image", "level"), _mathvision
        ),
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
