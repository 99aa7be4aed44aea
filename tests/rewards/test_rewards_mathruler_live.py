"""Our grader against the real MathRuler 0.1.0, live (it is in the dev extra).

`tests/rewards/test_rewards_grader.py` checks a frozen table of MathRuler's verdicts without needing the
package; here the same table and a few hundred generated answer pairs (seeded: equal and unequal
values written as integers, decimals, fractions, LaTeX fractions, percentages, roots, multiples of
pi, tuples, intervals, equations and choice letters) are graded by both, and the verdicts must be
identical. MathRuler has no time limit, so the generated inputs stay small and well formed; the
hang guards that make our grader differ on adversarial inputs are tested in the other file.
"""

from __future__ import annotations

import random

import pytest

from vppo.rewards.grader import grade_answer

mathruler = pytest.importorskip("mathruler.grader", reason="mathruler is in the dev extra")

from test_rewards_grader import PARITY_TABLE  # noqa: E402


def _forms(rng: random.Random) -> tuple[str, list[str]]:
    """A value written as ground truth, and several ways a response might write it (some wrong)."""
    kind = rng.choice(
        [
            "int",
            "frac",
            "decimal",
            "percent",
            "sqrt",
            "pi",
            "tuple",
            "interval",
            "equation",
            "choice",
            "negative",
        ]
    )
    a, b = rng.randint(1, 40), rng.randint(2, 12)
    if kind == "int":
        return str(a), [
            str(a),
            f"{a}.0",
            f"{a}.00",
            f"\\text{{{a}}}",
            f"{a} cm",
            str(a + 1),
            f"{a},000",
        ]
    if kind == "frac":
        return f"\\frac{{{a}}}{{{b}}}", [
            f"{a}/{b}",
            f"\\dfrac{{{a}}}{{{b}}}",
            f"{a / b:.6f}",
            f"\\frac{{{2 * a}}}{{{2 * b}}}",
            f"\\frac{{{b}}}{{{a}}}",
            f"\\frac{a}{b}" if a < 10 and b < 10 else f"{a}/{b + 1}",
        ]
    if kind == "decimal":
        value = a / 4
        return f"{value}", [
            f"{value}",
            f"{value:.3f}",
            f"\\frac{{{a}}}{{4}}",
            f"{value + 0.25}",
            f"{value}0",
        ]
    if kind == "percent":
        return f"{a}\\%", [f"{a}%", f"{a}\\%", f"{a}", f"{a / 100}", f"{a + 5}\\%"]
    if kind == "sqrt":
        return f"\\sqrt{{{b}}}", [
            f"\\sqrt{b}",
            f"\\sqrt{{{b}}}",
            f"{b}^{{1/2}}",
            f"\\sqrt{{{b + 1}}}",
            f"{b**0.5:.4f}",
        ]
    if kind == "pi":
        return f"{a}\\pi", [
            f"{a}\\pi",
            f"{a} \\pi",
            f"\\pi {a}",
            f"{a}*pi",
            f"{a + 1}\\pi",
            f"{a * 3.14159:.2f}",
        ]
    if kind == "tuple":
        return f"({a}, {b})", [
            f"({a},{b})",
            f"({a}, {b})",
            f"({b}, {a})",
            f"\\left({a}, {b}\\right)",
            f"{a}, {b}",
        ]
    if kind == "interval":
        return f"[{a}, {a + b})", [
            f"[{a},{a + b})",
            f"[{a}, {a + b}]",
            f"({a}, {a + b})",
            f"[{a}, {a + b})",
        ]
    if kind == "equation":
        return f"x={a}", [f"{a}", f"x = {a}", f"x={a}", f"y={a}", f"x={a + 1}"]
    if kind == "choice":
        letter = rng.choice("ABCD")
        other = rng.choice([c for c in "ABCD" if c != letter])
        return letter, [
            letter,
            letter.lower(),
            f"({letter})",
            f"{letter}.",
            other,
            f"\\text{{{letter}}}",
        ]
    return f"-{a}", [f"-{a}", f"- {a}", f"{a}", f"-{a}.0", f"(-{a})", f"−{a}"]


def _generated_pairs(count: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    while len(pairs) < count:
        truth, forms = _forms(rng)
        pairs += [(given, truth) for given in forms]
    return pairs[:count]


def test_frozen_table_still_matches_live_mathruler():
    for given, truth, expected in PARITY_TABLE:
        assert mathruler.grade_answer(given, truth) is expected, (given, truth)


def test_generated_pairs_get_mathrulers_verdicts():
    pairs = _generated_pairs()
    disagreements = [
        (given, truth, mathruler.grade_answer(given, truth))
        for given, truth in pairs
        if grade_answer(given, truth) != mathruler.grade_answer(given, truth)
    ]
    assert not disagreements, disagreements[:10]
    verdicts = [mathruler.grade_answer(g, t) for g, t in pairs]
    assert 0.2 < sum(verdicts) / len(verdicts) < 0.8  # the pairs exercise both verdicts
