"""Reading a free-text reply's final answer: the last `\\boxed{...}`, else a last "Answer:" line, else none.

The text solver's replies end with their answer in `\\boxed{...}` (nested braces allowed; the LAST box
counts, so a box written while reasoning does not). A reply without a box is read from its last line
that starts with "Answer:" or "Final answer:". What was read becomes the same `Answer` the computer
gives a scaffold, so r_ans is decided by `rewards.answer_reward` under the same rules:

- a value with a unit (`6 N`, `109^\\circ`, `109\\ \\mathrm{degree}`, `3.5 \\times 10^{4}\\ \\text{N/C}`) is
  split into its number and its unit after the LaTeX is stripped (`\\mathrm`, `\\text`, `\\ `, `~`,
  `^{\\circ}` -> degree, `\\%` -> percent); the unit must parse with pint (`causal_grpo.scaffold.units`);
- an integer or a fraction (`204`, `\\frac{3}{4}`, `-7/2`) is exact; a decimal is not (a model's decimal is
  usually rounded), so it is compared numerically;
- any other LaTeX math (`2\\sqrt{3}`, `\\frac{\\pi}{4}`) goes through math-verify's parser, exact when
  sympy's value has no float in it.

Pure functions, no model; anything unreadable is "no answer" with the reason, never an exception.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Literal

import sympy
from math_verify import LatexExtractionConfig, parse
from pydantic import BaseModel

from causal_grpo.scaffold import PRECISE_DIGITS, Answer, FormulaError, units

MAX_ANSWER_CHARS = 200
"""Longest answer text that is parsed (math-verify's own timeouts are off; see rewards.MAX_MATH_CHARS)."""
BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
ANSWER_LINE = re.compile(r"^\W*(?:final\s+)?answer\s*(?:is)?\s*[:：]\s*(?P<rest>.+?)\s*$", re.I | re.M)
NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:/[1-9]\d*)?")
INTEGER_OR_FRACTION = re.compile(r"[+-]?\d+(?:/[1-9]\d*)?")
FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
TEN_POWER = re.compile(r"\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*\{?\s*([+-]?\s*\d+)\s*\}?")
WRAPPERS = re.compile(r"\\(?:mathrm|text|textrm|mathit|operatorname|mbox|rm|mathbf)\s*\{([^{}]*)\}")
DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree")
SPACES = re.compile(r"\\[ ,;:!]|~|\\quad|\\qquad")
DROPPED = re.compile(r"\\left|\\right|\\displaystyle|\$")

Source = Literal["boxed", "answer line", "none"]


class ReadAnswer(BaseModel):
    """What was read from a reply: the raw answer text, where it came from, the parsed `Answer` or why not."""

    raw: str | None = None
    source: Source = "none"
    answer: Answer | None = None
    error: str | None = None


def boxed(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` (or `\\fbox{...}`) in order, braces inside them balanced."""
    found = []
    for match in BOX.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                found.append(text[start:i].strip())
                break
    return found


def final_text(reply: str) -> tuple[str | None, Source]:
    """The final answer's text: the last box's content, else the last "Answer:" line's rest, else None."""
    boxes = boxed(reply)
    if boxes:
        return boxes[-1], "boxed"
    lines = list(ANSWER_LINE.finditer(reply))
    if lines:
        return lines[-1].group("rest").strip().strip("*").rstrip(".").strip(), "answer line"
    return None, "none"


def plain(latex: str) -> str:
    """LaTeX of a value with a unit as plain text: `3.5\\times 10^{4}\\ \\mathrm{N/C}` -> `3.5e4 N/C`."""
    text = DROPPED.sub("", latex)
    text = text.replace("{,}", "").replace("\\%", " percent").replace("%", " percent")
    text = DEGREE.sub(" degree", text)
    for _ in range(3):  # nested wrappers, innermost first
        text = WRAPPERS.sub(r" \1 ", text)
    text = SPACES.sub(" ", text)
    text = FRAC.sub(r"(\1)/(\2)", text)
    text = TEN_POWER.sub(lambda m: "e" + re.sub(r"\s", "", m.group(1)), text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # thousands separators
    text = text.replace("\\cdot", "*").replace("\\times", "*")
    return " ".join(text.split())


def _unit(text: str) -> str | None:
    """A unit text pint understands ('' for none), or None."""
    cleaned = text.replace("{", "").replace("}", "").replace("\\", "").strip().strip(".").strip()
    if cleaned in ("", "units", "unit"):
        return ""
    try:
        units.parse_unit(cleaned)
    except FormulaError:
        return None
    return cleaned


def _number_answer(number: str, unit: str) -> Answer:
    if INTEGER_OR_FRACTION.fullmatch(number):
        value = Fraction(number)
        return Answer(exact=str(value), numeric=float(value), unit=unit, is_exact=True)
    numeric = float(Fraction(number)) if "/" in number else float(number)
    return Answer(exact=f"{numeric:.15g}", numeric=numeric, unit=unit, is_exact=False)


def _latex_answer(latex: str) -> Answer | None:
    """Any other math through math-verify; None when it is not a finite real number."""
    parsed = parse(f"${latex}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
    expr = parsed[0] if parsed and isinstance(parsed[0], sympy.Basic) else None
    if expr is None or not getattr(expr, "is_number", False):
        return None
    expr = expr.doit()  # math-verify leaves sqrt(9) and the like unevaluated
    try:
        numeric = float(sympy.N(expr, 17))
    except (TypeError, ValueError):
        return None
    if not math.isfinite(numeric):
        return None
    exact = not expr.has(sympy.Float)
    rational = exact and expr.is_Rational
    return Answer(
        exact=str(expr) if exact else f"{numeric:.15g}",
        numeric=numeric,
        is_exact=exact,
        digits=None if rational or not exact else str(sympy.N(expr, PRECISE_DIGITS)),
    )


def parse_answer(text: str) -> tuple[Answer | None, str | None]:
    """An answer text (a box's content) as an `Answer`, or None with the reason."""
    if len(text) > MAX_ANSWER_CHARS:
        return None, f"the answer is longer than {MAX_ANSWER_CHARS} characters"
    flat = plain(text)
    compact = flat.replace("(", "").replace(")", "") if re.fullmatch(r"\(?[+-]?\d+\)?/\(\d+\)", flat) else flat
    number = NUMBER.match(compact.replace(" ", "", 1) if compact[:1] in "+-" else compact)
    if number:
        unit = _unit(compact[number.end() :])
        if unit is not None:
            return _number_answer(number.group(), unit), None
    answer = _latex_answer(text)
    if answer is not None:
        return answer, None
    return None, f"{text[:80]!r} is not a number, a value with a known unit, or math that has a value"


def read_answer(reply: str) -> ReadAnswer:
    """The final answer of a free-text reply (rules in the module docstring)."""
    raw, source = final_text(reply)
    if raw is None:
        return ReadAnswer(error='no \\boxed{...} and no "Answer:" line in the reply')
    if not raw:
        return ReadAnswer(raw=raw, source=source, error="the final answer is empty")
    answer, error = parse_answer(raw)
    return ReadAnswer(raw=raw, source=source, answer=answer, error=error)
