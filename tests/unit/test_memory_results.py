"""The results database: idempotent upserts and readers."""

from __future__ import annotations

import asyncio

from causal_grpo.memory.results import ProblemRecord, ResultsDB, RolloutRecord, results_path


def rollout(index: int, r_total: float = 0.5, **fields) -> RolloutRecord:
    return RolloutRecord(
        run="r1",
        problem_id="aime2024_001",
        agent="generator_1",
        rollout=index,
        valid=True,
        answer="204",
        r_total=r_total,
        experiences_seen=["G1-001", "S-002"],
        errors=[],
        scaffold={"nodes": [{"id": "a", "kind": "given", "value": "1"}], "target": "a"},
        created_at="2025-01-01T00:00:00+00:00",
        **fields,
    )


def test_upserts_are_idempotent_and_round_trip(tmp_path):
    path = results_path(tmp_path, "r1")
    assert path == tmp_path / "runs" / "r1" / "results.db"
    db = ResultsDB(path)
    assert db.record_rollouts([rollout(0), rollout(1)]) == 2
    db.record_rollouts([rollout(1, r_total=0.9, r_fusion=0.25), rollout(0)])
    rows = db.rollouts("r1")
    assert [(r.rollout, r.r_total, r.r_fusion) for r in rows] == [(0, 0.5, None), (1, 0.9, 0.25)]
    assert rows[0] == rollout(0)
    problem = ProblemRecord(
        run="r1", problem_id="aime2024_001", dataset="aime2024", group_accuracy={"generator_1": 2 / 3}
    )
    assert db.record_problems([problem]) == 1
    db.record_problems([problem.model_copy(update={"correct": True, "final_answer": "204", "seconds": 3.5})])
    assert db.problems("r1") == [problem.model_copy(update={"correct": True, "final_answer": "204", "seconds": 3.5})]
    assert db.rollouts("other") == [] and db.problems("other") == []
    db.close()
    reopened = ResultsDB(path)
    assert len(reopened.rollouts("r1")) == 2
    reopened.close()


def test_writes_from_worker_threads(tmp_path):
    db = ResultsDB(tmp_path / "results.db")

    async def write_all():
        await asyncio.gather(*(asyncio.to_thread(db.record_rollouts, [rollout(i)]) for i in range(20)))

    asyncio.run(write_all())
    assert [r.rollout for r in db.rollouts("r1")] == list(range(20))
    db.close()


def test_database_is_wal_without_fsync_per_commit(tmp_path):
    db = ResultsDB(tmp_path / "results.db")
    assert db.db.execute("pragma journal_mode").fetchone() == ("wal",)
    assert db.db.execute("pragma synchronous").fetchone() == (1,)  # NORMAL; FULL (2) is the default
    db.close()


def _older_rollouts_table(db) -> None:
    """A rollouts table as a version before the `exact` column wrote it."""
    columns = [f for f in RolloutRecord.model_fields if f != "exact"]
    db.execute(f"CREATE TABLE rollouts ({', '.join(columns)}, PRIMARY KEY (run, epoch, problem_id, agent, rollout))")


def test_a_results_db_written_by_an_older_version_gains_new_columns(tmp_path):
    import sqlite3

    path = tmp_path / "results.db"
    with sqlite3.connect(path) as conn:
        _older_rollouts_table(conn)
    db = ResultsDB(path)
    db.record_rollouts(
        [RolloutRecord(run="r", problem_id="p", agent="generator_1", rollout=1, valid=True, exact=False)]
    )
    assert db.rollouts("r")[0].exact is False
    db.close()


def test_postgres_result_tables_of_an_older_version_gain_new_columns(new_database):
    import psycopg
    from causal_grpo.memory.results import ROLLOUTS
    from causal_grpo.memory.results_postgres import PREFIX, PostgresResultsDB, _column

    with new_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            fields = RolloutRecord.model_fields.items()
            columns = [_column(ROLLOUTS, f, info.annotation) for f, info in fields if f != "exact"]
            conn.execute(
                f"CREATE TABLE {PREFIX}rollouts ({', '.join(columns)}, PRIMARY KEY ({', '.join(ROLLOUTS.pk)}))"
            )
        db = PostgresResultsDB(url)
        db.record_rollouts(
            [RolloutRecord(run="r", problem_id="p", agent="generator_1", rollout=1, valid=True, exact=True)]
        )
        assert db.rollouts("r")[0].exact is True
        db.close()
