"""Text-only baselines of the synthetic task: how well the question text alone predicts answers.

The answers of every question string are balanced by construction, so for a leak-free dataset
:func:`text_only_baseline_accuracy` (the best answer-prior predictor) matches
:func:`chance_accuracy` (uniform guessing among a task type's answers). Both read plain
``problem`` / ``answer`` / ``task_type`` columns and so work for any task family.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any


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
