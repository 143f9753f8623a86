"""The per-problem training graph: rollouts -> groups -> extraction and fusion -> critic extraction -> decide -> learn.

One graph run is one problem on its own thread. Extraction and fusion of a generator's group only
need that group's scored rollouts, so they run side by side; the critic's extraction needs every
fused result. `learn` is the only node that writes the experience banks, which lets a driver pause
a batch of problems before it (`interrupt_before=["learn"]`) and apply their updates in a fixed
order once the whole batch is done.
"""

from __future__ import annotations

from typing import Any

from causal_grpo.agents.critic.node import FuseInput, fuse
from causal_grpo.agents.extractor.node import GroupInput, extract, extract_critic
from causal_grpo.agents.runtime import context_of
from causal_grpo.graphs.final import choose_final
from causal_grpo.graphs.rollout import MODEL_RETRY, build_rollout_graph
from causal_grpo.graphs.state import InputState, OutputState, Rollout, RolloutInput, TrainingState
from causal_grpo.memory.learning import apply_learning
from causal_grpo.memory.review import (
    ReviewError,
    ReviewRequest,
    ReviewResume,
    deviations,
    review_request,
    reviewed_extractions,
)
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send, interrupt

from causal_grpo.context import Context


def send_rollouts(state: TrainingState, runtime: Runtime[Context]) -> list[Send] | str:
    """One rollout branch per (generator, rollout index); the critic stage starts from given rollouts."""
    ctx = context_of(runtime)
    if ctx.stage == "critic":
        return "groups"
    return [
        Send("rollout", RolloutInput(problem=state["problem"], generator=g, index=k))
        for g in ctx.generators
        for k in range(1, ctx.rollouts + 1)
    ]


def group_of(rollouts: list[Rollout], generator: int) -> list[Rollout]:
    """A generator's rollouts in rollout order (branches finish in any order)."""
    return sorted((r for r in rollouts if r["generator"] == generator), key=lambda r: r["index"])


def groups(state: TrainingState) -> dict[str, Any]:
    """Join point after the rollout branches; the fan-out below reads the finished groups."""
    return {}


def send_groups(state: TrainingState, runtime: Runtime[Context]) -> list[Send] | str:
    """Per generator: extraction of its group and the critic's fusion of it, as the stage asks."""
    ctx = context_of(runtime)
    sends: list[Send] = []
    for g in ctx.generators:
        group = group_of(state["rollouts"], g)
        if not group:
            continue
        if ctx.stage != "critic":
            sends.append(Send("extract", GroupInput(problem=state["problem"], agent=f"generator_{g}", group=group)))
        if ctx.fuse and ctx.stage != "generators":
            sends.append(Send("fuse", FuseInput(problem=state["problem"], generator=g, group=group)))
    return sends or "extract_critic"


def decide(state: TrainingState) -> dict[str, Any]:
    """Choose the problem's final answer without looking at the reference."""
    chosen = choose_final(state.get("fused", []), state["rollouts"])
    return {
        "final_answer": chosen["answer"] if chosen else None,
        "final_correct": bool(chosen and chosen["correct"]),
    }


def run_of(ctx: Context) -> str:
    """The run `learn` keys bank outcomes and reviews by.

    A thread started outside the driver (Studio, a bare `ainvoke`) with no run in its context gets the
    default run; sharing it would make a second thread on the same problem replay the first thread's
    outcomes. Such a thread is its own run, `thread:<thread id>`. Driver threads (`<run>:<epoch>:<id>`)
    keep their run.
    """
    if ctx.run != "default":
        return ctx.run
    thread = str(get_config().get("configurable", {}).get("thread_id") or "")
    if not thread or thread.startswith("default:"):
        return ctx.run
    return f"thread:{thread}"


def ask_review(request: ReviewRequest) -> ReviewResume:
    """Interrupt until the resume value parses; a bad value is asked again with the reason in `error`.

    LangGraph gives each `interrupt()` call in a node its own resume value, in order, so raising on a bad
    value would pin the thread to that first error for good.
    """
    error = None
    while True:
        payload = request.model_copy(update={"error": error}).model_dump(
            mode="json", exclude={"error"} if error is None else None
        )
        try:
            return ReviewResume.parse(interrupt(payload), request)
        except ReviewError as exc:
            error = str(exc)


async def learn(state: TrainingState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Apply the proposed bank operations and the experience counters, idempotently.

    Under review (`Context.review`), a problem that proposes an add, modify or delete first pauses here with
    `interrupt(ReviewRequest)`; the `Command(resume=...)` value decides each operation (`memory.review`).
    A value that does not parse is asked for again. Nothing is written before the interrupt, so the node's
    rerun on resume starts from the same state.
    """
    if runtime.store is None:
        return {"learned": {"skipped": "no store"}}
    ctx = context_of(runtime)
    run = run_of(ctx)
    extractions, rejected, changed = state.get("extractions", []), None, None
    request = review_request(run, state) if ctx.review else None
    if request is not None:
        resume = ask_review(request)
        extractions, rejected = reviewed_extractions(extractions, request, resume)
        changed = deviations(resume, request)
    learned = await apply_learning(
        runtime.store,
        run=run,
        epoch=state.get("epoch", 1),
        problem=state["problem"],
        extractions=extractions,
        rollouts=[*state["rollouts"], *state.get("fused", [])],
        rejected=rejected,
    )
    if changed:
        learned["reviewed"] = changed
    return {"learned": learned}


def build_training_graph() -> StateGraph:
    """The uncompiled per-problem training graph; compile it with your own store and checkpointer."""
    builder = StateGraph(TrainingState, input_schema=InputState, output_schema=OutputState, context_schema=Context)
    builder.add_node("rollout", build_rollout_graph().compile(checkpointer=False))
    builder.add_node(groups)
    builder.add_node(extract, input_schema=GroupInput, retry_policy=MODEL_RETRY)
    builder.add_node(fuse, input_schema=FuseInput, retry_policy=MODEL_RETRY)
    builder.add_node(extract_critic, retry_policy=MODEL_RETRY)
    builder.add_node(decide)
    builder.add_node(learn)
    builder.add_conditional_edges(START, send_rollouts, ["rollout", "groups"])
    builder.add_edge("rollout", "groups")
    builder.add_conditional_edges("groups", send_groups, ["extract", "fuse", "extract_critic"])
    builder.add_edge("extract", "extract_critic")
    builder.add_edge("fuse", "extract_critic")
    builder.add_edge("extract_critic", "decide")
    builder.add_edge("decide", "learn")
    builder.add_edge("learn", END)
    return builder


def send_fusions(state: TrainingState, runtime: Runtime[Context]) -> list[Send] | str:
    """The critic's fusion of each generator's group, when the run fuses; else the end."""
    ctx = context_of(runtime)
    groups_ = [(g, group_of(state["rollouts"], g)) for g in ctx.generators] if ctx.fuse else []
    sends = [
        Send("fuse", FuseInput(problem=state["problem"], generator=g, group=group)) for g, group in groups_ if group
    ]
    return sends or END


def build_trial_graph() -> StateGraph:
    """A problem answered without learning: rollouts, then fusion. It reads the banks and never writes them.

    Minibatch acceptance (`Context.accept_minibatch`) answers problems with it before and after a batch's edits.
    """
    builder = StateGraph(TrainingState, input_schema=InputState, output_schema=OutputState, context_schema=Context)
    builder.add_node("rollout", build_rollout_graph().compile(checkpointer=False))
    builder.add_node(groups)
    builder.add_node(fuse, input_schema=FuseInput, retry_policy=MODEL_RETRY)
    builder.add_conditional_edges(START, send_rollouts, ["rollout", "groups"])
    builder.add_edge("rollout", "groups")
    builder.add_conditional_edges("groups", send_fusions, ["fuse", END])
    builder.add_edge("fuse", END)
    return builder


graph = build_training_graph().compile(name="causal-grpo-train")
