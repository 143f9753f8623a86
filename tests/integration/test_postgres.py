"""The PostgreSQL backend in one process: a simulated run through it, parity with SQLite, the banks' journal on it.

The module creates a database of its own (see `fresh_database`) and empties it after each test; the
fleet's tests, which also use the job queue's tables, are in `test_fleet.py`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from causal_grpo.memory.backends import open_backends
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.schemas import BANKS
from langgraph.store.base import BaseStore

from causal_grpo.api import atrain, run_dir
from causal_grpo.problems import load_problems

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def _bank_tests() -> dict[str, Any]:
    """A few of the bank's unit tests, to run again here against the PostgreSQL store."""
    path = Path(__file__).parents[1] / "unit" / "test_memory_bank.py"
    spec = importlib.util.spec_from_file_location("bank_tests_on_postgres", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = [
        "test_add_modify_delete_keep",
        "test_same_op_key_applies_once",
        "test_crash_between_journal_and_writes_completes_exactly_once",
        "test_replaying_a_half_written_journal_writes_each_edit_once",
        "test_recover_completes_pending_journals",
        "test_concurrent_applies_allocate_distinct_ids",
        "test_concurrent_applies_of_two_agents_sharing_the_shared_bank",
        "test_usage_counters_are_idempotent_per_op_key",
    ]
    return {name: getattr(module, name) for name in names}


# collected here with this module's `store` fixture, i.e. on PostgreSQL
globals().update(_bank_tests())


@pytest.fixture(scope="module")
def server_db(new_database) -> Iterator[str]:
    """A fresh database on the test server for this module, dropped afterwards."""
    with new_database() as url:
        yield url


@pytest.fixture
def pg_url(server_db: str) -> Iterator[str]:
    """The module's database, emptied after each test (banks are global to a store, not per run)."""
    yield server_db
    with psycopg.connect(server_db, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%migrations'"
            )
        ]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables))


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[BaseStore]:
    async with open_backends(pg_url, pool_size=4) as backends:
        assert backends.kind == "postgres"
        yield backends.store


async def test_a_run_through_postgres_completes_grows_the_banks_and_resumes_for_free(
    pg_url, simulator, make_sim_context, tmp_path
):
    problems = load_problems("full", 3)
    ctx = make_sim_context("pg-run")
    result = await atrain(problems, context=ctx, home=tmp_path, db=pg_url, fleet=False, batch_size=3)
    assert [p.status for p in result.problems] == ["done"] * 3
    assert sum(result.bank_sizes.values()) > 0
    assert not (run_dir(tmp_path, ctx.run) / "state.sqlite").exists()

    async with open_backends(pg_url) as backends:
        sizes = {b: await ExperienceBank(b, backends.store).size() for b in BANKS}
        finished = await backends.checkpointer.aget_tuple({"configurable": {"thread_id": f"pg-run:1:{problems[0].id}"}})
    assert sizes == result.bank_sizes and finished is not None

    before = simulator.stats()["requests"]
    again = await atrain(problems, context=ctx, home=tmp_path, db=pg_url, fleet=False, batch_size=3)
    assert [p.status for p in again.problems] == ["earlier"] * 3
    assert again.usage_this_start.calls == 0 and simulator.stats()["requests"] == before
    assert again.usage == result.usage
    assert again.bank_sizes == result.bank_sizes


async def test_the_same_run_through_sqlite_and_postgres_exports_the_same(
    pg_url, make_sim_context, tmp_path, exports, same_results
):
    problems = load_problems("full", 4)
    ctx = make_sim_context("parity")
    on_sqlite = await atrain(problems, context=ctx, home=tmp_path / "sqlite", batch_size=2)
    on_postgres = await atrain(problems, context=ctx, home=tmp_path / "pg", db=pg_url, fleet=False, batch_size=2)
    assert on_sqlite.usage.calls > 0 and sum(on_sqlite.bank_sizes.values()) > 0
    assert on_postgres.bank_sizes == on_sqlite.bank_sizes
    exported = exports(run_dir(tmp_path / "sqlite", ctx.run))
    assert {"generator_1_rollouts.jsonl", "critic_results.jsonl", "generator_1_experiences.json"} <= set(exported)
    assert exports(run_dir(tmp_path / "pg", ctx.run)) == exported
    # the result rows went to the PostgreSQL database, row for row what results.db holds
    same_results(pg_url, run_dir(tmp_path / "sqlite", ctx.run) / "results.db", ctx.run)
    assert not (run_dir(tmp_path / "pg", ctx.run) / "results.db").exists()
