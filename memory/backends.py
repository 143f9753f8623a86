"""Storage backends: the LangGraph store and checkpointer of a run, opened together.

`open_backends(None)` or `":memory:"` gives `InMemoryStore` + `InMemorySaver` (tests, throwaway runs);
a file path or `sqlite:///path` gives `AsyncSqliteStore` + `AsyncSqliteSaver` in one SQLite file, each on
its own connection (the store commits with explicit BEGIN/COMMIT, the saver with implicit transactions,
so they must not share one). The file is put in WAL mode so that readers never wait for the writer, and
each connection waits up to `BUSY_TIMEOUT` seconds for the other's write lock. Both connections run with
`synchronous=NORMAL`, SQLite's recommended setting for WAL: a commit survives the process being killed at
any moment and the file is never corrupted; only a power cut or an OS crash can undo the last commits, which
leaves an earlier consistent state (a checkpoint and the banks' journal are in the same file, so they roll
back together) that a resumed run completes. It spares an fsync per commit, measured on a 4-problem
simulated run: a checkpoint write took 6.3 ms instead of 10.9 ms, a store batch 1.6 ms instead of 2.4 ms.

A `postgresql://` (or `postgres://`) URL gives `AsyncPostgresStore` + `AsyncPostgresSaver` sharing one
`psycopg_pool.AsyncConnectionPool` with the connection settings langgraph's docs require (autocommit,
`prepare_threshold=0`, dict rows). Their tables are created on first use by `setup_once`, which every
table set up on first use goes through (the store's and checkpointer's here, procrastinate's in `fleet`,
the result tables in `results_postgres`), so any number of processes starting together on a fresh database
set the tables up once and none can hang:

- A process that finds the tables up to date (the migration versions recorded, no index left invalid)
  takes no lock at all.
- Otherwise it polls `pg_try_advisory_lock` on an autocommit connection, so it never waits inside a
  statement or a transaction. That matters: the store's and checkpointer's migrations run `CREATE INDEX
  CONCURRENTLY`, which waits for every transaction older than itself to end, and a process blocked in
  `pg_advisory_lock` is in such a transaction while it waits for the very lock the migrating process
  holds, a cycle PostgreSQL cannot see (it hung fleets started together: issue 16).
- The lock is held by the connection that runs the setup, so it lasts exactly as long as the server
  session doing the work: a process killed with `kill -9` frees it at once (its socket closes), and a
  backend whose client vanished while running a statement notices within `client_connection_check_interval`.
- Every setup statement is bounded (`lock_timeout`, `statement_timeout`, and the session's idle bounds);
  a step that times out is logged and retried, `SETUP_ATTEMPTS` times at most. A waiting process logs who
  holds the lock every `SETUP_LOG_EVERY` seconds and gives up after `SETUP_TIMEOUT` seconds.
- A setup interrupted in `CREATE INDEX CONCURRENTLY` leaves an invalid index that the migration's `IF NOT
  EXISTS` would skip for good; the next setup rebuilds it (`REINDEX INDEX CONCURRENTLY`) first.

Every connection (the pools', procrastinate's, the result tables') also asks the server to probe its
socket with TCP keepalives, and (PostgreSQL 14+) to check during a statement that its client is still
there, so the server session of a process that died or a machine that vanished ends instead of holding
locks or snapshots.

Pool size: the saver holds one asyncio lock around every query, so it never uses more than one
connection at a time whatever the pool; the store funnels `aget`/`aput`/`asearch` through one batching
task (one connection) and only direct `abatch` calls (the banks' writes) take their own. Measured on a
16-problem simulated run with 64 calls in flight: a pool allowed 16 connections never opened more than
2, and its ~900 checkouts waited 0.1 s in all. So `pool_size_for` gives `min(concurrency,
MAX_POOL_SIZE)`, at least `MIN_POOL_SIZE`; the pool opens connections on demand up to that, and a
small bound spares the server's `max_connections` when every process of a fleet opens its own pool.
PostgreSQL support is the optional `postgres` extra, imported only when a URL asks for it. Only the
driver, the CLI and tests open backends; graph nodes receive them through the runtime.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from langgraph.store.sqlite.aio import AsyncSqliteStore

from causal_grpo.errors import CausalGrpoError

if TYPE_CHECKING:
    import psycopg

BUSY_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10
MIN_POOL_SIZE = 2  # the store's batched reads and a bank's direct write each hold one
MAX_POOL_SIZE = 4
_SETUP_LOCK = 0x63677270  # advisory lock key ("cgrp") around the store's and checkpointer's migrations
POSTGRES_SCHEMES = ("postgres://", "postgresql://")

# setting up tables on first use (`setup_once`)
SETUP_POLL = 0.2  # s between two tries of a setup lock held elsewhere (jittered)
SETUP_LOG_EVERY = 5.0  # s between two "waiting for" lines
SETUP_TIMEOUT = 300.0  # s a process waits for another's setup before it gives up
SETUP_ATTEMPTS = 5  # tries of a setup whose statements time out
SETUP_RETRY = 1.0  # s before the next try, times the attempt
# the bounds of a setup connection: every statement, every lock wait, and the session itself when idle
SETUP_SETTINGS = {
    "lock_timeout": "5s",  # DDL queued behind a running process's table lock would block its queries
    "statement_timeout": "120s",
    "idle_in_transaction_session_timeout": "30s",
}
SETUP_SETTINGS_14 = {"idle_session_timeout": "60s"}  # PostgreSQL 14+
# every connection: the server ends the session of a client that died or vanished
SESSION_SETTINGS = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
SESSION_SETTINGS_14 = {"client_connection_check_interval": "2s"}  # PostgreSQL 14+: checked during a statement
CLIENT_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3"}
# the tables the store's and checkpointer's migrations index
_MIGRATED_TABLES = ("store", "store_vectors", "checkpoints", "checkpoint_blobs", "checkpoint_writes")
_LEFTOVER = re.compile(r"_cc(new|old)[0-9]*\"?$")  # what an interrupted REINDEX CONCURRENTLY leaves behind
_HOLDER = """
SELECT a.pid, a.state, coalesce(a.client_addr::text, 'local') AS client,
       extract(epoch FROM now() - a.backend_start)::int AS age
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

log = logging.getLogger("causal_grpo.setup")

Kind = Literal["sqlite", "memory", "postgres"]


class UnsupportedBackend(CausalGrpoError, ValueError):
    """A storage target this version cannot open."""


class BackendUnavailable(CausalGrpoError):
    """A database server that cannot be reached or refused the connection."""


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
    if "://" in text:
        raise UnsupportedBackend(
            f"unsupported storage URL {redact(text)!r}; use a path, sqlite:///path or postgresql://..."
        )
    return Path(text)


async def _connect(path: Path, isolation_level: str | None) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT, isolation_level=isolation_level)
    try:
        # the mode is a property of the file; the cursor is closed at once so no statement holds a lock
        async with conn.execute("PRAGMA journal_mode=WAL") as cursor:
            await cursor.fetchall()
        async with conn.execute("PRAGMA synchronous=NORMAL"):
            pass
    except BaseException:
        # aiosqlite's worker thread is not a daemon: an unclosed connection would keep the process alive
        await conn.close()
        raise
    return conn


def redact(url: str) -> str:
    """A storage URL fit for messages: a URL shows only its scheme, host, port and path, never a password."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "") + parts.path
    except ValueError:
        return url.split("://", 1)[0] + "://..."


def pool_size_for(concurrency: int) -> int:
    """Connections for a run with `concurrency` model calls in flight (see the module docstring)."""
    return max(MIN_POOL_SIZE, min(concurrency, MAX_POOL_SIZE))


async def _connect_postgres(url: str) -> psycopg.AsyncConnection:
    """One connection, failing at once with a one-line reason (a pool would retry until its timeout)."""
    import psycopg

    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        raise unavailable(url, exc) from exc


def unavailable(url: str, error: Exception) -> BackendUnavailable:
    """The one-line error for a PostgreSQL server that refused a connection (no password in it)."""
    reason = str(error).strip().splitlines()
    return BackendUnavailable(
        f"cannot connect to PostgreSQL at {redact(url)}: {reason[0] if reason else type(error).__name__}"
    )


def session_settings(server_version: int, *, setup: bool = False) -> dict[str, str]:
    """The server settings each of our connections runs with; `setup` adds a setup connection's bounds."""
    settings = dict(SESSION_SETTINGS)
    if server_version >= 140000:
        settings |= SESSION_SETTINGS_14
    if setup:
        settings |= SETUP_SETTINGS | (SETUP_SETTINGS_14 if server_version >= 140000 else {})
    return settings


def session_conninfo(url: str, server_version: int) -> str:
    """`url` as a conninfo string whose connections run with `session_settings` and client keepalives.

    The URL's own `options` and keepalive parameters win over ours.
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    ours = " ".join(f"-c {name}={value}" for name, value in session_settings(server_version).items())
    params["options"] = f"{ours} {params.get('options') or ''}".strip()
    for name, value in CLIENT_KEEPALIVES.items():
        params.setdefault(name, value)
    return make_conninfo("", **params)


async def postgres_conninfo(url: str) -> str:
    """`session_conninfo` for the server at `url`, found out by one connection (which fails fast)."""
    async with await _connect_postgres(url) as conn:
        return session_conninfo(url, conn.info.server_version)


async def _setup_connection(url: str) -> psycopg.AsyncConnection:
    """An autocommit connection whose statements, lock waits and idle time are bounded (`SETUP_SETTINGS`)."""
    conn = await _connect_postgres(url)
    try:
        for name, value in session_settings(conn.info.server_version, setup=True).items():
            await conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    except BaseException:
        await conn.close()
        raise
    return conn


Check = Callable[["psycopg.AsyncConnection"], Awaitable[bool]]
Step = Callable[["psycopg.AsyncConnection"], Awaitable[None]]


async def _attempt(conn: psycopg.AsyncConnection, key: int, is_done: Check, run: Step) -> bool:
    """Set up under the lock if it is free: True once done (by us or before), False while another holds it."""
    if await is_done(conn):
        return True
    got = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))).fetchone()
    if not (got and got[0]):
        return False
    try:
        if not await is_done(conn):  # the process that held the lock may have just finished
            await run(conn)
    except BaseException:
        # closing ends the session and its lock; a failed or cancelled statement leaves it unfit to unlock
        await conn.close()
        raise
    await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return True


async def _holder(conn: psycopg.AsyncConnection, key: int) -> str:
    """Who holds a setup lock, for a log line."""
    row = await (await conn.execute(_HOLDER, (key,))).fetchone()
    if row is None:
        return "its lock has just been released"
    pid, state, client, age = row
    return f"the lock is held by server process {pid} ({state}, client {client}, connected {age} s ago)"


async def setup_once(url: str, what: str, key: int, is_done: Check, run: Step) -> None:
    """Run `run` once per database, under the session advisory lock `key`, unless `is_done` says it is done.

    Both get the setup connection: autocommit, every statement bounded (see the module docstring). The
    lock is polled, never waited for inside a statement; a step that times out is logged and retried.

    Raises:
        BackendUnavailable: The server cannot be reached, the setup failed `SETUP_ATTEMPTS` times, or
            another process kept the lock for `SETUP_TIMEOUT` seconds.
    """
    import psycopg

    started = time.monotonic()
    next_log = started + SETUP_LOG_EVERY
    failures = 0
    conn: psycopg.AsyncConnection | None = None
    try:
        while True:
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = await _setup_connection(url)
                if await _attempt(conn, key, is_done, run):
                    return
            except (psycopg.OperationalError, psycopg.IntegrityError) as exc:
                # a lock or statement timeout, a lost connection, a DDL race with a process not taking the lock
                failures += 1
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                if failures >= SETUP_ATTEMPTS:
                    raise BackendUnavailable(
                        f"setting up {what} in {redact(url)} failed {failures} times; last: {reason}"
                    ) from exc
                delay = SETUP_RETRY * failures
                log.warning(
                    "setting up %s in %s: %s; trying again in %.0f s (attempt %d of %d)",
                    what,
                    redact(url),
                    reason,
                    delay,
                    failures + 1,
                    SETUP_ATTEMPTS,
                )
                await asyncio.sleep(delay)
                continue
            waited = time.monotonic() - started
            if waited >= SETUP_TIMEOUT:
                raise BackendUnavailable(
                    f"gave up after {waited:.0f} s waiting for another process to set up {what} in {redact(url)}: "
                    + await _holder(conn, key)
                )
            if time.monotonic() >= next_log:
                holder = await _holder(conn, key)
                log.warning(
                    "waiting for another process to set up %s in %s (%.0f s so far): %s",
                    what,
                    redact(url),
                    waited,
                    holder,
                )
                next_log += SETUP_LOG_EVERY
            await asyncio.sleep(SETUP_POLL * random.uniform(0.5, 1.5))
    finally:
        if conn is not None:
            await conn.close()


def setup_once_sync(url: str, what: str, key: int, is_done: Check, run: Step) -> None:
    """`setup_once` for synchronous code: in a thread of its own, so it works with or without a running loop."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(setup_once(url, what, key, is_done, run))
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    thread = threading.Thread(target=target, name="causal-grpo-setup", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


async def table_exists(conn: psycopg.AsyncConnection, table: str) -> bool:
    """Whether `table` is visible on the connection's search path."""
    found = await (await conn.execute("SELECT to_regclass(%s)", (table,))).fetchone()
    return found is not None and found[0] is not None


async def invalid_indexes(conn: psycopg.AsyncConnection, tables: tuple[str, ...]) -> list[str]:
    """The invalid indexes of `tables` (left by an interrupted `CREATE INDEX CONCURRENTLY`), leftovers first."""
    rows = await (
        await conn.execute(
            "SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid"
            " WHERE NOT i.indisvalid AND t.relname = ANY(%s) AND pg_table_is_visible(t.oid)",
            (list(tables),),
        )
    ).fetchall()
    return sorted((r[0] for r in rows), key=lambda name: not _LEFTOVER.search(name))


async def repair_indexes(conn: psycopg.AsyncConnection, tables: tuple[str, ...]) -> None:
    """Rebuild the invalid indexes of `tables`: a migration's `IF NOT EXISTS` would skip them for good."""
    for name in await invalid_indexes(conn, tables):
        # the names come from the catalog, quoted by regclass
        if _LEFTOVER.search(name):
            log.warning("dropping index %s, left by an interrupted rebuild", name)
            await conn.execute(f"DROP INDEX IF EXISTS {name}")  # type: ignore[arg-type]
        else:
            log.warning("rebuilding index %s, left invalid by an interrupted setup", name)
            await conn.execute(f"REINDEX INDEX CONCURRENTLY {name}")  # type: ignore[arg-type]


async def _migrated(conn: psycopg.AsyncConnection, table: str, latest: int) -> bool:
    if not await table_exists(conn, table):
        return False
    row = await (await conn.execute(f"SELECT max(v) FROM {table}")).fetchone()  # type: ignore[arg-type]
    return row is not None and row[0] is not None and row[0] >= latest


async def _backends_done(conn: psycopg.AsyncConnection) -> bool:
    """Every migration of the store and the checkpointer recorded, and none of their indexes invalid."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.store.postgres.aio import AsyncPostgresStore

    return (
        await _migrated(conn, "store_migrations", len(AsyncPostgresStore.MIGRATIONS) - 1)
        and await _migrated(conn, "checkpoint_migrations", len(AsyncPostgresSaver.MIGRATIONS) - 1)
        and not await invalid_indexes(conn, _MIGRATED_TABLES)
    )


async def _setup_backends(conn: psycopg.AsyncConnection) -> None:
    """The store's and checkpointer's migrations, on the connection that holds the setup lock."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.store.postgres.aio import AsyncPostgresStore

    await repair_indexes(conn, _MIGRATED_TABLES)
    await AsyncPostgresStore(conn).setup()
    await AsyncPostgresSaver(conn).setup()


@asynccontextmanager
async def _open_postgres(url: str, pool_size: int) -> AsyncIterator[Backends]:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from langgraph.store.postgres.aio import AsyncPostgresStore
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool
    except ImportError as exc:
        raise UnsupportedBackend(
            f"PostgreSQL needs the postgres extra ({exc.name} is missing): pip install 'causal-grpo[postgres]'"
        ) from exc
    conninfo = await postgres_conninfo(url)
    await setup_once(url, "the checkpointer's and store's tables", _SETUP_LOCK, _backends_done, _setup_backends)
    pool: AsyncConnectionPool = AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=pool_size,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        yield Backends(store=AsyncPostgresStore(pool), checkpointer=AsyncPostgresSaver(pool), kind="postgres")
    finally:
        await pool.close()


@asynccontextmanager
async def open_backends(target: str | Path | None = None, *, pool_size: int = MIN_POOL_SIZE) -> AsyncIterator[Backends]:
    """Open the store and checkpointer a target names, ready to use, and close them on exit.

    Args:
        target: None or ':memory:' for in-memory backends; a `postgresql://` URL; else a SQLite file path
            or `sqlite:///path` (the file and its parent folders are created).
        pool_size: Most connections the PostgreSQL pool opens (e.g. `pool_size_for(concurrency)`).

    Raises:
        UnsupportedBackend: A URL of another database.
        BackendUnavailable: The PostgreSQL server cannot be reached.
    """
    if target is None or str(target) == ":memory:":
        yield Backends(store=InMemoryStore(), checkpointer=InMemorySaver(), kind="memory")
        return
    if str(target).startswith(POSTGRES_SCHEMES):
        async with _open_postgres(str(target), pool_size) as backends:
            yield backends
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
