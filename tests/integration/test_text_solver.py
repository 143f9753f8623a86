"""The text solver through the real graphs and the HTTP client against the simulator: train, resume, stages, exports."""

from __future__ import annotations

import json

import pytest
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.results import ResultsDB
from causal_grpo.memory.schemas import BANKS
from typer.testing import CliRunner

from causal_grpo.api import atrain
from causal_grpo.cli import app
from causal_grpo.problems import load_problems

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def text_requests(simulator) -> int:
    kinds = simulator.stats()["by_kind"]
    return kinds.get("TextSolution", 0) + kinds.get("TextFusion", 0)


async def test_a_text_run_answers_in_prose_learns_and_resumes_for_free(
    sim_context, store, checkpointer, simulator, tmp_path
):
    ctx = sim_context.model_copy(update={"solver": "text", "group_filter": "mixed"})
    problems = load_problems("aime2024", 2) + load_problems("physics", 2)
    before = simulator.stats()["by_kind"].get("Scaffold", 0)
    result = await atrain(problems, context=ctx, store=store, checkpointer=checkpointer, home=tmp_path, batch_size=4)
    assert [p.status for p in result.problems] == ["done"] * 4
    assert simulator.stats()["by_kind"].get("Scaffold", 0) == before  # no scaffold was asked for
    run_dir = tmp_path / "runs" / ctx.run

    lines = [
        json.loads(x) for g in (1, 2) for x in (run_dir / f"generator_{g}_rollouts.jsonl").read_text().splitlines()
    ]
    rollouts = [r for line in lines for r in line["rollouts"]]
    assert len(rollouts) == 4 * 2 * 3
    for r in rollouts:
        assert r["solver"] == "text" and r["scaffold"] is None and "[simulated test double]" in r["text"]
        assert r["r_graph"] == 0.0 and r["rewards_detail"]["r_graph"]["detail"].startswith("not applicable")
        assert r["valid"] == (r["answer"] is not None)
        judge = r["rewards_detail"]["judge"]["score"]
        assert r["r_total"] == pytest.approx((0.5 * r["r_ans"] + 0.25 * judge) / 0.75 if r["generator"] == 1 else
                                             (0.7 * r["r_ans"] + 0.15 * judge) / 0.85)  # fmt: skip
    assert {r["correct"] for r in rollouts} == {True, False}
    assert any(not r["valid"] and "no \\boxed" in r["errors"][0] for r in rollouts)
    # the mixed filter: a group is read exactly when some of it is right and some wrong
    for line in lines:
        share = sum(r["r_ans"] for r in line["rollouts"]) / 3
        assert line["extraction"]["triggered"] == (0 < share < 1)
    assert any(line["extraction"]["operations"] for line in lines)
    assert sum([await ExperienceBank(b, store).size() for b in BANKS]) > 0

    fused = [json.loads(x) for x in (run_dir / "critic_results.jsonl").read_text().splitlines()]
    for line in fused:
        for r in line["fused"].values():
            assert r["solver"] == "text" and r["text"] and r["r_fusion"] is not None
        assert line["final_answer"] is None or isinstance(line["final_answer"], str)

    db = ResultsDB(run_dir / "results.db")
    rows = db.rollouts(ctx.run)
    db.close()
    assert {row.solver for row in rows} == {"text"} and all(row.text for row in rows if row.agent != "critic")

    asked = text_requests(simulator)
    again = await atrain(problems, context=ctx, store=store, checkpointer=checkpointer, home=tmp_path, batch_size=4)
    assert all(p.status in ("done", "earlier") for p in again.problems)
    assert text_requests(simulator) == asked  # a finished run costs no model call


async def test_the_text_critic_stage_fuses_the_stored_text_rollouts(sim_context, store, checkpointer, simulator):
    ctx = sim_context.model_copy(update={"solver": "text"})
    problems = load_problems("physics", 2)
    await atrain(
        problems, context=ctx.model_copy(update={"stage": "generators"}), store=store, checkpointer=checkpointer
    )
    solutions = simulator.stats()["by_kind"].get("TextSolution", 0)
    fusions = simulator.stats()["by_kind"].get("TextFusion", 0)
    critic = await atrain(
        problems, context=ctx.model_copy(update={"stage": "critic"}), store=store, checkpointer=checkpointer
    )
    assert all("critic" in p.accuracy for p in critic.problems)
    assert simulator.stats()["by_kind"].get("TextSolution", 0) == solutions  # nothing regenerated
    assert simulator.stats()["by_kind"]["TextFusion"] == fusions + 2 * 2


def test_the_train_command_takes_the_solver_and_the_group_filter(simulator, sim_context, tmp_path):
    args = ["train", "--dataset", "aime2025", "--max-problems", "1", "--home", str(tmp_path), "--run", sim_context.run]
    args += ["--model", "simulated", "--base-url", simulator.base_url, "--generators", "1", "--rollouts", "2"]
    done = CliRunner().invoke(app, [*args, "--solver", "text", "--group-filter", "mixed"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    line = json.loads((tmp_path / "runs" / sim_context.run / "generator_1_rollouts.jsonl").read_text())
    assert [r["solver"] for r in line["rollouts"]] == ["text", "text"]
    bad = CliRunner().invoke(app, [*args, "--solver", "prose"], env={"COLUMNS": "200"})
    assert bad.exit_code != 0 and "solver" in bad.output
