"""What a finished problem teaches the banks: the extractor's operations and the experience counters.

Every write is keyed by the run, epoch, problem and agent (and rollout, for counters), so applying
a problem's learning twice, as a resumed thread may, changes nothing the second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Set
from contextvars import ContextVar
from typing import Any

from causal_grpo.agents.extractor.schemas import ExperienceOp
from causal_grpo.memory.bank import BankError, BankUpdate, RolloutUse, apply_updates, record_usages
from causal_grpo.memory.ops import ApplyResult
from langgraph.store.base import BaseStore

Learned = tuple[list[ApplyResult], list[list[str]]]


class LearningBatch:
    """A batch's bank updates applied together, in batch order, as if one problem at a time.

    Each problem's `learn` node hands in its updates and counters and waits. Once every problem of the batch
    has handed in or ended without (finished before, or failed), one `apply_updates` plans them all in rank
    order, each plan seeing the edits of those before it, and one `record_usages` counts the uses: 5 store
    round trips for the batch instead of 5 a problem, and the problems' checkpoints are read and written side
    by side. A problem that failed before handing in stops the batch there, as one at a time would: the
    problems before it are applied, those after it are not and fail with a `BankError`.
    """

    def __init__(self, store: BaseStore, ranks: Iterable[int]) -> None:
        self.store = store
        self.open = set(ranks)
        self.handed: dict[int, tuple[list[BankUpdate], list[RolloutUse], asyncio.Future[Learned]]] = {}
        self.failed: set[int] = set()
        self._flush: asyncio.Task[None] | None = None

    def hand_in(self, rank: int, updates: list[BankUpdate], usages: list[RolloutUse]) -> asyncio.Future[Learned]:
        """A problem's updates and counters; the future holds what applying them did."""
        if rank not in self.open:
            raise BankError(f"problem {rank} of the batch handed in its bank update twice or out of turn")
        future = asyncio.get_running_loop().create_future()
        self.handed[rank] = (updates, usages, future)
        self._close(rank)
        return future

    def ended(self, rank: int, failed: bool) -> None:
        """A problem's run ended; one that failed without handing in stops the batch at its rank."""
        if rank in self.open:
            if failed:
                self.failed.add(rank)
            self._close(rank)

    def _close(self, rank: int) -> None:
        self.open.discard(rank)
        if not self.open and self._flush is None:
            self._flush = asyncio.ensure_future(self._apply())

    async def _apply(self) -> None:
        cut = min(self.failed, default=None)
        ranks = sorted(r for r in self.handed if cut is None or r < cut)
        for rank in sorted(set(self.handed) - set(ranks)):
            self.handed[rank][2].set_exception(
                BankError(f"not applied: the bank update of problem {cut} of the batch, before it, failed")
            )
        futures = [self.handed[r][2] for r in ranks]
        try:
            results = await apply_updates(self.store, [u for r in ranks for u in self.handed[r][0]])
            counted = await record_usages(self.store, [u for r in ranks for u in self.handed[r][1]])
        except BaseException as exc:  # every waiting node fails with it; their journals make a rerun exact
            for future in futures:
                future.set_exception(exc)
            return
        for rank, future in zip(ranks, futures, strict=True):
            updates, usages, _ = self.handed[rank]
            future.set_result((results[: len(updates)], counted[: len(usages)]))
            results, counted = results[len(updates) :], counted[len(usages) :]


learning_turn: ContextVar[tuple[LearningBatch, int] | None] = ContextVar("learning_turn", default=None)
"""The batch a `learn` node hands its update to, and its rank there (set by the driver for each problem)."""


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
    updates = [
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
    ]
    usages = [
        RolloutUse(r["agent"], r["experiences_seen"], r["correct"], f"{key}:{r['agent']}:{r['generator']}:{r['index']}")
        for r in rollouts
        if r["experiences_seen"]
    ]
    turn = learning_turn.get()
    if turn is not None and turn[0].store is store:
        results, counted = await turn[0].hand_in(turn[1], updates, usages)
    else:
        results, counted = await apply_updates(store, updates), await record_usages(store, usages)
    learned: dict[str, Any] = {
        e["agent"]: result.model_dump(mode="json") for e, result in zip(proposing, results, strict=True)
    }
    learned["usage_counted"] = sum(len(ids) for ids in counted)
    return learned
