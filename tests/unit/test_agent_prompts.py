"""How the judge, the extractor and the critic show scaffolds to a model: analyses cut to their end, no defaults."""

from __future__ import annotations

import json
from typing import Any

from causal_grpo.agents.critic.node import proposals_block
from causal_grpo.agents.extractor.node import rollouts_block
from causal_grpo.agents.judge.node import judge_prompt
from causal_grpo.agents.judge.prompts import JUDGE_ANALYSIS_CHARS, ROLLOUT_ANALYSIS_CHARS, scaffold_json, tail

from causal_grpo.problems import Problem
from causal_grpo.scaffold import Computation, Node, Scaffold

PROBLEM = Problem(id="u_1", text="A car covers 120 km in 2 h. Find its speed.", answer="60", dataset="u", domain="math")
OPENING = "OPENING-OF-THE-ANALYSIS "
CONCLUSION = " so the speed is distance over time: CONCLUSION-OF-THE-ANALYSIS"


def _scaffold(analysis_chars: int) -> Scaffold:
    filler = "x" * max(0, analysis_chars - len(OPENING) - len(CONCLUSION))
    return Scaffold(
        analysis=(OPENING + filler + CONCLUSION)[:analysis_chars] if analysis_chars else "",
        problem_type="math_algebra",
        nodes=[
            Node(id="d", kind="given", value="120", unit="km"),
            Node(id="t", kind="given", value="2", unit="h"),
            Node(id="v", kind="unknown", domain="positive", unit="km/h"),
            Node(id="eq", kind="equation", formula="v * t == d"),
            Node(id="c", kind="check", formula="v < 300 * d / d"),
            Node(id="speed", kind="derived", formula="v", unit="km/h"),
        ],
        target="speed",
    )


def _rollout(index: int, scaffold: Scaffold | dict[str, Any] | None) -> dict[str, Any]:
    as_dict = scaffold.model_dump(mode="json") if isinstance(scaffold, Scaffold) else scaffold
    return {
        "index": index,
        "scaffold": as_dict,
        "valid": True,
        "answer": "60 km/h",
        "errors": [],
        "r_ans": 1.0,
        "r_logic": 0.8,
        "r_graph": 0.9,
        "r_total": 0.9 - index / 10,
    }


def test_tail_keeps_short_text_and_the_end_of_long_text() -> None:
    assert tail("", 10) == "" and tail("abc", 3) == "abc"
    cut = tail("a" * 50 + "THE END", 10)
    assert cut.endswith("aaaTHE END") and "47 earlier characters cut" in cut
    assert len(cut) < 10 + 40


def test_scaffold_json_drops_defaults_and_keeps_the_analysis_first() -> None:
    scaffold = _scaffold(100)
    shown = scaffold_json(scaffold, 1500)
    assert shown.startswith('{"analysis":"OPENING')
    assert '"formula":null' not in shown and '"unit":""' not in shown and '"domain":"real"' not in shown
    assert Scaffold.model_validate_json(shown) == scaffold
    assert scaffold_json(scaffold.model_dump(mode="json"), 1500) == shown
    # A stored scaffold that no longer validates is shown as stored.
    assert json.loads(scaffold_json({"nodes": "broken"}, 600)) == {"nodes": "broken"}


def test_judge_sees_the_end_of_a_long_analysis() -> None:
    computation = Computation(valid=True, values={"speed": "60"}, units={"speed": "km/h"})
    short = judge_prompt(PROBLEM, _scaffold(800), computation)
    assert OPENING in short and "CONCLUSION-OF-THE-ANALYSIS" in short
    long = judge_prompt(PROBLEM, _scaffold(8000), computation)
    assert OPENING not in long and "CONCLUSION-OF-THE-ANALYSIS" in long
    assert "earlier characters cut" in long and '"formula":"v * t == d"' in long
    assert len(long) - len(judge_prompt(PROBLEM, _scaffold(0), computation)) < JUDGE_ANALYSIS_CHARS + 60


def test_extractor_and_critic_see_each_rollouts_analysis_shortened() -> None:
    group = [_rollout(1, _scaffold(6000)), _rollout(2, _scaffold(300)), _rollout(3, None), _rollout(4, {"x": 1})]
    bare = [_rollout(1, _scaffold(0)), _rollout(2, _scaffold(0)), _rollout(3, None), _rollout(4, {"x": 1})]
    for block in (rollouts_block, proposals_block):
        text = block(group)
        assert text.count("CONCLUSION-OF-THE-ANALYSIS") == 2 and text.count(OPENING) == 1  # only the short one
        assert text.count("earlier characters cut") == 1
        assert "graph: none" in text and 'graph: {"x":1}' in text
        assert len(text) - len(block(bare)) < ROLLOUT_ANALYSIS_CHARS + 300 + 2 * 60
