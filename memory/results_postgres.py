"""The results tables of a run kept in PostgreSQL: the same rows as `results.db`, in the run's own database.

A run with `--db postgresql://...` keeps its checkpoints, banks and job queue in one database; its result
rows go there too (`causal_grpo_rollouts`, `causal_grpo_problems`, `causal_grpo_evaluations`), so every
machine of a fleet and every ad-hoc query sees one copy. Rows are upserted on their primary keys, as in
SQLite. The interface is `ResultsDB`'s; writes come from `asyncio.to_thread`, so one synchronous
connection behind a lock serves them. The tables are created once per database by `backends.setup_once`
(polled advisory lock, bounded statements, retries), which `ensure_tables` runs from async code
(`fleet_train` does, before its driver opens this class) and the constructor from sync code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from causal_grpo.memory.backends import (
    CONNECT_TIMEOUT,
    session_settings,
    setup_once,
    setup_once_sync,
    table_exists,
    unavailable,
)
from causal_grpo.memory.results import (
    ARM_EVALUATIONS,
    EVALUATIONS,
    PROBLEMS,
    ROLLOUTS,
    Results,
    Table,
    base_type,
)
from pydantic import BaseModel

if TYPE_CHECKING:
    import psycopg

PREFIX = "causal_grpo_"
TABLES = (ROLLOUTS, PROBLEMS, EVALUATIONS, ARM_EVALUATIONS)
_SETUP_LOCK = 0x63677273  # advisory lock key around creating the tables: CREATE IF NOT EXISTS races
_WHAT = "the result tables"


def _column(table: Table, field: str, annotation: Any) -> str:
    if field in table.json_fields:
        kind = "jsonb"
    else:
        kind = {int: "bigint", float: "double precision", bool: "boolean"}.get(base_type(annotation), "text")
    return f"{field} {kind}" + (" NOT NULL" if field in table.pk else "")


def _create(table: Table) -> str:
    columns = [_column(table, f, info.annotation) for f, info in table.model.model_fields.items()]
    return (
        f"CREATE TABLE IF NOT EXISTS {PREFIX}{table.name} ({', '.join(columns)}, PRIMARY KEY ({', '.join(table.pk)}))"
    )


async def _tables_exist(conn: psycopg.AsyncConnection) -> bool:
    """Whether every table exists with every column its model has (a newer version may add columns)."""
    for table in TABLES:
        if not await table_exists(conn, PREFIX + table.name):
            return False
        rows = await (
            await conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = %s AND table_schema = ANY(current_schemas(false))",
                (PREFIX + table.name,),
            )
        ).fetchall()
        if set(table.model.model_fields) - {r[0] for r in rows}:
            return False
    return True


async def _create_tables(conn: psycopg.AsyncConnection) -> None:
    async with conn.transaction():  # all or none, whenever the process dies
        for table in TABLES:
            await conn.execute(_create(table))  # type: ignore[arg-type]  # names come from our own models
            for field, info in table.model.model_fields.items():
                if field not in table.pk:  # a column added since the table was made
                    column = _column(table, field, info.annotation)
                    await conn.execute(f"ALTER TABLE {PREFIX}{table.name} ADD COLUMN IF NOT EXISTS {column}")  # type: ignore[arg-type]


async def ensure_tables(url: str) -> None:
    """Create the result tables in the database at `url` unless they exist (from async code)."""
    await setup_once(url, _WHAT, _SETUP_LOCK, _tables_exist, _create_tables)


class PostgresResultsDB(Results):
    """A run's result rows in PostgreSQL (tables created on first use)."""

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.rows import dict_row

        self._json = psycopg.types.json.Jsonb
        self._lock = threading.Lock()
        try:
            self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise unavailable(url, exc) from exc
        try:
            for name, value in session_settings(self.conn.info.server_version).items():
                self.conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            # Complete tables take no lock; missing ones or missing columns are set up once.
            setup_once_sync(url, _WHAT, _SETUP_LOCK, _tables_exist, _create_tables)
        except BaseException:
            self.conn.close()
            raise

    def _upsert(self, table: Table, records: Iterable[BaseModel]) -> int:
        rows = [r.model_dump(mode="json") for r in records]
        if not rows:
            return 0
        fields = list(table.model.model_fields)
        updates = ", ".join(f"{f} = EXCLUDED.{f}" for f in fields if f not in table.pk)
        query = (
            f"INSERT INTO {PREFIX}{table.name} ({', '.join(fields)}) VALUES ({', '.join(['%s'] * len(fields))}) "
            f"ON CONFLICT ({', '.join(table.pk)}) DO UPDATE SET {updates}"
        )
        values = [[self._json(r[f]) if f in table.json_fields else r[f] for f in fields] for r in rows]
        with self._lock, self.conn.cursor() as cursor:
            cursor.executemany(query, values)  # type: ignore[arg-type]
        return len(rows)

    def _read(self, table: Table, run: str) -> list[Any]:
        query = f"SELECT * FROM {PREFIX}{table.name} WHERE run = %s ORDER BY {', '.join(table.pk)}"
        with self._lock:
            rows = self.conn.execute(query, (run,)).fetchall()  # type: ignore[arg-type]
        return [table.model.model_validate(row) for row in rows]

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
