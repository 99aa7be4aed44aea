"""Vocabulary corpora for the tiny model's tokenizer, built on first use (about a second each).

``vppo.data.synthetic.SYNTHETIC_VOCAB_TEXTS`` and ``REASONING_VOCAB_TEXTS`` are these lists,
reached through the package's module ``__getattr__``, so importing the package builds nothing.
"""

from __future__ import annotations

import random
from functools import cache

from vppo.data.synthetic.common import CELL_SIZE, DIFFICULTY_LEVELS, _format_solution
from vppo.data.synthetic.examples import answer_space
from vppo.data.synthetic.registry import get_family

_VOCAB_IMAGE_SIZES: tuple[int, ...] = (56, 84)


@cache
def family_vocab_texts(family: str) -> list[str]:
    """The tokenizer corpus of one family, built once and cached (do not mutate the list).

    Every question, and reference solutions covering every answer of every preset (difficulty
    level × image size 56 and 84, two scenes per answer), then the family's
    :attr:`~vppo.data.synthetic.family.TaskFamily.vocab_extras`, without repeats in first-seen
    order. The prompt instruction added by ``vppo.data.prompts`` is not included.
    """
    task_family = get_family(family)
    texts: list[str] = []
    for level_name, level in DIFFICULTY_LEVELS.items():
        for image_size in _VOCAB_IMAGE_SIZES:
            grid = image_size // CELL_SIZE
            for task_type in task_family.task_types:
                for answer in answer_space(task_type, image_size, level):
                    seed = f"{task_family.stream_version}/vocab/{level_name}/{task_type}"
                    rng = random.Random(seed)
                    for _ in range(2):
                        scene = task_family.sample_scene(rng, task_type, grid, level, answer)
                        texts.append("<image>" + task_family.question(scene, task_type))
                        body = task_family.solution_body(scene, task_type, rng)
                        texts.append(_format_solution(*body))
    texts += task_family.vocab_extras()
    return list(dict.fromkeys(texts))


def synthetic_vocab_texts() -> list[str]:
    """Representative strings (all questions, reference solutions, every colour, shape and
    number) to train the tiny model's tokenizer on, so every word of the ``shapes`` task is in its
    vocabulary; the list behind ``SYNTHETIC_VOCAB_TEXTS``."""
    return family_vocab_texts("shapes")


def reasoning_vocab_texts() -> list[str]:
    """Like :func:`synthetic_vocab_texts`, for the ``reasoning`` family: every question, every
    option of every free sentence, and reference solutions covering every answer of every preset;
    the list behind ``REASONING_VOCAB_TEXTS``. A tokenizer for the reasoning family is trained on
    both lists."""
    return family_vocab_texts("reasoning")
