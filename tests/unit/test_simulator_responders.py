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

from causal_grpo.problems import Problem, load_problems
from causal_grpo.rewards import answer_reward
from causal_grpo.scaffold import MAX_ANALYSIS_CHARS, Node, Scaffold, compute
from causal_grpo.simulator import responders
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.responders import (
    SCHEMAS,
    SHAPES,
    SIMULATED,
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
    variant_rng,
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


@pytest.fixture(params=list(SHAPES))
def shape(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every simulated scaffold written in one shape (a shape whose numbers grow too long falls back to direct)."""
    monkeypatch.setattr(responders, "SHAPES", {request.param: 1})
    return request.param


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_right_scaffolds_compute_to_the_reference_and_wrong_ones_do_not(problem: Problem, shape: str) -> None:
    # Every shape for every problem; more seeds across shapes in the many-seeds test below.
    for seed in range(2 if shape == "direct" else 1):
        right = compute(build_scaffold(problem, "right", random.Random(seed)))
        assert right.valid, right.errors
        assert answer_reward(right.answer, problem).score == 1.0, right.answer
        for outcome in WRONG_OUTCOMES[problem.domain]:
            wrong = compute(build_scaffold(problem, outcome, random.Random(seed)))
            if wrong.valid:
                assert answer_reward(wrong.answer, problem).score == 0.0, (outcome, wrong.answer)
            else:
                assert outcome in ("cycle", "unknown_reference", "dimension_clash"), (outcome, wrong.errors)


def test_broken_outcomes_are_reported_by_the_computer_as_such(shape: str) -> None:
    physics = next(p for p in PROBLEMS if p.domain == "physics" and p.unit)
    kinds = {
        outcome: {e.kind for e in compute(build_scaffold(physics, outcome, random.Random(1))).errors}
        for outcome in ("cycle", "unknown_reference", "dimension_clash")
    }
    assert "cycle" in kinds["cycle"]
    assert "unknown_reference" in kinds["unknown_reference"]
    assert "dimension" in kinds["dimension_clash"]


def _request_scaffolds(count: int) -> list[tuple[Problem, str, Scaffold]]:
    """Scaffolds as the server draws them: one request RNG per problem and rollout, outcome first."""
    drawn = []
    for n in range(count):
        problem = PROBLEMS[n % len(PROBLEMS)]
        rng = random.Random(f"{problem.id}/{n}")
        outcome = draw_outcome(problem, 0.5, rng)
        drawn.append((problem, outcome, build_scaffold(problem, outcome, rng)))
    return drawn


def _shape_of(scaffold: Scaffold) -> str:
    kinds = {n.kind for n in scaffold.nodes}
    core = scaffold.node("core")
    if "check" in kinds:
        return "quadratic_check"
    if "equation" in kinds:
        return "quadratic_domain" if "core_b" in {n.id for n in scaffold.nodes} else "linear"
    if core is not None and core.kind == "derived":
        return "odd_sum" if "2*k - 1" in (core.formula or "") else "sum"
    return "direct"


def test_simulated_scaffolds_carry_analysis_equations_and_iterations() -> None:
    drawn = _request_scaffolds(900)
    shapes = [_shape_of(s) for _, _, s in drawn]
    assert set(shapes) == set(SHAPES)
    # v1 scaffolds stay the commonest single shape; every v2 shape is common enough to be exercised.
    assert 0.3 < shapes.count("direct") / len(shapes) < 0.5
    assert all(shapes.count(k) > 30 for k in SHAPES)
    analyses = [s.analysis for _, _, s in drawn if s.analysis]
    assert 0.4 < len(analyses) / len(drawn) < 0.6
    assert all(a.startswith(SIMULATED) and len(a) <= MAX_ANALYSIS_CHARS for a in analyses)
    assert any(len(a) > 3000 for a in analyses)  # long enough that the judge and the extractor shorten it
    for _, outcome, scaffold in drawn:
        assert Scaffold.model_validate_json(scaffold.model_dump_json()) == scaffold
        assert scaffold.target == "answer"
        for node in scaffold.nodes:
            assert (node.kind == "unknown") == (node.formula is None and node.value is None)
        assert responders._looks_sound(scaffold) == (outcome != "unknown_reference"), scaffold


def test_v2_shapes_draw_nothing_from_the_request_rng(monkeypatch: pytest.MonkeyPatch) -> None:
    """How a scaffold is written never changes the outcome, its values, or any later draw of the request."""
    for problem in PROBLEMS[::9]:
        for outcome in _outcomes(problem):
            results = []
            for shape in SHAPES:
                for rate in (0.0, 1.0):
                    monkeypatch.setattr(responders, "SHAPES", {shape: 1})
                    monkeypatch.setattr(responders, "ANALYSIS_RATE", rate)
                    rng = random.Random(f"{problem.id}/{outcome}")
                    scaffold = build_scaffold(problem, outcome, rng)
                    kept = [n for n in scaffold.nodes if not n.id.startswith("core")]
                    results.append((rng.getstate(), kept, bool(scaffold.analysis) == bool(rate)))
            assert all(r == results[0][:2] + (True,) for r in results), (problem.id, outcome)


def test_variant_rng_is_a_function_of_the_state_and_leaves_it() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    assert variant_rng(rng).random() == variant_rng(random.Random(3)).random()
    assert rng.getstate() == state
    assert variant_rng(random.Random(4)).random() != variant_rng(rng).random()


def test_v2_right_scaffolds_compute_to_the_reference_across_many_seeds() -> None:
    seen: dict[str, int] = {}
    for problem, outcome, scaffold in _request_scaffolds(540):
        if outcome != "right":
            continue
        shape = _shape_of(scaffold)
        seen[shape] = seen.get(shape, 0) + 1
        computation = compute(scaffold)
        assert computation.valid, (problem.id, shape, computation.errors)
        assert answer_reward(computation.answer, problem).score == 1.0, (problem.id, shape, computation.answer)
    assert set(seen) == set(SHAPES) and min(seen.values()) >= 10, seen


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


def test_looks_sound_understands_v2_kinds() -> None:
    def graph(*nodes: Node) -> Scaffold:
        return Scaffold(nodes=[*nodes, Node(id="t", kind="derived", formula="x + 1")], target="t")

    x = Node(id="x", kind="unknown", domain="positive")
    two = Node(id="two", kind="given", value="2")
    assert responders._looks_sound(graph(x, two, Node(id="e", kind="equation", formula="x**2 == two")))
    assert responders._looks_sound(
        graph(two, Node(id="x", kind="derived", formula="sum(two * k, k, 1, 4) + count(k > 1, k, 1, two)"))
    )
    assert responders._looks_sound(
        graph(x, two, Node(id="e", kind="equation", formula="x == two"), Node(id="c", kind="check", formula="x > 0"))
    )
    assert not responders._looks_sound(graph(x, two))  # no equation names the unknown
    assert not responders._looks_sound(graph(x, Node(id="e", kind="equation", formula="x - 2")))  # no ==
    assert not responders._looks_sound(graph(x, Node(id="e", kind="equation", formula="x == y")))
    assert not responders._looks_sound(graph(two, Node(id="x", kind="derived", formula="sum(j * k, k, 1, 4)")))
    assert not responders._looks_sound(graph(two, Node(id="x", kind="derived", formula="two +")))
    e = Node(id="e", kind="equation", formula="x == two")
    assert not responders._looks_sound(Scaffold(nodes=[x, two, e], target="e"))  # an equation is no target


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
