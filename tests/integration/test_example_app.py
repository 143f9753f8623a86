"""examples/tutor_app.py, an outside app with the rollout subgraph in its own StateGraph, against the simulator."""

from __future__ import annotations

import importlib.util
import operator
import sys
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from causal_grpo import Context, Problem, RolloutSubgraph, load_problems, rollout_subgraph

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tutor_app.py"


def tutor():
    spec = importlib.util.spec_from_file_location("tutor_app", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["tutor_app"] = module  # LangGraph resolves the state's annotations through the module
    spec.loader.exec_module(module)
    return module


async def test_the_example_app_runs_its_rollouts_through_the_subgraph(simulator):
    app = tutor()
    shipped = load_problems("physics", 1)[0]  # a problem the simulator knows, so its rollouts carry answers
    ctx = Context(model="simulated", base_url=simulator.base_url, generators=[1], seed=7, max_retries=1)
    state = await app.ask(shipped.text, shipped.answer, shipped.unit, 3, ctx)
    assert sorted(r["index"] for r in state["rollouts"]) == [1, 2, 3]
    assert all(r["agent"] == "generator_1" and 0 <= r["r_total"] <= 1 for r in state["rollouts"])
    assert any(r["answer"] for r in state["rollouts"])
    assert state["verdict"].endswith((": right", ": wrong")) or state["verdict"] == "no answer"
    assert state["question"] == shipped.text  # the app's own keys come back untouched


def test_the_builder_names_its_contract():
    sub = rollout_subgraph()
    assert isinstance(sub, RolloutSubgraph) and sub.context_schema is Context
    assert sub.graph.get_input_jsonschema()["required"] == ["problem", "generator", "index"]
    assert list(sub.graph.get_output_jsonschema()["properties"]) == ["rollouts"]
    hints = typing.get_type_hints(sub.output_schema, include_extras=True)
    assert hints["rollouts"].__metadata__ == (operator.add,)  # parallel branches append
    problem = Problem(id="p", text="t", answer="1", dataset="d", domain="math")
    assert sub.input(problem, generator=2, index=3) == {
        "problem": problem.model_dump(mode="json"), "generator": 2, "index": 3
    }  # fmt: skip
    with pytest.raises(ValidationError, match="dataset"):
        sub.input({"id": "p", "text": "t", "answer": "1", "domain": "math"})
    with pytest.raises(ValueError, match="generator must be 1, 2 or 3"):
        sub.input(problem, generator=4)
    with pytest.raises(ValueError, match="1-based"):
        sub.input(problem, index=0)
