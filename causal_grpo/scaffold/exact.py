"""Exact values in their simplest form: proving an irrational-looking expression is a small rational.

sympy leaves `log(64)/log(4)` or `sqrt(30)*(312*sqrt(30) + ...)/60` as they are; a model's graph often
reaches an integer that way. `simplest` guesses the rational its 50 digits point to and proves it
with sympy's `equals`, else keeps sympy's `simplify` when it is shorter, all within a CPU deadline.
"""

from __future__ import annotations

from fractions import Fraction

import sympy

from causal_grpo.scaffold.budget import OutOfTime, cpu_bounded

PRECISE_DIGITS = 50
"""Significant digits an exact irrational value is evaluated to, for telling it from a rational."""
RATIONAL_GUESS_DENOMINATOR = 10**6
"""Largest denominator of the rational an irrational-looking value is tried against."""
GUESS_TOL = sympy.Float(10, 5) ** -40
"""How close (relative) a value's digits must be to its guess."""


def rational(value: sympy.Expr, deadline: float | None = None) -> sympy.Rational | None:
    """The small rational `value` provably equals, or None (also when time runs out)."""
    if value.is_Rational:
        return value
    try:
        with cpu_bounded(deadline):
            return _proven_rational(value, sympy.N(value, PRECISE_DIGITS))
    except OutOfTime:
        return None
    except (ArithmeticError, TypeError, ValueError, RecursionError):  # sympy giving up on an odd value
        return None


def guessed_rational(approx: sympy.Expr, tol: sympy.Float = GUESS_TOL) -> sympy.Rational | None:
    """The rational (denominator at most 10**6) a float's digits point to within `tol`, relative; a guess to prove."""
    if not approx.is_Float:
        return None
    fraction = Fraction(str(approx)).limit_denominator(RATIONAL_GUESS_DENOMINATOR)
    guess = sympy.Rational(fraction.numerator, fraction.denominator)
    return guess if abs(approx - guess) <= tol * max(1, abs(guess)) else None


def _proven_rational(value: sympy.Expr, approx: sympy.Expr) -> sympy.Rational | None:
    guess = guessed_rational(approx)
    return guess if guess is not None and (value - guess).equals(0) is True else None


def simplest(value: sympy.Expr, deadline: float) -> tuple[sympy.Expr, str | None]:
    """An exact irrational-looking value in its simplest form found before `deadline`, and its digits.

    A value within 10**-40 of a rational with a small denominator is proven equal to it or left as it is;
    otherwise sympy's `simplify` is kept when it is shorter. Out of time, the value so far.
    """
    digits: str | None = None
    try:
        with cpu_bounded(deadline):
            approx = sympy.N(value, PRECISE_DIGITS)
            digits = str(approx) if approx.is_Float else None
            proven = _proven_rational(value, approx)
            if proven is not None:
                return proven, None
            simpler = sympy.simplify(value)
            if simpler.is_Rational or sympy.count_ops(simpler) < sympy.count_ops(value):
                value = simpler
    except OutOfTime:
        pass
    except (ArithmeticError, TypeError, ValueError, RecursionError):  # sympy giving up on an odd value
        pass
    return value, (None if value.is_Rational else digits)
