"""The ``reasoning`` task family: few grounded tokens inside long, freely phrased reasoning.

Task types (:data:`REASONING_TASK_TYPES`): ``add_count_digit`` (the number of shapes plus the
digit), ``double_count`` (twice the number of shapes) and ``add_colour_digit`` (the number of
shapes of a named colour plus the digit). The ~60-80-token solutions hold a few grounded tokens
(the counts and digit read off the picture) among many freely phrased, high-entropy but
answer-irrelevant words and an arithmetic line, so VPPO's token filtering has something to act
on. The family shares the rasteriser, scenes and split hashing with ``shapes``, with its own
stream version (so its own hashes, seeds and splits).
"""

from __future__ import annotations

import json
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

REASONING_TASK_TYPES: tuple[str, ...] = ("add_count_digit", "double_count", "add_colour_digit")
"""Task types of the ``reasoning`` family: a few grounded facts, a sum, long free-phrased text."""
_REASONING_STREAM_VERSION = "vppo-synthetic-reasoning/v1"  # its own hashes, seeds and splits

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
    if (
        task_type == "add_count_digit"
    ):  # digit 0..max_digit plus 1..min(max_count, cells - 1) shapes
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


def _reasoning_solution(
    scene: Mapping[str, Any], task_type: str, rng: random.Random | None = None
) -> tuple[str, str]:
    """:func:`_reasoning_body` with ``rng`` seeded from the task type and scene when ``None``, so
    a row always gets the same solution."""
    if rng is None:
        key = json.dumps(scene, sort_keys=True, separators=(",", ":"))
        rng = random.Random(f"{_REASONING_STREAM_VERSION}/phrasing/{task_type}/{key}")
    return _reasoning_body(scene, task_type, rng)


def _vocab_extras() -> list[str]:
    """Every option of every free sentence, the colour questions and facts, the arithmetic."""
    texts: list[str] = []
    for slots in _REASONING_SLOTS:
        for options in slots:
            texts.append(" ".join(options))
    texts.append(" ".join(_READ_VERBS))
    for colour in PALETTE:
        texts.append(f"Add the number of {colour} shapes to the digit. What is the result?")
        texts.append(f"I see 1 {colour} shape, 2 {colour} shapes, 1 other shape and the digit 0.")
    texts.append(" ".join(f"{i} plus {i} is {2 * i}. {i} times 2 is {2 * i}." for i in range(10)))
    texts.append(" + ".join(f"\\boxed{{{i}}}" for i in range(2 * 9 + 1)))
    return texts


REASONING = TaskFamily(
    name="reasoning",
    task_types=REASONING_TASK_TYPES,
    stream_version=_REASONING_STREAM_VERSION,
    id_prefix="reasoning",
    answer_space=_reasoning_answer_space,
    question=_reasoning_question,
    sample_scene=_sample_reasoning_scene,
    solution_body=_reasoning_solution,
    vocab_extras=_vocab_extras,
)
"""The ``reasoning`` family, as listed in the registry."""
