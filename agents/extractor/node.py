"""The extractor: turn a group's reward spread into proposed experience-bank operations."""

from __future__ import annotations

from typing import Any

from causal_grpo.agents.extractor import prompts
from causal_grpo.agents.extractor.schemas import ExperienceOps
from causal_grpo.agents.judge.prompts import ROLLOUT_ANALYSIS_CHARS, ROLLOUT_TEXT_CHARS, scaffold_json, tail
from causal_grpo.agents.runtime import bank_snapshot, context_of
from causal_grpo.graphs.state import Extraction, Rollout, TrainingState
from causal_grpo.memory.bank import select_for
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from typing_extensions import TypedDict

from causal_grpo.context import Context
from causal_grpo.limiter import followed_by
from causal_grpo.llm import client_for
from causal_grpo.problems import Problem
from causal_grpo.rewards import group_std

MAX_OPS = 3


class GroupInput(TypedDict):
    """What the fan-out sends to one extraction: a bank's agent and its group of scored rollouts."""

    problem: dict[str, Any]
    agent: str
    group: list[Rollout]


def is_text(group: list[Rollout]) -> bool:
    """Whether a group holds text-solver rollouts (a run is one solver, so its first member says)."""
    return bool(group) and group[0].get("solver") == "text"


def text_rollouts_block(group: list[Rollout]) -> str:
    """A text group as the extractor reads it, best first: each solution's end, its answer and rewards."""
    ranked = sorted(group, key=lambda r: -r["r_total"])
    return "\n".join(
        prompts.TEXT_ROLLOUT.format(
            index=r["index"] or n,
            r_total=r["r_total"],
            r_ans=r["r_ans"],
            r_logic=r["r_logic"],
            answer=r["answer"] or "none",
            errors="; ".join(r["errors"]) or "none",
            text=tail(r.get("text") or "", ROLLOUT_TEXT_CHARS) or "none",
        )
        for n, r in enumerate(ranked, start=1)
    )


def passes_filter(group: list[Rollout], ctx: Context) -> tuple[float, bool]:
    """std(r_total) of the group, and whether the run's group filter lets the extractor read it.

    'std': std(r_total) > tau. 'mixed' (the original Training-Free GRPO's rule): the group's mean r_ans is
    strictly between 0 and 1, i.e. some rollouts are right and some wrong.
    """
    std = group_std([r["r_total"] for r in group])
    if ctx.group_filter == "mixed":
        mean = sum(r["r_ans"] for r in group) / len(group) if group else 0.0
        return std, 0.0 < mean < 1.0
    return std, std > ctx.tau


def rollouts_block(group: list[Rollout]) -> str:
    """The group as the extractor reads it, best first, each marked `### Rollout k`, analyses cut to their end."""
    if is_text(group):
        return text_rollouts_block(group)
    ranked = sorted(group, key=lambda r: -r["r_total"])
    return "\n".join(
        prompts.ROLLOUT.format(
            index=r["index"] or n,
            r_total=r["r_total"],
            r_ans=r["r_ans"],
            r_logic=r["r_logic"],
            r_graph=r["r_graph"],
            answer=r["answer"] or "none",
            errors="; ".join(r["errors"]) or "none",
            scaffold=scaffold_json(r["scaffold"], ROLLOUT_ANALYSIS_CHARS) if r["scaffold"] else "none",
        )
        for n, r in enumerate(ranked, start=1)
    )


async def extract_group(
    agent: str, problem: Problem, group: list[Rollout], ctx: Context, store: BaseStore | None
) -> Extraction:
    """Ask the extractor for bank operations when the group passes the run's filter (`passes_filter`)."""
    std, triggered = passes_filter(group, ctx)
    extraction = Extraction(
        agent=agent,
        std=std,
        triggered=triggered,
        summaries=[],
        advantage="",
        operations=[],
        error=None,
        usage={},
    )
    if not extraction["triggered"]:
        return extraction
    current = (
        await select_for(
            agent, store, problem.text, ctx.max_experience_tokens, problem_type=problem.kind, snapshot=bank_snapshot()
        )
        if store is not None
        else None
    )
    problem_type = next((r["scaffold"]["problem_type"] for r in group if r["scaffold"]), "general")
    user = prompts.USER.format(
        agent=agent,
        problem_type=problem_type,
        question=problem.text,
        reference=f"{problem.answer} {problem.unit or ''}".strip(),
        rollouts=rollouts_block(group),
        experiences=(current.format() if current else "") or "(none yet)",
    )
    system = prompts.TEXT_SYSTEM if is_text(group) else prompts.SYSTEM
    messages = [SystemMessage(system.format(max_ops=MAX_OPS)), HumanMessage(user)]
    result = await client_for(ctx, "extractor").structured(ExperienceOps, messages, temperature=0.0)
    extraction["usage"] = result.usage.model_dump()
    if result.value is None:
        extraction["error"] = result.error
        return extraction
    extraction["summaries"] = result.value.summaries
    extraction["advantage"] = result.value.advantage
    extraction["operations"] = [op.model_dump(mode="json") for op in result.value.operations[:MAX_OPS]]
    return extraction


async def extract(state: GroupInput, runtime: Runtime[Context]) -> dict[str, Any]:
    """Extraction over one generator's group (sent by the fan-out)."""
    problem = Problem.model_validate(state["problem"])
    extraction = await extract_group(state["agent"], problem, state["group"], context_of(runtime), runtime.store)
    return {"extractions": [extraction]}


async def extract_critic(state: TrainingState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Extraction over the critic's group: the fused results of every generator."""
    if not state.get("fused"):
        return {}
    problem = Problem.model_validate(state["problem"])
    with followed_by(0):  # the last call of the problem's chain
        extraction = await extract_group("critic", problem, state["fused"], context_of(runtime), runtime.store)
    return {"extractions": [extraction]}
