"""Formula language of scaffolds: a whitelisted slice of Python expression syntax, built into exact sympy.

Text is parsed with `ast.parse(text, mode="eval")` and only these nodes are accepted: numbers (int,
decimal, scientific; decimals become exact rationals, `0.1` is 1/10), names (node ids or `CONSTANTS`),
the operators `+ - * / // % **`, unary `+`/`-`, parentheses, and calls of `FUNCTIONS` by name with
positional arguments. Everything else (attributes, subscripts, strings, lambdas, comprehensions,
comparisons, keywords, `^`...) is rejected with a `disallowed` error naming the syntax. The result is a
tiny expression tree (`Num`, `Const`, `Ref`, `Unary`, `Binary`, `Call`) that callers evaluate; sympy
objects are only ever built with constructors and sympy functions, never from text.

All work is bounded by the limits below; the helpers raise `FormulaError` instead of letting sympy run
away on huge integers, roots or exponentials.
"""

from __future__ import annotations

import ast
import functools
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import mpmath
import sympy

from causal_grpo.errors import ErrorKind, FormulaError
from causal_grpo.scaffold import numbertheory
from causal_grpo.scaffold.schema import MAX_FORMULA_CHARS

MAX_DEPTH = 50
"""Deepest nesting of operators and calls in one formula."""
MAX_DIGITS = 4000
"""Largest exact number, in decimal digits (Python refuses to print integers over 4300 digits)."""
MAX_EXPONENT = 10_000
"""Largest |numerator| or denominator of a power's exponent (2**2024 is fine, 9**9**9 is not)."""
MAX_ROOT_DIGITS = 100
"""Largest exact base, in digits, of a non-integer power: sympy factors the base to simplify roots."""
MAX_FACTORIAL = 1000
"""Largest n of factorial(n), and largest min(k, n - k) of binomial(n, k)."""
MAX_EXP_ARG = 9000
"""Largest |x| of exp, sinh and cosh (exp(9000) is about 10**3909)."""

Units = Literal["plain", "keep", "sqrt", "angle"]


# --- expression tree -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Num:
    """An exact number literal."""

    value: sympy.Rational


@dataclass(frozen=True, slots=True)
class Const:
    """A named mathematical constant from `CONSTANTS`."""

    name: str


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to another node of the graph."""

    name: str


@dataclass(frozen=True, slots=True)
class Unary:
    """Unary minus (`op == "-"`) or plus."""

    op: str
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    """One of `+ - * / // % **`."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Call:
    """A call of a whitelisted function."""

    func: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Var:
    """A bound variable of an enclosing `Iterate`."""

    name: str


@dataclass(frozen=True, slots=True)
class Iterate:
    """`func(body, var, lo, hi)`: sum, prod, count, first, max_of, min_of over lo..hi, or integrate."""

    func: str
    body: Expr
    var: str
    lo: Expr
    hi: Expr


@dataclass(frozen=True, slots=True)
class Compare:
    """A chained comparison `a < b <= c` (a condition)."""

    ops: tuple[str, ...]
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class BoolOp:
    """`and` / `or` of conditions, or `not` of one (`op == "not"`, one value)."""

    op: str
    values: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class IfElse:
    """`ifelse(cond, a, b)`: a where the condition holds, else b (only the chosen branch is computed)."""

    cond: Expr
    then: Expr
    other: Expr


Expr = Num | Const | Ref | Unary | Binary | Call | Var | Iterate | Compare | BoolOp | IfElse


# --- exact number helpers --------------------------------------------------------------------------

_NON_FINITE = (sympy.nan, sympy.zoo, sympy.oo, -sympy.oo)


def _digits(n: int) -> float:
    return math.log10(abs(n)) if n else 0.0


def log10_abs(x: sympy.Expr) -> float:
    """Approximate log10 |x| (-inf for zero), cheaply: exact for rationals, else from a 15-digit evalf."""
    if x.is_Rational:
        if x == 0:
            return -math.inf
        return _digits(x.p) - _digits(x.q)
    parts = [p for p in x.evalf(15).as_real_imag() if p.is_Float and p != 0]
    return max((float(mpmath.log10(abs(mpmath.mpf(p._mpf_)))) for p in parts), default=-math.inf)


def checked(x: sympy.Expr) -> sympy.Expr:
    """`x` if it is finite and, when rational, no longer than MAX_DIGITS digits."""
    if x in _NON_FINITE:
        raise FormulaError("math", "division by zero or pole" if x is sympy.zoo else "non-finite value", str(x))
    if x.is_Rational and max(_digits(x.p), _digits(x.q)) > MAX_DIGITS:
        raise FormulaError("limit", "number too large", f"over {MAX_DIGITS} digits")
    return x


def _nonzero_divisor(b: sympy.Expr) -> None:
    if b == 0:
        raise FormulaError("math", "division by zero")


def _integer(x: sympy.Expr, func: str) -> int:
    if not x.is_Integer:
        raise FormulaError("math", f"{func} needs integer arguments", f"got {x}")
    return int(x)


def _refusals_as_math(op: Callable[..., sympy.Expr]) -> Callable[..., sympy.Expr]:
    """sympy refuses some arguments with TypeError or ValueError (say, ordering complex numbers): a math error."""

    @functools.wraps(op)
    def guarded(*args: sympy.Expr) -> sympy.Expr:
        try:
            return op(*args)
        except (TypeError, ValueError) as exc:
            raise FormulaError("math", f"cannot compute {op.__name__.replace('_', ' ')}", str(exc)) from None

    return guarded


@_refusals_as_math
def power(base: sympy.Expr, exp: sympy.Expr) -> sympy.Expr:
    """`base ** exp`, refused when the exponent or the result would be too large to handle exactly."""
    if base.free_symbols or exp.free_symbols:  # an unknown's expression: sizes are checked once it is solved
        if exp.is_Rational and (abs(exp.p) > MAX_EXPONENT or exp.q > MAX_EXPONENT):
            raise FormulaError("limit", "exponent too large", f"{exp} (limit {MAX_EXPONENT})")
        return base**exp
    if exp.is_Rational:
        if abs(exp.p) > MAX_EXPONENT or exp.q > MAX_EXPONENT:
            raise FormulaError("limit", "exponent too large", f"{exp} (limit {MAX_EXPONENT})")
    elif log10_abs(exp) > math.log10(MAX_EXPONENT):
        raise FormulaError("limit", "exponent too large", f"|exponent| over {MAX_EXPONENT}")
    if base == 0:
        if exp.is_Rational and exp < 0:
            raise FormulaError("math", "division by zero", "0 raised to a negative power")
        return checked(base**exp)
    coeff, rest = base.as_coeff_Mul()
    coeff_digits = max(_digits(coeff.p), _digits(coeff.q)) if coeff.is_Rational else 0.0
    if exp.is_Rational and exp.q > 1 and coeff_digits > MAX_ROOT_DIGITS:
        raise FormulaError("limit", "root of a number too large", f"over {MAX_ROOT_DIGITS} digits")
    rest_digits = abs(log10_abs(rest)) if rest != 1 else 0.0
    exp_size = 10 ** log10_abs(exp) if not exp.is_Rational else abs(float(exp))
    if (digits := exp_size * (coeff_digits + rest_digits)) > MAX_DIGITS:
        raise FormulaError("limit", "power too large", f"about {digits:.0f} digits (limit {MAX_DIGITS})")
    return checked(base**exp)


@_refusals_as_math
def divide(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """Exact `a / b`."""
    _nonzero_divisor(b)
    return checked(a / b)


@_refusals_as_math
def floor_divide(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """Python's `a // b`, exact: floor(a / b)."""
    _nonzero_divisor(b)
    return checked(sympy.floor(a / b))


@_refusals_as_math
def modulo(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """Python's `a % b`, exact; the result takes the sign of `b`."""
    _nonzero_divisor(b)
    return checked(sympy.Mod(a, b))


# --- functions -------------------------------------------------------------------------------------


def _bounded_exp_arg(func: Callable[[sympy.Expr], sympy.Expr], name: str) -> Callable[[sympy.Expr], sympy.Expr]:
    def apply(x: sympy.Expr) -> sympy.Expr:
        if log10_abs(x) > math.log10(MAX_EXP_ARG):
            raise FormulaError("limit", f"argument of {name} too large", f"|x| over {MAX_EXP_ARG}")
        return func(x)

    return apply


def _factorial(n: sympy.Expr) -> sympy.Expr:
    k = _integer(n, "factorial")
    if k < 0:
        raise FormulaError("math", "factorial of a negative number", str(k))
    if k > MAX_FACTORIAL:
        raise FormulaError("limit", "factorial argument too large", f"{k} (limit {MAX_FACTORIAL})")
    return sympy.factorial(k)


def _binomial(n: sympy.Expr, k: sympy.Expr) -> sympy.Expr:
    nn, kk = _integer(n, "binomial"), _integer(k, "binomial")
    smaller = min(kk, nn - kk) if 0 <= kk <= nn else abs(kk)
    if smaller > MAX_FACTORIAL:
        raise FormulaError("limit", "binomial arguments too large", f"min(k, n-k) over {MAX_FACTORIAL}")
    return sympy.binomial(nn, kk)


def _integers(func: Callable[..., sympy.Expr], name: str) -> Callable[..., sympy.Expr]:
    def apply(*args: sympy.Expr) -> sympy.Expr:
        return func(*(sympy.Integer(_integer(a, name)) for a in args))

    return apply


def _log(x: sympy.Expr, base: sympy.Expr | None = None) -> sympy.Expr:
    if x == 0 or base == 0:
        raise FormulaError("math", "logarithm of zero")
    if base == 1:
        raise FormulaError("math", "logarithm to base 1")
    return sympy.log(x) if base is None else sympy.log(x, base)


def _round(x: sympy.Expr) -> sympy.Expr:
    return x.round()


@dataclass(frozen=True, slots=True)
class Function:
    """A whitelisted function: its sympy meaning, arity (max None = any), how units flow, and a note."""

    apply: Callable[..., sympy.Expr]
    arity: tuple[int, int | None]
    units: Units
    doc: str


_PLAIN_1 = (1, 1)

FUNCTIONS: dict[str, Function] = {
    "sqrt": Function(lambda x: power(x, sympy.Rational(1, 2)), _PLAIN_1, "sqrt", "square root; halves unit powers"),
    "exp": Function(_bounded_exp_arg(sympy.exp, "exp"), _PLAIN_1, "plain", "e**x"),
    "log": Function(_log, (1, 2), "plain", "natural log; log(x, b) is the log to base b"),
    "ln": Function(_log, _PLAIN_1, "plain", "natural log"),
    "log10": Function(lambda x: _log(x, sympy.Integer(10)), _PLAIN_1, "plain", "log to base 10"),
    "sin": Function(sympy.sin, _PLAIN_1, "plain", "sine of radians (a quantity in degrees is converted)"),
    "cos": Function(sympy.cos, _PLAIN_1, "plain", "cosine of radians"),
    "tan": Function(sympy.tan, _PLAIN_1, "plain", "tangent of radians"),
    "asin": Function(sympy.asin, _PLAIN_1, "angle", "arcsine, in radians"),
    "acos": Function(sympy.acos, _PLAIN_1, "angle", "arccosine, in radians"),
    "atan": Function(sympy.atan, _PLAIN_1, "angle", "arctangent, in radians"),
    "atan2": Function(sympy.atan2, (2, 2), "angle", "atan2(y, x): angle of the point (x, y), in radians"),
    "sinh": Function(_bounded_exp_arg(sympy.sinh, "sinh"), _PLAIN_1, "plain", "hyperbolic sine"),
    "cosh": Function(_bounded_exp_arg(sympy.cosh, "cosh"), _PLAIN_1, "plain", "hyperbolic cosine"),
    "tanh": Function(sympy.tanh, _PLAIN_1, "plain", "hyperbolic tangent"),
    "abs": Function(sympy.Abs, _PLAIN_1, "keep", "absolute value"),
    "Abs": Function(sympy.Abs, _PLAIN_1, "keep", "absolute value (sympy's spelling)"),
    "floor": Function(sympy.floor, _PLAIN_1, "keep", "largest integer <= x"),
    "ceil": Function(sympy.ceiling, _PLAIN_1, "keep", "smallest integer >= x"),
    "ceiling": Function(sympy.ceiling, _PLAIN_1, "keep", "smallest integer >= x (sympy's spelling)"),
    "round": Function(_round, _PLAIN_1, "keep", "nearest integer, halves to even like Python's round"),
    "min": Function(sympy.Min, (1, None), "keep", "smallest argument"),
    "max": Function(sympy.Max, (1, None), "keep", "largest argument"),
    "gcd": Function(_integers(sympy.gcd, "gcd"), (2, 2), "plain", "greatest common divisor of integers"),
    "lcm": Function(_integers(sympy.lcm, "lcm"), (2, 2), "plain", "least common multiple of integers"),
    "binomial": Function(_binomial, (2, 2), "plain", "binomial(n, k): n choose k"),
    "comb": Function(_binomial, (2, 2), "plain", "n choose k (Python's spelling)"),
    "factorial": Function(_factorial, _PLAIN_1, "plain", "n! for integers 0 <= n <= MAX_FACTORIAL"),
    "erf": Function(sympy.erf, _PLAIN_1, "plain", "the error function"),
    "numer": Function(numbertheory.numer, _PLAIN_1, "plain", "numerator of a reduced exact rational"),
    "denom": Function(numbertheory.denom, _PLAIN_1, "plain", "denominator of a reduced exact rational"),
    "powmod": Function(numbertheory.powmod, (3, 3), "plain", "powmod(b, e, m): b**e mod m, any e >= 0"),
    "modinv": Function(numbertheory.modinv, (2, 2), "plain", "modinv(a, m): the inverse of a mod m"),
    "isprime": Function(numbertheory.isprime, _PLAIN_1, "plain", "1 if n is prime, else 0"),
    "prime": Function(numbertheory.prime, _PLAIN_1, "plain", "prime(k): the k-th prime, 1-based"),
    "divisor_count": Function(numbertheory.divisor_count, _PLAIN_1, "plain", "number of positive divisors"),
    "divisor_sum": Function(numbertheory.divisor_sum, _PLAIN_1, "plain", "sum of the positive divisors"),
    "totient": Function(numbertheory.totient, _PLAIN_1, "plain", "Euler's totient"),
    "omega": Function(numbertheory.omega, _PLAIN_1, "plain", "number of distinct prime factors"),
    "multiplicity": Function(numbertheory.multiplicity, (2, 2), "plain", "multiplicity(p, n): exponent of p in n"),
    "digit_sum": Function(numbertheory.digit_sum, (1, 2), "plain", "digit_sum(n, b): digit sum in base b (10)"),
    "num_digits": Function(numbertheory.num_digits, (1, 2), "plain", "num_digits(n, b): digits in base b (10)"),
}
"""Callable functions. Units: 'plain' = arguments become pure numbers (angles in radians) and so is the
result; 'keep' = arguments share one dimension and the result has the first one's unit; 'sqrt' = units to
the power 1/2; 'angle' = a pure-number argument (atan2: two of one dimension) and a result in radians, so
an undeclared arccosine converts to a reference in degrees."""

CONSTANTS: dict[str, sympy.Expr] = {"pi": sympy.pi, "E": sympy.E}
"""Named constants; like function names they cannot be node ids."""
CONSTANT_NAMES = {"pi": "the constant pi", "E": "the constant E (Euler's number)"}

RESERVED = frozenset(FUNCTIONS) | frozenset(CONSTANTS)


def call(func: str, args: Sequence[sympy.Expr]) -> sympy.Expr:
    """Apply a whitelisted function to exact pure-number arguments (arity was checked by `parse`)."""
    try:
        return checked(FUNCTIONS[func].apply(*args))
    except (TypeError, ValueError) as exc:
        # sympy's way of refusing, e.g. min of complex numbers.
        raise FormulaError("math", f"{func} cannot take these arguments", str(exc)) from None


# --- parsing ---------------------------------------------------------------------------------------

_BINARY_OPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
_UNARY_OPS: dict[type[ast.unaryop], str] = {ast.USub: "-", ast.UAdd: "+"}
_OPERATOR_TEXT: dict[type[ast.AST], str] = {
    ast.BitXor: "operator ^ (write powers as **)",
    ast.BitAnd: "operator &",
    ast.BitOr: "operator |",
    ast.LShift: "operator <<",
    ast.RShift: "operator >>",
    ast.MatMult: "operator @",
    ast.Not: "operator not",
    ast.Invert: "operator ~",
}
_SYNTAX_TEXT: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Slice: "slice",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.JoinedStr: "f-string",
    ast.NamedExpr: "assignment expression",
    ast.Compare: "comparison",
    ast.BoolOp: "boolean operator",
    ast.IfExp: "conditional expression",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Set: "set",
    ast.Dict: "dict",
    ast.Starred: "star argument",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}
_SOURCE_NAME = "<formula>"
# The tokenizer warns about text like "2x" ("invalid decimal literal") before failing; the failure is reported.
warnings.filterwarnings("ignore", category=SyntaxWarning, module=re.escape(_SOURCE_NAME))
_DECIMAL = re.compile(r"^[0-9_]*\.?[0-9_]*(?:[eE]([+-]?[0-9_]+))?$")


def _disallowed(what: str) -> FormulaError:
    return FormulaError("disallowed", "disallowed syntax", what)


def _literal(node: ast.Constant, text: str) -> sympy.Rational:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = {bool: "boolean", str: "string", complex: "imaginary number"}.get(type(value), type(value).__name__)
        raise _disallowed(f"{kind} literal")
    if isinstance(value, int):
        return sympy.Integer(value)
    # The float lost digits; the source text has the exact decimal the model wrote.
    source = ast.get_source_segment(text, node) or repr(value)
    match = _DECIMAL.match(source)
    if match is None:
        raise FormulaError("syntax", "unreadable number", source)
    if match.group(1) is not None and abs(int(match.group(1).replace("_", ""))) > MAX_DIGITS:
        raise FormulaError("limit", "number too large", f"{source} has over {MAX_DIGITS} digits")
    exact = Fraction(source)
    return sympy.Rational(exact.numerator, exact.denominator)


ITERATORS: dict[str, str] = {
    "sum": "sum(expr, k, lo, hi): the sum of expr for k = lo..hi",
    "prod": "prod(expr, k, lo, hi): the product",
    "count": "count(cond, k, lo, hi): how many k in lo..hi satisfy cond",
    "first": "first(cond, k, lo, hi): the least k in lo..hi that satisfies cond",
    "max_of": "max_of(expr, k, lo, hi): the largest value of expr",
    "min_of": "min_of(expr, k, lo, hi): the smallest value of expr",
    "integrate": "integrate(expr, x, a, b): the definite integral of expr over x from a to b",
}
"""Calls with a bound variable (the second argument), inclusive integer bounds except for integrate."""
CONDITION_FIRST = frozenset({"count", "first"})
SPECIAL = frozenset(ITERATORS) | {"ifelse"}

_COMPARE_OPS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where `_build` is: the bound variables in scope and whether a condition is expected here."""

    text: str
    bound: tuple[str, ...] = ()
    condition: bool = False

    def value(self) -> _Scope:
        return _Scope(self.text, self.bound, False)

    def cond(self) -> _Scope:
        return _Scope(self.text, self.bound, True)

    def binding(self, name: str, condition: bool) -> _Scope:
        return _Scope(self.text, (*self.bound, name), condition)


def _bound_name(node: ast.AST, func: str, scope: _Scope) -> str:
    if not isinstance(node, ast.Name):
        raise FormulaError("syntax", f"the second argument of {func} must be a new variable name", "")
    name = node.id
    if name in RESERVED or name in SPECIAL:
        raise FormulaError("syntax", "bound variable is a reserved name", f"{name} in {func}")
    if name in scope.bound:
        raise FormulaError("syntax", "bound variable shadows an outer one", f"{name} in {func}")
    return name


def _special(func: str, args: list[ast.expr], scope: _Scope, depth: int) -> Expr:
    if func == "ifelse":
        if len(args) != 3:
            raise FormulaError("syntax", "wrong number of arguments", "ifelse takes 3")
        cond, then, other = args
        return IfElse(
            _build(cond, scope.cond(), depth), _build(then, scope.value(), depth), _build(other, scope.value(), depth)
        )
    if len(args) != 4:
        raise FormulaError("syntax", "wrong number of arguments", f"{func} takes 4: {ITERATORS[func]}")
    body, var, lo, hi = args
    name = _bound_name(var, func, scope)
    inner = scope.binding(name, condition=func in CONDITION_FIRST)
    return Iterate(
        func, _build(body, inner, depth), name, _build(lo, scope.value(), depth), _build(hi, scope.value(), depth)
    )


def _build(node: ast.AST, scope: _Scope | str, depth: int) -> Expr:
    if isinstance(scope, str):
        scope = _Scope(scope)
    text = scope.text
    if depth > MAX_DEPTH:
        raise FormulaError("limit", "formula nested too deeply", f"over {MAX_DEPTH} levels")
    deeper = depth + 1
    if scope.condition:
        return _condition(node, scope, deeper)
    match node:
        case ast.Constant():
            return Num(_literal(node, text))
        case ast.Name(id=name):
            if name in scope.bound:
                return Var(name)
            if name in CONSTANTS:
                return Const(name)
            if name in FUNCTIONS or name in SPECIAL:
                raise _disallowed(f"function {name} used without calling it")
            return Ref(name)
        case ast.UnaryOp(op=ast.Not()):
            raise _disallowed("operator not outside a condition (conditions go in ifelse, count, first, checks)")
        case ast.UnaryOp(op=op, operand=operand):
            if type(op) not in _UNARY_OPS:
                raise _disallowed(_OPERATOR_TEXT.get(type(op), type(op).__name__))
            return Unary(_UNARY_OPS[type(op)], _build(operand, scope, deeper))
        case ast.BinOp(op=op, left=left, right=right):
            if type(op) not in _BINARY_OPS:
                raise _disallowed(_OPERATOR_TEXT.get(type(op), type(op).__name__))
            return Binary(_BINARY_OPS[type(op)], _build(left, scope, deeper), _build(right, scope, deeper))
        case ast.Call(func=func, args=args, keywords=keywords):
            if not isinstance(func, ast.Name):
                raise _disallowed("call of something other than a function name")
            if func.id not in FUNCTIONS and func.id not in SPECIAL:
                raise _disallowed(f"unknown function {func.id}")
            if keywords:
                raise _disallowed(f"keyword arguments to {func.id}")
            if any(isinstance(a, ast.Starred) for a in args):
                raise _disallowed("star argument")
            if func.id in SPECIAL:
                return _special(func.id, args, scope, deeper)
            low, high = FUNCTIONS[func.id].arity
            if len(args) < low or (high is not None and len(args) > high):
                expected = str(low) if low == high else f"{low} or more" if high is None else f"{low} to {high}"
                raise FormulaError("syntax", "wrong number of arguments", f"{func.id} takes {expected}")
            return Call(func.id, tuple(_build(a, scope, deeper) for a in args))
        case ast.Compare() | ast.BoolOp():
            what = "comparison" if isinstance(node, ast.Compare) else "boolean operator"
            raise _disallowed(f"{what} outside a condition (conditions go in ifelse, count, first, checks)")
        case _:
            raise _disallowed(_SYNTAX_TEXT.get(type(node), type(node).__name__))


def _condition(node: ast.AST, scope: _Scope, depth: int) -> Expr:
    """A condition: comparisons joined by and, or, not."""
    match node:
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            if any(type(op) not in _COMPARE_OPS for op in ops):
                raise _disallowed("only == != < <= > >= compare")
            operands = (left, *comparators)
            return Compare(
                tuple(_COMPARE_OPS[type(op)] for op in ops), tuple(_build(o, scope.value(), depth) for o in operands)
            )
        case ast.BoolOp(op=op, values=values):
            return BoolOp("and" if isinstance(op, ast.And) else "or", tuple(_build(v, scope, depth) for v in values))
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            return BoolOp("not", (_build(operand, scope, depth),))
        case _:
            raise _disallowed("a condition here: write a comparison such as x > 0")


Mode = Literal["value", "condition", "equation"]


def parse(text: str, mode: Mode = "value") -> Expr:
    """Parse formula text into an expression tree, or raise `FormulaError` (syntax, disallowed, limit).

    `mode`: a value (derived nodes, givens), a condition (check nodes), or an equation `lhs == rhs`.
    """
    text = text.strip()
    if not text:
        raise FormulaError("syntax", "empty formula")
    if len(text) > MAX_FORMULA_CHARS:
        raise FormulaError("limit", "formula too long", f"{len(text)} characters (limit {MAX_FORMULA_CHARS})")
    if any(quote in text for quote in "'\""):
        raise _disallowed("string literal")
    try:
        tree = ast.parse(text, filename=_SOURCE_NAME, mode="eval")
    except SyntaxError as exc:
        kind: ErrorKind = "limit" if "too many nested" in exc.msg else "syntax"
        raise FormulaError(kind, "syntax error", exc.msg) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise FormulaError("limit", "formula too complex to parse", type(exc).__name__) from None
    if mode == "equation":
        body = tree.body
        if not (isinstance(body, ast.Compare) and len(body.ops) == 1 and isinstance(body.ops[0], ast.Eq)):
            raise FormulaError("syntax", "an equation needs exactly one == at the top level", "e.g. 'x**2 + 1 == y'")
        scope = _Scope(text)
        return Compare(("==",), (_build(body.left, scope, 1), _build(body.comparators[0], scope, 1)))
    return _build(tree.body, _Scope(text, condition=mode == "condition"), 0)


def children(e: Expr) -> tuple[Expr, ...]:
    """The sub-expressions of a tree node, bounds before an iteration's body."""
    match e:
        case Unary(operand=operand):
            return (operand,)
        case Binary(left=left, right=right):
            return (left, right)
        case Call(args=args) | Compare(operands=args) | BoolOp(values=args):
            return args
        case Iterate(body=body, lo=lo, hi=hi):
            return (lo, hi, body)
        case IfElse(cond=cond, then=then, other=other):
            return (cond, then, other)
    return ()


def walk(expr: Expr) -> list[Expr]:
    """Every tree node of an expression, parents before children."""
    found = [expr]
    for child in children(expr):
        found.extend(walk(child))
    return found


def refs_of(expr: Expr, constants: frozenset[str] = frozenset()) -> list[str]:
    """Node names an expression tree references, in order of first appearance.

    A constant named in `constants` counts as a reference: the graph declared a node of that name, so the
    model meant its node, not the constant.
    """
    seen: dict[str, None] = {}
    for e in walk(expr):
        if isinstance(e, Ref) or (isinstance(e, Const) and e.name in constants):
            seen.setdefault(e.name)
    return list(seen)


def bound_names(expr: Expr) -> list[str]:
    """The bound variables an expression introduces (so the computer can refuse one that is a node id)."""
    return [e.var for e in walk(expr) if isinstance(e, Iterate)]


def references(text: str, mode: Mode = "value") -> list[str]:
    """Node names a formula uses, in order of first appearance; [] if it does not parse."""
    try:
        return refs_of(parse(text, mode))
    except FormulaError:
        return []


def live_refs(expr: Expr, constants: frozenset[str] = frozenset()) -> list[str]:
    """The references an expression's value really depends on, in order of first appearance.

    The tree is built over one sympy symbol per reference, with sympy's automatic simplification: `0*x`,
    `x - x` and `x**0` do not depend on x. Functions of symbols stay opaque, so nothing else is dropped;
    parts without symbols are computed under the usual limits. Where the build fails, every reference counts.
    """
    names = refs_of(expr, constants)
    symbols = {name: sympy.Symbol(name) for name in names}

    def build(e: Expr) -> sympy.Expr:
        match e:
            case Num(value):
                return value
            case Const(name):
                return symbols[name] if name in symbols else CONSTANTS[name]
            case Ref(name):
                return symbols[name]
            case Unary(op, operand):
                inner = build(operand)
                return inner if op == "+" else -inner
            case Binary(op, left, right):
                a, b = build(left), build(right)
                if not (a.free_symbols or b.free_symbols):
                    return _NUMERIC_OPS[op](a, b)
                return _SYMBOLIC_OPS[op](a, b)
            case Call(func, args):
                built = [build(a) for a in args]
                if any(a.free_symbols for a in built):
                    return sympy.Function(func)(*built)
                return call(func, built)
            case Var(name):
                return sympy.Dummy(name)
            case Iterate() | Compare() | BoolOp() | IfElse():
                return sympy.Function(type(e).__name__)(*(build(c) for c in children(e)))
        raise AssertionError(f"unknown expression {e!r}")

    try:
        free = {s.name for s in build(expr).free_symbols}
    except (FormulaError, ArithmeticError, TypeError, ValueError, RecursionError):
        return names
    return [n for n in names if n in free]


_NUMERIC_OPS: dict[str, Callable[[sympy.Expr, sympy.Expr], sympy.Expr]] = {
    "+": lambda a, b: checked(a + b),
    "-": lambda a, b: checked(a - b),
    "*": lambda a, b: checked(a * b),
    "/": divide,
    "//": floor_divide,
    "%": modulo,
    "**": power,
}
_SYMBOLIC_OPS: dict[str, Callable[[sympy.Expr, sympy.Expr], sympy.Expr]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: sympy.Function("floordiv")(a, b),
    "%": lambda a, b: sympy.Function("mod")(a, b),
    "**": lambda a, b: a**b,
}
