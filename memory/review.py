"""Human review of bank updates: what a paused `learn` node asks, the decisions a team takes, how they resume it.

With `Context.review`, the training graph's `learn` node calls LangGraph's `interrupt()` with a
`ReviewRequest` (as JSON) whenever a problem's extractions propose an add, a modify or a delete; `keep`
changes nothing and is never asked about. The thread stays paused at `learn` until it is resumed with
`Command(resume=value)`, where `value` is a `ReviewResume` as JSON (`"approve"`, `"reject"`, or
`{"decisions": {<operation id>: {"decision": "approve" | "reject" | "edit", "content": ...}}}`).

The driver keeps each asked operation as one record in the run's store, namespace `REVIEWS`, key
`<run>|<operation id>`: the proposal when the thread pauses, the decision once `causal-grpo review` takes it
(written before anything resumes, and never overwritten: deciding twice is an error naming the first
decision). An operation id, `<epoch>-<problem id>-<bank prefix>-<operation index>` (`1-physics_003-G1-0`),
follows from the thread's state, so it is the same in every listing and every start of the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from causal_grpo.memory.schemas import PREFIXES, utcnow
from langgraph.store.base import BaseStore, GetOp, PutOp
from pydantic import BaseModel, Field

from causal_grpo.errors import CausalGrpoError

REVIEWS = ("causal_grpo", "review")
KIND = "causal_grpo.review"
REVIEWED_OPS = ("add", "modify", "delete")
PAGE = 10_000
RESUME_HINT = (
    '"approve" | "reject" | {"decisions": {"<operation id>": {"decision": "approve" | "reject" | "edit", '
    '"content": "<new text, for edit>"}}}'
)

Verdict = Literal["approve", "reject", "edit"]


class ReviewError(CausalGrpoError, ValueError):
    """A review decision that cannot be taken (unknown id, decided before, bad edit)."""


class ProposedOp(BaseModel):
    """One bank operation an extractor proposed, with what led to it: the unit a reviewer decides on."""

    id: str = Field(description="The operation's review id, stable across listings and starts.")
    agent: str = Field(description="The bank the extraction belongs to: generator_N or critic.")
    index: int = Field(description="The operation's position in the extractor's list.")
    op: Literal["add", "modify", "delete"]
    experience_id: str | None = Field(default=None, description="The target of modify and delete; None for add.")
    content: str | None = None
    category: str = "problem_solving_strategy"
    problem_type: str = "general"
    scope: str = "agent"
    rewards: list[float] = Field(default_factory=list, description="r_total of the group that led to it.")
    advantage: str = Field(default="", description="The extractor's stated semantic advantage.")


class ReviewRequest(BaseModel):
    """The value of the `learn` node's interrupt: one problem's proposed operations."""

    kind: Literal["causal_grpo.review"] = KIND
    run: str
    epoch: int
    problem_id: str
    operations: list[ProposedOp]
    resume: str = Field(default=RESUME_HINT, description="The shape of the value that resumes the thread.")
    error: str | None = Field(default=None, description="Why the last resume value was refused, when this is a re-ask.")


class Decision(BaseModel):
    """A reviewer's decision on one operation; `content` replaces the proposed text of an edit."""

    decision: Verdict
    content: str | None = None
    at: str | None = None


class ReviewResume(BaseModel):
    """What resumes a paused `learn`: a decision per operation id."""

    decisions: dict[str, Decision]

    @classmethod
    def parse(cls, value: Any, request: ReviewRequest) -> ReviewResume:
        """A resume value (`"approve"`, `"reject"` or the decisions' JSON) checked against the request.

        Raises:
            ReviewError: The value is malformed, or leaves an operation undecided.
        """
        if value in ("approve", "reject"):
            return cls(decisions={op.id: Decision(decision=value) for op in request.operations})
        try:
            resume = cls.model_validate(value)
        except ValueError:
            raise ReviewError(f"a review is resumed with {RESUME_HINT}, not {value!r}") from None
        unknown = sorted(set(resume.decisions) - {op.id for op in request.operations})
        if unknown:
            raise ReviewError(f"no operation {', '.join(unknown)} in this review")
        missing = [op.id for op in request.operations if op.id not in resume.decisions]
        if missing:
            raise ReviewError(f"no decision for {', '.join(missing)}")
        for op in request.operations:
            _check_edit(op, resume.decisions[op.id])
        return resume


class ReviewRecord(BaseModel):
    """One operation as the store keeps it: the proposal, where it came from, and the decision once taken."""

    run: str
    thread_id: str
    epoch: int
    problem_id: str
    operation: ProposedOp
    decision: Decision | None = None


def operation_id(epoch: int, problem_id: str, agent: str, index: int) -> str:
    """`1-physics_003-G1-0`: epoch, problem, bank prefix and the operation's index."""
    return f"{epoch}-{problem_id}-{PREFIXES[agent]}-{index}"


def review_request(run: str, state: Mapping[str, Any]) -> ReviewRequest | None:
    """The operations of a problem's state a reviewer must decide on, or None when there are none."""
    epoch, problem_id = state.get("epoch", 1), state["problem"]["id"]
    operations: list[ProposedOp] = []
    for extraction in sorted(state.get("extractions", []), key=lambda e: e["agent"]):
        agent = extraction["agent"]
        group = state.get("fused", []) if agent == "critic" else state.get("rollouts", [])
        rewards = [
            r["r_total"]
            for r in sorted(group, key=lambda r: (r["generator"], r["index"]))
            if agent == "critic" or r["agent"] == agent
        ]
        for index, op in enumerate(extraction.get("operations") or []):
            if op.get("op") not in REVIEWED_OPS:
                continue
            operations.append(
                ProposedOp(
                    id=operation_id(epoch, problem_id, agent, index),
                    agent=agent,
                    index=index,
                    op=op["op"],
                    experience_id=op.get("id"),
                    content=op.get("content"),
                    category=op.get("category", "problem_solving_strategy"),
                    problem_type=op.get("problem_type", "general"),
                    scope=op.get("scope", "agent"),
                    rewards=rewards,
                    advantage=extraction.get("advantage", ""),
                )
            )
    if not operations:
        return None
    return ReviewRequest(run=run, epoch=epoch, problem_id=problem_id, operations=operations)


def reviewed_extractions(
    extractions: Sequence[Mapping[str, Any]], request: ReviewRequest, resume: ReviewResume
) -> tuple[list[dict[str, Any]], dict[str, set[int]]]:
    """The extractions with edited contents put in, and per agent the indexes of the rejected operations."""
    by_key = {(op.agent, op.index): resume.decisions[op.id] for op in request.operations}
    edited: list[dict[str, Any]] = []
    rejected: dict[str, set[int]] = {}
    for extraction in extractions:
        agent = extraction["agent"]
        operations = []
        for index, op in enumerate(extraction.get("operations") or []):
            decision = by_key.get((agent, index))
            if decision is not None and decision.decision == "edit":
                op = {**op, "content": decision.content}
            elif decision is not None and decision.decision == "reject":
                rejected.setdefault(agent, set()).add(index)
            operations.append(op)
        edited.append({**extraction, "operations": operations})
    return edited, rejected


def deviations(resume: ReviewResume, request: ReviewRequest) -> list[dict[str, Any]]:
    """The decisions that changed a proposal (rejections and edits), as a problem's state and exports keep them."""
    return [
        {"id": op.id, "agent": op.agent, "index": op.index, "op": op.op, **resume.decisions[op.id].model_dump()}
        for op in request.operations
        if resume.decisions[op.id].decision != "approve"
    ]


def _key(run: str, op_id: str) -> str:
    return f"{run}|{op_id}"


def _check_edit(op: ProposedOp, decision: Decision) -> None:
    if decision.decision == "edit" and op.op == "delete":
        raise ReviewError(f"{op.id} is a delete: approve or reject it; only an add or a modify has content to edit")
    if decision.decision == "edit" and not (decision.content or "").strip():
        raise ReviewError(f"an edit of {op.id} needs the new content")


async def save_pending(store: BaseStore, thread_id: str, request: ReviewRequest) -> int:
    """Keep a paused thread's operations in the store (those kept before, decided or not, are left alone)."""
    found = await store.abatch([_get(request.run, op.id) for op in request.operations])
    puts = [
        PutOp(
            REVIEWS,
            _key(request.run, op.id),
            ReviewRecord(
                run=request.run, thread_id=thread_id, epoch=request.epoch, problem_id=request.problem_id, operation=op
            ).model_dump(mode="json"),
            index=False,
        )
        for op, item in zip(request.operations, found, strict=True)
        if item is None
    ]
    if puts:
        await store.abatch(puts)
    return len(request.operations)


def _get(run: str, op_id: str) -> GetOp:
    return GetOp(REVIEWS, _key(run, op_id))


async def records(store: BaseStore, run: str) -> list[ReviewRecord]:
    """Every operation of the run a review asked about, in run order (epoch, problem, bank, index)."""
    found: list[ReviewRecord] = []
    offset = 0
    while True:
        items = await store.asearch(REVIEWS, filter={"run": run}, limit=PAGE, offset=offset)
        found += [ReviewRecord.model_validate(item.value) for item in items]
        if len(items) < PAGE:
            break
        offset += PAGE
    return sorted(found, key=lambda r: (r.epoch, r.problem_id, r.operation.agent, r.operation.index))


async def decide(
    store: BaseStore,
    run: str,
    ids: Iterable[str],
    verdict: Verdict,
    *,
    content: str | None = None,
    now: str | None = None,
) -> list[ReviewRecord]:
    """Record one decision for each of the operations, all or none of them (one write).

    Raises:
        ReviewError: An id is unknown or was decided before (the message names the earlier decision), or an
            edit has no content or targets a delete.
    """
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        raise ReviewError("name at least one operation id")
    known = {r.operation.id: r for r in await records(store, run)}
    at = now or utcnow()
    decided: list[ReviewRecord] = []
    for op_id in wanted:
        record = known.get(op_id)
        if record is None:
            raise ReviewError(f"run {run!r} has no operation {op_id!r} waiting for review")
        if record.decision is not None:
            earlier = record.decision
            text = f" with content {earlier.content!r}" if earlier.decision == "edit" else ""
            raise ReviewError(f"{op_id} was already decided: {earlier.decision}{text} at {earlier.at}")
        decision = Decision(decision=verdict, content=content if verdict == "edit" else None, at=at)
        _check_edit(record.operation, decision)
        decided.append(record.model_copy(update={"decision": decision}))
    await store.abatch(
        [PutOp(REVIEWS, _key(run, r.operation.id), r.model_dump(mode="json"), index=False) for r in decided]
    )
    return decided


async def stored_resume(store: BaseStore, request: ReviewRequest) -> ReviewResume | None:
    """The resume value of a paused thread from its stored decisions; None while one operation is undecided."""
    found = await store.abatch([_get(request.run, op.id) for op in request.operations])
    decisions: dict[str, Decision] = {}
    for op, item in zip(request.operations, found, strict=True):
        record = ReviewRecord.model_validate(item.value) if item is not None else None
        if record is None or record.decision is None:
            return None
        decisions[op.id] = record.decision
    return ReviewResume(decisions=decisions)
