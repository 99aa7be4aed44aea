"""The synthetic visual reasoning task: the embedded default training data of vppo.

Every example is a small RGB picture (56×56 by default) of solid shapes or bitmap digits on a white
background, a question about it, and a short answer. The rows follow the ViRL39K schema that
`vppo train` reads (``images`` = list of PIL images, ``problem`` = text with one ``<image>``
placeholder, ``answer`` = str), plus ``task_type``, ``id`` and ``scene`` (a JSON description of
what is drawn, used by :func:`reference_solution`).

Design choices (see docs/synthetic_task.md for the reasoning):

- The picture is a grid of 28×28 cells, one object per cell at most. 28 px is one merged visual
  token of Qwen2.5-VL (2×2 patches of 14 px), so a tiny vision tower sees each object in one token.
- Pixels are drawn with our own numpy rasteriser and a 3×5 bitmap font defined here, without
  anti-aliasing, so the pixels are identical on every machine and Pillow version and every pixel
  has an exact palette colour.
- Answers cannot be read from the text: each question string is paired with answers that are
  balanced by construction, so the best text-only predictor is at chance.
- Splits cannot overlap: an example belongs to the split picked by a hash of its question and
  scene (which fixes the pixels); each split's generator redraws until the hash lands in it.
- Everything is deterministic: randomness comes from ``random.Random`` seeded with strings (stable
  across platforms) and only through ``Random.random()``, whose stream Python guarantees.

Two task families (:data:`TASK_FAMILIES`, the ``family=`` argument): ``"shapes"`` (the default,
:data:`TASK_TYPES`) has short template solutions; ``"reasoning"`` (:data:`REASONING_TASK_TYPES`:
add a count to a digit, double a count) has ~60-80-token solutions in which a few grounded tokens
(the counts and digit read off the picture) sit among many freely phrased, high-entropy but
answer-irrelevant words and an arithmetic line, so VPPO's token filtering has something to act on.
It shares the rasteriser, scenes and split hashing, with its own stream version.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "CELL_SIZE",
    "DIFFICULTY_LEVELS",
    "GLYPHS",
    "PALETTE",
    "REASONING_TASK_TYPES",
    "REASONING_VOCAB_TEXTS",
    "SHAPE_KINDS",
    "SPLITS",
    "SYNTHETIC_VOCAB_TEXTS",
    "TASK_FAMILIES",
    "TASK_TYPES",
    "SyntheticDifficulty",
    "answer_space",
    "chance_accuracy",
    "generate_example",
    "make_synthetic_dataset",
    "reference_solution",
    "render_scene",
    "save_synthetic_dataset",
    "task_family",
    "text_only_baseline_accuracy",
]

TASK_TYPES: tuple[str, ...] = ("count", "colour", "position", "digit_sum", "count_colour")
"""Task types of the ``shapes`` family (the default): short, template answers."""
REASONING_TASK_TYPES: tuple[str, ...] = ("add_count_digit", "double_count", "add_colour_digit")
"""Task types of the ``reasoning`` family: a few grounded facts, a sum, long free-phrased text."""
TASK_FAMILIES: tuple[str, ...] = ("shapes", "reasoning")
_FAMILY_TASK_TYPES: dict[str, tuple[str, ...]] = {
    "shapes": TASK_TYPES,
    "reasoning": REASONING_TASK_TYPES,
}
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
_RGB: dict[str, np.ndarray] = {
    name: np.array(rgb, dtype=np.uint8)
    for name, rgb in {**PALETTE, "background": BACKGROUND, "ink": INK}.items()
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

# Hash buckets out of 100 that belong to each split (train 80 %, validation 10 %, test 10 %).
_SPLIT_BUCKETS: dict[str, range] = {
    "train": range(0, 80),
    "validation": range(80, 90),
    "test": range(90, 100),
}
_MAX_SPLIT_ATTEMPTS = 10_000
_REJITTERS_PER_SCENE = 32
_STREAM_VERSION = "vppo-synthetic/v1"
_REASONING_STREAM_VERSION = "vppo-synthetic-reasoning/v1"  # its own hashes, seeds and splits


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
# Validation helpers
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


def _check_task_type(task_type: str) -> None:
    if task_type not in TASK_TYPES and task_type not in REASONING_TASK_TYPES:
        raise ValueError(
            f"task_type must be one of {list(TASK_TYPES) + list(REASONING_TASK_TYPES)}, "
            f"got {task_type!r}."
        )


def _check_family(family: str) -> None:
    if family not in TASK_FAMILIES:
        raise ValueError(f"family must be one of {list(TASK_FAMILIES)}, got {family!r}.")


def task_family(task_type: str) -> str:
    """The family (``"shapes"`` or ``"reasoning"``) a task type belongs to."""
    _check_task_type(task_type)
    return "reasoning" if task_type in REASONING_TASK_TYPES else "shapes"


def _check_task_types(task_types: Sequence[str] | None, family: str = "shapes") -> tuple[str, ...]:
    _check_family(family)
    allowed = _FAMILY_TASK_TYPES[family]
    if task_types is None:
        return allowed
    if isinstance(task_types, str):
        raise ValueError(f"task_types must be a sequence of names, got the string {task_types!r}.")
    types = tuple(task_types)
    if not types:
        raise ValueError("task_types must name at least one task type, got an empty sequence.")
    for task_type in types:
        _check_task_type(task_type)
        if task_type not in allowed:
            raise ValueError(
                f"task_types of family {family!r} must be among {list(allowed)}, "
                f"got {task_type!r}."
            )
    if len(set(types)) != len(types):
        raise ValueError(f"task_types must not repeat a task type, got {list(types)}.")
    return types


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}.")


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")


# --------------------------------------------------------------------------------------------
# Answer spaces and questions
# --------------------------------------------------------------------------------------------


def answer_space(
    task_type: str, image_size: int = 56, difficulty: str | SyntheticDifficulty = "medium"
) -> tuple[str, ...]:
    """All answers a task can have at this image size and difficulty (each equally likely).

    Returns:
        the answers as strings, e.g. ``("1", "2", "3", "4")`` for ``count`` at medium difficulty.
    """
    _check_task_type(task_type)
    cells = _grid_size(image_size) ** 2
    level = _resolve_difficulty(difficulty)
    if level.max_count > cells:
        raise ValueError(
            f"max_count={level.max_count} does not fit in the {cells} cells of a "
            f"{image_size}px image; lower max_count or raise image_size."
        )
    if task_type in REASONING_TASK_TYPES:
        return _reasoning_answer_space(task_type, cells, level)
    if task_type == "count":
        return tuple(str(n) for n in range(1, level.max_count + 1))
    if task_type == "colour":
        return level.colours
    if task_type == "position":
        return ("left", "right")
    if task_type == "digit_sum":
        return tuple(str(s) for s in range(2 * level.max_digit + 1))
    return tuple(str(n) for n in range(min(level.max_count, cells - 1) + 1))  # count_colour


def _question(scene: Mapping[str, Any], task_type: str) -> str:
    if task_type in REASONING_TASK_TYPES:
        return _reasoning_question(scene, task_type)
    if task_type == "count":
        return "How many shapes are in the image?"
    if task_type == "colour":
        kind = scene.get("target_kind")
        return f"What colour is the {kind}?" if kind else "What colour is the shape?"
    if task_type == "position":
        colour = scene.get("target_colour")
        if colour:
            return f"Is the {colour} shape on the left or the right?"
        return "Is the shape on the left or the right?"
    if task_type == "digit_sum":
        return "What is the sum of the two digits?"
    return f"How many {scene['target_colour']} shapes are in the image?"  # count_colour


# --------------------------------------------------------------------------------------------
# Scenes: what is drawn where
# --------------------------------------------------------------------------------------------


def _offset(rng: random.Random, extent: int) -> int:
    """A random offset inside a cell for an object ``extent`` px long, keeping the margins."""
    return CELL_MARGIN + _below(rng, CELL_SIZE - extent - 2 * CELL_MARGIN + 1)


def _shape(rng: random.Random, kind: str, colour: str, cell: tuple[int, int]) -> dict[str, Any]:
    size = _choice(rng, SHAPE_SIZES)
    return {
        "kind": kind,
        "colour": colour,
        "row": cell[0],
        "col": cell[1],
        "size": size,
        "dx": _offset(rng, size),
        "dy": _offset(rng, size),
    }


def _digit(rng: random.Random, value: int, cell: tuple[int, int]) -> dict[str, Any]:
    return {
        "value": value,
        "row": cell[0],
        "col": cell[1],
        "dx": _offset(rng, 3 * DIGIT_SCALE),
        "dy": _offset(rng, 5 * DIGIT_SCALE),
    }


def _sample_scene(
    rng: random.Random, task_type: str, grid: int, level: SyntheticDifficulty, answer: str
) -> dict[str, Any]:
    """Draw a scene whose true answer to ``task_type`` is ``answer``.

    Returns:
        ``{"grid", "shapes": [...], "digits": [...], "target_colour", "target_kind"}``; objects are
        sorted in reading order (row, then column).
    """
    if task_type in REASONING_TASK_TYPES:
        return _sample_reasoning_scene(rng, task_type, grid, level, answer)
    cells = [(r, c) for r in range(grid) for c in range(grid)]
    colours = level.colours
    shapes: list[dict[str, Any]] = []
    digits: list[dict[str, Any]] = []
    target_colour: str | None = None
    target_kind: str | None = None

    if task_type == "count":
        for cell in _sample(rng, cells, int(answer)):
            shapes.append(_shape(rng, _choice(rng, SHAPE_KINDS), _choice(rng, colours), cell))
    elif task_type == "colour":
        kind = _choice(rng, SHAPE_KINDS)
        if not level.distractors:
            shapes.append(_shape(rng, kind, answer, _choice(rng, cells)))
        else:
            target_kind = kind
            n_distractors = 1 + _below(rng, min(2, grid * grid - 1))
            placed = _sample(rng, cells, 1 + n_distractors)
            shapes.append(_shape(rng, kind, answer, placed[0]))
            other_kinds = [k for k in SHAPE_KINDS if k != kind]
            other_colours = [c for c in colours if c != answer]
            for cell in placed[1:]:
                shapes.append(
                    _shape(rng, _choice(rng, other_kinds), _choice(rng, other_colours), cell)
                )
    elif task_type == "position":
        # Column c's centre is at (c + 0.5) cells; an odd grid's middle column is on neither side.
        if answer == "left":
            side_cols = [c for c in range(grid) if 2 * c + 1 < grid]
        else:
            side_cols = [c for c in range(grid) if 2 * c + 1 > grid]
        target_cell = (_below(rng, grid), _choice(rng, side_cols))
        colour = _choice(rng, colours)
        shapes.append(_shape(rng, _choice(rng, SHAPE_KINDS), colour, target_cell))
        if level.distractors:
            target_colour = colour
            cell = _choice(rng, [c for c in cells if c != target_cell])
            other = _choice(rng, [c for c in colours if c != colour])
            shapes.append(_shape(rng, _choice(rng, SHAPE_KINDS), other, cell))
    elif task_type == "digit_sum":
        total = int(answer)
        pairs = [
            (a, total - a) for a in range(level.max_digit + 1) if 0 <= total - a <= level.max_digit
        ]
        values = _choice(rng, pairs)
        placed = sorted(_sample(rng, cells, 2))
        digits = [_digit(rng, v, cell) for v, cell in zip(values, placed, strict=True)]
        if level.distractors and grid * grid > 2:
            cell = _choice(rng, [c for c in cells if c not in placed])
            shapes.append(_shape(rng, _choice(rng, SHAPE_KINDS), _choice(rng, colours), cell))
    else:  # count_colour
        target_colour = _choice(rng, colours)
        n_target = int(answer)
        n_other = 1 + _below(rng, len(cells) - n_target)
        placed = _sample(rng, cells, n_target + n_other)
        others = [c for c in colours if c != target_colour]
        for i, cell in enumerate(placed):
            colour = target_colour if i < n_target else _choice(rng, others)
            shapes.append(_shape(rng, _choice(rng, SHAPE_KINDS), colour, cell))

    shapes.sort(key=lambda s: (s["row"], s["col"]))
    digits.sort(key=lambda d: (d["row"], d["col"]))
    return {
        "grid": grid,
        "shapes": shapes,
        "digits": digits,
        "target_colour": target_colour,
        "target_kind": target_kind,
    }


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@cache
def _shape_mask(kind: str, size: int) -> np.ndarray:
    """Boolean [size, size] mask of a solid shape, without anti-aliasing."""
    ys, xs = np.mgrid[0:size, 0:size]
    centre_x = xs + 0.5 - size / 2  # pixel-centre offsets from the box centre
    centre_y = ys + 0.5 - size / 2
    if kind == "square":
        mask = np.ones((size, size), dtype=bool)
    elif kind == "circle":
        mask = centre_x**2 + centre_y**2 <= (size / 2) ** 2
    elif kind == "triangle":  # apex up; the half-width grows by half a pixel per row
        mask = np.abs(centre_x) <= (ys + 1) / 2
    else:
        raise ValueError(f"shape kind must be one of {list(SHAPE_KINDS)}, got {kind!r}.")
    mask.setflags(write=False)
    return mask


@cache
def _digit_mask(value: int) -> np.ndarray:
    """Boolean [5·DIGIT_SCALE, 3·DIGIT_SCALE] mask of a bitmap digit."""
    if value not in GLYPHS:
        raise ValueError(f"digit value must be in 0..9, got {value!r}.")
    glyph = np.array([[ch == "#" for ch in row] for row in GLYPHS[value]], dtype=bool)
    mask = np.kron(glyph, np.ones((DIGIT_SCALE, DIGIT_SCALE), dtype=bool))
    mask.setflags(write=False)
    return mask


def render_scene(scene: Mapping[str, Any]) -> np.ndarray:
    """Draw a scene.

    Returns:
        uint8 array [H, W, 3] with H = W = grid·CELL_SIZE; every pixel is the background, the
        digit ink or a palette colour.
    """
    size = scene["grid"] * CELL_SIZE
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[...] = _RGB["background"]  # numpy arrays, not tuples: ~10x faster to broadcast
    for shape in scene["shapes"]:
        mask = _shape_mask(shape["kind"], shape["size"])
        y0 = shape["row"] * CELL_SIZE + shape["dy"]
        x0 = shape["col"] * CELL_SIZE + shape["dx"]
        pixels[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask] = _RGB[shape["colour"]]
    for digit in scene["digits"]:
        mask = _digit_mask(digit["value"])
        y0 = digit["row"] * CELL_SIZE + digit["dy"]
        x0 = digit["col"] * CELL_SIZE + digit["dx"]
        pixels[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask] = _RGB["ink"]
    return pixels


def _scene_key(problem: str, scene: Mapping[str, Any]) -> str:
    """A canonical text key of an (image, question) pair.

    It stands in for the pixels: objects sit in distinct cells without overlap and every
    (kind, size) and digit has its own mask, so two scenes draw the same picture only if their
    keys agree (the tests check split disjointness on the pixels themselves).
    """
    parts = [problem, str(scene["grid"])]
    parts += [
        f"s{o['row']},{o['col']},{o['kind']},{o['colour']},{o['size']},{o['dx']},{o['dy']}"
        for o in scene["shapes"]
    ]
    parts += [f"d{o['row']},{o['col']},{o['value']},{o['dx']},{o['dy']}" for o in scene["digits"]]
    return "|".join(parts)


def _split_of(key: str) -> str:
    """The split a scene key belongs to: a hash bucket out of 100."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return next(name for name, buckets in _SPLIT_BUCKETS.items() if bucket in buckets)


def _rejitter(rng: random.Random, scene: dict[str, Any]) -> None:
    """Redraw every object's offset inside its cell (in place); everything else stays."""
    for shape in scene["shapes"]:
        shape["dx"] = _offset(rng, shape["size"])
        shape["dy"] = _offset(rng, shape["size"])
    for digit in scene["digits"]:
        digit["dx"] = _offset(rng, 3 * DIGIT_SCALE)
        digit["dy"] = _offset(rng, 5 * DIGIT_SCALE)


# --------------------------------------------------------------------------------------------
# Examples and datasets
# --------------------------------------------------------------------------------------------


def generate_example(
    rng: random.Random,
    task_type: str,
    image_size: int = 56,
    *,
    difficulty: str | SyntheticDifficulty = "medium",
    answer: str | int | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Draw one example.

    Args:
        rng: the source of randomness (consumed).
        task_type: one of :data:`TASK_TYPES`.
        image_size: side of the square image in pixels, a multiple of 28 (≥ 56).
        difficulty: a name in :data:`DIFFICULTY_LEVELS` or a :class:`SyntheticDifficulty`.
        answer: the answer to draw a scene for (an int is read as its decimal string); ``None``
            draws it uniformly from :func:`answer_space`.
        split: if given, redraw the scene until the example hashes into this split.

    Returns:
        ``{"images": [PIL RGB image], "problem": "<image>question", "answer": str,
        "task_type": str, "scene": JSON str}``.
    """
    if not isinstance(rng, random.Random):
        raise ValueError(f"rng must be a random.Random instance, got {type(rng).__name__}.")
    _check_task_type(task_type)
    grid = _grid_size(image_size)
    level = _resolve_difficulty(difficulty)
    space = answer_space(task_type, image_size, level)
    if answer is None:
        answer = _choice(rng, space)
    elif isinstance(answer, int) and not isinstance(answer, bool):
        answer = str(answer)
    if answer not in space:
        raise ValueError(
            f"answer {answer!r} is not a possible answer of task {task_type!r} here; "
            f"choose one of {list(space)}."
        )
    if split is not None:
        _check_split(split)
    scene, problem, scene_json = _draw_scene(rng, task_type, grid, level, answer, split)
    return {
        "images": [Image.fromarray(render_scene(scene))],
        "problem": problem,
        "answer": answer,
        "task_type": task_type,
        "scene": scene_json,
    }


def _draw_scene(
    rng: random.Random,
    task_type: str,
    grid: int,
    level: SyntheticDifficulty,
    answer: str,
    split: str | None,
) -> tuple[dict[str, Any], str, str]:
    """(scene, problem, canonical scene JSON) with the given answer, in ``split`` if given."""
    # Redrawing only the offsets is cheap; after a few misses (a scene with few offsets, e.g. one
    # large shape) the whole scene is redrawn.
    for attempt in range(_MAX_SPLIT_ATTEMPTS):
        if attempt % _REJITTERS_PER_SCENE == 0:
            scene = _sample_scene(rng, task_type, grid, level, answer)
            problem = "<image>" + _question(scene, task_type)
        else:
            _rejitter(rng, scene)
        if split is None or _split_of(_scene_key(problem, scene)) == split:
            return scene, problem, json.dumps(scene, sort_keys=True, separators=(",", ":"))
    raise ValueError(
        f"task {task_type!r} with answer {answer!r} has too few distinct scenes to fill "
        f"split {split!r}; use a larger image_size or an easier difficulty."
    )


def _stream_key(
    split: str, seed: int, image_size: int, level: SyntheticDifficulty, family: str = "shapes"
) -> str:
    knobs = ",".join(f"{k}={v}" for k, v in sorted(asdict(level).items()))
    version = _STREAM_VERSION if family == "shapes" else _REASONING_STREAM_VERSION
    return f"{version}/{split}/{seed}/{image_size}/{knobs}"


def _iter_examples(
    n: int,
    split: str,
    seed: int,
    task_types: tuple[str, ...],
    image_size: int,
    level: SyntheticDifficulty,
    family: str = "shapes",
) -> Iterable[dict[str, Any]]:
    """Example i has task ``task_types[i % k]``; within a task, answers come in shuffled blocks
    that hold every answer once, so each question type's answers are balanced exactly."""
    base = _stream_key(split, seed, image_size, level, family)
    prefix = "synthetic" if family == "shapes" else "reasoning"
    grid = _grid_size(image_size)
    spaces = {t: answer_space(t, image_size, level) for t in task_types}
    block_orders: dict[tuple[str, int], list[str]] = {}
    for i in range(n):
        task_type = task_types[i % len(task_types)]
        space = spaces[task_type]
        block, position = divmod(i // len(task_types), len(space))
        if (task_type, block) not in block_orders:
            block_rng = random.Random(f"{base}/answers/{task_type}/{block}")
            block_orders[(task_type, block)] = _sample(block_rng, space, len(space))
        answer = block_orders[(task_type, block)][position]
        rng = random.Random(f"{base}/example/{i}")
        scene, problem, scene_json = _draw_scene(rng, task_type, grid, level, answer, split)
        yield {
            "images": [{"bytes": _png_bytes(render_scene(scene)), "path": None}],
            "problem": problem,
            "answer": answer,
            "task_type": task_type,
            "id": f"{prefix}-{split}-{seed}-{i:06d}",
            "scene": scene_json,
        }


def _png_bytes(pixels: np.ndarray) -> bytes:
    """Encode uint8 [H, W, 3] pixels as an 8-bit RGB PNG.

    A direct writer (no row filters, zlib level 6): much faster than going through PIL for these
    tiny images, and the bytes depend only on the pixels and zlib.
    """
    height, width, _ = pixels.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # filter byte 0 (None) per row
    rows[:, 1:] = pixels.reshape(height, 3 * width)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, truecolour RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def _features():
    import datasets

    return datasets.Features(
        {
            "images": datasets.List(datasets.Image()),
            "problem": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "task_type": datasets.Value("string"),
            "id": datasets.Value("string"),
            "scene": datasets.Value("string"),
        }
    )


def make_synthetic_dataset(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    task_types: Sequence[str] | None = None,
    image_size: int = 56,
    difficulty: str | SyntheticDifficulty = "medium",
    family: str = "shapes",
):
    """Build ``n`` examples of the synthetic task as a Hugging Face dataset.

    Example ``i`` depends only on (family, split, seed, image_size, difficulty, task_types, i), so
    a dataset of n rows is a prefix of one of n + 1 rows. Task types cycle in the given order;
    every task's answers are balanced exactly over each run of |answer space| examples of it.
    ``family`` picks the task family (:data:`TASK_FAMILIES`): ``"shapes"`` (the default,
    :data:`TASK_TYPES`) or ``"reasoning"`` (:data:`REASONING_TASK_TYPES`, ids
    ``reasoning-<split>-<seed>-<index>``); ``task_types`` must belong to it.

    Returns:
        ``datasets.Dataset`` with columns ``images`` (list of one PIL image), ``problem``,
        ``answer``, ``task_type``, ``id``, ``scene``.
    """
    import datasets

    _check_count("n", n)
    _check_split(split)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    types = _check_task_types(task_types, family)
    level = _resolve_difficulty(difficulty)
    _grid_size(image_size)
    for task_type in types:
        answer_space(task_type, image_size, level)  # validates max_count against the grid
    columns: dict[str, list[Any]] = {name: [] for name in _features()}
    for example in _iter_examples(n, split, seed, types, image_size, level, family):
        for name, values in columns.items():
            values.append(example[name])
    return datasets.Dataset.from_dict(columns, features=_features())


def save_synthetic_dataset(
    path: str | Path,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int = 0,
    *,
    task_types: Sequence[str] | None = None,
    image_size: int = 56,
    difficulty: str | SyntheticDifficulty = "medium",
    family: str = "shapes",
) -> dict[str, Path]:
    """Write ``train.parquet``, ``validation.parquet`` and ``test.parquet`` under ``path``.

    Images are stored as ``list<struct{bytes: PNG, path: null}>``, the layout of Hub image
    datasets, so ``datasets.load_dataset("parquet", data_dir=path)`` or any parquet loader reads
    them. A split with zero rows is not written.

    Returns:
        split name -> written file.
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check_count(name, value)
    _check_task_types(task_types, family)
    out_dir = Path(path)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"path {str(out_dir)!r} exists and is not a directory.")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for split, n in zip(SPLITS, (n_train, n_val, n_test), strict=True):
        if n == 0:
            continue
        dataset = make_synthetic_dataset(
            n,
            split=split,
            seed=seed,
            task_types=task_types,
            image_size=image_size,
            difficulty=difficulty,
            family=family,
        )
        file = out_dir / f"{split}.parquet"
        dataset.to_parquet(str(file))
        written[split] = file
    return written


# --------------------------------------------------------------------------------------------
# Reference solutions (supervised warm start)
# --------------------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _solution_body(scene: Mapping[str, Any], task_type: str) -> tuple[str, str]:
    """(reasoning, answer) read off a scene."""
    shapes = scene["shapes"]
    if task_type == "count":
        n = len(shapes)
        verb = "is" if n == 1 else "are"
        counted = ", ".join(str(i) for i in range(1, n + 1))
        return (
            f"I look at the image and count the shapes one by one: {counted}. "
            f"There {verb} {_plural(n, 'shape')}.",
            str(n),
        )
    if task_type == "colour":
        kind = scene.get("target_kind")
        target = next(s for s in shapes if s["kind"] == kind) if kind else shapes[0]
        colour = target["colour"]
        return (
            f"I look at the image and find the {kind or 'shape'}. "
            f"It is a {colour} {target['kind']}, so its colour is {colour}.",
            colour,
        )
    if task_type == "position":
        wanted = scene.get("target_colour")
        target = next(s for s in shapes if s["colour"] == wanted) if wanted else shapes[0]
        side = "left" if 2 * target["col"] + 1 < scene["grid"] else "right"
        name = f"{wanted} shape" if wanted else "shape"
        return (
            f"I look at the image and find the {name}. "
            f"It is a {target['colour']} {target['kind']} on the {side} side of the image.",
            side,
        )
    if task_type == "digit_sum":
        a, b = (d["value"] for d in scene["digits"])
        return (
            f"I look at the image and read the two digits. "
            f"They are {a} and {b}, and {a} + {b} = {a + b}.",
            str(a + b),
        )
    colour = scene["target_colour"]  # count_colour
    n_target = sum(s["colour"] == colour for s in shapes)
    n_other = len(shapes) - n_target
    return (
        f"I look at the image and count the {colour} shapes. "
        f"I see {n_target} {colour} and {_plural(n_other, 'other shape')}, "
        f"so the answer is {n_target}.",
        str(n_target),
    )


def _format_solution(reasoning: str, answer: str) -> str:
    return f"<think>{reasoning}</think> \\boxed{{{answer}}}"


def reference_solution(example: Mapping[str, Any], *, rng: random.Random | None = None) -> str:
    """The target response of a row for the supervised warm start (both task families).

    ``shapes`` rows get a short, template-heavy solution: the few facts read off the picture
    (counts, colours, sides, digits) are the image-grounded tokens; the rest is fixed template
    text, as in real chain-of-thought. ``reasoning`` rows get a long one (about 60 tokens) whose
    free-phrased sentences are drawn at random (see :func:`_reasoning_solution`).

    Args:
        example: a row with ``task_type``, ``answer`` and ``scene`` (JSON str or dict).
        rng: only for ``reasoning`` rows: the source of the phrasing. ``None`` seeds it from the
            row's question and scene, so a row always gets the same solution.

    Returns:
        e.g. ``"<think>I look at the image and read the two digits. They are 3 and 4, and
        3 + 4 = 7.</think> \\boxed{7}"``; its last ``\\boxed{}`` holds ``example["answer"]``.
    """
    for field in ("task_type", "answer", "scene"):
        if field not in example:
            raise ValueError(f"example has no {field!r} field; reference_solution needs it.")
    task_type = example["task_type"]
    _check_task_type(task_type)
    scene = example["scene"]
    if isinstance(scene, str):
        try:
            scene = json.loads(scene)
        except json.JSONDecodeError as err:
            raise ValueError(f"example field 'scene' is not valid JSON: {err}.") from err
    if rng is not None and not isinstance(rng, random.Random):
        raise ValueError(f"rng must be a random.Random instance or None, got {type(rng).__name__}.")
    try:
        if task_type in REASONING_TASK_TYPES:
            if rng is None:
                key = json.dumps(scene, sort_keys=True, separators=(",", ":"))
                rng = random.Random(f"{_REASONING_STREAM_VERSION}/phrasing/{task_type}/{key}")
            reasoning, answer = _reasoning_body(scene, task_type, rng)
        else:
            reasoning, answer = _solution_body(scene, task_type)
    except (KeyError, TypeError, ValueError, StopIteration) as err:
        raise ValueError(
            f"example field 'scene' does not describe a {task_type!r} scene ({err!r})."
        ) from err
    if answer != str(example["answer"]):
        raise ValueError(
            f"example field 'answer' is {example['answer']!r} but its scene shows {answer!r}."
        )
    return _format_solution(reasoning, answer)


# --------------------------------------------------------------------------------------------
# The "reasoning" family: few grounded tokens inside long, freely phrased reasoning
# --------------------------------------------------------------------------------------------

# Each free sentence is a sequence of slots; every slot's option is drawn independently, so a
# sentence has hundreds of equivalent phrasings and a model trained on them stays uncertain (high
# entropy) on these tokens, which say nothing about the picture or the answer.
_Slots = tuple[tuple[str, ...], ...]
_OPENING: _Slots = (
    ("Let me", "I will", "First I", "Now I"),
    ("look at", "study", "examine", "inspect"),
    ("the",),
    ("picture", "image", "figure", "scene"),
    ("carefully.", "closely.", "slowly.", "once."),
)
_READ_VERBS: tuple[str, ...] = ("I see", "I count", "I find", "I notice")
_ASIDE: _Slots = (
    ("Nothing else", "No other detail", "The rest", "Everything else"),
    ("seems", "looks", "appears"),
    ("important", "relevant", "useful", "interesting"),
    ("here.", "now.", "to me.", "for this."),
)
_PLAN_ADD: _Slots = (
    ("So", "Then", "Next", "Now"),
    ("I",),
    ("add", "sum", "combine", "put together"),
    ("the two", "both"),
    ("numbers.", "values.", "counts.", "results."),
)
_PLAN_DOUBLE: _Slots = (
    ("So", "Then", "Next", "Now"),
    ("I",),
    ("double", "take twice"),
    ("the",),
    ("count.", "number.", "total.", "value."),
)
_CHECK: _Slots = (
    ("Let me", "I will", "I quickly", "I now"),
    ("check", "verify", "confirm", "review"),
    ("this", "it", "the math", "the work"),
    ("again:", "once more:", "twice:", "briefly:"),
    ("it", "everything", "all"),
    ("is", "looks", "seems"),
    ("right.", "fine.", "correct.", "good."),
)
_CLOSING: _Slots = (
    ("So", "Thus", "Therefore", "Hence"),
    ("the",),
    ("answer", "result", "final answer", "final result"),
    ("is",),
)
_REASONING_SLOTS: tuple[_Slots, ...] = (_OPENING, _ASIDE, _PLAN_ADD, _PLAN_DOUBLE, _CHECK, _CLOSING)


def _phrase(rng: random.Random, slots: _Slots) -> str:
    return " ".join(_choice(rng, options) for options in slots)


def _reasoning_answer_space(
    task_type: str, cells: int, level: SyntheticDifficulty
) -> tuple[str, ...]:
    if task_type == "add_count_digit":  # digit 0..max_digit plus 1..min(max_count, cells - 1) shapes
        top = level.max_digit + min(level.max_count, cells - 1)
        return tuple(str(a) for a in range(1, top + 1))
    if task_type == "double_count":
        return tuple(str(2 * n) for n in range(1, min(level.max_count, cells) + 1))
    # add_colour_digit: digit plus 0..min(max_count, cells - 2) target shapes (one other shape)
    top = level.max_digit + min(level.max_count, cells - 2)
    return tuple(str(a) for a in range(top + 1))


def _reasoning_question(scene: Mapping[str, Any], task_type: str) -> str:
    if task_type == "add_count_digit":
        return "Add the number of shapes to the digit. What is the result?"
    if task_type == "double_count":
        return "Count the shapes and double the number. What is the result?"
    colour = scene["target_colour"]  # add_colour_digit
    return f"Add the number of {colour} shapes to the digit. What is the result?"


def _sample_reasoning_scene(
    rng: random.Random, task_type: str, grid: int, level: SyntheticDifficulty, answer: str
) -> dict[str, Any]:
    """Draw a reasoning-family scene whose answer is ``answer`` (same layout as the shapes').

    For the sums the answer is drawn first and the (digit, count) pair second, uniformly among
    the pairs that give it, so no sum is easier to guess than another.
    """
    cells = [(r, c) for r in range(grid) for c in range(grid)]
    colours = level.colours
    shapes: list[dict[str, Any]] = []
    digits: list[dict[str, Any]] = []
    target_colour: str | None = None
    total = int(answer)
    if task_type == "double_count":
        for cell in _sample(rng, cells, total // 2):
            shapes.append(_shape(rng, _choice(rng, SHAPE_KINDS), _choice(rng, colours), cell))
    else:
        low, top = (1, len(cells) - 1) if task_type == "add_count_digit" else (0, len(cells) - 2)
        top = min(level.max_count, top)
        pairs = [(total - n, n) for n in range(low, top + 1) if 0 <= total - n <= level.max_digit]
        value, n_target = _choice(rng, pairs)
        n_other = 0
        if task_type == "add_colour_digit":
            target_colour = _choice(rng, colours)
            n_other = 1 + _below(rng, len(cells) - 1 - n_target)
        placed = _sample(rng, cells, 1 + n_target + n_other)
        digits.append(_digit(rng, value, placed[0]))
        others = [c for c in colours if c != target_colour]
        for i, cell in enumerate(placed[1:]):
            if target_colour is None:
                colour = _choice(rng, colours)
            else:
                colour = target_colour if i < n_target else _choice(rng, others)
            shapes.append(_shape(rng, _choice(rng, SHAPE_KINDS), colour, cell))
    shapes.sort(key=lambda s: (s["row"], s["col"]))
    return {
        "grid": grid,
        "shapes": shapes,
        "digits": digits,
        "target_colour": target_colour,
        "target_kind": None,
    }


def _reasoning_body(
    scene: Mapping[str, Any], task_type: str, rng: random.Random
) -> tuple[str, str]:
    """(reasoning, answer) of a reasoning-family scene, free sentences phrased with ``rng``.

    Four steps: look (free), read the facts (grounded: counts and the digit), a free aside and a
    plan, the arithmetic line (answer-relevant, fixed wording), a free check, the conclusion.
    """
    shapes = scene["shapes"]
    verb = _choice(rng, _READ_VERBS)
    if task_type == "double_count":
        n = len(shapes)
        answer = 2 * n
        facts = f"{verb} {_plural(n, 'shape')} in total."
        plan, arithmetic = _PLAN_DOUBLE, f"{n} times 2 is {answer}."
    else:
        (digit,) = scene["digits"]
        d = digit["value"]
        if task_type == "add_count_digit":
            n = len(shapes)
            facts = f"{verb} {_plural(n, 'shape')} and the digit {d}."
        else:  # add_colour_digit
            colour = scene["target_colour"]
            n = sum(s["colour"] == colour for s in shapes)
            others = _plural(len(shapes) - n, "other shape")
            facts = f"{verb} {_plural(n, colour + ' shape')}, {others} and the digit {d}."
        answer = d + n
        plan, arithmetic = _PLAN_ADD, f"{d} plus {n} is {answer}."
    sentences = [
        _phrase(rng, _OPENING),
        facts,
        _phrase(rng, _ASIDE),
        _phrase(rng, plan),
        arithmetic,
        _phrase(rng, _CHECK),
        f"{_phrase(rng, _CLOSING)} {answer}.",
    ]
    return " ".join(sentences), str(answer)


# --------------------------------------------------------------------------------------------
# Text-only baselines
# --------------------------------------------------------------------------------------------


def _column(dataset: Any, name: str) -> list[Any]:
    """One column as a list, from a datasets.Dataset or a sequence of row mappings."""
    if hasattr(dataset, "column_names"):
        if name not in dataset.column_names:
            raise ValueError(f"dataset has no {name!r} column.")
        if hasattr(dataset, "with_format"):  # a datasets.Dataset: read Arrow, skip the images
            return dataset.with_format("arrow")[name].to_pylist()
        return list(dataset[name])
    rows = list(dataset)
    for i, row in enumerate(rows):
        if name not in row:
            raise ValueError(f"dataset row {i} has no {name!r} field.")
    return [row[name] for row in rows]


def _majority_predictor(problems: list[str], answers: list[str], task_types: list[str]):
    """Fit the best answer-prior predictor: the most common answer per question string (ties go
    to the smallest answer), falling back to the task type's, then the overall, majority."""

    def majority(counter: Counter) -> str:
        return min(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0]

    by_question: dict[str, Counter] = defaultdict(Counter)
    by_task: dict[str, Counter] = defaultdict(Counter)
    for problem, answer, task_type in zip(problems, answers, task_types, strict=True):
        by_question[problem][answer] += 1
        by_task[task_type][answer] += 1
    overall = majority(Counter(answers))
    question_majority = {q: majority(c) for q, c in by_question.items()}
    task_majority = {t: majority(c) for t, c in by_task.items()}

    def predict(problem: str, task_type: str) -> str:
        if problem in question_majority:
            return question_majority[problem]
        return task_majority.get(task_type, overall)

    return predict


def _prior_accuracy(train: Any, test: Any) -> float:
    train_cols = [_column(train, c) for c in ("problem", "answer", "task_type")]
    if not train_cols[0]:
        raise ValueError("the training dataset for the text-only baseline has no rows.")
    predict = _majority_predictor(*train_cols)
    problems, answers, task_types = (_column(test, c) for c in ("problem", "answer", "task_type"))
    if not problems:
        raise ValueError("the evaluation dataset for the text-only baseline has no rows.")
    hits = sum(
        predict(p, t) == str(a) for p, a, t in zip(problems, answers, task_types, strict=True)
    )
    return hits / len(problems)


def text_only_baseline_accuracy(dataset: Any, test: Any | None = None) -> float:
    """Accuracy of the best answer-prior (text-only) predictor.

    The predictor answers each question string with its most common answer in the fitting data.

    Args:
        dataset: the fitting data: a ``datasets.Dataset`` (or list of row dicts) with ``problem``,
            ``answer`` and ``task_type``; or a mapping with ``"train"`` and ``"test"`` entries.
        test: the evaluation data. If omitted (and ``dataset`` is not a mapping), the score is a
            two-fold cross-fit on ``dataset``: fit on even rows, score odd rows, and vice versa.

    Returns:
        accuracy in [0, 1]; it should match :func:`chance_accuracy` for a leak-free task.
    """
    if isinstance(dataset, Mapping) and test is None:
        for key in ("train", "test"):
            if key not in dataset:
                raise ValueError(f"dataset mapping has no {key!r} split.")
        return _prior_accuracy(dataset["train"], dataset["test"])
    if test is not None:
        return _prior_accuracy(dataset, test)
    rows = [
        dict(zip(("problem", "answer", "task_type"), values, strict=True))
        for values in zip(
            *(_column(dataset, c) for c in ("problem", "answer", "task_type")), strict=True
        )
    ]
    if len(rows) < 2:
        raise ValueError("dataset needs at least 2 rows for a cross-fitted text-only baseline.")
    even, odd = rows[0::2], rows[1::2]
    acc_odd = _prior_accuracy(even, odd)
    acc_even = _prior_accuracy(odd, even)
    return (acc_odd * len(odd) + acc_even * len(even)) / len(rows)


def chance_accuracy(dataset: Any) -> float:
    """Expected accuracy of guessing uniformly among a task type's answers.

    The answers of a task type are those that occur for it in ``dataset``; with balanced data of
    more than a few rows per answer that is the full :func:`answer_space`.

    Returns:
        mean over rows of 1 / (number of distinct answers of the row's task type).
    """
    if isinstance(dataset, Mapping):
        raise ValueError("chance_accuracy takes one dataset, got a mapping of splits.")
    answers = [str(a) for a in _column(dataset, "answer")]
    task_types = _column(dataset, "task_type")
    if not answers:
        raise ValueError("dataset for chance_accuracy has no rows.")
    support: dict[str, set[str]] = defaultdict(set)
    for answer, task_type in zip(answers, task_types, strict=True):
        support[task_type].add(answer)
    return sum(1 / len(support[t]) for t in task_types) / len(task_types)


# --------------------------------------------------------------------------------------------
# Vocabulary texts for the tiny model's tokenizer
# --------------------------------------------------------------------------------------------


def _vocab_texts() -> list[str]:
    """Every question, and reference solutions covering every answer of every preset."""
    texts: list[str] = []
    for level_name, level in DIFFICULTY_LEVELS.items():
        for image_size in (56, 84):
            for task_type in TASK_TYPES:
                for answer in answer_space(task_type, image_size, level):
                    rng = random.Random(f"{_STREAM_VERSION}/vocab/{level_name}/{task_type}")
                    for _ in range(2):
                        grid = image_size // CELL_SIZE
                        scene = _sample_scene(rng, task_type, grid, level, answer)
                        texts.append("<image>" + _question(scene, task_type))
                        texts.append(_format_solution(*_solution_body(scene, task_type)))
    for colour in PALETTE:
        for kind in SHAPE_KINDS:
            texts.append(f"It is a {colour} {kind}, so its colour is {colour}.")
        texts.append(f"How many {colour} shapes? Is the {colour} shape on the left or the right?")
    texts.append(" ".join(str(i) for i in range(2 * 9 + 1)))
    texts.append(" + ".join(f"\\boxed{{{i}}}" for i in range(2 * 9 + 1)))
    return list(dict.fromkeys(texts))


def _reasoning_vocab_texts() -> list[str]:
    """Every reasoning question and free-sentence option, and solutions covering every answer."""
    texts: list[str] = []
    for level_name, level in DIFFICULTY_LEVELS.items():
        for image_size in (56, 84):
            grid = image_size // CELL_SIZE
            for task_type in REASONING_TASK_TYPES:
                for answer in answer_space(task_type, image_size, level):
                    rng = random.Random(f"{_REASONING_STREAM_VERSION}/vocab/{level_name}/{task_type}")
                    for _ in range(2):
                        scene = _sample_reasoning_scene(rng, task_type, grid, level, answer)
                        texts.append("<image>" + _reasoning_question(scene, task_type))
                        texts.append(_format_solution(*_reasoning_body(scene, task_type, rng)))
    for slots in _REASONING_SLOTS:
        for options in slots:
            texts.append(" ".join(options))
    texts.append(" ".join(_READ_VERBS))
    for colour in PALETTE:
        texts.append(f"Add the number of {colour} shapes to the digit. What is the result?")
        texts.append(f"I see 1 {colour} shape, 2 {colour} shapes, 1 other shape and the digit 0.")
    texts.append(" ".join(f"{i} plus {i} is {2 * i}. {i} times 2 is {2 * i}." for i in range(10)))
    texts.append(" + ".join(f"\\boxed{{{i}}}" for i in range(2 * 9 + 1)))
    return list(dict.fromkeys(texts))


SYNTHETIC_VOCAB_TEXTS: list[str] = _vocab_texts()
"""Representative strings (all questions, reference solutions, every colour, shape and number) to
train the tiny model's tokenizer on, so every word of the task is in its vocabulary. The prompt
instruction added by ``vppo.data.prompts`` is not included."""

REASONING_VOCAB_TEXTS: list[str] = _reasoning_vocab_texts()
"""Like :data:`SYNTHETIC_VOCAB_TEXTS`, for the ``reasoning`` family: every question, every option
of every free sentence, and reference solutions covering every answer of every preset. A tokenizer
for the reasoning family is trained on both lists."""
