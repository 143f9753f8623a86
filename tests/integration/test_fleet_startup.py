"""A fleet's start-up on a fresh database (issue 16): processes starting together, dying, or stopped while they start.

The first process to need a table sets it up; the others must neither deadlock with it (the store's
`CREATE INDEX CONCURRENTLY` waits for every older transaction, so a process waiting for the setup lock
inside a statement hung the fleet), nor be blocked by one that died, nor keep a stopped worker alive.
Every test gets a database of its own and nothing is created in it beforehand: no process gets a head start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import psycopg
import pytest
from causal_grpo.memory import backends
from causal_grpo.memory.backends import _SETUP_LOCK, open_backends
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.store.postgres.aio import AsyncPostgresStore

from causal_grpo.api import atrain, run_dir
from causal_grpo.context import Context
from causal_grpo.problems import load_problems
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.runner import SimulatorServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CLI = Path(sys.executable).parent / "causal-grpo"
HANG = 120.0  # s: a hang guard, far above what any of these takes


@pytest.fixture
def db(new_database) -> Iterator[str]:
    with new_database() as url:
        yield url


def _env(name: str) -> dict[str, str]:
    """A child's environment: no API key, and its server sessions named (PGAPPNAME) so a test can find them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    return env | {"PGAPPNAME": name}


def _start(args: list[str], name: str, folder: Path) -> subprocess.Popen:
    with (folder / f"{name}.log").open("w") as out:
        return subprocess.Popen([str(CLI), *args], stdout=out, stderr=subprocess.STDOUT, env=_env(name), cwd=folder)


def _worker(db: str, name: str, folder: Path) -> subprocess.Popen:
    return _start(["worker", "--db", db, "--concurrency", "4"], name, folder)


def _driver(db: str, base_url: str, home: Path, folder: Path) -> subprocess.Popen:
    args = ["train", "--db", db, "--no-local-worker", "--model", "simulated", "--base-url", base_url]
    return _start(args + ["--dataset", "physics", "--max-problems", "6", "--home", str(home)], "driver", folder)


def _stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _rows(db: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def _sessions(db: str, name: str) -> list[tuple]:
    """(pid, query, holds an advisory lock) of the server sessions a child named `name` has open."""
    return _rows(
        db,
        """SELECT a.pid, a.query, EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory'
                                           AND l.granted)
             FROM pg_stat_activity a WHERE a.application_name = %s AND a.datname = current_database()""",
        (name,),
    )


@contextmanager
def _released_together(db: str, names: list[str]) -> Iterator[None]:
    """Hold the first setup lock until every named process has connected, then let them all go at once."""
    with psycopg.connect(db, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        yield
        deadline = time.monotonic() + HANG
        while not all(_sessions(db, name) for name in names):
            assert time.monotonic() < deadline, "the processes never connected"
            time.sleep(0.05)
        gate.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))


def _doing(db: str) -> list[tuple]:
    """The ids of the jobs being done (none before the queue's tables exist)."""
    try:
        return _rows(db, "SELECT id FROM procrastinate_jobs WHERE status = 'doing'")
    except psycopg.errors.UndefinedTable:
        return []


def _assert_set_up(db: str) -> None:
    """The store's and checkpointer's migrations all recorded, once, and not one index left invalid."""
    assert [r[0] for r in _rows(db, "SELECT v FROM store_migrations ORDER BY v")] == list(
        range(len(AsyncPostgresStore.MIGRATIONS))
    )
    assert [r[0] for r in _rows(db, "SELECT v FROM checkpoint_migrations ORDER BY v")] == list(
        range(len(AsyncPostgresSaver.MIGRATIONS))
    )
    assert _rows(db, "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid") == []
    found = _rows(db, "SELECT to_regclass('procrastinate_jobs'), to_regclass('causal_grpo_problems')")
    assert all(found[0]), found


def _assert_every_problem_once(home: Path) -> None:
    folder = run_dir(home, "default")
    expected = [p.id for p in load_problems("physics", 6)]
    result = json.loads((folder / "result.json").read_text())
    assert [p["status"] for p in result["problems"]] == ["done"] * 6
    rollouts = sorted(folder.glob("*_rollouts.jsonl"))
    assert rollouts
    for path in rollouts:
        ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
        assert ids == expected, path.name


@pytest.mark.parametrize("start", ["released-together", "as-started", "as-started-again"])
def test_two_workers_and_a_driver_started_together_on_a_fresh_database_finish_a_run(start, db, simulator, tmp_path):
    """Three processes started at the same moment, their setups let go at once or as each gets there.

    Before the fix the first hung every time (one process's index build waiting for the others' wait for
    its lock), and about 3 starts in 4 of the others.
    """
    home = tmp_path / "home"
    started = time.monotonic()
    names = ["worker-a", "worker-b", "driver"]
    with _released_together(db, names) if start == "released-together" else nullcontext():
        processes = [_worker(db, "worker-a", tmp_path), _worker(db, "worker-b", tmp_path)]
        processes.append(_driver(db, simulator.base_url, home, tmp_path))
    try:
        driver = processes[-1]
        try:
            driver.wait(HANG)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the fleet hung: {_rows(db, 'SELECT pid, wait_event, query FROM pg_stat_activity')}"
            ) from None
        print(f"{start}: the fleet started together finished its run in {time.monotonic() - started:.1f} s")
        assert driver.returncode == 0, (tmp_path / "driver.log").read_text()
        _assert_every_problem_once(home)
        _assert_set_up(db)
        jobs = _rows(db, "SELECT status, worker_id FROM procrastinate_jobs")
        assert jobs and all(status == "succeeded" and worker for status, worker in jobs)  # done by the workers
        for worker in processes[:2]:  # idle now: SIGTERM stops each cleanly
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(HANG) == 0
    finally:
        _stop(*processes)


def test_a_worker_killed_in_its_first_seconds_blocks_no_one(db, simulator, tmp_path):
    """`kill -9` on a worker as it sets up (holding a setup lock, if it gets one first): the others finish the run."""
    home = tmp_path / "home"
    with _released_together(db, ["victim", "survivor", "driver"]):
        victim = _worker(db, "victim", tmp_path)
        processes = [victim, _worker(db, "survivor", tmp_path), _driver(db, simulator.base_url, home, tmp_path)]
    try:
        released, deadline = time.monotonic(), time.monotonic() + HANG
        while time.monotonic() < deadline:  # kill it while it holds a setup lock, or 0.5 s after the start
            sessions = _sessions(db, "victim")
            if any(locked for *_, locked in sessions) or time.monotonic() - released > 0.5:
                break
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        print(f"killed the victim with {len(sessions)} session(s) open, holding a lock: {any(s[2] for s in sessions)}")
        driver = processes[-1]
        driver.wait(HANG)
        assert driver.returncode == 0, (tmp_path / "driver.log").read_text()
        _assert_every_problem_once(home)
        _assert_set_up(db)
    finally:
        _stop(*processes)


async def test_setups_released_at_the_same_moment_all_finish_and_none_waits_in_a_transaction(db, caplog, monkeypatch):
    """The deadlock of issue 16, made certain: the lock is held, two setups wait, then it is released at once."""
    monkeypatch.setattr(backends, "SETUP_LOG_EVERY", 0.3, raising=False)
    caplog.set_level(logging.WARNING, logger="causal_grpo.setup")

    async def open_and_close() -> None:
        async with open_backends(db):
            pass

    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as holder:
        await holder.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        me = holder.info.backend_pid
        setups = [asyncio.create_task(open_and_close()) for _ in range(2)]
        waiting: list[tuple] = []
        for _ in range(10):  # 1 s of looking: a waiter must never sit in a statement (nor a transaction) meanwhile
            await asyncio.sleep(0.1)
            waiting += _rows(
                db,
                """SELECT pid, state, wait_event, query FROM pg_stat_activity WHERE datname = current_database()
                      AND pid NOT IN (%s, pg_backend_pid()) AND wait_event_type = 'Lock'""",
                (me,),
            )
        assert waiting == []  # (before: both in `SELECT pg_advisory_lock`, one to deadlock with the other's index)
        assert not any(s.done() for s in setups)
        await holder.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
        await asyncio.wait_for(asyncio.gather(*setups), HANG)
    versions = [r[0] for r in _rows(db, "SELECT v FROM store_migrations ORDER BY v")]
    assert versions == list(range(len(AsyncPostgresStore.MIGRATIONS)))
    lines = [r.getMessage() for r in caplog.records]
    # a clear line: what it waits for, and who holds the lock
    assert any(
        "waiting for another process to set up the checkpointer's and store's tables" in line
        and f"held by server process {me}" in line
        for line in lines
    ), lines


async def test_a_setup_killed_in_create_index_concurrently_is_finished_by_the_next_process(db, tmp_path):
    """`kill -9` while the store's index is being built: its session ends, and the next setup rebuilds the index."""
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as old:
        # a transaction older than the victim's index build, so that the build waits for it
        await old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await old.execute("SELECT 1")  # takes the snapshot
        code = "import asyncio, sys; from causal_grpo.memory.backends import open_backends\n"
        code += "async def main():\n    async with open_backends(sys.argv[1]): pass\nasyncio.run(main())"
        victim = subprocess.Popen([sys.executable, "-c", code, db], env=_env("victim"), cwd=tmp_path)
        try:
            deadline = time.monotonic() + HANG
            while not any("CREATE INDEX CONCURRENTLY" in query for _, query, _ in _sessions(db, "victim")):
                assert time.monotonic() < deadline and victim.poll() is None, "the victim never built its index"
                await asyncio.sleep(0.05)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
        finally:
            _stop(victim)
        # its server session notices the vanished client while it waits, ending the build and the lock
        while _sessions(db, "victim"):
            assert time.monotonic() < deadline, "the killed process's session lives on"
            await asyncio.sleep(0.1)
        assert _rows(db, "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid") == [
            ("store_prefix_idx",)
        ]
        await old.execute("COMMIT")
    async with open_backends(db):
        pass
    assert _rows(db, "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid") == []
    assert [r[0] for r in _rows(db, "SELECT v FROM store_migrations ORDER BY v")] == list(
        range(len(AsyncPostgresStore.MIGRATIONS))
    )
    assert _rows(db, "SELECT count(*) FROM pg_indexes WHERE indexname = 'store_prefix_idx'") == [(1,)]


async def test_a_stopped_worker_exits_whatever_it_waits_on_and_its_job_goes_back_to_the_queue(db, tmp_path):
    """Ctrl-C while waiting for another process's setup; SIGTERM while a long job runs: neither is waited out."""
    with SimulatorServer(SimulatorConfig(seed=7, latency_ms=1000)) as slow:
        ctx = Context(run="stopped", model="simulated", base_url=slow.base_url, rollouts=3, generators=[1, 2], seed=7)
        survivor = None
        holder = psycopg.connect(db, autocommit=True)  # another process, in the middle of the setup
        holder.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        early, victim = _worker(db, "early", tmp_path), _worker(db, "victim", tmp_path)
        try:
            deadline = time.monotonic() + HANG
            while not (_sessions(db, "early") and _sessions(db, "victim")):  # connected: waiting for the lock
                assert time.monotonic() < deadline and early.poll() is None
                time.sleep(0.05)
            early.send_signal(signal.SIGINT)
            try:
                early.wait(30)
            except subprocess.TimeoutExpired:
                raise AssertionError("a worker waiting for the setup lock ignored Ctrl-C") from None
            assert _rows(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") == [(1,)]
            holder.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))

            problems = load_problems("physics", 1)
            run = asyncio.create_task(atrain(problems, context=ctx, home=tmp_path, db=db, local_worker=False))
            while not (jobs := _doing(db)):
                assert time.monotonic() < deadline and not run.done()
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            victim.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            while victim.poll() is None:
                assert time.monotonic() < deadline, "the stopped worker waited for its job"
                await asyncio.sleep(0.1)
            print(f"the worker stopped mid-job exited {time.monotonic() - stopped:.1f} s after SIGTERM")
            assert victim.returncode == 0
            (job_id,) = jobs[0]
            # not finished by the stopped worker (it would have before): back in the queue for the next one
            assert _rows(db, "SELECT status, attempts FROM procrastinate_jobs WHERE id = %s", (job_id,)) == [
                ("todo", 1)
            ]
            survivor = _worker(db, "survivor", tmp_path)
            result = await asyncio.wait_for(run, HANG)
        finally:
            holder.close()
            _stop(early, victim, *([survivor] if survivor else []))
    assert [p.status for p in result.problems] == ["done"]
    assert _rows(db, "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)) == [("succeeded",)]
