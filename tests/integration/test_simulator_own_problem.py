"""The simulator says once, on stderr, that it answers a problem it does not ship with unrelated numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from causal_grpo import Context, Problem, build_rollout_graph, load_problems
from causal_grpo.simulator import SimulatorConfig, SimulatorServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

NOTE = "simulator: a problem it does not ship"
OWN = Problem(id="mine-1", text="A cyclist rides 12 km in 30 minutes. What is her speed in km/h?", answer="24",
              dataset="mine", domain="math")  # fmt: skip


async def test_the_note_comes_once_for_an_own_problem_and_never_for_a_shipped_one(capfd):
    graph = build_rollout_graph().compile()
    with SimulatorServer(SimulatorConfig(seed=3)) as server:
        ctx = Context(model="simulated", base_url=server.base_url, seed=3, max_retries=1)
        shipped = load_problems("physics", 1)[0]
        await graph.ainvoke({"problem": shipped.model_dump(mode="json"), "generator": 1, "index": 1}, context=ctx)
        assert NOTE not in capfd.readouterr().err
        for index in (1, 2):
            await graph.ainvoke({"problem": OWN.model_dump(mode="json"), "generator": 1, "index": index}, context=ctx)
        assert capfd.readouterr().err.count(NOTE) == 1


def test_train_on_a_file_of_ones_own_problems_says_so_on_stderr(tmp_path: Path):
    data = tmp_path / "own.jsonl"
    data.write_text(json.dumps({"id": OWN.id, "text": OWN.text, "answer": OWN.answer, "dataset": "mine"}) + "\n")
    cli = Path(sys.executable).parent / "causal-grpo"
    args = [str(cli), "train", "--dataset", str(data), "--home", str(tmp_path), "--generators", "1"]
    done = subprocess.run([*args, "--model", "simulated"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(NOTE) == 1 and "unrelated random integers" in done.stderr
    assert NOTE not in done.stdout
