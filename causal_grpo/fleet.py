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
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from procrastinate import App, JobContext, PsycopgConnector, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException
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
_LIVE = (Status.TODO.value, Status.DOING.value)
_STATUSES = "SELECT id, status FROM procrastinate_jobs WHERE id = ANY(%(ids)s)"
_SCHEMA_LOCK = 0x63677271  # advisory lock key around creating procrastinate's tables

class FleetJobError(CausalGrpoError):
    """A job of the run failed on every attempt."""


def _worker_driver(job: JobContext, context: dict[str, Any]) -> Driver:
    backends: Backends = job.additional_context["backends"]
    return Driver(Context.model_validate(context), store=backends.store, checkpointer=backends.checkpointer)


async def run_problem(job: JobContext, context: dict[str, Any], epoch: int, problem: dict[str, Any]) -> None:
    """Run a problem's thread up to its bank update (or nowhere, if it is there already)."""
    await _worker_driver(job, context).until_learn(epoch, Problem.model_validate(problem))


async def learn(job: JobContext, context: dict[str, Any], epoch: int, problem: dict[str, Any]) -> None:
    """Apply a problem's bank update and finish its thread."""
    await _worker_driver(job, context).learn(epoch, Problem.model_validate(problem))


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
    # registered afresh on each app: a shared Blueprint is mutated by every app that copies it
    for task in (run_problem, learn):
        app.task(name=f"causal_grpo:{task.__name__}", queue=QUEUE, pass_context=True, retry=RETRY)(task)
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

    async def until_learn_batch(self, epoch: int, batch: list[Problem]) -> list[str | BaseException]:
        phases: list[str | BaseException] = []
        jobs: dict[int, int] = {}  # batch index -> job id
        for rank, problem in enumerate(batch):
            snapshot = await self.graph.aget_state(self._config(epoch, problem))
            if snapshot.values and not snapshot.next:
                phases.append("finished")
                continue
            phases.append("ready")
            # workers take a batch's earlier problems first, as the in-process driver's model calls go first
            lock = f"problem:{self._tid(epoch, problem)}"
            jobs[rank] = await self._job("run_problem", epoch, problem, queueing_lock=lock, priority=-rank)
        failed = await self._wait(list(jobs.values()))
        for rank, job_id in jobs.items():
            if job_id in failed:
                phases[rank] = FleetJobError(
                    f"run_problem {self._tid(epoch, batch[rank])}: job {job_id} {failed[job_id]}"
                )
        return phases

    async def learn_batch(self, epoch: int, problems: list[Problem]) -> list[dict[str, Any]]:
        # queued in dataset order under one lock, the updates run one at a time in that order on any worker
        jobs = []
        for problem in problems:
            if (await self.graph.aget_state(self._config(epoch, problem))).next:
                lock = f"learn:{self._tid(epoch, problem)}"
                jobs.append(await self._job("learn", epoch, problem, queueing_lock=lock, lock=BANKS_LOCK))
        if failed := await self._wait(jobs):
            raise FleetJobError(
                f"bank updates of epoch {epoch} failed: " + ", ".join(f"job {i} {s}" for i, s in failed.items())
            )
        return [(await self.graph.aget_state(self._config(epoch, p))).values for p in problems]

    def _tid(self, epoch: int, problem: Problem) -> str:
        return thread_id(self.context.run, epoch, problem.id, self.context.stage)

    async def _job(self, task: str, epoch: int, problem: Problem, **options: Any) -> int:
        """Queue one job, or find the one already queued or running under its queueing lock (a restarted driver)."""
        lock = options["queueing_lock"]
        for _ in range(2):
            live = [j for j in await self.app.job_manager.list_jobs_async(queueing_lock=lock) if j.status in _LIVE]
            if live:
                return live[0].id
            args = {
                "context": self.context.model_dump(mode="json"),
                "epoch": epoch,
                "problem": problem.model_dump(mode="json"),
            }
            try:
                return await self.app.configure_task(f"causal_grpo:{task}", **options).defer_async(**args)
            except AlreadyEnqueued:  # queued by another driver between our look and our defer: wait for that one
                continue
        raise FleetJobError(f"{task} {self._tid(epoch, problem)}: cannot queue or find its job")

    async def _wait(self, job_ids: list[int]) -> dict[int, str]:
        """Wait until every job has ended; the failed ones with their status. Puts stalled jobs back meanwhile."""
        manager = self.app.job_manager
        pending = set(job_ids)
        failed: dict[int, str] = {}
        while pending:
            rows = await self.app.connector.execute_query_all_async(_STATUSES, ids=list(pending))
            for row in rows:
                if row["status"] == Status.SUCCEEDED.value:
                    pending.discard(row["id"])
                elif row["status"] not in _LIVE:
                    pending.discard(row["id"])
                    failed[row["id"]] = row["status"]
            if not pending:
                break
            # one loop per driver sweeps, so a job is put back once; another driver may still beat us to it
            for stalled in await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=STALLED_AFTER):
                with contextlib.suppress(ConnectorException):
                    await manager.retry_job(stalled)
            await asyncio.sleep(POLL)
        return failed


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
        driver = FleetDriver(context, app=app, backends=backends, run_dir=run_dir, on_problem=on_problem, results=db)
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
