"""Reward functions with TRL's signature, and loading reward functions from a spec string.

TRL's `GRPOTrainer` calls each reward function as
``f(prompts=..., completions=..., completion_ids=..., **dataset_columns, trainer_state=..., ...)``
and logs it under ``f.__name__``. A completion is either a string or a conversation, a list of
messages such as ``[{"role": "assistant", "content": "..."}]`` whose content may also be a list
of ``{"type": "text", "text": ...}`` parts. The built-in functions here are named ``accuracy``,
``format`` and ``accuracy_with_format`` under ``__name__`` (their ``__qualname__`` keeps the
Python name, so they still pickle).

The scoring mirrors the official VPPO reward (``compute_score_wo_format``) and PAPO-Eval:
``normalize_response``, then the last ``\\boxed{}``, then MathRuler's ``grade_answer``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vppo.rewards.grader import extract_boxed_content, grade_answer, normalize_response

__all__ = [
    "REWARD_FUNCTIONS",
    "accuracy_reward",
    "accuracy_with_format_reward",
    "completion_text",
    "format_reward",
    "load_reward_function",
    "score_accuracy",
    "score_format",
]

FORMAT_WEIGHT = 0.1
"""Weight of the format score in `accuracy_with_format_reward` (the official `compute_score`)."""

# Where parsed chat messages may carry the reasoning that a template split off the content.
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                if part.get("type", "text") == "text":
                    texts.append(str(part.get("text") or ""))
            else:
                raise ValueError(
                    f"{where} has a content part of type {type(part).__name__}; expected a str or "
                    "a {'type': 'text', 'text': ...} dict."
                )
        return "".join(texts)
    raise ValueError(
        f"{where} has content of type {type(content).__name__}; expected a str or a list of parts."
    )


def _message_text(message: dict, where: str) -> str:
    text = _content_text(message.get("content"), where)
    reasoning = next((message[key] for key in _REASONING_KEYS if message.get(key)), None)
    if reasoning is not None and "<think>" not in text:
        # The chat template parsed `<think>...</think>` out of the content; put it back so the
        # text is what the model generated.
        text = "<think>" + _content_text(reasoning, where) + "</think>" + text
    return text


def completion_text(completion: Any, index: int = 0) -> str:
    """The generated text of one completion, in any form TRL passes.

    A string is returned as is. A conversation (a list of messages, or one message dict) gives
    the concatenated text of its assistant messages (messages without a role count as assistant);
    content parts other than text (images) are skipped, and reasoning that a chat-template parser
    moved to ``reasoning_content``/``thinking``/``reasoning`` is put back as ``<think>...</think>``
    in front of the content.

    Raises:
        ValueError: when ``completion`` (at position ``index`` of the batch) has another type.
    """
    where = f"completions[{index}]"
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list | tuple):
        texts = []
        for turn, message in enumerate(completion):
            if not isinstance(message, dict):
                raise ValueError(
                    f"{where}[{turn}] is a {type(message).__name__}; a conversation is a list of "
                    "message dicts."
                )
            if message.get("role", "assistant") == "assistant":
                texts.append(_message_text(message, f"{where}[{turn}]"))
        return "".join(texts)
    raise ValueError(
        f"{where} is a {type(completion).__name__}; expected a string or a list of messages."
    )


def score_accuracy(response: str, answer: Any) -> float:
    """1.0 if the last boxed answer of ``response`` grades equal to ``answer``, else 0.0."""
    predicted = extract_boxed_content(normalize_response(response))
    return 1.0 if grade_answer(predicted, answer) else 0.0


def score_format(response: str) -> float:
    """1.0 if ``response`` is ``<think>...</think>`` followed later by ``\\boxed{...}``.

    After `normalize_response`, the response must start with ``<think>``; then a ``</think>``,
    then a ``\\boxed{`` and then a ``}`` must follow, in that order (braces are not matched,
    as in the official format check).
    """
    response = normalize_response(response)
    if not response.startswith("<think>"):
        return 0.0
    think_end = response.find("</think>", len("<think>"))
    if think_end < 0:
        return 0.0
    box = response.find("\\boxed{", think_end + len("</think>"))
    if box < 0:
        return 0.0
    return 1.0 if response.find("}", box + len("\\boxed{")) >= 0 else 0.0


def _texts(completions: Sequence[Any]) -> list[str]:
    if isinstance(completions, str) or not isinstance(completions, Sequence):
        raise ValueError(
            f"completions must be a list of completions, got {type(completions).__name__}."
        )
    return [completion_text(completion, index) for index, completion in enumerate(completions)]


def _answers(answer: Any, count: int, function: str) -> Sequence[Any]:
    if answer is None:
        raise ValueError(
            f"{function} needs the ground truth in a dataset column named 'answer'; none was "
            "passed."
        )
    if isinstance(answer, str) or not isinstance(answer, Sequence):
        raise ValueError(
            f"answer must be a list with one ground truth per completion, got "
            f"{type(answer).__name__}."
        )
    if len(answer) != count:
        raise ValueError(
            f"answer has {len(answer)} entries but there are {count} completions; {function} "
            "needs one ground truth per completion."
        )
    return answer


def accuracy_reward(
    completions: Sequence[Any], answer: Sequence[Any] | None = None, **kwargs: Any
) -> list[float]:
    """VPPO's training reward: 1.0 per completion whose boxed answer is correct, else 0.0.

    ``grade_answer(extract_boxed_content(normalize_response(text)), answer)``; a completion with
    no complete ``\\boxed{}`` scores 0.0 (unless the ground truth is literally ``"None"``, as in
    MathRuler). Extra keyword arguments (prompts, completion_ids, other columns, trainer state)
    are ignored.

    Args:
        completions: [N] strings or conversations.
        answer: [N] ground truths (the dataset's ``answer`` column).

    Returns:
        [N] floats in {0.0, 1.0}.
    """
    texts = _texts(completions)
    answers = _answers(answer, len(texts), "accuracy_reward")
    return [score_accuracy(text, truth) for text, truth in zip(texts, answers, strict=True)]


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 per completion of the form ``<think>...</think> ... \\boxed{...}``, else 0.0.

    Args:
        completions: [N] strings or conversations.

    Returns:
        [N] floats in {0.0, 1.0}.
    """
    return [score_format(text) for text in _texts(completions)]


def accuracy_with_format_reward(
    completions: Sequence[Any], answer: Sequence[Any] | None = None, **kwargs: Any
) -> list[float]:
    """The official but unused mix: 0.9 * accuracy + 0.1 * format per completion.

    Returns:
        [N] floats in {0.0, 0.1, 0.9, 1.0}.
    """
    texts = _texts(completions)
    answers = _answers(answer, len(texts), "accuracy_with_format_reward")
    return [
        (1.0 - FORMAT_WEIGHT) * score_accuracy(text, truth) + FORMAT_WEIGHT * score_format(text)
        for text, truth in zip(texts, answers, strict=True)
    ]


# TRL logs a reward function under its `__name__` (rewards/accuracy, ...); VPPO's dynamic
# sampling filters on the reward named "accuracy".
accuracy_reward.__name__ = "accuracy"
format_reward.__name__ = "format"
accuracy_with_format_reward.__name__ = "accuracy_with_format"

REWARD_FUNCTIONS: dict[str, Callable[..., list[float]]] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "accuracy_with_format": accuracy_with_format_reward,
}
"""Built-in reward functions by the name `load_reward_function` accepts."""


def _load_module_from_file(path: Path) -> Any:
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    module_name = f"vppo_user_reward_{resolved.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise ValueError(f"Reward function file {path} cannot be loaded as a Python module.")
    module = importlib.util.module_from_spec(spec)
    # Registered before running so the functions pickle by reference inside this process.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _is_file_reference(location: str) -> bool:
    return location.endswith(".py") or "/" in location or "\\" in location


def load_reward_function(spec: str) -> Callable[..., Any]:
    """Resolve a reward-function spec to the callable.

    Accepted forms:
        - a built-in name: ``"accuracy"``, ``"format"``, ``"accuracy_with_format"``;
        - ``"path/to/file.py:function"``: the file is imported as a module (once per path);
        - ``"package.module:function"``: imported with `importlib`.

    Raises:
        FileNotFoundError: the file of a file spec does not exist (the message names it).
        ValueError: the spec is malformed, the module cannot be imported, the module has no
            attribute of that name, or the attribute is not callable (each message names it).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Reward function spec must be a non-empty string, got {spec!r}.")
    spec = spec.strip()
    if spec in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[spec]
    location, colon, name = spec.rpartition(":")
    if not colon or not location or not name:
        raise ValueError(
            f"Reward function spec {spec!r} is neither a built-in ({', '.join(REWARD_FUNCTIONS)}) "
            "nor of the form 'path/to/file.py:function' or 'package.module:function'."
        )
    if _is_file_reference(location):
        path = Path(location).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Reward function file {location} does not exist.")
        module = _load_module_from_file(path)
        source = f"file {location}"
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise ValueError(
                f"Reward function module {location!r} cannot be imported: {error}."
            ) from error
        source = f"module {location}"
    if not hasattr(module, name):
        raise ValueError(f"Reward function {name!r} is not defined in {source}.")
    function = getattr(module, name)
    if not callable(function):
        raise ValueError(
            f"Reward function {name!r} in {source} is a {type(function).__name__}, not callable."
        )
    return function
