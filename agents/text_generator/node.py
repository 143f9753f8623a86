"""The text generator's node: one free-text solution for a problem, with the agent's experiences in the prompt."""

from __future__ import annotations

import time
from typing import Any

from causal_grpo.agents.generator.node import experiences_block, select_experiences
from causal_grpo.agents.runtime import context_of
from causal_grpo.agents.text_generator import prompts
from causal_grpo.graphs.state import RolloutState
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from causal_grpo.context import Context
from causal_grpo.llm import client_for
from causal_grpo.problems import Problem


def text_unit_hint(problem: Problem) -> str:
    """Ask for the reference's unit, so physics answers come back comparable."""
    return prompts.UNIT_HINT.format(unit=problem.unit) if problem.unit else ""


def text_messages(problem: Problem, *, style: str, experiences: str, rollout: int) -> list[Any]:
    """The text generator's prompt for one rollout."""
    user = prompts.USER.format(
        domain=problem.domain,
        question=problem.text,
        unit_hint=text_unit_hint(problem),
        experiences=experiences_block(experiences),
        rollout=rollout,
    )
    return [
        SystemMessage(prompts.SYSTEM.format(boxed_rule=prompts.BOXED_RULE, style=style).rstrip()),
        HumanMessage(user),
    ]


async def generate_text(state: RolloutState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Select the experiences relevant to the problem, then ask the model to reason to a boxed answer."""
    ctx = context_of(runtime)
    problem = Problem.model_validate(state["problem"])
    generator = state["generator"]
    shown = await select_experiences(f"generator_{generator}", problem, runtime)
    style = prompts.STYLES.get(generator, ctx.profiles[generator].style)
    messages = text_messages(problem, style=style, experiences=shown.format(), rollout=state["index"])
    started = time.time()
    result = await client_for(ctx, "generator").text(messages, temperature=ctx.generator_temperature(generator))
    return {
        "experiences_seen": shown.ids,
        "text": result.text,
        "model_error": result.error if not result.text else None,
        "usage": result.usage.model_dump(),
        "mode": "text",
        "started": started,
    }
