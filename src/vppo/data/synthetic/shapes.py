"""The ``shapes`` task family (the default): short questions with short, template answers.

Task types (:data:`TASK_TYPES`): ``count`` (how many shapes), ``colour`` (the colour of a shape,
or of the one shape of a named kind among distractors), ``position`` (is the shape, or the shape of
a named colour, on the left or the right), ``digit_sum`` (the sum of two bitmap digits) and
``count_colour`` (how many shapes of a named colour). The solutions are template text around the
few facts read off the picture, as in real chain-of-thought.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from vppo.data.synthetic.common import (
    PALETTE,
    SHAPE_KINDS,
    SyntheticDifficulty,
    _below,
    _choice,
    _plural,
    _sample,
)
from vppo.data.synthetic.drawing import _digit, _shape
from vppo.data.synthetic.family import TaskFamily

TASK_TYPES: tuple[str, ...] = ("count", "colour", "position", "digit_sum", "count_colour")
"""Task types of the ``shapes`` family (the default): short, template answers."""
_STREAM_VERSION = "vppo-synthetic/v1"


def _answer_space(task_type: str, cells: int, level: SyntheticDifficulty) -> tuple[str, ...]:
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


def _sample_scene(
    rng: random.Random, task_type: str, grid: int, level: SyntheticDifficulty, answer: str
) -> dict[str, Any]:
    """Draw a scene whose true answer to ``task_type`` is ``answer``.

    Returns:
        ``{"grid", "shapes": [...], "digits": [...], "target_colour", "target_kind"}``; objects are
        sorted in reading order (row, then column).
    """
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


def _solution_body(
    scene: Mapping[str, Any], task_type: str, rng: random.Random | None = None
) -> tuple[str, str]:
    """(reasoning, answer) read off a scene; the wording is fixed, so ``rng`` is not used."""
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


def _vocab_extras() -> list[str]:
    """Every colour with every shape kind and both colour questions, every number, every box."""
    texts: list[str] = []
    for colour in PALETTE:
        for kind in SHAPE_KINDS:
            texts.append(f"It is a {colour} {kind}, so its colour is {colour}.")
        texts.append(f"How many {colour} shapes? Is the {colour} shape on the left or the right?")
    texts.append(" ".join(str(i) for i in range(2 * 9 + 1)))
    texts.append(" + ".join(f"\\boxed{{{i}}}" for i in range(2 * 9 + 1)))
    return texts


SHAPES = TaskFamily(
    name="shapes",
    task_types=TASK_TYPES,
    stream_version=_STREAM_VERSION,
    id_prefix="synthetic",
    answer_space=_answer_space,
    question=_question,
    sample_scene=_sample_scene,
    solution_body=_solution_body,
    vocab_extras=_vocab_extras,
)
"""The ``shapes`` family, as listed in the registry."""
