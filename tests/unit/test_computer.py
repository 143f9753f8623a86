"""Tests for the computer: exact values, units, graph errors, adversarial input, limits and speed."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import sympy

from causal_grpo.scaffold import Computation, Scaffold, compute, references, units


@pytest.fixture(scope="module", autouse=True)
def _warm_registry() -> None:
    # The pint registries are built on first use (~0.5 s); timings below are about compute itself.
    compute(scaffold([given("x", "30", "degree"), derived("t", "sin(x)", "")], "t"))


def given(node_id: str, value: Any, unit: str = "") -> dict[str, Any]:
    return {"id": node_id, "kind": "given", "value": value, "unit": unit}


def derived(node_id: str, formula: str, unit: str = "") -> dict[str, Any]:
    return {"id": node_id, "kind": "derived", "formula": formula, "unit": unit}


def scaffold(nodes: list[dict[str, Any]], target: str = "t") -> dict[str, Any]:
    return {"problem_type": "test", "nodes": nodes, "target": target}


def one_formula(formula: str) -> dict[str, Any]:
    return scaffold([given("x", "3"), given("y", "2", "m"), derived("t", formula)])


LEGIT = [
    pytest.param([given("a", "1/3"), given("b", "1/6"), derived("t", "a + b")], "1/2", 0.5, "", id="rationals"),
    pytest.param([given("a", "0.1"), given("b", "0.2"), derived("t", "a + b")], "3/10", 0.3, "", id="decimals"),
    pytest.param([given("a", 0.1), given("b", 3), derived("t", "a * b")], "3/10", 0.3, "", id="bare-numbers"),
    pytest.param([given("G", "6.674e-11"), derived("t", "G * 10**11")], "3337/500", 6.674, "", id="scientific"),
    pytest.param(
        [given("a", "2"), derived("t", "sqrt(a) * sqrt(a) + sqrt(a)")], "sqrt(2) + 2", 2 + 2**0.5, "", id="sqrt"
    ),
    pytest.param([given("n", "17"), derived("t", "n // 5 * 10 + n % 5")], "32", 32.0, "", id="floor-div-mod"),
    pytest.param([given("n", "-7"), derived("t", "n // 2 + n % 2")], "-3", -3.0, "", id="python-floor-semantics"),
    pytest.param([given("a", "12"), given("b", "18"), derived("t", "gcd(a, b) + lcm(a, b)")], "42", 42.0, "", id="gcd"),
    pytest.param(
        [given("n", "10"), derived("t", "binomial(n, 3) + factorial(5) + comb(n, 2)")], "285", 285.0, "", id="comb"
    ),
    pytest.param([given("x", "81"), derived("t", "log(x, 3) + log(E**2)")], "6", 6.0, "", id="log-base"),
    pytest.param([given("x", "pi/6"), derived("t", "sin(x) + cos(2*x)")], "1", 1.0, "", id="trig-radians"),
    pytest.param([given("x", "30", "degree"), derived("t", "sin(x)")], "1/2", 0.5, "", id="trig-degrees"),
    pytest.param([given("x", "60", "deg"), derived("t", "cos(x) * 2")], "1", 1.0, "", id="degree-alias"),
    pytest.param([given("y", "1"), derived("t", "atan(y)", "degree")], "45", 45.0, "deg", id="angle-out-degrees"),
    pytest.param([given("y", "1"), derived("t", "atan2(y, y)")], "pi/4", 0.7853981633974483, "rad", id="atan2"),
    pytest.param([given("p", "2**2024 % 1000")], "216", 216.0, "", id="big-power-mod"),
    pytest.param(
        [given("m", "2", "kg"), given("a", "3", "m/s^2"), derived("t", "m * a", "N")], "6", 6.0, "N", id="newton"
    ),
    pytest.param(
        [given("m", "2", "kg"), given("a", "3", "m/s^2"), derived("t", "m * a")],
        "6",
        6.0,
        "kg*m/s**2",
        id="undeclared-unit-kept",
    ),
    pytest.param([given("d", "1.5", "km"), derived("t", "d", "m")], "1500", 1500.0, "m", id="km-to-m"),
    pytest.param([given("d", "250", "m"), derived("t", "d", "km")], "1/4", 0.25, "km", id="m-to-km"),
    pytest.param(
        [given("d", "1", "km"), given("e", "300", "m"), derived("t", "d + e", "m")], "1300", 1300.0, "m", id="mixed-add"
    ),
    pytest.param([given("v", "36", "km/h"), derived("t", "v", "m/s")], "10", 10.0, "m/s", id="km/h-to-m/s"),
    pytest.param([given("x", "1", "inch"), derived("t", "x", "cm")], "127/50", 2.54, "cm", id="inch-exact"),
    pytest.param(
        [
            given("K_i", "10", "J"),
            given("F", "2", "N"),
            given("d", "-3", "m"),
            derived("W", "F * d", "J"),
            derived("t", "K_i + W", "J"),
        ],
        "4",
        4.0,
        "J",
        id="work-energy",
    ),
    pytest.param(
        [given("g", "9.8", "m/s**2"), given("h", "20", "m"), derived("t", "sqrt(2*g*h)")],
        "14*sqrt(2)",
        14 * 2**0.5,
        "m/s",
        id="sqrt-units",
    ),
    pytest.param(
        [given("r", "2", "m"), derived("t", "pi * r**2", "m^2")], "4*pi", 4 * 3.141592653589793, "m**2", id="area"
    ),
    pytest.param([given("n", "50", "percent"), derived("t", "n * 4")], "200", 200.0, "%", id="percent-kept"),
    pytest.param([given("n", "50", "percent"), derived("t", "n * 4", "")], "200", 200.0, "%", id="percent-blank"),
    pytest.param([given("n", "50", "percent"), derived("t", "n ** 2")], "1/4", 0.25, "", id="percent-to-number"),
    pytest.param(
        [given("a", "3", "m"), given("b", "-5", "m"), derived("t", "max(a, b) - abs(b)")],
        "-2",
        -2.0,
        "m",
        id="max-abs-units",
    ),
    pytest.param(
        [given("a", "7", "m"), given("b", "2", "m"), derived("t", "a // b + a % b / b")],
        "7/2",
        3.5,
        "",
        id="floordiv-units",
    ),
]


@pytest.mark.parametrize(("nodes", "exact", "numeric", "unit"), LEGIT)
def test_legitimate_scaffolds(nodes: list[dict[str, Any]], exact: str, numeric: float, unit: str) -> None:
    target = nodes[-1]["id"]
    result = compute(scaffold(nodes, target))
    assert result.errors == []
    assert result.valid
    assert result.answer is not None
    assert result.answer.exact == exact
    assert result.answer.numeric == pytest.approx(numeric, rel=1e-12)
    assert result.answer.unit == unit
    assert result.order[-1] == target
    assert set(result.order) == {n["id"] for n in nodes}


def test_full_result_fields() -> None:
    result = compute(
        scaffold(
            [given("m", "2", "kg"), given("a", "3", "m/s^2"), derived("F", "m*a", "N"), derived("t", "F + F/2", "N")]
        )
    )
    assert result.valid
    assert result.values == {"m": "2", "a": "3", "F": "6", "t": "9"}
    assert result.numeric == {"m": 2.0, "a": 3.0, "F": 6.0, "t": 9.0}
    assert result.units == {"m": "kg", "a": "m/s**2", "F": "N", "t": "N"}
    assert result.parents == {"m": [], "a": [], "F": ["m", "a"], "t": ["F"]}
    assert result.order.index("F") > max(result.order.index("m"), result.order.index("a"))
    assert str(result.answer) == "9 N"
    assert result.elapsed_ms > 0


def test_accepts_model_dict_and_json() -> None:
    data = scaffold([given("a", "2"), derived("t", "a**10")])
    from_model = compute(Scaffold.model_validate(data))
    assert from_model.valid and from_model.values["t"] == "1024"
    for other in (compute(data), compute(json.dumps(data)), compute(json.dumps(data).encode())):
        assert other.model_dump(exclude={"elapsed_ms"}) == from_model.model_dump(exclude={"elapsed_ms"})


@pytest.mark.parametrize(
    "bad",
    [
        None,
        42,
        [],
        "not json",
        "{}",
        {"nodes": []},
        {"nodes": [{"id": "1x", "kind": "given", "value": "1"}], "target": "1x"},
        {"nodes": [{"id": "a", "kind": "constant", "value": "1"}], "target": "a"},
        {"nodes": [{"id": "a", "kind": "given", "value": "1", "unit": "m" * 100}], "target": "a"},
        {"nodes": [{"id": "a", "kind": "derived", "formula": "(" * 1000 + "1" + ")" * 1000}], "target": "a"},
        {"nodes": [{"id": "a", "kind": "derived", "formula": "x" * 10_000}], "target": "a"},
        {"nodes": [{"id": f"n{i}", "kind": "given", "value": "1"} for i in range(65)], "target": "n0"},
    ],
)
def test_schema_errors(bad: Any) -> None:
    result = compute(bad)
    assert not result.valid
    assert [e.kind for e in result.errors] == ["schema"]
    assert result.errors[0].message.startswith("not a valid scaffold: ")


def test_schema_error_lists_pydantic_problems_concisely() -> None:
    bad = {"nodes": [{"id": f"{i}bad", "kind": "other"} for i in range(10)], "target": "x"}
    message = compute(bad).errors[0].message
    assert "nodes.0.id" in message and "nodes.0.kind" in message
    assert message.endswith("more)")
    assert len(message) < 1000


ADVERSARIAL = [
    ("__import__('os').system('touch /tmp/causal_grpo_pwned')", "disallowed"),
    ("().__class__.__bases__", "disallowed"),
    ("x.__class__.__mro__[1].__subclasses__()", "disallowed"),
    ("lambda: 1", "disallowed"),
    ("[x for x in y]", "disallowed"),
    ('"a"*10**9', "disallowed"),
    ("open(x)", "disallowed"),
    ("globals()", "disallowed"),
    ("9**9**9**9", "limit"),
    ("2**10**100", "limit"),
    ("10**4001", "limit"),
    ("x**x**x**x", "limit"),
    ("factorial(10**6)", "limit"),
    ("factorial(factorial(7))", "limit"),
    ("binomial(10**9, 10**5)", "limit"),
    ("sqrt(10**150 + 1)", "limit"),
    ("exp(exp(exp(100)))", "limit"),
    ("(" * 240 + "1" + ")" * 240, "limit"),
    ("-" * 300 + "1", "limit"),
    ("sqrt(" * 60 + "2" + ")" * 60, "limit"),
    ("1e99999", "limit"),
    ("x / 0", "math"),
    ("x // (x - 3)", "math"),
    ("x % 0", "math"),
    ("log(0)", "math"),
    ("log(x, 1)", "math"),
    ("sqrt(-x)", "math"),
    ("asin(x)", "math"),
    ("tan(pi/2)", "math"),
    ("0**-1", "math"),
    ("factorial(-1)", "math"),
    ("gcd(x/2, 4)", "math"),
    ("x + y", "dimension"),
    ("sin(y)", "dimension"),
    ("y ** y", "dimension"),
    ("y ** pi", "dimension"),
    ("x ^ 2", "disallowed"),
    ("x +", "syntax"),
    ("", "syntax"),
    ("zz + 1", "unknown_reference"),
]


@pytest.mark.parametrize(("formula", "kind"), ADVERSARIAL)
def test_adversarial_formulas_are_rejected_quickly(formula: str, kind: str) -> None:
    start = time.perf_counter()
    result = compute(one_formula(formula))
    assert time.perf_counter() - start < 0.5
    assert not result.valid
    assert [e.kind for e in result.errors] == [kind]
    assert result.errors[0].node == "t"
    assert "t" not in result.values and result.answer is None
    assert result.values == {"x": "3", "y": "2"}  # the rest of the graph still computes


def test_nothing_is_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for formula in [
        f"__import__('os').system('touch {marker}')",
        f"exec(\"open('{marker}', 'w')\")",
        f"open({marker})",
    ]:
        assert not compute(one_formula(formula)).valid
    assert not marker.exists()


def test_error_messages_name_node_and_problem() -> None:
    def message(formula: str) -> str:
        return compute(one_formula(formula)).errors[0].message

    assert message("x.real") == "disallowed syntax in t: attribute access"
    assert message("x / 0") == "division by zero in t"
    assert message("y + x") == "dimension mismatch in t: m + dimensionless"
    assert message("zz * ww") == "unknown reference zz, ww in t"
    assert message("9**9**9") == "exponent too large in t: 387420489 (limit 10000)"
    assert message("sqrt(-x)") == "non-real value in t: sqrt(3)*I"


def test_cycle_is_named_and_dependents_not_cascaded() -> None:
    result = compute(
        scaffold([given("g", "1"), derived("a", "b + g"), derived("b", "c"), derived("c", "a"), derived("t", "a * 2")])
    )
    assert not result.valid
    assert [e.kind for e in result.errors] == ["cycle"]
    message = result.errors[0].message
    assert message.startswith("cycle: ")
    cycle = message.removeprefix("cycle: ").split(" (")[0].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    for first, second in zip(cycle, cycle[1:], strict=False):
        assert second in result.parents[first]  # each node uses the next
    assert "not computed: t" in message
    assert result.values == {"g": "1"}
    assert result.parents == {"g": [], "a": ["b", "g"], "b": ["c"], "c": ["a"], "t": ["a"]}


def test_self_reference_and_two_cycles() -> None:
    result = compute(scaffold([derived("a", "a + 1"), derived("b", "c"), derived("c", "b"), given("t", "1")]))
    assert sorted(e.message for e in result.errors) == ["cycle: a -> a", "cycle: b -> c -> b"] or sorted(
        e.message for e in result.errors
    ) == ["cycle: a -> a", "cycle: c -> b -> c"]
    assert result.values == {"t": "1"}


def test_one_error_per_root_cause() -> None:
    result = compute(
        scaffold(
            [given("x", "0"), derived("a", "1/x"), derived("b", "a + 1"), derived("c", "b * a"), derived("t", "c")]
        )
    )
    assert [(e.kind, e.node) for e in result.errors] == [("math", "a")]
    assert result.errors[0].message == "division by zero in a (so not computed: b, c, t)"
    assert result.parents["c"] == ["b", "a"]


def test_graph_errors() -> None:
    result = compute(
        scaffold(
            [
                given("a", "1"),
                given("a", "2"),
                given("pi", "3"),
                given("sin", "3"),
                given("g", "a + 1"),
                derived("d", "a + zz"),
                derived("e", "a", "furlongs_per_fortnightz"),
                derived("f", "a", "degC"),
            ],
            target="missing",
        )
    )
    kinds = {(e.kind, e.node) for e in result.errors}
    assert kinds == {
        ("duplicate_id", "a"),
        ("reserved_id", "pi"),
        ("reserved_id", "sin"),
        ("missing_target", None),
        ("given_with_reference", "g"),
        ("unknown_reference", "d"),
        ("unit", "e"),
        ("unit", "f"),
    }
    assert result.values == {}  # neither of two duplicate ids is used: which one a formula meant is unknown
    assert result.parents["g"] == ["a"] and result.parents["d"] == ["a", "zz"]  # edges despite the errors
    assert not result.valid and result.answer is None


def test_given_may_use_constants_and_functions() -> None:
    result = compute(scaffold([given("t", "sqrt(2) * pi / 4 + 3/4")]))
    assert result.valid and result.values["t"] == "3/4 + sqrt(2)*pi/4"


def test_declared_unit_must_match() -> None:
    result = compute(scaffold([given("m", "2", "kg"), given("a", "3", "m/s^2"), derived("t", "m*a", "J")]))
    assert [e.kind for e in result.errors] == ["dimension"]
    assert result.errors[0].message.startswith(
        "declared unit J does not match the formula in t: formula gives kg*m/s**2"
    )


def test_target_computed_despite_unrelated_error_is_not_valid() -> None:
    result = compute(scaffold([given("a", "2"), derived("dead", "a/0"), derived("t", "a + 1")]))
    assert not result.valid
    assert result.answer is not None and result.answer.exact == "3"


def test_huge_but_finite_values() -> None:
    result = compute(scaffold([given("a", "10"), derived("t", "a**400")]))
    assert result.valid
    assert result.values["t"] == "1" + "0" * 400
    assert result.numeric["t"] is None  # exact, but beyond float range


def chain(length: int) -> dict[str, Any]:
    nodes = [given("x0", "1/7")] + [derived(f"x{i}", f"sin(x{i - 1}) + sqrt(x{i - 1} + 2)") for i in range(1, length)]
    return scaffold(nodes, f"x{length - 1}")


def test_timeout_is_reported() -> None:
    assert compute(chain(64)).valid
    result = compute(chain(64), time_limit_s=0.005)
    assert not result.valid
    assert [e.kind for e in result.errors] == ["timeout"]
    assert len(result.values) < 64
    assert result.elapsed_ms < 500
    assert [e.kind for e in compute(scaffold([given("t", "1")]), time_limit_s=0.0).errors] == ["timeout"]


def test_growing_expressions_continue_as_precise_floats() -> None:
    nodes = [given("x0", "sqrt(2)")] + [derived(f"x{i}", f"x{i - 1} * sqrt(3) + x{i - 1} + pi") for i in range(1, 64)]
    start = time.perf_counter()
    result = compute(scaffold(nodes, "x63"))
    assert time.perf_counter() - start < 1.0
    assert result.valid
    assert result.values["x1"] == "sqrt(2) + sqrt(6) + pi"  # small values stay exact
    expected = 2**0.5
    for i in range(1, 64):
        expected = expected * (3**0.5 + 1) + math.pi
        assert result.numeric[f"x{i}"] == pytest.approx(expected, rel=1e-12)
    late = result.values["x63"]
    assert "sqrt" not in late and "pi" not in late and float(late) == pytest.approx(expected, rel=1e-12)


def test_deeply_nested_functions_stay_fast() -> None:
    nodes = [given("x0", "1/7")] + [derived(f"x{i}", f"cos(x{i - 1}) / 2 + sin(x{i - 1})") for i in range(1, 64)]
    start = time.perf_counter()
    result = compute(scaffold(nodes, "x63"))
    assert time.perf_counter() - start < 1.0
    assert result.valid
    expected = 1 / 7
    for _ in range(63):
        expected = math.cos(expected) / 2 + math.sin(expected)
    assert result.answer is not None and result.answer.numeric == pytest.approx(expected, rel=1e-12)


def test_references_is_exported() -> None:
    assert references("m*a + F") == ["m", "a", "F"]
    assert references("import os") == []


def test_ten_node_scaffold_is_fast() -> None:
    nodes = [
        given("m", "2", "kg"),
        given("a", "3", "m/s^2"),
        given("d", "4", "m"),
        given("t0", "2", "s"),
        derived("F", "m*a", "N"),
        derived("W", "F*d", "J"),
        derived("P", "W/t0", "W"),
        derived("v", "sqrt(2*W/m)", "m/s"),
        derived("p", "m*v", "kg*m/s"),
        derived("t", "p**2/(2*m)", "J"),
    ]
    data = scaffold(nodes)
    assert compute(data).values["t"] == "24"
    runs = 50
    start = time.perf_counter()
    for _ in range(runs):
        compute(data)
    per_call_ms = (time.perf_counter() - start) / runs * 1000
    assert per_call_ms < 25  # ~1 ms on a laptop; generous for slow CI


@pytest.mark.anyio
async def test_works_in_threads_under_asyncio() -> None:
    data = scaffold([given("x", "30", "degree"), derived("t", "sin(x) * 4", "")])
    results = await asyncio.gather(*(asyncio.to_thread(compute, data) for _ in range(8)))
    assert all(isinstance(r, Computation) and r.valid and r.values["t"] == "2" for r in results)
    timed = await asyncio.to_thread(compute, chain(64), time_limit_s=0.005)
    assert [e.kind for e in timed.errors] == ["timeout"]


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("km", sympy.Integer(1000)),
        ("kg", sympy.Integer(1000)),  # pint's root unit of mass is the gram
        ("inch", sympy.Rational(127, 5000)),
        ("mile/hour", sympy.Rational(1397, 3125)),
        ("degree", sympy.pi / 180),
        ("arcminute", sympy.pi / 10800),
        ("turn", 2 * sympy.pi),
        ("percent", sympy.Rational(1, 100)),
        ("eV", sympy.Rational("1.602176634e-16")),
        ("", sympy.Integer(1)),
    ],
)
def test_exact_unit_factors(unit: str, expected: sympy.Expr) -> None:
    assert units.factor(units.parse_unit(unit)) == expected


@pytest.mark.parametrize("unit", ["N", "kg*m/s^2", "m/s**2", "J/(kg*K)", "ohm", "degree", "percent", "mi/h", "uF"])
def test_unit_text_parses_back(unit: str) -> None:
    parsed = units.parse_unit(unit)
    assert units.registry().parse_units(units.text(parsed)) == parsed


@pytest.mark.parametrize(
    ("unit", "kind"), [("bogus", "unit"), ("m)", "unit"), ("2*m", "unit"), ("degC", "unit"), ("m^99", "limit")]
)
def test_bad_units(unit: str, kind: str) -> None:
    result = compute(scaffold([given("t", "1", unit)]))
    assert [(e.kind, e.node) for e in result.errors] == [(kind, "t")]


def test_unit_powers_stay_bounded() -> None:
    nodes = [given("x0", "1", "km")] + [derived(f"x{i}", f"x{i - 1} * x{i - 1}") for i in range(1, 6)]
    result = compute(scaffold(nodes, "x5"))
    assert result.units["x3"] == "km**8"
    assert [(e.kind, e.node) for e in result.errors] == [("limit", "x4")]
