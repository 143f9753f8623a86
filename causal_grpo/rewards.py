"""Rewards, each in [0, 1] with a readable breakdown: r_ans, r_graph, r_logic (deterministic part), r_fusion.

Pure functions: no LLM, store or clock. The rules, in short:

- r_ans. AIME (a dataset named `aime*` with an integer reference): integer equality, decided exactly
  wherever the value is exact: an exact rational scores 1 only if it is that integer, an exact irrational
  one (which the computer could not simplify to a rational) scores 0 when its 50 digits show it is not an
  integer. Only a value that went through a float, or one within 1e-30 of the integer that sympy could not
  prove equal, is compared numerically (relative 1e-9), and the detail says "numerically equal". Any unit
  on it is ignored. Other math: symbolic equivalence with math-verify (reference parsed as LaTeX; the computed
  value must also agree to 1e-6 relative when both are numbers, since math-verify rounds to 6 decimals).
  Physics: the computed quantity is converted to the reference unit with pint and must be within
  `rel_tol` (5%, SciBench's tolerance) of the reference; incompatible dimensions score 0. A bare
  number (no unit) is read in the reference unit only when that unit is dimensionless in pint
  ('', degree, percent); against a dimensionful reference it scores 0: the scaffold has units, so
  dropping them is a mistake.
- r_graph: weighted structural components, see `GRAPH_WEIGHTS`; a node's inputs are the nodes its built
  value depends on (`0*x` does not depend on x), and a derived node with none is a typed-in number.
- r_logic: deterministic checks (`LOGIC_WEIGHTS`), mixed 50/50 with the LLM judge's score when there is one.
- r_fusion: see `fusion_reward`.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

import pint
import sympy
from math_verify import LatexExtractionConfig, parse, verify
from pydantic import BaseModel, Field

from causal_grpo.errors import shorten_numbers
from causal_grpo.problems import Problem
from causal_grpo.scaffold import Answer, Computation, Scaffold, ancestors, units
from causal_grpo.scaffold.sandbox import shared_sandbox


class RewardWeights(BaseModel):
    """Weights of r_total; they need not sum to 1 (r_total is normalised by their sum)."""

    ans: float = Field(default=0.5, ge=0)
    logic: float = Field(default=0.25, ge=0)
    graph: float = Field(default=0.25, ge=0)
    fusion: float = Field(default=0.0, ge=0)


class RewardPart(BaseModel):
    """One reward with the pieces it was made of, for people to read."""

    score: float = Field(ge=0.0, le=1.0)
    detail: str = ""
    breakdown: dict[str, float] = Field(default_factory=dict)


class Rewards(BaseModel):
    """All rewards of one rollout or fused result, and r_total under some weights."""

    r_ans: float
    r_logic: float
    r_graph: float
    r_fusion: float | None = None
    r_total: float
    detail: dict[str, RewardPart] = Field(default_factory=dict)


AIME_INTEGER_TOL = 1e-9
"""Relative tolerance of an integer reference against a value that is not exact."""
UNDECIDED_TOL = Decimal("1e-30")
"""An exact irrational value this close (relative) to an integer is undecided, not decidably different."""
MATH_NUMERIC_REL_TOL = 1e-6
# Inputs to math-verify are capped: its own timeouts use SIGALRM (main thread only), so they are off.
MAX_MATH_CHARS = 200

GRAPH_WEIGHTS: dict[str, float] = {
    "parses": 0.10,  # the scaffold matched the schema
    "acyclic": 0.10,
    "references_resolve": 0.10,  # no unknown, duplicate or reserved ids; givens reference nothing
    "target_reachable": 0.15,  # the target is a derived node with a given among its ancestors
    "no_dead_nodes": 0.15,  # share of nodes the target's value depends on
    "derived_have_inputs": 0.10,  # share of derived nodes whose value depends on another node
    "computed": 0.10,  # share of nodes that got a value
    "units_consistent": 0.10,  # no dimension or unit errors
    "size": 0.10,  # 2..SANE_NODES nodes: 1; larger: 0.5; a lone node: 0
}
SANE_NODES = 40

LOGIC_WEIGHTS: dict[str, float] = {
    "dimensions": 0.4,  # no dimension/unit errors (physics: and the answer's dimension is the reference's)
    "givens_traceable": 0.4,  # share of givens found in the problem text or among well-known constants
    "derived_step": 0.2,  # at least one derived node was computed
}
JUDGE_WEIGHT = 0.5


class _DropTimeoutWarning(logging.Filter):
    """math-verify warns once that its timeouts are off; they are off on purpose (see MAX_MATH_CHARS)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutWarning())


def _part(breakdown: dict[str, float], weights: dict[str, float], detail: str) -> RewardPart:
    value = sum(weights[k] * breakdown[k] for k in weights) / sum(weights.values())
    return RewardPart(score=min(1.0, max(0.0, value)), detail=detail, breakdown=breakdown)


# ---------------------------------------------------------------- r_ans


def answer_reward(answer: Answer | None, problem: Problem, *, rel_tol: float = 0.05) -> RewardPart:
    """Score a computed answer against the problem's reference (rules in the module docstring)."""
    if answer is None:
        return RewardPart(score=0.0, detail="no answer: the target was not computed")
    if problem.dataset.lower().startswith("aime") and re.fullmatch(r"[+-]?\d+", problem.answer.strip()):
        return _integer_reward(answer, int(problem.answer))
    if problem.domain == "physics":
        return _quantity_reward(answer, problem, rel_tol)
    return _symbolic_reward(answer, problem.answer)


_EXACT_RATIONAL = re.compile(r"[+-]?(\d+(/\d+)?|\d*\.\d+)")
EXACT_DECISION_S = 0.5
"""CPU seconds the exact comparison of an answer with its reference may take (the computer's own budget)."""


def _exactly_equal(value: str, reference: str) -> bool | None:
    """Whether two exact constant expressions are equal, decided by the computer (None: not both readable).

    The difference is computed as a scaffold's target, so it is simplified and proven as the computer proves
    any exact value: True only when it is provably 0; a difference it cannot prove 0 is False. It is computed
    in the sandbox, like every scaffold: the answer is model output, and in the caller's process a garbage
    collection of its heap (0.64 s of CPU measured in the test process) would spend the budget and fail a
    right answer.
    """
    nodes = [
        {"id": "value", "kind": "given", "value": value},
        {"id": "reference", "kind": "given", "value": reference},
        {"id": "difference", "kind": "derived", "formula": "value - reference"},
    ]
    result = shared_sandbox().compute({"nodes": nodes, "target": "difference"}, time_limit_s=EXACT_DECISION_S)
    if result.answer is None:
        return None
    return result.answer.is_exact and result.answer.exact == "0"


def _integer_reward(answer: Answer, reference: int) -> RewardPart:
    text = answer.exact.strip()
    shown = shorten_numbers(text)
    if answer.is_exact and _EXACT_RATIONAL.fullmatch(text):
        value = Fraction(text)
        if value.denominator != 1:
            return RewardPart(score=0.0, detail=f"{shown} is an exact fraction, not an integer; reference {reference}")
        ok = value.numerator == reference
        return RewardPart(score=float(ok), detail=f"integer {shown} {'==' if ok else '!='} reference {reference}")
    if answer.is_exact:
        if answer.digits is not None:
            digits = Decimal(answer.digits)
            nearest = digits.to_integral_value()
            if abs(digits - nearest) > UNDECIDED_TOL * max(1, abs(nearest)):
                return RewardPart(
                    score=0.0,
                    detail=f"{shown[:80]} = {answer.digits[:40]}… is not an integer; reference {reference}",
                )
        # Within 1e-30 of an integer: equal only if proven so, never by a float.
        ok = _exactly_equal(text, str(reference)) is True
        relation = "is proven equal to" if ok else "could not be proven equal to (decided exactly, not by a float)"
        return RewardPart(score=float(ok), detail=f"{shown[:80]} {relation} reference {reference}")
    if answer.numeric is None or not math.isfinite(answer.numeric):
        return RewardPart(score=0.0, detail=f"{shown[:80]} has no finite value; reference {reference}")
    ok = abs(answer.numeric - reference) <= AIME_INTEGER_TOL * max(1, abs(reference))
    relation = "numerically equal to" if ok else "not equal to"
    return RewardPart(
        score=float(ok), detail=f"{answer.numeric:.15g} is {relation} reference {reference} (the value is not exact)"
    )


def _quantity_reward(answer: Answer, problem: Problem, rel_tol: float) -> RewardPart:
    ref_unit = (problem.unit or "").strip()
    reference = _reference_number(problem.answer)
    if reference is None:
        return RewardPart(score=0.0, detail=f"reference {problem.answer!r} is not a number")
    if answer.numeric is None or not math.isfinite(answer.numeric):
        return RewardPart(score=0.0, detail=f"{answer} has no finite numeric value")
    # The computer's registry: pint's defaults read 'e' as elementary_charge, 'degree' as an angle.
    ureg = units.registry()
    try:
        target_units = ureg.parse_units(ref_unit) if ref_unit else ureg.dimensionless
    except Exception:  # pint raises assorted errors for malformed unit text
        return RewardPart(score=0.0, detail=f"reference unit {ref_unit!r} is not understood")
    unit = answer.unit.strip()
    if not unit and not ureg.Quantity(1, target_units).dimensionless:
        return RewardPart(score=0.0, detail=f"{answer.exact} has no unit; reference is {problem.answer} {ref_unit}")
    try:
        # A bare number against a dimensionless reference unit (degree, percent) is read in that unit.
        quantity = ureg.Quantity(answer.numeric, ureg.parse_units(unit) if unit else target_units)
        value = float(quantity.to(target_units).magnitude)
    except pint.DimensionalityError:
        return RewardPart(score=0.0, detail=f"{answer} cannot be expressed in {ref_unit or 'a pure number'}")
    except Exception:
        return RewardPart(score=0.0, detail=f"unit {unit!r} is not understood")
    error = abs(value - reference) / abs(reference) if reference else abs(value)
    ok = error <= rel_tol
    suffix = f" {ref_unit}" if ref_unit else ""
    return RewardPart(
        score=float(ok),
        detail=f"{answer} = {value:.6g}{suffix}; reference {problem.answer}{suffix}: "
        f"{error:.2%} off ({'within' if ok else 'beyond'} {rel_tol:.0%})",
    )


def _symbolic_reward(answer: Answer, reference: str) -> RewardPart:
    gold = _parse_reference(reference)
    if gold is None:
        return RewardPart(score=0.0, detail=f"reference {reference!r} could not be parsed")
    if answer.is_exact and len(answer.exact) <= MAX_MATH_CHARS:
        # An exact answer against a reference the computer can read (plain, or LaTeX through math-verify's
        # sympy form) is decided exactly, as an integer reference is: math-verify compares through floats.
        for exact_reference in dict.fromkeys((reference.strip(), str(gold))):
            equal = _exactly_equal(answer.exact, exact_reference)
            if equal is not None:
                relation = "is exactly" if equal else "is not exactly (decided exactly, not by a float)"
                return RewardPart(score=float(equal), detail=f"{answer.exact} {relation} reference {reference}")
    predicted = _predicted_expr(answer)
    if predicted is None:
        return RewardPart(score=0.0, detail=f"{answer.exact} is not a value math-verify can compare")
    ok = verify(gold, predicted, timeout_seconds=None)
    gold_value = _number(gold)
    if ok and gold_value is not None and answer.numeric is not None:
        ok = math.isclose(gold_value, answer.numeric, rel_tol=MATH_NUMERIC_REL_TOL, abs_tol=1e-12)
    return RewardPart(
        score=float(ok),
        detail=f"{answer.exact} {'is' if ok else 'is not'} equivalent to reference {reference}",
    )


def _parse_reference(text: str) -> sympy.Basic | None:
    text = text.strip()
    if not text or len(text) > MAX_MATH_CHARS:
        return None
    plain = _plain_number(text)
    if plain is not None:
        return plain
    parsed = parse(f"${text}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
    return parsed[0] if parsed and isinstance(parsed[0], sympy.Basic) else None


def _plain_number(text: str) -> sympy.Rational | None:
    # Decimal text becomes an exact rational so '0.5' and '1/2' compare exactly.
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?", text):
        return sympy.Rational(text.lower().replace("e+", "e"))
    return None


def _predicted_expr(answer: Answer) -> sympy.Basic | None:
    # Plain numbers and fractions are taken exactly; anything else through its float.
    exact = answer.exact.strip()
    if len(exact) <= MAX_MATH_CHARS:
        if (plain := _plain_number(exact)) is not None:
            return plain
        if re.fullmatch(r"[+-]?\d+/[1-9]\d*", exact):
            return sympy.Rational(exact)
    if answer.numeric is None or not math.isfinite(answer.numeric):
        return None
    return sympy.Float(answer.numeric, 15)


def _number(expr: sympy.Basic) -> float | None:
    try:
        return float(expr.evalf()) if expr.is_number and expr.is_real else None
    except (TypeError, ValueError):
        return None


def _reference_number(text: str) -> float | None:
    parsed = _parse_reference(text)
    return None if parsed is None else _number(parsed)


# ---------------------------------------------------------------- r_graph

_REFERENCE_ERRORS = {"unknown_reference", "duplicate_id", "reserved_id", "given_with_reference"}
_UNIT_ERRORS = {"dimension", "unit"}


def inputs(computation: Computation) -> dict[str, list[str]]:
    """Each parsed node's inputs: what its value depends on (nothing for a typed-in value), else its references."""
    return {
        n: [] if n in computation.typed_in else computation.depends.get(n, refs)
        for n, refs in computation.parents.items()
    }


def typed_in(scaffold: Scaffold, computation: Computation) -> list[str]:
    """Derived nodes and unknowns whose value does not depend on the givens: numbers typed in, givens in all but name.

    One with no input at all is seen from its formula; the others are found by the computer, which computes
    the graph again with the givens moved (`Computation.typed_in`).
    """
    edges = inputs(computation)
    return [
        n.id
        for n in scaffold.nodes
        if n.id in computation.typed_in or (n.kind == "derived" and n.id in edges and not edges[n.id])
    ]


def graph_reward(scaffold: Scaffold | None, computation: Computation) -> RewardPart:
    """Score the graph's structure from its deterministic components (`GRAPH_WEIGHTS`)."""
    kinds = {e.kind for e in computation.errors}
    if scaffold is None or "schema" in kinds:
        return _part(dict.fromkeys(GRAPH_WEIGHTS, 0.0), GRAPH_WEIGHTS, "the scaffold did not parse")
    n = len(scaffold.nodes)
    edges = inputs(computation)
    conditions = _conditions(scaffold, computation)
    ids = [node.id for node in scaffold.nodes if node.id not in conditions]
    valued = [node.id for node in scaffold.nodes if node.is_quantity]
    target = scaffold.node(scaffold.target)
    feeding = ancestors(scaffold.target, edges) if target else set()
    given_ids = {node.id for node in scaffold.nodes if node.kind == "given"}
    reachable = target is not None and target.kind in ("derived", "unknown") and bool(feeding & given_ids)
    alive = feeding | {scaffold.target}
    # A node only a condition uses is alive when it is computed from what the target is computed from: it
    # verifies the answer. One that only checks givens among themselves feeds nothing the answer needs.
    verifying = {a for c in conditions for a in ancestors(c, edges) if ancestors(a, edges) & alive}
    dead = [i for i in dict.fromkeys(ids) if i not in alive and i not in verifying]
    derived = [node.id for node in scaffold.nodes if node.kind in ("derived", "unknown")]
    without_inputs = typed_in(scaffold, computation)
    breakdown = {
        "parses": 1.0,
        "acyclic": float("cycle" not in kinds),
        "references_resolve": float(not kinds & _REFERENCE_ERRORS),
        "target_reachable": float(reachable),
        "no_dead_nodes": (len(ids) - sum(ids.count(i) for i in dead)) / len(ids) if ids else 0.0,
        "derived_have_inputs": 1.0 - len(without_inputs) / len(derived) if derived else 1.0,
        "computed": sum(1 for i in valued if i in computation.values) / len(valued) if valued else 0.0,
        "units_consistent": float(not kinds & _UNIT_ERRORS),
        "size": 0.0 if n < 2 else 1.0 if n <= SANE_NODES else 0.5,
    }
    weak = [k for k, v in breakdown.items() if v < 1.0]
    notes = [f"short on: {', '.join(weak)}" if weak else "all components met"]
    if dead:
        notes.append(f"dead: {_listed(dead)}")
    if without_inputs:
        reasons = [
            f"{i} ({computation.typed_in[i] if computation.depends.get(i) else 'derived without inputs'})"
            for i in without_inputs
        ]
        notes.append(f"typed in: {_listed(reasons)}")
    return _part(breakdown, GRAPH_WEIGHTS, f"{n} nodes; " + "; ".join(notes))


def _conditions(scaffold: Scaffold, computation: Computation) -> set[str]:
    """Checks, and equations that hold no unknown: they test values and never feed one, so they are never dead."""
    unknowns = {node.id for node in scaffold.nodes if node.kind == "unknown"}
    return {
        node.id
        for node in scaffold.nodes
        if node.kind == "check"
        or (node.kind == "equation" and not (ancestors(node.id, computation.parents) | {node.id}) & unknowns)
    }


def _listed(ids: list[str], limit: int = 8) -> str:
    return ", ".join(ids[:limit]) + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


# ---------------------------------------------------------------- r_logic

# (keywords in a node's id or description, reference value); a named constant may be rounded to fewer digits.
CONSTANTS: list[tuple[tuple[str, ...], float]] = [
    (("pi",), math.pi),
    (("euler",), math.e),
    (("g", "gravity", "gravitational acceleration", "free fall", "free-fall"), 9.80665),
    (("c", "speed of light", "light speed"), 2.99792458e8),
    (("e", "elementary charge", "electron charge", "proton charge", "q_e", "ev"), 1.602176634e-19),
    (("g", "gravitational constant", "newton's constant", "big_g"), 6.6743e-11),
    (("h", "planck"), 6.62607015e-34),
    (("hbar", "reduced planck"), 1.054571817e-34),
    (("k_b", "kb", "boltzmann"), 1.380649e-23),
    (("n_a", "na", "avogadro"), 6.02214076e23),
    (("r", "gas constant"), 8.314462618),
    (("epsilon_0", "eps0", "epsilon0", "permittivity"), 8.8541878128e-12),
    (("k", "k_e", "coulomb constant", "coulomb's constant"), 8.9875517923e9),
    (("mu_0", "mu0", "permeability"), 1.25663706212e-6),
    (("m_e", "electron mass", "mass of the electron", "mass of an electron"), 9.1093837015e-31),
    (("m_p", "proton mass", "mass of the proton", "mass of a proton"), 1.67262192369e-27),
    (("m_n", "neutron mass", "mass of the neutron", "mass of a neutron"), 1.67492749804e-27),
    (("u", "amu", "atomic mass unit"), 1.66053906660e-27),
    (("m_e", "electron"), 0.51099895),  # MeV
    (("m_p", "proton"), 938.272088),  # MeV
    (("m_n", "neutron"), 939.565420),  # MeV
    (("u", "amu", "atomic mass unit"), 931.494102),  # MeV
    (("sigma", "stefan"), 5.670374419e-8),
    (("earth", "m_earth", "r_earth"), 5.972e24),
    (("earth", "m_earth", "r_earth"), 6.371e6),
    (("moon", "m_moon", "r_moon"), 7.342e22),
    (("moon", "m_moon", "r_moon"), 1.7374e6),
    (("sun", "m_sun", "solar"), 1.989e30),
    (("water", "specific heat", "heat capacity"), 4186.0),
    (("atm", "atmospheric pressure"), 101325.0),
]
CONSTANT_VALUE_TOL = 0.01
TEXT_NUMBER_TOL = 1e-6
# Unit conversions a given may have gone through on its way from the text: SI prefixes, centi/percent,
# minutes and hours, degrees to radians.
_SCALES = [10.0**k for k in (*range(-18, 19, 3), -2, 2)]
_CONVERSIONS = [1.0, 60.0, 1 / 60.0, 3600.0, 1 / 3600.0, math.pi / 180.0, 180.0 / math.pi]
FACTORS = sorted({s * c for s in _SCALES for c in _CONVERSIONS})

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "hundred": 100, "thousand": 1000,
    "half": 0.5, "twice": 2, "double": 2, "thrice": 3, "triple": 3, "quarter": 0.25, "third": 1 / 3,
    "dozen": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90, "million": 1e6, "pair": 2,
    # polygon names state their number of sides and vertices
    "triangle": 3, "quadrilateral": 4, "pentagon": 5, "hexagon": 6, "heptagon": 7, "octagon": 8, "nonagon": 9,
    "decagon": 10, "dodecagon": 12,
}  # fmt: skip
_COLOURS = {"red", "blue", "green", "yellow", "white", "black", "orange", "purple", "pink", "brown", "gray", "grey"}
"""A text that colours things with n of these names states n: 'colored red or blue' is 2 colours."""
_EXPONENT = r"(?:\s*[eE]\s*(?P<e>[-+]?\d+)|\s*(?:\\times|\\cdot|×|\*)\s*10\s*\^\s*\{?\s*(?P<p>[-+]?\s*\d+)\s*\}?)?"
_NUMBER_RE = re.compile(r"(?<![\w.])(?P<n>\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)" + _EXPONENT)
_POWER_RE = re.compile(r"(?<![\d.])10\s*\^\s*\{?\s*(?P<p>[-+]?\s*\d+)\s*\}?")
_FRAC_RE = re.compile(
    r"\\[dt]?frac\s*(?:\{\s*(?P<a>\d+(?:\.\d+)?)\s*\}|(?P<a1>\d))\s*(?:\{\s*(?P<b>\d+(?:\.\d+)?)\s*\}|(?P<b1>\d))"
)
_SLASH_RE = re.compile(r"(?<![\w.])(?P<a>\d+(?:\.\d+)?)\s*/\s*(?P<b>\d+(?:\.\d+)?)(?![\w.])")
MAX_TEXT_EXPONENT = 300  # beyond float range; such 'numbers' in a text are noise


def _power_of_ten(exponent: str | None) -> float | None:
    if exponent is None:
        return 1.0
    k = int(re.sub(r"\s", "", exponent))
    return 10.0**k if abs(k) <= MAX_TEXT_EXPONENT else None


def text_numbers(text: str) -> set[float]:
    """Every number a problem text states, as absolute values: plain, LaTeX, scientific, fractions, words."""
    text = text.replace("{,}", ",").replace("\\,", "").replace("−", "-")
    found: set[float] = set()
    for m in _NUMBER_RE.finditer(text):
        digits = m.group("n")
        found.update(float(part) for part in digits.split(",") if part)
        scale = _power_of_ten(m.group("e") or m.group("p"))
        if scale is not None:
            found.add(float(digits.replace(",", "")) * scale)
    for m in _POWER_RE.finditer(text):
        if (power := _power_of_ten(m.group("p"))) is not None:
            found.add(power)
    for m in _FRAC_RE.finditer(text):
        a, b = float(m.group("a") or m.group("a1")), float(m.group("b") or m.group("b1"))
        if b:
            found.add(a / b)
    for m in _SLASH_RE.finditer(text):
        if float(m.group("b")):
            found.add(float(m.group("a")) / float(m.group("b")))
    words = set(re.findall(r"[a-z]+", text.lower()))
    found.update(float(v) for w, v in _NUMBER_WORDS.items() if w in words or f"{w}s" in words)
    if any(w.startswith(("colo", "paint")) for w in words) and len(colours := words & _COLOURS) >= 2:
        found.add(float(len(colours)))
    return {n for n in found if math.isfinite(n)}


def _close(a: float, b: float, rel: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


_TOKEN = re.compile(r"[a-z_0-9']+")
_PHRASES = {key for keys, _ in CONSTANTS for key in keys if not _TOKEN.fullmatch(key)}


def _names(node_id: str, description: str) -> set[str]:
    """The id, the words of the description and the constants' multi-word names it contains."""
    lowered = description.lower()
    return {node_id.lower(), *_TOKEN.findall(lowered), *(p for p in _PHRASES if p in lowered)}


@lru_cache(maxsize=256)
def _scaled(numbers: frozenset[float]) -> list[float]:
    """Every text number under every conversion factor, sorted: a problem's rollouts look values up in one list."""
    return sorted({n * f for n in numbers for f in FACTORS})


def given_traceable(node_id: str, description: str, value: float, numbers: Iterable[float]) -> bool:
    """Whether a given's value is in the problem text (up to unit conversions) or is a known constant."""
    value = abs(value)
    if value == 0.0:
        return True  # 'at rest', 'from the origin': zeros are rarely written as digits
    scaled = _scaled(frozenset(numbers))
    # |value - c| <= tol * max(value, c) only for c in [value (1 - tol), value / (1 - tol)]; the window
    # is widened so that rounding never hides a candidate, and each candidate is checked exactly
    low, high = value * (1 - 2 * TEXT_NUMBER_TOL), value / (1 - 2 * TEXT_NUMBER_TOL)
    for candidate in scaled[bisect_left(scaled, low) : bisect_right(scaled, high)]:
        if _close(value, candidate, TEXT_NUMBER_TOL):
            return True
    named = _names(node_id, description)
    for keys, constant in CONSTANTS:
        if _close(value, constant, CONSTANT_VALUE_TOL) or (named & set(keys) and _rounds_to(value, constant)):
            return True
    return False


def _significant_digits(value: float) -> int:
    """How many significant digits a value is written with (9.8: 2, 931.5: 4, 3e8 and 10: 1)."""
    mantissa = repr(abs(value)).lower().split("e")[0].replace(".", "").lstrip("0").rstrip("0")
    return max(1, len(mantissa))


def _rounds_to(value: float, constant: float) -> bool:
    """Whether a value is the constant rounded to the digits the value (or the constant) is written with."""
    digits = min(_significant_digits(value), _significant_digits(constant))
    return f"{value:.{digits - 1}e}" == f"{constant:.{digits - 1}e}"


def logic_checks(scaffold: Scaffold | None, computation: Computation, problem: Problem) -> RewardPart:
    """The deterministic part of r_logic (`LOGIC_WEIGHTS`): dimensions, traceable givens, a derived step."""
    if scaffold is None or any(e.kind == "schema" for e in computation.errors):
        return _part(dict.fromkeys(LOGIC_WEIGHTS, 0.0), LOGIC_WEIGHTS, "the scaffold did not parse")
    no_unit_errors = not any(e.kind in _UNIT_ERRORS for e in computation.errors)
    dimension_checks = [float(no_unit_errors)]
    if problem.domain == "physics" and problem.unit is not None:
        dimension_checks.append(float(_same_dimension(computation.answer, problem.unit)))
    # A typed-in number is checked like a given: it must come from the text too.
    typed = set(typed_in(scaffold, computation))
    givens = [n for n in scaffold.nodes if n.kind == "given" or n.id in typed]
    numbers = text_numbers(problem.text)
    untraced = [
        g.id
        for g in givens
        if (value := computation.numeric.get(g.id)) is None or not given_traceable(g.id, g.description, value, numbers)
    ]
    derived = [
        n.id
        for n in scaffold.nodes
        if n.kind in ("derived", "unknown") and n.id in computation.values and n.id not in typed
    ]
    breakdown = {
        "dimensions": sum(dimension_checks) / len(dimension_checks),
        "givens_traceable": (len(givens) - len(untraced)) / len(givens) if givens else 0.0,
        "derived_step": float(bool(derived)),
    }
    weights = dict(LOGIC_WEIGHTS)
    if not problem.text.strip():
        # A reference given without its problem (`scaffold check --answer`): nothing to trace the givens to.
        del breakdown["givens_traceable"], weights["givens_traceable"]
        notes = ["givens not checked: no problem text"]
    else:
        notes = [f"{len(givens) - len(untraced)}/{len(givens)} givens traced to the text or known constants"]
        if untraced:
            notes.append(f"untraced: {_listed(untraced)}")
    if breakdown["dimensions"] < 1.0:
        notes.append("dimension or unit problems")
    if not derived:
        notes.append("no derived step computed")
    return _part(breakdown, weights, "; ".join(notes))


def _same_dimension(answer: Answer | None, reference_unit: str) -> bool:
    if answer is None:
        return False
    ureg = units.registry()
    try:
        have = ureg.parse_units(answer.unit) if answer.unit.strip() else ureg.dimensionless
        want = ureg.parse_units(reference_unit) if reference_unit.strip() else ureg.dimensionless
        return ureg.Quantity(1, have).dimensionality == ureg.Quantity(1, want).dimensionality
    except Exception:  # pint raises assorted errors for malformed unit text
        return False


def logic_reward(checks: RewardPart, judge_score: float | None) -> RewardPart:
    """r_logic: the checks alone, or `JUDGE_WEIGHT` judge + the rest checks when the judge scored it."""
    if judge_score is None:
        return RewardPart(
            score=checks.score, detail=f"checks only: {checks.detail}", breakdown={"checks": checks.score}
        )
    judge = min(1.0, max(0.0, judge_score))
    value = JUDGE_WEIGHT * judge + (1 - JUDGE_WEIGHT) * checks.score
    return RewardPart(
        score=value,
        detail=f"judge {judge:.2f} x {JUDGE_WEIGHT}, checks {checks.score:.2f} x {1 - JUDGE_WEIGHT}: " + checks.detail,
        breakdown={"checks": checks.score, "judge": judge},
    )


# ---------------------------------------------------------------- r_fusion, totals, groups


def fusion_reward(proposals_r_ans: list[float], fused_r_ans: float) -> RewardPart:
    """r_fusion from the proposals' r_ans and the fused r_ans.

    With p = the mean r_ans of the proposals (the share that were right) and f = the fused r_ans:
    r_fusion = f * (0.75 + 0.25 * (1 - p)) + (1 - f) * 0.2 * (1 - p).
    A rescue (right where all were wrong) scores 1; keeping a unanimous right answer 0.75; losing a
    unanimous right answer 0 (0.1 if half were right); wrong where all were wrong 0.2.

    Raises:
        ValueError: No proposals.
    """
    if not proposals_r_ans:
        raise ValueError("fusion_reward needs at least one proposal")
    p = statistics.fmean(min(1.0, max(0.0, r)) for r in proposals_r_ans)
    f = min(1.0, max(0.0, fused_r_ans))
    value = f * (0.75 + 0.25 * (1 - p)) + (1 - f) * 0.2 * (1 - p)
    return RewardPart(
        score=value,
        detail=f"fused r_ans {f:.2f} against {len(proposals_r_ans)} proposals averaging {p:.2f}",
        breakdown={"proposals_mean": p, "fused": f},
    )


def total(r_ans: float, r_logic: float, r_graph: float, weights: RewardWeights, r_fusion: float | None = None) -> float:
    """r_total: the weighted mean of the rewards; the fusion weight counts only when r_fusion is given.

    Raises:
        ValueError: The weights that count sum to zero.
    """
    pairs = [(weights.ans, r_ans), (weights.logic, r_logic), (weights.graph, r_graph)]
    if r_fusion is not None:
        pairs.append((weights.fusion, r_fusion))
    weight_sum = sum(w for w, _ in pairs)
    if weight_sum <= 0:
        raise ValueError("reward weights sum to zero")
    return sum(w * r for w, r in pairs) / weight_sum


def score(
    scaffold: Scaffold | None,
    computation: Computation,
    problem: Problem,
    weights: RewardWeights,
    *,
    judge_score: float | None = None,
    proposals_r_ans: list[float] | None = None,
    rel_tol: float = 0.05,
) -> Rewards:
    """All rewards of one scaffold; r_fusion only when the proposals' r_ans are given (critic)."""
    detail = {
        "r_ans": answer_reward(computation.answer, problem, rel_tol=rel_tol),
        "r_logic": logic_reward(logic_checks(scaffold, computation, problem), judge_score),
        "r_graph": graph_reward(scaffold, computation),
    }
    if proposals_r_ans is not None:
        detail["r_fusion"] = fusion_reward(proposals_r_ans, detail["r_ans"].score)
    r_fusion = detail["r_fusion"].score if "r_fusion" in detail else None
    return Rewards(
        r_ans=detail["r_ans"].score,
        r_logic=detail["r_logic"].score,
        r_graph=detail["r_graph"].score,
        r_fusion=r_fusion,
        r_total=total(detail["r_ans"].score, detail["r_logic"].score, detail["r_graph"].score, weights, r_fusion),
        detail=detail,
    )


NO_GRAPH = "not applicable: a text rollout has no graph"


def score_text(
    answer: Answer | None,
    problem: Problem,
    weights: RewardWeights,
    *,
    no_answer: str = "no answer in the reply",
    judge_score: float | None = None,
    proposals_r_ans: list[float] | None = None,
    rel_tol: float = 0.05,
) -> Rewards:
    """All rewards of a free-text rollout (the text solver): r_ans by `answer_reward`, no r_graph.

    r_logic is the judge's score alone: the deterministic checks read a graph's givens and units, so they
    are skipped. r_total is the weighted mean of the rewards that exist (r_ans, r_logic when the judge
    scored it, r_fusion for the critic), so the agent's ans and logic weights are renormalised to sum to 1;
    r_graph is recorded as 0 and never counts.
    """
    r_ans = answer_reward(answer, problem, rel_tol=rel_tol) if answer else RewardPart(score=0.0, detail=no_answer)
    if judge_score is None:
        r_logic = RewardPart(score=0.0, detail="not scored: no judge, and the deterministic checks need a graph")
    else:
        judge = min(1.0, max(0.0, judge_score))
        r_logic = RewardPart(
            score=judge,
            detail=f"judge {judge:.2f} alone; the deterministic checks need a graph and are skipped",
            breakdown={"judge": judge},
        )
    detail = {"r_ans": r_ans, "r_logic": r_logic, "r_graph": RewardPart(score=0.0, detail=NO_GRAPH)}
    pairs = [(weights.ans, r_ans.score)] + ([(weights.logic, r_logic.score)] if judge_score is not None else [])
    r_fusion = None
    if proposals_r_ans is not None:
        detail["r_fusion"] = fusion_reward(proposals_r_ans, r_ans.score)
        r_fusion = detail["r_fusion"].score
        pairs.append((weights.fusion, r_fusion))
    weight_sum = sum(w for w, _ in pairs)
    if weight_sum <= 0:
        raise ValueError("reward weights sum to zero")
    return Rewards(
        r_ans=r_ans.score,
        r_logic=r_logic.score,
        r_graph=0.0,
        r_fusion=r_fusion,
        r_total=sum(w * r for w, r in pairs) / weight_sum,
        detail=detail,
    )


def group_std(values: list[float]) -> float:
    """Population std of a group's rewards (the specification's `calculate_std`); 0 if empty."""
    return statistics.pstdev(values) if values else 0.0


def group_advantages(values: list[float]) -> list[float]:
    """GRPO advantages (r - mean) / std over the group; all zeros when the rewards do not differ."""
    std = group_std(values)
    if std == 0.0:
        return [0.0] * len(values)
    mean = statistics.fmean(values)
    return [(v - mean) / std for v in values]
