"""The benchmark's own arithmetic and bank filling (benchmarks/bench_training.py), without a model."""

from __future__ import annotations

import pytest
from causal_grpo.graphs.driver import ProblemOutcome, TrainingResult
from causal_grpo.memory.bank import ExperienceBank, select_for
from causal_grpo.memory.selection import count_tokens
from langgraph.store.memory import InMemoryStore

from causal_grpo.context import Context
from causal_grpo.llm import Usage


@pytest.fixture(scope="module")
def bench(benchmark):
    with benchmark("bench_training") as module:
        yield module


def test_critical_path_follows_the_graph(bench):
    assert bench.critical_path(Context()) == 5  # generate, judge, fuse, judge of the fused graph, extract_critic
    assert bench.critical_path(Context(judge=False)) == 3  # generate, extract or fuse, extract_critic
    assert bench.critical_path(Context(fuse=False)) == 3  # generate, judge, extract


def test_ideal_time_is_the_critical_path_or_the_calls_spread_over_the_slots(bench):
    # 448 calls over 64 slots take 7 latencies; 40 calls are bound by a 5-call critical path
    assert bench.ideal_seconds([448, 40], path=5, latency_s=0.3, concurrency=64) == pytest.approx(7 * 0.3 + 5 * 0.3)


def test_calls_are_summed_per_batch_in_dataset_order(bench):
    problems = [
        ProblemOutcome(id=str(i), epoch=1, dataset="x", status="done", usage=Usage(calls=c))
        for i, c in enumerate([10, 20, 30, 40, 50])
    ]
    assert bench.batch_calls(TrainingResult(run="r", model="m", problems=problems), 2) == [30, 70, 50]


def test_overhead_per_call_is_the_steady_state_and_the_rest_is_the_runs_fixed_cost(bench):
    problems = [
        ProblemOutcome(id=str(i), epoch=1, dataset="x", status="done", usage=Usage(calls=c))
        for i, c in enumerate([10, 20, 30])
    ]
    result = TrainingResult(run="r", model="m", problems=problems, usage=Usage(calls=60))
    # 60 calls of 20 ms and 1 ms of service each; problems 2 and 3 (50 calls) took 1.5 s - 1.25 s = 1.25 s
    timed = bench.Timed(result, wall_s=2.0, cpu_s=1.0, ended_at=0.0, marks=[0.25, 0.9, 1.5])
    split = bench.Overhead.of(timed, service_s=0.06, latency_s=0.02)
    assert split.steady_calls == 50 and split.service_ms == pytest.approx(1.0)
    assert split.overhead_ms == pytest.approx((1.25 - 50 * 0.02) / 50 * 1000 - 1.0)  # 4 ms
    assert split.whole_run_ms == pytest.approx((2.0 - 60 * 0.02) / 60 * 1000 - 1.0)
    # what the steady state does not explain: 800 ms beyond latency, of which 60 calls x (1 + 4) ms per call
    assert split.fixed_ms == pytest.approx(800 - 60 * 5.0)


def test_spread_problems_cover_every_dataset(bench):
    problems = bench.pick_problems(12)
    assert len(problems) == 12
    assert {p.dataset for p in problems} == {"aime2024", "aime2025", "physics"}


@pytest.mark.anyio
async def test_banks_fill_with_distinct_experiences_and_selection_fits_the_budget(bench):
    store = InMemoryStore()
    await bench.fill_banks(store, 100)
    own, shared = await ExperienceBank("generator_1", store).list(), await ExperienceBank("shared", store).list()
    assert len(own) == len(shared) == 100
    assert len({e.content for e in own + shared}) == 200
    problem = bench.pick_problems(1)[0]
    shown = await select_for("generator_1", store, problem.text, 600)
    assert shown.own and shown.shared
    assert count_tokens(shown.format()) <= 600


def test_least_schedule_is_the_bound_of_the_batchs_call_graph(bench):
    ctx = Context()
    shape = {"Scaffold": 9, "LogicVerdict": 12, "FusedAnswer": 3}
    # four extractions in one problem of three groups: one is the critic's, so the chain is five calls
    assert bench.least_seconds({**shape, "ExperienceOps": 4}, 1, ctx, 2.0, 1000) == 10.0
    # two may all be the generators', the critic's extraction left out: four calls, the least of the splits
    assert bench.least_seconds({**shape, "ExperienceOps": 2}, 1, ctx, 2.0, 1000) == 8.0
    # a rollout left unjudged is not the shape the bound models
    assert bench.least_seconds({**shape, "LogicVerdict": 11, "ExperienceOps": 2}, 1, ctx, 2.0, 1000) is None
    assert bench.least_seconds({**shape, "ExperienceOps": 2}, 1, Context(fuse=False), 2.0, 1000) is None
