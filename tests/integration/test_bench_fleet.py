"""The scale-out benchmark (benchmarks/bench_fleet.py) in its quick mode: real workers, databases, simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bench(benchmark):
    with benchmark("bench_fleet") as module:
        yield module


def test_quick_run_measures_one_and_two_workers_and_leaves_nothing_behind(bench, new_database, monkeypatch, tmp_path):
    databases: list[str] = []
    workers: list = []
    create = bench.bench_database

    @contextmanager
    def recorded_database(server: str) -> Iterator[str]:
        with create(server) as url:
            databases.append(url.rsplit("/", 1)[1])
            yield url

    class RecordedWorkers(bench.Workers):
        def __enter__(self):
            workers.append(self)
            return super().__enter__()

    monkeypatch.setattr(bench, "bench_database", recorded_database)
    monkeypatch.setattr(bench, "Workers", RecordedWorkers)
    out = tmp_path / "fleet.jsonl"
    # a database of the test server serves as the admin connection: no server skips, or fails in CI
    with new_database() as server:
        figures = bench.main(["--quick", "--server", server, "--out", str(out)])
        with psycopg.connect(server) as conn:
            left = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (databases,)).fetchall()

    assert len(databases) == 2 and not left
    assert [len(w.processes) for w in workers] == [1, 2]
    assert all(p.returncode is not None for w in workers for p in w.processes)
    details = [f.detail for f in figures]
    assert [d["workers"] for d in details] == [1, 2]
    for figure, d in zip(figures, details, strict=True):
        assert d["calls"] > 0 and figure.value > 0 and d["problems_per_s"] > 0
        assert d["problems_done"] == d["problems"] == 3
        jobs = d["run_problem_jobs_per_worker"]
        assert sum(jobs) == 3 and len(jobs) == d["workers"]
        # each worker process holds the run's bound on calls in flight, so N workers never exceed N x bound
        assert 0 < d["max_in_flight"] <= d["workers"] * d["concurrency_per_worker"]
        # the calls spread over every slot bound these runs from below (far above the critical path)
        assert d["wall_over_ideal"] >= 1 and d["ideal_s"] > 0
        # a worker that took no problem may idle below one clock tick of CPU
        assert all(cpu > 0 for cpu, taken in zip(d["worker_cpu_s"], jobs, strict=True) if taken)
        assert 0 < d["machine_busy"] <= 1
    # same seed, empty banks: the same work on any fleet (the computer's limit is CPU time, so load can't move it)
    assert not any(d["computer_timeouts"] for d in details)
    assert details[0]["calls"] == details[1]["calls"]
    assert details[0]["speed_up"] == 1
    assert [json.loads(line)["name"] for line in out.read_text().splitlines()] == [f.name for f in figures]
