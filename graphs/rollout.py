"""The rollout subgraph: generate a scaffold -> compute it -> evaluate it, one branch per (generator, rollout).

With the text solver (`Context.solver == "text"`) a branch is generate_text -> read_reply -> evaluate: the
model reasons in free text, its last \\boxed{...} is read as the answer, and the judge grades the text.

Compiled once and mounted as the training graph's `rollout` node; `langgraph.json` also exposes it on its own.
"""

from __future__ import annotations

from typing import Any

from causal_grpo.agents.generator.node import generate
from causal_grpo.agents.judge.node import evaluate
from causal_grpo.agents.runtime import context_of
from causal_grpo.agents.text_generator.node import generate_text
from causal_grpo.graphs.state import RolloutInput, RolloutOutput, RolloutState
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from causal_grpo.answers import read_answer
from causal_grpo.context import Context
from causal_grpo.llm import TransientModelError
from causal_grpo.scaffold import Computation, acompute

# Transport faults the client's own retries did not overcome; schema violations never get here
# (the client re-asks those and then reports an invalid rollout).
MODEL_RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, retry_on=TransientModelError)


async def compute_scaffold(state: RolloutState) -> dict[str, Any]:
    """Evaluate the scaffold's DAG; a missing or broken scaffold becomes an invalid computation."""
    scaffold = state.get("scaffold")
    if scaffold is None:
        reason = state.get("model_error") or "the model returned no scaffold"
        computation = Computation.missing(reason)
    else:
        # In the sandbox's worker processes: hard limits, and the event loop keeps its CPU for I/O.
        computation = await acompute(scaffold)
    return {"computation": computation.model_dump(mode="json")}


async def read_reply(state: RolloutState) -> dict[str, Any]:
    """Read the text solver's final answer from its reply (`causal_grpo.answers`); no reply reads as none."""
    return {"read": read_answer(state.get("text") or "").model_dump(mode="json")}


def route_solver(state: RolloutInput, runtime: Runtime[Context]) -> str:
    """The first node of a branch: the scaffold generator, or the text generator."""
    return "generate_text" if context_of(runtime).solver == "text" else "generate"


def build_rollout_graph() -> StateGraph:
    """The uncompiled rollout subgraph."""
    builder = StateGraph(RolloutState, input_schema=RolloutInput, output_schema=RolloutOutput, context_schema=Context)
    builder.add_node(generate, retry_policy=MODEL_RETRY)
    builder.add_node("compute", compute_scaffold)
    builder.add_node(evaluate, retry_policy=MODEL_RETRY)
    builder.add_node(generate_text, retry_policy=MODEL_RETRY)
    builder.add_node(read_reply)
    builder.add_conditional_edges(START, route_solver, ["generate", "generate_text"])
    builder.add_edge("generate_text", "read_reply")
    builder.add_edge("read_reply", "evaluate")
    builder.add_edge("generate", "compute")
    builder.add_edge("compute", "evaluate")
    builder.add_edge("evaluate", END)
    return builder


graph = build_rollout_graph().compile(name="causal-grpo-rollout")
