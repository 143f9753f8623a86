"""The evaluator: one formula's tree over computed node values, exact, with units, limits and the clock.

Magnitudes are sympy expressions; they may hold symbols (an unknown the equations solve for, an
integration variable), in which case size budgets and float fallbacks are skipped until values are known.
Iterations run through `iteration` (fast Python arithmetic where the body allows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import mpmath
import pint
import sympy

from causal_grpo.scaffold import units
from causal_grpo.scaffold.budget import OutOfTime, cpu_bounded
from causal_grpo.scaffold.formula import (
    CONSTANTS,
    FUNCTIONS,
    Binary,
    BoolOp,
    Call,
    Compare,
    Const,
    Expr,
    FormulaError,
    IfElse,
    Iterate,
    Num,
    Ref,
    Unary,
    Var,
    call,
    checked,
    children,
    divide,
    floor_divide,
    modulo,
    power,
    walk,
)
from causal_grpo.scaffold.iteration import Approx, Budget, NotFast, bound, compile_fast, extreme, iterate

EXACT_SIZE = 200
"""Largest expression tree, in nodes, a value keeps exactly; a bigger one goes on as a FALLBACK_DIGITS float."""
EXACT_DEPTH = 5
"""Deepest nesting of functions and powers a value keeps exactly (sympy's evalf slows exponentially with it)."""
FALLBACK_DIGITS = 30
"""Significant digits of a value that outgrew the exact budget."""
INTEGRAL_SHARE = 0.5
"""Share of the time left that sympy's exact integration may use before the numeric quadrature takes over."""
EXACT_SHARE = 0.85
"""Share of the time left that an exact sum or product of transcendental terms may use before floats take over."""
EQUAL_TOL = sympy.Float(10, 5) ** -30
"""A difference this small (relative) that sympy cannot decide counts as zero in a condition."""


@dataclass(frozen=True, slots=True)
class Quantity:
    """A magnitude in a pint unit; `size` and `depth` bound its expression tree, `exact` is False for floats."""

    magnitude: sympy.Expr
    unit: pint.Unit
    size: int = 1
    depth: int = 0
    exact: bool = True


def unit_name(unit: pint.Unit) -> str:
    """A unit as messages show it."""
    return units.text(unit) or "dimensionless"


class Evaluator:
    """Walks a formula's tree over already computed node values, checking units, limits and the clock."""

    def __init__(self, values: dict[str, Quantity], deadline: float, time_limit_s: float) -> None:
        self.values = values
        self.deadline = deadline
        self.time_limit_s = time_limit_s
        self.pure = units.dimensionless()
        self.radian = units.parse_unit("radian")
        self.scope: dict[str, Quantity] = {}  # bound variables of the iterations being evaluated
        self.budget = Budget(deadline, time_limit_s)

    def quantity(self, magnitude: sympy.Expr, unit: pint.Unit, *parts: Quantity, nested: bool = False) -> Quantity:
        """The result of an operation on `parts`; `nested` for functions and powers."""
        exact = all(p.exact for p in parts)
        if exact and magnitude.is_Atom:
            return Quantity(magnitude, unit)
        size = 1 + sum(p.size for p in parts)
        depth = max((p.depth for p in parts), default=0) + nested
        if magnitude.free_symbols:  # an unknown's or a variable's expression: budgets apply once values are in
            return Quantity(magnitude, unit, size, depth, exact)
        if not exact or size > EXACT_SIZE or depth > EXACT_DEPTH:
            # Past this budget sympy's exact arithmetic and printing get very slow; go on with a precise float.
            return Quantity(magnitude.evalf(FALLBACK_DIGITS), unit, exact=False)
        return Quantity(magnitude, unit, size, depth)

    def _powered(self, magnitude: sympy.Expr, unit: pint.Unit, *parts: Quantity) -> Quantity:
        simple = units.simplest(unit)
        return self.quantity(checked(units.convert(magnitude, unit, simple)), simple, *parts, nested=True)

    def _number(self, q: Quantity, what: str) -> sympy.Expr:
        if not q.unit.dimensionless:
            raise FormulaError("dimension", f"{what} needs a pure number", f"got {unit_name(q.unit)}")
        return units.convert(q.magnitude, q.unit, self.pure)

    def like(self, first: Quantity, other: Quantity, symbol: str) -> sympy.Expr:
        """`other`'s magnitude in `first`'s unit, if they share a dimension."""
        if not units.same_dimension(first.unit, other.unit):
            detail = f"{unit_name(first.unit)} {symbol} {unit_name(other.unit)}"
            raise FormulaError("dimension", "dimension mismatch", detail)
        return units.convert(other.magnitude, other.unit, first.unit)

    def evaluate(self, expr: Expr) -> Quantity:
        if time.thread_time() > self.deadline:
            raise FormulaError("timeout", "time limit exceeded", f"{self.time_limit_s:g} s")
        match expr:
            case Num(value):
                return Quantity(value, self.pure)
            case Const(name):
                return Quantity(CONSTANTS[name], self.pure)
            case Ref(name):
                return self.values[name]
            case Var(name):
                return self.scope[name]
            case IfElse(cond, then, other):
                return self.evaluate(then if self.truth(cond) else other)
            case Iterate():
                return self._iterate(expr)
            case Unary(op, operand):
                q = self.evaluate(operand)
                return q if op == "+" else self.quantity(-q.magnitude, q.unit, q)
            case Binary(op, left, right):
                return self._binary(op, self.evaluate(left), self.evaluate(right))
            case Call(func, args):
                return self._call(func, [self.evaluate(a) for a in args])
        raise AssertionError(f"unknown expression {expr!r}")

    def _binary(self, op: str, a: Quantity, b: Quantity) -> Quantity:
        x = a.magnitude
        match op:
            case "+" | "-":
                y = self.like(a, b, op)
                return self.quantity(checked(x + y if op == "+" else x - y), a.unit, a, b)
            case "*":
                return self.quantity(checked(x * b.magnitude), units.bounded(a.unit * b.unit), a, b)
            case "/":
                return self.quantity(divide(x, b.magnitude), units.bounded(a.unit / b.unit), a, b)
            case "//":
                return self.quantity(floor_divide(x, self.like(a, b, op)), self.pure, a, b, nested=True)
            case "%":
                return self.quantity(modulo(x, self.like(a, b, op)), a.unit, a, b, nested=True)
            case "**":
                exponent = self._number(b, "an exponent")
                if a.unit.dimensionless:
                    magnitude = power(self._number(a, "a power"), exponent)
                    return self.quantity(magnitude, self.pure, a, b, nested=True)
                if not exponent.is_Rational:
                    raise FormulaError("dimension", "a quantity with a unit needs a rational exponent", str(exponent))
                return self._powered(power(x, exponent), units.power(a.unit, exponent), a, b)
        raise AssertionError(f"unknown operator {op}")

    def _call(self, func: str, args: list[Quantity]) -> Quantity:
        rule = FUNCTIONS[func].units
        if rule == "plain":
            return self.quantity(call(func, [self._number(q, func) for q in args]), self.pure, *args, nested=True)
        if rule == "sqrt":
            (q,) = args
            return self._powered(call(func, [q.magnitude]), units.power(q.unit, sympy.Rational(1, 2)), q)
        if rule == "angle" and len(args) == 1:
            return self.quantity(call(func, [self._number(args[0], func)]), self.radian, *args, nested=True)
        first = args[0]
        magnitudes = [first.magnitude, *(self.like(first, q, ",") for q in args[1:])]
        unit = first.unit if rule == "keep" else self.radian
        return self.quantity(call(func, magnitudes), unit, *args, nested=True)

    # --- conditions --------------------------------------------------------------------------------

    def truth(self, expr: Expr) -> bool:
        """Whether a condition holds (comparisons are exact where sympy can decide them)."""
        match expr:
            case BoolOp("not", (value,)):
                return not self.truth(value)
            case BoolOp("and", values):
                return all(self.truth(v) for v in values)
            case BoolOp("or", values):
                return any(self.truth(v) for v in values)
            case Compare(ops, operands):
                quantities = [self.evaluate(o) for o in operands]
                for op, a, b in zip(ops, quantities, quantities[1:], strict=False):
                    if not _holds(op, sign(a.magnitude - self.like(a, b, op))):
                        return False
                return True
        raise FormulaError("disallowed", "disallowed syntax", "a value where a condition is expected")

    # --- iteration -------------------------------------------------------------------------------

    def _iterate(self, expr: Iterate) -> Quantity:
        low, high = self.evaluate(expr.lo), self.evaluate(expr.hi)
        if expr.func == "integrate":
            return self._integrate(expr, low, high)
        start = bound(self._number(low, expr.func), expr.func, "lower")
        stop = bound(self._number(high, expr.func), expr.func, "upper")
        self.budget.reserve(max(0, stop - start + 1) * (1 + self._cost(expr.body)), expr.func)
        env = {name: int(q.magnitude) for name, q in self.scope.items() if q.magnitude.is_Integer}
        fast = compile_fast(expr.body, self._fast_constant, self.budget)
        if fast is not None:
            used = self.budget.used
            try:
                value = iterate(expr.func, lambda k: fast({**env, expr.var: k}), start, stop, self.budget)
                return Quantity(sympy.Rational(int(value.numerator), int(value.denominator)), self.pure)
            except (NotFast, KeyError):  # a value the fast path cannot hold: start again with sympy
                self.budget.used = used
        numeric = compile_fast(expr.body, self._numeric_constant, self.budget, self._element)
        if numeric is not None:
            used = self.budget.used
            if expr.func in ("sum", "prod"):
                # Floats would make the result inexact: the exact path first, with a share of the time left.
                now = time.thread_time()
                try:
                    with cpu_bounded(min(self.deadline, now + EXACT_SHARE * max(0.0, self.deadline - now))):
                        return self._iterate_exactly(expr, start, stop)
                except OutOfTime:
                    self.budget.used = used
            try:
                return self._iterate_numerically(expr, numeric, env, start, stop)
            except (NotFast, KeyError):
                self.budget.used = used
        return self._iterate_exactly(expr, start, stop)

    def _iterate_numerically(self, expr: Iterate, body, env: dict, start: int, stop: int) -> Quantity:
        """The numeric path: floats where they decide, the exact path for an element where they do not."""
        func = expr.func
        values = lambda k: body({**env, expr.var: k})  # noqa: E731
        exact = lambda k: self._element(expr.body, {**env, expr.var: k}, func in ("count", "first"))  # noqa: E731
        if func in ("max_of", "min_of"):
            # Floats only narrow down the k that may attain the extreme; the winner is chosen exactly.
            _, candidates = extreme(func, values, start, stop, self.budget, exact)
            return self._iterate_exactly_at(expr, candidates)
        value = iterate(func, values, start, stop, self.budget, exact)
        if isinstance(value, Approx):  # a sum or product that went through floats
            return Quantity(sympy.Float(value.v, 15), self.pure, exact=False)
        if isinstance(value, bool):
            value = int(value)
        return Quantity(sympy.Rational(int(value.numerator), int(value.denominator)), self.pure)

    def _iterate_exactly_at(self, expr: Iterate, ks: list[int]) -> Quantity:
        """max_of or min_of over the given k, compared exactly."""
        result = None
        for k in ks:
            self.scope[expr.var] = Quantity(sympy.Integer(k), self.pure)
            try:
                q = self.evaluate(expr.body)
            finally:
                del self.scope[expr.var]
            if result is None:
                result = q
                continue
            difference = sign(q.magnitude - self.like(result, q, ","))
            result = q if (difference > 0) == (expr.func == "max_of") and difference != 0 else result
        assert result is not None
        return result

    def _element(self, body: Expr, env: dict, condition: bool):
        """One element of a numeric loop evaluated exactly: a truth value, an int/Fraction or an Approx."""
        saved = dict(self.scope)
        self.scope.update({name: Quantity(sympy.Integer(k), self.pure) for name, k in env.items()})
        try:
            if condition:
                return self.truth(body)
            q = self.evaluate(body)
        finally:
            self.scope.clear()
            self.scope.update(saved)
        if q.unit != self.pure:
            raise NotFast
        m = q.magnitude
        if m.is_Integer:
            return int(m)
        if m.is_Rational:
            return Fraction(int(m.p), int(m.q))
        real, imag = sympy.N(m, 20).as_real_imag()
        if imag != 0 or not real.is_Float:
            raise NotFast
        v = float(real)
        return Approx(v, abs(v) * 2.0**-50 + 1e-300)

    def _iterate_exactly(self, expr: Iterate, start: int, stop: int) -> Quantity:
        func, found = expr.func, []
        for k in range(start, stop + 1):
            self.budget.tick()
            self.scope[expr.var] = Quantity(sympy.Integer(k), self.pure)
            try:
                if func in ("count", "first"):
                    holds = self.truth(expr.body)
                    if func == "first" and holds:
                        return Quantity(sympy.Integer(k), self.pure)
                    found.append(holds)
                else:
                    found.append(self.evaluate(expr.body))
            finally:
                del self.scope[expr.var]
        if func == "count":
            return Quantity(sympy.Integer(sum(found)), self.pure)
        if func == "first":
            raise FormulaError("math", "first found no value", f"no k in {start}..{stop} satisfies the condition")
        if not found:
            if func in ("sum", "prod"):
                return Quantity(sympy.Integer(0 if func == "sum" else 1), self.pure)
            raise FormulaError("math", f"{func} of an empty range", f"{start}..{stop}")
        if func in ("sum", "prod"):
            return self._combined(func, found)
        result = found[0]
        for q in found[1:]:
            difference = sign(q.magnitude - self.like(result, q, ","))
            result = q if (difference > 0) == (func == "max_of") and difference != 0 else result
        return result

    def _combined(self, func: str, terms: list[Quantity]) -> Quantity:
        """A sum or product built in one sympy call, so that terms cancel (a telescoping product, say);
        its size is the result's, not the terms' total."""
        first = terms[0]
        if func == "sum":
            magnitude, unit = sympy.Add(*(first.magnitude, *(self.like(first, q, "+") for q in terms[1:]))), first.unit
        else:
            magnitude, unit = sympy.Mul(*(q.magnitude for q in terms)), first.unit
            for q in terms[1:]:
                unit = units.bounded(unit * q.unit)
        magnitude = checked(magnitude)
        exact = all(q.exact for q in terms)
        if not exact or magnitude.free_symbols:
            return self.quantity(magnitude, unit, *terms)
        size = sympy.count_ops(magnitude) + 1
        depth = max(q.depth for q in terms)
        if size > EXACT_SIZE or depth > EXACT_DEPTH:
            return Quantity(magnitude.evalf(FALLBACK_DIGITS), unit, exact=False)
        return Quantity(magnitude, unit, size, depth)

    def _cost(self, expr: Expr) -> int:
        """Body evaluations an expression needs, counting nested iterations whose bounds are constant
        (the expression itself included, so a body that is a loop is refused before any work)."""
        if isinstance(expr, Iterate) and expr.func != "integrate" and not _uses_vars(expr.lo, expr.hi):
            try:
                low, high = self.evaluate(expr.lo).magnitude, self.evaluate(expr.hi).magnitude
                count = max(0, int(high) - int(low) + 1) if low.is_Integer and high.is_Integer else 0
            except FormulaError:
                count = 0
            return count * (1 + self._cost(expr.body))
        return sum(self._cost(child) for child in children(expr))

    def _fast_constant(self, name: str) -> sympy.Expr | None:
        q = self.values.get(name)
        # Only a unitless number: degree and percent are dimensionless too, but the fast path would drop them.
        return q.magnitude if q is not None and q.unit == self.pure and q.magnitude.is_Rational else None

    def _numeric_constant(self, name: str) -> sympy.Expr | None:
        q = self.values.get(name)
        return q.magnitude if q is not None and q.unit == self.pure and q.magnitude.is_number else None

    def _integrate(self, expr: Iterate, low: Quantity, high: Quantity) -> Quantity:
        upper = self.like(low, high, "..")
        x = sympy.Dummy(expr.var, real=True)
        self.scope[expr.var] = Quantity(x, low.unit)
        try:
            integrand = self.evaluate(expr.body)
        finally:
            del self.scope[expr.var]
        unit = units.bounded(integrand.unit * low.unit)
        f, a, b = integrand.magnitude, low.magnitude, upper
        now = time.thread_time()
        try:
            with cpu_bounded(min(self.deadline, now + INTEGRAL_SHARE * max(0.0, self.deadline - now))):
                exact = sympy.integrate(f, (x, a, b))
            if not exact.has(sympy.Integral) and not exact.free_symbols and exact.is_finite:
                return self.quantity(checked(exact), unit, integrand, low, high, nested=True)
        except (OutOfTime, NotImplementedError, TypeError, ValueError, ArithmeticError, RecursionError):
            pass
        try:
            with cpu_bounded(self.deadline), mpmath.workdps(FALLBACK_DIGITS):
                value = mpmath.quad(
                    lambda t: _real(f.subs(x, sympy.Float(str(t), FALLBACK_DIGITS))), [_real(a), _real(b)]
                )
        except OutOfTime:
            raise FormulaError(
                "timeout", "integral not computed in the time limit", f"{self.time_limit_s:g} s"
            ) from None
        except (TypeError, ValueError, ArithmeticError, ZeroDivisionError) as exc:
            raise FormulaError("math", "cannot integrate", type(exc).__name__) from None
        return Quantity(sympy.Float(str(value), FALLBACK_DIGITS), unit, exact=False)


def _uses_vars(*exprs: Expr) -> bool:
    return any(isinstance(e, Var) for expr in exprs for e in walk(expr))


def _real(x: sympy.Expr) -> mpmath.mpf:
    real, imag = sympy.N(x, FALLBACK_DIGITS).as_real_imag()
    if not real.is_Float and not real.is_Number or (imag != 0 and abs(imag) > 1e-20 * max(1, abs(real))):
        raise ValueError("not a real number")
    return mpmath.mpf(str(real))


def sign(difference: sympy.Expr) -> int:
    """-1, 0 or 1: the sign of an exact difference, decided exactly where sympy can."""
    if difference.is_Rational:
        return bool(difference > 0) - bool(difference < 0)
    if difference.free_symbols:
        raise FormulaError("math", "a condition on a value not yet known", str(difference)[:80])
    real, imag = sympy.N(difference, 40).as_real_imag()
    if not (real.is_number and imag.is_number) or abs(imag) > 1e-30 * max(1, abs(real)):
        raise FormulaError("math", "a comparison of non-real values", str(difference)[:80])
    if abs(real) > EQUAL_TOL:
        return 1 if real > 0 else -1
    try:
        with cpu_bounded():
            zero = difference.equals(0)
    except OutOfTime:
        zero = None
    if zero is False:
        return 1 if real > 0 else -1
    return 0


def _holds(op: str, s: int) -> bool:
    return {"==": s == 0, "!=": s != 0, "<": s < 0, "<=": s <= 0, ">": s > 0, ">=": s >= 0}[op]
