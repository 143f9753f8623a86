"""The run driver: many problems through the training graph, in batches, resumable, with exports.

A batch's problems run concurrently up to the `learn` node, reading the banks as they were when
the batch started; then their bank updates are applied in dataset order, as if one problem at a time.
That barrier makes a run reproducible for a given simulator seed whatever the timing, and it is
the same order a fleet of workers applies (issue 7). Every problem is its own thread
(`<run>:<epoch>:<problem id>`): a finished thread (one that reached its end: no task pending) is
reported without a model call, an interrupted one resumes from its last checkpoint.

"Finished" is never "has no next node": a thread killed right after its input checkpoint and its
`__start__` task's writes were saved has `StateSnapshot.next == ()` (LangGraph leaves out tasks that
already have writes) and still has every node to run (`thread_phase`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from causal_grpo.graphs.training import build_training_graph, build_trial_graph
from causal_grpo.memory.acceptance import (
    AcceptanceRecord,
    BatchDecision,
    load,
    record_key,
    restore_banks,
    save,
    snapshot_banks,
)
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.learning import LearningBatch, learning_turn
from causal_grpo.memory.results import ProblemRecord, Results, RolloutRecord, open_results
from causal_grpo.memory.review import ReviewRequest, save_pending, stored_resume
from causal_grpo.memory.schemas import BANKS, Experience
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore, GetOp, PutOp
from langgraph.types import Command, Interrupt, StateSnapshot
from pydantic import BaseModel, Field

from causal_grpo.context import Context
from causal_grpo.errors import CausalGrpoError
from causal_grpo.exports import Exporter
from causal_grpo.limiter import problem_rank
from causal_grpo.llm import ModelAccessError, Usage, close_clients, fault_counts, fault_delta
from causal_grpo.model_process import model_process
from causal_grpo.problems import Problem
from causal_grpo.scaffold import units

# Per thread id: the bank sizes after the problem's batch, as the run first saw them.
BANK_SIZES = ("causal_grpo", "bank_sizes")


class StageError(CausalGrpoError):
    """The critic stage was asked to fuse rollouts that were never stored."""


Phase = Literal["new", "finished", "learn", "running"]


def thread_phase(snapshot: StateSnapshot) -> Phase:
    """Where a problem's thread stands: never started, finished (reached its end), stopped at `learn`, or mid-way.

    A thread is finished only when it has a checkpoint and no task is pending. `snapshot.next` cannot tell:
    it leaves out tasks whose writes were saved, so a thread killed right after its `__start__` task's writes
    (or after every task of a step wrote, before the step's checkpoint) has no next node but work to do.
    """
    if snapshot.created_at is None and not snapshot.values:
        return "new"
    names = {task.name for task in snapshot.tasks}
    if not names:
        return "finished"
    return "learn" if names == {"learn"} else "running"


def usage_of_state(state: Mapping[str, Any]) -> Usage:
    """The model usage recorded in a (partial) problem state: its rollouts, fused results and extractions."""
    usage = Usage()
    for r in [*(state.get("rollouts") or []), *(state.get("fused") or [])]:
        usage = usage + Usage.model_validate(r.get("usage") or {})
    for e in state.get("extractions") or []:
        usage = usage + Usage.model_validate(e.get("usage") or {})
    return usage


def recorded_usage(snapshot: StateSnapshot) -> Usage:
    """Usage a thread holds so far: its state's, plus that of tasks whose writes were saved but not yet applied."""
    usage = usage_of_state(snapshot.values or {})
    for task in snapshot.tasks:
        if isinstance(task.result, Mapping):
            usage = usage + usage_of_state(task.result)
    return usage


def usage_minus(a: Usage, b: Usage) -> Usage:
    """`a - b`, field by field."""
    return Usage(
        prompt_tokens=a.prompt_tokens - b.prompt_tokens,
        completion_tokens=a.completion_tokens - b.completion_tokens,
        calls=a.calls - b.calls,
    )


class ProblemOutcome(BaseModel):
    """How one problem of one epoch ended."""

    id: str
    epoch: int
    dataset: str
    status: str  # "done" (finished by this start), "earlier" (finished by an earlier start), "failed",
    # "review" (paused at its bank update until its operations are reviewed)
    final_answer: str | None = None
    final_correct: bool = False
    accuracy: dict[str, float] = Field(default_factory=dict)  # per agent: share of correct rollouts
    rollouts: list[dict[str, Any]] = Field(
        default_factory=list
    )  # verdicts for progress: agent, index, correct, r_total
    usage: Usage = Usage()  # recorded in the problem's thread, over every start of the run
    usage_this_start: Usage = Usage()  # the share of `usage` this start recorded (zero when finished earlier)
    rescues: int = 0  # fused right where most of its proposals were wrong
    losses: int = 0  # fused wrong where one of its proposals was right
    error: str | None = None
    bank_sizes: dict[str, int] = Field(default_factory=dict)  # live experiences after the problem's batch
    pending_review: int = 0  # operations waiting for a decision (status "review")


class TrainingResult(BaseModel):
    """What a training run did; `to_dict()` is what the CLI writes."""

    run: str
    model: str
    run_dir: str | None = None
    problems: list[ProblemOutcome] = Field(default_factory=list)
    usage: Usage = Usage()  # every finished problem's, over every start of the run
    usage_this_start: Usage = Usage()  # the share of `usage` this start recorded
    bank_sizes: dict[str, int] = Field(default_factory=dict)
    faults: dict[str, Any] = Field(default_factory=dict)  # this start's, as `llm.fault_counts` counts them
    seconds: float = 0.0
    pending_review: int = 0  # operations waiting for review; the run stopped after the batch that has them
    acceptance: list[BatchDecision] = Field(default_factory=list)  # per batch, with --accept-updates

    @property
    def accuracy(self) -> float:
        """Share of problems whose final answer was right."""
        done = [p for p in self.problems if p.status not in ("failed", "review")]
        return sum(p.final_correct for p in done) / len(done) if done else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {**self.model_dump(mode="json"), "accuracy": self.accuracy}


def record_results(db: Results, run: str, finished: list[tuple[ProblemOutcome, dict[str, Any]]]) -> None:
    """Upsert finished problems' rows, one write per table; a critic row's `rollout` is the generator it fused."""
    db.record_rollouts(
        RolloutRecord(
            run=run,
            epoch=outcome.epoch,
            problem_id=state["problem"]["id"],
            agent=r["agent"],
            rollout=r["generator"] if r["agent"] == "critic" else r["index"],
            valid=r["valid"],
            answer=r["answer"],
            exact=r.get("exact"),
            r_ans=r["r_ans"],
            r_logic=r["r_logic"],
            r_graph=r["r_graph"],
            r_fusion=r["r_fusion"],
            r_total=r["r_total"],
            experiences_seen=r["experiences_seen"],
            errors=r["errors"],
            scaffold=r["scaffold"],
            solver=r.get("solver", "scaffold"),
            text=r.get("text"),
            prompt_tokens=r["usage"].get("prompt_tokens", 0),
            completion_tokens=r["usage"].get("completion_tokens", 0),
        )
        for outcome, state in finished
        for r in [*state.get("rollouts", []), *state.get("fused", [])]
    )
    db.record_problems(
        ProblemRecord(
            run=run,
            epoch=outcome.epoch,
            problem_id=state["problem"]["id"],
            dataset=outcome.dataset,
            status="done" if outcome.status == "earlier" else outcome.status,
            group_accuracy=outcome.accuracy,
            final_answer=outcome.final_answer,
            correct=outcome.final_correct,
            tokens=outcome.usage.prompt_tokens + outcome.usage.completion_tokens,
        )
        for outcome, state in finished
    )


def thread_id(run: str, epoch: int, problem_id: str, stage: str = "all") -> str:
    """One thread per (run, epoch, problem); the critic stage runs on a thread of its own."""
    return f"{run}:{epoch}:{problem_id}" + (":critic" if stage == "critic" else "")


def outcome_of(state: dict[str, Any], epoch: int, status: str) -> ProblemOutcome:
    """Summarise a finished problem's state."""
    problem = state["problem"]
    everything = [*state.get("rollouts", []), *state.get("fused", [])]
    accuracy: dict[str, list[bool]] = {}
    for r in everything:
        accuracy.setdefault(r["agent"], []).append(r["correct"])
    rescues = losses = 0
    for fused in state.get("fused", []):
        proposals = [r["correct"] for r in state.get("rollouts", []) if r["generator"] == fused["generator"]]
        rescues += fused["correct"] and sum(proposals) * 2 < len(proposals)
        losses += not fused["correct"] and any(proposals)
    return ProblemOutcome(
        id=problem["id"],
        epoch=epoch,
        dataset=problem["dataset"],
        status=status,
        final_answer=state.get("final_answer"),
        final_correct=state.get("final_correct", False),
        accuracy={a: sum(v) / len(v) for a, v in sorted(accuracy.items())},
        rollouts=[
            {"agent": r["agent"], "index": r["index"], "correct": r["correct"], "r_total": r["r_total"]}
            for r in everything
        ],
        usage=usage_of_state(state),
        rescues=rescues,
        losses=losses,
    )


class Driver:
    """Runs problems through one compiled training graph with an injected store and checkpointer."""

    def __init__(
        self,
        context: Context,
        *,
        store: BaseStore,
        checkpointer: BaseCheckpointSaver,
        run_dir: Path | None = None,
        on_problem: Callable[[ProblemOutcome], None] | None = None,
        results: str | Path | None = None,
        on_batch: Callable[[BatchDecision], None] | None = None,
    ) -> None:
        """`results` is where the result rows go (a PostgreSQL URL or a file); default `<run_dir>/results.db`.

        `on_batch` hears each batch's acceptance decision (with `Context.accept_minibatch`).
        """
        self.context = context
        self.store = store
        self.run_dir = run_dir
        self.on_problem = on_problem or (lambda _: None)
        self.on_batch = on_batch or (lambda _: None)
        self.graph = build_training_graph().compile(checkpointer=checkpointer, store=store)
        self.trial = build_trial_graph().compile(checkpointer=checkpointer, store=store)
        target = results or (run_dir / "results.db" if run_dir is not None else None)
        self.results = open_results(target) if target is not None else None
        self.exporter = Exporter(run_dir) if run_dir is not None else None

    def _config(self, epoch: int, problem: Problem, stage: str | None = None) -> dict[str, Any]:
        tid = thread_id(self.context.run, epoch, problem.id, stage or self.context.stage)
        return {"configurable": {"thread_id": tid}}

    async def _first_input(self, epoch: int, problem: Problem) -> dict[str, Any]:
        """A new thread's input; the critic stage takes the rollouts its generators stage stored."""
        payload: dict[str, Any] = {"problem": problem.model_dump(mode="json"), "epoch": epoch}
        if self.context.stage == "critic":
            stored = await self.graph.aget_state(self._config(epoch, problem, "generators"))
            if thread_phase(stored) != "finished":
                raise StageError(f"{problem.id}: no finished generators stage in run {self.context.run!r} to fuse")
            payload["rollouts"] = stored.values["rollouts"]
        return payload

    async def until_learn(self, epoch: int, problem: Problem, rank: int = 0) -> str:
        """Run a problem up to its bank update; 'finished' if it was done before, else 'ready'."""
        problem_rank.set(rank)  # this task's model calls queue behind the batch's earlier problems
        config = self._config(epoch, problem)
        phase = thread_phase(await self.graph.aget_state(config))
        if phase == "finished":
            return "finished"
        if phase == "learn":
            return "ready"
        payload = await self._first_input(epoch, problem) if phase == "new" else None
        await self.graph.ainvoke(payload, config, context=self.context, interrupt_before=["learn"])
        return "ready"

    async def until_learn_batch(self, epoch: int, batch: list[Problem]) -> list[str | BaseException]:
        """Run a batch's problems side by side up to their bank updates; a problem's exception is its phase."""
        return await asyncio.gather(
            *(self.until_learn(epoch, p, rank) for rank, p in enumerate(batch)), return_exceptions=True
        )

    async def learn(self, epoch: int, problem: Problem) -> dict[str, Any]:
        """Apply a problem's bank update (if not applied yet) and return its finished state.

        Under review, a thread paused at its interrupt is resumed with `Command(resume=...)` once every one of
        its operations has a stored decision; a thread that pauses (or stays paused) returns its state with the
        pending interrupts under `__interrupt__`, its operations kept in the store for `causal-grpo review`.
        """
        # Resuming a thread stopped before `learn` runs it; resuming a finished one runs nothing and writes no
        # checkpoint. Either way the result is the graph's output, which holds all the exports and rows read.
        config = self._config(epoch, problem)
        command: Command | None = None
        if self.context.review:
            snapshot = await self.graph.aget_state(config)
            if snapshot.interrupts:
                request = await self._keep_review(config, snapshot.interrupts)
                resume = await stored_resume(self.store, request)
                if resume is None:
                    return {**snapshot.values, "__interrupt__": list(snapshot.interrupts)}
                command = Command(resume=resume.model_dump(mode="json"))
        state = await self.graph.ainvoke(command, config, context=self.context)
        if state.get("__interrupt__"):
            await self._keep_review(config, state["__interrupt__"])
        return state

    async def _keep_review(self, config: dict[str, Any], interrupts: Sequence[Interrupt]) -> ReviewRequest:
        """Keep a paused thread's proposed operations in the store (once) and return its request."""
        request = ReviewRequest.model_validate(interrupts[0].value)
        await save_pending(self.store, config["configurable"]["thread_id"], request)
        return request

    async def learn_batch(self, epoch: int, problems: list[Problem]) -> list[dict[str, Any]]:
        """Apply the bank updates of a batch's problems in the order given (dataset order), as if one at a time.

        Their threads run side by side and their `learn` nodes hand the updates to one `LearningBatch`, which
        applies them together in that order; the first failure is raised. Under review, where a problem may
        pause at its update, they run one at a time.
        """
        if self.context.review:
            return [await self.learn(epoch, problem) for problem in problems]
        batch = LearningBatch(self.store, range(len(problems)))

        async def one(rank: int, problem: Problem) -> dict[str, Any]:
            learning_turn.set((batch, rank))  # this task's own context: its graph's nodes see it
            failed = True
            try:
                state = await self.learn(epoch, problem)
                failed = False
                return state
            finally:
                batch.ended(rank, failed)

        states = await asyncio.gather(*(one(r, p) for r, p in enumerate(problems)), return_exceptions=True)
        for state in states:
            if isinstance(state, BaseException):
                raise state
        return states  # type: ignore[return-value]

    async def bank_sizes(self) -> dict[str, int]:
        """Live experiences per bank."""
        return {b: len(records) for b, records in (await self._banks()).items()}

    async def _banks(self) -> dict[str, list[Experience]]:
        return dict(
            zip(BANKS, await asyncio.gather(*(ExperienceBank(b, self.store).list() for b in BANKS)), strict=True)
        )

    async def run(self, problems: list[Problem], *, epochs: int = 1, batch_size: int = 4) -> TrainingResult:
        """Train over the problems for some epochs; the banks carry over from epoch to epoch."""
        started = time.monotonic()
        faults_before = fault_counts(self.context.run)
        result = TrainingResult(run=self.context.run, model=self.context.model, run_dir=str(self.run_dir or ""))
        # the model process starts (about 2 s, its imports) while the run sets up, not behind the first call
        setup = [asyncio.to_thread(model_process().start)]
        if any(p.unit for p in problems):
            # pint's registries take 0.5 s of CPU to build: at start-up, not in the judge of the first physics
            # problem, where they froze the event loop with every call in flight waiting on it
            setup.append(asyncio.to_thread(units.registry))
        await asyncio.gather(*setup)
        try:
            await self._epochs(problems, result, epochs=epochs, batch_size=batch_size)
        finally:
            if self.results is not None:
                self.results.close()
            await close_clients()
        result.bank_sizes = await self.bank_sizes()
        result.faults = fault_delta(fault_counts(self.context.run), faults_before)
        result.seconds = round(time.monotonic() - started, 3)
        return result

    async def _epochs(self, problems: list[Problem], result: TrainingResult, *, epochs: int, batch_size: int) -> None:
        for epoch in range(1, epochs + 1):
            for start in range(0, len(problems), batch_size):
                batch = problems[start : start + batch_size]
                before = await self._recorded(epoch, batch)
                trial = None
                if self.context.accept_minibatch:
                    seen = problems if epoch > 1 else problems[:start]
                    trial = await self._trial_before(epoch, start // batch_size + 1, batch, seen, problems)
                phases = await self.until_learn_batch(epoch, batch)
                finished = await self._finish(epoch, batch, phases)
                result.pending_review += sum(o.pending_review for o, _ in finished)
                if result.pending_review:
                    # the batch is written once whole (its lines in batch order, its bank sizes as it left them)
                    for (outcome, _), had in zip(finished, before, strict=True):
                        self._report(result, outcome, had)
                    return
                decision = None
                if trial is not None:
                    decision = await self._trial_after(trial, problems)
                    result.acceptance.append(decision)
                banks = await self._banks()
                if self.exporter is not None or self.results is not None:
                    done = [(o, s) for o, s in finished if s is not None]
                    await asyncio.to_thread(self._write, epoch, done, banks)
                sizes = await self._batch_sizes(epoch, [o for o, _ in finished], banks)
                for (outcome, _), had in zip(finished, before, strict=True):
                    outcome.bank_sizes = sizes.get(outcome.id, {})
                    self._report(result, outcome, had)
                if decision is not None:  # the decision follows the lines of the batch it judged
                    self.on_batch(decision)

    async def _trial_before(
        self, epoch: int, batch: int, problems: list[Problem], seen: list[Problem], everything: list[Problem]
    ) -> AcceptanceRecord | None:
        """Start (or find) a batch's trial: draw its problems, snapshot the banks, answer with them as they are.

        None for a batch with no trial that some problem already passed `learn` in (a start without acceptance
        applied its edits): there is no snapshot from before them to compare with or roll back to.
        """
        key = record_key(self.context.run, epoch, batch)
        record = await load(self.store, key)
        if record is None:
            snapshots = await asyncio.gather(*(self.graph.aget_state(self._config(epoch, p)) for p in problems))
            if any(thread_phase(s) == "finished" for s in snapshots):
                return None
            k = self.context.accept_minibatch or 1
            unique = list({p.id: p for p in seen}.values())
            pool, drawn = (unique, "seen") if len(unique) >= k else (problems, "batch")
            chosen = random.Random(f"{self.context.seed}:{epoch}:{batch}").sample(pool, min(k, len(pool)))
            record = AcceptanceRecord(
                run=self.context.run,
                epoch=epoch,
                batch=batch,
                k=k,
                problems=[p.id for p in chosen],
                drawn_from=drawn,
                margin=self.context.accept_margin,
                snapshot=await snapshot_banks(self.store),
            )
            await save(self.store, key, record)  # before the batch's first bank edit
        if record.before_mean is None:
            mean, usage = await self._answer(record, "before", everything)
            record = record.model_copy(update={"before_mean": mean, "usage_before": usage, "status": "after"})
            await save(self.store, key, record)
        return record

    async def _trial_after(self, record: AcceptanceRecord, everything: list[Problem]) -> BatchDecision:
        """Answer the trial with the batch's edits, decide once, and roll the edits back if they did worse."""
        key = record_key(self.context.run, record.epoch, record.batch)
        if record.status in ("before", "after"):
            mean, usage = await self._answer(record, "after", everything)
            record = record.model_copy(update={"after_mean": mean, "usage_after": usage})
            record = record.decide(record.before_mean or 0.0, mean)
            await save(self.store, key, record)  # the decision, before anything is rolled back
        if record.status == "deciding":
            if record.decision == "rollback":
                await restore_banks(self.store, record.snapshot)  # one abatch, idempotent
            record = record.model_copy(update={"status": "decided"})
            await save(self.store, key, record)
        return record.decision_only()

    async def _answer(self, record: AcceptanceRecord, side: str, everything: list[Problem]) -> tuple[float, Usage]:
        """The trial's problems answered with the banks as they are: mean r_total over rollouts and fusions."""
        by_id = {p.id: p for p in everything}
        context = self.context.model_copy(update={"stage": "all", "review": False})

        async def one(problem: Problem, rank: int) -> dict[str, Any]:
            problem_rank.set(rank)
            tid = f"{self.context.run}:{record.epoch}:accept:{record.batch}:{side}:{problem.id}"
            config = {"configurable": {"thread_id": tid}}
            snapshot = await self.trial.aget_state(config)
            phase = thread_phase(snapshot)
            if phase == "finished":
                return dict(snapshot.values)
            payload = {"problem": problem.model_dump(mode="json"), "epoch": record.epoch} if phase == "new" else None
            return await self.trial.ainvoke(payload, config, context=context)

        states = await asyncio.gather(*(one(by_id[i], rank) for rank, i in enumerate(record.problems)))
        totals = [r["r_total"] for s in states for r in [*s.get("rollouts", []), *s.get("fused", [])]]
        usage = Usage()
        for state in states:
            usage = usage + usage_of_state(state)
        return (sum(totals) / len(totals) if totals else 0.0), usage

    def _report(self, result: TrainingResult, outcome: ProblemOutcome, had: Usage) -> None:
        """Count a problem's usage into the run's and announce it."""
        if outcome.status in ("done", "review"):
            outcome.usage_this_start = usage_minus(outcome.usage, had)
        if outcome.status in ("done", "earlier"):
            result.usage = result.usage + outcome.usage
        if outcome.status != "failed":
            result.usage_this_start = result.usage_this_start + outcome.usage_this_start
        result.problems.append(outcome)
        self.on_problem(outcome)

    async def _recorded(self, epoch: int, batch: list[Problem]) -> list[Usage]:
        """The usage each problem's thread held before this start worked on it (so this start's share is known)."""
        snapshots = await asyncio.gather(*(self.graph.aget_state(self._config(epoch, p)) for p in batch))
        return [recorded_usage(s) for s in snapshots]

    async def _batch_sizes(
        self, epoch: int, outcomes: list[ProblemOutcome], banks: dict[str, list[Experience]]
    ) -> dict[str, dict[str, int]]:
        """Per problem: the bank sizes after its batch, as first seen after the batch and kept in the store.

        A start that finds a problem finished earlier reports the sizes kept then, not today's banks. They are
        kept before the next batch starts, so a kill in between leaves the banks still as the batch left them.
        """
        now = {b: len(records) for b, records in banks.items()}
        keys = [thread_id(self.context.run, epoch, o.id, self.context.stage) for o in outcomes]
        kept = await self.store.abatch([GetOp(BANK_SIZES, key) for key in keys])
        sizes: dict[str, dict[str, int]] = {}
        missing: list[PutOp] = []
        for outcome, key, item in zip(outcomes, keys, kept, strict=True):
            if outcome.status == "failed":
                continue
            if item is None:
                missing.append(PutOp(BANK_SIZES, key, dict(now), index=False))
            sizes[outcome.id] = dict(item.value) if item is not None else dict(now)
        if missing:
            await self.store.abatch(missing)
        return sizes

    async def _finish(
        self, epoch: int, batch: list[Problem], phases: list[str | BaseException]
    ) -> list[tuple[ProblemOutcome, dict[str, Any] | None]]:
        """Apply the bank updates of a batch's ready problems in batch order; a problem's failure is recorded."""
        for phase in phases:
            if isinstance(phase, ModelAccessError) or (
                isinstance(phase, BaseException) and not isinstance(phase, Exception)
            ):
                raise phase
        ready = [p for p, phase in zip(batch, phases, strict=True) if isinstance(phase, str)]
        states = iter(await self.learn_batch(epoch, ready))
        finished: list[tuple[ProblemOutcome, dict[str, Any] | None]] = []
        for problem, phase in zip(batch, phases, strict=True):
            if isinstance(phase, str):
                state = next(states)
                if state.get("__interrupt__"):
                    paused = outcome_of(state, epoch, "review")
                    paused.pending_review = len(
                        ReviewRequest.model_validate(state["__interrupt__"][0].value).operations
                    )
                    finished.append((paused, None))
                    continue
                finished.append((outcome_of(state, epoch, "earlier" if phase == "finished" else "done"), state))
            else:
                error = _one_line(phase)
                failed = ProblemOutcome(
                    id=problem.id, epoch=epoch, dataset=problem.dataset, status="failed", error=error
                )
                finished.append((failed, None))
        return finished

    def _write(
        self,
        epoch: int,
        finished: list[tuple[ProblemOutcome, dict[str, Any]]],
        banks: dict[str, list[Experience]],
    ) -> None:
        """A batch's exports (problems and banks) and result rows; blocking, so run in a worker thread."""
        if self.exporter is not None:
            self.exporter.problems([s for _, s in finished], epoch, self.context.stage)
            for bank, records in banks.items():
                self.exporter.bank(bank, [e.to_spec() for e in records])
        if self.results is not None and finished:
            record_results(self.results, self.context.run, finished)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
