"""`TrainingDataOptions`: every knob of ``load_training_dataset``, stated and checked once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vppo.data.images import (
    ALPHA_MODES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    ROUNDING_MODES,
    _check_limits,
)
from vppo.data.prompts import IMAGE_PLACEHOLDER, PromptTemplate, load_template

OUTPUT_COLUMNS = ("prompt", "images", "answer")
_ON_ERROR = ("raise", "skip")
_VALIDATE = {True: "header", False: "none", "header": "header", "full": "full", "none": "none"}


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value > 0


@dataclass(frozen=True, kw_only=True)
class TrainingDataOptions:
    """How ``load_training_dataset`` reads, checks and formats a training set.

    ``load_training_dataset(source, **kwargs)`` builds ``TrainingDataOptions(**kwargs)``; build one
    yourself to reuse it or to keep it in a recipe, and pass it as ``options=``. Building it checks
    every field (a bad value raises ``ValueError``, a missing ``image_dir`` ``FileNotFoundError``)
    and normalises a few: ``image_column`` and ``keep_columns`` become tuples (``image_column`` stays
    ``None`` for text-only data), ``validate`` one of ``"header"``, ``"full"``, ``"none"``,
    ``prompt_template`` the loaded `PromptTemplate`, ``image_dir`` an absolute ``Path``, the two flags
    bools, and with ``max_prompt_tokens`` a processor given as ``tokenizer`` its tokenizer.
    """

    split: str = field(
        default="train",
        metadata={
            "help": "Split to read from Hub datasets, DatasetDict folders and split-named files."
        },
    )
    image_column: str | Sequence[str] | None = field(
        default="images",
        metadata={
            "help": "Column(s) holding the images: one column of single images or lists, or several "
            "columns whose non-null values are concatenated in order (e.g. MMMU's image_1..image_7). "
            "The default 'images' falls back to 'image', and for image folders to the file_name(s) "
            "columns. None: text-only data."
        },
    )
    problem_column: str = field(
        default="problem",
        metadata={
            "help": "The question text (<image> marks where images go); the output names it 'prompt'."
        },
    )
    answer_column: str = field(
        default="answer",
        metadata={"help": "The ground truth; the output names it 'answer'."},
    )
    prompt_template: str | os.PathLike | PromptTemplate | None = field(
        default=None,
        metadata={
            "help": "Built-in name (vppo_math, plain), .jinja path or inline Jinja source; None means "
            "vppo_math, the official VPPO format prompt. Templates may use other columns by name."
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "System message text; None adds none (Qwen2.5-VL's chat template then inserts "
            "'You are a helpful assistant.', as in the official runs)."
        },
    )
    min_pixels: int | None = field(
        default=DEFAULT_MIN_PIXELS,
        metadata={
            "help": "Images are rescaled (aspect ratio kept) so that min_pixels <= H*W <= max_pixels; "
            "None disables the bound. Default DEFAULT_MIN_PIXELS (32^2, every command's); the official "
            "recipes set 256*28*28."
        },
    )
    max_pixels: int | None = field(
        default=DEFAULT_MAX_PIXELS,
        metadata={
            "help": "Upper bound of H*W (see min_pixels); None disables it. Default DEFAULT_MAX_PIXELS "
            "(768^2, every command's); the official recipes set 1280*28*28."
        },
    )
    min_image_side: int | None = field(
        default=28,
        metadata={
            "help": "Reject images whose short side is below this after resizing (one 28-px merged "
            "patch of Qwen2.5-VL); None disables the check."
        },
    )
    max_aspect_ratio: float | None = field(
        default=200.0,
        metadata={
            "help": "Reject images whose long/short side ratio exceeds this (Qwen-VL processors fail "
            "above 200); None disables the check."
        },
    )
    alpha: str = field(
        default="white",
        metadata={
            "help": "'white' composites transparent images onto white; 'drop' discards alpha like the "
            "official code (transparent pixels then show their stored colour, often black)."
        },
    )
    resize_rounding: str = field(
        default="bounded",
        metadata={
            "help": "'bounded' (always lands inside the pixel range) or 'official' (int() truncation, "
            "bit-for-bit the official sizes); see pixel_limited_size."
        },
    )
    image_dir: str | os.PathLike | None = field(
        default=None,
        metadata={
            "help": "Folder that relative image paths resolve against; default: the folder of the data "
            "file (the working directory for Hub and in-memory datasets)."
        },
    )
    max_samples: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many rows, chosen before any check runs."},
    )
    seed: int | None = field(
        default=0,
        metadata={
            "help": "With max_samples, rows are a random subset drawn with this seed (kept in source "
            "order); None takes the first max_samples rows."
        },
    )
    validate: bool | str = field(
        default=True,
        metadata={
            "help": "True/'header' opens every image's header (missing files, non-image data, sizes); "
            "'full' also decodes every image (catches truncated data; slow); False/'none' checks only "
            "text fields and image counts."
        },
    )
    on_error: str = field(
        default="raise",
        metadata={
            "help": "'raise' stops at the first bad row with one sentence naming row, file and field; "
            "'skip' drops bad rows and logs a warning with counts per field and row ids."
        },
    )
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={
            "help": "With tokenizer, rows whose text prompt (system prompt plus rendered problem, no "
            "chat-template markup, no image tokens) has more tokens are bad rows. Image tokens depend "
            "on the model; TRL counts them."
        },
    )
    tokenizer: Any = field(
        default=None,
        metadata={"help": "Tokenizer or processor used by max_prompt_tokens."},
    )
    skip_long_prompts: bool = field(
        default=False,
        metadata={
            "help": "Drop rows over max_prompt_tokens (counted in the skip warning) even when "
            "on_error='raise', as vppo train and vppo eval do."
        },
    )
    keep_columns: Sequence[str] = field(
        default=(),
        metadata={
            "help": "Extra source columns to carry through unchanged (e.g. ('id',)); reward functions "
            "receive them as keyword arguments in TRL."
        },
    )
    unwrap_boxed_answer: bool = field(
        default=True,
        metadata={
            "help": "Turn an answer written as one \\boxed{X} into X (the original TIGER-Lab ViRL39K "
            "stores answers that way)."
        },
    )
    image_placeholder: str = field(
        default=IMAGE_PLACEHOLDER,
        metadata={"help": "The token that marks image positions in the problem text."},
    )
    cache_dir: str | os.PathLike | None = field(
        default=None,
        metadata={"help": "datasets cache folder for converting local files and Hub downloads."},
    )

    def __post_init__(self) -> None:
        def normalise(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # frozen: set once, here

        if self.on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {self.on_error!r}.")
        validate = self.validate
        if not isinstance(validate, (bool, str)) or validate not in _VALIDATE:
            raise ValueError(
                f"validate must be True, False, 'header', 'full' or 'none', got {validate!r}."
            )
        normalise("validate", _VALIDATE[validate])
        if self.alpha not in ALPHA_MODES:
            raise ValueError(f"alpha must be one of {ALPHA_MODES}, got {self.alpha!r}.")
        if self.resize_rounding not in ROUNDING_MODES:
            raise ValueError(
                f"resize_rounding must be one of {ROUNDING_MODES}, got {self.resize_rounding!r}."
            )
        _check_limits(self.min_pixels, self.max_pixels)
        side = self.min_image_side
        if side is not None and not _positive_int(side):
            raise ValueError(f"min_image_side must be a positive integer or None, got {side!r}.")
        ratio = self.max_aspect_ratio
        if ratio is not None and (
            isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio >= 1
        ):
            raise ValueError(f"max_aspect_ratio must be a number >= 1 or None, got {ratio!r}.")

        for name in ("problem_column", "answer_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty column name, got {value!r}.")
        image_columns = self.image_column
        if image_columns is not None:
            image_columns = (
                (image_columns,) if isinstance(image_columns, str) else tuple(image_columns)
            )
            if not image_columns or not all(isinstance(c, str) and c for c in image_columns):
                raise ValueError(
                    f"image_column must be a column name, a list of names or None, got {self.image_column!r}."
                )
        normalise("image_column", image_columns)
        keep = self.keep_columns
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
        normalise("keep_columns", keep)

        system_prompt = self.system_prompt
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ValueError(
                f"system_prompt must be a string or None, got {type(system_prompt).__name__}."
            )
        placeholder = self.image_placeholder
        if not isinstance(placeholder, str) or not placeholder:
            raise ValueError(f"image_placeholder must be a non-empty string, got {placeholder!r}.")
        max_tokens = self.max_prompt_tokens
        if max_tokens is not None:
            if not _positive_int(max_tokens):
                raise ValueError(
                    f"max_prompt_tokens must be a positive integer or None, got {max_tokens!r}."
                )
            if self.tokenizer is None:
                raise ValueError(
                    "max_prompt_tokens needs a tokenizer (or processor) to count tokens; pass tokenizer=."
                )
            tokenizer = getattr(self.tokenizer, "tokenizer", None) or self.tokenizer
            if not callable(tokenizer):
                raise ValueError(
                    f"tokenizer must be a callable Hugging Face tokenizer, got {type(tokenizer).__name__}."
                )
            normalise("tokenizer", tokenizer)
        normalise("skip_long_prompts", bool(self.skip_long_prompts))
        normalise("unwrap_boxed_answer", bool(self.unwrap_boxed_answer))

        if self.image_dir is not None:
            image_dir = Path(os.path.expanduser(os.fspath(self.image_dir))).resolve()
            if not image_dir.is_dir():
                raise FileNotFoundError(f"image_dir {image_dir} is not an existing folder.")
            normalise("image_dir", image_dir)
        normalise("prompt_template", load_template(self.prompt_template))

        if self.max_samples is not None and not _positive_int(self.max_samples):
            raise ValueError(
                f"max_samples must be a positive integer or None, got {self.max_samples!r}."
            )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}.")
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"split must be a non-empty string, got {self.split!r}.")
