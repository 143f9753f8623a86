"""`eval` against the simulator: frozen banks, Mean@k / Pass@k with intervals, a paired verdict, saved results."""

from __future__ import annotations

import json
import re

import pytest
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.results import ResultsDB
from causal_grpo.memory.schemas import BANKS
from typer.testing import CliRunner

from causal_grpo.api import atrain
from causal_grpo.cli import app
from causal_grpo.errors import DatasetError
from causal_grpo.evaluation import (
    Arm,
    EvalError,
    choose_samples,
    evaluate_dataset,
    load_experiences,
    save_evaluation,
)
from causal_grpo.problems import load_problems, split_problems

pytestmark = [pytest.mark.integration]

SAMPLES = 2


async def store_contents(store) -> dict:
    """Every item under our namespaces (experiences, journals, sequences), with its value."""
    items = await store.asearch(("causal_grpo",), limit=100_000)
    return {(item.namespace, item.key): item.value for item in items}


@pytest.fixture
async def trained(sim_context, store, checkpointer, tmp_path):
    """A tiny training run whose banks the evaluation reads."""
    problems = load_problems("physics", 4)
    await atrain(problems, context=sim_context, store=store, checkpointer=checkpointer, home=tmp_path)
    assert sum([await ExperienceBank(b, store).size() for b in BANKS]) > 0
    return problems


@pytest.mark.anyio
async def test_eval_with_and_without_a_learned_bank(sim_context, store, trained, tmp_path):
    before = await store_contents(store)
    result = await evaluate_dataset(
        trained, context=sim_context, experiences=Arm("trained", store), baseline=Arm(), samples=SAMPLES
    )
    # frozen: the evaluation read the banks and wrote nothing to them
    assert await store_contents(store) == before

    assert set(result.problems) == {"experiences", "baseline"}
    for results in result.problems.values():
        assert [r.id for r in results] == [p.id for p in trained]
        assert all(r.status == "done" and len(r.samples) == SAMPLES for r in results)
    # the experiences reached the prompts: the arm with a bank sent more prompt tokens
    tokens = {arm: sum(r.usage.prompt_tokens for r in rs) for arm, rs in result.problems.items()}
    assert tokens["experiences"] > tokens["baseline"]
    assert sum(result.bank_sizes["experiences"].values()) > 0 and sum(result.bank_sizes["baseline"].values()) == 0

    [report] = result.reports
    assert report.dataset == "physics" and report.problems == len(trained)
    for arm in (report.experiences, report.baseline):
        assert arm is not None
        assert arm.mean_at_k.low <= arm.mean_at_k.estimate <= arm.mean_at_k.high
        assert arm.pass_at_k.low <= arm.pass_at_k.estimate <= arm.pass_at_k.high
    exp_correct = [r.correct / SAMPLES for r in result.problems["experiences"]]
    assert report.experiences.mean_at_k.estimate == pytest.approx(sum(exp_correct) / len(exp_correct))
    # the simulator does not learn from experiences, and four problems are too few for any verdict
    assert report.comparison is not None and report.comparison.significant is None
    assert "on 4 problems: no verdict below 20 problems" in report.comparison.verdict
    assert "distinguishable" not in report.comparison.verdict

    written = save_evaluation(result, tmp_path / "runs" / sim_context.run)
    assert json.loads(written.read_text())["reports"][0]["comparison"]["verdict"] == report.comparison.verdict
    db = ResultsDB(tmp_path / "runs" / sim_context.run / "results.db")
    [row] = db.evaluations(sim_context.run)
    db.close()
    assert (row.eval_id, row.dataset, row.experiences, row.baseline) == (result.eval_id, "physics", "trained", "none")
    assert row.p_value == report.comparison.p_value and row.verdict == report.comparison.verdict


def test_eval_command_reads_a_runs_exports(simulator, sim_context, tmp_path):
    common = ["--dataset", "physics", "--max-problems", "4", "--home", str(tmp_path), "--generators", "1,2"]
    common += ["--model", "simulated", "--base-url", simulator.base_url, "--seed", "7"]
    trained = CliRunner().invoke(app, ["train", *common, "--run", sim_context.run, "--rollouts", "3"])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "eval.json"
    args = ["eval", *common, "--samples", str(SAMPLES), "--experiences", sim_context.run, "--json-out", str(out)]
    done = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert "model: simulated" in done.output
    assert re.search(r"Mean@2 .* on 4 problems: no verdict below 20 problems \(p [<=] [0-9.]+, 95% CI", done.output)
    assert re.search(r"experiences +│ +" + re.escape(sim_context.run) + r" +│ +\d+\.\d% \[", done.output)
    saved = json.loads(out.read_text())
    assert saved["experiences"] == sim_context.run and saved["baseline"] == "none"
    # results go to the experiences run's database by default
    db = ResultsDB(tmp_path / "runs" / sim_context.run / "results.db")
    assert [r.eval_id for r in db.evaluations(sim_context.run)] == [saved["eval_id"]]
    db.close()


def test_eval_command_refuses_unknown_experiences(tmp_path):
    done = CliRunner().invoke(app, ["eval", "--experiences", "no-such-run", "--home", str(tmp_path)])
    assert done.exit_code == 1
    assert "no-such-run" in done.output and "Traceback" not in done.output


@pytest.mark.anyio
async def test_exported_banks_load_by_id_prefix(tmp_path):
    records = [
        {"id": "G1-001", "content": "Convert every given to SI units first.", "success_count": 2, "usage_count": 3},
        {"id": "S-004", "content": "State the target quantity before the formulas."},
    ]
    (tmp_path / "generator_1_experiences.json").write_text(json.dumps(records))
    store = await load_experiences(tmp_path)
    assert [e.id for e in await ExperienceBank("generator_1", store).list()] == ["G1-001"]
    assert [e.id for e in await ExperienceBank("shared", store).list()] == ["S-004"]
    assert (await ExperienceBank("generator_1", store).get("G1-001")).usage_count == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not a JSON file"),
        ('{"id": "G1-001"}', "expected a JSON list"),
        ('[{"id": "G1-001"}]', "item \\[0\\]: content"),
        ('[{"id": "X-1", "content": "c"}]', "not an experience id"),
    ],
)
async def test_malformed_bank_files_give_a_clear_error(tmp_path, text, message):
    path = tmp_path / "bank.json"
    path.write_text(text)
    with pytest.raises(EvalError, match=message):
        await load_experiences(path)


def rollout(generator: int, index: int, answer: str, correct: bool, quality: float) -> dict:
    return {
        "generator": generator,
        "index": index,
        "valid": True,
        "answer": answer,
        "correct": correct,
        "r_graph": quality,
        "r_logic": quality,
    }


def test_each_sample_is_decided_by_the_vote_not_by_the_reference():
    rollouts = [
        rollout(1, 1, "5 N", correct=True, quality=0.2),
        rollout(2, 1, "7 N", correct=False, quality=0.9),  # better supported, wrong: the sample is wrong
        rollout(1, 2, "5 N", correct=True, quality=0.9),
        rollout(2, 2, "7 N", correct=False, quality=0.2),
    ]
    chosen = choose_samples(rollouts, 3)  # sample 3 produced nothing valid
    assert [(s.sample, s.answer, s.correct) for s in chosen] == [(1, "7 N", False), (2, "5 N", True), (3, None, False)]


def test_the_split_is_seeded_disjoint_and_independent_of_order():
    problems = load_problems("full")
    train, test = split_problems(problems, 0.25, seed=11)
    assert len(test) == round(len(problems) * 0.25) and len(train) + len(test) == len(problems)
    assert not {p.id for p in train} & {p.id for p in test}
    assert [p.id for p in test] == [p.id for p in problems if p.id in {q.id for q in test}]  # dataset order
    again = split_problems(list(reversed(problems)), 0.25, seed=11)[1]
    assert {p.id for p in again} == {p.id for p in test}
    assert {p.id for p in split_problems(problems, 0.25, seed=12)[1]} != {p.id for p in test}
    for fraction in (0.0, 1.0, 0.001):
        with pytest.raises(DatasetError):
            split_problems(problems, fraction, seed=11)


def test_a_shortened_split_is_a_window_of_the_whole_datasets_part():
    # Split first, then window: a short train run keeps clear of the test part a full eval sees (splitting
    # the first 40 problems instead put one of seed 0's test problems in its train part).
    test_ids = {p.id for p in load_problems("full", split="test")}
    train = load_problems("full", split="train")
    assert [p.id for p in load_problems("full", 2, start_problem=3, split="train")] == [p.id for p in train[2:4]]
    assert not {p.id for p in load_problems("full", 40, split="train")} & test_ids
    with pytest.raises(DatasetError, match="past the end of the test part of physics"):
        load_problems("physics", start_problem=7, split="test")
