"""What every agent node needs from the LangGraph runtime: the run's Context and the store."""

from __future__ import annotations

from langgraph.runtime import Runtime

from causal_grpo.context import Context


def context_of(runtime: Runtime[Context]) -> Context:
    """The run's Context; defaults when a caller (e.g. LangGraph Studio) passes none."""
    ctx = runtime.context
    if ctx is None:
        return Context()
    return ctx if isinstance(ctx, Context) else Context.model_validate(ctx)
