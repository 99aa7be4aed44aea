"""Rewards: boxed-answer extraction, MathRuler-compatible grading and TRL reward functions.

See ``docs/rewards.md``. The grader reproduces the verdicts of MathRuler's ``grade_answer`` (the
function behind VPPO's training reward and the PAPO-Eval scores) with guards that keep sympy
from stalling; ``grade_answer_math_verify`` is an optional, more lenient alternative.
"""

from __future__ import annotations

from vppo.rewards.functions import (
    REWARD_FUNCTIONS,
    accuracy_reward,
    accuracy_with_format_reward,
    completion_text,
    format_reward,
    load_reward_function,
    score_accuracy,
    score_format,
)
from vppo.rewards.grader import (
    GRADERS,
    MISSING_ANSWER,
    extract_boxed_content,
    grade_answer,
    grade_answer_math_verify,
    normalize_response,
)

__all__ = [
    "GRADERS",
    "MISSING_ANSWER",
    "REWARD_FUNCTIONS",
    "accuracy_reward",
    "accuracy_with_format_reward",
    "completion_text",
    "extract_boxed_content",
    "format_reward",
    "grade_answer",
    "grade_answer_math_verify",
    "load_reward_function",
    "normalize_response",
    "score_accuracy",
    "score_format",
]
