"""The results database of a run: one row per rollout, per problem and per evaluated dataset, in SQLite (sqlite-utils).

Rows are upserted on their primary keys, so writing a resumed problem again replaces its rows instead of
adding to them. sqlite-utils is synchronous; each write is one small transaction, and a lock makes the
object safe to call from `asyncio.to_thread` as well as directly from the event loop. The file runs in WAL
mode with `synchronous=NORMAL`, as the run's store and checkpointer do (see `backends`): no fsync per
commit, and a commit still survives the process being killed. Measured on a 6-problem simulated run, a
batch's rows took 2.0 ms to write instead of 2.7 ms.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import NoneType
from typing import Any, get_args

from causal_grpo.memory.backends import POSTGRES_SCHEMES
from causal_grpo.memory.schemas import utcnow
from pydantic import BaseModel, Field
from sqlite_utils import Database


class RolloutRecord(BaseModel):
    """One scored rollout of one agent on one problem."""

    run: str
    epoch: int = 0
    problem_id: str
    agent: str
    rollout: int
    valid: bool
    answer: str | None = None
    exact: bool | None = Field(default=None, description="The answer is exact; False when it went through a float.")
    r_ans: float = 0.0
    r_logic: float = 0.0
    r_graph: float = 0.0
    r_fusion: float | None = None
    r_total: float = 0.0
    experiences_seen: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    scaffold: dict[str, Any] | None = None
    solver: str = Field(default="scaffold", description="scaffold | text: which solver wrote the rollout.")
    text: str | None = Field(default=None, description="A text rollout's reply, as the model wrote it.")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: str = Field(default_factory=utcnow)


class ProblemRecord(BaseModel):
    """The outcome of one problem in one epoch."""

    run: str
    epoch: int = 0
    problem_id: str
    dataset: str = ""
    status: str = "done"
    group_accuracy: dict[str, float] = Field(default_factory=dict, description="Correct share per agent.")
    final_answer: str | None = None
    correct: bool | None = None
    tokens: int = 0
    seconds: float = 0.0


class EvalRecord(BaseModel):
    """One dataset of one `eval`: each arm's Mean@k and Pass@k with 95% intervals, and their paired comparison."""

    run: str
    eval_id: str
    dataset: str
    model: str = ""
    samples: int = 1
    problems: int = 0
    experiences: str = "none"
    baseline: str | None = None
    mean_at_k: float = 0.0
    mean_at_k_low: float = 0.0
    mean_at_k_high: float = 0.0
    pass_at_k: float = 0.0
    pass_at_k_low: float = 0.0
    pass_at_k_high: float = 0.0
    baseline_mean_at_k: float | None = None
    baseline_pass_at_k: float | None = None
    difference: float | None = Field(default=None, description="Mean@k of experiences minus baseline.")
    difference_low: float | None = None
    difference_high: float | None = None
    p_value: float | None = None
    mcnemar_p: float | None = Field(default=None, description="Exact McNemar test of Pass@k.")
    significant: bool | None = None
    verdict: str | None = None
    created_at: str = Field(default_factory=utcnow)


class ArmEvalRecord(BaseModel):
    """One arm on one dataset of one `eval`: its Mean@k and Pass@k with 95% intervals, its comparison and cost."""

    run: str
    eval_id: str
    arm: str
    dataset: str
    solver: str = "scaffold"
    banks: str = "none"
    model: str = ""
    samples: int = 1
    problems: int = 0
    mean_at_k: float = 0.0
    mean_at_k_low: float = 0.0
    mean_at_k_high: float = 0.0
    pass_at_k: float = 0.0
    pass_at_k_low: float = 0.0
    pass_at_k_high: float = 0.0
    against: str | None = Field(default=None, description="The arm it is compared with; None for that arm itself.")
    difference: float | None = Field(default=None, description="Mean@k of this arm minus the against arm's.")
    difference_low: float | None = None
    difference_high: float | None = None
    p_value: float | None = None
    mcnemar_p: float | None = None
    verdict: str | None = None
    calls: int = Field(default=0, description="Model calls of the arm over every dataset.")
    tokens: int = Field(default=0, description="Prompt and completion tokens of the arm over every dataset.")
    created_at: str = Field(default_factory=utcnow)


@dataclass(frozen=True)
class Table:
    """A results table: its rows' model, primary key and the fields stored as JSON."""

    name: str
    model: type[BaseModel]
    pk: tuple[str, ...]
    json_fields: tuple[str, ...]


ROLLOUTS = Table(
    "rollouts",
    RolloutRecord,
    ("run", "epoch", "problem_id", "agent", "rollout"),
    ("experiences_seen", "errors", "scaffold"),
)
PROBLEMS = Table("problems", ProblemRecord, ("run", "epoch", "problem_id"), ("group_accuracy",))
EVALUATIONS = Table("evaluations", EvalRecord, ("run", "eval_id", "dataset"), ())
ARM_EVALUATIONS = Table("arm_evaluations", ArmEvalRecord, ("run", "eval_id", "arm", "dataset"), ())


class Results(ABC):
    """A run's result rows; `ResultsDB` keeps them in SQLite, `PostgresResultsDB` in PostgreSQL."""

    @abstractmethod
    def _upsert(self, table: Table, records: Iterable[BaseModel]) -> int: ...

    @abstractmethod
    def _read(self, table: Table, run: str) -> list[Any]: ...

    def record_rollouts(self, records: Iterable[RolloutRecord]) -> int:
        """Insert or replace rollout rows; returns how many were written."""
        return self._upsert(ROLLOUTS, records)

    def record_problems(self, records: Iterable[ProblemRecord]) -> int:
        """Insert or replace problem rows; returns how many were written."""
        return self._upsert(PROBLEMS, records)

    def record_evaluations(self, records: Iterable[EvalRecord]) -> int:
        """Insert or replace evaluation rows; returns how many were written."""
        return self._upsert(EVALUATIONS, records)

    def record_arm_evaluations(self, records: Iterable[ArmEvalRecord]) -> int:
        """Insert or replace per-arm evaluation rows; returns how many were written."""
        return self._upsert(ARM_EVALUATIONS, records)

    def arm_evaluations(self, run: str) -> list[ArmEvalRecord]:
        """Every per-arm evaluation row of a run, ordered by eval id, arm and dataset."""
        return self._read(ARM_EVALUATIONS, run)

    def rollouts(self, run: str) -> list[RolloutRecord]:
        """Every rollout of a run, ordered by epoch, problem, agent and rollout index."""
        return self._read(ROLLOUTS, run)

    def problems(self, run: str) -> list[ProblemRecord]:
        """Every problem row of a run, ordered by epoch and problem id."""
        return self._read(PROBLEMS, run)

    def evaluations(self, run: str) -> list[EvalRecord]:
        """Every evaluation row of a run, ordered by eval id and dataset."""
        return self._read(EVALUATIONS, run)

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""


def open_results(target: str | Path) -> Results:
    """The results of a run: a `results.db` file at a path, or the result tables of a PostgreSQL database URL."""
    if str(target).startswith(POSTGRES_SCHEMES):
        from causal_grpo.memory.results_postgres import PostgresResultsDB

        return PostgresResultsDB(str(target))
    return ResultsDB(target)


def results_path(home: str | Path, run: str) -> Path:
    """Where a run's results database lives: `<home>/runs/<run>/results.db`."""
    return Path(home) / "runs" / run / "results.db"


def base_type(annotation: Any) -> Any:
    """A field's type without its `| None`: what a column of either database is made from."""
    return next((a for a in get_args(annotation) if a is not NoneType), annotation)


def _column_type(annotation: Any) -> type:
    """The SQLite column type of a field: its number type, else text (JSON for lists and dicts)."""
    return {int: int, float: float, bool: int}.get(base_type(annotation), str)


class ResultsDB(Results):
    """A run's results database (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        """Open or create the database file at `path` (parent folders included)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = Database(sqlite3.connect(self.path, check_same_thread=False, timeout=30))
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        for table in (ROLLOUTS, PROBLEMS, EVALUATIONS, ARM_EVALUATIONS):
            columns = {field: _column_type(info.annotation) for field, info in table.model.model_fields.items()}
            self.db.table(table.name).create(columns, pk=table.pk, not_null=set(table.pk), if_not_exists=True)

    def _upsert(self, table: Table, records: Iterable[BaseModel]) -> int:
        rows = [r.model_dump(mode="json") for r in records]
        for row in rows:
            row.update({field: json.dumps(row[field]) for field in table.json_fields})
        with self._lock:
            # alter: a results.db written before a column was added gets it on first write.
            self.db.table(table.name).upsert_all(rows, pk=table.pk, alter=True)
        return len(rows)

    def _read(self, table: Table, run: str) -> list[Any]:
        with self._lock:
            rows = list(self.db.table(table.name).rows_where("run = ?", [run], order_by=", ".join(table.pk)))
        for row in rows:
            row.update({field: json.loads(row[field]) for field in table.json_fields if row[field] is not None})
        return [table.model.model_validate(row) for row in rows]

    def close(self) -> None:
        """Close the connection."""
        self.db.close()
