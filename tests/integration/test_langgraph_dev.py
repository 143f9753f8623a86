"""`langgraph dev` (LangGraph Studio) serves our langgraph.json graphs, with its own store and checkpointer."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from causal_grpo import load_problems

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
CLI = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")
READY_TIMEOUT_S = 90.0
# No internet here, and nothing of a test run should leave the machine.
QUIET = {"LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false", "LANGGRAPH_CLI_NO_ANALYTICS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workdir_like_the_repo(path: Path) -> Path:
    """A directory that looks like the repo root to `langgraph dev`, so it keeps its `.langgraph_api/` state there."""
    for entry in ROOT.iterdir():
        if entry.name != ".langgraph_api":
            (path / entry.name).symlink_to(entry)
    return path


def wait_ready(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"langgraph dev exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"langgraph dev not ready after {READY_TIMEOUT_S:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`langgraph dev` on a free loopback port, run like a developer runs it from the repo root."""
    if CLI is None:
        pytest.skip("the langgraph CLI is not installed (pip install -e '.[dev]' brings it)")
    workdir = workdir_like_the_repo(tmp_path_factory.mktemp("langgraph-dev"))
    log = workdir / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [CLI, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*command, "--config", str(workdir / "langgraph.json")],
            cwd=workdir,
            env={**os.environ, **QUIET},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
async def client(server: str) -> AsyncIterator[LangGraphClient]:
    # No api_key: the SDK would otherwise send any LangSmith key found in the environment.
    async with get_client(url=server, api_key=None) as sdk:
        yield sdk


async def test_studio_trains_a_problem_with_its_own_store(client, simulator):
    context = {"run": "studio", "model": "simulated", "base_url": simulator.base_url, "generators": [1], "rollouts": 3}
    before = simulator.stats()["requests"]
    # Rewards spread on most problems, but not all: train until one group triggered extraction.
    for problem in load_problems("physics", 4):
        thread = await client.threads.create()
        state = await client.runs.wait(
            thread["thread_id"], "train", input={"problem": problem.model_dump(mode="json")}, context=context
        )
        if any(e["triggered"] for e in state["extractions"]):
            break
    else:
        pytest.fail("no group's rewards spread over four problems")

    assert state["problem"]["id"] == problem.id
    assert "final_answer" in state and isinstance(state["final_correct"], bool)
    assert [(r["agent"], r["index"]) for r in state["rollouts"]] == [("generator_1", k) for k in (1, 2, 3)]
    assert all(0.0 <= r["r_total"] <= 1.0 and r["scaffold"] for r in state["rollouts"])
    assert [f["agent"] for f in state["fused"]] == ["critic"]
    # The run's context reached the nodes: every model call went to the simulator it named.
    assert simulator.stats()["requests"] - before >= sum(r["usage"]["calls"] for r in state["rollouts"]) > 0

    # The server's checkpointer holds the finished thread, and its store the banks `learn` wrote.
    saved = await client.threads.get_state(thread["thread_id"])
    assert saved["next"] == [] and saved["values"]["final_answer"] == state["final_answer"]
    assert "skipped" not in state["learned"]
    applied = {
        o["id"]
        for agent, result in state["learned"].items()
        if agent == "generator_1"
        for o in result["outcomes"]
        if o["op"] == "add" and o["status"] == "applied" and o["bank"] == "generator_1"
    }
    stored = await client.store.search_items(("causal_grpo", "experiences", "generator_1"), limit=100)
    assert applied and applied <= {item["key"] for item in stored["items"]}
    critic = await client.store.search_items(("causal_grpo", "experiences", "critic"), limit=100)
    assert critic["items"] == []


async def test_studio_runs_a_rollout_without_any_context(client):
    """Studio's default: no context at all, so the rollout uses the bundled simulator inside the server."""
    problem = load_problems("aime2025", 1)[0]
    thread = await client.threads.create()
    state = await client.runs.wait(
        thread["thread_id"], "rollout", input={"problem": problem.model_dump(mode="json"), "generator": 2, "index": 1}
    )
    [rollout] = state["rollouts"]
    assert (rollout["agent"], rollout["index"]) == ("generator_2", 1)
    assert rollout["scaffold"] and 0.0 <= rollout["r_total"] <= 1.0
    assert rollout["usage"]["calls"] >= 1


async def test_studio_shows_a_review_pause_as_its_interrupt_and_resumes_it(client, simulator):
    context = {
        "run": "studio-review",
        "model": "simulated",
        "base_url": simulator.base_url,
        "generators": [1],
        "rollouts": 3,
        "review": True,
    }
    for problem in load_problems("physics", 6):
        thread = await client.threads.create()
        await client.runs.wait(
            thread["thread_id"], "train", input={"problem": problem.model_dump(mode="json")}, context=context
        )
        paused = await client.threads.get_state(thread["thread_id"])
        interrupts = [i for task in paused["tasks"] for i in task.get("interrupts", [])]
        if interrupts:
            break
    else:
        pytest.fail("no problem of six proposed a bank operation to review")

    # Studio shows the learn node's own interrupt, whose value is the documented ReviewRequest.
    assert paused["next"] == ["learn"]
    [pause] = interrupts
    request = pause["value"]
    assert request["kind"] == "causal_grpo.review" and request["problem_id"] == problem.id
    assert request["operations"] and all(
        {"id", "agent", "op", "content", "category", "rewards", "advantage"} <= set(op) for op in request["operations"]
    )
    nothing_yet = await client.store.search_items(("causal_grpo", "experiences", "generator_1"), limit=100)

    # Resuming with a value of the documented shape continues the thread and applies what was approved.
    first, *rest = request["operations"]
    decisions = {first["id"]: {"decision": "approve"}, **{op["id"]: {"decision": "reject"} for op in rest}}
    state = await client.runs.wait(
        thread["thread_id"], "train", command={"resume": {"decisions": decisions}}, context=context
    )
    resumed = await client.threads.get_state(thread["thread_id"])
    assert resumed["next"] == [] and state["problem"]["id"] == problem.id
    assert [r["id"] for r in state["learned"].get("reviewed", [])] == [op["id"] for op in rest]
    assert any(o["status"] == "applied" for o in state["learned"][first["agent"]]["outcomes"])
    stored = await client.store.search_items(("causal_grpo", "experiences", "generator_1"), limit=100)
    added = first["op"] == "add" and first["agent"] == "generator_1"
    assert len(stored["items"]) == len(nothing_yet["items"]) + added  # only the approved add reached the bank
