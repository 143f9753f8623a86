"""Experience banks: updates, ids, idempotency, crash recovery, counters, history, concurrency."""

from __future__ import annotations

import asyncio

import pytest
from causal_grpo.agents.extractor.schemas import ExperienceOp
from causal_grpo.memory import bank as bank_module
from causal_grpo.memory.backends import open_backends
from causal_grpo.memory.bank import BankUpdate, ExperienceBank, apply_updates
from causal_grpo.memory.schemas import namespace
from langgraph.store.base import PutOp

pytestmark = pytest.mark.anyio

NOW = "2025-01-01T00:00:00+00:00"


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    async with open_backends(None if request.param == "memory" else tmp_path / "bank.db") as backends:
        yield backends.store


def add(content: str, **kwargs) -> ExperienceOp:
    return ExperienceOp(op="add", content=content, **kwargs)


async def apply(bank: ExperienceBank, ops, key: str, **kwargs):
    return await bank.apply(ops, op_key=key, run="r1", problem_id="p1", now=NOW, **kwargs)


async def test_add_modify_delete_keep(store):
    bank = ExperienceBank("generator_1", store)
    first = await apply(bank, [add("Name every given quantity as its own node."), add("Check units first.")], "k1")
    assert first.ids("add") == ["G1-001", "G1-002"]
    second = await apply(
        bank,
        [
            ExperienceOp(op="modify", id="G1-001", content="Name each given quantity once, as its own node."),
            ExperienceOp(op="delete", id="G1-002"),
            ExperienceOp(op="keep", id="G1-001"),
        ],
        "k2",
    )
    assert [o.status for o in second.outcomes] == ["applied", "applied", "kept"]
    live = await bank.list()
    assert [(e.id, e.content) for e in live] == [("G1-001", "Name each given quantity once, as its own node.")]
    tombstone = await bank.get("G1-002")
    assert tombstone is not None and tombstone.deleted and tombstone.content == "Check units first."
    assert await bank.size() == 1
    modified = await bank.get("G1-001")
    assert modified.run == "r1" and modified.problem_id == "p1" and modified.created_at == NOW
    assert [(h.op, h.key) for h in modified.history] == [("add", "k1#0"), ("modify", "k2#0")]
    assert modified.to_spec()["usage_count"] == 0 and set(modified.to_spec()) >= {"id", "content", "category"}


async def test_modify_keeps_fields_the_extractor_left_at_defaults(store):
    bank = ExperienceBank("generator_1", store)
    await apply(
        bank, [add("Beware of sign errors.", category="common_mistake", problem_type="physics_kinematics")], "k1"
    )
    await apply(bank, [ExperienceOp(op="modify", id="G1-001", content="Beware of sign errors in vectors.")], "k2")
    experience = await bank.get("G1-001")
    assert (experience.category, experience.problem_type) == ("common_mistake", "physics_kinematics")


async def test_unknown_deleted_and_foreign_ids_are_ignored_with_reasons(store):
    bank = ExperienceBank("generator_1", store)
    await apply(bank, [add("A lesson.")], "k1")
    await apply(bank, [ExperienceOp(op="delete", id="G1-001")], "k2")
    result = await apply(
        bank,
        [
            ExperienceOp(op="modify", id="G1-042", content="x y z"),
            ExperienceOp(op="delete", id="G1-001"),
            ExperienceOp(op="modify", id="G2-001", content="x y z"),
            ExperienceOp(op="delete", id="nonsense"),
            ExperienceOp(op="modify", id=None, content="x y z"),
        ],
        "k3",
    )
    assert [o.status for o in result.outcomes] == ["ignored"] * 5
    assert "unknown id" in result.outcomes[0].reason
    assert "deleted" in result.outcomes[1].reason
    assert "generator_2" in result.outcomes[2].reason


async def test_ids_are_never_reused_and_the_sequence_survives_reopening(tmp_path):
    path = tmp_path / "bank.db"
    async with open_backends(path) as backends:
        bank = ExperienceBank("critic", backends.store)
        await apply(bank, [add("one"), add("two")], "k1")
        await apply(bank, [ExperienceOp(op="delete", id="C-002")], "k2")
    async with open_backends(f"sqlite:///{path}") as backends:
        bank = ExperienceBank("critic", backends.store)
        result = await apply(bank, [add("three")], "k3")
        assert result.ids("add") == ["C-003"]
        assert [e.id for e in await bank.list(include_deleted=True)] == ["C-001", "C-002", "C-003"]


async def test_duplicate_content_is_refused(store):
    bank = ExperienceBank("generator_1", store)
    await apply(bank, [add("Check units first.")], "k1")
    ops = [add("check  units FIRST."), add("New one."), add("New one."), add("New one.", scope="shared")]
    result = await apply(bank, ops, "k2")
    assert [o.status for o in result.outcomes] == ["rejected", "applied", "rejected", "applied"]
    assert [o.reason for o in result.rejected] == ["duplicate of G1-001", "duplicate of G1-002"]
    assert result.ids("add") == ["G1-002", "S-001"]


async def test_shared_scope_goes_to_the_shared_bank(store):
    bank = ExperienceBank("generator_2", store)
    result = await apply(bank, [add("Draw a diagram.", scope="shared"), add("Own lesson.")], "k1")
    assert result.ids("add") == ["S-001", "G2-001"]
    assert [e.id for e in await ExperienceBank("shared", store).list()] == ["S-001"]
    other = ExperienceBank("generator_3", store)
    modified = await apply(other, [ExperienceOp(op="modify", id="S-001", content="Draw a labelled diagram.")], "k2")
    assert modified.outcomes[0].status == "applied"
    assert (await other.get("S-001")).content == "Draw a labelled diagram."


async def test_same_op_key_applies_once(store):
    bank = ExperienceBank("generator_1", store)
    first = await apply(bank, [add("A lesson.")], "k1")
    again = await apply(bank, [add("A different lesson."), add("And another.")], "k1")
    assert again.replayed and not first.replayed
    assert again.outcomes == first.outcomes
    assert [e.content for e in await bank.list()] == ["A lesson."]


def kill_before_the_journals_are_marked_applied(monkeypatch, store, *, records_written: bool = False):
    """The process dies in the write that marks journals applied: with nothing of it written, or, as a store
    without transactions might leave it, with its record edits written and the marks lost."""
    real_abatch = type(store).abatch

    async def abatch(self, ops):
        ops = list(ops)
        marks = [op for op in ops if isinstance(op, PutOp) and op.namespace[1] == "journal"]
        if any(op.value["status"] == "applied" for op in marks):
            if records_written:
                await real_abatch(self, [op for op in ops if op not in marks])
            raise RuntimeError("killed before the journal was marked applied")
        return await real_abatch(self, ops)

    monkeypatch.setattr(type(store), "abatch", abatch)


async def test_crash_between_journal_and_writes_completes_exactly_once(store, monkeypatch):
    bank = ExperienceBank("generator_1", store)
    await apply(bank, [add("Existing lesson.")], "k0")
    kill_before_the_journals_are_marked_applied(monkeypatch, store)
    ops = [add("New lesson.", scope="shared"), ExperienceOp(op="modify", id="G1-001", content="Better lesson.")]
    with pytest.raises(RuntimeError):
        await apply(bank, ops, "k1")
    pending = await store.aget(namespace("generator_1", "journal"), "k1")
    assert pending.value["status"] == "pending"
    assert await ExperienceBank("shared", store).size() == 0
    monkeypatch.undo()

    resumed = await ExperienceBank("generator_1", store).apply([], op_key="k1", run="r1", problem_id="p1")
    assert resumed.ids("add") == ["S-001"] and resumed.ids("modify") == ["G1-001"]
    assert await apply(bank, ops, "k1") == resumed.model_copy(update={"replayed": True})
    assert [e.content for e in await ExperienceBank("shared", store).list()] == ["New lesson."]
    assert [h.op for h in (await bank.get("G1-001")).history] == ["add", "modify"]


async def test_replaying_a_half_written_journal_writes_each_edit_once(store, monkeypatch):
    """A store without transactions could keep some record writes of a pending journal; replay skips them."""
    bank = ExperienceBank("generator_1", store)
    await apply(bank, [add("Lesson one.")], "k0")
    kill_before_the_journals_are_marked_applied(monkeypatch, store, records_written=True)
    with pytest.raises(RuntimeError):
        await apply(bank, [ExperienceOp(op="modify", id="G1-001", content="Lesson one, improved.")], "k1")
    monkeypatch.undo()
    assert len((await bank.get("G1-001")).history) == 2
    await bank.recover()
    assert len((await bank.get("G1-001")).history) == 2
    assert (await store.aget(namespace("generator_1", "journal"), "k1")).value["status"] == "applied"


async def test_recover_completes_pending_journals(store, monkeypatch):
    bank = ExperienceBank("generator_3", store)
    kill_before_the_journals_are_marked_applied(monkeypatch, store)
    with pytest.raises(RuntimeError):
        await apply(bank, [add("Lesson.")], "k1")
    monkeypatch.undo()
    results = await bank.recover()
    assert [r.ids("add") for r in results] == [["G3-001"]]
    assert await bank.recover() == []


async def test_concurrent_applies_allocate_distinct_ids(store):
    bank = ExperienceBank("generator_1", store)
    results = await asyncio.gather(
        *(apply(ExperienceBank("generator_1", store), [add(f"Lesson {i}.")], f"k{i}") for i in range(50))
    )
    ids = [r.ids("add")[0] for r in results]
    assert len(set(ids)) == 50
    assert sorted(e.id for e in await bank.list()) == sorted(ids) == [f"G1-{n:03d}" for n in range(1, 51)]


async def test_concurrent_applies_of_two_agents_sharing_the_shared_bank(store):
    agents = ["generator_1", "generator_2"]
    await asyncio.gather(
        *(
            apply(
                ExperienceBank(agents[i % 2], store), [add(f"Shared {i}.", scope="shared"), add(f"Own {i}.")], f"k{i}"
            )
            for i in range(20)
        )
    )
    assert await ExperienceBank("shared", store).size() == 20
    assert [await ExperienceBank(a, store).size() for a in agents] == [10, 10]


def interplaying_updates(problem: str) -> list[BankUpdate]:
    """A problem's updates that depend on each other through the shared bank (S-001 exists beforehand)."""
    ops = {
        "critic": [add("Fuse by recomputing.", scope="shared"), ExperienceOp(op="delete", id="S-001")],
        "generator_1": [
            add("fuse by  recomputing.", scope="shared"),  # a duplicate of the critic's add, once that is applied
            ExperienceOp(op="modify", id="S-001", content="Shared lesson, revised."),  # deleted by the critic
            add("Name every quantity."),
        ],
        "generator_2": [
            add("Name every quantity."),
            ExperienceOp(op="modify", id="S-002", content="Fuse by recomputing!"),
        ],
    }
    return [BankUpdate(agent, agent_ops, f"{problem}:{agent}", "r1", problem) for agent, agent_ops in ops.items()]


async def banks_of(store) -> dict[str, list]:
    banks = ("shared", "generator_1", "generator_2", "critic")
    return {b: [e.model_dump() for e in await ExperienceBank(b, store).list(include_deleted=True)] for b in banks}


async def test_updates_applied_together_equal_applying_them_one_by_one(store):
    async with open_backends(None) as other:
        for target in (store, other.store):
            await apply(ExperienceBank("shared", target), [add("Shared lesson.")], "k0")
        together = await apply_updates(store, interplaying_updates("p1"), now=NOW)
        one_by_one = [
            await ExperienceBank(u.agent, other.store).apply(
                u.ops, op_key=u.op_key, run=u.run, problem_id=u.problem_id, now=NOW
            )
            for u in interplaying_updates("p1")
        ]
        assert together == one_by_one
        assert await banks_of(store) == await banks_of(other.store)
    critic, generator_1, generator_2 = together
    assert critic.ids("add") == ["S-002"] and critic.ids("delete") == ["S-001"]
    assert [o.reason for o in generator_1.outcomes[:2]] == ["duplicate of S-002", "S-001 is deleted"]
    assert generator_1.ids("add") == ["G1-001"] and generator_2.ids("modify") == ["S-002"]


async def test_a_problems_updates_are_written_in_two_batches(store, monkeypatch):
    await apply(ExperienceBank("shared", store), [add("Shared lesson.")], "k0")
    writes = []
    real_abatch = type(store).abatch

    async def abatch(self, ops):
        ops = list(ops)
        if any(isinstance(op, PutOp) for op in ops):
            writes.append(ops)
        return await real_abatch(self, ops)

    monkeypatch.setattr(type(store), "abatch", abatch)
    await apply_updates(store, interplaying_updates("p1"), now=NOW)
    assert len(writes) == 2  # pending journals with the sequences, then the records and the journals applied
    replayed = await apply_updates(store, interplaying_updates("p1"), now=NOW)
    assert len(replayed) == 3 and all(r.replayed for r in replayed)
    assert len(writes) == 2  # replayed: nothing written


async def test_a_crash_between_the_two_writes_completes_every_update_once(store, monkeypatch):
    async with open_backends(None) as other:
        for target in (store, other.store):
            await apply(ExperienceBank("shared", target), [add("Shared lesson.")], "k0")
        expected = await apply_updates(other.store, interplaying_updates("p1"), now=NOW)
        kill_before_the_journals_are_marked_applied(monkeypatch, store)
        with pytest.raises(RuntimeError):
            await apply_updates(store, interplaying_updates("p1"), now=NOW)
        monkeypatch.undo()
        assert [e["content"] for e in (await banks_of(store))["shared"]] == ["Shared lesson."]
        assert await apply_updates(store, interplaying_updates("p1"), now=NOW) == expected
        assert await banks_of(store) == await banks_of(other.store)
        replayed = await apply_updates(store, interplaying_updates("p1"), now=NOW)
        assert replayed == [r.model_copy(update={"replayed": True}) for r in expected]
        assert await banks_of(store) == await banks_of(other.store)


async def test_usage_counters_are_idempotent_per_op_key(store):
    bank = ExperienceBank("generator_1", store)
    await apply(bank, [add("Own lesson."), add("Shared lesson.", scope="shared")], "k1")
    shown = ["G1-001", "S-001", "G2-001", "G1-999"]
    assert await bank.record_usage(shown, success=True, op_key="r1:0:p1:generator_1:0") == ["G1-001", "S-001"]
    assert await bank.record_usage(shown, success=True, op_key="r1:0:p1:generator_1:0") == []
    await bank.record_usage(shown, success=False, op_key="r1:0:p1:generator_1:1")
    for experience_id in ("G1-001", "S-001"):
        experience = await bank.get(experience_id)
        assert (experience.usage_count, experience.success_count) == (2, 1)
        assert experience.usefulness == pytest.approx(2 / 4)


async def test_leaky_content_is_rejected_and_recorded(store):
    bank = ExperienceBank("generator_1", store)
    problem = "Find the number of positive integers n less than 1000 such that n squared ends in the digits 44."
    result = await apply(
        bank,
        [
            add("The answer is 204."),
            add("Find the number of positive integers n less than 1000 such that it works."),
            add("   "),
            add("Reduce modulo 8 and modulo 125 separately, then combine with CRT."),
        ],
        "k1",
        problem_text=problem,
        answer="204",
    )
    assert [o.status for o in result.outcomes] == ["rejected", "rejected", "rejected", "applied"]
    assert "204" in result.rejected[0].reason and "copies" in result.rejected[1].reason
    assert result.rejected[2].reason == "empty content"
    assert [e.id for e in await bank.list()] == ["G1-001"]


async def test_history_and_rollback(store):
    bank = ExperienceBank("generator_1", store)
    await apply(bank, [add("Version one.")], "k1")
    await apply(bank, [ExperienceOp(op="modify", id="G1-001", content="Version two.")], "k2")
    await apply(bank, [ExperienceOp(op="delete", id="G1-001")], "k3")
    assert [h.op for h in await bank.history("G1-001")] == ["add", "modify", "delete"]
    restored = await bank.rollback("G1-001", 0, now="2025-01-02T00:00:00+00:00")
    assert (restored.content, restored.deleted) == ("Version one.", False)
    assert [h.op for h in await bank.history("G1-001")] == ["add", "modify", "delete", "rollback"]
    assert (await bank.rollback("G1-001", 2)).deleted
    with pytest.raises(IndexError):
        await bank.rollback("G1-001", 9)
    with pytest.raises(KeyError):
        await bank.rollback("G1-404", 0)
    assert await bank.history("G1-404") == []


async def test_unknown_bank_is_refused():
    from langgraph.store.memory import InMemoryStore

    with pytest.raises(ValueError, match="unknown experience bank"):
        ExperienceBank("generator_9", InMemoryStore())


def test_locks_are_released_with_their_last_user():
    assert len(bank_module._locks) == 0


async def test_usages_of_many_rollouts_count_as_one_call_each(store):
    bank = ExperienceBank("generator_1", store)
    await apply(bank, [add("Own lesson."), add("Shared lesson.", scope="shared")], "k1")
    await apply(ExperienceBank("critic", store), [add("Critic lesson.")], "k2")
    usages = [
        bank_module.RolloutUse("generator_1", ["G1-001", "S-001"], True, "p1:g1:1"),
        bank_module.RolloutUse("generator_1", ["G1-001", "C-001"], False, "p1:g1:2"),  # the critic's id is not theirs
        bank_module.RolloutUse("critic", ["C-001", "S-001"], True, "p1:critic:0"),
        bank_module.RolloutUse("generator_1", ["G1-001"], True, "p1:g1:1"),  # the same op key again: not counted
    ]
    assert await bank_module.record_usages(store, usages) == [["G1-001", "S-001"], ["G1-001"], ["C-001", "S-001"], []]
    assert await bank_module.record_usages(store, usages) == [[], [], [], []]
    counts = {e: ((x := await bank.get(e)).usage_count, x.success_count) for e in ("G1-001", "S-001", "C-001")}
    assert counts == {"G1-001": (2, 1), "S-001": (2, 2), "C-001": (1, 1)}


async def test_a_snapshot_reads_the_banks_once_until_a_write(store, monkeypatch):
    bank = ExperienceBank("generator_1", store)
    await apply(bank, [add("Split the velocity into components."), add("Check units.", scope="shared")], "k1")
    reads = []
    candidates = ExperienceBank._candidates

    async def counted(self):
        reads.append(self.agent)
        return await candidates(self)

    monkeypatch.setattr(ExperienceBank, "_candidates", counted)
    problem = "A projectile is launched at 20 m/s; find its range."
    first = await asyncio.gather(
        *(bank_module.select_for("generator_1", store, problem, 600, snapshot="t1") for _ in range(5))
    )
    assert sorted(reads) == ["generator_1", "shared"]  # five concurrent askers, one read of each bank
    assert all(s == first[0] for s in first) and first[0].ids == ["G1-001", "S-001"]
    await bank_module.select_for("generator_1", store, problem, 600, snapshot="t2")  # another problem reads afresh
    assert len(reads) == 4
    await apply(bank, [ExperienceOp(op="modify", id="G1-001", content="Resolve the velocity into components.")], "k2")
    again = await bank_module.select_for("generator_1", store, problem, 600, snapshot="t1")
    assert len(reads) == 6 and again.own[0].content == "Resolve the velocity into components."
    without = await bank_module.select_for("generator_1", store, problem, 600)
    assert len(reads) == 8 and without == again


async def test_a_failed_selection_is_not_kept(store, monkeypatch):
    await apply(ExperienceBank("critic", store), [add("Fuse the best graph.")], "k1")

    async def broken(self):
        raise RuntimeError("store down")

    with monkeypatch.context() as patch:
        patch.setattr(ExperienceBank, "_candidates", broken)
        with pytest.raises(RuntimeError, match="store down"):
            await bank_module.select_for("critic", store, "any problem", 600, snapshot="t1")
    assert (await bank_module.select_for("critic", store, "any problem", 600, snapshot="t1")).ids == ["C-001"]
