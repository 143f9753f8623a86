"""Scale-out benchmark: throughput of a fleet run with 1, 2 and 4 worker processes on one PostgreSQL database.

Each run trains one batch of problems (24 by default) against the bundled simulator (a test double with a
fixed latency, 150 ms by default, no jitter, no faults, served from its own process, as in
bench_training.py). The benchmark process is the driver only (`atrain(..., db=URL, local_worker=False)`);
N `causal-grpo worker --concurrency 16` processes do the jobs. The run's `Context.concurrency` (4) bounds
the model calls in flight of each worker process (the limiter is per process), so N workers have N x 4
slots and 16 jobs per worker are enough for that bound, not the job count, to bind. Every run gets a fresh
database (`causal_grpo_bench_<hex>` on the server of `CAUSAL_GRPO_BENCH_DB`, default the local one with
trust auth; dropped afterwards) and freshly started workers, so every run starts from empty banks.

Per worker count it reports the median over `--repeats` runs of: wall time of the driver's `atrain`,
model calls (the problems' usage, checked against the simulator's count), calls/s and problems/s, the
speed-up over the first worker count, the ideal time and wall / ideal. The ideal is bench_training's:
max(critical path x latency, calls x latency / (N x 4)) per batch. Beside them: the worker processes' CPU
seconds during the run and the share of the machine's cores busy (Linux /proc; every process, the
simulator's and PostgreSQL's included), since on a small machine more workers can be CPU-bound rather
than latency-bound; the output says so when they are. A starved CPU also changes the work: the computer
gives each scaffold 2 s of wall clock, so rollouts that ran out of it (counted from the run's result rows)
score differently and the extractions they trigger, hence the calls, differ from a run with CPU to spare.
Also the calls in flight, the jobs each worker took, and how long the problems' jobs and the bank updates
(one at a time, under a lock) took.

Run it with `.venv/bin/python benchmarks/bench_fleet.py [--quick]` (a PostgreSQL server must be up); the
figures go to `benchmarks/results/fleet-<timestamp>.jsonl`, one JSON object per line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from bench_training import (
    Figure,
    InFlightSampler,
    Simulator,
    batch_calls,
    check_run,
    critical_path,
    ideal_seconds,
    machine_ticks,
    pick_problems,
    save,
)
from causal_grpo.memory.backends import open_backends
from causal_grpo.memory.results import open_results

from causal_grpo import Context, TrainingResult, atrain
from causal_grpo.fleet import open_app

SERVER = os.environ.get("CAUSAL_GRPO_BENCH_DB", "postgresql://postgres@127.0.0.1:5432/test")
WORKER = Path(sys.executable).parent / "causal-grpo"
REGISTER_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
TICKS = os.sysconf("SC_CLK_TCK")
CPU_BOUND = 0.9  # share of a core (a worker) or of every core (the machine) above which CPU sets the pace
# how causal_grpo/scaffold/computer.py words a scaffold that ran out of its wall-clock limit (a starved CPU's sign)
COMPUTE_TIMEOUT = "time limit exceeded"
_JOBS_PER_WORKER = """SELECT worker_id, count(*) FROM procrastinate_jobs
                       WHERE task_name = 'causal_grpo:run_problem' GROUP BY worker_id"""
_PHASES = """SELECT j.task_name, extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'succeeded')
                                          - min(e.at) FILTER (WHERE e.type = 'started'))
               FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id GROUP BY j.task_name"""


@contextmanager
def bench_database(server: str) -> Iterator[str]:
    """The URL of a new database on `server`, dropped on exit (its connections closed by force)."""
    name = f"causal_grpo_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(server)._replace(path=f"/{name}").geturl()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Workers:
    """`count` worker processes on the database at `url`; stopped on exit, whatever ended the block."""

    def __init__(self, url: str, count: int, jobs: int, logs: Path) -> None:
        self.url, self.count, self.jobs, self.logs = url, count, jobs, logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ids: list[int] = []

    def __enter__(self) -> Workers:
        try:
            for i in range(self.count):
                with (self.logs / f"worker{i}.log").open("w") as log:
                    command = [str(WORKER), "worker", "--db", self.url, "--concurrency", str(self.jobs)]
                    self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def registered(self) -> list[int]:
        """Wait until every worker has registered in `procrastinate_workers`; their ids."""
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while len(self.ids) < self.count:
            dead = [i for i, p in enumerate(self.processes) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                log = (self.logs / f"worker{dead[0] if dead else 0}.log").read_text()[-2000:]
                raise RuntimeError(f"{self.count} worker(s) did not register (exited: {dead}): {log}")
            with psycopg.connect(self.url) as conn:
                self.ids = [r[0] for r in conn.execute("SELECT id FROM procrastinate_workers ORDER BY id")]
            await asyncio.sleep(0.2)
        return self.ids

    def cpu(self) -> list[float]:
        """Each worker's CPU seconds so far."""
        return [cpu_seconds(p.pid) for p in self.processes]

    def stop(self) -> None:
        """SIGTERM (a worker finishes its jobs first), then SIGKILL after `STOP_TIMEOUT_S`."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Run:
    """One measured fleet run."""

    workers: int
    result: TrainingResult
    wall_s: float
    ideal_s: float
    critical_path: int
    worker_cpu_s: list[float]
    driver_cpu_s: float
    machine_busy: float  # share of all cores busy during the run, every process on the machine
    mean_in_flight: float
    max_in_flight: int
    jobs_per_worker: list[int]
    phases_s: dict[str, float]
    compute_timeouts: int  # rollouts whose scaffold computation timed out

    @property
    def calls(self) -> int:
        """Model calls of the run, from its problems' usage."""
        return self.result.usage.calls


def job_figures(url: str, worker_ids: list[int]) -> tuple[list[int], dict[str, float]]:
    """The problems' jobs each worker took, and each task's span from its first start to its last success."""
    with psycopg.connect(url) as conn:
        taken = dict(conn.execute(_JOBS_PER_WORKER).fetchall())
        phases = {task.removeprefix("causal_grpo:"): round(float(s), 3) for task, s in conn.execute(_PHASES)}
    return [taken.get(i, 0) for i in worker_ids], phases


def compute_timeouts(url: str, run: str) -> int:
    """Rollouts of the run whose scaffold computation hit the computer's wall-clock limit."""
    results = open_results(url)
    try:
        return sum(any(e.startswith(COMPUTE_TIMEOUT) for e in r.errors) for r in results.rollouts(run))
    finally:
        results.close()


async def fleet_run(args: argparse.Namespace, sim: Simulator, workers: int, repeat: int, home: Path) -> Run:
    """Train one batch with `workers` fresh worker processes on a fresh database."""
    ctx = Context(
        run=f"bench-fleet-{workers}",
        model="simulated",
        base_url=sim.base_url,
        concurrency=args.concurrency,
        seed=args.seed,
    )
    problems = pick_problems(args.problems)
    folder = home / f"{workers}w-{repeat}"
    folder.mkdir()
    with bench_database(args.server) as url:
        async with open_backends(url), open_app(url):  # the tables exist before the workers look for them
            pass
        with Workers(url, workers, args.worker_jobs, folder) as fleet:
            ids = await fleet.registered()
            sim.reset()
            cpu, busy = fleet.cpu(), machine_ticks()
            wall, driver_cpu = time.perf_counter(), time.process_time()
            with InFlightSampler(sim) as sampler:
                result = await atrain(
                    problems, context=ctx, db=url, batch_size=len(problems), local_worker=False, home=folder
                )
            wall, driver_cpu = time.perf_counter() - wall, time.process_time() - driver_cpu
            busy_after, cpu_after = machine_ticks(), fleet.cpu()
            stats = check_run(result, sim)
            jobs, phases = job_figures(url, ids)
            timeouts = compute_timeouts(url, ctx.run)
    path = critical_path(ctx)
    ideal = ideal_seconds(batch_calls(result, len(problems)), path, args.latency_ms / 1000, workers * args.concurrency)
    return Run(
        workers=workers,
        result=result,
        wall_s=wall,
        ideal_s=ideal,
        critical_path=path,
        worker_cpu_s=[round(b - a, 2) for a, b in zip(cpu, cpu_after, strict=True)],
        driver_cpu_s=driver_cpu,
        machine_busy=(busy_after[0] - busy[0]) / max(1, busy_after[1] - busy[1]),
        mean_in_flight=statistics.fmean(sampler.samples or [0]),
        max_in_flight=stats["max_in_flight"],
        jobs_per_worker=jobs,
        phases_s=phases,
        compute_timeouts=timeouts,
    )


def cpu_verdict(run: Run) -> str:
    """Whether CPU rather than the model's latency set the pace of a run (and changed its results), and why."""
    busiest = max(run.worker_cpu_s) / run.wall_s
    signs = []
    if run.machine_busy >= CPU_BOUND:
        signs.append(f"{run.machine_busy:.0%} of {os.cpu_count()} cores busy")
    if busiest >= CPU_BOUND:
        signs.append(f"the busiest worker used {busiest:.0%} of a core")
    if run.compute_timeouts:
        signs.append(f"{run.compute_timeouts} scaffold computation(s) ran out of their wall-clock limit")
    return "CPU-bound: " + ", ".join(signs) if signs else ""


def figures_of(args: argparse.Namespace, runs: dict[int, list[Run]]) -> list[Figure]:
    """One figure per worker count: the median run's throughput and what explains it."""
    figures = []
    base_wall: float | None = None
    for workers, repeats in runs.items():
        run = sorted(repeats, key=lambda r: r.wall_s)[(len(repeats) - 1) // 2]  # the median (lower) run
        base_wall = base_wall or run.wall_s
        done = sum(p.status == "done" for p in run.result.problems)
        figures.append(
            Figure(
                name=f"throughput with {workers} worker(s)",
                value=round(run.calls / run.wall_s, 1),
                unit="calls/s",
                detail={
                    "workers": workers,
                    "wall_s": round(run.wall_s, 3),
                    "walls_s": [round(r.wall_s, 3) for r in repeats],
                    "calls": run.calls,
                    "calls_per_run": [r.calls for r in repeats],
                    "problems": len(run.result.problems),
                    "problems_done": done,
                    "problems_per_s": round(done / run.wall_s, 3),
                    "speed_up": round(base_wall / run.wall_s, 3),
                    "ideal_s": round(run.ideal_s, 3),
                    "wall_over_ideal": round(run.wall_s / run.ideal_s, 3),
                    "latency_ms": args.latency_ms,
                    "concurrency_per_worker": args.concurrency,
                    "jobs_per_worker_bound": args.worker_jobs,
                    "critical_path_calls": run.critical_path,
                    "mean_in_flight": round(run.mean_in_flight, 1),
                    "max_in_flight": run.max_in_flight,
                    "run_problem_jobs_per_worker": run.jobs_per_worker,
                    "phase_s": run.phases_s,
                    "worker_cpu_s": run.worker_cpu_s,
                    "driver_cpu_s": round(run.driver_cpu_s, 2),
                    "cpu_ms_per_call": round(sum(run.worker_cpu_s) / run.calls * 1000, 2),
                    "machine_busy": round(run.machine_busy, 3),
                    "cores": os.cpu_count(),
                    "computer_timeouts": run.compute_timeouts,
                    "cpu_bound": cpu_verdict(run),
                },
            )
        )
    return figures


async def run_all(args: argparse.Namespace) -> list[Figure]:
    """Every worker count, `--repeats` runs each, one simulator for all."""
    runs: dict[int, list[Run]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="causal-grpo-bench-fleet-") as tmp,
        Simulator(args.latency_ms, args.seed) as sim,
    ):
        for workers in args.workers:
            runs[workers] = [await fleet_run(args, sim, workers, k, Path(tmp)) for k in range(args.repeats)]
    return figures_of(args, runs)


def summary(figures: list[Figure]) -> str:
    """A row per worker count, then what the columns mean and which runs were CPU-bound."""
    head = f"{'workers':>7} {'wall s':>7} {'calls':>5} {'calls/s':>7} {'probl/s':>7} {'speed-up':>8} {'ideal s':>7} "
    head += f"{'wall/ideal':>10} {'jobs s':>6} {'updates s':>9} {'in flight':>9} {'CPU s':>5} {'busy':>4}"
    lines = [head, "-" * len(head)]
    for f in figures:
        d = f.detail
        lines.append(
            f"{d['workers']:>7} {d['wall_s']:>7.2f} {d['calls']:>5} {f.value:>7.1f} {d['problems_per_s']:>7.2f} "
            f"{d['speed_up']:>7.2f}x {d['ideal_s']:>7.2f} {d['wall_over_ideal']:>9.2f}x "
            f"{d['phase_s'].get('run_problem', 0):>6.2f} {d['phase_s'].get('learn', 0):>9.2f} "
            f"{d['mean_in_flight']:>4.1f}/{d['workers'] * d['concurrency_per_worker']:<4} "
            f"{sum(d['worker_cpu_s']):>5.1f} {d['machine_busy']:>4.0%}"
        )
    first = figures[0].detail
    lines += [
        "",
        f"{first['problems']} problems in one batch, {first['latency_ms']:g} ms per call, "
        f"{first['concurrency_per_worker']} calls in flight per worker, medians of {len(first['walls_s'])} run(s).",
        "jobs s: first problem job started to last one done; updates s: the same for the bank updates (one at a",
        "time); in flight: mean calls in flight / slots; CPU s: the workers' CPU; busy: share of the machine's",
        f"{first['cores']} cores busy during the run, every process.",
    ]
    for f in figures:
        d = f.detail
        lines.append(
            f"{d['workers']} worker(s): {d['cpu_bound'] or 'not CPU-bound'}; CPU s per worker {d['worker_cpu_s']}, "
            f"problem jobs per worker {d['run_problem_jobs_per_worker']}, walls {d['walls_s']}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's knobs; the defaults are the documented full run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 and 2 workers, 3 problems, 20 ms, one run each.")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="Worker counts, in order.")
    parser.add_argument("--concurrency", type=int, default=4, help="Model calls in flight per worker (the run's).")
    parser.add_argument("--worker-jobs", type=int, default=16, help="Jobs each worker runs at once.")
    parser.add_argument("--latency-ms", type=float, default=150.0, help="Simulator latency.")
    # enough problems that 4 workers x 4 slots stay busy past the batch's chains of dependent calls
    parser.add_argument("--problems", type=int, default=24, help="Problems, all in one batch.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per worker count; the median is reported.")
    parser.add_argument("--seed", type=int, default=0, help="Simulator and run seed.")
    parser.add_argument("--server", default=SERVER, help="PostgreSQL server URL (default: $CAUSAL_GRPO_BENCH_DB).")
    parser.add_argument("--out", type=Path, default=None, help="JSONL file (default: benchmarks/results/fleet-<time>).")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.problems, args.latency_ms, args.repeats = [1, 2], 3, 20.0, 1
    return args


def main(argv: list[str] | None = None) -> list[Figure]:
    """Run the benchmark, write the JSONL figures and print the table."""
    args = parse_args(argv)
    started = datetime.now(UTC)
    figures = asyncio.run(run_all(args))
    out = save(figures, started, args.out, prefix="fleet-")
    print(summary(figures))
    print(f"\nfigures written to {out}")
    return figures


if __name__ == "__main__":
    main()
