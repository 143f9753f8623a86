"""The generator's node: write one causal-graph scaffold for a problem, with the agent's experiences in the prompt."""

from __future__ import annotations

import time
from typing import Any

from causal_grpo.agents.generator import prompts
from causal_grpo.agents.runtime import bank_snapshot, context_of
from causal_grpo.graphs.state import RolloutState
from causal_grpo.memory.bank import Selection, select_for
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from causal_grpo.context import Context
from causal_grpo.llm import client_for
from causal_grpo.problems import Problem
from causal_grpo.scaffold import FUNCTIONS, Scaffold


def experiences_block(lines: str) -> str:
    """The experiences section of a prompt, empty when there are none."""
    return prompts.EXPERIENCES.format(lines=lines) if lines else ""


def unit_hint(problem: Problem) -> str:
    """Ask for the reference's unit, so physics answers come back comparable."""
    return prompts.UNIT_HINT.format(unit=problem.unit) if problem.unit else ""


def scaffold_messages(problem: Problem, *, style: str, experiences: str, rollout: int) -> list[Any]:
    """The generator's prompt for one rollout."""
    system = prompts.SYSTEM.format(functions=", ".join(sorted(FUNCTIONS)), style=style)
    user = prompts.USER.format(
        domain=problem.domain,
        question=problem.text,
        unit_hint=unit_hint(problem),
        experiences=experiences_block(experiences),
        rollout=rollout,
    )
    return [SystemMessage(system), HumanMessage(user)]


async def select_experiences(agent: str, problem: Problem, runtime: Runtime[Context]) -> Selection:
    """The experiences of `agent`'s bank (and the shared one) put into its prompt for this problem."""
    if runtime.store is None:
        return Selection(shared=[], own=[])
    return await select_for(
        agent,
        runtime.store,
        problem.text,
        context_of(runtime).max_experience_tokens,
        problem_type=problem.kind,
        snapshot=bank_snapshot(),
    )


async def generate(state: RolloutState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Select the experiences relevant to the problem, then ask the model for a scaffold."""
    ctx = context_of(runtime)
    problem = Problem.model_validate(state["problem"])
    generator = state["generator"]
    shown = await select_experiences(f"generator_{generator}", problem, runtime)
    messages = scaffold_messages(
        problem,
        style=ctx.profiles[generator].style,
        experiences=shown.format(),
        rollout=state["index"],
    )
    started = time.time()
    result = await client_for(ctx, "generator").structured(
        Scaffold, messages, temperature=ctx.generator_temperature(generator)
    )
    return {
        "experiences_seen": shown.ids,
        "scaffold": result.value.model_dump(mode="json") if result.value else None,
        "model_error": result.error,
        "usage": result.usage.model_dump(),
        "mode": result.mode,
        "started": started,
    }
