"""Exact values a system of equations implies: proving a numerically solved target is the rational it shows.

Newton finds x and y of `log(y**x, x) == 10`, `log(x**(4*y), y) == 10` only as 40-digit floats, yet x*y is
25 exactly, and no closed form of x or y is needed to prove it. The equations are made polynomial by naming
each non-polynomial part as a new variable (log(x) is a, y**(1/3) is b with b**3 = y), each denominator is
declared nonzero (t*d - 1 = 0), and the target minus its guess is reduced by a Gröbner basis of that system.
Forgetting how the named parts relate (that a is the logarithm of x) only weakens what is assumed: a target
that reduces to zero equals its guess at every solution of the real equations, the solved one included.
Otherwise, or out of time, there is no proof and the value stays a float.
"""

from __future__ import annotations

import sympy

from causal_grpo.scaffold.budget import OutOfTime, cpu_bounded
from causal_grpo.scaffold.exact import guessed_rational

GUESS_TOL = sympy.Float(10, 5) ** -25
"""How close (relative) the numeric target must be to its guess: the root was solved at 40 digits."""
MAX_VARIABLES = 12
"""More variables than this (unknowns, named parts, denominators) and the basis is not attempted."""


def implied_rational(
    target: sympy.Expr,
    residuals: list[sympy.Expr],
    root: dict[sympy.Symbol, sympy.Expr],
    approx: sympy.Expr,
    deadline: float,
) -> sympy.Rational | None:
    """The small rational `target` (an expression in the unknowns) provably equals wherever every residual
    vanishes, guessed from `approx` (its value at the numeric `root`); None without a proof or out of time."""
    guess = guessed_rational(approx, GUESS_TOL)
    if guess is None:
        return None
    try:
        with cpu_bounded(deadline):
            return guess if _implied(target - guess, residuals, root) else None
    except OutOfTime:
        return None
    except (ArithmeticError, TypeError, ValueError, RecursionError, sympy.PolynomialError):
        return None


def _implied(claim: sympy.Expr, residuals: list[sympy.Expr], root: dict[sympy.Symbol, sympy.Expr]) -> bool:
    """Whether `claim` vanishes wherever the residuals do (with every denominator nonzero, as at `root`)."""
    relax = _Relaxation()
    system: list[sympy.Expr] = []
    for residual in residuals:
        numerator, denominator = relax.fraction(residual)
        if not relax.nonzero_at(denominator, root):
            return False
        system.append(numerator)
        if not denominator.is_number:
            system.append(sympy.Dummy("t") * denominator - 1)
    numerator, denominator = relax.fraction(claim)
    if not relax.nonzero_at(denominator, root):
        return False
    system += relax.relations
    variables = sorted(set().union(*(p.free_symbols for p in [*system, numerator])), key=str)
    if len(variables) > MAX_VARIABLES:
        return False
    basis = sympy.groebner(system, *variables, order="grevlex")
    return bool(basis.contains(numerator))


class _Relaxation:
    """Names the non-polynomial parts of expressions, the same part by the same variable."""

    def __init__(self) -> None:
        self.names: dict[sympy.Expr, sympy.Dummy] = {}
        self.relations: list[sympy.Expr] = []

    def fraction(self, expr: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
        """Numerator and denominator of `expr` as polynomials in the unknowns and the named parts."""
        numerator, denominator = sympy.fraction(sympy.together(self.relaxed(sympy.expand_log(expr))))
        return sympy.expand(numerator), denominator

    def relaxed(self, expr: sympy.Expr) -> sympy.Expr:
        if expr.is_Rational or expr.is_Symbol:
            return expr
        if expr.is_Add or expr.is_Mul:
            return expr.func(*(self.relaxed(a) for a in expr.args))
        if expr.is_Pow and expr.exp.is_Integer:
            return self.relaxed(expr.base) ** expr.exp
        if expr not in self.names:
            name = self.names[expr] = sympy.Dummy(f"part{len(self.names)}")
            if expr.is_Pow and expr.exp.is_Rational:  # b**(p/q) is a name whose q-th power is b**p
                base, (p, q) = self.relaxed(expr.base), (expr.exp.p, expr.exp.q)
                self.relations.append(name**q * base**-p - 1 if p < 0 else name**q - base**p)
        return self.names[expr]

    def nonzero_at(self, denominator: sympy.Expr, root: dict[sympy.Symbol, sympy.Expr]) -> bool:
        """Whether a denominator is clearly nonzero at the numeric root (else nothing is assumed of it)."""
        original = denominator.xreplace({name: part for part, name in self.names.items()})
        value = sympy.N(original.xreplace(root), 30)
        return bool(value.is_number and value.is_finite and abs(value) > sympy.Float(10, 5) ** -20)
