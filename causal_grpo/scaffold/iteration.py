"""Iteration over integer ranges (sum, prod, count, first, max_of, min_of), fast where the body allows.

A body over pure-number exact rationals (the common case: counting, sums of integers) is compiled into
nested Python closures over `int` and `Fraction`, about a hundred times faster than exact sympy
arithmetic with units. A body that also needs transcendental values (sin, exp, log, pi, roots) can be
compiled in numeric mode: exact values stay `int`/`Fraction`, the rest become `Approx` floats carrying
a running bound on their error. A comparison or floor is decided by floats only where its margin exceeds
SAFETY times that bound; otherwise (sin(k*pi) is about 1e-13 as a float and exactly 0) the element raises
`Undecided` and is evaluated exactly by the caller's fallback. So a count or first over such a body is
exact. Anything else (units, other functions) returns None from `compile_fast` and the computer
evaluates the body with sympy. All paths count body evaluations against one budget per graph and check
the clock.
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
    Const,
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
    if isinstance(x, bool) or not isinstance(x, int | Fraction):  # an Approx bounds its own size
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


# --- numeric mode: floats with a running error bound -----------------------------------------------

SAFETY = 4.0
"""A float decides a comparison only if its margin is more than this many times its error bound."""
_ULP = 2.0**-52
"""Relative error of one float operation or libm call, with a factor of two to spare."""
_TINY = 1e-300


class Undecided(Exception):
    """Floats cannot decide this element (a margin within the error bound, a pole, a domain edge)."""


class Approx:
    """A real number known as the float `v` with |true - v| <= `e`."""

    __slots__ = ("v", "e")

    def __init__(self, v: float, e: float) -> None:
        if not (math.isfinite(v) and math.isfinite(e)):
            raise Undecided
        self.v = v
        self.e = e


def _lift(x: Value | Approx) -> Approx:
    if isinstance(x, Approx):
        return x
    try:
        v = float(x)
    except OverflowError:
        raise Undecided from None
    return Approx(v, abs(v) * _ULP + _TINY)  # _TINY covers a rational too small for a float


def _rounded(v: float, e: float) -> Approx:
    """The result of one operation: its propagated error plus its own rounding."""
    return Approx(v, e * (1 + _ULP) + abs(v) * _ULP + _TINY)


def _add(a: Approx, b: Approx) -> Approx:
    return _rounded(a.v + b.v, a.e + b.e)


def _sub(a: Approx, b: Approx) -> Approx:
    return _rounded(a.v - b.v, a.e + b.e)


def _mul(a: Approx, b: Approx) -> Approx:
    return _rounded(a.v * b.v, abs(a.v) * b.e + abs(b.v) * a.e + a.e * b.e)


def _div(a: Approx, b: Approx) -> Approx:
    if abs(b.v) <= SAFETY * b.e:
        raise Undecided  # the divisor may be zero
    v = a.v / b.v
    return _rounded(v, (a.e + abs(v) * b.e) / (abs(b.v) - b.e))


def _sign(d: Approx) -> int:
    if abs(d.v) <= SAFETY * d.e:
        raise Undecided
    return 1 if d.v > 0 else -1


def _step(func: Callable[[float], float]) -> Callable[[Approx], int]:
    """floor, ceil or round of an Approx, where the whole error interval maps to one integer."""

    def apply(a: Approx) -> int:
        try:
            low, high = func(a.v - SAFETY * a.e), func(a.v + SAFETY * a.e)
        except OverflowError:
            raise Undecided from None
        if low != high:
            raise Undecided
        return int(low)

    return apply


def _exact_root(x: Fraction, q: int) -> Fraction | None:
    """The exact q-th root of x >= 0 when it is rational (sqrt(k**2) stays exact), else None."""
    parts = []
    for n in (x.numerator, x.denominator):
        if n.bit_length() > 1000:
            return None
        r = round(n ** (1 / q))
        match = next((c for c in (r - 1, r, r + 1) if c >= 0 and c**q == n), None)
        if match is None:
            return None
        parts.append(match)
    return Fraction(parts[0], parts[1])


def _log(a: Approx) -> Approx:
    low = a.v - SAFETY * a.e
    if low <= 0:
        raise Undecided  # zero or negative: the exact path says so
    v = math.log(a.v)
    return _rounded(v, -math.log1p(-a.e / a.v) + _ULP)


def _exp(a: Approx) -> Approx:
    if a.v + a.e > 700:
        raise Undecided
    v = math.exp(a.v)
    return _rounded(v, v * math.expm1(a.e))


def _approx_power(a: Value | Approx, b: Value | Approx) -> Value | Approx:
    if isinstance(b, int) and not isinstance(b, bool):
        if isinstance(a, Approx):
            if abs(b) > MAX_EXPONENT:
                raise Undecided
            if b == 0:
                return 1
            p = _int_power(a, abs(b))
            return _div(Approx(1.0, 0.0), p) if b < 0 else p
        return _power(a, b)
    if isinstance(a, Fraction | int) and isinstance(b, Fraction) and a >= 0:
        root = _exact_root(Fraction(a), b.denominator)
        if root is not None:
            return _power(_normal(root), b.numerator)
    x = _lift(a)
    if x.v - SAFETY * x.e <= 0:
        raise Undecided  # zero or a negative base: the exact path decides
    return _exp(_mul(_lift(b), _log(x)))


def _int_power(a: Approx, n: int) -> Approx:
    try:
        v = a.v**n
        e = n * (abs(a.v) + a.e) ** (n - 1) * a.e
    except OverflowError:
        raise Undecided from None
    return _rounded(v, e * (1 + n * _ULP))


def _mixed(
    exact: Callable[[Value, Value], Value], approx: Callable[[Approx, Approx], Value | Approx]
) -> Callable[[Value | Approx, Value | Approx], Value | Approx]:
    def apply(a: Value | Approx, b: Value | Approx) -> Value | Approx:
        if isinstance(a, Approx) or isinstance(b, Approx):
            return approx(_lift(a), _lift(b))
        return exact(a, b)

    return apply


def _approx_floordiv(a: Approx, b: Approx) -> int:
    return _step(math.floor)(_div(a, b))


def _approx_mod(a: Approx, b: Approx) -> Approx:
    return _sub(a, _mul(b, _lift(_approx_floordiv(a, b))))


def _approx_compare(op: str) -> Callable[[Value | Approx, Value | Approx], bool]:
    exact = _COMPARE[op]

    def apply(a: Value | Approx, b: Value | Approx) -> bool:
        if isinstance(a, Approx) or isinstance(b, Approx):
            if op in ("==", "!="):
                _sign(_sub(_lift(a), _lift(b)))  # only a clear difference is decided; equality is exact work
                return op == "!="
            return exact(_sign(_sub(_lift(a), _lift(b))), 0)
        return exact(a, b)

    return apply


def _unary(approx: Callable[[Approx], Value | Approx], exact: Callable[[Value], Value] | None = None) -> Callable:
    """A one-argument function: `exact` for an exact argument where it has one, else over an Approx."""

    def apply(x: Value | Approx) -> Value | Approx:
        if exact is not None and not isinstance(x, Approx):
            return exact(x)
        return approx(_lift(x))

    return apply


def _sqrt(x: Value | Approx) -> Value | Approx:
    return _approx_power(x, Fraction(1, 2))


def _lipschitz(func: Callable[[float], float], slope: float) -> Callable[[Approx], Approx]:
    """A function whose derivative is at most `slope` in size everywhere."""
    return lambda a: _rounded(func(a.v), slope * a.e + _ULP)


def _tan(a: Approx) -> Approx:
    c = abs(math.cos(a.v))
    if c <= SAFETY * a.e + _ULP:
        raise Undecided  # near a pole
    return _rounded(math.tan(a.v), a.e / (c - a.e - _ULP) ** 2 + _ULP)


def _hyperbolic(func: Callable[[float], float], slope: Callable[[float], float]) -> Callable[[Approx], Approx]:
    def apply(a: Approx) -> Approx:
        reach = abs(a.v) + a.e
        if reach > 700:
            raise Undecided
        return _rounded(func(a.v), slope(reach) * a.e)

    return apply


def _extremum(pick: Callable[..., Value]) -> Callable[..., Value | Approx]:
    def apply(*args: Value | Approx) -> Value | Approx:
        if not any(isinstance(a, Approx) for a in args):
            return pick(*args)
        return _bounds_of([_lift(a) for a in args], pick)

    return apply


def _bounds_of(values: list[Approx], pick: Callable[..., float]) -> Approx:
    """max or min of several Approx values: the true one lies between the picks of their bounds."""
    low = pick(*(a.v - a.e for a in values))
    high = pick(*(a.v + a.e for a in values))
    return _rounded((low + high) / 2, (high - low) / 2)


def _exact_only(func: Callable[..., Value]) -> Callable[..., Value]:
    """A function of exact values (gcd, factorial...): an Approx argument is left to the exact path."""

    def apply(*args: Value | Approx) -> Value:
        if any(isinstance(a, Approx) for a in args):
            raise Undecided
        return func(*args)

    return apply


def _log_of(x: Value | Approx, base: Value | Approx | None = None) -> Approx:
    value = _log(_lift(x))
    return value if base is None else _div(value, _log(_lift(base)))


_NUMERIC_BINARY: dict[str, Callable[[Value | Approx, Value | Approx], Value | Approx]] = {
    "+": _mixed(_BINARY["+"], _add),
    "-": _mixed(_BINARY["-"], _sub),
    "*": _mixed(_BINARY["*"], _mul),
    "/": _mixed(_divide, _div),
    "//": _mixed(_floordiv, _approx_floordiv),
    "%": _mixed(_mod, _approx_mod),
    "**": _approx_power,
}
_NUMERIC_COMPARE = {op: _approx_compare(op) for op in _COMPARE}
_NUMERIC_FUNCTIONS: dict[str, Callable[..., Value | Approx]] = {
    **{name: _exact_only(f) for name, f in _FUNCTIONS.items()},
    "abs": _unary(lambda a: Approx(abs(a.v), a.e), abs),
    "Abs": _unary(lambda a: Approx(abs(a.v), a.e), abs),
    "floor": _unary(_step(math.floor), math.floor),
    "ceil": _unary(_step(math.ceil), math.ceil),
    "ceiling": _unary(_step(math.ceil), math.ceil),
    "round": _unary(_step(round), round),
    "min": _extremum(min),
    "max": _extremum(max),
    "sqrt": _sqrt,
    "sin": _unary(_lipschitz(math.sin, 1.0)),
    "cos": _unary(_lipschitz(math.cos, 1.0)),
    "tan": _unary(_tan),
    "tanh": _unary(_lipschitz(math.tanh, 1.0)),
    "erf": _unary(_lipschitz(math.erf, 2 / math.sqrt(math.pi))),
    "exp": _unary(_exp),
    "log": _log_of,
    "ln": _log_of,
    "log10": lambda x: _log_of(x, 10),
    "sinh": _unary(_hyperbolic(math.sinh, math.cosh)),
    "cosh": _unary(_hyperbolic(math.cosh, math.sinh)),
}
"""The functions of numeric mode. asin/acos/atan/atan2 are left out: their results carry radians, which
the exact path keeps as a unit."""
_NUMERIC_CONSTANTS = {"pi": math.pi, "E": math.e}
_MATH_ERRORS = (Undecided, ArithmeticError, ValueError)
"""What sends one element of a numeric loop to the exact path (a FormulaError is not among them)."""


def _as_value(x: sympy.Expr) -> Value | None:
    if x.is_Integer:
        return int(x)
    if x.is_Rational:
        return Fraction(int(x.p), int(x.q))
    return None


Fallback = Callable[[Expr, Env, bool], Value | Approx]
"""Evaluates a body exactly for one element: (body, loop variables, whether it is a condition) -> value."""


def compile_fast(
    expr: Expr,
    constants: Callable[[str], sympy.Expr | None],
    budget: Budget,
    fallback: Fallback | None = None,
) -> Compiled | None:
    """Closures computing `expr` over int/Fraction, or None where the fast path does not apply.

    `constants(name)` gives a referenced node's pure-number value, or None (a unit, a symbol). With a
    `fallback`, numeric mode: transcendental functions, pi and irrational constants give `Approx` values,
    and an element of a loop that floats cannot decide is handed to `fallback`.
    """
    numeric = fallback is not None
    binary = _NUMERIC_BINARY if numeric else _BINARY
    compares = _NUMERIC_COMPARE if numeric else _COMPARE
    functions = _NUMERIC_FUNCTIONS if numeric else _FUNCTIONS

    def build(e: Expr) -> Compiled:
        match e:
            case Num(value):
                v = _as_value(value)
                return lambda env: v
            case Const(name) if numeric:
                c = Approx(_NUMERIC_CONSTANTS[name], _NUMERIC_CONSTANTS[name] * _ULP)
                return lambda env: c
            case Ref(name):
                known = constants(name)
                v = None if known is None else _as_value(known)
                if v is None and numeric and known is not None:
                    v = _approx_of(known)
                if v is None:
                    raise NotFast
                return lambda env: v
            case Var(name):
                return lambda env: env[name]
            case Unary(op, operand):
                inner = build(operand)
                if op == "+":
                    return inner
                return lambda env: _negate(inner(env))
            case Binary(op, left, right):
                a, b, f = build(left), build(right), binary[op]
                return lambda env: _check_size(f(a(env), b(env)))
            case Call(func, args) if func in functions:
                parts, f = [build(a) for a in args], functions[func]
                return lambda env: f(*(p(env) for p in parts))
            case Compare(ops, operands):
                parts = [build(o) for o in operands]
                tests = [compares[op] for op in ops]

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
                exact = None if fallback is None else (lambda env: fallback(body, env, func in _CONDITIONS))
                return _loop(func, build(body), var, build(lo), build(hi), budget, exact)
        raise NotFast

    try:
        return build(expr)
    except NotFast:
        return None


_CONDITIONS = ("count", "first")


def _negate(x: Value | Approx) -> Value | Approx:
    return Approx(-x.v, x.e) if isinstance(x, Approx) else -x


def _approx_of(value: sympy.Expr) -> Approx | None:
    """A referenced irrational pure number (sqrt(2), pi/7) as an Approx, or None if it is not real."""
    if not value.is_number:
        return None
    real, imag = sympy.N(value, 20).as_real_imag()
    if imag != 0 or not real.is_Float:
        return None
    v = float(real)
    return Approx(v, abs(v) * _ULP + _TINY) if math.isfinite(v) else None


def _loop(
    func: str,
    body: Compiled,
    var: str,
    lo: Compiled,
    hi: Compiled,
    budget: Budget,
    exact: Callable[[Env], Value | Approx] | None,
) -> Compiled:
    def run(env: Env) -> Value | Approx:
        start, stop = lo(env), hi(env)
        if not isinstance(start, int) or not isinstance(stop, int):
            raise FormulaError("math", f"{func} needs integer bounds", f"{start}..{stop}")
        budget.reserve(max(0, stop - start + 1), func)
        fallback = None if exact is None else (lambda k: exact({**env, var: k}))
        return iterate(func, lambda k: body({**env, var: k}), start, stop, budget, fallback)

    return run


def element(body: Callable[[int], Value | Approx], fallback: Callable[[int], Value | Approx] | None, k: int):
    """The body's value at k; in numeric mode, exactly where floats cannot decide it."""
    if fallback is None:
        return body(k)
    try:
        return body(k)
    except _MATH_ERRORS:
        return fallback(k)


def iterate(
    func: str,
    body: Callable[[int], Value | Approx],
    start: int,
    stop: int,
    budget: Budget,
    fallback: Callable[[int], Value | Approx] | None = None,
) -> Value | Approx:
    """Apply one iteration function over start..stop (inclusive) with Python values."""
    values = range(start, stop + 1)
    if func == "count":
        total = 0
        for k in values:
            budget.tick()
            total += bool(element(body, fallback, k))
        return total
    if func == "first":
        for k in values:
            budget.tick()
            if element(body, fallback, k):
                return k
        raise FormulaError("math", "first found no value", f"no k in {start}..{stop} satisfies the condition")
    if func in ("sum", "prod"):
        acc: Value | Approx = 0 if func == "sum" else 1
        combine = (_NUMERIC_BINARY if fallback else _BINARY)["+" if func == "sum" else "*"]
        for k in values:
            budget.tick()
            acc = _check_size(combine(acc, element(body, fallback, k)))
        return acc
    value, _ = extreme(func, body, start, stop, budget, fallback)
    return value


def extreme(
    func: str,
    body: Callable[[int], Value | Approx],
    start: int,
    stop: int,
    budget: Budget,
    fallback: Callable[[int], Value | Approx] | None = None,
) -> tuple[Value | Approx, list[int]]:
    """max_of or min_of over start..stop, and the k that may attain it (several where floats tie)."""
    results: list[Value | Approx] = []
    for k in range(start, stop + 1):
        budget.tick()
        results.append(element(body, fallback, k))
    if not results:
        raise FormulaError("math", f"{func} of an empty range", f"{start}..{stop}")
    pick = max if func == "max_of" else min
    if not any(isinstance(v, Approx) for v in results):
        best = pick(results)
        return best, [start + i for i, v in enumerate(results) if v == best]
    bounds = [_lift(v) for v in results]
    value = _bounds_of(bounds, pick)
    low, high = value.v - value.e, value.v + value.e
    # Every k whose interval reaches the winner's: the exact maximum is among them.
    return value, [start + i for i, b in enumerate(bounds) if b.v + b.e >= low and b.v - b.e <= high]
