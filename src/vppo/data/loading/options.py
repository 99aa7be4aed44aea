"""The loader's options: every knob of ``load_training_dataset``, checked once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vppo.data.images import ALPHA_MODES, ROUNDING_MODES, _check_limits
from vppo.data.prompts import PromptTemplate, load_template

OUTPUT_COLUMNS = ("prompt", "images", "answer")
_ON_ERROR = ("raise", "skip")
_VALIDATE = {True: "header", False: "none", "header": "header", "full": "full", "none": "none"}


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
