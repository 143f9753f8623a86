"""Our graphs inside an outside LangGraph app, built from the public `causal_grpo` API alone, against the simulator."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.store.memory import InMemoryStore
from typing_extensions import TypedDict

from causal_grpo import Context, Problem, Scaffold, build_rollout_graph, build_training_graph, load_problems

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROLLOUT = build_rollout_graph().compile()


class QuizState(TypedDict):
    """The outside app's own state: it knows nothing of ours."""

    question: str
    reference: str
    unit: str
    answers: Annotated[list[dict[str, Any]], operator.add]


async def solve(state: QuizState) -> dict[str, Any]:
    """Two rollouts of generator 1 through our subgraph; context and store come from the app's run."""
    problem = Problem(
        id="quiz-1",
        text=state["question"],
        answer=state["reference"],
        unit=state["unit"],
        dataset="quiz",
        domain="physics",
    )
    outputs = await asyncio.gather(
        *(ROLLOUT.ainvoke({"problem": problem.model_dump(mode="json"), "generator": 1, "index": k}) for k in (1, 2))
    )
    return {"answers": [rollout for output in outputs for rollout in output["rollouts"]]}


def quiz_app(store: InMemoryStore):
    builder = StateGraph(QuizState, context_schema=Context)
    builder.add_node(solve)
    builder.add_edge(START, "solve")
    builder.add_edge("solve", END)
    return builder.compile(store=store)


def context(simulator, **overrides: Any) -> Context:
    return Context(model="simulated", base_url=simulator.base_url, seed=7, max_retries=1, **overrides)


def bank(store: InMemoryStore, name: str) -> dict[str, dict[str, Any]]:
    """The live experiences of one bank, read straight from the documented namespace."""
    items = store.search(("causal_grpo", "experiences", name), limit=1000)
    return {item.key: item.value for item in items if not item.value.get("deleted")}


async def test_the_rollout_subgraph_runs_inside_an_outside_app(simulator):
    store = InMemoryStore()
    before = simulator.stats()["requests"]
    state = await quiz_app(store).ainvoke(
        {"question": "A 2 kg cart accelerates at 3 m/s^2. What net force acts on it?", "reference": "6", "unit": "N"},
        context=context(simulator, run="embed-quiz"),
    )

    answers = state["answers"]
    assert [(r["agent"], r["index"]) for r in answers] == [("generator_1", 1), ("generator_1", 2)]
    for rollout in answers:
        assert 0.0 <= rollout["r_total"] <= 1.0
        assert rollout["r_fusion"] is None
        Scaffold.model_validate(rollout["scaffold"])
        assert rollout["valid"] == (rollout["answer"] is not None)
        # a scaffold call and a judge call, each counted
        assert rollout["usage"]["calls"] >= 2 and rollout["usage"]["prompt_tokens"] > 0
    # Every call went to the simulator given in the app's context, not to one of its own.
    assert simulator.stats()["requests"] - before == sum(r["usage"]["calls"] for r in answers)
    # The subgraph reads the banks and never writes them.
    assert store.list_namespaces() == []


async def test_the_training_graph_embeds_with_the_apps_store_and_checkpointer(simulator):
    store, checkpointer = InMemoryStore(), InMemorySaver()
    graph = build_training_graph().compile(checkpointer=checkpointer, store=store)
    ctx = context(simulator, run="embed-train", generators=[1], rollouts=3)

    # Rewards spread on most problems, but not all: train until one group triggered extraction.
    for problem in load_problems("physics", 4):
        config = {"configurable": {"thread_id": f"{ctx.run}:1:{problem.id}"}}
        state = await graph.ainvoke({"problem": problem.model_dump(mode="json")}, config, context=ctx)
        if any(e["triggered"] for e in state["extractions"]):
            break
    else:
        pytest.fail("no group's rewards spread over four problems")

    assert set(state) >= {"problem", "rollouts", "extractions", "fused", "final_answer", "final_correct", "learned"}
    assert [r["index"] for r in state["rollouts"]] == [1, 2, 3]
    assert all(0.0 <= r["r_total"] <= 1.0 for r in [*state["rollouts"], *state["fused"]])
    assert [f["agent"] for f in state["fused"]] == ["critic"]
    assert (await graph.aget_state(config)).next == ()

    applied = {
        (o["bank"], o["id"])
        for agent, result in state["learned"].items()
        if agent != "usage_counted"
        for o in result["outcomes"]
        if o["op"] == "add" and o["status"] == "applied"
    }
    own = bank(store, "generator_1")
    assert own, "an extraction triggered, so generator_1's bank holds experiences"
    assert {("generator_1", key) for key in own} | {("shared", key) for key in bank(store, "shared")} >= applied
    # Generators 2 and 3 never ran; the critic fused one result, so its group had nothing to compare.
    assert bank(store, "generator_2") == bank(store, "generator_3") == bank(store, "critic") == {}

    # The outside app's rollouts, on the same store, are shown what training learned.
    quiz = await quiz_app(store).ainvoke(
        {"question": problem.text, "reference": problem.answer, "unit": problem.unit or ""},
        context=ctx,
    )
    seen = {i for r in quiz["answers"] for i in r["experiences_seen"]}
    assert seen and seen <= set(own) | set(bank(store, "shared"))
