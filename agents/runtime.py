"""What every agent node needs from the LangGraph runtime: the run's Context, the store, the thread."""

from __future__ import annotations

from langgraph.config import get_config
from langgraph.runtime import Runtime

from causal_grpo.context import Context


def context_of(runtime: Runtime[Context]) -> Context:
    """The run's Context; defaults when a caller (e.g. LangGraph Studio) passes none."""
    ctx = runtime.context
    if ctx is None:
        return Context()
    return ctx if isinstance(ctx, Context) else Context.model_validate(ctx)


def bank_snapshot() -> str | None:
    """The key under which a problem's nodes share their experience selections: its thread id.

    None outside a graph run or without a thread, where every selection reads the banks afresh.
    """
    try:
        thread = get_config().get("configurable", {}).get("thread_id")
    except RuntimeError:
        return None
    return str(thread) if thread is not None else None
