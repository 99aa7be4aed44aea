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

Task families (:data:`TASK_FAMILIES`, the ``family=`` argument), each a
:class:`~vppo.data.synthetic.family.TaskFamily` in :data:`TASK_FAMILY_REGISTRY`:

- ``"shapes"`` (the default, :data:`TASK_TYPES`, module ``shapes``): short template solutions.
- ``"reasoning"`` (:data:`REASONING_TASK_TYPES`, module ``reasoning``: add a count to a digit,
  double a count): ~60-80-token solutions in which a few grounded tokens (the counts and digit
  read off the picture) sit among many freely phrased, high-entropy but answer-irrelevant words
  and an arithmetic line, so VPPO's token filtering has something to act on. It shares the
  rasteriser, scenes and split hashing, with its own stream version.

Adding a family: write a module that builds a ``TaskFamily`` (its task types, stream version, id
prefix, and its answer-space, question, scene-sampling, solution and vocabulary-extras functions;
``shapes.py`` is the model) and list it in ``registry._FAMILIES``. Datasets, reference solutions,
answer spaces, the tokenizer corpus (:func:`family_vocab_texts`) and every ``family=`` choice then
find it through :func:`family_of` / ``registry.get_family``; no other code names the families.

Modules: ``common`` (constants, :class:`SyntheticDifficulty`, deterministic randomness, checks),
``drawing`` (object placement, the rasteriser, PNG bytes), ``splits`` (split hashing), ``family``
and ``registry`` (the families), ``shapes`` and ``reasoning`` (one per family), ``examples``
(examples, datasets, reference solutions), ``baselines`` (text-only baselines) and ``vocab`` (the
tokenizer corpora, built on first use: :data:`SYNTHETIC_VOCAB_TEXTS` and
:data:`REASONING_VOCAB_TEXTS` are computed when first read, not at import).
"""

from __future__ import annotations

from typing import Any

from vppo.data.synthetic.baselines import chance_accuracy, text_only_baseline_accuracy
from vppo.data.synthetic.common import (
    CELL_SIZE,
    DIFFICULTY_LEVELS,
    GLYPHS,
    PALETTE,
    SHAPE_KINDS,
    SPLITS,
    SyntheticDifficulty,
)
from vppo.data.synthetic.drawing import render_scene
from vppo.data.synthetic.examples import (
    answer_space,
    generate_example,
    make_synthetic_dataset,
    reference_solution,
    save_synthetic_dataset,
)
from vppo.data.synthetic.family import TaskFamily
from vppo.data.synthetic.reasoning import _READ_VERBS, _REASONING_SLOTS  # noqa: F401 (benchmarks)
from vppo.data.synthetic.registry import (
    TASK_FAMILIES,
    TASK_FAMILY_REGISTRY,
    family_of,
    task_family,
)
from vppo.data.synthetic.splits import _scene_key, _split_of  # noqa: F401 (tests)
from vppo.data.synthetic.vocab import (
    family_vocab_texts,
    reasoning_vocab_texts,
    synthetic_vocab_texts,
)

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
    "TASK_FAMILY_REGISTRY",
    "TASK_TYPES",
    "SyntheticDifficulty",
    "TaskFamily",
    "answer_space",
    "chance_accuracy",
    "family_of",
    "family_vocab_texts",
    "generate_example",
    "make_synthetic_dataset",
    "reasoning_vocab_texts",
    "reference_solution",
    "render_scene",
    "save_synthetic_dataset",
    "synthetic_vocab_texts",
    "task_family",
    "text_only_baseline_accuracy",
]

TASK_TYPES: tuple[str, ...] = TASK_FAMILY_REGISTRY["shapes"].task_types
"""Task types of the ``shapes`` family (the default): short, template answers."""
REASONING_TASK_TYPES: tuple[str, ...] = TASK_FAMILY_REGISTRY["reasoning"].task_types
"""Task types of the ``reasoning`` family: a few grounded facts, a sum, long free-phrased text."""

# Built on first read (PEP 562), so importing the package stays cheap.
_LAZY_VOCAB = {
    "SYNTHETIC_VOCAB_TEXTS": synthetic_vocab_texts,
    "REASONING_VOCAB_TEXTS": reasoning_vocab_texts,
}


def __getattr__(name: str) -> Any:
    """``SYNTHETIC_VOCAB_TEXTS`` / ``REASONING_VOCAB_TEXTS``: the cached corpora of
    :func:`synthetic_vocab_texts` / :func:`reasoning_vocab_texts`, built on first access."""
    if name in _LAZY_VOCAB:
        return _LAZY_VOCAB[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_VOCAB))
