"""What a finished problem teaches the banks: the extractor's operations and the experience counters.

Every write is keyed by the run, epoch, problem and agent (and rollout, for counters), so applying
a problem's learning twice, as a resumed thread may, changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from causal_grpo.agents.extractor.schemas import ExperienceOp
from causal_grpo.memory.bank import BankUpdate, RolloutUse, apply_updates, record_usages
from langgraph.store.base import BaseStore


async def apply_learning(
    store: BaseStore,
    *,
    run: str,
    epoch: int,
    problem: dict[str, Any],
    extractions: list[dict[str, Any]],
    rollouts: list[dict[str, Any]],
    rejected: Mapping[str, Set[int]] | None = None,
) -> dict[str, Any]:
    """Apply the extractions' operations (together, as if agent by agent in name order), then count the uses.

    `rejected` names, per agent, the operations a reviewer rejected: they go into the journal as rejected and
    are never applied.
    """
    key = f"{run}:{epoch}:{problem['id']}"
    proposing = sorted((e for e in extractions if e["operations"]), key=lambda e: e["agent"])
    results = await apply_updates(
        store,
        [
            BankUpdate(
                agent=e["agent"],
                ops=[ExperienceOp.model_validate(op) for op in e["operations"]],
                op_key=f"{key}:{e['agent']}",
                run=run,
                problem_id=problem["id"],
                problem_text=problem["text"],
                answer=problem["answer"],
                unit=problem.get("unit"),
                rejected=frozenset((rejected or {}).get(e["agent"], ())),
            )
            for e in proposing
        ],
    )
    learned: dict[str, Any] = {
        e["agent"]: result.model_dump(mode="json") for e, result in zip(proposing, results, strict=True)
    }
    usages = [
        RolloutUse(r["agent"], r["experiences_seen"], r["correct"], f"{key}:{r['agent']}:{r['generator']}:{r['index']}")
        for r in rollouts
        if r["experiences_seen"]
    ]
    counted = sum(len(ids) for ids in await record_usages(store, usages))
    learned["usage_counted"] = counted
    return learned
