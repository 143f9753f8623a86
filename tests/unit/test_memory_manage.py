"""Bank management: export/import round trips, import validation, prune rules, diffs, rollback of a prune."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

import pytest
from causal_grpo.agents.extractor.schemas import ExperienceOp
from causal_grpo.memory.backends import open_backends
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.manage import (
    ManageError,
    bank_of,
    diff_records,
    dump_records,
    export_bank,
    import_bank,
    load_records,
    near_duplicate,
    parse_records,
    prune,
)
from causal_grpo.memory.schemas import Experience

pytestmark = pytest.mark.anyio

NOW = "2025-01-01T00:00:00+00:00"
LATER = "2025-02-01T00:00:00+00:00"


@pytest.fixture(params=["memory", "sqlite"])
async def stores(request, tmp_path):
    """Two fresh stores of one kind (two runs)."""
    async with AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(open_backends(None if request.param == "memory" else tmp_path / f"{n}.db"))
            for n in ("a", "b")
        ]
        yield [b.store for b in opened]


async def add(bank: ExperienceBank, contents: list[str], key: str) -> list[str]:
    ops = [ExperienceOp(op="add", content=c) for c in contents]
    result = await bank.apply(ops, op_key=key, run="r1", problem_id="p1", now=NOW)
    return result.ids("add")


async def use(bank: ExperienceBank, ids: list[str], outcomes: list[bool], prefix: str) -> None:
    for n, success in enumerate(outcomes):
        await bank.record_usage(ids, success=success, op_key=f"{prefix}{n}", now=NOW)


async def filled(store) -> ExperienceBank:
    """generator_1 with three live experiences (one used, one modified) and a tombstone."""
    bank = ExperienceBank("generator_1", store)
    await add(bank, ["Name every given quantity.", "Check units first.", "Draw the graph before computing."], "k1")
    await bank.apply(
        [
            ExperienceOp(op="modify", id="G1-002", content="Check the units of every node first."),
            ExperienceOp(op="delete", id="G1-003"),
        ],
        op_key="k2",
        run="r1",
        problem_id="p2",
        now=NOW,
    )
    await add(bank, ["Prefer exact fractions."], "k3")
    await use(bank, ["G1-001", "G1-002"], [True, False, True], "u")
    return bank


async def test_export_import_export_is_unchanged(stores):
    source, target = stores
    await filled(source)
    exported = await export_bank(source, "generator_1")
    assert [r["id"] for r in exported] == ["G1-001", "G1-002", "G1-003", "G1-004"]
    assert exported[2]["deleted"] is True and exported[0]["usage_count"] == 3 and exported[0]["success_count"] == 2
    assert list(exported[0])[:5] == ["id", "content", "category", "success_count", "usage_count"]

    records = parse_records(json.loads(dump_records(exported)), "file")
    result = await import_bank(target, "generator_1", records)
    assert result.imported == [(i, i) for i in ("G1-001", "G1-002", "G1-003", "G1-004")]
    assert dump_records(await export_bank(target, "generator_1")) == dump_records(exported)

    # the sequence continues after the imported ids; the tombstone's id stays taken
    assert await add(ExperienceBank("generator_1", target), ["Write the target node last."], "k9") == ["G1-005"]
    # a counted op key stays counted after the move
    assert await ExperienceBank("generator_1", target).record_usage(["G1-001"], success=True, op_key="u0") == []


async def test_import_refuses_a_non_empty_bank_and_renumbers_on_request(stores):
    source, target = stores
    await filled(source)
    await add(ExperienceBank("generator_2", target), ["Check units first.", "Prefer exact fractions."], "t1")
    records = parse_records(await export_bank(source, "generator_1"), "file")

    with pytest.raises(ManageError, match="already holds 2 experience"):
        await import_bank(target, "generator_2", records)
    with pytest.raises(ManageError, match="not an id of bank critic"):
        await import_bank(target, "critic", parse_records([{"id": "G2-001", "content": "x"}], "f"))

    result = await import_bank(target, "generator_2", records, renumber=True, now=LATER)
    assert result.imported == [("G1-001", "G2-003"), ("G1-002", "G2-004")]
    assert result.skipped == [("G1-003", "deleted"), ("G1-004", "duplicate of G2-002")]
    moved = await ExperienceBank("generator_2", target).get("G2-004")
    assert moved.content == "Check the units of every node first." and moved.usage_count == 3
    assert [(h.op, h.key) for h in moved.history][-1] == ("add", f"import:G1-002@{LATER}")
    assert await add(ExperienceBank("generator_2", target), ["Simplify before substituting."], "t2") == ["G2-005"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": "G1-001"}, "expected a JSON list of experience records, got dict"),
        ([{"id": "G1-001", "content": "a"}, "oops"], "file: record 1: expected an object, got str"),
        ([{"id": "G1-001", "content": "a"}, {"id": "G1-002"}], "file: record 1: content: Field required"),
        ([{"id": "G1-001", "content": "a", "category": "tips"}], "file: record 0: category: Input should be"),
        ([{"id": "G1-001", "content": "a", "usage_count": 1, "success_count": 2}], "success_count <= usage_count"),
        ([{"id": "G1-001", "content": "   "}], "record 0 .G1-001.: empty content"),
        ([{"id": "G1-001", "content": "x" * 401}], "longer than 400"),
        (
            [{"id": "G1-001", "content": "a"}, {"id": "G1-001", "content": "b"}],
            "record 1: id 'G1-001' repeats record 0",
        ),
        ([{"id": "G1-001", "content": "a", "history": [{"key": "k", "op": "burn", "at": NOW}]}], "history.0.op"),
    ],
)
def test_parse_records_names_the_bad_record(data, message):
    with pytest.raises(ManageError, match=message):
        parse_records(data, "file")


def test_parse_records_accepts_the_spec_shape_and_normalises_content():
    [record] = parse_records([{"id": "S-002", "content": "  Check\n units. ", "extra": 1}], "file")
    assert record == Experience(id="S-002", content="Check units.")


def test_load_records_reports_file_problems(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": "G1-001",', encoding="utf-8")
    with pytest.raises(ManageError, match=r"bad\.json: not valid JSON \(line 1, column 18"):
        load_records(bad)
    with pytest.raises(ManageError, match="missing.json: cannot read"):
        load_records(tmp_path / "missing.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe[")
    with pytest.raises(ManageError, match="not UTF-8"):
        load_records(binary)


async def test_prune_by_success_rate_dry_run_then_for_real(stores):
    store, _ = stores
    bank = ExperienceBank("critic", store)
    ids = await add(bank, ["Fuse by majority.", "Trust the longest graph.", "Recompute every proposal."], "k")
    await use(bank, ids[:1], [True, True, False], "a")  # 0.67 over 3 uses
    await use(bank, ids[1:2], [False, False, True], "b")  # 0.33 over 3 uses
    await use(bank, ids[2:], [False], "c")  # 0.0 over 1 use: too few uses to judge

    planned = await prune(store, "critic", min_success_rate=0.5, min_uses=3, dry_run=True)
    assert [(p.id, p.rule) for p in planned] == [("C-002", "success_rate")]
    assert "success rate 0.33 < 0.5 over 3 uses" in planned[0].reason
    assert await bank.size() == 3

    assert await prune(store, "critic", min_success_rate=0.5, min_uses=3, now=LATER) == planned
    gone = await bank.get("C-002")
    assert gone.deleted and gone.history[-1].op == "delete" and gone.history[-1].key == f"prune:success_rate@{LATER}"
    restored = await bank.rollback("C-002", 0)
    assert not restored.deleted and await bank.size() == 3


async def test_prune_dedupe_keeps_the_most_used_and_max_size_keeps_the_most_useful(stores):
    store, _ = stores
    bank = ExperienceBank("shared", store)
    ids = await add(
        bank,
        [
            "Check the units of every node.",
            "Check the units of every node!",  # equal once normalised; refused by apply only when identical
            "Check the unit of every node.",  # similar
            "Prefer exact fractions over decimals.",
            "Name the target node last.",
        ],
        "k",
    )
    assert ids == ["S-001", "S-002", "S-003", "S-004", "S-005"]
    await use(bank, ["S-003"], [True, True], "a")
    await use(bank, ["S-004"], [False, False, False], "b")

    deduped = await prune(store, "shared", dedupe=True)
    assert {(p.id, p.reason) for p in deduped} == {
        ("S-001", "near-duplicate of S-003"),
        ("S-002", "near-duplicate of S-003"),
    }
    by_size = await prune(store, "shared", max_size=1, dry_run=True)
    assert [p.id for p in by_size] == ["S-004", "S-005"]  # usefulness 0.2 and 0.5 against S-003's 0.75
    assert [e.id for e in await bank.list()] == ["S-003", "S-004", "S-005"]
    with pytest.raises(ManageError, match="between 0 and 1"):
        await prune(store, "shared", min_success_rate=1.5)


def test_near_duplicate():
    assert near_duplicate("Check units.", "check   UNITS")
    assert not near_duplicate("Check units first.", "Prefer exact fractions.")


def test_diff_records():
    a = [
        Experience(id="G1-001", content="a"),
        Experience(id="G1-002", content="b"),
        Experience(id="G1-003", content="c"),
    ]
    b = [
        Experience(id="G1-001", content="a"),
        Experience(id="G1-002", content="b2", usage_count=2, success_count=1),
        Experience(id="G1-003", content="c", deleted=True),
        Experience(id="G1-004", content="d"),
    ]
    diff = diff_records(a, b)
    assert [e.id for e in diff.added] == ["G1-004"] and [e.id for e in diff.removed] == ["G1-003"]
    [change] = diff.changed
    assert change.id == "G1-002"
    assert change.fields == {"content": ("b", "b2"), "success_count": (0, 1), "usage_count": (0, 2)}
    assert diff_records(a, a).empty


def test_bank_of():
    assert bank_of("G3-010") == "generator_3" and bank_of("C-001") == "critic"
    with pytest.raises(ManageError, match="not an experience id"):
        bank_of("X-1")
