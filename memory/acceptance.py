"""Acceptance of a batch's bank edits on a minibatch: the trial's durable record, bank snapshots and rollback.

With `Context.accept_minibatch = K`, the driver answers K problems already seen in the run twice on the same
seeds, with the banks before a batch's edits and with them after, and keeps the edits only if the mean
r_total after is not lower than before by more than `accept_margin`. Each batch's trial is one
`AcceptanceRecord` in the store (namespace `ACCEPTANCE`, key `<run>:<epoch>:<batch>`), written before the
batch's first bank edit with a snapshot of every bank, then updated step by step, so a killed process resumes
the trial where it stood: the means already measured are kept, and the decision, once written, is never taken
again. A rollback restores every bank record to its snapshot (content, counters, history; records the batch
added are removed) in one `abatch`, so on SQLite it is whole or absent, and it is idempotent, so a rollback
interrupted before its record says `decided` is simply done again. Id sequences are not rolled back: an id is
never reused.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from causal_grpo.memory.bank import ExperienceBank, _bank_locks
from causal_grpo.memory.schemas import BANKS, namespace
from langgraph.store.base import BaseStore, PutOp
from pydantic import BaseModel, Field, computed_field

from causal_grpo.llm import Usage

ACCEPTANCE = ("causal_grpo", "acceptance")

Status = Literal["before", "after", "deciding", "decided"]


class BatchDecision(BaseModel):
    """A batch's acceptance decision, as result.json, the progress line and the report show it."""

    epoch: int
    batch: int  # 1-based, within the epoch
    k: int
    problems: list[str]  # the trial's problems, in the order drawn
    drawn_from: Literal["seen", "batch"]  # seen problems, or the batch's own when fewer than K were seen
    margin: float
    before_mean: float | None = None
    after_mean: float | None = None
    decision: Literal["keep", "rollback"] | None = None
    reason: str = ""
    usage_before: Usage = Usage()
    usage_after: Usage = Usage()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def usage(self) -> Usage:
        """What the trial cost: both sides."""
        return self.usage_before + self.usage_after

    def line(self) -> str:
        """One progress line."""
        cost = self.usage
        return (
            f"batch {self.epoch}.{self.batch}: edits {'kept' if self.decision == 'keep' else 'rolled back'} "
            f"(mean r_total {self.after_mean:.3f} with them vs {self.before_mean:.3f} without on "
            f"{len(self.problems)} {self.drawn_from} problem(s), margin {self.margin:g}; trial cost "
            f"{cost.calls} calls, {cost.prompt_tokens}+{cost.completion_tokens} tokens)"
        )


class AcceptanceRecord(BatchDecision):
    """The trial's state in the store: the decision so far, and the banks as they were before the batch."""

    run: str
    status: Status = "before"
    snapshot: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)

    def decision_only(self) -> BatchDecision:
        """The public part."""
        return BatchDecision.model_validate(self.model_dump(include=set(BatchDecision.model_fields)))

    def decide(self, before: float, after: float) -> AcceptanceRecord:
        """The record with the decision taken: keep unless the mean fell by more than the margin."""
        keep = after >= before - self.margin
        reason = (
            f"mean r_total {after:.4f} with the edits >= {before:.4f} without - margin {self.margin:g}"
            if keep
            else f"mean r_total {after:.4f} with the edits < {before:.4f} without - margin {self.margin:g}"
        )
        return self.model_copy(
            update={"decision": "keep" if keep else "rollback", "reason": reason, "status": "deciding"}
        )


def record_key(run: str, epoch: int, batch: int) -> str:
    """The store key of one batch's trial."""
    return f"{run}:{epoch}:{batch}"


async def load(store: BaseStore, key: str) -> AcceptanceRecord | None:
    """A batch's trial record, None before the trial starts."""
    item = await store.aget(ACCEPTANCE, key)
    return AcceptanceRecord.model_validate(item.value) if item else None


async def save(store: BaseStore, key: str, record: AcceptanceRecord) -> None:
    """Write a batch's trial record (one put)."""
    await store.aput(ACCEPTANCE, key, record.model_dump(mode="json"), index=False)


async def snapshot_banks(store: BaseStore) -> dict[str, list[dict[str, Any]]]:
    """Every bank's stored records, tombstones included, as they are now."""
    async with _bank_locks(store, BANKS):
        found = await asyncio.gather(*(ExperienceBank(b, store)._values() for b in BANKS))
    return {b: sorted(values, key=lambda v: str(v.get("id"))) for b, values in zip(BANKS, found, strict=True)}


async def restore_banks(store: BaseStore, snapshot: dict[str, list[dict[str, Any]]]) -> int:
    """Put every bank back as the snapshot holds it, in one `abatch`; the number of records written or removed."""
    async with _bank_locks(store, BANKS):
        current = await asyncio.gather(*(ExperienceBank(b, store)._values() for b in BANKS))
        ops: list[PutOp] = []
        for bank, values in zip(BANKS, current, strict=True):
            before = {str(v["id"]): v for v in snapshot.get(bank, [])}
            now = {str(v["id"]): v for v in values}
            ops += [PutOp(namespace(bank), i, v) for i, v in before.items() if now.get(i) != v]
            ops += [PutOp(namespace(bank), i, None) for i in now if i not in before]
        if ops:
            await store.abatch(ops)
        return len(ops)
