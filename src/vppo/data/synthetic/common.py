"""What every synthetic task family shares: the constants, the difficulty knobs, the
deterministic randomness, argument checks and the solution format.

Randomness comes from ``random.Random`` seeded with strings (stable across platforms) and only
through ``Random.random()``, whose stream Python guarantees; :func:`_below`, :func:`_choice` and
:func:`_sample` build everything else on it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SPLITS: tuple[str, ...] = ("train", "validation", "test")

CELL_SIZE = 28  # one Qwen2.5-VL merged visual token: 2×2 ViT patches of 14 px
CELL_MARGIN = 2  # empty pixels kept at every cell border, so objects never touch
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
INK: tuple[int, int, int] = (20, 20, 20)  # digit colour
# Well separated solid colours; the first `num_colours` of them are used.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "yellow": (235, 200, 40),
    "purple": (150, 60, 190),
    "orange": (245, 130, 30),
}
SHAPE_KINDS: tuple[str, ...] = ("square", "circle", "triangle")
SHAPE_SIZES: tuple[int, ...] = (12, 14, 16, 18)
DIGIT_SCALE = 4  # each font pixel becomes a 4×4 block: a 12×20 px glyph
# 3×5 bitmap font. Every glyph touches all four sides of its 3×5 box and is 4-connected, so a
# reader can find a digit's box and decode it by sampling the centre of each scaled font pixel.
GLYPHS: dict[int, tuple[str, ...]] = {
    0: ("###", "#.#", "#.#", "#.#", "###"),
    1: (".#.", "##.", ".#.", ".#.", "###"),
    2: ("###", "..#", "###", "#..", "###"),
    3: ("###", "..#", "###", "..#", "###"),
    4: ("#.#", "#.#", "###", "..#", "..#"),
    5: ("###", "#..", "###", "..#", "###"),
    6: ("###", "#..", "###", "#.#", "###"),
    7: ("###", "..#", "..#", "..#", "..#"),
    8: ("###", "#.#", "###", "#.#", "###"),
    9: ("###", "#.#", "###", "..#", "###"),
}


@dataclass(frozen=True)
class SyntheticDifficulty:
    """Knobs that set how hard the synthetic task is.

    Attributes:
        max_count: ``count`` answers range over 1..max_count; ``count_colour`` answers over
            0..min(max_count, cells - 1). At most the number of grid cells.
        max_digit: ``digit_sum`` draws digits 0..max_digit, so sums range over 0..2·max_digit.
        num_colours: how many colours of :data:`PALETTE` are used (``colour`` has this many answers).
        distractors: add objects the question is not about: ``colour`` asks about one kind of shape
            among several, ``position`` asks about one colour among several, ``digit_sum`` adds a
            shape next to the digits.
    """

    max_count: int = 4
    max_digit: int = 4
    num_colours: int = 4
    distractors: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_count, int) or not 2 <= self.max_count <= 9:
            raise ValueError(f"max_count must be an integer in [2, 9], got {self.max_count!r}.")
        if not isinstance(self.max_digit, int) or not 1 <= self.max_digit <= 9:
            raise ValueError(f"max_digit must be an integer in [1, 9], got {self.max_digit!r}.")
        if not isinstance(self.num_colours, int) or not 2 <= self.num_colours <= len(PALETTE):
            raise ValueError(
                f"num_colours must be an integer in [2, {len(PALETTE)}], got {self.num_colours!r}."
            )
        if not isinstance(self.distractors, bool):
            raise ValueError(f"distractors must be a bool, got {self.distractors!r}.")

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(PALETTE)[: self.num_colours]


DIFFICULTY_LEVELS: dict[str, SyntheticDifficulty] = {
    "easy": SyntheticDifficulty(max_count=3, max_digit=2, num_colours=3, distractors=False),
    "medium": SyntheticDifficulty(max_count=4, max_digit=4, num_colours=4, distractors=False),
    "hard": SyntheticDifficulty(max_count=4, max_digit=9, num_colours=6, distractors=True),
}


# --------------------------------------------------------------------------------------------
# Deterministic randomness: only Random.random() is used (its stream is stable across versions).
# --------------------------------------------------------------------------------------------


def _below(rng: random.Random, n: int) -> int:
    """A uniform integer in [0, n)."""
    return min(int(rng.random() * n), n - 1)


def _choice(rng: random.Random, items: Sequence[Any]) -> Any:
    return items[_below(rng, len(items))]


def _sample(rng: random.Random, items: Sequence[Any], k: int) -> list[Any]:
    """k distinct items in random order (a partial Fisher-Yates shuffle)."""
    pool = list(items)
    for i in range(k):
        j = i + _below(rng, len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


# --------------------------------------------------------------------------------------------
# Validation helpers (those about task types and families are in the registry)
# --------------------------------------------------------------------------------------------


def _resolve_difficulty(difficulty: str | SyntheticDifficulty) -> SyntheticDifficulty:
    if isinstance(difficulty, SyntheticDifficulty):
        return difficulty
    if isinstance(difficulty, str) and difficulty in DIFFICULTY_LEVELS:
        return DIFFICULTY_LEVELS[difficulty]
    raise ValueError(
        f"difficulty must be one of {sorted(DIFFICULTY_LEVELS)} or a SyntheticDifficulty, "
        f"got {difficulty!r}."
    )


def _grid_size(image_size: int) -> int:
    """Cells per side. image_size: a multiple of CELL_SIZE, at least 2 cells."""
    if (
        not isinstance(image_size, int)
        or isinstance(image_size, bool)
        or image_size < 2 * CELL_SIZE
        or image_size % CELL_SIZE
    ):
        raise ValueError(
            f"image_size must be a multiple of {CELL_SIZE} that is at least {2 * CELL_SIZE} "
            f"(one cell per merged visual token), got {image_size!r}."
        )
    return image_size // CELL_SIZE


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}.")


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")


# --------------------------------------------------------------------------------------------
# Solution text
# --------------------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _format_solution(reasoning: str, answer: str) -> str:
    return f"<think>{reasoning}</think> \\boxed{{{answer}}}"
