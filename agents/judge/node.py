"""The judge: the model-judged half of r_logic, and the rollout subgraph's `evaluate` node."""

from __future__ import annotations

import time
from typing import Any

from causal_grpo.agents.judge import prompts
from causal_grpo.agents.judge.schemas import LogicVerdict
from causal_grpo.agents.runtime import context_of
from causal_grpo.graphs.state import Rollout, RolloutState
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel

from causal_grpo.answers import ReadAnswer
from causal_grpo.context import Context
from causal_grpo.llm import Usage, client_for
from causal_grpo.problems import Problem
from causal_grpo.rewards import Rewards, RewardWeights, score, score_text
from causal_grpo.scaffold import Answer, Computation, Scaffold


class Judgement(BaseModel):
    """The judge's verdict (None when off or when the model gave none) and what it cost."""

    verdict: LogicVerdict | None = None
    error: str | None = None
    usage: Usage = Usage()


def judge_prompt(problem: Problem, scaffold: Scaffold, computation: Computation) -> str:
    """The judge's user message: the problem, the graph (its analysis cut to its end), what the computer made of it."""
    values = "\n".join(f"  {k} = {v} {computation.units.get(k, '')}".rstrip() for k, v in computation.values.items())
    errors = "Errors: " + "; ".join(str(e) for e in computation.errors) if computation.errors else ""
    return prompts.USER.format(
        question=problem.text,
        scaffold=prompts.scaffold_json(scaffold, prompts.JUDGE_ANALYSIS_CHARS),
        values=values or "  (none)",
        answer=str(computation.answer) if computation.answer else "none",
        errors=errors,
    )


async def judge_scaffold(problem: Problem, scaffold: Scaffold, computation: Computation, ctx: Context) -> Judgement:
    """Ask the judge model to grade the graph's reasoning; skipped with `--no-judge`."""
    if not ctx.judge:
        return Judgement()
    user = judge_prompt(problem, scaffold, computation)
    result = await client_for(ctx, "judge").structured(
        LogicVerdict, [SystemMessage(prompts.SYSTEM), HumanMessage(user)], temperature=0.0
    )
    return Judgement(verdict=result.value, error=result.error, usage=result.usage)


class Provenance(BaseModel):
    """Where a scored result came from: the prompt's experiences, what the call cost, when it started."""

    experiences_seen: list[str] = []
    usage: Usage = Usage()
    mode: str | None = None
    started: float | None = None


def package(
    *,
    agent: str,
    generator: int,
    index: int,
    rewards: Rewards,
    judgement: Judgement,
    answer: Answer | None,
    valid: bool,
    errors: list[str],
    scaffold: Scaffold | None,
    provenance: Provenance,
) -> Rollout:
    """A scored result as a `Rollout` record (scaffold and text solver alike)."""
    detail: dict[str, Any] = {k: v.model_dump() for k, v in rewards.detail.items()}
    if judgement.verdict:
        detail["judge"] = judgement.verdict.model_dump()
    elif judgement.error:
        detail["judge"] = {"error": judgement.error}
    started = provenance.started
    return Rollout(
        agent=agent,
        generator=generator,
        index=index,
        scaffold=scaffold.model_dump(mode="json") if scaffold else None,
        valid=valid,
        answer=str(answer) if answer else None,
        exact=answer.is_exact if answer else None,
        errors=errors,
        r_ans=rewards.r_ans,
        r_logic=rewards.r_logic,
        r_graph=rewards.r_graph,
        r_fusion=rewards.r_fusion,
        r_total=rewards.r_total,
        correct=rewards.r_ans >= 1.0,
        rewards_detail=detail,
        experiences_seen=provenance.experiences_seen,
        usage=(provenance.usage + judgement.usage).model_dump(),
        mode=provenance.mode,
        seconds=round(time.time() - started, 3) if started else 0.0,
    )


def make_rollout(
    *,
    agent: str,
    generator: int,
    index: int,
    problem: Problem,
    scaffold: Scaffold | None,
    computation: Computation,
    judgement: Judgement,
    weights: RewardWeights,
    rel_tol: float,
    model_error: str | None = None,
    proposals_r_ans: list[float] | None = None,
    experiences_seen: list[str] | None = None,
    usage: Usage | None = None,
    mode: str | None = None,
    started: float | None = None,
) -> Rollout:
    """Score a computed scaffold and package it as a `Rollout` record."""
    rewards = score(
        scaffold,
        computation,
        problem,
        weights,
        judge_score=judgement.verdict.score if judgement.verdict else None,
        proposals_r_ans=proposals_r_ans,
        rel_tol=rel_tol,
    )
    return package(
        agent=agent,
        generator=generator,
        index=index,
        rewards=rewards,
        judgement=judgement,
        answer=computation.answer,
        valid=computation.valid,
        errors=[model_error] if model_error else [str(e) for e in computation.errors],
        scaffold=scaffold,
        provenance=Provenance(
            experiences_seen=experiences_seen or [], usage=usage or Usage(), mode=mode, started=started
        ),
    )


async def judge_text(problem: Problem, text: str, read: ReadAnswer, ctx: Context) -> Judgement:
    """Ask the judge model to grade a free-text solution's reasoning; skipped with `--no-judge` or no text."""
    if not ctx.judge or not text.strip():
        return Judgement()
    user = prompts.TEXT_USER.format(
        question=problem.text,
        text=prompts.tail(text, prompts.JUDGE_TEXT_CHARS),
        answer=str(read.answer) if read.answer else f"none ({read.error})",
    )
    result = await client_for(ctx, "judge").structured(
        LogicVerdict, [SystemMessage(prompts.TEXT_SYSTEM), HumanMessage(user)], temperature=0.0
    )
    return Judgement(verdict=result.value, error=result.error, usage=result.usage)


def make_text_rollout(
    *,
    agent: str,
    generator: int,
    index: int,
    problem: Problem,
    text: str | None,
    read: ReadAnswer,
    judgement: Judgement,
    weights: RewardWeights,
    rel_tol: float,
    provenance: Provenance,
    model_error: str | None = None,
    proposals_r_ans: list[float] | None = None,
) -> Rollout:
    """Score a free-text solution (`rewards.score_text`) and package it, with `solver` and `text`, as a `Rollout`."""
    rewards = score_text(
        read.answer,
        problem,
        weights,
        no_answer=f"no answer: {read.error or 'none read'}",
        judge_score=judgement.verdict.score if judgement.verdict else None,
        proposals_r_ans=proposals_r_ans,
        rel_tol=rel_tol,
    )
    errors = [e for e in (model_error, read.error) if e]
    rollout = package(
        agent=agent,
        generator=generator,
        index=index,
        rewards=rewards,
        judgement=judgement,
        answer=read.answer,
        valid=read.answer is not None,
        errors=errors,
        scaffold=None,
        provenance=provenance,
    )
    rollout["solver"] = "text"
    rollout["text"] = text
    return rollout


async def evaluate(state: RolloutState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Judge the rollout's logic and score it with its generator's weights."""
    ctx = context_of(runtime)
    problem = Problem.model_validate(state["problem"])
    generator = state["generator"]
    provenance = Provenance(
        experiences_seen=state.get("experiences_seen") or [],
        usage=Usage.model_validate(state.get("usage") or {}),
        mode=state.get("mode"),
        started=state.get("started"),
    )
    if "read" in state:
        read = ReadAnswer.model_validate(state["read"])
        text = state.get("text") or ""
        rollout = make_text_rollout(
            agent=f"generator_{generator}",
            generator=generator,
            index=state["index"],
            problem=problem,
            text=state.get("text"),
            read=read,
            judgement=await judge_text(problem, text, read, ctx),
            weights=ctx.profiles[generator].weights,
            rel_tol=ctx.answer_rel_tol,
            provenance=provenance,
            model_error=state.get("model_error"),
        )
        return {"rollouts": [rollout]}
    computation = Computation.model_validate(state["computation"])
    scaffold = Scaffold.model_validate(state["scaffold"]) if state.get("scaffold") else None
    judgement = Judgement()
    if scaffold is not None:
        judgement = await judge_scaffold(problem, scaffold, computation, ctx)
    rollout = make_rollout(
        agent=f"generator_{generator}",
        generator=generator,
        index=state["index"],
        problem=problem,
        scaffold=scaffold,
        computation=computation,
        judgement=judgement,
        weights=ctx.profiles[generator].weights,
        rel_tol=ctx.answer_rel_tol,
        model_error=state.get("model_error"),
        experiences_seen=provenance.experiences_seen,
        usage=provenance.usage,
        mode=provenance.mode,
        started=provenance.started,
    )
    return {"rollouts": [rollout]}
