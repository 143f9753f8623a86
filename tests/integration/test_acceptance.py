"""Minibatch acceptance: a batch's bank edits are kept only when K problems answered with them do not get worse."""

from __future__ import annotations

import json

import pytest
from causal_grpo.graphs import driver as driver_module
from causal_grpo.memory.acceptance import ACCEPTANCE, AcceptanceRecord, snapshot_banks
from causal_grpo.memory.backends import open_backends

from causal_grpo.api import atrain
from causal_grpo.problems import load_problems
from causal_grpo.report import _acceptance_section as acceptance_section

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

PROBLEMS = load_problems("full", 4)


async def banks_of(home, run):
    async with open_backends(home / "runs" / run / "state.sqlite") as backends:
        return await snapshot_banks(backends.store)


def timeless(banks: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Bank records without their clocks (record stamps and each edit's time)."""
    return {
        bank: [
            {k: v for k, v in r.items() if k not in ("created_at", "updated_at")}
            | {"history": [{k: v for k, v in e.items() if k != "at"} for e in r["history"]]}
            for r in records
        ]
        for bank, records in banks.items()
    }


async def records_of(home, run) -> list[AcceptanceRecord]:
    async with open_backends(home / "runs" / run / "state.sqlite") as backends:
        items = await backends.store.asearch(ACCEPTANCE, limit=100)
    return sorted((AcceptanceRecord.model_validate(i.value) for i in items), key=lambda r: (r.epoch, r.batch))


async def test_kept_edits_are_those_of_the_plain_run_and_each_decision_is_recorded(make_sim_context, tmp_path):
    plain = make_sim_context("plain")
    await atrain(PROBLEMS, context=plain, home=tmp_path / "plain", batch_size=2)
    accepting = plain.model_copy(update={"accept_minibatch": 2, "accept_margin": 1.0})  # r_total is in [0, 1]
    result = await atrain(PROBLEMS, context=accepting, home=tmp_path / "accepting", batch_size=2)

    first, second = result.acceptance
    assert (first.batch, first.drawn_from, second.drawn_from) == (1, "batch", "seen")
    assert set(first.problems) <= {p.id for p in PROBLEMS[:2]} and set(second.problems) <= {p.id for p in PROBLEMS[:2]}
    assert all(d.decision == "keep" and d.k == 2 and len(d.problems) == 2 for d in result.acceptance)
    assert all(
        d.before_mean is not None and d.after_mean is not None and "margin 1" in d.reason for d in result.acceptance
    )
    # 2 problems x 2 generators x 3 rollouts (scaffold + judge each) + 2 fusions per problem, per side
    assert all(d.usage_before.calls > 0 and d.usage_after.calls > 0 for d in result.acceptance)
    assert result.usage.calls == sum(p.usage.calls for p in result.problems)  # the trials are counted apart
    # the trials never write the banks: kept edits leave exactly the banks of the run without acceptance
    assert timeless(await banks_of(tmp_path / "accepting", plain.run)) == timeless(
        await banks_of(tmp_path / "plain", plain.run)
    )
    summary = result.to_dict()["acceptance"]
    assert summary[0]["decision"] == "keep" and summary[0]["usage"]["calls"] == first.usage.calls
    assert "Minibatch acceptance" in acceptance_section(result.to_dict()) and "keep" in acceptance_section(
        result.to_dict()
    )


async def test_a_rolled_back_batch_leaves_the_banks_exactly_as_before_it_even_after_a_crash(
    sim_context, tmp_path, monkeypatch
):
    # a first start gives the banks records with counters and history; the second start's batch is rolled back
    await atrain(PROBLEMS[:2], context=sim_context, home=tmp_path, batch_size=2)
    before = await banks_of(tmp_path, sim_context.run)
    assert sum(map(len, before.values())) > 0

    answered: list[str] = []
    real_answer, real_restore = driver_module.Driver._answer, driver_module.restore_banks

    async def counting_answer(self, record, side, everything):
        answered.append(side)
        return await real_answer(self, record, side, everything)

    async def crash_once(store, snapshot):
        monkeypatch.setattr(driver_module, "restore_banks", real_restore)
        raise RuntimeError("killed between the decision and the rollback")

    monkeypatch.setattr(driver_module.Driver, "_answer", counting_answer)
    monkeypatch.setattr(driver_module, "restore_banks", crash_once)
    rejecting = sim_context.model_copy(update={"accept_minibatch": 2, "accept_margin": -1.0})
    with pytest.raises(RuntimeError, match="killed"):
        await atrain(PROBLEMS, context=rejecting, home=tmp_path, batch_size=2)
    (decided,) = [r for r in await records_of(tmp_path, sim_context.run) if r.batch == 2]
    assert decided.status == "deciding" and decided.decision == "rollback"
    assert await banks_of(tmp_path, sim_context.run) != before  # the edits were applied, not yet rolled back

    result = await atrain(PROBLEMS, context=rejecting, home=tmp_path, batch_size=2)
    # batch 1 was finished before acceptance was on (no trial); batch 2's sides were answered once: never redone
    assert answered == ["before", "after"]
    assert [d.batch for d in result.acceptance] == [2]
    assert await banks_of(tmp_path, sim_context.run) == before  # records, counters, history: byte for byte
    rolled = [d for d in result.acceptance if d.batch == 2]
    assert rolled[0].decision == "rollback" and rolled[0].before_mean == decided.before_mean
    assert rolled[0].after_mean == decided.after_mean and "<" in rolled[0].reason
    exported = json.loads((tmp_path / "runs" / sim_context.run / "generator_1_experiences.json").read_text())
    assert [e["id"] for e in exported] == [r["id"] for r in before["generator_1"] if not r.get("deleted")]
