"""Selecting experiences for a prompt: relevance, usefulness, token budget, flat prompt size."""

from __future__ import annotations

import random
import time

import pytest
from causal_grpo.memory.bank import ExperienceBank, select_for
from causal_grpo.memory.schemas import Experience, make_id, namespace
from causal_grpo.memory.selection import count_tokens, format_experiences, pack, rank, type_match
from langgraph.store.base import PutOp
from langgraph.store.memory import InMemoryStore

pytestmark = pytest.mark.anyio

TOPICS = ["triangle circle tangent", "modular arithmetic remainder", "projectile velocity gravity", "probability dice"]
PROBLEM = "A projectile is launched with velocity 20 m/s at 30 degrees; ignoring drag, find its range under gravity."


def experience(number: int, content: str, agent: str = "generator_1", **fields) -> Experience:
    return Experience(id=make_id(agent, number), content=content, **fields)


async def fill(store, agent: str, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    records = [
        experience(
            n,
            f"When the problem involves {rng.choice(TOPICS)}, write each quantity as a node and check step {n}.",
            agent,
            problem_type=rng.choice(["math_geometry", "physics_kinematics", "general"]),
            usage_count=(usage := rng.randint(0, 10)),
            success_count=rng.randint(0, usage),
            deleted=n % 17 == 0,
        )
        for n in range(1, count + 1)
    ]
    await store.abatch([PutOp(namespace(agent), e.id, e.model_dump(mode="json")) for e in records])


def test_count_tokens_is_a_quarter_of_the_characters_rounded_up():
    assert [count_tokens(t) for t in ["", "abc", "abcd", "abcde"]] == [0, 1, 1, 2]


def test_rank_prefers_relevant_then_useful_and_skips_deleted():
    pool = [
        experience(1, "For modular arithmetic reduce the remainder early."),
        experience(2, "Split projectile velocity into components; gravity acts vertically.", problem_type="physics"),
        experience(3, "Projectile range needs the launch angle.", deleted=True),
        experience(4, "Write each given as a node.", usage_count=10, success_count=10),
        experience(5, "Write each given as a node, twice.", usage_count=10, success_count=0),
    ]
    ranked = [e.id for e in rank(pool, PROBLEM, "physics_kinematics")]
    assert ranked[0] == "G1-002" and "G1-003" not in ranked
    assert ranked.index("G1-004") < ranked.index("G1-005")


def test_type_match():
    assert type_match("physics mechanics", "physics_mechanics") == 1.0
    assert type_match("physics", "physics_mechanics") == 0.5
    assert type_match("math", "general") == type_match(None, "general") > 0


def test_pack_respects_the_budget_and_skips_what_does_not_fit():
    pool = [experience(1, "x" * 400), experience(2, "short one"), experience(3, "another short one")]
    chosen = pack(pool, 20)
    assert [e.id for e in chosen] == ["G1-002", "G1-003"]
    assert count_tokens(format_experiences(chosen)) <= 20
    assert pack(pool, 0) == []


def test_format_experiences():
    block = format_experiences(
        [experience(7, "Use  symmetry.\nAlways."), experience(1, "Sign errors.", "critic", category="common_mistake")]
    )
    assert block == "[G1-007] (strategy) Use symmetry. Always.\n[C-001] (mistake) Sign errors."
    assert format_experiences([]) == ""


async def test_select_stays_within_budget_and_fast_with_1000_experiences():
    store = InMemoryStore()
    await fill(store, "generator_1", 1000)
    bank = ExperienceBank("generator_1", store)
    await bank.select(PROBLEM, "physics_kinematics", 600)  # warm the word cache, as a running driver has
    start = time.perf_counter()
    for _ in range(10):
        chosen = await bank.select(PROBLEM, "physics_kinematics", 600)
    per_select_ms = (time.perf_counter() - start) * 100
    assert count_tokens(format_experiences(chosen)) <= 600
    assert not any(e.deleted for e in chosen)
    assert sum("projectile" in e.content for e in chosen) > len(chosen) / 2
    assert per_select_ms < 250, per_select_ms  # about 10 ms here; the bound only catches a blow-up


async def test_prompt_block_stays_flat_as_banks_grow():
    sizes = {}
    for count in (10, 100, 1000):
        store = InMemoryStore()
        await fill(store, "generator_2", count)
        await fill(store, "shared", count // 2 or 1, seed=1)
        selection = await select_for("generator_2", store, PROBLEM, 400, problem_type="physics")
        sizes[count] = count_tokens(selection.format())
        assert sizes[count] <= 400
        assert all(i.startswith("S-") for i in [e.id for e in selection.shared])
        assert all(i.startswith("G2-") for i in [e.id for e in selection.own])
    # a small bank fits whole; once the budget binds, the block stays near it whatever the bank's size
    assert sizes[10] < sizes[100]
    assert 400 - 40 < sizes[100] <= 400 and 400 - 40 < sizes[1000] <= 400


async def test_select_for_splits_the_budget_and_lets_either_side_use_the_rest():
    store = InMemoryStore()
    await fill(store, "shared", 50)
    only_shared = await select_for("critic", store, PROBLEM, 300)
    assert only_shared.own == [] and count_tokens(only_shared.format()) > 200
    await fill(store, "critic", 50, seed=2)
    both = await select_for("critic", store, PROBLEM, 300)
    shared_tokens = count_tokens(format_experiences(both.shared))
    assert both.own and 0 < shared_tokens <= 300 // 3 + 30
    assert count_tokens(both.format()) <= 300
    assert both.ids == [e.id for e in both.own + both.shared]
