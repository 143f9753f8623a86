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

from causal_grpo.computer import Computation
from causal_grpo.context import Context
from causal_grpo.llm import Usage, client_for
from causal_grpo.problems import Problem
from causal_grpo.rewards import RewardWeights, score
from causal_grpo.scaffold import Scaffold


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
    errors = [model_error] if model_error else [str(e) for e in computation.errors]
    detail: dict[str, Any] = {k: v.model_dump() for k, v in rewards.detail.items()}
    if judgement.verdict:
        detail["judge"] = judgement.verdict.model_dump()
    elif judgement.error:
        detail["judge"] = {"error": judgement.error}
    total_usage = (usage or Usage()) + judgement.usage
    return Rollout(
        agent=agent,
        generator=generator,
        index=index,
        scaffold=scaffold.model_dump(mode="json") if scaffold else None,
        valid=computation.valid,
        answer=str(computation.answer) if computation.answer else None,
        exact=computation.answer.is_exact if computation.answer else None,
        errors=errors,
        r_ans=rewards.r_ans,
        r_logic=rewards.r_logic,
        r_graph=rewards.r_graph,
        r_fusion=rewards.r_fusion,
        r_total=rewards.r_total,
        correct=rewards.r_ans >= 1.0,
        rewards_detail=detail,
        experiences_seen=experiences_seen or [],
        usage=total_usage.model_dump(),
        mode=mode,
        seconds=round(time.time() - started, 3) if started else 0.0,
    )


async def evaluate(state: RolloutState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Judge the rollout's logic and score it with its generator's weights."""
    ctx = context_of(runtime)
    problem = Problem.model_validate(state["problem"])
    generator = state["generator"]
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
        experiences_seen=state.get("experiences_seen"),
        usage=Usage.model_validate(state.get("usage") or {}),
        mode=state.get("mode"),
        started=state.get("started"),
    )
    return {"rollouts": [rollout]}
