"""The rollout subgraph: generate a scaffold -> compute it -> evaluate it, one branch per (generator, rollout).

Compiled once and mounted as the training graph's `rollout` node; `langgraph.json` also exposes it on its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from causal_grpo.agents.generator.node import generate
from causal_grpo.agents.judge.node import evaluate
from causal_grpo.graphs.state import RolloutInput, RolloutOutput, RolloutState
from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy

from causal_grpo.computer import Computation, compute
from causal_grpo.context import Context
from causal_grpo.llm import TransientModelError

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
        # Bounded and CPU-only; a thread keeps the event loop free for other branches' model calls.
        computation = await asyncio.to_thread(compute, scaffold)
    return {"computation": computation.model_dump(mode="json")}


def build_rollout_graph() -> StateGraph:
    """The uncompiled rollout subgraph."""
    builder = StateGraph(RolloutState, input_schema=RolloutInput, output_schema=RolloutOutput, context_schema=Context)
    builder.add_node(generate, retry_policy=MODEL_RETRY)
    builder.add_node("compute", compute_scaffold)
    builder.add_node(evaluate, retry_policy=MODEL_RETRY)
    builder.add_edge(START, "generate")
    builder.add_edge("generate", "compute")
    builder.add_edge("compute", "evaluate")
    builder.add_edge("evaluate", END)
    return builder


graph = build_rollout_graph().compile(name="causal-grpo-rollout")
