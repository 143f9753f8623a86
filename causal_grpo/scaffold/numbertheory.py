"""Number-theory functions of the formula language, on exact integers and bounded.

Each takes sympy numbers that must be integers (rationals for `numer`/`denom`) and returns a sympy
Integer. Factoring and prime tables stop at the scaffold's CPU deadline with a `limit` error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sympy
from sympy import ntheory

from causal_grpo.errors import FormulaError
from causal_grpo.scaffold import exact
from causal_grpo.scaffold.budget import OutOfTime, cpu_bounded

T = TypeVar("T")

MAX_PRIME_INDEX = 10**6
"""Largest k of prime(k) (the millionth prime is 15,485,863)."""
MAX_NT_DIGITS = 4000
"""Largest argument of the integer functions, in decimal digits (powmod's exponent excepted)."""


def _int(x: sympy.Expr, func: str) -> int:
    if not x.is_Integer:
        raise FormulaError("math", f"{func} needs integer arguments", f"got {x}")
    value = int(x)
    if value and len(str(abs(value))) > MAX_NT_DIGITS:
        raise FormulaError("limit", f"argument of {func} too large", f"over {MAX_NT_DIGITS} digits")
    return value


def _positive(x: sympy.Expr, func: str) -> int:
    value = _int(x, func)
    if value < 1:
        raise FormulaError("math", f"{func} needs a positive integer", f"got {value}")
    return value


def _bounded(func: str, work: Callable[[], T]) -> T:
    """`work()` within the scaffold's CPU deadline, else a `limit` error naming `func`."""
    try:
        with cpu_bounded():
            return work()
    except OutOfTime:
        raise FormulaError("limit", f"{func} stopped at the time limit", "the number is too hard to factor") from None


def _factors(func: str, n: int) -> dict[int, int]:
    return _bounded(func, lambda: ntheory.factorint(n))


def _rational(x: sympy.Expr, func: str) -> sympy.Rational:
    # An expression such as log(64)/log(4) is a rational sympy does not see; prove it before refusing.
    value = exact.rational(x)
    if value is None:
        raise FormulaError("math", f"{func} needs an exact rational", f"got {str(x)[:80]}")
    return value


def numer(x: sympy.Expr) -> sympy.Expr:
    """Numerator of the reduced exact rational."""
    return sympy.Integer(_rational(x, "numer").p)


def denom(x: sympy.Expr) -> sympy.Expr:
    """Denominator of the reduced exact rational."""
    return sympy.Integer(_rational(x, "denom").q)


def powmod(b: sympy.Expr, e: sympy.Expr, m: sympy.Expr) -> sympy.Expr:
    """b**e mod m for any e >= 0 (Python's three-argument pow)."""
    if not (b.is_Integer and e.is_Integer and m.is_Integer):
        raise FormulaError("math", "powmod needs integer arguments", f"got {b}, {e}, {m}")
    if e < 0:
        raise FormulaError("math", "powmod needs an exponent >= 0", "use modinv for inverses")
    modulus = _positive(m, "powmod")
    return sympy.Integer(pow(_int(b, "powmod"), int(e), modulus))


def modinv(a: sympy.Expr, m: sympy.Expr) -> sympy.Expr:
    """The inverse of a modulo m."""
    value, modulus = _int(a, "modinv"), _positive(m, "modinv")
    try:
        return sympy.Integer(pow(value, -1, modulus))
    except ValueError:
        raise FormulaError("math", "modinv: not invertible", f"gcd({value}, {modulus}) != 1") from None


def isprime(n: sympy.Expr) -> sympy.Expr:
    """1 if n is prime, else 0."""
    value = _int(n, "isprime")
    return sympy.Integer(_bounded("isprime", lambda: int(ntheory.isprime(value))))


def prime(k: sympy.Expr) -> sympy.Expr:
    """The k-th prime, 1-based."""
    index = _positive(k, "prime")
    if index > MAX_PRIME_INDEX:
        raise FormulaError("limit", "prime index too large", f"{index} (limit {MAX_PRIME_INDEX})")
    return sympy.Integer(_bounded("prime", lambda: int(ntheory.prime(index))))


def divisor_count(n: sympy.Expr) -> sympy.Expr:
    """How many positive divisors n has."""
    value = abs(_int(n, "divisor_count"))
    if value == 0:
        raise FormulaError("math", "divisor_count of 0", "every integer divides 0")
    result = 1
    for exponent in _factors("divisor_count", value).values():
        result *= exponent + 1
    return sympy.Integer(result)


def divisor_sum(n: sympy.Expr) -> sympy.Expr:
    """The sum of the positive divisors of n."""
    value = abs(_int(n, "divisor_sum"))
    if value == 0:
        raise FormulaError("math", "divisor_sum of 0", "every integer divides 0")
    result = 1
    for p, exponent in _factors("divisor_sum", value).items():
        result *= (p ** (exponent + 1) - 1) // (p - 1)
    return sympy.Integer(result)


def totient(n: sympy.Expr) -> sympy.Expr:
    """Euler's totient of n >= 1."""
    value = _positive(n, "totient")
    result = value
    for p in _factors("totient", value):
        result = result // p * (p - 1)
    return sympy.Integer(result)


def omega(n: sympy.Expr) -> sympy.Expr:
    """The number of distinct prime factors of n."""
    value = abs(_int(n, "omega"))
    if value == 0:
        raise FormulaError("math", "omega of 0", "0 has no factorisation")
    return sympy.Integer(len(_factors("omega", value)))


def multiplicity(p: sympy.Expr, n: sympy.Expr) -> sympy.Expr:
    """The exponent of p in n (p >= 2, n != 0)."""
    base, value = _int(p, "multiplicity"), abs(_int(n, "multiplicity"))
    if base < 2 or value == 0:
        raise FormulaError("math", "multiplicity needs p >= 2 and n != 0", f"got {base}, {value}")
    count = 0
    while value % base == 0:
        value //= base
        count += 1
    return sympy.Integer(count)


def _base(b: sympy.Expr | None, func: str) -> int:
    base = 10 if b is None else _int(b, func)
    if base < 2:
        raise FormulaError("math", f"{func} needs a base >= 2", f"got {base}")
    return base


def digit_sum(n: sympy.Expr, b: sympy.Expr | None = None) -> sympy.Expr:
    """The sum of the digits of |n| in base b (default 10)."""
    value, base = abs(_int(n, "digit_sum")), _base(b, "digit_sum")
    if base == 10:
        return sympy.Integer(sum(int(d) for d in str(value)))
    total = 0
    while value:
        value, digit = divmod(value, base)
        total += digit
    return sympy.Integer(total)


def num_digits(n: sympy.Expr, b: sympy.Expr | None = None) -> sympy.Expr:
    """How many digits |n| has in base b (default 10); 0 has one."""
    value, base = abs(_int(n, "num_digits")), _base(b, "num_digits")
    if base == 10:
        return sympy.Integer(len(str(value)))
    count = 1
    while value >= base:
        value //= base
        count += 1
    return sympy.Integer(count)
