"""Tests for vppo.rewards.functions: TRL-style reward functions and load_reward_function."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from vppo.rewards import (
    REWARD_FUNCTIONS,
    accuracy_reward,
    accuracy_with_format_reward,
    completion_text,
    format_reward,
    load_reward_function,
)

GOOD = "<think>The sides are 3 and 4, so the hypotenuse is 5.</think> The answer is \\boxed{5}."
WRONG = "<think>Guessing.</think> \\boxed{6}"
NO_BOX = "<think>Thinking.</think> The answer is 5."
NO_THINK = "The answer is \\boxed{5}."

# Keyword arguments TRL's GRPOTrainer passes besides the dataset columns.
TRL_EXTRAS = {
    "prompts": ["p"] * 4,
    "completion_ids": [[1, 2]] * 4,
    "trainer_state": object(),
    "log_extra": lambda *args, **kwargs: None,
    "log_metric": lambda *args, **kwargs: None,
    "images": [None] * 4,
}


# --------------------------------------------------------------------------------------------
# completion_text
# --------------------------------------------------------------------------------------------


def test_completion_text_forms() -> None:
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"
    assert completion_text({"role": "assistant", "content": "hi"}) == "hi"
    parts = [{"type": "text", "text": "a "}, {"type": "image"}, {"type": "text", "text": "b"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "a b"
    assert completion_text([{"role": "assistant", "content": None}]) == ""
    # Tool turns are not the model's text; several assistant turns are joined.
    turns = [
        {"role": "assistant", "content": "x"},
        {"role": "tool", "content": "\\boxed{9}"},
        {"role": "assistant", "content": "y"},
    ]
    assert completion_text(turns) == "xy"


def test_completion_text_restores_parsed_reasoning() -> None:
    message = {"role": "assistant", "reasoning_content": "steps", "content": "\\boxed{5}"}
    assert completion_text([message]) == "<think>steps</think>\\boxed{5}"
    # Reasoning already inside the content is not duplicated.
    inline = {"role": "assistant", "thinking": "steps", "content": "<think>steps</think>\\boxed{5}"}
    assert completion_text([inline]) == "<think>steps</think>\\boxed{5}"


@pytest.mark.parametrize(
    ("completion", "match"),
    [
        (42, r"completions\[3\] is a int"),
        ([["nested"]], r"completions\[3\]\[0\] is a list"),
        ([{"role": "assistant", "content": 7}], r"completions\[3\]\[0\] has content of type int"),
        ([{"role": "assistant", "content": [3]}], r"completions\[3\]\[0\] has a content part"),
    ],
)
def test_completion_text_rejects_other_types(completion: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        completion_text(completion, index=3)


# --------------------------------------------------------------------------------------------
# accuracy / format rewards
# --------------------------------------------------------------------------------------------


def test_accuracy_reward_strings() -> None:
    completions = [GOOD, WRONG, NO_BOX, "<think>x</think> \\boxed{\\frac{1}{2}}"]
    answers = ["5", "5", "5", "0.5"]
    assert accuracy_reward(completions, answers, **TRL_EXTRAS) == [1.0, 0.0, 0.0, 1.0]


def test_accuracy_reward_conversational() -> None:
    completions = [
        [{"role": "assistant", "content": GOOD}],
        [{"role": "assistant", "content": [{"type": "text", "text": WRONG}]}],
        [{"role": "assistant", "reasoning_content": "r", "content": "so \\boxed{(A)}"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{1,000}"}]}],
    ]
    answers = ["5", "5", "A", "1000"]
    assert accuracy_reward(completions, answers, **TRL_EXTRAS) == [1.0, 0.0, 1.0, 1.0]


def test_accuracy_reward_uses_the_last_box_and_the_spacing_pre_step() -> None:
    completions = ["\\boxed{5} no wait \\boxed{6}", "\\boxed{3 / 4}"]
    assert accuracy_reward(completions, ["6", "\\frac{3}{4}"]) == [1.0, 1.0]
    assert accuracy_reward(completions, ["5", "0.7"]) == [0.0, 0.0]


def test_accuracy_reward_accepts_numeric_ground_truth() -> None:
    assert accuracy_reward(["\\boxed{12}", "\\boxed{0.25}"], [12, 0.25]) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (None, "dataset column named 'answer'"),
        ("5", "answer must be a list"),
        (["5"], "answer has 1 entries but there are 2 completions"),
    ],
)
def test_accuracy_reward_bad_answers(answer: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        accuracy_reward([GOOD, WRONG], answer)  # type: ignore[arg-type]


def test_accuracy_reward_bad_completions() -> None:
    with pytest.raises(ValueError, match="completions must be a list"):
        accuracy_reward(GOOD, ["5"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        ("<think></think>\\boxed{}", 1.0),
        ("< think >spaced</ think >\\boxed{5}", 1.0),  # the spacing pre-step runs first
        ("  <think>x</think>\\boxed{5}", 1.0),
        (NO_THINK, 0.0),
        (NO_BOX, 0.0),
        ("<think>x \\boxed{5}</think>", 0.0),  # the box must follow the thinking
        ("<think>x</think>\\boxed{5", 0.0),
        ("Sure. <think>x</think>\\boxed{5}", 0.0),  # must start with <think>
        ("<think>x\\boxed{5}", 0.0),
    ],
)
def test_format_reward(completion: str, expected: float) -> None:
    assert format_reward([completion], **TRL_EXTRAS) == [expected]
    assert format_reward([[{"role": "assistant", "content": completion}]]) == [expected]


def test_accuracy_with_format_reward_mixes_ninety_ten() -> None:
    completions = [GOOD, NO_THINK, WRONG, "no box, no think"]
    rewards = accuracy_with_format_reward(completions, ["5"] * 4, **TRL_EXTRAS)
    assert rewards == pytest.approx([1.0, 0.9, 0.1, 0.0])


def test_reward_names_for_trl_and_pickling() -> None:
    # TRL logs a reward function under its __name__ (trl.trainer.utils.get_callable_name); the
    # trl import itself is left out here because it costs many seconds.
    assert [f.__name__ for f in REWARD_FUNCTIONS.values()] == [
        "accuracy",
        "format",
        "accuracy_with_format",
    ]
    for function in REWARD_FUNCTIONS.values():
        assert pickle.loads(pickle.dumps(function)) is function


# --------------------------------------------------------------------------------------------
# load_reward_function
# --------------------------------------------------------------------------------------------


def test_load_builtin_names() -> None:
    assert load_reward_function("accuracy") is accuracy_reward
    assert load_reward_function(" format ") is format_reward
    assert load_reward_function("accuracy_with_format") is accuracy_with_format_reward


def _write_reward_file(directory: Path) -> Path:
    path = directory / "my_reward.py"
    path.write_text(
        textwrap.dedent(
            """
            def length_reward(completions, **kwargs):
                return [float(len(c)) for c in completions]

            NOT_A_FUNCTION = 3
            """
        )
    )
    return path


def test_load_from_file(tmp_path: Path) -> None:
    path = _write_reward_file(tmp_path)
    function = load_reward_function(f"{path}:length_reward")
    assert function(["ab", "abcd"]) == [2.0, 4.0]
    # Loading the same file again reuses the module.
    assert load_reward_function(f"{path}:length_reward") is function


def test_load_from_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "rewardpkg_for_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "scores.py").write_text(
        "def always_one(completions, **kw):\n    return [1.0] * len(completions)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    function = load_reward_function("rewardpkg_for_test.scores:always_one")
    assert function(["a", "b"]) == [1.0, 1.0]
    assert load_reward_function("vppo.rewards.functions:accuracy_reward") is accuracy_reward


def test_load_errors(tmp_path: Path) -> None:
    path = _write_reward_file(tmp_path)
    missing = tmp_path / "nowhere.py"
    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        load_reward_function(f"{missing}:f")
    with pytest.raises(ValueError, match="'no_such_function' is not defined in file .*my_reward"):
        load_reward_function(f"{path}:no_such_function")
    with pytest.raises(ValueError, match="'NOT_A_FUNCTION' in file .*my_reward.py is a int"):
        load_reward_function(f"{path}:NOT_A_FUNCTION")
    with pytest.raises(ValueError, match="'vppo.no_such_module' cannot be imported"):
        load_reward_function("vppo.no_such_module:f")
    with pytest.raises(ValueError, match="'missing' is not defined in module vppo.rewards"):
        load_reward_function("vppo.rewards.functions:missing")
    with pytest.raises(ValueError, match="neither a built-in"):
        load_reward_function("acuracy")
    with pytest.raises(ValueError, match="neither a built-in"):
        load_reward_function("vppo.rewards.functions:")
    with pytest.raises(ValueError, match="non-empty string"):
        load_reward_function("")
