"""Reference scaffolds for shipped problems: each computes the shipped answer, with the computer doing the work.

`reference_scaffolds/<problem id>.json` is the best scaffold we could write for that problem: its givens are
numbers stated in the problem text, and the counting, casework, searching, root-finding and integrating happen
in formulas (v2 iterations, conditions, equation systems, checks, number theory). They double as a
regression table for the computer and a source of documentation examples; one is shipped in `examples/`.
"""

from __future__ import annotations

import ast
import json
import re
import time
from functools import cache
from pathlib import Path

import pytest

from causal_grpo.problems import Problem, load_problems
from causal_grpo.rewards import answer_reward, given_traceable, graph_reward, logic_checks, text_numbers, typed_in
from causal_grpo.scaffold import MAX_FORMULA_CHARS, MAX_NODES, Computation, Scaffold, compute

HERE = Path(__file__).parent
REFERENCES = sorted((HERE / "reference_scaffolds").glob("*.json"))
EXAMPLE = HERE.parents[1] / "examples" / "least_prime_square_divisor.json"
EXAMPLE_SOURCE = "aime2024_013"

MIN_REFERENCES = 20
MIN_V2_AIME = 10
STRUCTURAL_LITERALS = {0, 1, 2, 3, 4, 10, 100, 1000}
"""Numbers a formula may spell out: small structural constants (squares, halves, the quadratic formula's 4),
the decimal base, and round search bounds. Anything else must be a given from the text or computed."""

# Givens that are not in the problem text and not among the rewards' known constants, with the reason.
UNTRACED_OK: dict[str, dict[str, str]] = {
    "physics_021": {"m_N": "the atomic mass of nitrogen (14.007 u) is a tabulated constant the text assumes"},
}

V2_KINDS = {"unknown", "equation", "check"}
V2_FUNCTIONS = (
    "sum prod count first max_of min_of ifelse integrate erf numer denom powmod modinv isprime prime "
    "divisor_count divisor_sum totient omega multiplicity digit_sum num_digits"
).split()
_V2_CALL = re.compile(r"\b(" + "|".join(V2_FUNCTIONS) + r")\s*\(")


@cache
def problems() -> dict[str, Problem]:
    return {p.id: p for p in load_problems("full")}


@cache
def scaffold(path: Path) -> Scaffold:
    return Scaffold.model_validate_json(path.read_text())


WARM_UP = {
    "nodes": [
        {"id": "a", "kind": "given", "value": "2", "unit": "m"},
        {"id": "x", "kind": "unknown", "domain": "positive", "unit": "m"},
        {"id": "eq", "kind": "equation", "formula": "x**2 == a*x"},
        {"id": "t", "kind": "derived", "formula": "sum(k*x, k, 1, 3)", "unit": "cm"},
    ],
    "target": "t",
}


@cache
def warmed_up() -> None:
    """The process's first computation pays for lazy imports and caches; time the references after it."""
    assert compute(WARM_UP).valid


@cache
def timed(path: Path) -> tuple[Computation, float]:
    warmed_up()
    start = time.thread_time()
    result = compute(scaffold(path))
    return result, time.thread_time() - start


def computed(path: Path) -> Computation:
    return timed(path)[0]


def v2_constructs(sc: Scaffold) -> set[str]:
    """The v2 node kinds and functions a scaffold uses."""
    found = {n.kind for n in sc.nodes if n.kind in V2_KINDS}
    for node in sc.nodes:
        found.update(_V2_CALL.findall(node.formula or ""))
    return found


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def computable(paths: list[Path]) -> list[object]:
    """The paths as parameters, one per problem."""
    return [pytest.param(p, id=p.stem) for p in paths]


def test_the_table_is_large_enough() -> None:
    assert len(REFERENCES) >= MIN_REFERENCES
    v2_aime = [p.stem for p in REFERENCES if p.stem.startswith("aime") and v2_constructs(scaffold(p))]
    assert len(v2_aime) >= MIN_V2_AIME, v2_aime


@pytest.mark.parametrize("path", REFERENCES, ids=ids(REFERENCES))
def test_reference_is_well_formed(path: Path) -> None:
    data = json.loads(path.read_text())
    assert path.stem in problems(), "files are named by problem id"
    assert list(data)[0] == "analysis" and data["analysis"].strip(), "each reference explains its approach first"
    sc = scaffold(path)
    assert len(sc.nodes) <= MAX_NODES
    assert all(len(n.expression) <= MAX_FORMULA_CHARS for n in sc.nodes)
    if path.stem.startswith("aime"):
        assert v2_constructs(sc), "the AIME references are here for the v2 language"


@pytest.mark.parametrize("path", computable(REFERENCES))
def test_reference_computes_the_shipped_answer(path: Path) -> None:
    problem = problems()[path.stem]
    result = computed(path)
    assert result.valid, [str(e) for e in result.errors]
    reward = answer_reward(result.answer, problem)
    assert reward.score == 1.0, f"{result.answer} vs {problem.answer} {problem.unit or ''}: {reward.detail}"


@pytest.mark.parametrize("path", computable(REFERENCES))
def test_the_computer_does_the_work(path: Path) -> None:
    """Every given comes from the text, no derived node is a typed-in number, and nothing is dead."""
    sc, problem, result = scaffold(path), problems()[path.stem], computed(path)
    assert result.valid, [str(e) for e in result.errors]
    assert typed_in(sc, result) == []
    numbers = text_numbers(problem.text)
    untraced = {
        n.id
        for n in sc.nodes
        if n.kind == "given"
        and ((value := result.numeric.get(n.id)) is None or not given_traceable(n.id, n.description, value, numbers))
    }
    allowed = UNTRACED_OK.get(path.stem, {})
    assert untraced == set(allowed), f"untraced givens: {sorted(untraced)}"
    if not allowed:
        assert logic_checks(sc, result, problem).breakdown["givens_traceable"] == 1.0
    literals = {
        node.value
        for n in sc.nodes
        if n.formula
        for node in ast.walk(ast.parse(n.formula, mode="eval"))
        if isinstance(node, ast.Constant)
    }
    assert literals <= STRUCTURAL_LITERALS, f"numbers typed into formulas: {sorted(literals - STRUCTURAL_LITERALS)}"
    breakdown = graph_reward(sc, result).breakdown
    assert breakdown["no_dead_nodes"] == 1.0, graph_reward(sc, result).detail
    assert breakdown["target_reachable"] == 1.0


def test_the_example_is_a_reference() -> None:
    example = Scaffold.model_validate_json(EXAMPLE.read_text())
    assert example == scaffold(HERE / "reference_scaffolds" / f"{EXAMPLE_SOURCE}.json")
    result = compute(example)
    assert result.valid and answer_reward(result.answer, problems()[EXAMPLE_SOURCE]).score == 1.0
