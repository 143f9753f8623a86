"""The critic's node: fuse one generator's rollouts into one scaffold, then compute and score it with r_fusion."""

from __future__ import annotations

import time
from typing import Any

from causal_grpo.agents.critic import prompts
from causal_grpo.agents.critic.schemas import FusedAnswer
from causal_grpo.agents.extractor.node import is_text
from causal_grpo.agents.generator.node import experiences_block, select_experiences, unit_hint
from causal_grpo.agents.judge.node import (
    Judgement,
    Provenance,
    judge_scaffold,
    judge_text,
    make_rollout,
    make_text_rollout,
)
from causal_grpo.agents.judge.prompts import ROLLOUT_ANALYSIS_CHARS, ROLLOUT_TEXT_CHARS, scaffold_json, tail
from causal_grpo.agents.runtime import context_of
from causal_grpo.agents.text_generator.node import text_unit_hint
from causal_grpo.agents.text_generator.prompts import BOXED_RULE
from causal_grpo.graphs.state import Rollout
from causal_grpo.memory.bank import Selection
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from causal_grpo.answers import read_answer
from causal_grpo.context import Context
from causal_grpo.limiter import followed_by
from causal_grpo.llm import client_for
from causal_grpo.problems import Problem
from causal_grpo.scaffold import Computation, acompute


class FuseInput(TypedDict):
    """What the fan-out sends to one fusion: a generator's scored rollouts."""

    problem: dict[str, Any]
    generator: int
    group: list[Rollout]


def proposals_block(group: list[Rollout]) -> str:
    """The proposals as the critic reads them (analyses cut to their end); rewards needing the reference withheld."""
    return "\n".join(
        prompts.PROPOSAL.format(
            index=n,
            answer=r["answer"] or "none",
            valid=r["valid"],
            r_logic=r["r_logic"],
            errors="; ".join(r["errors"]) or "none",
            scaffold=scaffold_json(r["scaffold"], ROLLOUT_ANALYSIS_CHARS) if r["scaffold"] else "none",
        )
        for n, r in enumerate(group, start=1)
    )


def text_proposals_block(group: list[Rollout]) -> str:
    """Text proposals as the critic reads them: each solution's end, its answer and judged logic."""
    return "\n".join(
        prompts.TEXT_PROPOSAL.format(
            index=n,
            answer=r["answer"] or "none",
            r_logic=r["r_logic"],
            errors="; ".join(r["errors"]) or "none",
            text=tail(r.get("text") or "", ROLLOUT_TEXT_CHARS) or "none",
        )
        for n, r in enumerate(group, start=1)
    )


async def fuse_text(state: FuseInput, ctx: Context, shown: Selection) -> Rollout:
    """The text solver's fusion: one free-text solution from the group's, read, judged and scored with r_fusion."""
    problem = Problem.model_validate(state["problem"])
    group = state["group"]
    system = prompts.TEXT_SYSTEM.format(boxed_rule=BOXED_RULE, experiences=experiences_block(shown.format()))
    user = prompts.TEXT_USER.format(
        domain=problem.domain,
        question=problem.text,
        unit_hint=text_unit_hint(problem),
        proposals=text_proposals_block(group),
        task=prompts.TEXT_TASK,
    )
    started = time.time()
    result = await client_for(ctx, "critic").text([SystemMessage(system.rstrip()), HumanMessage(user)], temperature=0.0)
    read = read_answer(result.text)
    with followed_by(1):  # the critic's extraction
        judgement = await judge_text(problem, result.text, read, ctx)
    return make_text_rollout(
        agent="critic",
        generator=state["generator"],
        index=0,
        problem=problem,
        text=result.text,
        read=read,
        judgement=judgement,
        weights=ctx.critic_weights,
        rel_tol=ctx.answer_rel_tol,
        provenance=Provenance(experiences_seen=shown.ids, usage=result.usage, mode="text", started=started),
        model_error=None if result.text else result.error,
        proposals_r_ans=[r["r_ans"] for r in group],
    )


async def fuse(state: FuseInput, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the critic for one fused scaffold (or text solution), then compute, judge and score it."""
    ctx = context_of(runtime)
    problem = Problem.model_validate(state["problem"])
    group = state["group"]
    shown = await select_experiences("critic", problem, runtime)
    if is_text(group):
        return {"fused": [await fuse_text(state, ctx, shown)]}
    system = prompts.SYSTEM.format(experiences=experiences_block(shown.format()))
    user = prompts.USER.format(
        domain=problem.domain,
        question=problem.text,
        unit_hint=unit_hint(problem),
        proposals=proposals_block(group),
    )
    started = time.time()
    result = await client_for(ctx, "critic").structured(
        FusedAnswer, [SystemMessage(system), HumanMessage(user)], temperature=0.0
    )
    scaffold = result.value.scaffold if result.value else None
    if scaffold is None:
        reason = result.error or "the critic returned no scaffold"
        computation = Computation.missing(reason)
        judgement = Judgement()
    else:
        computation = await acompute(scaffold)
        with followed_by(1):  # the critic's extraction
            judgement = await judge_scaffold(problem, scaffold, computation, ctx)
    fused = make_rollout(
        agent="critic",
        generator=state["generator"],
        index=0,
        problem=problem,
        scaffold=scaffold,
        computation=computation,
        judgement=judgement,
        weights=ctx.critic_weights,
        rel_tol=ctx.answer_rel_tol,
        model_error=None if scaffold else result.error,
        proposals_r_ans=[r["r_ans"] for r in group],
        experiences_seen=shown.ids,
        usage=result.usage,
        mode=result.mode,
        started=started,
    )
    return {"fused": [fused]}
