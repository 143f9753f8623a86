"""Rewards: answer equivalence on all three datasets, graph structure, logic checks, fusion, totals, groups."""

from __future__ import annotations

import gc
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from causal_grpo.problems import Problem, load_problems
from causal_grpo.rewards import (
    GRAPH_WEIGHTS,
    RewardPart,
    RewardWeights,
    answer_reward,
    fusion_reward,
    given_traceable,
    graph_reward,
    group_advantages,
    group_std,
    logic_checks,
    logic_reward,
    score,
    text_numbers,
    total,
)
from causal_grpo.scaffold import Answer, Computation, ComputeError, Scaffold, compute

PROBLEMS = load_problems("full")
BY_ID = {p.id: p for p in PROBLEMS}


def _own_answer(problem: Problem, factor: float = 1.0) -> Answer:
    numeric = float(problem.answer) * factor
    exact = problem.answer if factor == 1.0 else repr(numeric)
    return Answer(exact=exact, numeric=numeric, unit=problem.unit or "")


def _math(reference: str) -> Problem:
    return Problem(id="m1", text="", answer=reference, dataset="mine", domain="math")


# ---------------------------------------------------------------- r_ans


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_every_reference_scores_one(problem: Problem) -> None:
    part = answer_reward(_own_answer(problem), problem)
    assert part.score == 1.0, part.detail


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_an_off_answer_scores_zero(problem: Problem) -> None:
    if problem.domain == "math":
        off = Answer(exact=str(int(problem.answer) + 1), numeric=int(problem.answer) + 1.0)
    else:
        off = _own_answer(problem, 1.06)
    assert answer_reward(off, problem).score == 0.0


@pytest.mark.parametrize(
    ("problem_id", "exact", "numeric", "unit", "expected"),
    [
        ("physics_009", "1590000", 1.59e6, "m", 1.0),
        ("physics_009", "1590", 1590.0, "kg", 0.0),
        ("physics_009", "1653.6", 1590 * 1.04, "km", 1.0),
        ("physics_009", "1494.6", 1590 * 0.94, "km", 0.0),
        ("physics_009", "1590", 1590.0, "", 0.0),  # a bare number for a length
        ("physics_009", "1590", 1590.0, "furlong_per_fortnightzz", 0.0),
        ("physics_009", "1590", None, "km", 0.0),
        ("physics_001", "109", 109.0, "", 1.0),  # bare number read in degrees
        ("physics_001", "1.91", 1.91, "radian", 1.0),
        ("physics_001", "1.91", 1.91, "", 0.0),  # 1.91 degrees, not radians
        ("physics_016", "-8.01e-19", -8.01e-19, "C", 1.0),
        ("physics_016", "5", 5.0, "e", 0.0),  # wrong sign
        ("physics_015", "7.78e-15", 7.78e-15, "C", 1.0),
        ("physics_029", "1.6014e-10", 1.6014e-10, "J", 1.0),
        ("physics_012", "25000", 25000.0, "V/m", 1.0),
        ("physics_021", "13.2", 13.2, "percent", 1.0),
        ("physics_021", "0.132", 0.132, "m", 0.0),
        ("physics_020", "48.85", 48.85, "degC", 1.0),  # 322 K
        ("physics_026", "1.23", 1.23, "angstrom", 1.0),
    ],
)
def test_physics_units(problem_id: str, exact: str, numeric: float | None, unit: str, expected: float) -> None:
    part = answer_reward(Answer(exact=exact, numeric=numeric, unit=unit), BY_ID[problem_id])
    assert part.score == expected, part.detail


def test_physics_detail_says_what_was_compared() -> None:
    part = answer_reward(Answer(exact="1590000", numeric=1.59e6, unit="m"), BY_ID["physics_009"])
    assert "1590 km" in part.detail and "within 5%" in part.detail
    part = answer_reward(Answer(exact="1590", numeric=1590.0, unit="kg"), BY_ID["physics_009"])
    assert "cannot be expressed in km" in part.detail


def test_rel_tol_is_configurable() -> None:
    answer = Answer(exact="1653.6", numeric=1590 * 1.04, unit="km")
    assert answer_reward(answer, BY_ID["physics_009"], rel_tol=0.01).score == 0.0


@pytest.mark.parametrize(
    ("exact", "numeric", "expected"),
    [
        ("033", 33.0, 1.0),
        ("33", None, 1.0),
        ("66/2", 33.0, 1.0),
        ("33.0000000000001", 33.0000000000001, 0.0),  # an exact decimal that is not 33
        ("33.001", 33.001, 0.0),
        ("33/2", 16.5, 0.0),
        ("sqrt(1089)", 33.0, 1.0),
        ("34", 34.0, 0.0),
        ("nan", float("nan"), 0.0),
    ],
)
def test_aime_integer_equality(exact: str, numeric: float | None, expected: float) -> None:
    assert answer_reward(Answer(exact=exact, numeric=numeric), BY_ID["aime2024_019"]).score == expected


def test_a_garbage_collection_in_the_callers_process_cannot_fail_a_right_answer() -> None:
    # The exact decision once ran in the caller's thread, where a full collection of a big heap (0.64 s of
    # CPU in this test process) spent its 0.5 s budget and sqrt(1089) = 33 scored 0. Here collections are
    # frequent, and the first ten that find the computer running in this process cost that much each.
    computer_file = sys.modules[compute.__module__].__file__
    pauses = []

    def pause(phase: str, info: dict) -> None:
        frame = sys._getframe(1) if phase == "start" and len(pauses) < 10 else None
        while frame is not None and not (
            frame.f_code.co_filename == computer_file and frame.f_code.co_qualname.startswith("_Run.")
        ):
            frame = frame.f_back
        if frame is not None:
            pauses.append(frame.f_code.co_name)
            spent = time.thread_time() + 0.6
            while time.thread_time() < spent:
                pass

    threshold = gc.get_threshold()
    gc.set_threshold(50, 10, 10)
    gc.callbacks.append(pause)
    try:
        part = answer_reward(Answer(exact="sqrt(1089)", numeric=33.0), BY_ID["aime2024_019"])
    finally:
        gc.callbacks.remove(pause)
        gc.set_threshold(*threshold)
    assert (part.score, part.detail) == (1.0, "sqrt(1089) is proven equal to reference 33")


@pytest.mark.parametrize(("numeric", "expected"), [(33.0000000000001, 1.0), (33.00001, 0.0)])
def test_aime_integer_against_a_value_that_is_not_exact(numeric: float, expected: float) -> None:
    answer = Answer(exact=f"{numeric:.30f}", numeric=numeric, is_exact=False)
    part = answer_reward(answer, BY_ID["aime2024_019"])
    assert part.score == expected
    assert ("numerically equal" in part.detail) == bool(expected)


@pytest.mark.parametrize(
    ("reference", "exact", "numeric", "expected"),
    [
        (r"\frac{3}{4}", "3/4", 0.75, 1.0),
        ("3/4", "3/4", 0.75, 1.0),
        ("0.5", "1/2", 0.5, 1.0),
        (r"2\sqrt{3}", "2*sqrt(3)", 2 * math.sqrt(3), 1.0),
        (r"\frac{\pi}{2}", "pi/2", math.pi / 2, 1.0),
        (r"\sqrt{2}", "sqrt(2)", math.sqrt(2), 1.0),
        ("-7", "-7", -7.0, 1.0),
        ("3/4", "19/25", 0.76, 0.0),
        (r"1\times10^{-8}", "2.0e-8", 2e-8, 0.0),  # math-verify alone would round both to 0
        (r"2\sqrt{3}", "2*sqrt(2)", 2 * math.sqrt(2), 0.0),
        (r"\frac{", "1", 1.0, 0.0),
        ("1" * 300, "1", 1.0, 0.0),
        ("3/4", "I", None, 0.0),
    ],
)
def test_math_symbolic_equivalence(reference: str, exact: str, numeric: float | None, expected: float) -> None:
    part = answer_reward(Answer(exact=exact, numeric=numeric), _math(reference))
    assert part.score == expected, part.detail


def test_math_verify_runs_off_the_main_thread() -> None:
    answer = Answer(exact="2*sqrt(3)", numeric=2 * math.sqrt(3))
    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(lambda r: answer_reward(answer, _math(r)), [r"2\sqrt{3}", r"\sqrt{12}", "3"]))
    assert [p.score for p in parts] == [1.0, 1.0, 0.0]


def test_no_answer_scores_zero() -> None:
    part = answer_reward(None, BY_ID["physics_009"])
    assert part.score == 0.0 and "not computed" in part.detail


# ---------------------------------------------------------------- hand-built computations

FORCE = Problem(
    id="f1",
    text="A $2.0 \\mathrm{~kg}$ block is pushed with acceleration $3 \\mathrm{~m/s^2}$. What net force acts on it?",
    answer="6",
    unit="N",
    dataset="mine",
    domain="physics",
)


def _force_scaffold(extra: list[dict] | None = None, target: str = "F") -> Scaffold:
    nodes = [
        {"id": "m", "kind": "given", "value": "2.0", "unit": "kg", "description": "mass"},
        {"id": "a", "kind": "given", "value": "3", "unit": "m/s^2", "description": "acceleration"},
        {"id": "F", "kind": "derived", "formula": "m*a", "unit": "N", "description": "net force"},
    ]
    return Scaffold.model_validate({"nodes": nodes + (extra or []), "target": target})


def _force_computation(**changes: object) -> Computation:
    base = Computation(
        valid=True,
        values={"m": "2.0", "a": "3", "F": "6.0"},
        numeric={"m": 2.0, "a": 3.0, "F": 6.0},
        units={"m": "kg", "a": "m/s^2", "F": "N"},
        order=["m", "a", "F"],
        parents={"m": [], "a": [], "F": ["m", "a"]},
        answer=Answer(exact="6.0", numeric=6.0, unit="N"),
    )
    return base.model_copy(update=changes)


# ---------------------------------------------------------------- r_graph


def test_a_sound_graph_scores_one() -> None:
    part = graph_reward(_force_scaffold(), _force_computation())
    assert part.score == pytest.approx(1.0)
    assert set(part.breakdown) == set(GRAPH_WEIGHTS)
    assert "all components met" in part.detail


def test_graph_weights_sum_to_one() -> None:
    assert sum(GRAPH_WEIGHTS.values()) == pytest.approx(1.0)


def test_dead_node_and_partial_computation() -> None:
    scaffold = _force_scaffold([{"id": "g", "kind": "given", "value": "9.8", "unit": "m/s^2"}])
    computation = _force_computation(parents={"m": [], "a": [], "F": ["m", "a"], "g": []})
    part = graph_reward(scaffold, computation)
    assert part.breakdown["no_dead_nodes"] == pytest.approx(3 / 4)
    assert part.breakdown["computed"] == pytest.approx(3 / 4)
    assert part.score < 1.0 and "no_dead_nodes" in part.detail


@pytest.mark.parametrize(
    ("kind", "component"),
    [
        ("cycle", "acyclic"),
        ("unknown_reference", "references_resolve"),
        ("duplicate_id", "references_resolve"),
        ("dimension", "units_consistent"),
        ("unit", "units_consistent"),
    ],
)
def test_errors_zero_their_component(kind: str, component: str) -> None:
    computation = _force_computation(valid=False, errors=[ComputeError(kind=kind, node="F", message="x")])
    part = graph_reward(_force_scaffold(), computation)
    assert part.breakdown[component] == 0.0
    assert part.score == pytest.approx(1.0 - GRAPH_WEIGHTS[component])


def test_a_one_node_graph_that_restates_the_answer_scores_low() -> None:
    scaffold = Scaffold.model_validate(
        {"nodes": [{"id": "F", "kind": "given", "value": "6", "unit": "N"}], "target": "F"}
    )
    computation = Computation(
        valid=True,
        values={"F": "6"},
        numeric={"F": 6.0},
        units={"F": "N"},
        order=["F"],
        parents={"F": []},
        answer=Answer(exact="6", numeric=6.0, unit="N"),
    )
    part = graph_reward(scaffold, computation)
    assert part.breakdown["size"] == 0.0 and part.breakdown["target_reachable"] == 0.0
    assert part.score <= 0.75


def test_a_missing_target_is_unreachable_and_all_nodes_dead() -> None:
    computation = _force_computation(
        valid=False, answer=None, errors=[ComputeError(kind="missing_target", message="no node 'X'")]
    )
    part = graph_reward(_force_scaffold(target="X"), computation)
    assert part.breakdown["target_reachable"] == 0.0 and part.breakdown["no_dead_nodes"] == 0.0


def test_an_oversized_graph_loses_the_size_component() -> None:
    extra = [{"id": f"x{i}", "kind": "given", "value": "1"} for i in range(40)]
    part = graph_reward(_force_scaffold(extra), _force_computation())
    assert part.breakdown["size"] == 0.5


@pytest.mark.parametrize("scaffold", [None, "schema"])
def test_an_unparsable_scaffold_scores_zero(scaffold: str | None) -> None:
    computation = Computation(valid=False, errors=[ComputeError(kind="schema", message="nodes: field required")])
    given = _force_scaffold() if scaffold else None
    assert graph_reward(given, computation).score == 0.0
    assert logic_checks(given, computation, FORCE).score == 0.0


# ---------------------------------------------------------------- r_logic


@pytest.mark.parametrize(
    ("text", "present", "absent"),
    [
        ("a $9$-kilometer walk takes $4$ hours", [9.0, 4.0], [94.0]),
        (r"$\vec{a}=3.0 \hat{\mathrm{i}}-4.0 \hat{\mathrm{j}}$", [3.0, 4.0], []),
        (r"$G = 6.674 \times 10^{-11}$", [6.674e-11, 10.0**-11], []),
        ("G = 6.674e-11 and c = 3.00 \\times 10^8 m/s", [6.674e-11, 3e8], []),
        (r"a charge of $2.0 \cdot 10^{-6}$ C", [2e-6], []),
        ("it costs 1,000 dollars", [1000.0], []),
        (r"take $\frac{1}{2}$ and \frac34 and 5/8", [0.5, 0.75, 0.625], []),
        ("the speed doubles; twice as fast; half of it", [2.0, 0.5], []),
        ("x_2 and m^2", [2.0], []),
        ("v = −5 m/s", [5.0], [-5.0]),
    ],
)
def test_text_numbers(text: str, present: list[float], absent: list[float]) -> None:
    numbers = text_numbers(text)
    for value in present:
        assert any(math.isclose(value, n, rel_tol=1e-12) for n in numbers), (value, numbers)
    for value in absent:
        assert value not in numbers


@pytest.mark.parametrize(
    ("node_id", "description", "value", "text", "expected"),
    [
        ("m", "mass", 2.0, "a 2 kg block", True),
        ("d", "distance", 1590000.0, "1590 km away", True),  # km -> m
        ("t", "time", 144.0, "2 hours and 24 minutes... 144", True),
        ("t", "time in seconds", 8640.0, "it takes 144 minutes", True),  # min -> s
        ("theta", "angle", math.radians(30), "at 30 degrees", True),
        ("p", "share", 0.05, "5% of them", True),
        ("v0", "initial speed", 0.0, "starts from rest", True),
        ("x", "a number", 17.0, "a 2 kg block", False),
        ("t", "total hours", 2.4, "2 hours and 24 minutes", False),  # a derived quantity, not a given
        ("g", "gravitational acceleration", 9.8, "no numbers here", True),
        ("grav", "free-fall acceleration", 10.0, "no numbers", True),  # named, rounded within 10%
        ("q", "charge", 1.602e-19, "no numbers", True),  # value matches a constant
        ("c", "speed of light", 3e8, "", True),
        ("pi", "", math.pi, "", True),
        ("k", "Boltzmann constant", 1.38e-23, "", True),
        ("x", "something", 10.0, "", False),  # 10 is g only when named so
        ("G", "gravitational constant", 6.67e-11, "", True),
        ("M", "mass of the moon", 7.35e22, "", True),
    ],
)
def test_given_traceable(node_id: str, description: str, value: float, text: str, expected: bool) -> None:
    assert given_traceable(node_id, description, value, text_numbers(text)) is expected


def test_logic_checks_on_a_sound_scaffold() -> None:
    part = logic_checks(_force_scaffold(), _force_computation(), FORCE)
    assert part.score == pytest.approx(1.0)
    assert part.breakdown == {"dimensions": 1.0, "givens_traceable": 1.0, "derived_step": 1.0}
    assert "2/2 givens" in part.detail


def test_logic_checks_find_invented_givens_and_wrong_dimensions() -> None:
    scaffold = _force_scaffold([{"id": "fudge", "kind": "given", "value": "1.7"}])
    computation = _force_computation(
        numeric={"m": 2.0, "a": 3.0, "F": 6.0, "fudge": 1.7},
        answer=Answer(exact="6.0", numeric=6.0, unit="kg"),
    )
    part = logic_checks(scaffold, computation, FORCE)
    assert part.breakdown["givens_traceable"] == pytest.approx(2 / 3)
    assert part.breakdown["dimensions"] == 0.5  # no unit errors, but the answer is a mass, not a force
    assert "untraced: fudge" in part.detail


def test_logic_checks_without_givens_or_derived_steps() -> None:
    scaffold = Scaffold.model_validate({"nodes": [{"id": "F", "kind": "derived", "formula": "6"}], "target": "F"})
    computation = Computation(valid=False, errors=[ComputeError(kind="math", node="F", message="x")])
    problem = _math("6").model_copy(update={"text": "What is F?"})  # with no text at all, givens are not checked
    part = logic_checks(scaffold, computation, problem)
    assert part.breakdown == {"dimensions": 1.0, "givens_traceable": 0.0, "derived_step": 0.0}


@pytest.mark.parametrize(
    ("judge", "expected"),
    [(None, 0.6), (1.0, 0.8), (0.0, 0.3), (0.5, 0.55), (1.7, 0.8)],
)
def test_logic_reward(judge: float | None, expected: float) -> None:
    checks = RewardPart(score=0.6, detail="d")
    assert logic_reward(checks, judge).score == pytest.approx(expected)


# ---------------------------------------------------------------- r_fusion, totals, groups


@pytest.mark.parametrize(
    ("proposals", "fused", "expected"),
    [
        ([0, 0, 0], 1, 1.0),  # rescue where all were wrong
        ([1, 0, 0], 1, 0.75 + 0.25 * 2 / 3),  # right where they disagreed
        ([1, 1, 1], 1, 0.75),  # unanimous right kept
        ([0, 0, 0], 0, 0.2),  # wrong with all wrong
        ([1, 0], 0, 0.1),  # lost a right answer half had
        ([1, 1, 1], 0, 0.0),  # lost a unanimous right answer
    ],
)
def test_fusion_reward(proposals: list[float], fused: float, expected: float) -> None:
    assert fusion_reward(proposals, fused).score == pytest.approx(expected)


def test_fusion_reward_orders_outcomes() -> None:
    rescue = fusion_reward([0, 0, 0], 1).score
    kept = fusion_reward([1, 1, 1], 1).score
    all_wrong = fusion_reward([0, 0, 0], 0).score
    lost_some = fusion_reward([1, 0, 0], 0).score
    lost_all = fusion_reward([1, 1, 1], 0).score
    assert rescue > kept > all_wrong > lost_some > lost_all
    with pytest.raises(ValueError):
        fusion_reward([], 1.0)


@pytest.mark.parametrize(
    ("args", "weights", "expected"),
    [
        ((1.0, 0.0, 0.0), RewardWeights(), 0.5),
        ((1.0, 1.0, 1.0), RewardWeights(), 1.0),
        ((1.0, 0.5, 0.5), RewardWeights(ans=1, logic=1, graph=2), (1.0 + 0.5 + 1.0) / 4),
        ((1.0, 0.0, 0.0, 1.0), RewardWeights(ans=0.3, logic=0.2, graph=0.2, fusion=0.3), 0.6),
        ((1.0, 0.0, 0.0), RewardWeights(ans=0.3, logic=0.2, graph=0.2, fusion=0.3), 0.3 / 0.7),
    ],
)
def test_total(args: tuple[float, ...], weights: RewardWeights, expected: float) -> None:
    assert total(*args[:3], weights, *args[3:]) == pytest.approx(expected)


def test_total_with_zero_weights_raises() -> None:
    with pytest.raises(ValueError):
        total(1.0, 1.0, 1.0, RewardWeights(ans=0, logic=0, graph=0))


def test_score_fills_every_reward() -> None:
    rewards = score(_force_scaffold(), _force_computation(), FORCE, RewardWeights(), judge_score=1.0)
    assert (rewards.r_ans, rewards.r_logic, rewards.r_graph) == (1.0, pytest.approx(1.0), pytest.approx(1.0))
    assert rewards.r_fusion is None and rewards.r_total == pytest.approx(1.0)
    assert set(rewards.detail) == {"r_ans", "r_logic", "r_graph"}


def test_score_with_proposals_fills_r_fusion() -> None:
    weights = RewardWeights(ans=0.3, logic=0.2, graph=0.2, fusion=0.3)
    rewards = score(_force_scaffold(), _force_computation(), FORCE, weights, proposals_r_ans=[0.0, 0.0])
    assert rewards.r_fusion == pytest.approx(1.0)
    assert "r_fusion" in rewards.detail
    assert rewards.r_total == pytest.approx(total(1.0, rewards.r_logic, rewards.r_graph, weights, 1.0))


def test_score_of_a_wrong_answer() -> None:
    computation = _force_computation(answer=Answer(exact="5", numeric=5.0, unit="N"))
    rewards = score(_force_scaffold(), computation, FORCE, RewardWeights())
    assert rewards.r_ans == 0.0 and rewards.r_total == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("values", "std", "advantages"),
    [
        ([1.0, 0.0], 0.5, [1.0, -1.0]),
        ([0.5, 0.5, 0.5], 0.0, [0.0, 0.0, 0.0]),
        ([], 0.0, []),
        ([0.2], 0.0, [0.0]),
        (
            [1.0, 0.0, 0.0, 0.0],
            math.sqrt(3) / 4,
            [math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)],
        ),
    ],
)
def test_group_statistics(values: list[float], std: float, advantages: list[float]) -> None:
    assert group_std(values) == pytest.approx(std)
    assert group_advantages(values) == pytest.approx(advantages)


# ---------------------------------------------------------------- through the real computer


def _nodes(*specs: tuple[str, str, str, str]) -> dict:
    nodes = [
        {"id": i, "kind": "given" if kind == "g" else "derived", ("value" if kind == "g" else "formula"): e, "unit": u}
        for i, kind, e, u in specs
    ]
    return {"nodes": nodes, "target": nodes[-1]["id"]}


def _computed(data: dict) -> tuple[Scaffold, Computation]:
    return Scaffold.model_validate(data), compute(data)


def test_real_computation_of_a_sound_scaffold_scores_one() -> None:
    scaffold, computation = _computed(_nodes(("m", "g", "2.0", "kg"), ("a", "g", "3", "m/s^2"), ("F", "d", "m*a", "N")))
    rewards = score(scaffold, computation, FORCE, RewardWeights(), judge_score=1.0)
    assert computation.valid
    assert (rewards.r_ans, rewards.r_graph, rewards.r_logic) == (1.0, pytest.approx(1.0), pytest.approx(1.0))


def test_real_computation_converts_units_for_r_ans() -> None:
    # physics_009 wants 1590 km; a scaffold that ends in metres is still right.
    data = _nodes(("r_km", "g", "1590", "km"), ("r", "d", "r_km", "m"))
    scaffold, computation = _computed(data)
    assert computation.answer is not None and computation.answer.unit == "m"
    assert answer_reward(computation.answer, BY_ID["physics_009"]).score == 1.0
    assert answer_reward(computation.answer, BY_ID["physics_004"]).score == 0.0


def test_real_computation_of_an_exact_math_answer() -> None:
    data = _nodes(("x", "g", "12", ""), ("y", "d", "sqrt(x)/4", ""))
    _, computation = _computed(data)
    assert answer_reward(computation.answer, _math(r"\frac{\sqrt{3}}{2}")).score == 1.0
    assert answer_reward(computation.answer, _math(r"\frac{\sqrt{2}}{2}")).score == 0.0


def test_real_computation_of_an_aime_answer() -> None:
    data = _nodes(("a", "g", "9", ""), ("b", "g", "24", ""), ("total", "d", "a*b - 12", ""))
    _, computation = _computed(data)
    assert answer_reward(computation.answer, BY_ID["aime2024_001"]).score == 1.0  # 204


@pytest.mark.parametrize(
    ("data", "component"),
    [
        (_nodes(("a", "g", "1", "s"), ("b", "d", "c + a", "s"), ("c", "d", "b * 2", "s")), "acyclic"),
        (_nodes(("a", "g", "1", "s"), ("b", "d", "a + nowhere", "s")), "references_resolve"),
        (_nodes(("m", "g", "2", "kg"), ("t", "g", "3", "s"), ("x", "d", "m + t", "kg")), "units_consistent"),
        (_nodes(("m", "g", "2", "kg"), ("t", "g", "3", "s"), ("x", "d", "m * 2", "kg")), "no_dead_nodes"),
    ],
)
def test_real_computation_faults_lower_their_component(data: dict, component: str) -> None:
    scaffold, computation = _computed(data)
    part = graph_reward(scaffold, computation)
    assert part.breakdown[component] < 1.0
    assert part.score < 1.0


def test_real_computation_of_unparsable_text_scores_zero() -> None:
    computation = compute('{"nodes": "no"}')
    assert graph_reward(None, computation).score == 0.0
    assert answer_reward(computation.answer, FORCE).score == 0.0


@pytest.mark.parametrize("text", ["10^{99999} and 2e-5000", "1" * 400, "3 \\times 10^{400}", "x/0 and 5/0"])
def test_text_numbers_survive_hostile_text(text: str) -> None:
    assert all(math.isfinite(n) for n in text_numbers(text))
