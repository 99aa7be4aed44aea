"""Boxed-answer extraction and MathRuler-compatible answer grading.

VPPO's training reward and the PAPO-Eval benchmark scores both grade a response the same way:
remove the spaces around ``<``, ``>`` and ``/``, take the content of the last ``\\boxed{...}``
and compare it with the ground truth using MathRuler's ``grade_answer`` (PRM800K/MATH-style
normalisation, then a sympy check). This module reproduces that verdict, input for input, so
rewards and scores are comparable with the paper's tables; ``docs/rewards.md`` lists the rules.

Beyond MathRuler it never raises on odd input, and it refuses sympy work that could stall a
training step: the expression is tokenized and parsed unevaluated first, and anything that could
grow without bound (power towers, large exponents, factorials of large numbers, eagerly evaluated
sympy functions, Python containers, attribute access) is declined as "not equal" before sympy
evaluates it. On the main thread of a Unix process a wall-clock limit backs this up.
"""

from __future__ import annotations

import contextlib
import io
import keyword
import logging
import math
import re
import signal
import threading
import tokenize
import warnings
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

__all__ = [
    "GRADERS",
    "MISSING_ANSWER",
    "extract_boxed_content",
    "grade_answer",
    "grade_answer_math_verify",
    "normalize_response",
    "unwrap_boxed",
]

MISSING_ANSWER = "None"
"""What `extract_boxed_content` returns when there is no complete box (MathRuler's sentinel)."""

_BOX_OPENER = "\\boxed{"

# Wall-clock limit for one `grade_answer` call, where a SIGALRM timer can be used.
GRADE_TIME_LIMIT_S = 5.0

# Limits of the guard in front of sympy (see `_sympy_input_is_safe`).
_MAX_SYMPY_CHARS = 2000
_MAX_TREE_NODES = 1000
_MAX_EXPONENT = 1000.0
_MAX_RESULT_DIGITS = 10_000.0
_MAX_POLY_DEGREE = 100.0
_MAX_FACTORIAL_ARG = 1000
_MAX_LITERAL_CHARS = 500
_MAX_LITERAL_EXPONENT = 1000
_MAX_NESTING = 30


# --------------------------------------------------------------------------------------------
# Extraction and the response pre-step
# --------------------------------------------------------------------------------------------


def extract_boxed_content(text: str) -> str:
    """Content of the last ``\\boxed{...}`` in ``text``, braces matched, spaces stripped.

    Only the last ``\\boxed{`` is considered: if its braces never close, the answer is missing
    even when an earlier box is complete. ``\\boxed 5`` (no braces) is not a box. A missing box
    yields the string ``"None"``, as in MathRuler; non-string input also yields ``"None"``.
    """
    if not isinstance(text, str):
        return MISSING_ANSWER
    start = text.rfind(_BOX_OPENER)
    if start < 0:
        return MISSING_ANSWER
    body_start = start + len(_BOX_OPENER)
    depth = 0
    for pos in range(body_start, len(text)):
        char = text[pos]
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return text[body_start:pos].strip()
            depth -= 1
    return MISSING_ANSWER


def unwrap_boxed(text: str) -> str:
    """``\\boxed{17}`` -> ``17`` when the whole string is one box; else ``text`` unchanged.

    For ground-truth answers stored boxed (ViRL39K does): the box must open at the start and its
    matching brace must be the last character, so ``\\boxed{1}+\\boxed{2}`` and ``\\boxed{1} cm``
    stay as they are. The content is stripped of surrounding whitespace.
    """
    if not (text.startswith(_BOX_OPENER) and text.endswith("}")):
        return text
    depth = 0
    for pos in range(len(_BOX_OPENER) - 1, len(text)):
        char = text[pos]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[len(_BOX_OPENER) : -1].strip() if pos == len(text) - 1 else text
    return text


_SPACED_TAG_CHAR = re.compile(r"\s*([<>/])\s*")


def normalize_response(text: str) -> str:
    """Drop all whitespace next to ``<``, ``>`` and ``/`` (``"< think >"`` -> ``"<think>"``).

    This is the pre-step of the official reward and of PAPO-Eval's scorer (it repairs the tag
    spacing of Qwen2.5-VL-32B); it also turns ``"1 / 2"`` into ``"1/2"`` before extraction.
    """
    return _SPACED_TAG_CHAR.sub(r"\1", text)


# --------------------------------------------------------------------------------------------
# Stage 1: the MATH (Hendrycks) answer rewrite
# --------------------------------------------------------------------------------------------


class _RewriteAborted(Exception):
    """A rewrite rule met input it cannot handle; the stage then keeps its unrewritten input."""


# `\text{...}` spanning the whole answer (a trailing newline allowed, none inside).
_WHOLE_TEXT_WRAPPER = re.compile(r"\\text\{([^\n]+)\}\n?\Z")


def _unwrap_whole_text(answer: str) -> str:
    match = _WHOLE_TEXT_WRAPPER.match(answer)
    return answer if match is None else match.group(1)


def _drop_unit_suffix(answer: str) -> str:
    # A `\text{ ` (with a space) introduces a trailing unit; more than one is not understood.
    pieces = answer.split("\\text{ ")
    if len(pieces) > 2:
        raise _RewriteAborted
    return pieces[0]


def _brace_sqrt_arguments(answer: str) -> str:
    # `\sqrt3x` -> `\sqrt{3}x`: a bare one-character argument gets braces.
    head, *tails = answer.split("\\sqrt")
    out = [head]
    for tail in tails:
        if not tail:
            raise _RewriteAborted
        out.append("\\sqrt" + (tail if tail[0] == "{" else "{" + tail[0] + "}" + tail[1:]))
    return "".join(out)


def _brace_frac_arguments(answer: str) -> str:
    # `\frac12` -> `\frac{1}{2}`, `\frac1{72}` -> `\frac{1}{72}`; a one-character tail is hopeless
    # and leaves the whole answer as it was.
    head, *tails = answer.split("\\frac")
    out = [head]
    for tail in tails:
        if not tail:
            raise _RewriteAborted
        if tail[0] == "{":
            out.append("\\frac" + tail)
            continue
        if len(tail) < 2:
            return answer
        numerator, second = tail[0], tail[1]
        if second == "{":
            out.append("\\frac{" + numerator + "}" + tail[1:])
        else:
            out.append("\\frac{" + numerator + "}{" + second + "}" + tail[2:])
    return "".join(out)


_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")


def _is_canonical_int(text: str) -> bool:
    # Exactly the decimal spelling Python prints for an int: no sign on 0, no leading zeros.
    return _CANONICAL_INT.fullmatch(text) is not None and len(text.lstrip("-")) <= 4300


def _slash_to_frac(answer: str) -> str:
    parts = answer.split("/")
    if len(parts) == 2 and all(_is_canonical_int(part) for part in parts):
        return "\\frac{" + parts[0] + "}{" + parts[1] + "}"
    return answer


def _math_rewrite(answer: str) -> str:
    """The MATH-dataset answer rewrite; raises `_RewriteAborted` where that one gives up."""
    for old, new in (
        ("\n", ""),
        ("\\!", ""),
        ("\\\\", "\\"),
        ("tfrac", "frac"),
        ("dfrac", "frac"),
        ("\\left", ""),
        ("\\right", ""),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\$", ""),
    ):
        answer = answer.replace(old, new)
    if "\\text{ " in answer:
        answer = _drop_unit_suffix(answer)
    answer = answer.replace("\\%", "").replace("%", "")
    answer = answer.replace(" .", " 0.").replace("{.", "{0.")
    if not answer:
        return answer
    if answer[0] == ".":
        answer = "0" + answer
    # A short left-hand side is a variable name: "x = 5" -> " 5", "k=3" -> "3".
    sides = answer.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        answer = sides[1]
    answer = _brace_sqrt_arguments(answer)
    answer = answer.replace(" ", "")
    answer = _brace_frac_arguments(answer)
    if answer == "0.5":
        answer = "\\frac{1}{2}"
    return _slash_to_frac(answer)


def _math_normalize(answer: str) -> str:
    answer = _unwrap_whole_text(answer.strip()).strip()
    try:
        return _math_rewrite(answer)
    except _RewriteAborted:
        return answer


# --------------------------------------------------------------------------------------------
# Stage 2: the PRM800K expression normalisation
# --------------------------------------------------------------------------------------------

_PRM_REPLACEMENTS = (
    ("\\%", "%"),
    ("\\$", "$"),
    ("$", ""),
    ("%", ""),
    (" or ", " , "),
    (" and ", " , "),
    ("million", "*10^6"),
    ("billion", "*10^9"),
    ("trillion", "*10^12"),
)

# Unit words are removed wherever they occur (no word boundaries), one word after another; the
# order matters because removing one word can join letters into another.
_UNIT_PATTERNS = tuple(
    re.compile(word + r"(es)?(s)? *(\^[0-9]+)?")
    for word in (
        "degree",
        "cm",
        "centimeter",
        "meter",
        "mile",
        "second",
        "minute",
        "hour",
        "day",
        "week",
        "month",
        "year",
        "foot",
        "feet",
        "inch",
        "yard",
    )
)
_DEGREE_MARK = re.compile(r"\^ *\\circ")
_THIN_SPACE_COMMA = re.compile(r",\\! *")
_SPACE_AFTER_MINUS = re.compile(r"- *")
_MIXED_NUMBER = re.compile(r"([0-9]) +([0-9])")

# A comma between digits that is followed by exactly three digits is a thousands separator.
_THOUSANDS_COMMA = re.compile(r"(\d),(\d{3})($|\D)")

_LATEX_SYMBOL_WORDS = (
    ("√", "sqrt"),
    ("π", "pi"),
    ("∞", "inf"),
    ("∪", "U"),
    ("·", "*"),
    ("×", "*"),
)


def _drop_thousands_commas(expr: str) -> str:
    # Repeated single passes (not one global rewrite): a pass consumes the character after each
    # match, so "1,234,567,890" ends as "1234,567890", exactly as the reference grader has it.
    while True:
        rewritten = _THOUSANDS_COMMA.sub(r"\1\2\3", expr)
        if rewritten == expr:
            return expr
        expr = rewritten


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _near_int(value: float) -> bool:
    return math.isfinite(value) and abs(value - round(value)) <= 1e-7


def _reads_as_int(text: str) -> bool:
    value = _float_or_none(_drop_thousands_commas(text))
    return value is not None and _near_int(value)


_converting = threading.local()


class _QuietWhileConverting(logging.Filter):
    """Drops pylatexenc's warnings about malformed answers while this module converts them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_converting, "active", False)


@lru_cache(maxsize=1)
def _latex_converter() -> Any:
    from pylatexenc.latex2text import LatexNodes2Text

    quiet = _QuietWhileConverting()
    for name in ("pylatexenc.latexwalker", "pylatexenc.latex2text"):
        logging.getLogger(name).addFilter(quiet)
    return LatexNodes2Text()


def _latex_to_plain(expr: str) -> str:
    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac")
    converter = _latex_converter()
    _converting.active = True
    try:
        # A space before each fraction keeps mixed numbers ("3\frac{1}{2}") apart.
        expr = converter.latex_to_text(expr.replace("\\frac", " \\frac"))
    finally:
        _converting.active = False
    for symbol, word in _LATEX_SYMBOL_WORDS:
        expr = expr.replace(symbol, word)
    return expr.strip()


def _prm_normalize(expr: str) -> str:
    expr = _unwrap_whole_text(expr)
    for old, new in _PRM_REPLACEMENTS:
        expr = expr.replace(old, new)
    for unit in _UNIT_PATTERNS:
        expr = unit.sub("", expr)
    expr = _DEGREE_MARK.sub("", expr)
    if expr[:1] == "{" and expr[-1:] == "}":
        expr = expr[1:-1]
    expr = _THIN_SPACE_COMMA.sub("", expr)
    value = _float_or_none(expr)
    if value is not None and _near_int(value):
        expr = str(round(value))
    if "\\" in expr:
        # pylatexenc fails on some malformed LaTeX; the expression then stays as it is.
        with contextlib.suppress(Exception):
            expr = _latex_to_plain(expr)
    expr = _SPACE_AFTER_MINUS.sub("-", expr)
    expr = _MIXED_NUMBER.sub(r"\1+\2", expr)
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _reads_as_int(expr):
        # Truncation, not rounding, as in the reference: "2.99999999999" becomes "2".
        expr = str(int(float(_drop_thousands_commas(expr))))
    return expr


# --------------------------------------------------------------------------------------------
# Stage 3: element-wise comparison
# --------------------------------------------------------------------------------------------

_BRACKETS = "()[]"
# A plain fraction "a/b" (one optional stray character after each number).
_PLAIN_FRACTION = re.compile(r"-?[0-9]+[^\n]?/0*[1-9][0-9]*[^\n]?\n?\Z")


def _elements(expr: str) -> list[str]:
    """Split a bracketed tuple or interval "(a,b)" / "[a,b)" into its stripped elements."""
    expr = _drop_thousands_commas(expr)
    if not expr:
        return []
    inner = expr[1:-1]
    if (
        len(expr) > 2
        and expr[0] in _BRACKETS
        and expr[-1] in _BRACKETS
        and not any(bracket in inner for bracket in _BRACKETS)
    ):
        return [element.strip() for element in inner.split(",")]
    return [expr]


def _is_plain_fraction(expr: str) -> bool:
    return _PLAIN_FRACTION.match(expr) is not None


def _elements_match(truth: str, given: str) -> bool:
    if _is_plain_fraction(truth) and _is_plain_fraction(given):
        # An unreduced fraction must not pass: plain fractions compare as strings.
        return truth == given
    if _reads_as_int(truth) != _reads_as_int(given):
        # An integer answer is never matched through sympy by a non-integer-looking one.
        return False
    return _equal_under_sympy(truth, given)


def _grade_normalized(given: str, truth: str) -> bool:
    if _math_normalize(truth) == _math_normalize(given):
        return True
    truth_expr = _prm_normalize(truth)
    given_expr = _prm_normalize(given)
    if truth_expr == given_expr:
        return True
    if not given_expr:
        return False
    truth_elements = _elements(truth_expr)
    given_elements = _elements(given_expr)
    if len(truth_elements) > 1 and (
        truth_expr[0] != given_expr[0] or truth_expr[-1] != given_expr[-1]
    ):
        return False  # a tuple or interval needs the same brackets
    if len(truth_elements) != len(given_elements):
        return False
    return all(_elements_match(t, g) for t, g in zip(truth_elements, given_elements, strict=True))


# --------------------------------------------------------------------------------------------
# Stage 4: sympy, behind guards
# --------------------------------------------------------------------------------------------

# The reference grader's own refusals: unknown text or more than two variables, braced or
# parenthesised exponents, power towers and exponents of two or more digits.
_REFUSED_SUBSTRINGS = ("^{", "^(")
_REFUSED_PATTERNS = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))


def _variable_count(expr: str) -> int:
    stripped = expr.replace("sqrt", "").replace("frac", "")
    return len({char for char in stripped if char.isalpha()})


def _reference_allows(expr: str) -> bool:
    if _variable_count(expr) > 2:
        return False
    if any(bad in expr for bad in _REFUSED_SUBSTRINGS):
        return False
    return not any(pattern.search(expr) for pattern in _REFUSED_PATTERNS)


@lru_cache(maxsize=1)
def _sympy_tools() -> tuple[Any, Any, tuple[Any, ...], dict[str, Any]]:
    import builtins
    import types

    import sympy
    from sympy.parsing import sympy_parser

    transformations = sympy_parser.standard_transformations + (
        sympy_parser.implicit_multiplication_application,
    )
    # The names `parse_expr` resolves by default: sympy's namespace plus builtin functions.
    namespace: dict[str, Any] = {}
    exec("from sympy import *", namespace)  # noqa: S102 - a fixed import, no user input
    for name, obj in vars(builtins).items():
        if isinstance(obj, types.BuiltinFunctionType):
            namespace.setdefault(name, obj)
    return sympy, sympy_parser, transformations, namespace


# Functions that sympy's parser keeps unevaluated under `evaluate=False`, so the tree check sees
# their arguments before anything is computed. Any other callable in the parse namespace (N, S,
# ff, rf, factorial, frac, builtins, ...) may evaluate eagerly and is declined.
_SAFE_FUNCTIONS = frozenset(
    {
        "Abs",
        "im",
        "re",
        "sign",
        "arg",
        "conjugate",
        "sqrt",
        "cbrt",
        "exp",
        "ln",
        "log",
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "asin",
        "acos",
        "atan",
        "acot",
        "asec",
        "acsc",
        "sinh",
        "cosh",
        "tanh",
        "coth",
        "sech",
        "csch",
        "asinh",
        "acosh",
        "atanh",
        "acoth",
        "asech",
        "acsch",
    }
)
_SAFE_OPERATORS = frozenset(
    {"+", "-", "*", "**", "/", "//", "(", ")", ",", "=", "==", "!=", "<", ">", "<=", ">="}
)


_DECIMAL_EXPONENT = re.compile(r"[eE]([+-]?[0-9][0-9_]*)")


def _number_is_small(literal: str) -> bool:
    # sympy turns "1e999999" into an exact 10**999999 while parsing, in one uninterruptible step.
    if len(literal) > _MAX_LITERAL_CHARS:
        return False
    if literal[:2].lower() in ("0x", "0o", "0b"):
        return True
    exponent = _DECIMAL_EXPONENT.search(literal)
    return exponent is None or abs(int(exponent.group(1).replace("_", ""))) <= _MAX_LITERAL_EXPONENT


def _tokens_are_safe(py_expr: str) -> bool:
    """Token-level screen: modest numbers, plain names, arithmetic and small factorials only."""
    namespace = _sympy_tools()[3]
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(py_expr).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    previous = None
    depth = 0
    for token in tokens:
        kind, text = token.type, token.string
        if kind in (
            tokenize.NEWLINE,
            tokenize.NL,
            tokenize.ENDMARKER,
            tokenize.INDENT,
            tokenize.DEDENT,
        ):
            continue
        if kind == tokenize.NAME:
            if keyword.iskeyword(text):
                return False
            if callable(namespace.get(text)) and text not in _SAFE_FUNCTIONS:
                return False
        elif kind == tokenize.NUMBER:
            if not _number_is_small(text):
                return False
        elif text == "!":
            # Factorial notation: only directly after an integer literal of bounded size.
            if previous is None or previous.type != tokenize.NUMBER:
                return False
            if not previous.string.isdigit() or int(previous.string) > _MAX_FACTORIAL_ARG:
                return False
        elif kind == tokenize.OP:
            if text not in _SAFE_OPERATORS:
                return False
            # sympy's implicit-multiplication pass is superlinear in the nesting depth.
            depth += {"(": 1, ")": -1}.get(text, 0)
            if depth > _MAX_NESTING:
                return False
        elif not text.isspace():
            return False  # strings, stray characters
        previous = token
    return True


def _magnitude(node: Any) -> float:
    """log10 of |value| for a numeric, already screened subtree (inf when it does not fit)."""
    try:
        value = abs(complex(node.evalf(15)))
    except (TypeError, ValueError, OverflowError, ArithmeticError, AttributeError):
        return math.inf
    if not math.isfinite(value):
        return math.inf
    return math.log10(value) if value > 0 else 0.0


def _tree_is_bounded(root: Any) -> bool:
    """Walk an unevaluated parse tree and decline anything that evaluates to a huge object.

    Numeric powers may not have more than ``_MAX_RESULT_DIGITS`` digits or an exponent above
    ``_MAX_EXPONENT``; powers of expressions with variables may not reach polynomial degree
    ``_MAX_POLY_DEGREE`` (sympy could expand them); the tree is at most ``_MAX_TREE_NODES``.
    """
    nodes = 0

    def degree(node: Any) -> float:
        nonlocal nodes
        nodes += 1
        if nodes > _MAX_TREE_NODES:
            return math.inf
        if not node.args:
            return 1.0 if node.free_symbols else 0.0
        child_degrees = [degree(arg) for arg in node.args]
        if any(math.isinf(d) for d in child_degrees):
            return math.inf
        if node.is_Pow:
            base, exponent = node.args
            if exponent.free_symbols:
                return child_degrees[0] + child_degrees[1]
            exponent_size = _magnitude(exponent)
            if exponent_size > math.log10(_MAX_EXPONENT):
                return math.inf
            scale = 10.0**exponent_size
            if base.free_symbols:
                result = child_degrees[0] * max(scale, 1.0)
                return result if result <= _MAX_POLY_DEGREE else math.inf
            digits = scale * max(_magnitude(base), 1.0)
            return 0.0 if digits <= _MAX_RESULT_DIGITS else math.inf
        if node.is_Mul:
            return sum(child_degrees)
        return max(child_degrees)

    return not math.isinf(degree(root))


def _sympy_input_is_safe(py_expr: str) -> bool:
    if len(py_expr) > _MAX_SYMPY_CHARS or not _tokens_are_safe(py_expr):
        return False
    _, sympy_parser, transformations, _ = _sympy_tools()
    try:
        tree = sympy_parser.parse_expr(py_expr, transformations=transformations, evaluate=False)
    except Exception:
        return False
    try:
        return _tree_is_bounded(tree)
    except (RecursionError, TypeError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    # Tuples in arithmetic ("2(1,2)") draw sympy deprecation warnings; here they are just unequal
    # answers. `catch_warnings` swaps a process-wide filter list, which is only safe when no other
    # thread does the same, so worker threads leave the filters alone.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _equal_under_sympy(truth: str, given: str) -> bool:
    expr = f"({truth})-({given})"
    if not _reference_allows(expr):
        return False
    py_expr = expr.replace("^", "**")
    sympy, sympy_parser, transformations, _ = _sympy_tools()
    with _quiet_warnings():
        if not _sympy_input_is_safe(py_expr):
            return False
        try:
            difference = sympy_parser.parse_expr(py_expr, transformations=transformations)
            return bool(sympy.simplify(difference) == 0)
        except Exception:
            return False


# --------------------------------------------------------------------------------------------
# Time limit
# --------------------------------------------------------------------------------------------


class _GradeTimeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException, so sympy's `except Exception` passes it."""


def _alarm_available() -> bool:
    if not hasattr(signal, "setitimer"):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    # Leave SIGALRM alone when someone else uses it.
    unclaimed = signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    return unclaimed and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    if seconds <= 0 or not _alarm_available():
        yield
        return

    armed = [True]

    def on_alarm(signum: int, frame: Any) -> None:
        # A one-shot timer that fires while the block is being left is ignored.
        if armed[0]:
            raise _GradeTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            armed[0] = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------
# Public graders
# --------------------------------------------------------------------------------------------


def _as_answer_text(value: object) -> str | None:
    """Strings pass; ints and floats (not bools) become their `str`; anything else is None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def grade_answer(given: str, ground_truth: str) -> bool:
    """MathRuler-compatible verdict: is ``given`` the same answer as ``ground_truth``?

    True when the two agree after the MATH answer rewrite, or after the PRM800K normalisation,
    or element by element under sympy (``simplify(truth - given) == 0``), with MathRuler's rules:
    an element that reads as an integer only matches another one that does (so ``10^3`` does not
    match ``1000``), two plain fractions must be identical strings (so unreduced fractions fail),
    tuples and intervals need the same brackets and the same number of elements and are compared
    in order, and sympy is skipped for more than two distinct letters or for exponents that are
    braced, parenthesised, stacked or of two or more digits. Never raises: odd input, guard
    refusals, sympy errors and timeouts all give False. Numbers (int or float, not bool) are
    read as ``str(value)``.

    Args:
        given: the model's answer, usually ``extract_boxed_content(normalize_response(text))``.
        ground_truth: the reference answer.
    """
    given_text = _as_answer_text(given)
    truth_text = _as_answer_text(ground_truth)
    if given_text is None or truth_text is None:
        return False
    try:
        with _time_limit(GRADE_TIME_LIMIT_S):
            return _grade_normalized(given_text, truth_text)
    except (_GradeTimeout, Exception):
        return False


_MATH_VERIFY_LETTERS = tuple("ABCDEFGHIJ")


@lru_cache(maxsize=1)
def _math_verify() -> Any:
    try:
        import math_verify
    except ImportError as error:
        raise ImportError(
            "grade_answer_math_verify needs the optional package math-verify; install it with "
            "`pip install math-verify`."
        ) from error
    return math_verify


def grade_answer_math_verify(given: str, ground_truth: str) -> bool:
    """Alternative, more lenient verdict from Hugging Face's math-verify (never the default).

    Both strings are read as the content of a ``\\boxed{}`` (LaTeX, plain expressions, and the
    letters A-J), then compared with ``math_verify.verify(gold, answer)``: numeric tolerance,
    order-free sets, and percentages are accepted where MathRuler refuses them, so scores are
    higher than the paper's protocol gives. Its signal-based timeouts are used on the main thread
    only (they cannot run elsewhere). Raises ImportError when math-verify is not installed;
    otherwise never raises.
    """
    math_verify = _math_verify()
    given_text = _as_answer_text(given)
    truth_text = _as_answer_text(ground_truth)
    if given_text is None or truth_text is None:
        return False
    on_main_thread = threading.current_thread() is threading.main_thread()
    timeout = 5 if on_main_thread else None
    targets = (
        math_verify.LatexExtractionConfig(),
        math_verify.ExprExtractionConfig(),
        math_verify.StringExtractionConfig(strings=_MATH_VERIFY_LETTERS),
    )
    try:
        gold = math_verify.parse(
            "\\boxed{" + truth_text + "}", extraction_config=targets, parsing_timeout=timeout
        )
        answer = math_verify.parse(
            "\\boxed{" + given_text + "}", extraction_config=targets, parsing_timeout=timeout
        )
        if not gold or not answer:
            return False
        return bool(math_verify.verify(gold, answer, timeout_seconds=timeout))
    except Exception:
        return False


GRADERS: dict[str, Callable[[str, str], bool]] = {
    "mathruler": grade_answer,
    "math_verify": grade_answer_math_verify,
}
"""Answer graders by name; every one takes ``(given, ground_truth)`` and returns a bool."""
