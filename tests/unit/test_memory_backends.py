"""Storage backends: in-memory and one SQLite file holding both the store and the checkpointer."""

from __future__ import annotations

import sqlite3
from typing import TypedDict

import pytest
from causal_grpo.memory.backends import (
    BackendUnavailable,
    UnsupportedBackend,
    open_backends,
    pool_size_for,
    redact,
    sqlite_path,
)
from langgraph.graph import END, START, StateGraph
from langgraph.store.memory import InMemoryStore

pytestmark = pytest.mark.anyio


class State(TypedDict):
    count: int


async def bump(state: State) -> State:
    return {"count": state["count"] + 1}


def graph(backends):
    builder = StateGraph(State)
    builder.add_node(bump)
    builder.add_edge(START, "bump")
    builder.add_edge("bump", END)
    return builder.compile(checkpointer=backends.checkpointer, store=backends.store)


@pytest.mark.parametrize("target", [None, ":memory:"])
async def test_memory_backends(target):
    async with open_backends(target) as backends:
        assert backends.kind == "memory" and isinstance(backends.store, InMemoryStore)
        config = {"configurable": {"thread_id": "t"}}
        assert (await graph(backends).ainvoke({"count": 1}, config))["count"] == 2


async def test_sqlite_store_and_checkpointer_share_one_file_and_persist(tmp_path):
    path = tmp_path / "runs" / "r1" / "state.db"
    config = {"configurable": {"thread_id": "r1:0:p1"}}
    async with open_backends(path) as backends:
        assert backends.kind == "sqlite" and backends.path == path
        await backends.store.aput(("causal_grpo", "test"), "k", {"v": 1})
        assert (await graph(backends).ainvoke({"count": 1}, config))["count"] == 2
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
        assert {"store", "checkpoints", "writes"} <= tables
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    async with open_backends(f"sqlite:///{path}") as backends:
        assert (await backends.store.aget(("causal_grpo", "test"), "k")).value == {"v": 1}
        assert (await graph(backends).aget_state(config)).values == {"count": 2}


async def test_sqlite_connections_commit_without_an_fsync_each(tmp_path):
    # synchronous is a property of each connection, not of the file: both the store's and the saver's are checked
    async with open_backends(tmp_path / "state.db") as backends:
        for conn in (backends.store.conn, backends.checkpointer.conn):
            async with conn.execute("pragma synchronous") as cursor:
                assert (await cursor.fetchone())[0] == 1  # NORMAL; FULL (2) is sqlite3's default


async def test_two_runs_can_open_one_file_at_once(tmp_path):
    path = tmp_path / "shared.db"
    async with open_backends(path) as first, open_backends(path) as second:
        await first.store.aput(("causal_grpo", "test"), "a", {"v": 1})
        assert (await second.store.aget(("causal_grpo", "test"), "a")).value == {"v": 1}


@pytest.mark.parametrize("target", ["mysql://u:secret@h/db", "redis://h"])
async def test_unsupported_targets_fail_clearly(target):
    with pytest.raises(UnsupportedBackend, match="sqlite:///path") as raised:
        async with open_backends(target):
            pass
    assert "secret" not in str(raised.value)


async def test_an_unreachable_postgres_server_fails_at_once_without_the_password():
    with pytest.raises(BackendUnavailable, match=r"postgresql://127\.0\.0\.1:1/db") as raised:
        async with open_backends("postgresql://u:secret@127.0.0.1:1/db"):
            pass
    assert "secret" not in str(raised.value)


def test_redact_and_pool_size():
    assert redact("postgres://u:pw@db.example:6543/runs?sslmode=require") == "postgres://db.example:6543/runs"
    assert redact("runs/x.db") == "runs/x.db"
    assert [pool_size_for(c) for c in (1, 3, 8, 64)] == [2, 3, 4, 4]


def test_sqlite_path():
    assert str(sqlite_path("sqlite:///tmp/x.db")) == "tmp/x.db"
    assert str(sqlite_path("sqlite:////tmp/x.db")) == "/tmp/x.db"
    assert str(sqlite_path("runs/x.db")) == "runs/x.db"
