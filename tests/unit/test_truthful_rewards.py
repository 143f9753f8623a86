"""Rewards a GRPO loop cannot game: each case here was once paid for by r_ans or r_graph and must not be.

Every test goes through the real computer and the real reward functions, as a rollout does.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from causal_grpo.problems import Problem
from causal_grpo.rewards import RewardWeights, answer_reward, graph_reward, logic_checks, score
from causal_grpo.scaffold import Scaffold, compute


def given(node_id: str, value: str, unit: str = "", description: str = "") -> dict[str, Any]:
    return {"id": node_id, "kind": "given", "value": value, "unit": unit, "description": description}


def derived(node_id: str, formula: str, unit: str = "") -> dict[str, Any]:
    return {"id": node_id, "kind": "derived", "formula": formula, "unit": unit}


def graph(*nodes: dict[str, Any], target: str = "t") -> dict[str, Any]:
    return {"problem_type": "test", "nodes": list(nodes), "target": target}


def aime(answer: str, text: str = "") -> Problem:
    return Problem(id="aime_x", text=text, answer=answer, dataset="aime2024", domain="math")


def physics(answer: str, unit: str, text: str = "") -> Problem:
    return Problem(id="phys_x", text=text, answer=answer, unit=unit, dataset="physics", domain="physics")


def r_ans(data: dict[str, Any], problem: Problem) -> tuple[float, str]:
    part = answer_reward(compute(data).answer, problem)
    return part.score, part.detail


# ---------------------------------------------------------------- integer references


@pytest.mark.parametrize(
    ("nodes", "reference"),
    [
        pytest.param([given("a", "468.000000001"), derived("t", "a")], "468", id="decimal-near-468"),
        pytest.param([given("a", "60"), derived("t", "a + 1/10**12")], "60", id="sixty-plus-tiny"),
        pytest.param([given("a", "7"), derived("t", "a / 7 * 721 + 1/10**15")], "721", id="fraction-near-721"),
    ],
)
def test_an_exact_rational_near_the_integer_scores_zero(nodes: list[dict[str, Any]], reference: str) -> None:
    result = compute(graph(*nodes))
    assert result.valid and result.answer is not None and result.answer.is_exact
    score_, detail = r_ans(graph(*nodes), aime(reference))
    assert score_ == 0.0, detail
    assert "numerically" not in detail


def test_an_exact_irrational_near_the_integer_scores_zero() -> None:
    score_, detail = r_ans(graph(given("a", "721"), derived("t", "a + exp(-30)")), aime("721"))
    assert score_ == 0.0
    assert "not an integer" in detail and "721.00000000000009" in detail


def test_an_unsimplified_exact_integer_is_shown_and_scored_as_that_integer() -> None:
    data = graph(
        given("a", "30"),
        given("b", "39"),
        derived("t", "sqrt(a)*(312*sqrt(a) + 4056*sin(2*asin(sqrt(b)/13)))/60"),
    )
    answer = compute(data).answer
    assert answer is not None and answer.exact == "468" and answer.is_exact
    score_, detail = r_ans(data, aime("468"))
    assert score_ == 1.0 and detail == "integer 468 == reference 468"


def test_a_value_that_went_through_a_float_is_marked_and_compared_numerically() -> None:
    # cos(acos(x)/3) nested this deep outgrows the exact budget: the computer goes on with a float.
    data = graph(
        given("x", "1/3"),
        given("k", "240"),
        derived("c1", "cos(acos(x)/3)"),
        derived("c2", "cos(acos(c1)/3)"),
        derived("c3", "cos(acos(c2)/3)"),
        derived("t", "k*cos(acos(c3))/c3"),
    )
    answer = compute(data).answer
    assert answer is not None and not answer.is_exact and answer.exact.startswith("240.000000")
    score_, detail = r_ans(data, aime("240"))
    assert score_ == 1.0 and "numerically equal" in detail


def test_an_exact_integer_scores_exactly() -> None:
    score_, detail = r_ans(graph(given("a", "200"), derived("t", "a + 4")), aime("204"))
    assert score_ == 1.0 and detail == "integer 204 == reference 204"


# ---------------------------------------------------------------- reserved names


def test_a_node_named_like_a_constant_never_reads_the_constant() -> None:
    data = graph(
        given("E", "5", "N/C", "electric field"),
        given("q", "2", "C"),
        derived("F", "q*E", "N"),
        derived("t", "F"),
    )
    result = compute(data)
    assert result.answer is None and "F" not in result.values and "t" not in result.values
    (error,) = [e for e in result.errors if e.node == "E"]
    assert error.kind == "reserved_id"
    assert error.message == ("node id E is the constant E (Euler's number): rename the node (so not computed: F, t)")
    assert not any(e.kind == "dimension" for e in result.errors)  # no misleading unit message about E
    assert answer_reward(result.answer, physics("10", "N")).score == 0.0


def test_a_node_named_like_a_function_names_the_clash() -> None:
    result = compute(graph(given("sqrt", "4"), derived("t", "2 + 1")))
    (error,) = [e for e in result.errors if e.node == "sqrt"]
    assert error.message == "node id sqrt is the function sqrt: rename the node"


# ---------------------------------------------------------------- angles


def test_an_undeclared_inverse_trig_angle_is_in_radians_and_converts_to_degrees() -> None:
    data = graph(given("c", "-1/3"), derived("t", "acos(c)"))
    result = compute(data)
    assert result.units["t"] == "rad"
    score_, detail = r_ans(data, physics("109.47", "degree"))
    assert score_ == 1.0, detail


def test_forward_trig_still_takes_plain_numbers_degrees_and_inverse_results() -> None:
    data = graph(given("x", "30", "degree"), derived("a", "asin(sin(x))"), derived("t", "sin(a) + cos(pi/3)"))
    result = compute(data)
    assert result.valid and result.values["t"] == "1"


# ---------------------------------------------------------------- dead nodes and typed-in numbers


def test_a_zero_factor_does_not_keep_a_node_alive() -> None:
    data = graph(given("m", "3"), given("n", "4"), given("rin", "5"), derived("t", "m + n + 0*rin"))
    part = graph_reward(Scaffold.model_validate(data), compute(data))
    assert part.breakdown["no_dead_nodes"] == pytest.approx(3 / 4)
    assert "dead: rin" in part.detail


def test_a_derived_node_without_inputs_is_a_typed_in_number() -> None:
    data = graph(given("m", "3"), derived("zig", "4"), derived("t", "m * zig"))
    result = compute(data)
    scaffold = Scaffold.model_validate(data)
    part = graph_reward(scaffold, result)
    assert part.score < 1.0
    assert "typed in: zig (derived without inputs)" in part.detail
    checks = logic_checks(scaffold, result, aime("12", "Three apples."))
    assert "untraced: zig" in checks.detail  # 4 is not in the text; it is checked like a given


# ---------------------------------------------------------------- errors the target does or does not depend on


def test_an_error_off_the_targets_path_leaves_the_answer_scored() -> None:
    data = graph(given("a", "200"), given("z", "0"), derived("bad", "1/z"), derived("t", "a + 4"))
    result = compute(data)
    assert not result.valid
    rewards = score(Scaffold.model_validate(data), result, aime("204"), RewardWeights())
    assert rewards.r_ans == 1.0 and rewards.r_graph < 1.0


def test_an_error_on_the_targets_path_scores_zero() -> None:
    data = graph(given("a", "200"), given("a", "204"), derived("t", "a"))
    result = compute(data)
    assert result.answer is None
    assert answer_reward(result.answer, aime("204")).score == 0.0


# ---------------------------------------------------------------- messages


def test_a_message_never_prints_a_huge_number() -> None:
    result = compute(graph(given("s", "3**1280"), derived("t", "2**s")))
    (error,) = result.errors
    assert len(error.message) < 160, error.message
    assert re.search(r"\d{41,}", error.message) is None
    assert "(611 digits)" in error.message


# ---------------------------------------------------------------- issue 25: exact answers, constants; issue 26.13


def test_a_near_integer_is_decided_exactly_or_scores_zero() -> None:
    """204 + exp(-80) is within 1e-30 of 204: never called equal by a float, on either reference path."""
    data = graph(given("a", "204"), derived("t", "a + exp(-80)"))
    for problem in (aime("204"), Problem(id="cli", text="", answer="204", dataset="cli", domain="math")):
        score_, detail = r_ans(data, problem)
        assert score_ == 0.0, detail
        assert "numerically" not in detail


@pytest.mark.parametrize("reference", ["3*pi/2", "\\frac{3\\pi}{2}"])
def test_an_exact_answer_compares_exactly_with_an_exact_reference(reference: str) -> None:
    data = graph(given("a", "3"), derived("t", "a*pi/2"))
    problem = Problem(id="cli", text="", answer=reference, dataset="cli", domain="math")
    score_, detail = r_ans(data, problem)
    assert score_ == 1.0, detail
    wrong = graph(given("a", "3"), derived("t", "a*pi/2 + exp(-60)"))
    assert r_ans(wrong, problem)[0] == 0.0


@pytest.mark.parametrize(
    ("node_id", "value", "traced"),
    [("u", 902.0, False), ("proton", 907.0, False), ("u", 931.5, True), ("m_p", 938.0, True), ("g", 9.8, True),
     ("g", 10.0, True), ("c", 3e8, True), ("g", 9.0, False)],
)  # fmt: skip
def test_a_named_constant_traces_at_the_precision_it_is_written_in(node_id: str, value: float, traced: bool) -> None:
    from causal_grpo.rewards import given_traceable

    assert given_traceable(node_id, "", value, set()) is traced


def test_givens_are_not_checked_without_a_problem_text() -> None:
    data = graph(given("m", "2"), given("a", "3"), derived("t", "m*a"))
    problem = Problem(id="cli", text="", answer="6", dataset="cli", domain="math")
    part = logic_checks(Scaffold.model_validate(data), compute(data), problem)
    assert "givens_traceable" not in part.breakdown and part.score == 1.0, part.detail
    assert "not checked: no problem text" in part.detail


def test_numbers_written_as_words_and_polygon_names_trace() -> None:
    from causal_grpo.rewards import text_numbers

    found = text_numbers("Each vertex of a regular octagon is independently colored either red or blue.")
    assert {8.0, 2.0} <= found
    assert 5.0 not in text_numbers("Each vertex of a regular octagon is colored red.")
