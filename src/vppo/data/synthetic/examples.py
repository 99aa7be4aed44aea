"""Examples and datasets of the synthetic task, for every family of the registry.

The functions here look a task type's family up once (``registry.family_of``) and call its
:class:`~vppo.data.synthetic.family.TaskFamily` functions: the answer space, the scene whose answer
is given, the question and the reference solution. Within a task, answers come in shuffled blocks
that hold every answer once, so the best text-only predictor is at chance; each split's generator
redraws a scene until its hash lands in the split.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from vppo.data.synthetic.common import (
    SPLITS,
    SyntheticDifficulty,
    _check_count,
    _check_split,
    _choice,
    _format_solution,
    _grid_size,
    _resolve_difficulty,
    _sample,
)
from vppo.data.synthetic.drawing import _png_bytes, _rejitter, render_scene
from vppo.data.synthetic.family import TaskFamily
from vppo.data.synthetic.registry import _check_task_types, family_of, get_family
from vppo.data.synthetic.splits import _scene_key, _split_of

_MAX_SPLIT_ATTEMPTS = 10_000
_REJITTERS_PER_SCENE = 32


def answer_space(
    task_type: str, image_size: int = 56, difficulty: str | SyntheticDifficulty = "medium"
) -> tuple[str, ...]:
    """All answers a task can have at this image size and difficulty (each equally likely).

    Returns:
        the answers as strings, e.g. ``("1", "2", "3", "4")`` for ``count`` at medium difficulty.
    """
    return _answer_space(family_of(task_type), task_type, image_size, difficulty)


def _answer_space(
    family: TaskFamily,
    task_type: str,
    image_size: int,
    difficulty: str | SyntheticDifficulty,
) -> tuple[str, ...]:
    cells = _grid_size(image_size) ** 2
    level = _resolve_difficulty(difficulty)
    if level.max_count > cells:
        raise ValueError(
            f"max_count={level.max_count} does not fit in the {cells} cells of a "
            f"{image_size}px image; lower max_count or raise image_size."
        )
    return family.answer_space(task_type, cells, level)


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
        task_type: a task type of any family (:data:`TASK_TYPES`, :data:`REASONING_TASK_TYPES`).
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
    family = family_of(task_type)
    grid = _grid_size(image_size)
    level = _resolve_difficulty(difficulty)
    space = _answer_space(family, task_type, image_size, level)
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
    scene, problem, scene_json = _draw_scene(rng, family, task_type, grid, level, answer, split)
    return {
        "images": [Image.fromarray(render_scene(scene))],
        "problem": problem,
        "answer": answer,
        "task_type": task_type,
        "scene": scene_json,
    }


def _draw_scene(
    rng: random.Random,
    family: TaskFamily,
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
            scene = family.sample_scene(rng, task_type, grid, level, answer)
            problem = "<image>" + family.question(scene, task_type)
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
    version = get_family(family).stream_version
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
    task_family = get_family(family)
    grid = _grid_size(image_size)
    spaces = {t: _answer_space(task_family, t, image_size, level) for t in task_types}
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
        scene, problem, scene_json = _draw_scene(
            rng, task_family, task_type, grid, level, answer, split
        )
        yield {
            "images": [{"bytes": _png_bytes(render_scene(scene)), "path": None}],
            "problem": problem,
            "answer": answer,
            "task_type": task_type,
            "id": f"{task_family.id_prefix}-{split}-{seed}-{i:06d}",
            "scene": scene_json,
        }


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


def reference_solution(example: Mapping[str, Any], *, rng: random.Random | None = None) -> str:
    """The target response of a row for the supervised warm start (both task families).

    ``shapes`` rows get a short, template-heavy solution: the few facts read off the picture
    (counts, colours, sides, digits) are the image-grounded tokens; the rest is fixed template
    text, as in real chain-of-thought. ``reasoning`` rows get a long one (about 60 tokens) whose
    free-phrased sentences are drawn at random (see ``reasoning._reasoning_solution``).

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
    family = family_of(task_type)
    scene = example["scene"]
    if isinstance(scene, str):
        try:
            scene = json.loads(scene)
        except json.JSONDecodeError as err:
            raise ValueError(f"example field 'scene' is not valid JSON: {err}.") from err
    if rng is not None and not isinstance(rng, random.Random):
        raise ValueError(f"rng must be a random.Random instance or None, got {type(rng).__name__}.")
    try:
        reasoning, answer = family.solution_body(scene, task_type, rng)
    except (KeyError, TypeError, ValueError, StopIteration) as err:
        raise ValueError(
            f"example field 'scene' does not describe a {task_type!r} scene ({err!r})."
        ) from err
    if answer != str(example["answer"]):
        raise ValueError(
            f"example field 'answer' is {example['answer']!r} but its scene shows {answer!r}."
        )
    return _format_solution(reasoning, answer)
