"""A fleet run: problems and bank updates as procrastinate jobs in PostgreSQL, done by worker processes.

Every test gets a database of its own (the job queue's tables and a stopped worker's rows must not leak
into the next test). The yardstick is the in-process run on SQLite with the same simulator seed: a fleet
run, whatever happens to its workers, must export exactly what that run exports.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from causal_grpo.memory.backends import open_backends
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.schemas import BANKS, namespace
from typer.testing import CliRunner

from causal_grpo.api import atrain, run_dir
from causal_grpo.cli import app
from causal_grpo.context import Context
from causal_grpo.fleet import STALLED_AFTER
from causal_grpo.problems import load_problems
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.runner import SimulatorServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

WORKER = Path(sys.executable).parent / "causal-grpo"
runner = CliRunner()


@pytest.fixture
def db(new_database) -> Iterator[str]:
    with new_database() as url:
        yield url


@pytest.fixture(scope="module")
def slow_simulator() -> Iterator[SimulatorServer]:
    """The simulator with a model latency, so that a run lasts long enough to kill a worker in the middle."""
    with SimulatorServer(SimulatorConfig(seed=7, latency_ms=150)) as server:
        yield server


def _context(run: str, base_url: str) -> Context:
    return Context(
        run=run,
        model="simulated",
        base_url=base_url,
        rollouts=3,
        generators=[1, 2],
        concurrency=8,
        max_retries=1,
        seed=7,
    )


def _jobs(db: str) -> list[dict]:
    with psycopg.connect(db, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM procrastinate_jobs ORDER BY id").fetchall()


def _start_worker(db: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    with log.open("w") as out:
        return subprocess.Popen(
            [str(WORKER), "worker", "--db", db, "--concurrency", "4"], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def _wait_for_workers(db: str, count: int, timeout: float = 60.0) -> list[int]:
    """The ids of the registered workers, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(db) as conn:
                ids = [r[0] for r in conn.execute("SELECT id FROM procrastinate_workers ORDER BY id")]
        except psycopg.errors.UndefinedTable:
            ids = []
        if len(ids) >= count:
            return ids
        time.sleep(0.2)
    raise AssertionError(f"{count} worker(s) did not register within {timeout} s")


async def test_a_fleet_run_with_its_local_worker_exports_what_the_in_process_run_does(
    db, make_sim_context, simulator, tmp_path, exports, same_results
):
    problems = load_problems("full", 4)
    ctx = make_sim_context("fleet-parity")
    in_process = await atrain(problems, context=ctx, home=tmp_path / "sqlite", batch_size=2)
    queued = await atrain(problems, context=ctx, home=tmp_path / "fleet", db=db, batch_size=2)
    assert [p.status for p in queued.problems] == ["done"] * 4
    assert queued.bank_sizes == in_process.bank_sizes and queued.usage.calls == in_process.usage.calls
    assert exports(run_dir(tmp_path / "fleet", ctx.run)) == exports(run_dir(tmp_path / "sqlite", ctx.run))
    assert {j["task_name"] for j in _jobs(db)} == {"causal_grpo:run_problem", "causal_grpo:learn"}

    # the result rows live in the run's PostgreSQL database, not in a results.db beside the exports
    assert not (run_dir(tmp_path / "fleet", ctx.run) / "results.db").exists()
    same_results(db, run_dir(tmp_path / "sqlite", ctx.run) / "results.db", ctx.run)

    requests, jobs = simulator.stats()["requests"], len(_jobs(db))
    again = await atrain(problems, context=ctx, home=tmp_path / "fleet", db=db, batch_size=2)
    assert [p.status for p in again.problems] == ["earlier"] * 4
    assert simulator.stats()["requests"] == requests and len(_jobs(db)) == jobs  # finished: nothing queued


async def test_two_workers_finish_a_run_while_one_is_killed_with_sigkill(db, slow_simulator, tmp_path, exports):
    """12 problems, a driver that does no work itself and two worker processes; one is `kill -9`ed mid-job."""
    problems = load_problems("full", 12)
    ctx = _context("fleet-kill", slow_simulator.base_url)
    baseline = await atrain(problems, context=ctx, home=tmp_path / "sqlite", batch_size=4)

    async with open_backends(db):  # the tables exist before the workers look for them
        pass
    victim = _start_worker(db, tmp_path / "victim.log")
    (victim_id,) = _wait_for_workers(db, 1)
    survivor = _start_worker(db, tmp_path / "survivor.log")
    _wait_for_workers(db, 2)
    killed: list[int] = []  # the ids of the jobs the victim was doing when it died

    async def kill_mid_job() -> None:
        while True:
            doing = [j["id"] for j in _jobs(db) if j["status"] == "doing" and j["worker_id"] == victim_id]
            if doing:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed.extend(doing)
                return
            await asyncio.sleep(0.05)

    try:
        killer = asyncio.create_task(kill_mid_job())
        started = time.monotonic()
        result = await atrain(problems, context=ctx, home=tmp_path / "fleet", db=db, batch_size=4, local_worker=False)
        await asyncio.wait_for(killer, 1)
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.terminate()
                process.wait(30)

    assert victim.returncode == -signal.SIGKILL and killed
    assert [p.status for p in result.problems] == ["done"] * 12
    # the killed worker's jobs were put back once it missed its heartbeats, and finished by the survivor
    jobs = {j["id"]: j for j in _jobs(db)}
    assert all(jobs[i]["status"] == "succeeded" and jobs[i]["attempts"] >= 1 for i in killed)
    assert time.monotonic() - started >= STALLED_AFTER
    exported = exports(run_dir(tmp_path / "fleet", ctx.run))
    # every problem once, nothing applied twice, no batch's bank update missing: exactly the undisturbed run
    assert [line["id"] for line in exported["generator_1_rollouts.jsonl"]] == [p.id for p in problems]
    assert exported == exports(run_dir(tmp_path / "sqlite", ctx.run))
    assert result.bank_sizes == baseline.bank_sizes
    async with open_backends(db) as backends:
        for bank in BANKS:
            records = await ExperienceBank(bank, backends.store).list()
            keys = [edit.key for record in records for edit in record.history]
            assert len(keys) == len(set(keys)), f"{bank}: an operation applied twice"
            assert len({r.id for r in records}) == len(records)


async def test_two_runs_at_once_contend_for_the_banks_and_lose_no_update(db, simulator, tmp_path):
    """Two drivers share one database's banks; their batches' updates queue under one lock on two workers."""
    problems = load_problems("full", 16)
    runs = {"fleet-a": problems[:8], "fleet-b": problems[8:]}
    async with open_backends(db):
        pass
    workers = [_start_worker(db, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        _wait_for_workers(db, 2)
        results = await asyncio.gather(
            *(
                atrain(part, context=_context(run, simulator.base_url), db=db, batch_size=4, local_worker=False)
                for run, part in runs.items()
            )
        )
    finally:
        for process in workers:
            process.terminate()
            process.wait(30)
    assert all([p.status for p in r.problems] == ["done"] * 8 for r in results)
    with psycopg.connect(db) as conn:
        spans = conn.execute(
            """SELECT min(e.at) FILTER (WHERE e.type = 'started'), max(e.at) FILTER (WHERE e.type = 'succeeded')
                 FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
                WHERE j.task_name = 'causal_grpo:learn' GROUP BY j.id ORDER BY 1"""
        ).fetchall()
    assert len(spans) == 4  # two batches per run
    assert all(ended <= began for (_, ended), (began, _) in itertools.pairwise(spans))  # one bank writer at a time
    async with open_backends(db) as backends:
        expected = 0
        for run, part in runs.items():
            for problem in part:
                config = {"configurable": {"thread_id": f"{run}:1:{problem.id}"}}
                state = (await backends.checkpointer.aget_tuple(config)).checkpoint["channel_values"]
                for extraction in state["extractions"]:
                    if extraction["operations"]:  # every update that had operations left its journal entry
                        expected += 1
                        key = f"{run}:1:{problem.id}:{extraction['agent']}"
                        assert await backends.store.aget(namespace(extraction["agent"], "journal"), key), key
        assert expected > 0
        for bank in BANKS:
            records = await ExperienceBank(bank, backends.store).list(include_deleted=True)
            keys = [edit.key for record in records for edit in record.history]
            assert len(keys) == len(set(keys)), f"{bank}: an operation applied twice"
            assert {k.split(":")[0] for k in keys} <= set(runs)


def test_the_cli_trains_on_postgres_and_reads_the_run_back_from_it(db, simulator, tmp_path):
    """`train --db URL` queues the run; `experiences --db` and `report --db` read its banks and rows there."""
    home, run = tmp_path / "home", "cli-pg"
    common = ["--run", run, "--home", str(home)]
    secret = "sk-fleet-never-stored-0123456789"
    trained = runner.invoke(
        app,
        ["train", "--model", "simulated", "--base-url", simulator.base_url, "--max-problems", "3", "--seed", "7"]
        + ["--generators", "1", "--rollouts", "3", "--db", db, *common],
        env={"OPENAI_API_KEY": secret},
    )
    assert trained.exit_code == 0, trained.output
    # jobs carry the run's settings, never the key: no row of any table holds it (bytea columns show as hex)
    with psycopg.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert "procrastinate_jobs" in tables and "checkpoints" in tables
        for table in tables:
            leaked = conn.execute(
                f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s OR t::text LIKE %s',
                (f"%{secret}%", f"%{secret.encode().hex()}%"),
            )
            assert leaked.fetchone()[0] == 0, table
    result = json.loads((run_dir(home, run) / "result.json").read_text())
    assert [p["status"] for p in result["problems"]] == ["done"] * 3
    assert {j["task_name"] for j in _jobs(db)} == {"causal_grpo:run_problem", "causal_grpo:learn"}

    listed = runner.invoke(app, ["experiences", "--db", db, "list", "--json", *common])
    assert listed.exit_code == 0, listed.output
    banks = json.loads(listed.output)
    assert {b: len(records) for b, records in banks.items()} == result["bank_sizes"]
    assert sum(result["bank_sizes"].values()) > 0
    without_db = runner.invoke(app, ["experiences", "list", *common])  # the run has no state.sqlite of its own
    assert without_db.exit_code == 1 and "no run 'cli-pg'" in without_db.output

    reported = runner.invoke(app, ["report", "--db", db, *common])
    assert reported.exit_code == 0, reported.output
    page = (run_dir(home, run) / "report" / "index.html").read_text()
    assert "no results yet" not in page and "no state.sqlite" not in page
    assert (run_dir(home, run) / "report" / "rewards.png").is_file()
