"""Iteration over integer ranges (sum, prod, count, first, max_of, min_of), fast where the body allows.

A body over pure-number exact rationals (the common case: counting, sums of integers) is compiled into
nested Python closures over `int` and `Fraction`, about a hundred times faster than exact sympy
arithmetic with units; anything else (units, irrational values, other functions) returns None from
`compile_fast` and the computer evaluates the body with sympy. Both paths count body evaluations against
one budget per graph and check the clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from fractions import Fraction

import sympy

from causal_grpo.errors import FormulaError
from causal_grpo.scaffold import numbertheory
from causal_grpo.scaffold.formula import (
    MAX_DIGITS,
    MAX_EXPONENT,
    MAX_FACTORIAL,
    Binary,
    BoolOp,
    Call,
    Compare,
    Expr,
    IfElse,
    Iterate,
    Num,
    Ref,
    Unary,
    Var,
)

MAX_EVALUATIONS = 10**6
"""Most iteration-body evaluations one graph may make."""
_CLOCK_EVERY = 1024

Value = int | Fraction | bool
Env = dict[str, int]
Compiled = Callable[[Env], Value]


class Budget:
    """Body evaluations left for a graph, and its CPU deadline."""

    def __init__(self, deadline: float, time_limit_s: float) -> None:
        self.used = 0
        self.deadline = deadline
        self.time_limit_s = time_limit_s

    def reserve(self, count: int, func: str) -> None:
        """Refuse, before any work, a range that would pass the budget."""
        if self.used + count > MAX_EVALUATIONS:
            raise FormulaError(
                "limit",
                f"{func} over too many values",
                f"{self.used + count:,} evaluations (limit {MAX_EVALUATIONS:,})",
            )

    def tick(self) -> None:
        self.used += 1
        if self.used > MAX_EVALUATIONS:
            raise FormulaError("limit", "too many iteration steps", f"over {MAX_EVALUATIONS:,} evaluations")
        if self.used % _CLOCK_EVERY == 0 and time.thread_time() > self.deadline:
            raise FormulaError("timeout", "time limit exceeded", f"{self.time_limit_s:g} s")


def bound(value: sympy.Expr, func: str, which: str) -> int:
    """An iteration bound as a Python int."""
    if not value.is_Integer:
        raise FormulaError("math", f"{func} needs integer bounds", f"{which} bound is {value}")
    return int(value)


def _normal(x: Fraction) -> Value:
    return x.numerator if x.denominator == 1 else x


def _check_size(x: Value) -> Value:
    if isinstance(x, bool):
        return x
    n, d = (x.numerator, x.denominator) if isinstance(x, Fraction) else (x, 1)
    if max(abs(n), d).bit_length() > MAX_DIGITS * 3.33:
        raise FormulaError("limit", "number too large", f"over {MAX_DIGITS} digits")
    return x


def _divide(a: Value, b: Value) -> Value:
    if b == 0:
        raise FormulaError("math", "division by zero")
    return _normal(Fraction(a) / Fraction(b))


def _floordiv(a: Value, b: Value) -> Value:
    if b == 0:
        raise FormulaError("math", "division by zero")
    return math.floor(Fraction(a) / Fraction(b))


def _mod(a: Value, b: Value) -> Value:
    if b == 0:
        raise FormulaError("math", "division by zero")
    return _normal(Fraction(a) % Fraction(b)) if isinstance(a, Fraction) or isinstance(b, Fraction) else a % b


class NotFast(Exception):
    """The body met a value the fast path cannot represent exactly (say a fractional power)."""


def _power(a: Value, b: Value) -> Value:
    if not isinstance(b, int) or isinstance(b, bool):
        raise NotFast
    if abs(b) > MAX_EXPONENT:
        raise FormulaError("limit", "exponent too large", f"{b} (limit {MAX_EXPONENT})")
    if a == 0 and b < 0:
        raise FormulaError("math", "division by zero", "0 raised to a negative power")
    size = abs(b) * (math.log10(abs(Fraction(a).numerator) + 1) + math.log10(Fraction(a).denominator + 1))
    if size > MAX_DIGITS:
        raise FormulaError("limit", "power too large", f"about {size:.0f} digits (limit {MAX_DIGITS})")
    return _normal(Fraction(a) ** b) if b < 0 or isinstance(a, Fraction) else a**b


_BINARY: dict[str, Callable[[Value, Value], Value]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
    "//": _floordiv,
    "%": _mod,
    "**": _power,
}
_COMPARE: dict[str, Callable[[Value, Value], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _integer_args(name: str, func: Callable[..., sympy.Expr]) -> Callable[..., Value]:
    def apply(*args: Value) -> Value:
        if any(isinstance(a, Fraction) for a in args):
            raise FormulaError("math", f"{name} needs integer arguments", f"got {', '.join(map(str, args))}")
        return int(func(*(sympy.Integer(a) for a in args)))

    return apply


def _factorial(n: Value) -> Value:
    if isinstance(n, Fraction) or n < 0:
        raise FormulaError("math", "factorial needs an integer >= 0", f"got {n}")
    if n > MAX_FACTORIAL:
        raise FormulaError("limit", "factorial argument too large", f"{n} (limit {MAX_FACTORIAL})")
    return math.factorial(n)


def _binomial(n: Value, k: Value) -> Value:
    if isinstance(n, Fraction) or isinstance(k, Fraction):
        raise FormulaError("math", "binomial needs integer arguments", f"got {n}, {k}")
    if 0 <= k <= n and min(k, n - k) > MAX_FACTORIAL:
        raise FormulaError("limit", "binomial arguments too large", f"min(k, n-k) over {MAX_FACTORIAL}")
    return math.comb(n, k) if 0 <= k <= n else 0


def _gcd_like(func: Callable[[int, int], int], name: str) -> Callable[[Value, Value], Value]:
    def apply(a: Value, b: Value) -> Value:
        if isinstance(a, Fraction) or isinstance(b, Fraction):
            raise FormulaError("math", f"{name} needs integer arguments", f"got {a}, {b}")
        return func(a, b)

    return apply


_FUNCTIONS: dict[str, Callable[..., Value]] = {
    "abs": abs,
    "Abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "ceiling": math.ceil,
    "min": min,
    "max": max,
    "gcd": _gcd_like(math.gcd, "gcd"),
    "lcm": _gcd_like(math.lcm, "lcm"),
    "factorial": _factorial,
    "binomial": _binomial,
    "comb": _binomial,
    "numer": lambda x: Fraction(x).numerator,
    "denom": lambda x: Fraction(x).denominator,
    **{
        name: _integer_args(name, getattr(numbertheory, name))
        for name in (
            "powmod",
            "modinv",
            "isprime",
            "prime",
            "divisor_count",
            "divisor_sum",
            "totient",
            "omega",
            "multiplicity",
            "digit_sum",
            "num_digits",
        )
    },
}


def _as_value(x: sympy.Expr) -> Value | None:
    if x.is_Integer:
        return int(x)
    if x.is_Rational:
        return Fraction(int(x.p), int(x.q))
    return None


def compile_fast(expr: Expr, constants: Callable[[str], sympy.Expr | None], budget: Budget) -> Compiled | None:
    """Closures computing `expr` over int/Fraction, or None where the fast path does not apply.

    `constants(name)` gives a referenced node's exact pure-number value, or None (a unit, an irrational).
    """

    def build(e: Expr) -> Compiled:
        match e:
            case Num(value):
                v = _as_value(value)
                return lambda env: v
            case Ref(name):
                known = constants(name)
                v = None if known is None else _as_value(known)
                if v is None:
                    raise NotFast
                return lambda env: v
            case Var(name):
                return lambda env: env[name]
            case Unary(op, operand):
                inner = build(operand)
                return inner if op == "+" else (lambda env: -inner(env))
            case Binary(op, left, right):
                a, b, f = build(left), build(right), _BINARY[op]
                return lambda env: _check_size(f(a(env), b(env)))
            case Call(func, args) if func in _FUNCTIONS:
                parts, f = [build(a) for a in args], _FUNCTIONS[func]
                return lambda env: f(*(p(env) for p in parts))
            case Compare(ops, operands):
                parts = [build(o) for o in operands]
                tests = [_COMPARE[op] for op in ops]

                def compare(env: Env) -> bool:
                    values = [p(env) for p in parts]
                    return all(t(values[i], values[i + 1]) for i, t in enumerate(tests))

                return compare
            case BoolOp("not", (value,)):
                inner = build(value)
                return lambda env: not inner(env)
            case BoolOp("and", values):
                parts = [build(v) for v in values]
                return lambda env: all(p(env) for p in parts)
            case BoolOp("or", values):
                parts = [build(v) for v in values]
                return lambda env: any(p(env) for p in parts)
            case IfElse(cond, then, other):
                c, t, o = build(cond), build(then), build(other)
                return lambda env: t(env) if c(env) else o(env)
            case Iterate(func, body, var, lo, hi) if func != "integrate":
                return _loop(func, build(body), var, build(lo), build(hi), budget)
        raise NotFast

    try:
        return build(expr)
    except NotFast:
        return None


def _loop(func: str, body: Compiled, var: str, lo: Compiled, hi: Compiled, budget: Budget) -> Compiled:
    def run(env: Env) -> Value:
        start, stop = lo(env), hi(env)
        if isinstance(start, Fraction) or isinstance(stop, Fraction):
            raise FormulaError("math", f"{func} needs integer bounds", f"{start}..{stop}")
        budget.reserve(max(0, stop - start + 1), func)
        return iterate(func, lambda k: body({**env, var: k}), start, stop, budget)

    return run


def iterate(func: str, body: Callable[[int], Value], start: int, stop: int, budget: Budget) -> Value:
    """Apply one iteration function over start..stop (inclusive) with Python values."""
    values = range(start, stop + 1)
    if func == "count":
        total = 0
        for k in values:
            budget.tick()
            total += bool(body(k))
        return total
    if func == "first":
        for k in values:
            budget.tick()
            if body(k):
                return k
        raise FormulaError("math", "first found no value", f"no k in {start}..{stop} satisfies the condition")
    results: list[Value] = []
    acc: Value = 0 if func == "sum" else 1
    for k in values:
        budget.tick()
        v = body(k)
        if func == "sum":
            acc = _check_size(acc + v)
        elif func == "prod":
            acc = _check_size(acc * v)
        else:
            results.append(v)
    if func in ("sum", "prod"):
        return acc
    if not results:
        raise FormulaError("math", f"{func} of an empty range", f"{start}..{stop}")
    return max(results) if func == "max_of" else min(results)
