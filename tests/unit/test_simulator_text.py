"""The simulator's text solutions: each outcome does to a text reply what it does to a scaffold."""

from __future__ import annotations

import random

import pytest
from causal_grpo.agents.text_generator.node import text_messages

from causal_grpo.answers import read_answer
from causal_grpo.problems import load_problems
from causal_grpo.rewards import answer_reward
from causal_grpo.simulator.responders import WRONG_OUTCOMES, classify, text_solution

# what a scaffold of each outcome gives: a right answer, a wrong one, or none (it does not compute)
EXPECTED = {
    "right": 1.0, "off_value": 0.0, "dead_node": 0.0, "wrong_unit": 0.0,
    "cycle": None, "unknown_reference": None, "dimension_clash": None,
}  # fmt: skip


@pytest.mark.parametrize("problem", load_problems("full")[::9], ids=lambda p: p.id)
def test_each_outcome_reads_as_right_wrong_or_none_as_a_scaffold_would(problem):
    for outcome in ["right", *WRONG_OUTCOMES[problem.domain]]:
        for seed in range(4):
            read = read_answer(text_solution(problem, outcome, random.Random(seed)))
            score = answer_reward(read.answer, problem).score if read.answer else None
            assert score == EXPECTED[outcome], (outcome, seed, read)


def test_a_text_solvers_request_is_classified_as_one():
    problem = load_problems("physics", 1)[0]
    messages = text_messages(problem, style="", experiences="", rollout=1)
    body = {"messages": [{"role": m.type, "content": m.content} for m in messages]}
    assert classify(body).kind == "TextSolution" and classify(body).schema_name is None
