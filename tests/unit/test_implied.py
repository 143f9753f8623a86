"""Proving what a numerically solved system implies exactly: only a proof makes a float exact."""

from __future__ import annotations

import time

import sympy

from causal_grpo.scaffold import compute
from causal_grpo.scaffold.implied import implied_rational

x, y = sympy.symbols("x y", positive=True)
LOG_SYSTEM = [sympy.log(y**x, x) - 10, sympy.log(x ** (4 * y), y) - 10]
ROOT = {
    x: sympy.Float("1.534550581971727410157136997930021082170", 40),
    y: sympy.Float("16.29141475928266305101773661784910705512", 40),
}


def implied(target: sympy.Expr, residuals: list[sympy.Expr], approx: str) -> sympy.Rational | None:
    return implied_rational(target, residuals, ROOT, sympy.Float(approx, 40), time.thread_time() + 2.0)


def test_the_log_system_implies_its_product() -> None:
    assert implied(x * y, LOG_SYSTEM, "25.0000000000000000000000000001") == 25


def test_a_value_the_equations_do_not_imply_stays_unproven_whatever_its_digits_say() -> None:
    # the numeric value is a lie here: nothing in x + y == 10 fixes x*y, so no digits can make it 25
    assert implied(x * y, [x + y - 10], "25.0000000000000000000000000000") is None
    # the log system fixes x*y, not x + y (about 17.83 at the root)
    assert implied(x + y, LOG_SYSTEM, "18.0000000000000000000000000000") is None


def test_a_value_off_its_guess_is_not_tried() -> None:
    assert implied(x * y, LOG_SYSTEM, "25.00000000000000000001") is None


def test_a_denominator_zero_at_the_root_assumes_nothing() -> None:
    # (x*y - 25)/(x - ROOT[x]) vanishes nowhere near the root; declaring its denominator nonzero there would be false
    residuals = [*LOG_SYSTEM, (x * y - 25) / (x - ROOT[x])]
    assert implied(x * y, residuals, "25.0000000000000000000000000000") is None


def test_a_true_value_the_relaxation_cannot_see_stays_unproven() -> None:
    """y == exp(x), x + y == 1 has x = 0 only, but with exp(x) named as a free part nothing fixes x: no claim."""
    assert implied(x + 7, [y - sympy.exp(x), x + y - 1], "7.0000000000000000000000000000") is None


def test_a_reference_style_scaffold_is_paid_exactly_through_its_givens() -> None:
    result = compute(
        {
            "nodes": [
                {"id": "ten", "kind": "given", "value": "10"},
                {"id": "four", "kind": "given", "value": "4"},
                {"id": "x", "kind": "unknown", "domain": "positive"},
                {"id": "y", "kind": "unknown", "domain": "positive"},
                {"id": "e1", "kind": "equation", "formula": "log(y**x, x) == ten"},
                {"id": "e2", "kind": "equation", "formula": "log(x**(four*y), y) == ten"},
                {"id": "c1", "kind": "check", "formula": "x > 1"},
                {"id": "c2", "kind": "check", "formula": "y > 1"},
                {"id": "xy", "kind": "derived", "formula": "x*y"},
                {"id": "answer", "kind": "derived", "formula": "xy + 0"},
            ],
            "target": "answer",
        }
    )
    assert result.valid, [str(e) for e in result.errors]
    assert result.answer is not None and result.answer.is_exact and result.answer.exact == "25"
    assert result.typed_in == {}, result.typed_in
    assert not result.values["x"].isdigit()
