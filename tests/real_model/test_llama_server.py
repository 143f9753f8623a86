"""End to end against a real model server: llama.cpp's `llama-server` with Gemma 3 270M, offline.

Opt in with `make real-model-test` (sets CAUSAL_GRPO_REAL_MODEL=1: builds llama-server once if it is
not cached, and fails if it cannot). `pytest -m real_model` alone runs them only when the binary and
the model are already at hand. The model is tiny: these tests check the protocol and the pipeline,
never the score.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from causal_grpo.context import Context
from causal_grpo.llm import client_for
from causal_grpo.local_model import (
    MODEL_ALIAS,
    LlamaServer,
    LocalModelError,
    assemble_model,
    ensure_llama_server,
    find_llama_server,
)
from causal_grpo.scaffold import Scaffold

pytestmark = pytest.mark.real_model

OPT_IN = "CAUSAL_GRPO_REAL_MODEL"
CAUSAL_GRPO = Path(sys.executable).parent / "causal-grpo"
SCAFFOLD_MESSAGES = [
    SystemMessage("You write causal graphs of physics problems as JSON."),
    HumanMessage("A 2 kg mass accelerates at 3 m/s^2. What net force acts on it?"),
]


def _binary_and_model(required: bool) -> tuple[Path, Path]:
    try:
        binary = ensure_llama_server(say=print) if required else find_llama_server()
        if binary is None:
            pytest.skip(f"no llama-server built or on PATH; set {OPT_IN}=1 (make real-model-test) to build it")
        return binary, assemble_model()
    except LocalModelError as exc:
        if required:
            pytest.fail(f"{OPT_IN} is set but the real model is unavailable: {exc}")
        pytest.skip(f"real model unavailable: {exc}")


@pytest.fixture(scope="session")
def llama_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One llama-server on loopback for the session, serving Gemma 3 270M as `gemma`."""
    required = bool(os.environ.get(OPT_IN))
    if not required and request.config.getoption("markexpr").strip() != "real_model":
        pytest.skip(f"real-model tests are opt-in: make real-model-test (or {OPT_IN}=1, or -m real_model)")
    binary, model = _binary_and_model(required)
    log_path = tmp_path_factory.mktemp("llama") / "llama-server.log"
    with LlamaServer(binary, model, log_path=log_path) as server:
        yield server


def _context(server: LlamaServer, **changes: object) -> Context:
    base = Context(run="real-model", model=MODEL_ALIAS, base_url=server.base_url, max_tokens=512, concurrency=4)
    return base.model_copy(update=changes)


@pytest.mark.anyio
async def test_auto_mode_detects_json_schema(llama_server: LlamaServer) -> None:
    client = client_for(_context(llama_server, max_reasks=0), "generator")
    result = await client.structured(Scaffold, SCAFFOLD_MESSAGES, temperature=0.2)
    # llama-server constrains json_schema replies by a grammar: detection must settle on it.
    assert client.mode == "json_schema"
    assert result.mode == "json_schema"
    assert result.usage.calls == result.attempts == 1
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    # Many replies of this tiny model run into max_tokens or break a validator; either way it is stated.
    assert result.ok or (result.error or "").startswith(("truncated output", "schema validation failed"))
    if result.ok:
        assert result.value is not None and result.value.nodes


@pytest.mark.anyio
async def test_truncated_reply_is_an_invalid_result_with_the_reason(llama_server: LlamaServer) -> None:
    client = client_for(_context(llama_server, max_tokens=8, max_reasks=1, run="real-model-short"), "generator")
    result = await client.structured(Scaffold, SCAFFOLD_MESSAGES, temperature=0.2)
    assert not result.ok
    assert result.error == "truncated output (finish_reason=length)"
    assert result.attempts == 2 and result.usage.calls == 2
    assert result.usage.completion_tokens == 16


def test_train_one_problem_end_to_end(llama_server: LlamaServer, tmp_path: Path) -> None:
    env = {**os.environ, "CAUSAL_GRPO_MAX_TOKENS": "512", "CAUSAL_GRPO_HOME": str(tmp_path)}
    command = [
        str(CAUSAL_GRPO),
        "train",
        *("--model", MODEL_ALIAS, "--base-url", llama_server.base_url, "--concurrency", "4"),
        *("--dataset", "physics", "--max-problems", "1", "--generators", "1", "--rollouts", "2"),
        *("--no-fuse", "--no-judge", "--run", "gemma"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "model: gemma at " + llama_server.base_url in done.stdout

    folder = tmp_path / "runs" / "gemma"
    summary = json.loads((folder / "result.json").read_text())
    assert [p["status"] for p in summary["problems"]] == ["done"]
    assert summary["usage"]["calls"] >= 2 and summary["usage"]["completion_tokens"] > 0

    (line,) = [json.loads(x) for x in (folder / "generator_1_rollouts.jsonl").read_text().splitlines()]
    rollouts = line["rollouts"]
    assert len(rollouts) == 2
    for rollout in rollouts:
        assert rollout["mode"] == "json_schema"
        assert rollout["usage"]["calls"] >= 1 and rollout["usage"]["prompt_tokens"] > 0
        # Valid, or invalid with the reasons named: a parsed scaffold the computer rejected, or a model error.
        assert rollout["valid"] or rollout["errors"], rollout
        if rollout["scaffold"] is not None:
            Scaffold.model_validate(rollout["scaffold"])
        else:
            assert rollout["errors"]
    with sqlite3.connect(folder / "results.db") as db:
        assert db.execute("select count(*) from rollouts").fetchone()[0] == 2
    assert (folder / "generator_1_experiences.json").is_file()
