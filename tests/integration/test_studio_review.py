"""Studio's view of the training graph: a thread compiled with a checkpointer, resumed by hand, no driver."""

from __future__ import annotations

import pytest
from causal_grpo.graphs.training import build_training_graph
from causal_grpo.memory import review
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command

from causal_grpo.problems import load_problems

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

PROBLEM = load_problems("full", 3)[0].model_dump(mode="json")


def statuses(learned: dict) -> list[str]:
    return [o["status"] for bank in learned.values() if isinstance(bank, dict) for o in bank.get("outcomes", [])]


async def test_a_bad_resume_is_asked_again_and_a_good_one_then_applies(sim_context):
    ctx = sim_context.model_copy(update={"review": True})
    graph = build_training_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "studio-review"}}
    out = await graph.ainvoke({"problem": PROBLEM}, config, context=ctx)
    request = review.ReviewRequest.model_validate(out["__interrupt__"][0].value)
    assert request.error is None

    again = await graph.ainvoke(Command(resume="yes please"), config, context=ctx)
    (pause,) = again["__interrupt__"]
    assert "'yes please'" in pause.value["error"] and "\n" not in pause.value["error"]
    assert pause.value["operations"] == request.model_dump(mode="json")["operations"]

    bad_id = {
        "decisions": {"9-nope-G1-0": {"decision": "approve"}}
        | {o.id: {"decision": "approve"} for o in request.operations}
    }
    again = await graph.ainvoke(Command(resume=bad_id), config, context=ctx)
    (pause,) = again["__interrupt__"]
    assert pause.value["error"] == "no operation 9-nope-G1-0 in this review"
    snapshot = await graph.aget_state(config)
    assert snapshot.next == ("learn",) and not any(t.error for t in snapshot.tasks)

    decisions = {o.id: {"decision": "reject"} for o in request.operations}
    done = await graph.ainvoke(Command(resume={"decisions": decisions}), config, context=ctx)
    assert "__interrupt__" not in done
    assert {d["decision"] for d in done["learned"]["reviewed"]} == {"reject"}
    assert "rejected" in statuses(done["learned"])


async def test_two_studio_threads_on_one_problem_each_learn_their_own(sim_context):
    ctx = sim_context.model_copy(update={"run": "default"})  # Studio passes no run
    graph = build_training_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    learned = []
    for thread in ("studio-a", "studio-b"):
        out = await graph.ainvoke({"problem": PROBLEM}, {"configurable": {"thread_id": thread}}, context=ctx)
        learned.append(out["learned"])
    for one in learned:
        banks = [bank for bank in one.values() if isinstance(bank, dict) and "outcomes" in bank]
        assert banks and statuses(one), one
        assert not any(bank.get("replayed") for bank in banks), one
