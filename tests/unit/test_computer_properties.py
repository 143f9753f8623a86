"""Property tests: the computer never raises, stays fast, and keeps arithmetic exact, whatever it is fed."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from causal_grpo.scaffold import FUNCTIONS, Computation, compute, references

TIME_LIMIT_S = 1.0
SETTINGS = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

GIVENS = [
    {"id": "a", "kind": "given", "value": "2", "unit": "kg"},
    {"id": "b", "kind": "given", "value": "3/4", "unit": "m"},
    {"id": "x", "kind": "given", "value": "5"},
    {"id": "y", "kind": "given", "value": "30", "unit": "degree"},
]
UNITS = ["", "m", "kg", "N", "m/s^2", "degree", "percent", "km", "J", "furlong", "bogus", "degC", "m^99"]


def bounded(scaffold: Any) -> Computation:
    """`compute` with the test's time limit, checked on the clock the computer bounds: this thread's CPU time
    (wall time also counts whatever else the machine runs, such as a test suite beside it)."""
    started = time.thread_time()
    result = compute(scaffold, time_limit_s=TIME_LIMIT_S)
    assert time.thread_time() - started < TIME_LIMIT_S + 0.5
    return result


def check(result: Computation) -> None:
    """What must hold for any input: a Computation with no bug reported."""
    assert isinstance(result, Computation)
    assert not [e for e in result.errors if e.kind == "internal"], result.errors
    assert result.valid == (not result.errors and result.answer is not None)
    assert set(result.values) == set(result.order) == set(result.numeric) == set(result.units)


def with_formula(formula: str, unit: str = "") -> dict[str, Any]:
    return {"nodes": [*GIVENS, {"id": "t", "kind": "derived", "formula": formula, "unit": unit}], "target": "t"}


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_formula(formula: str) -> None:
    check(bounded(with_formula(formula)))


@SETTINGS
@given(st.text(alphabet="0123456789.eE+-*/%() ,^_abxyzpiEsqrtlogfcn!~<>=[]'\"", max_size=80))
def test_formula_like_text(formula: str) -> None:
    result = bounded(with_formula(formula))
    check(result)
    if "t" in result.parents:
        assert result.parents["t"] == references(formula)


_numbers = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.integers(0, 10**60).map(str),
    st.fractions(max_denominator=10**6).map(lambda f: f"{f.numerator}/{f.denominator}"),
    st.decimals(allow_nan=False, allow_infinity=False, places=6).map(str),
    st.builds("{}e{}".format, st.integers(-99, 99), st.integers(-400, 400)),
)
_names = st.sampled_from(["a", "b", "x", "y", "pi", "E", "zz", "t"])
_functions = st.sampled_from([*FUNCTIONS, "foo", "eval"])


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds("({}) {} ({})".format, inner, st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "^"]), inner),
        st.builds("{}{}".format, st.sampled_from(["-", "+", "--"]), inner),
        st.builds("{}({})".format, _functions, st.lists(inner, min_size=1, max_size=3).map(", ".join)),
    )


formulas = st.recursive(st.one_of(_numbers, _names), _extend, max_leaves=16)


@SETTINGS
@given(formulas, st.sampled_from(UNITS))
def test_grammar_formulas(formula: str, unit: str) -> None:
    result = bounded(with_formula(formula, unit))
    check(result)
    if "t" in result.parents:
        assert result.parents["t"] == references(formula)


_node_ids = st.sampled_from(["a", "b", "c", "d", "sin", "t", "_x", "9z"])


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, Any]:
    nodes = [
        {
            "id": draw(_node_ids),
            "kind": draw(st.sampled_from(["given", "derived"])),
            "value": draw(st.one_of(st.none(), _numbers, formulas)),
            "formula": draw(st.one_of(st.none(), formulas)),
            "unit": draw(st.sampled_from(UNITS)),
        }
        for _ in range(draw(st.integers(1, 8)))
    ]
    return {"nodes": nodes, "target": draw(_node_ids)}


@SETTINGS
@given(graphs())
def test_random_graphs(scaffold: dict[str, Any]) -> None:
    result = bounded(scaffold)
    check(result)
    ids = [n["id"] for n in scaffold["nodes"]]
    assert set(result.values) <= set(ids)


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
_scaffold_shaped = st.fixed_dictionaries(
    {
        "nodes": st.lists(
            st.dictionaries(st.sampled_from(["id", "kind", "value", "formula", "unit"]), _json), max_size=4
        )
    },
    optional={"target": _json, "problem_type": _json},
)


@SETTINGS
@given(st.one_of(_json, _scaffold_shaped))
def test_random_json(data: Any) -> None:
    check(bounded(data))
    check(bounded(json.dumps(data)))


_fractions = st.fractions(max_denominator=10**9).filter(lambda f: abs(f) < 10**12)


@SETTINGS
@given(_fractions, _fractions)
def test_rational_arithmetic_is_exact(p: Fraction, q: Fraction) -> None:
    nodes = [
        {"id": "p", "kind": "given", "value": f"{p.numerator}/{p.denominator}"},
        {"id": "q", "kind": "given", "value": f"({q.numerator})/{q.denominator}"},
        {"id": "s", "kind": "derived", "formula": "p + q"},
        {"id": "d", "kind": "derived", "formula": "p - q"},
        {"id": "m", "kind": "derived", "formula": "p * q"},
        {"id": "t", "kind": "derived", "formula": "s * d - m"},
    ]
    result = compute({"nodes": nodes, "target": "t"})
    assert result.valid
    for node, value in {"s": p + q, "d": p - q, "m": p * q, "t": (p + q) * (p - q) - p * q}.items():
        assert Fraction(result.values[node]) == value


@SETTINGS
@given(st.decimals(min_value=-(10**9), max_value=10**9, places=4, allow_nan=False, allow_infinity=False))
def test_unit_conversion_is_exact(value: Any) -> None:
    nodes = [
        {"id": "d", "kind": "given", "value": str(value), "unit": "km"},
        {"id": "t", "kind": "derived", "formula": "d", "unit": "mm"},
    ]
    result = compute({"nodes": nodes, "target": "t"})
    assert result.valid
    assert Fraction(result.values["t"]) == Fraction(str(value)) * 1_000_000
