"""Scale-out: a run's problems and bank updates as procrastinate jobs in PostgreSQL, run by any number of workers.

The driver (`fleet_train`, behind `causal-grpo train --db postgresql://...`) is the single-process
`Driver` with its two steps turned into jobs, so batches, their barrier and the order of bank updates are
the same: a batch's problems are queued as `run_problem` jobs (queueing lock `problem:<thread id>`, so a
problem is never queued twice) that run each problem's thread up to `learn`; once all have stopped there,
their `learn` jobs are queued together in dataset order, and procrastinate runs the jobs of one lock one
at a time in the order they were queued (retries keep their place). Every `learn` job holds `BANKS_LOCK`
(the banks are shared by every run in a database, and one update may touch the shared bank and an agent's),
so one bank writer runs at a time across every machine, and the journal of `ExperienceBank.apply` keeps a
retried update from applying twice. A job runs on the problem's own thread id, so a retried job resumes
from its last checkpoint.

Workers (`causal-grpo worker`) send a heartbeat every `HEARTBEAT` seconds; the driver puts the jobs of a
worker silent for `STALLED_AFTER` seconds (e.g. killed with `kill -9`) back in the queue. A job carries
the run's `Context` (model, endpoint, profiles), never a key: each worker reads its own from its environment.

Start-up: every process sets up the tables it needs through `backends.setup_once` (procrastinate's here, the
store's and checkpointer's in `open_backends`, the result tables in `results_postgres`), so a fleet started
all at once on a fresh database sets them up once, and a process killed during set-up blocks no other.
Stopping: a worker that receives SIGINT or SIGTERM, whatever it is waiting on, gives its running jobs
`STOP_GRACE` seconds, then puts them back in the queue (a stopped worker's job is always retried, as a
killed worker's is) and exits; if that has not happened within `STOP_DEADLINE` seconds, or at a second
signal, the process exits at once, and the driver puts its jobs back once its heartbeats stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from procrastinate import App, JobContext, PsycopgConnector, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException, JobAborted
from procrastinate.jobs import Job, Status
from procrastinate.retry import RetryDecision
from procrastinate.schema import SchemaManager

from causal_grpo.context import Context
from causal_grpo.errors import CausalGrpoError
from causal_grpo.graphs.driver import Driver, ProblemOutcome, TrainingResult, thread_id, thread_phase
from causal_grpo.memory.backends import (
    Backends,
    open_backends,
    pool_size_for,
    postgres_conninfo,
    setup_once,
    table_exists,
)
from causal_grpo.memory.results_postgres import ensure_tables
from causal_grpo.problems import Problem

QUEUE = "causal_grpo"
BANKS_LOCK = "causal_grpo:banks"
HEARTBEAT = 2.0
STALLED_AFTER = 10.0
POLL = 0.2
STOP_GRACE = 2.0  # s a stopped worker's running jobs get to finish before they go back to the queue
STOP_DEADLINE = 10.0  # s after a stop signal the worker process exits, whatever it is waiting on
_LIVE = (Status.TODO.value, Status.DOING.value)
_STATUSES = "SELECT id, status FROM procrastinate_jobs WHERE id = ANY(%(ids)s)"
_SCHEMA_LOCK = 0x63677271  # advisory lock key around creating procrastinate's tables


log = logging.getLogger("causal_grpo.fleet")


class FleetJobError(CausalGrpoError):
    """A job of the run failed on every attempt."""


class _Retry(RetryStrategy):
    """Retry a failed job a few times; a job cut off by its worker stopping always goes back to the queue."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, asyncio.CancelledError | JobAborted):  # what the worker's shutdown raises in a job
            return RetryDecision()
        return super().get_retry_decision(exception=exception, job=job)


RETRY = _Retry(max_attempts=3, wait=1)


def _worker_driver(job: JobContext, context: dict[str, Any]) -> Driver:
    backends: Backends = job.additional_context["backends"]
    return Driver(Context.model_validate(context), store=backends.store, checkpointer=backends.checkpointer)


async def run_problem(job: JobContext, context: dict[str, Any], epoch: int, problem: dict[str, Any]) -> None:
    """Run a problem's thread up to its bank update (or nowhere, if it is there already)."""
    await _worker_driver(job, context).until_learn(epoch, Problem.model_validate(problem))


async def learn(job: JobContext, context: dict[str, Any], epoch: int, problems: list[dict[str, Any]]) -> None:
    """Apply a batch's bank updates in order and finish their threads (a retry skips the ones already done)."""
    await _worker_driver(job, context).learn_batch(epoch, [Problem.model_validate(p) for p in problems])


async def _schema_done(conn: Any) -> bool:
    return await table_exists(conn, "procrastinate_jobs")


async def _apply_schema(conn: Any) -> None:
    # one multi-statement query: one implicit transaction, so a process killed half-way leaves nothing
    await conn.execute(SchemaManager.get_schema())


@asynccontextmanager
async def open_app(url: str) -> AsyncIterator[App]:
    """The job queue in the database at `url`, its tables created on first use."""
    conninfo = await postgres_conninfo(url)
    await setup_once(url, "the job queue's tables", _SCHEMA_LOCK, _schema_done, _apply_schema)
    app = App(connector=PsycopgConnector(conninfo=conninfo, min_size=1, max_size=4))
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
        # a job held back by a lock or a retry delay is seen at the next poll: LISTEN/NOTIFY only tells of new jobs
        "fetch_job_polling_interval": POLL,
        "shutdown_graceful_timeout": STOP_GRACE,
        "install_signal_handlers": False,  # ours cover start-up too (`run_worker`); a driver has its own
    }


async def run_worker(url: str, *, concurrency: int = 8) -> None:
    """Work on the queue at `url` until stopped (SIGINT/SIGTERM): `causal-grpo worker`.

    A stop signal cancels the worker wherever it is (setting up tables, waiting for a lock, running jobs);
    see the module docstring for what happens to its jobs and the bounds on its exit.
    """
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stopping: list[int] = []

    def stop(signum: int) -> None:
        name = signal.Signals(signum).name
        if stopping:
            log.warning("%s again: exiting now", name)
            os._exit(128 + signum)
        stopping.append(signum)
        log.warning("%s: stopping; running jobs go back to the queue (again to exit at once)", name)
        deadline = threading.Timer(STOP_DEADLINE, os._exit, (128 + signum,))
        deadline.daemon = True
        deadline.start()
        main.cancel()

    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop, signum)
    try:
        async with open_backends(url, pool_size=pool_size_for(concurrency)) as backends, open_app(url) as app:
            await app.run_worker_async(**_worker_options(backends, concurrency))
    except asyncio.CancelledError:
        if not stopping:
            raise
        main.uncancel()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


class FleetDriver(Driver):
    """The driver whose problems and bank updates run as jobs on the queue, by whichever worker takes them."""

    def __init__(self, context: Context, *, app: App, backends: Backends, **kwargs: Any) -> None:
        super().__init__(context, store=backends.store, checkpointer=backends.checkpointer, **kwargs)
        self.app = app

    async def until_learn_batch(self, epoch: int, batch: list[Problem]) -> list[str | BaseException]:
        snapshots = [await self.graph.aget_state(self._config(epoch, p)) for p in batch]
        # finished means the thread reached its end; a kill right after its start writes leaves no next node
        phases: list[str | BaseException] = [
            "finished" if thread_phase(s) == "finished" else "ready" for s in snapshots
        ]
        todo = [rank for rank, phase in enumerate(phases) if phase == "ready"]
        locks = {rank: self._lock("problem", epoch, [batch[rank]]) for rank in todo}
        # workers take a batch's earlier problems first, as the in-process driver's model calls go first
        ids = await asyncio.gather(
            *(
                self._job(
                    "run_problem",
                    {"epoch": epoch, "problem": batch[rank].model_dump(mode="json")},
                    queueing_lock=locks[rank],
                    priority=-rank,
                )
                for rank in todo
            )
        )
        failed = await self._wait(list(ids))
        for rank, job_id in zip(todo, ids, strict=True):
            if job_id in failed:
                phases[rank] = FleetJobError(f"{locks[rank]}: job {job_id} {failed[job_id]}")
        return phases

    async def learn_batch(self, epoch: int, problems: list[Problem]) -> list[dict[str, Any]]:
        # one job applies the batch's updates in dataset order; BANKS_LOCK makes it the only bank writer
        waiting = [
            p
            for p in problems
            if thread_phase(await self.graph.aget_state(self._config(epoch, p))) in ("learn", "running")
        ]
        if waiting:
            lock = self._lock("learn", epoch, waiting)
            args = {"epoch": epoch, "problems": [p.model_dump(mode="json") for p in waiting]}
            job_id = await self._job("learn", args, queueing_lock=lock, lock=BANKS_LOCK)
            if failed := await self._wait([job_id]):
                raise FleetJobError(f"{lock}: job {job_id} {failed[job_id]}")
        return [(await self.graph.aget_state(self._config(epoch, p))).values for p in problems]

    def _lock(self, task: str, epoch: int, problems: list[Problem]) -> str:
        """A job's queueing lock: the task and the thread ids of its problems."""
        tids = [thread_id(self.context.run, epoch, p.id, self.context.stage) for p in problems]
        return f"{task}:{tids[0]}" + (f"..{tids[-1]}({len(tids)})" if len(tids) > 1 else "")

    async def _job(self, task: str, args: dict[str, Any], *, queueing_lock: str, **options: Any) -> int:
        """Queue one job, or find the one already queued or running under its queueing lock (a restarted driver)."""
        manager = self.app.job_manager
        for _ in range(2):
            live = [j for j in await manager.list_jobs_async(queueing_lock=queueing_lock) if j.status in _LIVE]
            if live:
                return live[0].id
            configured = self.app.configure_task(f"causal_grpo:{task}", queueing_lock=queueing_lock, **options)
            try:
                return await configured.defer_async(context=self.context.model_dump(mode="json"), **args)
            except AlreadyEnqueued:  # queued by another driver between our look and our defer: wait for that one
                continue
        raise FleetJobError(f"{queueing_lock}: cannot queue or find its job")

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
        await ensure_tables(db)  # here, so that the driver's synchronous results connection finds them
        driver = FleetDriver(context, app=app, backends=backends, run_dir=run_dir, on_problem=on_problem, results=db)
        worker = None
        if local_worker:
            worker = asyncio.create_task(app.run_worker_async(**_worker_options(backends, context.concurrency)))
        try:
            return await driver.run(problems, epochs=epochs, batch_size=batch_size)
        finally:
            if worker is not None:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
