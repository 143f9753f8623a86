"""The sandbox: model-written programs that blow up are stopped from outside, and the pool carries on.

Each blow-up runs several times (the trace-hook budget this replaced let one escape now and then), next
to ordinary scaffolds, on a pool with short limits so the file stays quick; the limits are the product's
mechanism, only their sizes differ.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from causal_grpo.api import atrain
from causal_grpo.context import Context
from causal_grpo.problems import load_problems
from causal_grpo.scaffold import Computation, Limits, Sandbox
from causal_grpo.scaffold import sandbox as sandbox_module
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.responders import RUNAWAY
from causal_grpo.simulator.runner import SimulatorServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LIMITS = Limits(time_limit_s=1.0, wall_limit_s=2.5)
START_UP_S = 2.0  # a replaced worker forks from the warm fork server; generous for a loaded CI machine
ROUNDS = 3

# (formula, the error kind it must end in); every one would run for minutes, or forever, unbounded.
BLOW_UPS = [
    ("9**9**9**9", "limit"),  # a huge tower
    ("integrate(exp(x**x**x), x, 0, 10**6)", "timeout"),  # an integral that never finishes
    ("totient(2**400 + 1)", "limit"),  # factoring a huge number
    ("sum(sum(factorial(j), j, 1, k), k, 1, 3000)", "timeout"),  # nested factorial sums
    ("num_digits(7**(10**7))", "limit"),  # digits of a huge power
    (RUNAWAY, "timeout"),  # big-integer C code: no Python-level budget can interrupt it
]


def graph(formula: str) -> dict:
    return {
        "nodes": [{"id": "d", "kind": "given", "value": "7"}, {"id": "t", "kind": "derived", "formula": formula}],
        "target": "t",
    }


ORDINARY = graph("d*6")


@pytest.fixture(scope="module")
def sandbox():
    pool = Sandbox(2, LIMITS).start()
    yield pool
    pool.stop()


@pytest.mark.parametrize(("formula", "kind"), BLOW_UPS, ids=[f[:24] for f, _ in BLOW_UPS])
async def test_a_blow_up_is_refused_within_the_limit_every_time_and_the_pool_carries_on(sandbox, formula, kind):
    for _ in range(ROUNDS):
        started = time.monotonic()
        blown, ordinary = await asyncio.gather(sandbox.acompute(graph(formula)), sandbox.acompute(ORDINARY))
        elapsed = time.monotonic() - started
        assert not blown.valid and [e.kind for e in blown.errors] == [kind], blown.errors
        assert elapsed < LIMITS.wall_limit_s + START_UP_S, f"refused after {elapsed:.1f} s"
        assert ordinary.valid and ordinary.answer and ordinary.answer.exact == "42"
        after = await sandbox.acompute(ORDINARY)
        assert after.valid and after.answer and after.answer.exact == "42"


async def test_a_program_past_the_wall_limit_has_its_worker_killed_and_replaced():
    pool = Sandbox(1, Limits(time_limit_s=1.0, wall_limit_s=1.5)).start()  # RUNAWAY's first power: 4 s of C here
    try:
        before = await asyncio.wrap_future(pool.submit(os.getpid))
        started = time.monotonic()
        result = await pool.acompute(graph(RUNAWAY))
        assert time.monotonic() - started < 1.5 + START_UP_S
        assert result.errors[0].message == "time limit: still computing after 1.5 s, stopped (worker replaced)"
        after = await asyncio.wrap_future(pool.submit(os.getpid))
        assert after != before
        with pytest.raises(ProcessLookupError):
            os.kill(before, 0)
        assert (await pool.acompute(ORDINARY)).valid
    finally:
        pool.stop()


async def test_memory_past_the_cap_is_reported_as_the_memory_limit(sandbox):
    result = await sandbox.aoutcome(sandbox.submit(bytearray, 8 * 2**30))
    assert result.errors[0].message == "memory limit: the computation needed more than 1024 MiB"
    assert (await sandbox.acompute(ORDINARY)).valid


async def test_a_scaffold_that_outgrows_a_small_cap_gets_a_memory_limit_error():
    pool = Sandbox(1, Limits(time_limit_s=2.0, wall_limit_s=5.0, memory_limit_mb=2)).start()
    try:
        for _ in range(ROUNDS * 3):  # the cap once ended the worker about one time in forty
            result = await pool.acompute(graph("sum(k**(1/3), k, 1, 3000)"))
            assert [e.kind for e in result.errors] == ["limit"], result.errors
            assert result.errors[0].message.startswith("memory limit")
            assert (await pool.acompute(ORDINARY)).valid
    finally:
        pool.stop()


def test_a_memory_error_that_escapes_the_computer_is_still_a_memory_limit(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise MemoryError  # as when reporting one MemoryError at the cap raises another

    monkeypatch.setattr(sandbox_module, "compute", out_of_memory)
    result = Computation.model_validate_json(sandbox_module._compute_json(json.dumps(ORDINARY), 1.0))
    assert [(e.kind, e.message) for e in result.errors] == [("limit", "memory limit: out of memory")]


@pytest.mark.parametrize(("task", "reason"), [((os._exit, 3), "exit code 3"), ((os.abort,), "signal SIGABRT")])
async def test_a_worker_that_dies_any_other_way_is_replaced_and_the_result_says_so(sandbox, task, reason):
    result = await sandbox.aoutcome(sandbox.submit(*task))
    assert result.errors[0].message == f"the computer's worker died ({reason}); it was replaced"
    assert (await sandbox.acompute(ORDINARY)).valid


async def _rollouts(config: SimulatorConfig, tmp_path, name: str) -> dict:
    """Every generator rollout of a short run without learning, by (problem, agent, index)."""
    problems = load_problems("full", 3)
    with SimulatorServer(config) as sim:
        ctx = Context(
            run=name,
            model="simulated",
            base_url=sim.base_url,
            rollouts=3,
            generators=[1, 2],
            seed=7,
            fuse=False,
            tau=1.0,
        )  # no experiences, so both runs send the same prompts
        result = await atrain(
            problems, context=ctx, store=InMemoryStore(), checkpointer=InMemorySaver(), home=tmp_path, batch_size=3
        )
    assert [p.status for p in result.problems] == ["done"] * 3
    rows = {}
    for g in (1, 2):
        for line in (tmp_path / "runs" / name / f"generator_{g}_rollouts.jsonl").read_text().splitlines():
            record = json.loads(line)
            rows.update({(record["id"], r["agent"], r["index"]): r for r in record["rollouts"]})
    return rows


async def test_a_training_run_where_some_rollouts_run_away_finishes_with_those_invalid_and_the_rest_unchanged(
    tmp_path,
):
    plain = await _rollouts(SimulatorConfig(seed=7), tmp_path, "plain")
    wild = await _rollouts(SimulatorConfig(seed=7, runaway_rate=0.3), tmp_path, "wild")
    assert plain.keys() == wild.keys()
    ran_away = [k for k, r in wild.items() if r["scaffold"] and RUNAWAY in str(r["scaffold"])]
    assert 0 < len(ran_away) < len(wild)
    for key, rollout in wild.items():
        if key in ran_away:
            assert not rollout["valid"] and rollout["errors"][0].startswith("time limit")
            assert rollout["r_ans"] == 0.0
        else:
            same = ("valid", "answer", "r_ans", "r_graph", "r_logic", "r_total", "errors")
            assert {f: rollout[f] for f in same} == {f: plain[key][f] for f in same}
