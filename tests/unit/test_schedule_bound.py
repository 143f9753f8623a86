"""The schedule bound of benchmarks/schedule_bound.py: the batch graph it builds and the two schedules' lengths."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bound(benchmark):
    with benchmark("schedule_bound") as module:
        yield module


def test_one_problem_is_its_chain_of_five_calls(bound):
    calls = bound.batch(problems=1, generators=3, rollouts=3, extractions=2, critic_extractions=1)
    behind = [c.behind for c in calls]
    assert len(calls) == 9 + 9 + 3 + 3 + 2 + 1
    # rollouts, their judges, fusions, the fusions' judges and the extractions, the critic's extraction
    assert [behind.count(n) for n in (4, 3, 2, 1, 0)] == [9, 9, 3, 3 + 2, 1]
    assert max(c.tail for c in calls) == 5  # generate, judge, fuse, judge the fusion, the critic's extraction
    assert bound.least_latencies(calls, 1000) == bound.greedy_latencies(calls, 1000) == 5


def test_without_the_critics_extraction_the_chain_is_four_calls(bound):
    calls = bound.batch(problems=1, generators=3, rollouts=3, extractions=3, critic_extractions=0)
    assert bound.greedy_latencies(calls, 1000) == 4


def test_one_slot_runs_every_call_in_turn(bound):
    calls = bound.batch(problems=2, generators=2, rollouts=2, extractions=1, critic_extractions=2)
    assert bound.least_latencies(calls, 1) == bound.greedy_latencies(calls, 1) == len(calls)


def test_the_chains_cost_a_latency_the_calls_alone_do_not(bound):
    # 90 problems, every group extracted, every critic extraction run: 2,520 calls fill 9.84 latencies of
    # 256 slots, but the 2,430 calls with a call behind them need 10 latencies before the last one can start
    calls = bound.batch(problems=90, generators=3, rollouts=3, extractions=270, critic_extractions=90)
    assert len(calls) == 2520
    assert bound.least_latencies(calls, 256) == 11
    assert bound.greedy_latencies(calls, 256) >= 11
