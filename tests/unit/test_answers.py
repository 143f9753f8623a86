"""Reading a free-text reply's final answer (the text solver) and scoring it by the scaffolds' rules."""

from __future__ import annotations

import pytest
from causal_grpo.agents.extractor.node import passes_filter
from causal_grpo.graphs.final import choose_final

from causal_grpo.answers import boxed, read_answer
from causal_grpo.context import Context
from causal_grpo.problems import Problem
from causal_grpo.rewards import RewardWeights, answer_reward, score_text

AIME = Problem(id="a1", text="Find n.", answer="204", dataset="aime2024", domain="math")
QUARTER = Problem(id="m1", text="Find x.", answer="\\frac{3}{4}", dataset="algebra", domain="math")
FORCE = Problem(id="p1", text="Find F.", answer="6", unit="N", dataset="physics", domain="physics")
ANGLE = Problem(id="p2", text="Find phi.", answer="109", unit="degree", dataset="physics", domain="physics")
FIELD = Problem(id="p3", text="Find E.", answer="2.50e4", unit="N/C", dataset="physics", domain="physics")


@pytest.mark.parametrize(
    ("reply", "problem", "shown", "source", "r_ans"),
    [
        ("Adding up, the count is \\boxed{204}.", AIME, "204", "boxed", 1.0),
        ("So x = \\boxed{\\frac{3}{4}}.", QUARTER, "3/4", "boxed", 1.0),
        ("So x = \\boxed{\\dfrac{6}{8}}.", QUARTER, "3/4", "boxed", 1.0),
        ("F = ma gives \\boxed{6 N}", FORCE, "6 N", "boxed", 1.0),
        ("F = \\boxed{6\\ \\mathrm{N}}", FORCE, "6 N", "boxed", 1.0),
        ("F = \\boxed{6000\\,\\text{mN}}", FORCE, "6000 mN", "boxed", 1.0),
        ("F = \\boxed{6\\ \\mathrm{kg}}", FORCE, "6 kg", "boxed", 0.0),  # a unit of another dimension
        ("the angle is \\boxed{109\\ \\mathrm{degree}}", ANGLE, "109 degree", "boxed", 1.0),
        ("the angle is \\boxed{109^{\\circ}}", ANGLE, "109 degree", "boxed", 1.0),
        ("E = \\boxed{2.5 \\times 10^{4}\\ \\mathrm{N/C}}", FIELD, "25000 N/C", "boxed", 1.0),
        ("E = \\boxed{3.5 \\times 10^{4}\\ \\mathrm{N/C}}", FIELD, "35000 N/C", "boxed", 0.0),
        # no box: the last "Answer:" line
        ("Working...\nAnswer: 203\nOn reflection:\nFinal answer: 204.", AIME, "204", "answer line", 1.0),
        # two boxes: the last one counts
        ("First \\boxed{12}, then more work: \\boxed{204}", AIME, "204", "boxed", 1.0),
        # a box inside the reasoning, a different one at the end
        ("Step 2 gives \\boxed{204} for the half; doubling, the answer is \\boxed{408}.", AIME, "408", "boxed", 0.0),
        # nested braces inside the box
        ("\\boxed{\\frac{\\sqrt{9}}{4}}", QUARTER, "3/4", "boxed", 1.0),
    ],
)
def test_the_final_answer_is_read_and_scored_like_a_scaffolds(reply, problem, shown, source, r_ans):
    read = read_answer(reply)
    assert read.source == source and read.error is None
    assert str(read.answer) == shown
    assert answer_reward(read.answer, problem).score == r_ans


def test_integers_and_fractions_are_exact_decimals_are_not():
    assert read_answer("\\boxed{204}").answer.is_exact
    assert read_answer("\\boxed{-7/2}").answer.is_exact
    decimal = read_answer("\\boxed{204.0}").answer
    assert not decimal.is_exact and decimal.numeric == 204.0
    assert answer_reward(decimal, AIME).score == 1.0  # compared numerically, and the detail says so
    assert "not exact" in answer_reward(decimal, AIME).detail
    irrational = read_answer("\\boxed{2\\sqrt{3}}").answer
    assert irrational.is_exact and irrational.digits.startswith("3.4641016151377545870548")
    assert answer_reward(irrational, AIME).score == 0.0


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("I could not finish the computation.", "no \\boxed"),
        ("The answer is \\boxed{}", "empty"),
        ("So \\boxed{x + 1}", "not a number"),
        ("unclosed \\boxed{204", "no \\boxed"),
    ],
)
def test_no_readable_answer_is_none_with_a_reason(reply, why):
    read = read_answer(reply)
    assert read.answer is None and why in read.error


def test_boxes_balance_nested_braces():
    assert boxed("a \\boxed{\\frac{1}{2}} b \\fbox{{x}}") == ["\\frac{1}{2}", "{x}"]


def test_a_text_rollouts_total_renormalises_the_answer_and_logic_weights():
    weights = RewardWeights(ans=0.5, logic=0.25, graph=0.25)
    right = read_answer("\\boxed{204}").answer
    rewards = score_text(right, AIME, weights, judge_score=0.4)
    assert rewards.r_graph == 0.0 and "no graph" in rewards.detail["r_graph"].detail
    assert rewards.r_total == pytest.approx((0.5 * 1.0 + 0.25 * 0.4) / 0.75)
    assert "checks need a graph and are skipped" in rewards.detail["r_logic"].detail
    # without a judge only r_ans counts
    assert score_text(right, AIME, weights).r_total == 1.0
    fused = score_text(None, AIME, RewardWeights(ans=0.3, logic=0.2, graph=0.2, fusion=0.3), proposals_r_ans=[0, 0])
    assert fused.r_fusion == pytest.approx(0.2) and fused.r_total == pytest.approx(0.3 * 0.2 / 0.6)


def rollout(r_ans: float, r_total: float, answer: str | None = "1", r_logic: float = 0.5, judged: bool = True):
    detail = {"judge": {"score": r_logic}} if judged else {}
    return {
        "solver": "text", "answer": answer, "valid": answer is not None, "r_ans": r_ans, "r_total": r_total,
        "r_logic": r_logic, "r_graph": 0.0, "correct": r_ans == 1.0, "rewards_detail": detail,
    }  # fmt: skip


def test_the_mixed_group_filter_is_the_original_methods_rule():
    mixed, std = Context(group_filter="mixed", tau=0.05), Context(tau=0.05)
    all_wrong_but_spread = [rollout(0, 0.1), rollout(0, 0.5)]
    assert passes_filter(all_wrong_but_spread, std)[1] and not passes_filter(all_wrong_but_spread, mixed)[1]
    some_right = [rollout(1, 0.9), rollout(0, 0.3)]
    assert passes_filter(some_right, mixed)[1]
    assert not passes_filter([rollout(1, 0.9), rollout(1, 0.9)], mixed)[1]


def test_text_answers_vote_by_judged_logic_or_by_count_without_a_judge():
    judged = [rollout(0, 0, "7", r_logic=0.9), rollout(1, 0, "5", r_logic=0.3), rollout(1, 0, "5", r_logic=0.3)]
    assert choose_final([], judged)["answer"] == "7"  # 0.9 beats 0.3 + 0.3
    unjudged = [rollout(0, 0, "7", judged=False), rollout(1, 0, "5", judged=False), rollout(1, 0, "5", judged=False)]
    assert choose_final([], unjudged)["answer"] == "5"  # a plain majority
