"""The simulator's responders without HTTP: valid, computable, deterministic answers per request kind."""

from __future__ import annotations

import json
import random
import re
import typing

import pytest
from causal_grpo.agents.critic.schemas import FusedAnswer
from causal_grpo.agents.extractor.schemas import ExperienceOps
from causal_grpo.agents.judge.schemas import LogicVerdict
from pydantic import ValidationError

from causal_grpo.computer import compute
from causal_grpo.problems import Problem, load_problems
from causal_grpo.rewards import answer_reward
from causal_grpo.scaffold import Scaffold
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.responders import (
    SCHEMAS,
    WRONG_OUTCOMES,
    Classified,
    ProblemIndex,
    answer,
    build_scaffold,
    classify,
    draw_outcome,
    render,
    request_rng,
    shipped_index,
)

PROBLEMS = load_problems("full")
OUTCOMES = typing.get_args(typing.get_type_hints(build_scaffold)["outcome"])
MARKER = "Respond with a JSON object for the schema named {}"


def _outcomes(problem: Problem) -> list[str]:
    return ["right", *WRONG_OUTCOMES[problem.domain]]


def _generator_body(problem: Problem, rollout: int, **extra: object) -> dict[str, object]:
    content = f"Problem ({problem.domain}):\n{problem.text}\nRollout: {rollout}\n{MARKER.format('Scaffold')}"
    return {"model": "simulated", "messages": [{"role": "user", "content": content}], "temperature": 0.7, **extra}


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_scaffolds_for_every_shipped_problem_are_schema_valid_and_traceable(problem: Problem) -> None:
    for outcome in _outcomes(problem):
        scaffold = build_scaffold(problem, outcome, random.Random(outcome))
        assert Scaffold.model_validate_json(scaffold.model_dump_json()) == scaffold
        assert scaffold.target == "answer"
        for node in scaffold.nodes:
            if node.id.startswith("given_"):
                assert node.value in problem.text, f"{node.value} is not written in the problem"


def _compute_ready() -> bool:
    try:
        compute(build_scaffold(PROBLEMS[0], "right", random.Random(0)))
    except NotImplementedError:
        return False
    return True


@pytest.mark.skipif(not _compute_ready(), reason="causal_grpo.computer.compute is not implemented yet")
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_right_scaffolds_compute_to_the_reference_and_wrong_ones_do_not(problem: Problem) -> None:
    for seed in range(3):
        right = compute(build_scaffold(problem, "right", random.Random(seed)))
        assert right.valid, right.errors
        assert answer_reward(right.answer, problem).score == 1.0, right.answer
        for outcome in WRONG_OUTCOMES[problem.domain]:
            wrong = compute(build_scaffold(problem, outcome, random.Random(seed)))
            if wrong.valid:
                assert answer_reward(wrong.answer, problem).score == 0.0, (outcome, wrong.answer)
            else:
                assert outcome in ("cycle", "unknown_reference", "dimension_clash"), (outcome, wrong.errors)


@pytest.mark.skipif(not _compute_ready(), reason="causal_grpo.computer.compute is not implemented yet")
def test_broken_outcomes_are_reported_by_the_computer_as_such() -> None:
    physics = next(p for p in PROBLEMS if p.domain == "physics" and p.unit)
    kinds = {
        outcome: {e.kind for e in compute(build_scaffold(physics, outcome, random.Random(1))).errors}
        for outcome in ("cycle", "unknown_reference", "dimension_clash")
    }
    assert "cycle" in kinds["cycle"]
    assert "unknown_reference" in kinds["unknown_reference"]
    assert "dimension" in kinds["dimension_clash"]


def test_unknown_problems_get_schema_valid_random_graphs() -> None:
    for seed in range(20):
        scaffold = build_scaffold(None, "right", random.Random(seed))
        assert scaffold.problem_type == "general"
        assert len([n for n in scaffold.nodes if n.id.startswith("given_")]) >= 1


def test_users_problems_with_symbolic_answers_or_odd_units_still_get_valid_graphs() -> None:
    symbolic = Problem(id="u_1", text="Find x if 3x = 2.", answer="2\\sqrt{3}/3", dataset="mine", domain="math")
    odd_unit = Problem(id="u_2", text="Move 3 widgets.", answer="7", unit="wodgets", dataset="mine", domain="physics")
    for problem in (symbolic, odd_unit):
        for outcome in _outcomes(odd_unit):
            assert Scaffold.model_validate(build_scaffold(problem, outcome, random.Random(0)).model_dump())


def test_outcome_rate_follows_correct_rate() -> None:
    rng = random.Random(5)
    draws = [draw_outcome(PROBLEMS[0], 0.3, rng) for _ in range(4000)]
    assert abs(draws.count("right") / len(draws) - 0.3) < 0.03
    assert set(draws) == {"right", *WRONG_OUTCOMES["math"]}
    assert draw_outcome(PROBLEMS[0], 0.0, rng) != "right"
    assert draw_outcome(PROBLEMS[0], 1.0, rng) == "right"


def test_problems_are_found_despite_reflowed_whitespace() -> None:
    index = shipped_index()
    for problem in PROBLEMS:
        reflowed = "Solve this.\n" + "\n  ".join(problem.text.split()) + "\nThanks."
        assert index.find(reflowed) == problem
    assert index.find("What is 2 + 2?") is None
    assert ProblemIndex([]).find(PROBLEMS[0].text) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "LogicVerdict", "schema": {}}}},
            Classified("LogicVerdict", "json_schema", "LogicVerdict"),
        ),
        (
            {
                "tools": [{"type": "function", "function": {"name": "FusedAnswer", "parameters": {}}}],
                "tool_choice": {"type": "function", "function": {"name": "FusedAnswer"}},
            },
            Classified("FusedAnswer", "tools", "FusedAnswer"),
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "ExperienceOps", "parameters": {}}}]},
            Classified("ExperienceOps", "tools", "ExperienceOps"),
        ),
        (
            {"response_format": {"type": "json_object"}, "marker": "Scaffold"},
            Classified("Scaffold", "json_object", "Scaffold"),
        ),
        ({"marker": "ExperienceOps"}, Classified("ExperienceOps", "text", "ExperienceOps")),
        ({"marker": "NotOurs"}, Classified("chat", "text", None)),
        ({}, Classified("chat", "text", None)),
    ],
)
def test_classify_finds_the_schema_in_each_mode(body: dict[str, object], expected: Classified) -> None:
    marker = body.pop("marker", None)
    content = "Hello." + (f"\n{MARKER.format(marker)}\n{{...schema...}}" if marker else "")
    body = {**body, "messages": [{"role": "system", "content": [{"type": "text", "text": content}]}]}
    assert classify(body) == expected


def test_same_request_same_answer_and_rollouts_differ() -> None:
    config = SimulatorConfig(seed=11)
    problem = PROBLEMS[40]

    def scaffold_json(rollout: int, seed: int = 11) -> str:
        body = _generator_body(problem, rollout)
        classified = classify(body)
        rng = request_rng(seed, body, classified)
        result = answer(classified, body["messages"][0]["content"], config, rng, shipped_index())
        return result.model_dump_json()

    assert scaffold_json(1) == scaffold_json(1)
    assert len({scaffold_json(k) for k in range(1, 9)}) > 4
    assert scaffold_json(1) != scaffold_json(1, seed=12) or scaffold_json(2) != scaffold_json(2, seed=12)


def _scaffold_prompt(outcome: str) -> str:
    scaffold = build_scaffold(PROBLEMS[3], outcome, random.Random(2))
    return f"Problem:\n{PROBLEMS[3].text}\n\nCausal graph (JSON):\n{scaffold.model_dump_json()}\n"


def test_logic_verdict_scores_sound_graphs_higher() -> None:
    config, index = SimulatorConfig(), shipped_index()
    classified = Classified("LogicVerdict", "json_schema", "LogicVerdict")
    sound = [answer(classified, _scaffold_prompt("right"), config, random.Random(i), index) for i in range(10)]
    broken = [
        answer(classified, _scaffold_prompt("unknown_reference"), config, random.Random(i), index) for i in range(10)
    ]
    missing = answer(classified, "No graph here.", config, random.Random(0), index)
    assert all(isinstance(v, LogicVerdict) for v in [*sound, *broken, missing])
    assert min(v.score for v in sound) >= 0.7 > 0.45 >= max(v.score for v in broken)
    assert 0.3 <= missing.score <= 0.7


def test_experience_ops_follow_the_prompt() -> None:
    rollouts = "".join(
        f"### Rollout {k}\nreward r_total={r:.3f} (r_ans=1.00); answer: 3\ngraph: {{}}\n\n"
        for k, r in [(1, 0.9), (2, 0.2), (3, 0.5)]
    )
    prompt = (
        f"Agent: generator_1\nProblem (physics_mechanics):\n{PROBLEMS[70].text}\n\n{rollouts}"
        "Current experiences:\n[G1-007] (strategy) Name the givens.\n[S-003] (mistake) Units matter.\n"
    )
    classified = Classified("ExperienceOps", "text", "ExperienceOps")
    results = [answer(classified, prompt, SimulatorConfig(), random.Random(i), shipped_index()) for i in range(30)]
    ops = [op for r in results for op in r.operations]
    assert all(isinstance(r, ExperienceOps) and len(r.summaries) == 3 and 1 <= len(r.operations) <= 3 for r in results)
    assert "Rollout 1 beat rollout 2" in results[0].advantage
    assert {op.problem_type for op in ops} == {"physics_mechanics"}
    assert {op.id for op in ops if op.op != "add"} <= {"G1-007", "S-003"}
    assert {op.op for op in ops} == {"add", "modify", "delete", "keep"}
    assert all(op.content for op in ops if op.op in ("add", "modify"))
    assert {op.category for op in ops} == {"problem_solving_strategy", "common_mistake"}


def _fused(config: SimulatorConfig, seed: int) -> FusedAnswer:
    problem = PROBLEMS[10]
    proposals = "".join(f"### Proposal {k}\ncomputed answer: 1\ngraph: {{}}\n" for k in (1, 2, 3))
    prompt = f"Problem (math):\n{problem.text}\n{proposals}Fuse these proposals into one causal graph."
    classified = Classified("FusedAnswer", "json_schema", "FusedAnswer")
    fused = answer(classified, prompt, config, random.Random(seed), shipped_index())
    assert isinstance(fused, FusedAnswer)
    return fused


def test_fused_answer_draws_on_listed_proposals() -> None:
    for seed in range(10):
        fused = _fused(SimulatorConfig(), seed)
        assert fused.used_proposals and set(fused.used_proposals) <= {1, 2, 3}
        assert fused.scaffold.problem_type.startswith("math_")
    assert SimulatorConfig(correct_rate=0.4).effective_fusion_correct_rate == 0.4
    assert SimulatorConfig(correct_rate=0.4, fusion_correct_rate=0.9).effective_fusion_correct_rate == 0.9


@pytest.mark.skipif(not _compute_ready(), reason="causal_grpo.computer.compute is not implemented yet")
def test_fusion_is_right_at_the_fusion_rate_not_the_generation_rate() -> None:
    always = SimulatorConfig(correct_rate=0.0, fusion_correct_rate=1.0)
    never = SimulatorConfig(correct_rate=1.0, fusion_correct_rate=0.0)
    for seed in range(10):
        right = compute(_fused(always, seed).scaffold)
        assert answer_reward(right.answer, PROBLEMS[10]).score == 1.0
        wrong = compute(_fused(never, seed).scaffold)
        assert answer_reward(wrong.answer, PROBLEMS[10]).score == 0.0


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_malformed_outputs_fail_their_schema(kind: str) -> None:
    schema = SCHEMAS[kind]
    classified = Classified(kind, "json_schema", kind)  # type: ignore[arg-type]
    prompt = _scaffold_prompt("right") + "### Rollout 1\n### Rollout 2\n"
    valid = answer(classified, prompt, SimulatorConfig(), random.Random(0), shipped_index())
    rng = random.Random(0)
    good = render(classified, valid, rng, fence_rate=0.0)
    assert good.finish_reason == "stop" and schema.model_validate_json(good.content)
    not_json = render(classified, valid, rng, fence_rate=0.0, malformation="not_json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(not_json.content)
    wrong = render(classified, valid, rng, fence_rate=0.0, malformation="wrong_schema")
    with pytest.raises(ValidationError):
        schema.model_validate(json.loads(wrong.content))
    cut = render(classified, valid, rng, fence_rate=0.0, malformation="truncated")
    assert cut.finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.content)


def test_render_modes_fences_and_token_caps() -> None:
    scaffold = build_scaffold(PROBLEMS[0], "right", random.Random(0))
    tools = render(Classified("Scaffold", "tools", "Scaffold"), scaffold, random.Random(0), fence_rate=1.0)
    assert tools.content is None and tools.finish_reason == "tool_calls"
    assert tools.tool_call and tools.tool_call[0] == "Scaffold"
    assert Scaffold.model_validate_json(tools.tool_call[1]) == scaffold
    fenced = render(Classified("Scaffold", "text", "Scaffold"), scaffold, random.Random(0), fence_rate=1.0)
    block = re.search(r"```json\n(.*)\n```", fenced.content or "", re.S)
    assert block and Scaffold.model_validate_json(block.group(1)) == scaffold and fenced.content != block.group(1)
    plain = render(Classified("Scaffold", "json_schema", "Scaffold"), scaffold, random.Random(0), fence_rate=1.0)
    assert Scaffold.model_validate_json(plain.content or "") == scaffold
    capped = render(Classified("Scaffold", "text", "Scaffold"), scaffold, random.Random(0), fence_rate=0, max_tokens=5)
    assert capped.finish_reason == "length" and len(capped.content or "") <= 20
    chat = render(Classified("chat", "json_object", None), "hello", random.Random(0), fence_rate=1.0)
    assert json.loads(chat.content or "") == {"reply": "hello"}
