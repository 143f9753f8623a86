"""Human review of bank updates: a run pauses at `learn` with an interrupt and resumes with Command(resume=...)."""

from __future__ import annotations

import json

import pytest
from causal_grpo.graphs.driver import thread_id
from causal_grpo.graphs.training import build_training_graph
from causal_grpo.memory import review
from causal_grpo.memory.backends import open_backends
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.ops import REJECTED_REASON
from causal_grpo.memory.schemas import BANKS, namespace
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command
from typer.testing import CliRunner

from causal_grpo.api import atrain
from causal_grpo.cli import app
from causal_grpo.problems import load_problems

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# Two problems whose groups spread under the session simulator (seed 7), so both propose operations.
PROBLEMS = load_problems("full", 3)


async def journals(store) -> dict[str, list[dict]]:
    """Every bank's journal values, keyed by op key."""
    found = {}
    for bank in BANKS:
        for item in await store.asearch(namespace(bank, "journal"), limit=1000):
            found[item.key] = item.value
    return found


def timeless(journal: dict[str, dict]) -> dict[str, dict]:
    """Journals without their time stamps."""
    return {key: {k: v for k, v in value.items() if k != "at"} for key, value in journal.items()}


async def live(store) -> dict[str, list[str]]:
    return {b: [e.content for e in await ExperienceBank(b, store).list()] for b in BANKS}


async def test_a_reviewed_problem_pauses_at_learn_and_resumes_through_the_graph_api(sim_context):
    ctx = sim_context.model_copy(update={"review": True})
    store = InMemoryStore()
    graph = build_training_graph().compile(checkpointer=InMemorySaver(), store=store)
    problem = PROBLEMS[0]
    config = {"configurable": {"thread_id": thread_id(ctx.run, 1, problem.id)}}
    out = await graph.ainvoke({"problem": problem.model_dump(mode="json")}, config, context=ctx)

    (pause,) = out["__interrupt__"]
    request = review.ReviewRequest.model_validate(pause.value)
    assert pause.value["kind"] == "causal_grpo.review" and request.problem_id == problem.id
    assert request.operations and {op.op for op in request.operations} <= {"add", "modify", "delete"}
    first = request.operations[0]
    assert first.id == f"1-{problem.id}-{first.id.split('-')[-2]}-{first.index}"
    assert all(len(op.rewards) == (2 if op.agent == "critic" else 3) and op.advantage for op in request.operations)
    snapshot = await graph.aget_state(config)
    assert snapshot.next == ("learn",) and snapshot.interrupts
    assert await live(store) == {b: [] for b in BANKS}  # nothing applied before the decision

    # an edit that copies the answer is still refused by the guard; the others are rejected
    decisions = {op.id: {"decision": "reject"} for op in request.operations}
    adds = [op for op in request.operations if op.op == "add"]
    decisions[adds[0].id] = {"decision": "edit", "content": f"The answer is {problem.answer}."}
    if len(adds) > 1:
        decisions[adds[1].id] = {"decision": "edit", "content": "Check the units of every derived quantity."}
    done = await graph.ainvoke(Command(resume={"decisions": decisions}), config, context=ctx)
    assert "__interrupt__" not in done
    learned = done["learned"]
    outcomes = {(a, o["index"]): o for a in learned if a in BANKS for o in learned[a]["outcomes"]}
    assert outcomes[adds[0].agent, adds[0].index]["status"] == "rejected"
    assert "answer" in outcomes[adds[0].agent, adds[0].index]["reason"]
    rejected = [op for op in request.operations if decisions[op.id]["decision"] == "reject"]
    assert all(outcomes[op.agent, op.index]["reason"] == REJECTED_REASON for op in rejected)
    kept = await live(store)
    assert sum(map(len, kept.values())) == (1 if len(adds) > 1 else 0)
    assert {d["decision"] for d in done["learned"]["reviewed"]} <= {"reject", "edit"}


def train_args(simulator, home, run: str, *extra: str) -> list[str]:
    """A small reviewed run of the session simulator: 3 problems, one batch, generators 1 and 2."""
    args = ["train", "--dataset", "full", "--max-problems", "3", "--batch-size", "3", "--generators", "1,2"]
    args += ["--rollouts", "3", "--seed", "7", "--model", "simulated", "--base-url", simulator.base_url]
    return [*args, "--home", str(home), "--run", run, *extra]


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_review_through_the_cli_pauses_lists_decides_once_and_resumes(simulator, tmp_path):
    run, home = "reviewed", tmp_path
    paused = cli(*train_args(simulator, home, run, "--review"))
    assert paused.exit_code == 3, paused.output
    listed = json.loads(cli("review", "--run", run, "--home", str(home), "--json").output)
    ids = [r["operation"]["id"] for r in listed]
    assert ids and len(set(ids)) == len(ids)
    assert (
        f"{len(ids)} bank operation(s) wait for review: causal-grpo review --run {run} --home {home}" in paused.output
    )
    assert json.loads((home / "runs" / run / "result.json").read_text())["pending_review"] == len(ids)
    # nothing of the paused batch is exported yet, and the banks are untouched
    assert not (home / "runs" / run / "generator_1_rollouts.jsonl").exists()
    table = cli("review", "--run", run, "--home", str(home))
    assert table.exit_code == 0 and ids[0] in table.output and "wait for review" in table.output

    adds = [r["operation"] for r in listed if r["operation"]["op"] == "add"]
    edited, approved = adds[0], adds[1]
    rejected = [i for i in ids if i not in (edited["id"], approved["id"])]
    assert cli("review", "--run", run, "--home", str(home), "--approve", approved["id"]).exit_code == 0
    twice = cli("review", "--run", run, "--home", str(home), "--reject", approved["id"])
    assert twice.exit_code == 1 and f"{approved['id']} was already decided: approve at" in twice.output
    new_text = "Name each derived quantity and check its units before combining."
    done = cli("review", "--run", run, "--home", str(home), "--edit", edited["id"], "--content", new_text)
    assert done.exit_code == 0, done.output
    # an undecided problem stays paused: the same command stops again while some operation waits
    if rejected:
        again = cli(*train_args(simulator, home, run, "--review"))
        assert again.exit_code == 3, again.output
        assert cli("review", "--run", run, "--home", str(home), "--reject", *rejected).exit_code == 0
    assert "no operation waits" in cli("review", "--run", run, "--home", str(home)).output

    resumed = cli(*train_args(simulator, home, run, "--review"))
    assert resumed.exit_code == 0, resumed.output
    banks = {b: json.loads((home / "runs" / run / f"{b}_experiences.json").read_text()) for b in BANKS}
    contents = {e["content"] for records in banks.values() for e in records}
    assert new_text in contents and approved["content"] in contents
    assert len(contents) == 2
    lines = [
        json.loads(x)
        for b in ("generator_1", "generator_2")
        for x in (home / "runs" / run / f"{b}_rollouts.jsonl").read_text().splitlines()
    ]
    lines += [json.loads(x) for x in (home / "runs" / run / "critic_results.jsonl").read_text().splitlines()]
    recorded = {d["id"]: d["decision"] for line in lines for d in line.get("review", [])}
    assert recorded == {edited["id"]: "edit", **{i: "reject" for i in rejected}}


async def run_reviewed(context, home, verdict: str | None):
    """Train PROBLEMS in one batch; with a verdict, under review: pause, decide every operation so, resume."""
    if verdict is None:
        return await atrain(PROBLEMS, context=context, home=home, batch_size=3)
    ctx = context.model_copy(update={"review": True})
    first = await atrain(PROBLEMS, context=ctx, home=home, batch_size=3)
    assert first.pending_review > 0 and {p.status for p in first.problems} == {"review"}
    async with open_backends(home / "runs" / ctx.run / "state.sqlite") as backends:
        pending = await review.records(backends.store, ctx.run)
        await review.decide(backends.store, ctx.run, [r.operation.id for r in pending], verdict)
    resumed = await atrain(PROBLEMS, context=ctx, home=home, batch_size=3)
    assert resumed.pending_review == 0 and {p.status for p in resumed.problems} == {"done"}
    return resumed


async def test_every_operation_approved_equals_the_run_without_review(make_sim_context, tmp_path, exports):
    plain = await run_reviewed(make_sim_context("plain"), tmp_path / "plain", None)
    reviewed = await run_reviewed(make_sim_context("plain"), tmp_path / "reviewed", "approve")
    assert plain.bank_sizes == reviewed.bank_sizes and sum(plain.bank_sizes.values()) > 0
    a, b = exports(tmp_path / "plain" / "runs" / "plain"), exports(tmp_path / "reviewed" / "runs" / "plain")
    assert a == b and "generator_1_experiences.json" in a
    async with (
        open_backends(tmp_path / "plain" / "runs" / "plain" / "state.sqlite") as x,
        open_backends(tmp_path / "reviewed" / "runs" / "plain" / "state.sqlite") as y,
    ):
        assert timeless(await journals(x.store)) == timeless(await journals(y.store))


async def test_every_operation_rejected_leaves_no_live_experience_and_records_each_rejection(sim_context, tmp_path):
    result = await run_reviewed(sim_context, tmp_path, "reject")
    assert result.bank_sizes == {b: 0 for b in BANKS}
    folder = tmp_path / "runs" / sim_context.run
    assert all(
        json.loads((folder / f"{b}_experiences.json").read_text()) == []
        for b in BANKS
        if (folder / f"{b}_experiences.json").exists()
    )
    async with open_backends(folder / "state.sqlite") as backends:
        asked = await review.records(backends.store, sim_context.run)
        plans = [p for j in (await journals(backends.store)).values() for p in j["plan"]]
    assert asked and all(r.decision.decision == "reject" for r in asked)
    rejected = [p for p in plans if p["reason"] == REJECTED_REASON]
    assert len(rejected) == len(asked) and not [p for p in plans if p["status"] == "applied"]
    lines = [json.loads(x) for f in folder.glob("*.jsonl") for x in f.read_text().splitlines()]
    exported = sorted(d["id"] for line in lines for d in line.get("review", []))
    assert exported == sorted(r.operation.id for r in asked)
