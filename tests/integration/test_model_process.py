"""The model process: calls over HTTP run there, and its death, a cancelled call and Ctrl-C lose nothing."""

import asyncio
import os
import signal
import time
from typing import Any

import anyio.to_thread
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from causal_grpo import llm
from causal_grpo.context import Context
from causal_grpo.llm import TransientModelError, client_for
from causal_grpo.model_process import model_process
from causal_grpo.scaffold import Scaffold
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.runner import SimulatorServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PROMPT = [SystemMessage("You write causal-graph scaffolds."), HumanMessage("What is 2 + 3?")]


def client(sim: SimulatorServer, **settings: Any) -> llm.ModelClient:
    settings = {"max_retries": 0, "max_reasks": 0, "run": "model-process", **settings}
    return client_for(Context(model="simulated", base_url=sim.base_url, **settings), "generator")


async def until(sim: SimulatorServer, key: str, value: int, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while (await anyio.to_thread.run_sync(sim.stats))[key] < value:
        assert time.monotonic() < deadline, f"the simulator never saw {key} = {value}"
        await asyncio.sleep(0.02)


def server_pid() -> int:
    pid = model_process().start().pid
    assert pid is not None and pid != os.getpid()
    return pid


async def test_a_call_goes_over_http_in_the_model_process_not_in_this_one() -> None:
    async with SimulatorServer(SimulatorConfig()) as sim:
        result = await client(sim).structured(Scaffold, PROMPT)
        served = await anyio.to_thread.run_sync(sim.stats)
    assert result.ok and served["completed"] == 1
    # no HTTP pool, limiter or ChatOpenAI was built on this loop: they live in the model process
    loop = asyncio.get_running_loop()
    assert loop not in llm._shared_pools and loop not in llm._limiters
    assert os.getpid() != server_pid()


async def test_a_dead_model_process_fails_its_calls_in_flight_and_the_next_call_starts_another() -> None:
    async with SimulatorServer(SimulatorConfig(latency_ms=30_000)) as sim:
        model = client(sim)
        before = server_pid()
        call = asyncio.create_task(model.structured(Scaffold, PROMPT))
        await until(sim, "in_flight", 1)
        os.kill(before, signal.SIGKILL)
        with pytest.raises(TransientModelError, match="the model process stopped"):
            await asyncio.wait_for(call, 20)
    async with SimulatorServer(SimulatorConfig()) as sim:
        result = await client(sim).structured(Scaffold, PROMPT)
    assert result.ok and server_pid() != before


async def test_a_cancelled_call_gives_its_slot_to_the_next() -> None:
    # one call in flight at most, 30 s a reply: the second call reaches the server only if the first's slot
    # was freed when it was cancelled
    async with SimulatorServer(SimulatorConfig(latency_ms=30_000)) as sim:
        model = client(sim, concurrency=1)
        first = asyncio.create_task(model.structured(Scaffold, PROMPT))
        await until(sim, "requests", 1)
        second = asyncio.create_task(model.structured(Scaffold, PROMPT))
        first.cancel()
        await until(sim, "requests", 2)
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
    assert first.cancelled() and second.cancelled()


async def test_the_model_process_leaves_ctrl_c_to_its_parent() -> None:
    pid = server_pid()
    assert os.getpgid(pid) != os.getpgid(0)  # a terminal's Ctrl-C, sent to our process group, misses it
    os.kill(pid, signal.SIGINT)  # and one sent to it is ignored
    async with SimulatorServer(SimulatorConfig()) as sim:
        result = await client(sim).structured(Scaffold, PROMPT)
    assert result.ok and server_pid() == pid
