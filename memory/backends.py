"""Storage backends: the LangGraph store and checkpointer of a run, opened together.

`open_backends(None)` or `":memory:"` gives `InMemoryStore` + `InMemorySaver` (tests, throwaway runs);
a file path or `sqlite:///path` gives `AsyncSqliteStore` + `AsyncSqliteSaver` in one SQLite file, each on
its own connection (the store commits with explicit BEGIN/COMMIT, the saver with implicit transactions,
so they must not share one). The file is put in WAL mode so that readers never wait for the writer, and
each connection waits up to `BUSY_TIMEOUT` seconds for the other's write lock. Only the driver, the CLI
and tests open backends; graph nodes receive them through the runtime.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from langgraph.store.sqlite.aio import AsyncSqliteStore

from causal_grpo.errors import CausalGrpoError

BUSY_TIMEOUT = 30.0

Kind = Literal["sqlite", "memory", "postgres"]


class UnsupportedBackend(CausalGrpoError, ValueError):
    """A storage target this version cannot open."""


@dataclass(frozen=True)
class Backends:
    """The store (experience banks) and checkpointer (per-problem threads) of a run."""

    store: BaseStore
    checkpointer: BaseCheckpointSaver
    kind: Kind
    path: Path | None = None


def sqlite_path(target: str | Path) -> Path:
    """The file a target names: a path or a `sqlite:///path` URL.

    Raises:
        UnsupportedBackend: The target is a URL of another database.
    """
    text = str(target)
    if text.startswith("sqlite:///"):
        return Path(text.removeprefix("sqlite:///"))
    if text.startswith(("postgres://", "postgresql://")):
        raise UnsupportedBackend(
            "the PostgreSQL backend is not available yet; use a SQLite file (a path or sqlite:///path)"
        )
    if "://" in text:
        raise UnsupportedBackend(f"unsupported storage URL {text!r}; use a path or sqlite:///path")
    return Path(text)


async def _connect(path: Path, isolation_level: str | None) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT, isolation_level=isolation_level)
    try:
        # the mode is a property of the file; the cursor is closed at once so no statement holds a lock
        async with conn.execute("PRAGMA journal_mode=WAL") as cursor:
            await cursor.fetchall()
    except BaseException:
        # aiosqlite's worker thread is not a daemon: an unclosed connection would keep the process alive
        await conn.close()
        raise
    return conn


@asynccontextmanager
async def open_backends(target: str | Path | None = None) -> AsyncIterator[Backends]:
    """Open the store and checkpointer a target names, ready to use, and close them on exit.

    Args:
        target: None or ':memory:' for in-memory backends, else a SQLite file path or `sqlite:///path`
            (the file and its parent folders are created).

    Raises:
        UnsupportedBackend: A PostgreSQL or other URL.
    """
    if target is None or str(target) == ":memory:":
        yield Backends(store=InMemoryStore(), checkpointer=InMemorySaver(), kind="memory")
        return
    path = sqlite_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the store drives its own BEGIN/COMMIT, which needs autocommit mode (as its from_conn_string does)
    store_conn = await _connect(path, None)
    try:
        saver_conn = await _connect(path, "")  # sqlite3's default: implicit transactions
        try:
            store = AsyncSqliteStore(store_conn)
            checkpointer = AsyncSqliteSaver(saver_conn)
            await store.setup()
            await checkpointer.setup()
            yield Backends(store=store, checkpointer=checkpointer, kind="sqlite", path=path)
        finally:
            await saver_conn.close()
    finally:
        await store_conn.close()
