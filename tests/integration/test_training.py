"""The training graph end to end against the simulator: groups, extraction, fusion, banks, resume, exports."""

from __future__ import annotations

import json

import pytest
from causal_grpo.agents.critic import node as critic_node
from causal_grpo.agents.extractor import node as extractor_node
from causal_grpo.graphs import driver as driver_module
from causal_grpo.graphs.driver import thread_id
from causal_grpo.graphs.training import build_training_graph
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.learning import apply_learning
from causal_grpo.memory.results import ResultsDB
from causal_grpo.memory.schemas import BANKS
from typer.testing import CliRunner

from causal_grpo.api import atrain
from causal_grpo.cli import app
from causal_grpo.problems import load_problems

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def crash_once(real):
    """Wrap an async function so its first call raises, as a crash mid-graph would."""
    calls = {"n": 0}

    async def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected crash")
        return await real(*args, **kwargs)

    return wrapped


def scaffold_requests(simulator) -> int:
    return simulator.stats()["by_kind"].get("Scaffold", 0)


async def all_experiences(store) -> dict[str, list]:
    return {b: await ExperienceBank(b, store).list() for b in BANKS}


async def test_a_run_fills_groups_banks_and_exports(sim_context, store, checkpointer, simulator, tmp_path):
    problems = load_problems("full", 4)
    result = await atrain(
        problems, context=sim_context, store=store, checkpointer=checkpointer, home=tmp_path, batch_size=4
    )
    assert [p.status for p in result.problems] == ["done"] * 4
    assert result.usage.calls > 0 and result.usage.prompt_tokens > 0

    run_dir = tmp_path / "runs" / sim_context.run
    for g in (1, 2):
        lines = [json.loads(x) for x in (run_dir / f"generator_{g}_rollouts.jsonl").read_text().splitlines()]
        assert [line["id"] for line in lines] == [p.id for p in problems]
        for line in lines:
            assert len(line["rollouts"]) == 3
            assert all(0.0 <= r["r_total"] <= 1.0 for r in line["rollouts"])
    critic = [json.loads(x) for x in (run_dir / "critic_results.jsonl").read_text().splitlines()]
    assert all(set(line["fused"]) == {"generator_1", "generator_2"} for line in critic)
    assert all(r["r_fusion"] is not None for line in critic for r in line["fused"].values())

    # a computed answer says whether it is exact, in the export lines and in results.db alike
    exported_exact = [r["exact"] for line in lines for r in line["rollouts"] if r["answer"] is not None]
    assert exported_exact and all(isinstance(e, bool) for e in exported_exact)

    db = ResultsDB(run_dir / "results.db")
    rows = db.rollouts(sim_context.run)
    assert len(rows) == 4 * (2 * 3 + 2)
    assert all((r.exact is None) == (r.answer is None) for r in rows)
    assert [p.problem_id for p in db.problems(sim_context.run)] == sorted(p.id for p in problems)
    db.close()

    # The simulator's rewards spread, so some group triggered extraction and the banks grew.
    banks = await all_experiences(store)
    assert sum(len(v) for v in banks.values()) == sum(result.bank_sizes.values()) > 0
    exported = json.loads((run_dir / "generator_1_experiences.json").read_text())
    assert [e["id"] for e in exported] == [e.id for e in banks["generator_1"]]


async def test_every_batch_is_exported_once_in_batch_order(sim_context, store, checkpointer, tmp_path, monkeypatch):
    problems = load_problems("full", 5)
    written: list[list[str]] = []
    real = driver_module.Exporter.problems

    def recorded(self, states, epoch, stage):
        written.append([s["problem"]["id"] for s in states])
        real(self, states, epoch, stage)

    monkeypatch.setattr(driver_module.Exporter, "problems", recorded)
    await atrain(problems, context=sim_context, store=store, checkpointer=checkpointer, home=tmp_path, batch_size=2)
    assert written == [[p.id for p in problems[i : i + 2]] for i in range(0, 5, 2)]
    run_dir = tmp_path / "runs" / sim_context.run
    lines = (run_dir / "generator_1_rollouts.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [p.id for p in problems]
    db = ResultsDB(run_dir / "results.db")
    assert len(db.problems(sim_context.run)) == 5
    db.close()


async def test_a_failed_export_stops_the_run(sim_context, store, checkpointer, tmp_path, monkeypatch):
    def disk_full(*_args):
        raise OSError("No space left on device")

    monkeypatch.setattr(driver_module.Exporter, "problems", disk_full)
    problems = load_problems("aime2024", 2)
    with pytest.raises(OSError, match="No space left"):
        await atrain(problems, context=sim_context, store=store, checkpointer=checkpointer, home=tmp_path, batch_size=1)


async def test_a_finished_run_costs_no_model_call(sim_context, store, checkpointer, simulator):
    problems = load_problems("aime2025", 2)
    first = await atrain(problems, context=sim_context, store=store, checkpointer=checkpointer)
    before = simulator.stats()["requests"]
    again = await atrain(problems, context=sim_context, store=store, checkpointer=checkpointer)
    assert [p.status for p in again.problems] == ["earlier", "earlier"]
    # the whole run's usage, none of it this start's
    assert again.usage == first.usage == first.usage_this_start and again.usage.calls > 0
    assert again.usage_this_start.calls == 0
    assert simulator.stats()["requests"] == before


async def test_a_crash_resumes_without_redoing_rollouts_or_updates(
    sim_context, store, checkpointer, simulator, monkeypatch
):
    problems = load_problems("physics", 2)
    monkeypatch.setattr(extractor_node, "extract_group", crash_once(extractor_node.extract_group))
    first = await atrain(problems, context=sim_context, store=store, checkpointer=checkpointer, batch_size=2)
    assert "failed" in [p.status for p in first.problems]
    scaffolds_before = scaffold_requests(simulator)

    second = await atrain(problems, context=sim_context, store=store, checkpointer=checkpointer, batch_size=2)
    assert all(p.status in {"done", "earlier"} for p in second.problems)
    # Finished rollouts were checkpointed: the resume asked for no new scaffold.
    assert scaffold_requests(simulator) == scaffolds_before

    # Applying a finished problem's learning again (as a crash after `learn` would) changes nothing.
    banks = await all_experiences(store)
    for problem in problems:
        config = {"configurable": {"thread_id": thread_id(sim_context.run, 1, problem.id)}}
        state = (await build_training_graph().compile(checkpointer=checkpointer).aget_state(config)).values
        await apply_learning(
            store,
            run=sim_context.run,
            epoch=1,
            problem=state["problem"],
            extractions=state["extractions"],
            rollouts=state["rollouts"] + state["fused"],
        )
    assert await all_experiences(store) == banks


async def test_many_problems_in_flight_lose_no_update(sim_context, store, checkpointer):
    problems = load_problems("full", 12)
    result = await atrain(problems, context=sim_context, store=store, checkpointer=checkpointer, batch_size=12)
    assert len(result.problems) == 12
    experiences = [e for v in (await all_experiences(store)).values() for e in v]
    ids = [e.id for e in experiences]
    assert len(ids) == len(set(ids))
    # Every add that `learn` reported applied is in a bank, exactly once.
    graph_states = []
    graph = build_training_graph().compile(checkpointer=checkpointer)
    for p in problems:
        config = {"configurable": {"thread_id": thread_id(sim_context.run, 1, p.id)}}
        graph_states.append((await graph.aget_state(config)).values)
    added = [
        o["id"]
        for s in graph_states
        for agent, r in s["learned"].items()
        if agent != "usage_counted"
        for o in r["outcomes"]
        if o["op"] == "add" and o["status"] == "applied"
    ]
    assert added and sorted(added) == sorted(set(added))
    assert set(added) <= set(ids)


async def test_the_critic_stage_fuses_stored_rollouts_and_resumes_after_a_crash(
    sim_context, store, checkpointer, simulator, monkeypatch
):
    problems = load_problems("aime2024", 2)
    generators = sim_context.model_copy(update={"stage": "generators"})
    first = await atrain(problems, context=generators, store=store, checkpointer=checkpointer)
    assert all(p.status == "done" and "critic" not in p.accuracy for p in first.problems)
    scaffolds = scaffold_requests(simulator)

    monkeypatch.setattr(critic_node, "judge_scaffold", crash_once(critic_node.judge_scaffold))
    critic = sim_context.model_copy(update={"stage": "critic"})
    crashed = await atrain(problems, context=critic, store=store, checkpointer=checkpointer)
    assert "failed" in [p.status for p in crashed.problems]
    resumed = await atrain(problems, context=critic, store=store, checkpointer=checkpointer)
    assert all(p.status in {"done", "earlier"} for p in resumed.problems)
    assert all("critic" in p.accuracy for p in resumed.problems)
    # The critic stage regenerated nothing: every scaffold request came from the generators stage.
    assert scaffold_requests(simulator) == scaffolds


async def test_the_critic_stage_adds_its_results_and_leaves_the_generators_exports_alone(
    sim_context, store, checkpointer, tmp_path
):
    problems = load_problems("physics", 2)
    run_dir = tmp_path / "runs" / sim_context.run
    generators = sim_context.model_copy(update={"stage": "generators"})
    await atrain(problems, context=generators, store=store, checkpointer=checkpointer, home=tmp_path)
    before = (run_dir / "generator_1_rollouts.jsonl").read_text()
    assert all(json.loads(line)["extraction"] for line in before.splitlines())
    assert not (run_dir / "critic_results.jsonl").exists()

    critic = sim_context.model_copy(update={"stage": "critic"})
    await atrain(problems, context=critic, store=store, checkpointer=checkpointer, home=tmp_path)
    # the critic stage's threads hold the generators' rollouts but not their extraction: it must not rewrite them
    assert (run_dir / "generator_1_rollouts.jsonl").read_text() == before
    fused = [json.loads(line) for line in (run_dir / "critic_results.jsonl").read_text().splitlines()]
    assert [line["id"] for line in fused] == [p.id for p in problems]


async def test_the_critic_stage_needs_a_generators_stage(sim_context, store, checkpointer):
    critic = sim_context.model_copy(update={"stage": "critic"})
    result = await atrain(load_problems("physics", 1), context=critic, store=store, checkpointer=checkpointer)
    assert result.problems[0].status == "failed"
    assert "no finished generators stage" in result.problems[0].error


def test_the_train_command_exits_1_when_a_problem_failed(simulator, sim_context, tmp_path):
    # A critic stage with no generators stage before it fails its problem; scripts must see that in the exit code.
    args = ["train", "--dataset", "physics", "--max-problems", "1", "--stage", "critic", "--home", str(tmp_path)]
    args += ["--model", "simulated", "--base-url", simulator.base_url, "--run", sim_context.run]
    done = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert done.exit_code == 1, done.output
    assert f"model: simulated — the simulator at {simulator.base_url}, a test double" in done.output
    assert "1 problem(s) failed (run again to resume)" in done.output
    summary = json.loads((tmp_path / "runs" / sim_context.run / "result.json").read_text())
    assert [p["status"] for p in summary["problems"]] == ["failed"]
