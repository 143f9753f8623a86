"""Units for the computer: one cached pint registry, exact conversion factors, and compact unit text.

Unit algebra (multiply, divide, powers, dimensionality) is pint's, on pint `Unit` objects; magnitudes stay
exact sympy numbers and never enter pint. Conversion factors are exact: a second registry built with
`non_int_type=Fraction` reads pint's definition file with exact decimals (inch = 127/5000 m, eV =
1.602176634e-19 J exactly), and factors that carry pint's 50-digit pi (degree = pi/180 rad, turn = 2 pi
rad, arcminute...) are recognised and use sympy's exact `pi` instead, so `sin(30 degree)` is exactly 1/2.

Angles: pint treats radian as dimensionless, so a quantity in degrees can be used wherever a pure number
is expected and is converted to radians first. Offset units (degC, degF) are refused: write kelvin for
temperatures or `delta_degC` for temperature differences.
"""

from __future__ import annotations

import threading
from fractions import Fraction
from functools import cache, lru_cache

import pint
import sympy

from causal_grpo.scaffold.formula import FormulaError

MAX_UNIT_POWER = 12
"""Largest |power| of a unit in a unit expression, e.g. m**12."""

_BUILD_LOCK = threading.Lock()
_PI_BITS_MARGIN = 32  # dividing out pint's pi must save at least this many bits of the exact factor


@cache
def _registries() -> tuple[pint.UnitRegistry, pint.UnitRegistry]:
    return pint.UnitRegistry(), pint.UnitRegistry(non_int_type=Fraction)


def _registry_pair() -> tuple[pint.UnitRegistry, pint.UnitRegistry]:
    # Units of two different registries cannot be combined, so exactly one pair may ever be built.
    with _BUILD_LOCK:
        return _registries()


def registry() -> pint.UnitRegistry:
    """The process-wide pint registry (built once, on first use)."""
    return _registry_pair()[0]


def _bits(x: Fraction) -> int:
    return abs(x.numerator).bit_length() + x.denominator.bit_length()


@cache
def _name_factor(name: str) -> sympy.Expr:
    exact = _registry_pair()[1]
    factor = Fraction(exact.get_root_units(name)[0])
    pi = Fraction(exact.get_root_units("pi")[0])
    power, reduced = min(((k, factor / pi**k) for k in (0, 1, -1, 2, -2)), key=lambda kq: _bits(kq[1]))
    if power != 0 and _bits(reduced) > _bits(factor) - _PI_BITS_MARGIN:
        power, reduced = 0, factor
    return sympy.Rational(reduced.numerator, reduced.denominator) * sympy.pi**power


def _rational(power: float) -> sympy.Rational:
    exact = Fraction(power).limit_denominator(1000)
    return sympy.Rational(exact.numerator, exact.denominator)


@lru_cache(maxsize=4096)
def factor(unit: pint.Unit) -> sympy.Expr:
    """Exact factor from `unit` to pint's root units (km -> 1000, degree -> pi/180)."""
    result: sympy.Expr = sympy.Integer(1)
    for name, power in unit._units.items():
        result *= _name_factor(name) ** _rational(power)
    return result


def bounded(unit: pint.Unit) -> pint.Unit:
    """`unit`, if no power in it exceeds MAX_UNIT_POWER (so exact factors stay small)."""
    if any(abs(power) > MAX_UNIT_POWER for power in unit._units.values()):
        raise FormulaError("limit", "unit power too large", f"{text(unit)} (limit {MAX_UNIT_POWER})")
    return unit


@lru_cache(maxsize=4096)
def parse_unit(unit_text: str) -> pint.Unit:
    """The pint unit of a unit string ('' = dimensionless; '^' allowed), or `FormulaError` of kind 'unit'."""
    ureg = registry()
    try:
        unit = ureg.parse_units(unit_text.strip())
    except Exception as exc:  # pint raises many types (UndefinedUnitError, TokenError, ZeroDivisionError...)
        raise FormulaError("unit", "unknown unit", f"{unit_text!r} ({type(exc).__name__})") from None
    offset = [name for name in unit._units if not ureg._units[name].is_multiplicative]
    if offset:
        raise FormulaError("unit", "offset unit not supported", f"{offset[0]}: use kelvin, or delta_degC for changes")
    return bounded(unit)


def dimensionless() -> pint.Unit:
    """The unit of a pure number."""
    return parse_unit("")


def power(unit: pint.Unit, exponent: sympy.Rational) -> pint.Unit:
    """`unit ** exponent` for a rational exponent."""
    return bounded(unit ** (int(exponent) if exponent.is_Integer else float(exponent)))


def simplest(unit: pint.Unit) -> pint.Unit:
    """`unit`, or its SI base form when it has fractional powers (sqrt(W*s/kg) is m/s)."""
    if all(float(p).is_integer() for p in unit._units.values()):
        return unit
    return registry().get_base_units(unit)[1]


def same_dimension(a: pint.Unit, b: pint.Unit) -> bool:
    """Whether quantities in `a` and `b` can be added or compared."""
    return a == b or a.dimensionality == b.dimensionality


def convert(magnitude: sympy.Expr, source: pint.Unit, target: pint.Unit) -> sympy.Expr:
    """`magnitude` in `source` expressed in `target` (callers check the dimensions first)."""
    if source == target:
        return magnitude
    return magnitude * factor(source) / factor(target)


@lru_cache(maxsize=4096)
def text(unit: pint.Unit) -> str:
    """Compact unit text, e.g. 'kg*m/s**2'; '' for a pure number."""
    return format(unit, "~C")
