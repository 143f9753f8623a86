"""Iterations over transcendental bodies: a numeric path fast enough for thousands of steps, never wrong.

A condition is decided by floats only where its margin exceeds a running error bound; near a boundary
(sin(k*pi) is about 1e-13 as a float and exactly 0) that element is decided exactly. So count, first,
max_of and min_of stay exact; a sum or product that had to go through floats is marked inexact.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from causal_grpo.scaffold import Computation, compute

TIME_LIMIT_S = 2.0


def run(formula: str, **givens: str) -> Computation:
    nodes: list[dict[str, Any]] = [{"id": k, "kind": "given", "value": v} for k, v in givens.items()]
    nodes.append({"id": "t", "kind": "derived", "formula": formula})
    result = compute({"nodes": nodes, "target": "t"}, time_limit_s=TIME_LIMIT_S)
    assert not [e for e in result.errors if e.kind == "internal"], result.errors
    return result


def exact(formula: str, **givens: str) -> str:
    result = run(formula, **givens)
    assert result.valid, [str(e) for e in result.errors]
    assert result.answer is not None and result.answer.is_exact, result.answer
    return result.answer.exact


# Expected counts by reasoning, not by running: sin(k*pi/7) > 0 iff k mod 14 is 1..6 (4000 = 285*14 + 10,
# so 285*6 + 6); sin(k*pi) is exactly 0 for every integer k; tan(k*pi/3) is 0 iff 3 | k.
# An element floats cannot decide costs an exact sympy evaluation (0.3-0.5 ms here, over 1 ms on a machine 3x
# slower), so where every element needs one (equal values, ties for the maximum) the range is at most 1000 long.
@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("count(sin(k*pi/n) > 0, k, 1, 4000)", "1716"),
        ("count(sin(k*pi) == 0, k, 1, 1000)", "1000"),
        ("count(sin(k*pi) > 0, k, 1, 1000)", "0"),
        ("count(sin(k*pi) >= 0, k, 1, 1000)", "1000"),
        ("count(cos(k*pi/2) == 0, k, 1, 1000)", "500"),
        ("count(tan(k*pi/3) == 0, k, 1, 1000)", "333"),
        # 1e-30 is invisible to a float next to sin(k*pi)'s rounding error, yet decides every element.
        ("count(sin(k*pi) + 10**(-30) > 0, k, 1, 1000)", "1000"),
        ("count(floor(sqrt(k))**2 == k, k, 1, 3000)", "54"),
        ("count(exp(log(k)) == k, k, 1, 500)", "500"),
        ("first(sin(k*pi/n) < 0, k, 1, 4000)", "8"),
        ("first(cos(k*pi/n) == -1, k, 1, 4000)", "7"),
        ("max_of(cos(k*pi), k, 1, 1000)", "1"),
        ("min_of(sin(k*pi/2), k, 1, 3000)", "-1"),
        # A nested numeric sum inside a condition (125 by mpmath at 50 digits; the smallest margin is 1e-3).
        ("count(sum(sin(j*k/n), j, 1, 10) > 0, k, 1, 300)", "125"),
    ],
)
def test_transcendental_conditions_are_counted_exactly_within_the_limit(formula: str, expected: str) -> None:
    assert exact(formula, n="7") == expected


def test_the_largest_of_many_sines_is_the_exact_value_at_its_argmax() -> None:
    best = max(range(1, 3001), key=math.sin)
    assert exact("max_of(sin(k), k, 1, 3000)") == f"sin({best})"


def test_a_long_transcendental_sum_is_numeric_and_says_so() -> None:
    result = run("sum(sin(k/10), k, 1, 4000)")
    assert result.valid, [str(e) for e in result.errors]
    assert result.answer is not None and not result.answer.is_exact
    assert result.answer.numeric == pytest.approx(math.fsum(math.sin(k / 10) for k in range(1, 4001)), rel=1e-12)


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("sum(sin(k*pi/2)**2, k, 1, 1000)", "500"),  # sympy evaluates each term exactly, in time
        ("sum(cos(k*pi/3), k, 1, 6)", "0"),
        ("sum(sqrt(k**2), k, 1, 1000)", "500500"),
        ("sum(1/k, k, 1, 30)", "9304682830147/2329089562800"),
        ("count(k % 7 == 3, k, 1, 5000)", "714"),
    ],
)
def test_exact_paths_stay_exact(formula: str, expected: str) -> None:
    assert exact(formula) == expected


def test_a_numeric_condition_that_fails_exactly_reports_the_exact_error() -> None:
    result = run("count(log(k - 1) > 0, k, 1, 2000)")
    assert not result.valid
    assert "logarithm of zero" in result.errors[0].message
