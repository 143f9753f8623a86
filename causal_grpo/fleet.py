"""Scale-out: a run's problems and bank updates as procrastinate jobs in PostgreSQL, run by any number of workers.

The driver (`fleet_train`, behind `causal-grpo train --db postgresql://... --fleet`) is the single-process
`Driver` with its two steps turned into jobs, so batches, their barrier and the order of bank updates are
the same: a batch's problems are queued as `run_problem` jobs (queueing lock `problem:<thread id>`, so a
problem is never queued twice) that run each problem's thread up to `learn`; once all have stopped there,
their `learn` jobs are queued one at a time in dataset order. Every `learn` job holds the lock `BANKS_LOCK`
(the banks are shared by every run in a database, and one update may touch the shared bank and an agent's),
so one bank writer runs at a time across every machine, and the journal of `ExperienceBank.apply` keeps a
retried update from applying twice. A job runs on the problem's own thread id, so a retried job resumes
from its last checkpoint.

Workers (`causal-grpo worker`) send a heartbeat every `HEARTBEAT` seconds; the driver puts the jobs of a
worker silent for `STALLED_AFTER` seconds (e.g. killed with `kill -9`) back in the queue. A job carries
the run's `Context` (model, endpoint, profiles), never a key: each worker reads its own from its environment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from procrastinate import App, Blueprint, JobContext, PsycopgConnector, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager

from causal_grpo.context import Context
from causal_grpo.errors import CausalGrpoError
from causal_grpo.graphs.driver import Driver, ProblemOutcome, TrainingResult, thread_id
from causal_grpo.memory.backends import Backends, open_backends, pool_size_for
from causal_grpo.problems import Problem

QUEUE = "causal_grpo"
BANKS_LOCK = "causal_grpo:banks"
HEARTBEAT = 2.0
STALLED_AFTER = 10.0
POLL = 0.2
RETRY = RetryStrategy(max_attempts=3, wait=1)
_SCHEMA_LOCK = 0x63677271  # advisory lock key around creating procrastinate's tables

blueprint = Blueprint()


class FleetJobError(CausalGrpoError):
    """A job of the run failed on every attempt."""


def _worker_driver(job: JobContext, context: dict[str, Any]) -> Driver:
    backends: Backends = job.additional_context["backends"]
    return Driver(Context.model_validate(context), store=backends.store, checkpointer=backends.checkpointer)


@blueprint.task(name="run_problem", queue=QUEUE, pass_context=True, retry=RETRY)
async def run_problem(job: JobContext, context: dict[str, Any], epoch: int, problem: dict[str, Any]) -> None:
    """Run a problem's thread up to its bank update (or nowhere, if it is there already)."""
    await _worker_driver(job, context)._until_learn(epoch, Problem.model_validate(problem))


@blueprint.task(name="learn", queue=QUEUE, pass_context=True, retry=RETRY)
async def learn(job: JobContext, context: dict[str, Any], epoch: int, problem: dict[str, Any]) -> None:
    """Apply a problem's bank update and finish its thread."""
    await _worker_driver(job, context)._learn(epoch, Problem.model_validate(problem))


async def _ensure_schema(url: str) -> None:
    """Create procrastinate's tables once per database, one process at a time."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        found = await (await conn.execute("SELECT to_regclass('procrastinate_jobs')")).fetchone()
        if found is None or found[0] is None:
            await conn.execute(SchemaManager.get_schema())


@asynccontextmanager
async def open_app(url: str) -> AsyncIterator[App]:
    """The job queue in the database at `url`, its tables created on first use."""
    await _ensure_schema(url)
    app = App(connector=PsycopgConnector(conninfo=url, min_size=1, max_size=4))
    app.add_tasks_from(blueprint, namespace="causal_grpo")
    async with app.open_async():
        yield app


def _worker_options(backends: Backends, concurrency: int) -> dict[str, Any]:
    return {
        "queues": [QUEUE],
        "concurrency": concurrency,
        "additional_context": {"backends": backends},
        "update_heartbeat_interval": HEARTBEAT,
        "stalled_worker_timeout": STALLED_AFTER,
        "fetch_job_polling_interval": 1.0,
    }


async def run_worker(url: str, *, concurrency: int = 8) -> None:
    """Work on the queue at `url` until stopped (SIGINT/SIGTERM): `causal-grpo worker`."""
    async with open_backends(url, pool_size=pool_size_for(concurrency)) as backends, open_app(url) as app:
        await app.run_worker_async(**_worker_options(backends, concurrency))


class FleetDriver(Driver):
    """The driver whose problems and bank updates run as jobs on the queue, by whichever worker takes them."""

    def __init__(self, context: Context, *, app: App, backends: Backends, **kwargs: Any) -> None:
        super().__init__(context, store=backends.store, checkpointer=backends.checkpointer, **kwargs)
        self.app = app

    async def _until_learn(self, epoch: int, problem: Problem, rank: int = 0) -> str:
        snapshot = await self.graph.aget_state(self._config(epoch, problem))
        if snapshot.values and not snapshot.next:
            return "finished"
        # workers take a batch's earlier problems first, as the in-process driver's model calls go first
        tid = self._tid(epoch, problem)
        await self._job("run_problem", epoch, problem, queueing_lock=f"problem:{tid}", priority=-rank)
        return "ready"

    async def _learn(self, epoch: int, problem: Problem) -> dict[str, Any]:
        config = self._config(epoch, problem)
        if (await self.graph.aget_state(config)).next:
            await self._job(
                "learn", epoch, problem, queueing_lock=f"learn:{self._tid(epoch, problem)}", lock=BANKS_LOCK
            )
        return (await self.graph.aget_state(config)).values

    def _tid(self, epoch: int, problem: Problem) -> str:
        return thread_id(self.context.run, epoch, problem.id, self.context.stage)

    async def _job(self, task: str, epoch: int, problem: Problem, **options: Any) -> None:
        """Queue one job (or find the one already queued under its queueing lock) and wait for its end."""
        name = f"causal_grpo:{task}"
        args = {
            "context": self.context.model_dump(mode="json"),
            "epoch": epoch,
            "problem": problem.model_dump(mode="json"),
        }
        try:
            job_id = await self.app.configure_task(name, **options).defer_async(**args)
        except AlreadyEnqueued:
            queued = await self.app.job_manager.list_jobs_async(queueing_lock=options["queueing_lock"])
            job_id = next(j.id for j in queued if j.status in (Status.TODO.value, Status.DOING.value))
        await self._wait(job_id, f"{task} {self._tid(epoch, problem)}")

    async def _wait(self, job_id: int, what: str) -> None:
        manager = self.app.job_manager
        while True:
            (job,) = await manager.list_jobs_async(id=job_id)
            if job.status == Status.SUCCEEDED.value:
                return
            if job.status in (Status.FAILED.value, Status.CANCELLED.value, Status.ABORTED.value):
                raise FleetJobError(f"{what}: job {job_id} {job.status}")
            for stalled in await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=STALLED_AFTER):
                await manager.retry_job(stalled)
            await asyncio.sleep(POLL)


async def fleet_train(
    problems: list[Problem],
    *,
    context: Context,
    db: str,
    run_dir: Path | None = None,
    epochs: int = 1,
    batch_size: int = 4,
    local_worker: bool = True,
    on_problem: Callable[[ProblemOutcome], None] | None = None,
) -> TrainingResult:
    """Queue a run on the database at `db` and drive it to the end; workers anywhere do the jobs.

    Args:
        local_worker: Also work on the queue in this process (with the run's concurrency).
    """
    async with open_backends(db, pool_size=pool_size_for(context.concurrency)) as backends, open_app(db) as app:
        driver = FleetDriver(context, app=app, backends=backends, run_dir=run_dir, on_problem=on_problem)
        worker = None
        if local_worker:
            options = _worker_options(backends, context.concurrency)
            worker = asyncio.create_task(app.run_worker_async(**options, install_signal_handlers=False))
        try:
            return await driver.run(problems, epochs=epochs, batch_size=batch_size)
        finally:
            if worker is not None:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
