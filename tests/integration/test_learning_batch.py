"""A batch's bank updates applied together (`LearningBatch`) do what applying them one at a time does."""

from __future__ import annotations

import asyncio

import pytest
from causal_grpo.graphs.driver import Driver
from causal_grpo.memory.bank import BankError, ExperienceBank
from causal_grpo.memory.learning import LearningBatch, apply_learning, learning_turn
from langgraph.store.memory import InMemoryStore

from causal_grpo.api import atrain, run_dir
from causal_grpo.problems import load_problems

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def one_at_a_time(self: Driver, epoch, problems):
    return [await self.learn(epoch, problem) for problem in problems]


async def test_a_run_with_updates_applied_together_equals_one_applying_them_one_at_a_time(
    make_sim_context, tmp_path, monkeypatch, exports
):
    # two batches of 6: the second batch's prompts and extractions read what the first batch's updates left
    problems = load_problems("full", 12)
    context = make_sim_context("learning-batch")
    together = await atrain(problems, context=context, home=tmp_path / "together", batch_size=6)
    monkeypatch.setattr(Driver, "learn_batch", one_at_a_time)
    alone = await atrain(problems, context=context, home=tmp_path / "alone", batch_size=6)

    assert together.bank_sizes == alone.bank_sizes and sum(together.bank_sizes.values()) > 0
    assert exports(run_dir(tmp_path / "together", context.run)) == exports(run_dir(tmp_path / "alone", context.run))


def problem(n: int) -> dict:
    return {"id": f"p{n}", "text": f"Problem {n}: find the number.", "answer": "12"}


def adding(content: str) -> list[dict]:
    return [{"agent": "generator_1", "operations": [{"op": "add", "content": content}]}]


async def learn(store, batch: LearningBatch, rank: int, content: str) -> dict:
    learning_turn.set((batch, rank))
    try:
        return await apply_learning(
            store, run="r", epoch=1, problem=problem(rank), extractions=adding(content), rollouts=[]
        )
    finally:
        batch.ended(rank, failed=False)


async def test_updates_handed_in_out_of_order_are_applied_in_rank_order():
    store = InMemoryStore()
    batch = LearningBatch(store, range(3))
    contents = ["Check the units of every given.", "Test small cases first.", "Name each unknown before solving."]
    # the last problem hands in first; ids still follow the batch's order
    learned = await asyncio.gather(*(learn(store, batch, rank, contents[rank]) for rank in (2, 0, 1)))
    by_rank = {int(r["generator_1"]["op_key"].split(":")[2][1:]): r for r in learned}
    ids = [by_rank[rank]["generator_1"]["outcomes"][0]["id"] for rank in range(3)]
    bank = {e.id: e.content for e in await ExperienceBank("generator_1", store).list()}
    assert [bank[i] for i in ids] == contents and ids == sorted(ids)


async def test_a_problem_failing_before_its_update_stops_the_batch_there():
    store = InMemoryStore()
    batch = LearningBatch(store, range(3))
    first = asyncio.ensure_future(learn(store, batch, 0, "Test small cases first."))
    last = asyncio.ensure_future(learn(store, batch, 2, "Name each unknown before solving."))
    await asyncio.sleep(0)
    batch.ended(1, failed=True)  # the middle problem's run raised before its `learn` node handed anything in

    assert (await first)["generator_1"]["outcomes"][0]["status"] == "applied"
    with pytest.raises(BankError, match="problem 1 of the batch"):
        await last
    assert [e.content for e in await ExperienceBank("generator_1", store).list()] == ["Test small cases first."]
