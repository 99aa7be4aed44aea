"""The :class:`TaskFamily` record: what a synthetic task family plugs into the shared generator.

A family names its task types and supplies four functions (answers, question, scene, solution)
plus the extra strings its tokenizer corpus needs; the shared code (rendering, split hashing,
answer balancing, datasets, baselines, the vocabulary corpus) does the rest. The families are
listed in :mod:`vppo.data.synthetic.registry`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vppo.data.synthetic.common import SyntheticDifficulty


@dataclass(frozen=True)
class TaskFamily:
    """One synthetic task family.

    Attributes:
        name: the ``family=`` value that picks it (e.g. ``"shapes"``).
        task_types: its task types, in the default cycling order of a dataset.
        stream_version: the prefix of every seed string of the family (example, answer-block,
            phrasing and vocabulary streams) and so of its hashes and splits; change it only to
            change every generated example on purpose.
        id_prefix: row ids are ``<id_prefix>-<split>-<seed>-<index>``.
        answer_space: ``(task_type, cells, level) -> answers``, every answer a task can have in a
            grid of ``cells`` cells at difficulty ``level`` (arguments already checked).
        question: ``(scene, task_type) -> question text`` (without the ``<image>`` placeholder).
        sample_scene: ``(rng, task_type, grid, level, answer) -> scene`` whose true answer is
            ``answer``: ``{"grid", "shapes", "digits", "target_colour", "target_kind"}``.
        solution_body: ``(scene, task_type, rng) -> (reasoning, answer)`` read off a scene;
            ``rng`` draws any free phrasing (a family with fixed wording leaves it untouched);
            ``None`` makes the family seed its own from the scene, so a row always gets the
            same solution.
        vocab_extras: ``() -> strings`` added to the family's tokenizer corpus after its
            questions and solutions (words the sampled solutions may miss).
    """

    name: str
    task_types: tuple[str, ...]
    stream_version: str
    id_prefix: str
    answer_space: Callable[[str, int, SyntheticDifficulty], tuple[str, ...]]
    question: Callable[[Mapping[str, Any], str], str]
    sample_scene: Callable[[random.Random, str, int, SyntheticDifficulty, str], dict[str, Any]]
    solution_body: Callable[[Mapping[str, Any], str, random.Random | None], tuple[str, str]]
    vocab_extras: Callable[[], list[str]]

    def __post_init__(self) -> None:
        if not self.task_types or len(set(self.task_types)) != len(self.task_types):
            raise ValueError(
                f"task family {self.name!r} must name distinct task types, "
                f"got {list(self.task_types)}."
            )
