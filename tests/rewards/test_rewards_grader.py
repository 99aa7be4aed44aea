"""Tests for vppo.rewards.grader: extraction, the response pre-step and MathRuler-style grading.

Every expected verdict in PARITY_TABLE was produced by the real MathRuler 0.1.0 (`mathruler.grader.
grade_answer`, with sympy 1.14.0 and pylatexenc 2.11, the pinned versions) in a separate virtual
environment; the tests themselves do not need mathruler.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vppo.rewards import grader
from vppo.rewards.grader import (
    GRADERS,
    MISSING_ANSWER,
    extract_boxed_content,
    grade_answer,
    grade_answer_math_verify,
    normalize_response,
)

# (given, ground truth, MathRuler's verdict)
PARITY_TABLE = [
    # fractions
    ("\\frac{1}{2}", "0.5", True),
    ("0.5", "\\frac{1}{2}", True),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
    ("\\tfrac12", "\\frac{1}{2}", True),
    ("2/4", "1/2", False),
    ("\\frac{2}{4}", "\\frac{1}{2}", False),
    ("1/2", "\\frac{1}{2}", True),
    ("0.25", "\\frac{1}{4}", True),
    ("\\frac{3}{2}", "1.5", True),
    ("1\\frac{1}{2}", "\\frac{3}{2}", True),
    ("\\frac{1}{3}", "1/3", True),
    ("0.333", "\\frac{1}{3}", False),
    ("-\\frac{1}{2}", "-0.5", True),
    ("\\frac{-1}{2}", "-\\frac{1}{2}", True),
    ("\\frac{6}{4}", "\\frac{3}{2}", False),
    ("3/2", "1.5", True),
    # latex
    ("\\sqrt{2}", "\\sqrt2", True),
    ("2^{1/2}", "\\sqrt{2}", False),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", True),
    ("\\pi", "\\pi", True),
    ("3.14", "\\pi", False),
    ("\\frac{\\pi}{2}", "\\frac{1}{2}\\pi", True),
    ("2\\pi", "\\pi \\cdot 2", True),
    ("x^2", "x^{2}", True),
    ("2^10", "1024", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("2x+1", "1+2x", True),
    ("\\frac{x}{2}", "0.5x", True),
    ("0.5+\\frac{\\pi}{8}", "\\pi\\div8+1\\div2", False),
    ("17", "\\boxed{17}", True),
    ("4\\sqrt{3}", "\\sqrt{48}", True),
    # units and degrees
    ("5 cm", "5", True),
    ("5\\text{ cm}", "5", True),
    ("5 \\text{cm}", "5", True),
    ("5 \\mbox{cm}", "5", True),
    ("30^\\circ", "30", True),
    ("30^{\\circ}", "30", True),
    ("30°", "30", False),
    ("30 degrees", "30", True),
    ("12 meters", "12", True),
    ("3 hours", "3", True),
    ("5 \\text{cm}^2", "5", False),
    ("5", "5\\text{ cm}", True),
    # thousands
    ("1,000", "1000", True),
    ("1,234,567", "1234567", True),
    ("1,234,567,890", "1234567890", False),
    ("1000.0", "1000", True),
    ("1{,}000", "1000", True),
    ("1,000", "1", False),
    ("1,5", "1.5", False),
    # multiple choice
    ("A", "A", True),
    ("(A)", "A", True),
    ("a", "A", True),
    ("\\text{A}", "A", True),
    ("A. 12", "A", False),
    ("A.", "A", False),
    ("B", "A", False),
    ("A", "(A)", True),
    ("\\text{(B)}", "B", True),
    ("(B)", "(B)", True),
    ("B:", "B", False),
    ("option B", "B", False),
    ("\\textbf{B}", "B", True),
    # multiple answers, tuples, intervals
    ("1, 2", "1,2", True),
    ("2, 1", "1, 2", False),
    ("A, C", "C, A", False),
    ("A, C", "A,C", True),
    ("(1, 2)", "(1,2)", True),
    ("(2, 1)", "(1, 2)", False),
    ("[1, 2)", "(1, 2)", False),
    ("(1,2)", "[1,2]", False),
    ("(-\\infty, 3]", "(-\\infty,3]", True),
    ("\\left( -\\infty, 3 \\right]", "(-\\infty, 3]", True),
    ("(0.5, 1)", "(\\frac{1}{2}, 1)", True),
    ("(1, 2, 3)", "(1, 2)", False),
    ("1 and 2", "1, 2", True),
    ("1 or 2", "1,2", True),
    ("x = 1, 2", "1, 2", True),
    # negative numbers
    ("-5", "-5", True),
    ("- 5", "-5", True),
    ("-5", "5", False),
    ("-0", "0", True),
    ("−5", "-5", False),
    # percent and currency
    ("50\\%", "50", True),
    ("50%", "50", True),
    ("0.5", "50\\%", False),
    ("50", "50\\%", True),
    ("\\$5", "5", True),
    ("$5.00$", "5", True),
    # missing box / empty
    ("None", "5", False),
    ("None", "None", True),
    ("", "5", False),
    ("", "", True),
    (" ", "0", False),
    # equations, decimals
    ("x = 5", "5", True),
    ("x=5", "5", True),
    ("y = 2x + 1", "2x+1", True),
    ("3.1416", "3.14", False),
    ("3.14", "3.140", True),
    (".5", "0.5", True),
    ("5.0", "5", True),
    ("1e3", "1000", True),
    ("10^3", "1000", False),
    ("2.99999999999", "3", True),
    ("12", "12.0", True),
    ("0.1", "\\frac{1}{10}", True),
]


@pytest.mark.parametrize(("given_answer", "truth", "expected"), PARITY_TABLE)
def test_grade_answer_matches_mathruler(given_answer: str, truth: str, expected: bool) -> None:
    assert grade_answer(given_answer, truth) is expected


def test_parity_table_is_large_and_mixed() -> None:
    verdicts = [expected for _, _, expected in PARITY_TABLE]
    assert len(PARITY_TABLE) >= 45
    assert 0.3 < sum(verdicts) / len(verdicts) < 0.8


# --------------------------------------------------------------------------------------------
# extract_boxed_content
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is \\boxed{42}.", "42"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\left\\{ 1, \\{2\\} \\right\\}}", "\\left\\{ 1, \\{2\\} \\right\\}"),
        ("\\boxed{ 7 } and more text", "7"),
        ("\\boxed{}", ""),
        ("\\boxed{\\boxed{3}}", "3"),  # the last opener is the inner box
        ("no box at all", MISSING_ANSWER),
        ("\\boxed 5", MISSING_ANSWER),  # MathRuler only knows the braced form
        ("\\boxed{1} but then \\boxed{2", MISSING_ANSWER),  # the last box is unbalanced
        ("\\boxed{{1}", MISSING_ANSWER),
        ("\\boxed{1}}", "1"),
        ("", MISSING_ANSWER),
    ],
)
def test_extract_boxed_content(text: str, expected: str) -> None:
    assert extract_boxed_content(text) == expected


def test_extract_boxed_content_of_non_string_is_missing() -> None:
    assert extract_boxed_content(None) == MISSING_ANSWER  # type: ignore[arg-type]


@given(st.text(alphabet="ab{}\\ ", max_size=12), st.text(alphabet="ab {}", max_size=12))
@settings(max_examples=200, deadline=None)
def test_extract_boxed_content_round_trips_balanced_content(prefix: str, body: str) -> None:
    # Whatever precedes it, a last box with balanced content yields that content, stripped.
    depth = 0
    for char in body:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return
    if depth != 0:
        return
    assert extract_boxed_content(prefix + "\\boxed{" + body + "} tail") == body.strip()


# --------------------------------------------------------------------------------------------
# normalize_response
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("< think > reasoning </ think >\n\\boxed{1}", "<think>reasoning</think>\\boxed{1}"),
        ("1 / 2", "1/2"),
        ("a\n<\tb", "a<b"),
        ("x > 3 and y < 4", "x>3 and y<4"),
        ("plain text", "plain text"),
    ],
)
def test_normalize_response(text: str, expected: str) -> None:
    assert normalize_response(text) == expected


def test_normalized_spacing_changes_the_extracted_answer() -> None:
    # The pre-step runs before extraction, so "1 / 2" is graded as the fraction 1/2.
    text = "\\boxed{1 / 2}"
    assert extract_boxed_content(normalize_response(text)) == "1/2"
    assert grade_answer(extract_boxed_content(normalize_response(text)), "\\frac{1}{2}")


# --------------------------------------------------------------------------------------------
# grade_answer: input handling
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_answer", "truth", "expected"),
    [
        ("5", 5, True),
        (5, "5", True),
        ("0.5", 0.5, True),
        ("6", 5, False),
        (None, "5", False),
        ("5", None, False),
        ("1", True, False),
        (["5"], "5", False),
        ({"a": 1}, "5", False),
    ],
)
def test_grade_answer_input_types(given_answer: object, truth: object, expected: bool) -> None:
    assert grade_answer(given_answer, truth) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "weird",
    [
        "\\frac",
        "\\frac{",
        "\\frac1",
        "\\sqrt",
        "\\sqrt\\sqrt",
        "\\text{ a}\\text{ b}\\text{ c}",
        "{{{{",
        "}}}}",
        "\\",
        "\\left(",
        "^^^",
        "1e999999",
        "nan",
        "inf",
        "-inf",
        "0x1F",
        "1_000",
        "٣",
        "\x00\x01",
        "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
        "(" * 500 + "1" + ")" * 500,
        "1" * 5000,
        "1/" + "1" * 5000,
        "x" * 10000,
        "\\frac{" * 300,
        "'a'*10**9",
        "__import__",
    ],
)
def test_grade_answer_never_raises_on_weird_input(weird: str) -> None:
    for given_answer, truth in ((weird, "1"), ("1", weird), (weird, "\\frac{1}{2}"), (weird, "x")):
        assert isinstance(grade_answer(given_answer, truth), bool)


@given(st.text(max_size=40))
@settings(max_examples=150, deadline=None)
def test_grade_answer_is_reflexive(answer: str) -> None:
    assert grade_answer(answer, answer) is True


@given(st.text(alphabet="0123456789.,/-+x()[]\\{}^ abcfrqtsp", max_size=16), st.integers(-50, 50))
@settings(max_examples=150, deadline=None)
def test_grade_answer_returns_a_bool_for_any_text(answer: str, truth: int) -> None:
    assert isinstance(grade_answer(answer, str(truth)), bool)


# --------------------------------------------------------------------------------------------
# grade_answer: guards against expressions that would stall sympy
# --------------------------------------------------------------------------------------------

PATHOLOGICAL = [
    "9^9^9^9",
    "9**9**9**9",
    "9**9**9",
    "((((((((9^9)^9)^9)^9)^9)^9)^9)^9)",
    "2**(2**(2**(2**(2**2))))",
    "10**100000000",
    "100000000!",
    "E.n(10**8)",
    "N(2, 10**8)",
    "ff(9**9, 9**9)",
    "[9]*10**9",
    "sqrt(10**10**10)",
    "1e999999",
    "1.5e-999999",
    "frac(9**9**9)",
]


@pytest.fixture(scope="module")
def sympy_warm() -> None:
    # The first sympy comparison pays sympy's import; time only what comes after.
    assert grade_answer("x+x", "2x")


@pytest.mark.parametrize("expression", PATHOLOGICAL)
@pytest.mark.parametrize("truth", ["1.5", "x/2"])
def test_pathological_expressions_return_quickly(
    expression: str, truth: str, sympy_warm: None
) -> None:
    start = time.perf_counter()
    assert grade_answer(expression, truth) is False
    assert grade_answer(truth, expression) is False
    assert time.perf_counter() - start < 1.0


def test_pathological_expressions_are_refused_off_the_main_thread(sympy_warm: None) -> None:
    # Worker threads get no SIGALRM timer, so the static guards alone must hold.
    results: list[bool] = []
    worker = threading.Thread(
        target=lambda: results.extend(grade_answer(e, "1.5") for e in PATHOLOGICAL)
    )
    start = time.perf_counter()
    worker.start()
    worker.join(timeout=10.0)
    assert not worker.is_alive()
    assert results == [False] * len(PATHOLOGICAL)
    assert time.perf_counter() - start < 3.0


def test_guards_keep_ordinary_sympy_work(sympy_warm: None) -> None:
    # Bounded powers, small factorials and whitelisted functions still reach sympy.
    assert grade_answer("2**10 + 0.5", "1024.5")
    assert grade_answer("(x+1)**2", "x^2+2x+1")
    assert grade_answer("5! + 0.5", "120.5")
    assert grade_answer("sqrt(2)/2", "\\frac{\\sqrt{2}}{2}")


def test_slow_simplification_is_cut_by_the_time_limit(
    monkeypatch: pytest.MonkeyPatch, sympy_warm: None
) -> None:
    # Within the guards, but sympy needs several seconds for this one (3.6 s untimed on the
    # development machine).
    monkeypatch.setattr(grader, "GRADE_TIME_LIMIT_S", 0.3)
    start = time.perf_counter()
    assert grade_answer("(x+y+2)^9*(x-y+1)^9*(2x+y)^9", "x/2") is False
    assert time.perf_counter() - start < 1.0
    # The timer is gone afterwards and SIGALRM has its previous handler again.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_a_foreign_sigalrm_handler_is_left_alone(sympy_warm: None) -> None:
    calls: list[int] = []

    def foreign(signum: int, frame: object) -> None:
        calls.append(signum)

    previous = signal.signal(signal.SIGALRM, foreign)
    try:
        assert grade_answer("x+x", "2x")
        assert signal.getsignal(signal.SIGALRM) is foreign
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert calls == []


@pytest.mark.filterwarnings("ignore::sympy.utilities.exceptions.SymPyDeprecationWarning")
def test_worker_threads_give_the_same_verdicts(sympy_warm: None) -> None:
    cases = PARITY_TABLE[::3]
    results: dict[int, list[bool]] = {}

    def work(slot: int) -> None:
        results[slot] = [grade_answer(g, t) for g, t, _ in cases]

    workers = [threading.Thread(target=work, args=(slot,)) for slot in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60.0)
    expected = [verdict for _, _, verdict in cases]
    assert [results[slot] for slot in range(3)] == [expected] * 3


def test_grading_is_silent(
    caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    # Malformed LaTeX makes pylatexenc log and tuple arithmetic makes sympy warn; neither leaks.
    with caplog.at_level("DEBUG"):
        assert grade_answer("\\frac", "1.5") is False
        assert grade_answer("(1,2)*2", "1.5") is False
        assert grade_answer("2, 1", "1, 2") is False
    assert [r for r in caplog.records if r.name.startswith("pylatexenc")] == []
    assert len(recwarn) == 0


# --------------------------------------------------------------------------------------------
# GRADERS and the optional math-verify grader
# --------------------------------------------------------------------------------------------


def test_graders_registry() -> None:
    assert GRADERS == {"mathruler": grade_answer, "math_verify": grade_answer_math_verify}


def test_math_verify_missing_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "math_verify", None)
    grader._math_verify.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install math-verify"):
            grade_answer_math_verify("1", "1")
    finally:
        grader._math_verify.cache_clear()


def test_math_verify_grader_is_more_lenient() -> None:
    pytest.importorskip("math_verify")
    # Where the two graders differ, by design.
    assert grade_answer_math_verify("C, A", "A, C") and not grade_answer("C, A", "A, C")
    assert grade_answer_math_verify("\\frac{2}{4}", "\\frac{1}{2}")
    assert grade_answer_math_verify("0.15", "15\\%")
    # Where they agree.
    assert grade_answer_math_verify("\\frac{1}{2}", "0.5")
    assert grade_answer_math_verify("(A)", "A")
    assert not grade_answer_math_verify("B", "A")
    assert not grade_answer_math_verify("3.1416", "3.14")
    assert not grade_answer_math_verify("[1,2)", "(1,2)")
    assert grade_answer_math_verify(None, "1") is False  # type: ignore[arg-type]
