"""Solving a scaffold's equations for its unknowns: exactly with sympy where it can in time, else numerically.

`solve(residuals, unknowns, deadline)` returns every candidate solution (each unknown's value) in its
domain; the computer then drops those that make a check false and requires exactly one. Numeric roots
come from Newton's method at 40 digits from several starting points; a root is made exact where a
simple closed form fits and provably satisfies every equation.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import mpmath
import sympy
from sympy.functions.elementary.trigonometric import TrigonometricFunction

from causal_grpo.errors import FormulaError
from causal_grpo.scaffold.budget import OutOfTime, cpu_bounded
from causal_grpo.scaffold.schema import Domain

EXACT_SHARE = 0.5
"""Share of the time left that sympy's exact solve may use before the numeric search takes over."""
NEWTON_DIGITS = 40
NEWTON_STEPS = 60
MAX_STARTS = 24
PERIODS = 6
"""Members of a periodic solution family listed each side of its base value: enough for the checks to show
whether they narrow the family to one."""
SCAN = (-1000.0, 1000.0, 4001)
"""Where a single unknown's residual is scanned for sign changes in floats, and at how many points: each
change brackets a root, so Newton starts at every root there and not only those near its fixed starts."""
MAX_ROOTS = 80
MAX_RECOGNISED = 4
ROOT_TOL = mpmath.mpf(10) ** -28
"""A numeric root must make every equation this small (relative to its terms' scale)."""

_STARTS: dict[str, tuple[float, ...]] = {
    "real": (1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 10.0, -10.0, 0.1, 100.0, -100.0),
    "positive": (1.0, 0.5, 2.0, 5.0, 10.0, 0.1, 100.0, 1000.0),
    "negative": (-1.0, -0.5, -2.0, -5.0, -10.0, -0.1, -100.0),
}


@dataclass(frozen=True)
class Unknown:
    """One unknown: its symbol (with the domain's sympy assumptions) and its domain."""

    name: str
    domain: Domain

    @property
    def symbol(self) -> sympy.Symbol:
        return symbol_for(self.name, self.domain)


def symbol_for(name: str, domain: Domain) -> sympy.Symbol:
    """The sympy symbol of an unknown, carrying what its domain says (sympy's solve uses it)."""
    assumptions: dict[str, bool] = {"real": True}
    if domain in ("positive", "positive_integer"):
        assumptions["positive"] = True
    if domain in ("nonnegative", "nonnegative_integer"):
        assumptions["nonnegative"] = True
    if domain == "negative":
        assumptions["negative"] = True
    if domain.endswith("integer"):
        assumptions["integer"] = True
    return sympy.Symbol(name, **assumptions)


def in_domain(value: sympy.Expr, domain: Domain) -> bool:
    """Whether a solved value lies in the domain (decided exactly where sympy can, else at 30 digits)."""
    if isinstance(value, sympy.CRootOf) and not value.is_real:  # cheap for a root; evaluating it is not (~1 s)
        return False
    approx = value.evalf(30)
    real, imag = approx.as_real_imag()
    if not (real.is_number and imag.is_number) or abs(imag) > 1e-25 * max(1, abs(real)):
        return False
    if domain.endswith("integer"):
        if value.is_Integer is not True and not (value.is_Float is True and real == sympy.Integer(round(real))):
            return False
    if domain in ("positive", "positive_integer"):
        return bool(real > 0)
    if domain in ("nonnegative", "nonnegative_integer"):
        return bool(real >= 0)
    if domain == "negative":
        return bool(real < 0)
    return True


def satisfies(residuals: list[sympy.Expr], unknowns: list[Unknown], candidate: dict[str, sympy.Expr]) -> bool:
    """Whether a candidate makes every residual vanish (at 30 digits; a pole or a non-finite value does not)."""
    values = {u.symbol: candidate[u.name] for u in unknowns}
    for residual in residuals:
        value = sympy.N(residual.subs(values), 30)
        if not value.is_number or not value.is_finite:
            return False
        scale = max([1.0, *(abs(float(sympy.N(a, 15))) for a in sympy.Add.make_args(residual.subs(values)))])
        if abs(value) > 1e-20 * scale:
            return False
    return True


def solve(
    residuals: list[sympy.Expr], unknowns: list[Unknown], deadline: float, near: tuple[float, ...] | None = None
) -> list[dict[str, sympy.Expr]]:
    """Candidate solutions in the unknowns' domains; a value that is a sympy Float is not exact.

    With `near` (a solution of nearby equations), the root Newton reaches from it is the one candidate when
    there is one: following a solution as the givens move needs neither sympy's solve nor a search.

    Raises:
        FormulaError: The system leaves an unknown free, or cannot be solved in time.
    """
    symbols = [u.symbol for u in unknowns]
    if near is not None and len(residuals) == len(unknowns):
        followed = _followed(residuals, unknowns, near, deadline)
        if followed is not None:
            return [followed]
    exact_deadline = min(deadline, time.thread_time() + EXACT_SHARE * max(0.0, deadline - time.thread_time()))
    try:
        if len(residuals) == 1 and len(unknowns) == 1:
            with cpu_bounded(exact_deadline):
                roots = _polynomial_roots(residuals[0], symbols[0])
                if roots is None and residuals[0].has(TrigonometricFunction):
                    roots = _periodic_roots(residuals[0], symbols[0])
            if roots is not None:
                candidates = [{unknowns[0].name: r} for r in roots]
                return [c for c in candidates if in_domain(c[unknowns[0].name], unknowns[0].domain)]
        with cpu_bounded(exact_deadline):
            # One equation goes in alone: sympy returns [] for a list it cannot solve (a quintic, say).
            # check=False and simplify=False make it about 6x faster (a quadratic: 10 ms -> 1.6 ms); the roots
            # are then verified here, and the domains applied, which is what sympy's check would do.
            # Plain symbols: sympy's assumption queries on each root cost more than the solve (a quadratic in
            # a positive unknown: 36 ms -> 3 ms); the domains are applied here instead.
            plain = [sympy.Dummy(u.name) for u in unknowns]
            swap = dict(zip(symbols, plain, strict=True))
            system = [r.xreplace(swap) for r in residuals]
            raw = sympy.solve(system[0] if len(system) == 1 else system, plain, dict=True, check=False, simplify=False)
            back = dict(zip(plain, symbols, strict=True))
            found = [{back[k]: v.xreplace(back) for k, v in sol.items() if k in back} for sol in raw]
        free = [s for sol in found for value in sol.values() for s in value.free_symbols]
        if free or any(len(sol) < len(symbols) for sol in found):
            names = ", ".join(
                sorted({u.name for u in unknowns if any(u.symbol not in sol for sol in found)} | {str(s) for s in free})
            )
            raise FormulaError("math", "too few independent equations", f"{names} not determined")
        candidates = [{u.name: sol[u.symbol] for u in unknowns} for sol in found]
        if candidates:  # an empty answer is no proof that there is no root: the numeric search decides
            return [c for c in candidates if _in_domains(c, unknowns) and satisfies(residuals, unknowns, c)]
    except (OutOfTime, NotImplementedError, TypeError, ValueError, ArithmeticError, RecursionError):
        pass
    return _numeric(residuals, unknowns, deadline)


def _polynomial_roots(residual: sympy.Expr, symbol: sympy.Symbol) -> list[sympy.Expr] | None:
    """Every root of a polynomial equation in one unknown, in radicals; None if it is not one or has other roots.

    The commonest system (a linear or quadratic equation) in a small part of the time `sympy.solve` takes:
    those two by their formulas, higher degrees through `sympy.roots`.
    """
    numerator, denominator = (residual, sympy.Integer(1))
    if not residual.is_polynomial(symbol):
        numerator, denominator = sympy.together(residual).as_numer_denom()
        if not numerator.is_polynomial(symbol):
            return None
    poly = sympy.Poly(numerator, symbol)
    if poly.degree() < 1 or poly.free_symbols - {symbol}:
        return None
    coefficients = poly.all_coeffs()
    if poly.degree() == 1:
        a, b = coefficients
        found = [-b / a]
    elif poly.degree() == 2:
        a, b, c = coefficients
        root = sympy.sqrt(b**2 - 4 * a * c)
        found = list(dict.fromkeys([(-b - root) / (2 * a), (-b + root) / (2 * a)]))
    else:
        by_multiplicity = sympy.roots(poly)
        if sum(by_multiplicity.values()) != poly.degree():
            return None  # roots beyond radicals: sympy.solve (CRootOf) or the numeric search
        found = list(by_multiplicity)
    return [r for r in found if denominator == 1 or denominator.subs(symbol, r) != 0]


def _periodic_roots(residual: sympy.Expr, symbol: sympy.Symbol) -> list[sympy.Expr] | None:
    """Members of an infinite solution set (cos(x) == 0: pi/2 + n*pi), so that the checks must pick one.

    sympy.solve returns only the base values of a periodic family, and one of them passing a check would
    hide the others; None where solveset finds no such family.
    """
    plain = sympy.Dummy("x", real=True)
    found = sympy.solveset(residual.xreplace({symbol: plain}), plain, sympy.S.Reals)
    families = found.args if isinstance(found, sympy.Union) else (found,)
    if not all(isinstance(f, sympy.ImageSet | sympy.FiniteSet) for f in families):
        return None
    if not any(isinstance(f, sympy.ImageSet) for f in families):
        return None
    roots: list[sympy.Expr] = []
    for family in families:
        if isinstance(family, sympy.FiniteSet):
            roots.extend(family.args)
            continue
        (n,), member = family.lamda.variables, family.lamda.expr
        roots.extend(member.subs(n, k) for k in range(-PERIODS, PERIODS + 1))
    return sorted(dict.fromkeys(roots), key=lambda r: float(sympy.N(r)))


def _numeric(residuals: list[sympy.Expr], unknowns: list[Unknown], deadline: float) -> list[dict[str, sympy.Expr]]:
    if len(residuals) != len(unknowns):
        raise FormulaError(
            "math",
            "cannot solve this system",
            f"{len(residuals)} equations for {len(unknowns)} unknowns, no exact solution",
        )
    starts = itertools.chain(_starts(unknowns), _brackets(residuals, unknowns))
    roots, finished = _newton_roots(residuals, unknowns, starts, MAX_ROOTS, deadline)
    if not roots and not finished:
        raise FormulaError("timeout", "no solution found in the time limit", "")
    symbols = [u.symbol for u in unknowns]
    # nsimplify takes up to half a second a value: only a few roots are worth recognising (more are refused
    # as too many anyway), and within the deadline.
    recognise = len(roots) <= MAX_RECOGNISED
    found = []
    for r in roots:
        values = [sympy.Float(v, NEWTON_DIGITS) for v in r]
        if recognise:
            try:
                with cpu_bounded(deadline):
                    values = [_recognised(r, residuals, symbols, i) for i in range(len(unknowns))]
            except OutOfTime:
                recognise = False
        found.append({u.name: v for u, v in zip(unknowns, values, strict=True)})
    return [c for c in found if _in_domains(c, unknowns)]


def _followed(
    residuals: list[sympy.Expr], unknowns: list[Unknown], start: tuple[float, ...], deadline: float
) -> dict[str, sympy.Expr] | None:
    roots, _ = _newton_roots(residuals, unknowns, [start], 1, deadline)
    if not roots:
        return None
    found = {u.name: sympy.Float(v, NEWTON_DIGITS) for u, v in zip(unknowns, roots[0], strict=True)}
    return found if _in_domains(found, unknowns) else None


def _newton_roots(
    residuals: list[sympy.Expr],
    unknowns: list[Unknown],
    starts: Iterable[tuple[float, ...]],
    most: int,
    deadline: float,
) -> tuple[list[list[mpmath.mpf]], bool]:
    """The distinct roots Newton reaches from `starts` (at most `most`), and whether it finished in time."""
    symbols = [u.symbol for u in unknowns]
    roots: list[list[mpmath.mpf]] = []
    try:
        with cpu_bounded(deadline), mpmath.workdps(NEWTON_DIGITS):
            jacobian = [[sympy.diff(r, s) for s in symbols] for r in residuals]
            for start in starts:
                if len(roots) >= most:
                    break
                root = _newton(residuals, jacobian, symbols, start)
                if root is not None and not any(_same(root, other) for other in roots):
                    roots.append(root)
    except OutOfTime:
        return roots, False
    return roots, True


def _in_domains(candidate: dict[str, sympy.Expr], unknowns: list[Unknown]) -> bool:
    return all(in_domain(candidate[u.name], u.domain) for u in unknowns)


def _starts(unknowns: list[Unknown]) -> list[tuple[float, ...]]:
    per = [
        _STARTS.get(u.domain.removesuffix("_integer").replace("nonnegative", "positive"), _STARTS["real"])
        for u in unknowns
    ]
    return list(itertools.islice(itertools.product(*per), MAX_STARTS))


def _brackets(residuals: list[sympy.Expr], unknowns: list[Unknown]) -> Iterator[tuple[float, ...]]:
    """For one unknown, a start inside every sign change of the residual on a float grid (sin(x) == x/100
    has 16 roots in (50, 100); Newton from fixed starts finds the few nearest them), made as Newton asks."""
    if len(unknowns) != 1:
        return
    low, high, points = SCAN
    if unknowns[0].domain.startswith(("positive", "nonnegative")):
        low = 0.0
    elif unknowns[0].domain == "negative":
        high = 0.0
    f = sympy.lambdify(unknowns[0].symbol, residuals[0], modules="math")
    grid = [low + (high - low) * i / (points - 1) for i in range(points)]
    values = []
    for x in grid:
        try:
            v = float(f(x))
        except (ArithmeticError, ValueError, TypeError):
            v = math.nan
        values.append(v)
    for a, b, fa, fb in zip(grid, grid[1:], values, values[1:], strict=False):
        if math.isfinite(fa) and math.isfinite(fb) and fa * fb < 0:
            yield (_bisected(f, a, b, fa),)


def _bisected(f: Any, a: float, b: float, fa: float) -> float:
    """A sign change narrowed in floats, so that Newton at 40 digits needs a few steps from it."""
    for _ in range(60):
        mid = (a + b) / 2
        try:
            fm = float(f(mid))
        except (ArithmeticError, ValueError, TypeError):
            break
        if not math.isfinite(fm) or fm == 0:
            return mid
        a, b, fa = (mid, b, fm) if fa * fm > 0 else (a, mid, fa)
    return (a + b) / 2


def _value(expr: sympy.Expr, subs: dict[sympy.Symbol, sympy.Float]) -> mpmath.mpf | None:
    """The real value at 40 digits (mpmath's working precision here), None where it is not a finite real."""
    real, imag = expr.evalf(NEWTON_DIGITS, subs=subs).as_real_imag()
    if not (real.is_Number and imag.is_Number and real.is_finite and imag.is_finite):
        return None
    if imag and abs(imag) > 1e-20 * max(1, abs(real)):
        return None
    return mpmath.mpf(sympy.Float(real, NEWTON_DIGITS)._mpf_)


def _newton(
    residuals: list[sympy.Expr], jacobian: list[list[sympy.Expr]], symbols: list[sympy.Symbol], start: tuple[float, ...]
) -> list[mpmath.mpf] | None:
    x = [mpmath.mpf(v) for v in start]
    for _ in range(NEWTON_STEPS):
        subs = {s: sympy.Float(v, NEWTON_DIGITS) for s, v in zip(symbols, x, strict=True)}
        try:
            f = [_value(r, subs) for r in residuals]
            if any(v is None for v in f):
                return None
            if max(abs(v) for v in f) < ROOT_TOL * max(1, max(abs(v) for v in x)):
                return x
            j = mpmath.matrix([[_value(d, subs) for d in row] for row in jacobian])
            step = mpmath.lu_solve(j, mpmath.matrix(f))
        except (ZeroDivisionError, TypeError, ValueError, ArithmeticError):
            return None
        x = [xi - step[i] for i, xi in enumerate(x)]
        if any(not mpmath.isfinite(v) or abs(v) > 1e30 for v in x):
            return None
    return None


def _same(a: list[mpmath.mpf], b: list[mpmath.mpf]) -> bool:
    return all(abs(x - y) <= mpmath.mpf(10) ** -20 * max(1, abs(x)) for x, y in zip(a, b, strict=True))


def _recognised(root: list[mpmath.mpf], residuals: list[sympy.Expr], symbols: list[sympy.Symbol], i: int) -> sympy.Expr:
    """The i-th value of a numeric root: a simple closed form where one provably fits (one unknown), else a float
    at the digits it was solved at, so that its equations verify at the precision of the solve."""
    value = sympy.Float(root[i], NEWTON_DIGITS)
    if len(symbols) != 1:
        return value
    guess = sympy.nsimplify(value, [sympy.pi, sympy.E], tolerance=1e-25)
    if guess.is_number and sympy.count_ops(guess) < 20:
        if all(r.subs(symbols[0], guess).equals(0) is True for r in residuals):
            return guess
    return value
