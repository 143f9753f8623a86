"""Tests for the formula parser and its bounded sympy helpers."""

from __future__ import annotations

import pytest
import sympy

from causal_grpo.scaffold.formula import (
    CONSTANTS,
    FUNCTIONS,
    MAX_DEPTH,
    Binary,
    Call,
    Const,
    FormulaError,
    Num,
    Ref,
    Unary,
    call,
    divide,
    floor_divide,
    modulo,
    parse,
    power,
    references,
)

R = sympy.Rational


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1", R(1, 10)),
        ("6.674e-11", R(6674, 10**14)),
        ("1_000", R(1000)),
        ("1_000.5", R(2001, 2)),
        ("0x10", R(16)),
        (".5", R(1, 2)),
        ("3.", R(3)),
        ("2E3", R(2000)),
    ],
)
def test_number_literals_are_exact(text: str, expected: sympy.Rational) -> None:
    assert parse(text) == Num(expected)


def test_parse_builds_the_tree() -> None:
    assert parse(" -a + sqrt(b) ** 2 // pi ") == Binary(
        "+",
        Unary("-", Ref("a")),
        Binary("//", Binary("**", Call("sqrt", (Ref("b"),)), Num(R(2))), Const("pi")),
    )


def test_references_in_first_appearance_order() -> None:
    assert references("b + a*b + sin(c) / max(a, d, E)") == ["b", "a", "c", "d"]
    assert references("pi * E") == []
    assert references("a +") == []
    assert references("a.b") == []


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("x.y", "attribute access"),
        ("().__class__.__bases__", "attribute access"),
        ("x[0]", "subscript"),
        ("lambda: 1", "lambda"),
        ("[x for x in y]", "comprehension"),
        ("(x for x in y)", "comprehension"),
        ("'a' * 3", "string literal"),
        ('f"{x}"', "string literal"),
        ("True + 1", "boolean literal"),
        ("1j", "imaginary number literal"),
        ("None", "NoneType literal"),
        ("...", "ellipsis literal"),
        ("x < 1", "comparison outside a condition (conditions go in ifelse, count, first, checks)"),
        ("x and y", "boolean operator outside a condition (conditions go in ifelse, count, first, checks)"),
        ("x if y else z", "conditional expression"),
        ("(x := 1)", "assignment expression"),
        ("[1, 2]", "list"),
        ("(1, 2)", "tuple"),
        ("{1: 2}", "dict"),
        ("{1}", "set"),
        ("max(*x)", "star argument"),
        ("x ^ 2", "operator ^ (write powers as **)"),
        ("x & 1", "operator &"),
        ("x @ y", "operator @"),
        ("x << 1", "operator <<"),
        ("not x", "operator not outside a condition (conditions go in ifelse, count, first, checks)"),
        ("~x", "operator ~"),
        ("log(x, base=2)", "keyword arguments to log"),
        ("foo(1)", "unknown function foo"),
        ("__import__(x)", "unknown function __import__"),
        ("eval(x)", "unknown function eval"),
        ("sqrt(2)(3)", "call of something other than a function name"),
        ("sin + 1", "function sin used without calling it"),
    ],
)
def test_disallowed_syntax_is_named(text: str, detail: str) -> None:
    with pytest.raises(FormulaError) as info:
        parse(text)
    assert info.value.kind == "disallowed"
    assert info.value.describe("F") == f"disallowed syntax in F: {detail}"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", "syntax"),
        ("   ", "syntax"),
        ("1 +", "syntax"),
        ("1; 2", "syntax"),
        ("import os", "syntax"),
        ("sqrt()", "syntax"),
        ("sqrt(1, 2)", "syntax"),
        ("log(1, 2, 3)", "syntax"),
        ("atan2(1)", "syntax"),
        ("x" * 501, "limit"),
        ("1+" * 5000 + "1", "limit"),
        ("(" * 1000 + "1" + ")" * 1000, "limit"),
        ("(" * 240 + "1" + ")" * 240, "limit"),
        ("-" * (MAX_DEPTH + 1) + "1", "limit"),
        ("sqrt(" * (MAX_DEPTH + 1) + "2" + ")" * (MAX_DEPTH + 1), "limit"),
        ("1e5000", "limit"),
    ],
)
def test_bad_text_is_refused(text: str, kind: str) -> None:
    with pytest.raises(FormulaError) as info:
        parse(text)
    assert info.value.kind == kind


def test_depth_up_to_the_limit_parses() -> None:
    assert parse("-" * MAX_DEPTH + "1") is not None


@pytest.mark.parametrize(
    ("base", "exp", "expected"),
    [
        (R(2), R(10), R(1024)),
        (R(2), R(2024), sympy.Integer(2) ** 2024),
        (R(4), R(1, 2), R(2)),
        (R(8), R(-2, 3), R(1, 4)),
        (R(1, 3), R(-3), R(27)),
        (R(-1), R(10_000), R(1)),
        (R(0), R(5), R(0)),
    ],
)
def test_power_is_exact(base: sympy.Expr, exp: sympy.Expr, expected: sympy.Expr) -> None:
    assert power(base, exp) == expected


@pytest.mark.parametrize(
    ("base", "exp", "problem"),
    [
        (R(9), R(9**9), "exponent too large"),
        (R(2), R(1, 10**6), "exponent too large"),
        (R(10), R(4001), "power too large"),
        (R(10**150 + 1), R(1, 2), "root of a number too large"),
        (sympy.E, R(10_000), "power too large"),
        (R(2), sympy.pi * 10**6, "exponent too large"),
    ],
)
def test_power_refuses_huge_work(base: sympy.Expr, exp: sympy.Expr, problem: str) -> None:
    with pytest.raises(FormulaError) as info:
        power(base, exp)
    assert (info.value.kind, info.value.problem) == ("limit", problem)


def test_zero_to_a_negative_power_is_division_by_zero() -> None:
    with pytest.raises(FormulaError) as info:
        power(R(0), R(-1))
    assert info.value.kind == "math"


def test_integer_division_and_modulo_follow_python() -> None:
    for a, b in [(7, 3), (-7, 3), (7, -3), (-7, -3)]:
        assert floor_divide(R(a), R(b)) == a // b
        assert modulo(R(a), R(b)) == a % b
    assert divide(R(1), R(3)) + R(1, 6) == R(1, 2)
    for op in (divide, floor_divide, modulo):
        with pytest.raises(FormulaError, match="division by zero"):
            op(R(1), R(0))


@pytest.mark.parametrize(
    ("func", "args", "expected"),
    [
        ("gcd", [12, 18], 6),
        ("lcm", [4, 6], 12),
        ("binomial", [10, 3], 120),
        ("comb", [2024, 2], 2024 * 2023 // 2),
        ("binomial", [10**12, 3], (10**12) * (10**12 - 1) * (10**12 - 2) // 6),
        ("factorial", [5], 120),
        ("factorial", [0], 1),
        ("log", [8, 2], 3),
        ("log10", [1000], 3),
        ("ln", [1], 0),
        ("floor", [R(7, 2)], 3),
        ("ceil", [R(7, 2)], 4),
        ("round", [R(5, 2)], 2),
        ("round", [R(7, 2)], 4),
        ("min", [3, R(5, 2), 4], R(5, 2)),
        ("max", [3, R(5, 2), 4], 4),
        ("abs", [-3], 3),
        ("sin", [sympy.pi / 6], R(1, 2)),
        ("atan2", [1, 1], sympy.pi / 4),
        ("sqrt", [R(9, 4)], R(3, 2)),
        ("exp", [0], 1),
    ],
)
def test_functions(func: str, args: list[object], expected: object) -> None:
    assert call(func, [sympy.Rational(a) if isinstance(a, int) else a for a in args]) == expected


@pytest.mark.parametrize(
    ("func", "args", "kind"),
    [
        ("factorial", [10**6], "limit"),
        ("factorial", [-1], "math"),
        ("factorial", [R(1, 2)], "math"),
        ("binomial", [10**12, 10**6], "limit"),
        ("gcd", [R(1, 2), 3], "math"),
        ("log", [0], "math"),
        ("log", [5, 1], "math"),
        ("exp", [10**6], "limit"),
        ("cosh", [-(10**6)], "limit"),
        ("tan", [sympy.pi / 2], "math"),
        ("max", [sympy.I, 1], "math"),
    ],
)
def test_function_failures(func: str, args: list[object], kind: str) -> None:
    with pytest.raises(FormulaError) as info:
        call(func, [sympy.Rational(a) if isinstance(a, int) else a for a in args])
    assert info.value.kind == kind


def test_names_are_documented() -> None:
    assert {"sqrt", "exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "abs", "floor", "ceil"} <= set(FUNCTIONS)
    assert {"min", "max", "gcd", "lcm", "binomial", "factorial"} <= set(FUNCTIONS)
    assert set(CONSTANTS) == {"pi", "E"}
    assert all(f.doc for f in FUNCTIONS.values())
