"""What the simulator answers per request kind: scaffolds, fusions, verdicts, experience operations, text solutions.

Everything here is pure (no HTTP, no clock): given a request body and a seeded RNG, it builds a
schema-valid answer, or a deliberately malformed one when the server asks for it. Scaffolds for the
shipped problems are real, computable graphs whose target is right with a configured probability;
the simulator never solves anything, it carries the reference answer into the graph (or a wrong one).
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from typing import Any, Literal

import pint
from pydantic import BaseModel

from causal_grpo.agents.critic.prompts import TEXT_TASK
from causal_grpo.agents.critic.schemas import FusedAnswer
from causal_grpo.agents.extractor.schemas import ExperienceOp, ExperienceOps
from causal_grpo.agents.judge.prompts import TEXT_USER
from causal_grpo.agents.judge.schemas import LogicVerdict
from causal_grpo.agents.text_generator.prompts import BOXED_RULE
from causal_grpo.problems import Problem, load_problems
from causal_grpo.scaffold import CONSTANTS, FUNCTIONS, Node, Scaffold
from causal_grpo.simulator.config import SimulatorConfig, StructuredMode

Kind = Literal["Scaffold", "FusedAnswer", "LogicVerdict", "ExperienceOps", "TextSolution", "TextFusion", "chat"]
SCHEMAS: dict[str, type[BaseModel]] = {
    "Scaffold": Scaffold,
    "FusedAnswer": FusedAnswer,
    "LogicVerdict": LogicVerdict,
    "ExperienceOps": ExperienceOps,
}
Outcome = Literal["right", "off_value", "wrong_unit", "dimension_clash", "cycle", "unknown_reference", "dead_node"]
# Off-by-a-bit values are the commonest real mistake, so they get the most weight among wrong outcomes.
WRONG_OUTCOMES: dict[str, dict[Outcome, int]] = {
    "math": {"off_value": 3, "cycle": 1, "unknown_reference": 1, "dead_node": 1},
    "physics": {
        "off_value": 3,
        "wrong_unit": 1,
        "dimension_clash": 1,
        "cycle": 1,
        "unknown_reference": 1,
        "dead_node": 1,
    },
}
Malformation = Literal["not_json", "wrong_schema", "truncated"]

SCHEMA_MARKER = re.compile(r"Respond with a JSON object for the schema named\s+`?([A-Za-z_]\w*)`?")
ROLLOUT_HEADING = re.compile(r"^#{2,4}\s*(?:Rollout|Proposal)\s+(\d+)", re.MULTILINE)
EXPERIENCE_ID = re.compile(r"\[([A-Z]\d*-\d{3,})\]")
# 'problem_type: x', or the extractor's heading 'Problem (math_algebra):' (a bare domain has no underscore).
PROBLEM_TYPE = re.compile(r"problem[_ ]type\s*[:=]\s*([a-z][a-z_]{1,63})|^Problem \(([a-z]+_[a-z_]+)\):", re.I | re.M)
REWARD = re.compile(r"r_total\W{0,3}(\d(?:\.\d+)?)")
# A bare number in the text: not part of a word, an exponent (x^2, 10^{15}) or a LaTeX argument (\frac{1}{2}).
NUMBER = re.compile(r"(?<![\w.^{}\\])\d+(?:\.\d+)?(?![\w^])")
WRONG_UNITS = ("s", "kg", "m", "K", "J", "N", "m/s", "mol")
SIMULATED = "[simulated test double]"

STRATEGIES = (
    "Name every quantity the problem states as its own given before writing any formula.",
    "Write the target's formula first, then add the intermediate nodes it needs.",
    "Keep units on every physical given and let the computer check dimensions.",
    "Give ratios and rates their own derived nodes so each step can be checked.",
    "Use exact fractions for given values instead of rounded decimals.",
    "Check that every given feeds the target before answering.",
)
MISTAKES = (
    "Referring to a node id that was never defined breaks the whole graph.",
    "Letting an intermediate node depend on the target creates a cycle.",
    "Declaring the target in a unit other than the one the question asks for.",
    "Copying a number from the problem with the wrong magnitude.",
    "Leaving givens unconnected to the target (dead nodes) lowers the graph score.",
)


@dataclass(frozen=True)
class Classified:
    """What a chat-completion request asks for: the kind of answer and how it wants it delivered."""

    kind: Kind
    mode: StructuredMode
    schema_name: str | None = None


@dataclass(frozen=True)
class Rendered:
    """An answer ready for the response envelope: content or tool-call arguments, and the finish reason."""

    content: str | None
    tool_call: tuple[str, str] | None  # (function name, JSON arguments)
    finish_reason: Literal["stop", "tool_calls", "length"]

    @property
    def text(self) -> str:
        """The completion text, for token counting."""
        return self.tool_call[1] if self.tool_call else (self.content or "")


def message_text(body: dict[str, Any]) -> str:
    """All message contents of a request joined, whatever the part format."""
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


def classify(body: dict[str, Any]) -> Classified:
    """The schema a request asks for (response_format, a forced tool, or the text marker) and its mode.

    A request without a schema that carries the text solver's rule (`BOXED_RULE`) asks for a free-text
    solution, or, with the text critic's task, a fused one.
    """
    text = message_text(body)
    marker = SCHEMA_MARKER.search(text)
    marked: Kind = marker.group(1) if marker and marker.group(1) in SCHEMAS else "chat"  # type: ignore[assignment]
    if marked == "chat" and BOXED_RULE in text:
        marked = "TextFusion" if TEXT_TASK in text else "TextSolution"
    tool = _requested_tool(body)
    if tool is not None:
        return Classified(kind=tool, mode="tools", schema_name=tool)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        name = str((response_format.get("json_schema") or {}).get("name", ""))
        return Classified(kind=name if name in SCHEMAS else marked, mode="json_schema", schema_name=name)  # type: ignore[arg-type]
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        return Classified(kind=marked, mode="json_object", schema_name=marked if marked in SCHEMAS else None)
    return Classified(kind=marked, mode="text", schema_name=marked if marked in SCHEMAS else None)


def _requested_tool(body: dict[str, Any]) -> Kind | None:
    names = [
        t["function"].get("name")
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        names = [choice["function"].get("name")]
    return next((n for n in names if n in SCHEMAS), None)


def request_rng(seed: int, body: dict[str, Any], classified: Classified) -> random.Random:
    """A per-request RNG: same seed and same messages, schema and temperature give the same draws.

    The prompts carry the rollout index, so rollouts of one problem sample differently; no shared
    counter is involved, which keeps answers deterministic under any concurrency.
    """
    key = json.dumps(
        [seed, classified.kind, body.get("messages"), body.get("temperature")], sort_keys=True, default=str
    )
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _normalise(text: str) -> str:
    return " ".join(text.split())


class ProblemIndex:
    """Finds a known problem in a prompt by its first 200 characters, whitespace-normalised."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self._keys = sorted(((_normalise(p.text)[:200], p) for p in problems), key=lambda kp: -len(kp[0]))

    def find(self, prompt: str) -> Problem | None:
        """The problem whose text appears in the prompt, if any."""
        blob = _normalise(prompt)
        return next((p for key, p in self._keys if key and key in blob), None)


@cache
def shipped_index() -> ProblemIndex:
    """The index of the shipped problems (loaded once)."""
    return ProblemIndex(load_problems("full"))


def problem_type(problem: Problem | None) -> str:
    """A short label for a problem, crude by design: the physics topic area, or math keywords."""
    if problem is None:
        return "general"
    if problem.domain == "physics":
        area = (problem.topic or "general").split(":")[0]
        return "physics_" + re.sub(r"\W+", "_", area.strip().lower()).strip("_")
    text = problem.text.lower()
    for label, words in (
        ("math_geometry", ("triangle", "circle", "polygon", "rectangle", "hexagon", "angle", "sphere")),
        ("math_combinatorics", ("probability", "ways", "arrange", "choose", "sequences", "subsets")),
        ("math_number_theory", ("divisible", "prime", "remainder", "divisor", "gcd", "digits")),
    ):
        if any(w in text for w in words):
            return label
    return "math_algebra"


@dataclass(frozen=True)
class _Given:
    text: str
    value: Fraction
    context: str


def _numbers(problem: Problem) -> list[_Given]:
    """Distinct nonzero numbers written in the problem, with the words around them (math: integers only)."""
    seen: dict[str, _Given] = {}
    for match in NUMBER.finditer(problem.text):
        text = match.group()
        if (problem.domain == "math" and "." in text) or text in seen or Fraction(text) == 0 or len(text) > 12:
            continue
        # Drop the partial words at both ends of the window.
        around = " ".join(_normalise(problem.text[max(0, match.start() - 40) : match.end() + 40]).split(" ")[1:-1])
        seen[text] = _Given(text, Fraction(text), around)
    return list(seen.values())


def _as_fraction(text: str) -> Fraction | None:
    try:
        return Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        return None


def _exact_text(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


@cache
def _units() -> pint.UnitRegistry:
    return pint.UnitRegistry()


def _wrong_unit(unit: str, rng: random.Random) -> str:
    """A unit of a different dimension than `unit`."""
    ureg = _units()
    try:
        dimension = ureg.Quantity(1, unit).dimensionality
    except Exception:  # pint raises assorted errors for unit text it does not know; any known unit differs
        return rng.choice(WRONG_UNITS)
    return rng.choice([u for u in WRONG_UNITS if ureg.Quantity(1, u).dimensionality != dimension])


def _off_value(reference: Fraction, domain: str, rng: random.Random) -> Fraction:
    """A plausible wrong value: a few units off for AIME integers, 15-60% off for physics quantities."""
    if domain == "math":
        delta = rng.randint(1, 40) * rng.choice((-1, 1))
        return reference + (delta if 0 <= reference + delta <= 999 else -delta)
    factor = Fraction(round(rng.uniform(0.15, 0.6) * 100), 100) * rng.choice((-1, 1))
    return reference * (1 + factor)


def draw_outcome(problem: Problem | None, correct_rate: float, rng: random.Random) -> Outcome:
    """Right with probability `correct_rate`, else one of the domain's wrong outcomes."""
    if rng.random() < correct_rate:
        return "right"
    weights = WRONG_OUTCOMES["physics" if problem and problem.domain == "physics" else "math"]
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _scale(ids: list[str], values: list[Fraction]) -> tuple[str, Fraction]:
    """A dimensionless formula over 0-3 givens and its exact value."""
    if not ids:
        return "", Fraction(1)
    if len(ids) == 1:
        return ids[0], values[0]
    if len(ids) == 2:
        return f"{ids[0]} / {ids[1]}", values[0] / values[1]
    return f"({ids[0]} + {ids[1]}) / {ids[2]}", (values[0] + values[1]) / values[2]


Shape = Literal["direct", "linear", "quadratic_domain", "quadratic_check", "sum", "odd_sum"]
# How `core` is written: a given (v1), an unknown solved from an equation (v2), or an iteration (v2).
SHAPES: dict[Shape, int] = {
    "direct": 4,
    "linear": 2,
    "quadratic_domain": 1,
    "quadratic_check": 1,
    "sum": 1,
    "odd_sum": 1,
}
ANALYSIS_RATE = 0.5
"""Share of simulated scaffolds that reason in `analysis` before the graph."""
MAX_SHAPE_VALUE_CHARS = 160
"""Longest value text an equation or iteration shape may write; a longer one falls back to `direct`."""
ANALYSIS_STEPS = (
    "Name each number the problem states as a given and keep its unit.",
    "The asked-for quantity is a fixed multiple of one key intermediate result.",
    "Relate the stated numbers to each other before touching the target.",
    "Let the computer do the arithmetic; the graph only states the relations.",
    "Check that the target's unit is the one the question asks for.",
    "The intermediate result is pinned down by one equation; its domain picks the root.",
    "Summing the contributions term by term gives the intermediate result.",
    "Every given should feed the target, so no node is left dead.",
)


def variant_rng(rng: random.Random) -> random.Random:
    """An RNG for how a scaffold is written, seeded from `rng`'s state without drawing from it.

    The outcome and every draw made before (and after) stay exactly as without variants, so the
    v2 shapes cannot shift what is right or wrong, or anything the request's RNG decides later.
    """
    return random.Random(hashlib.sha256(repr(rng.getstate()).encode()).digest())


def _unit_squared(unit: str) -> str:
    return f"({unit})^2" if unit else ""


def _core_nodes(shape: Shape, value: Fraction, unit: str, rng: random.Random) -> tuple[Shape, list[Node]]:
    """Nodes that define `core` with exactly `value` (in `unit`), written as `shape` says.

    Equation shapes make `core` an unknown: linear `a*core == b`, or a quadratic with a second root
    that the domain (positive) or a check (the smaller root) rules out. Iteration shapes make `core`
    a `sum` over an integer range whose exact value is `value`. A shape whose numbers would grow too
    long falls back to a given.
    """
    nodes: list[Node] = []
    if shape == "linear":
        coefficient = rng.randint(2, 9)
        nodes = [
            Node(id="core_coef", kind="given", value=str(coefficient), description="Coefficient of the relation."),
            Node(
                id="core_rhs",
                kind="given",
                value=_exact_text(coefficient * value),
                unit=unit,
                description="Right-hand side of the relation.",
            ),
            Node(
                id="core",
                kind="unknown",
                domain="positive" if value > 0 else "real",
                unit=unit,
                description="Key intermediate result, solved for.",
            ),
            Node(id="core_eq", kind="equation", formula="core_coef * core == core_rhs", description="Its relation."),
        ]
    elif shape in ("quadratic_domain", "quadratic_check"):
        spread = rng.randint(1, 9) * (abs(value) or 1)
        if shape == "quadratic_domain" and value <= 0:
            shape = "quadratic_check"
        # quadratic_domain: the other root is negative; quadratic_check: it is the larger one.
        other = -spread if shape == "quadratic_domain" else value + spread
        nodes = [
            Node(
                id="core_b",
                kind="given",
                value=_exact_text(-(value + other)),
                unit=unit,
                description="Linear coefficient of the quadratic.",
            ),
            Node(
                id="core_c",
                kind="given",
                value=_exact_text(-(value * other)),
                unit=_unit_squared(unit),
                description="Constant side of the quadratic.",
            ),
            Node(
                id="core",
                kind="unknown",
                domain="positive" if shape == "quadratic_domain" else "real",
                unit=unit,
                description="Key intermediate result, a root of the quadratic.",
            ),
            Node(
                id="core_eq",
                kind="equation",
                formula="core**2 + core_b * core == core_c",
                description="The quadratic it satisfies.",
            ),
        ]
        if shape == "quadratic_check":
            nodes.append(
                Node(id="core_root", kind="check", formula="2 * core < -core_b", description="The smaller root.")
            )
    elif shape in ("sum", "odd_sum"):
        terms = rng.randint(2, 12)
        # sum(k, 1..n) = n(n+1)/2; sum(2k-1, 1..n) = n^2.
        body, weight = ("core_part * k", Fraction(terms * (terms + 1), 2))
        if shape == "odd_sum":
            body, weight = "core_part * (2*k - 1)", Fraction(terms * terms)
        nodes = [
            Node(
                id="core_part",
                kind="given",
                value=_exact_text(value / weight),
                unit=unit,
                description="Contribution per unit weight.",
            ),
            Node(
                id="core",
                kind="derived",
                formula=f"sum({body}, k, 1, {terms})",
                unit=unit,
                description="Key intermediate result, summed term by term.",
            ),
        ]
    if shape == "direct" or any(len(n.value or "") > MAX_SHAPE_VALUE_CHARS for n in nodes):
        return "direct", [
            Node(id="core", kind="given", value=_exact_text(value), unit=unit, description="Key intermediate result.")
        ]
    return shape, nodes


def _analysis(problem: Problem | None, shape: Shape, rng: random.Random) -> str:
    """A simulated chain of thought: a few stock steps, sometimes long enough to need shortening."""
    steps = [*rng.sample(ANALYSIS_STEPS, rng.randint(2, len(ANALYSIS_STEPS)))]
    if shape != "direct":
        steps.append(f"The key intermediate result is written as a {shape.replace('_', ' ')}.")
    lines = [f"{SIMULATED} Approach for a {problem_type(problem).replace('_', ' ')} problem."]
    # A real model's reasoning often runs to thousands of characters; repeat the steps as "casework".
    for case in range(1, 1 + (rng.choice((1, 1, 1, 3, 8)))):
        lines.extend(f"Case {case}, step {i}: {step}" for i, step in enumerate(steps, start=1))
    lines.append("So the graph below states these relations and the computer evaluates them.")
    return "\n".join(lines)


def build_scaffold(problem: Problem | None, outcome: Outcome, rng: random.Random) -> Scaffold:
    """A computable scaffold for the problem whose target is right or wrong as `outcome` says.

    Givens are numbers written in the problem; `core` carries the (right or wrong) answer divided by
    a dimensionless `scale` made of those givens, and `answer = core * scale`, so the target computes
    to exactly the intended value. Unknown problems, and answers that are not plain numbers, get
    random values. How `core` is written (a given, an unknown solved from an equation, or a sum) and
    whether the scaffold reasons in `analysis` first are drawn from `variant_rng`, after every draw
    that decides the outcome and its values.
    """
    reference = _as_fraction(problem.answer) if problem else None
    if problem is None or reference is None:
        pool = [_Given(str(n), Fraction(n), "a number") for n in rng.sample(range(2, 60), 3)]
        reference, unit, domain = Fraction(rng.randint(1, 999)), "", "math"
    else:
        pool, unit, domain = _numbers(problem), problem.unit or "", problem.domain
    givens = sorted(rng.sample(pool, rng.randint(1, min(3, len(pool)))), key=pool.index) if pool else []
    ids = [f"given_{i}" for i in range(1, len(givens) + 1)]
    scale_formula, scale = _scale(ids, [g.value for g in givens])
    value = reference if outcome in ("right", "wrong_unit", "dimension_clash") else _off_value(reference, domain, rng)
    core_unit = target_unit = unit
    if outcome == "wrong_unit":
        core_unit = target_unit = _wrong_unit(unit, rng)
    elif outcome == "dimension_clash":
        core_unit = _wrong_unit(unit, rng)
    answer_formula = "core * scale" if givens else "core"
    if outcome == "cycle":
        # With givens, scale and answer feed each other; without, the answer refers to itself.
        scale_formula, answer_formula = ("answer / core", answer_formula) if givens else ("", "core * answer / answer")
    elif outcome == "unknown_reference":
        answer_formula = "core * ratio"
    unused = str(rng.randint(2, 99)) if outcome == "dead_node" else None

    variants = variant_rng(rng)
    shape, core_nodes = _core_nodes(
        variants.choices(list(SHAPES), weights=list(SHAPES.values()))[0], value / scale, core_unit, variants
    )
    analysis = _analysis(problem, shape, variants) if variants.random() < ANALYSIS_RATE else ""
    nodes = [
        Node(id=i, kind="given", value=g.text, description=f"{g.text}, as stated: '{g.context}'")
        for i, g in zip(ids, givens, strict=True)
    ]
    nodes.extend(core_nodes)
    if givens:
        nodes.append(
            Node(
                id="scale",
                kind="derived",
                formula=scale_formula,
                description="Combination of the stated numbers.",
            )
        )
    if unused is not None:
        nodes.append(Node(id="unused", kind="given", value=unused, description="A side quantity."))
    nodes.append(
        Node(
            id="answer",
            kind="derived",
            formula=answer_formula,
            unit=target_unit,
            description="The quantity asked for.",
        )
    )
    return Scaffold(
        analysis=analysis,
        problem_type=problem_type(problem),
        nodes=nodes,
        target="answer",
        rationale=f"{SIMULATED} Relates the numbers stated in the problem to the quantity asked for.",
    )


def _scaffold_in(prompt: str) -> Scaffold | None:
    """The first JSON object with 'nodes' in the prompt that validates as a Scaffold."""
    decoder = json.JSONDecoder()
    for attempt, match in enumerate(re.finditer(r"\{", prompt)):
        if attempt > 500:
            break
        try:
            obj, _ = decoder.raw_decode(prompt, match.start())
        except ValueError:
            continue
        if isinstance(obj, dict) and "nodes" in obj:
            try:
                return Scaffold.model_validate(obj)
            except ValueError:
                continue
    return None


ITERATIONS = frozenset({"sum", "prod", "count", "first", "max_of", "min_of", "integrate"})
"""Calls whose second argument is a bound variable, local to the call."""


def _free_names(formula: str) -> set[str] | None:
    """The names a formula uses, less the bound variables of its iterations; None if it does not parse."""
    try:
        tree = ast.parse(formula.replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError):
        return None
    bound = {
        c.args[1].id
        for c in ast.walk(tree)
        if isinstance(c, ast.Call)
        and isinstance(c.func, ast.Name)
        and c.func.id in ITERATIONS
        and len(c.args) > 1
        and isinstance(c.args[1], ast.Name)
    }
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - bound


def _looks_sound(scaffold: Scaffold) -> bool:
    """A crude check: unique ids, a present target that is a quantity, formulas naming only nodes or
    functions (bound variables of sums and the like aside), equations with `==`, and every unknown
    named by some equation."""
    ids = [n.id for n in scaffold.nodes]
    known = set(ids) | set(FUNCTIONS) | set(CONSTANTS) | ITERATIONS
    target = scaffold.node(scaffold.target)
    with_formula = [n for n in scaffold.nodes if n.kind in ("derived", "equation", "check")]
    names = {n.id: _free_names(n.formula or "") for n in with_formula}
    in_equations = set().union(*(names[n.id] or set() for n in with_formula if n.kind == "equation"))
    return (
        len(ids) == len(set(ids))
        and target is not None
        and target.is_quantity
        and all(found is not None and found <= known for found in names.values())
        and all("==" in (n.formula or "") for n in with_formula if n.kind == "equation")
        and all(n.id in in_equations for n in scaffold.nodes if n.kind == "unknown")
    )


TEXT_JUDGED = TEXT_USER.split("{text}")[0].split("\n\n")[-1]
"""The heading of the text judge's solution section ('Solution (free text):')."""
NO_ANSWER_READ = TEXT_USER.split("{text}")[1].split("{answer}")[0].strip() + " none"


def logic_verdict(prompt: str, rng: random.Random) -> LogicVerdict:
    """A score drawn high for a scaffold that looks sound, low for a broken one, middling if none is found.

    A free-text solution is graded like a scaffold: high when an answer was read from it, low when none.
    """
    if TEXT_JUDGED in prompt:
        if NO_ANSWER_READ in prompt:
            return LogicVerdict(score=round(rng.uniform(0.05, 0.45), 2), reason=f"{SIMULATED} No final answer.")
        return LogicVerdict(
            score=round(rng.uniform(0.7, 1.0), 2), reason=f"{SIMULATED} Each step follows from the previous ones."
        )
    scaffold = _scaffold_in(prompt)
    if scaffold is None:
        return LogicVerdict(score=round(rng.uniform(0.3, 0.7), 2), reason=f"{SIMULATED} No scaffold found to judge.")
    if _looks_sound(scaffold):
        return LogicVerdict(
            score=round(rng.uniform(0.7, 1.0), 2),
            reason=f"{SIMULATED} Each step follows from named quantities.",
        )
    return LogicVerdict(
        score=round(rng.uniform(0.05, 0.45), 2),
        reason=f"{SIMULATED} The chain refers to quantities it never defines.",
    )


def _rollout_sections(prompt: str) -> dict[int, str]:
    headings = list(ROLLOUT_HEADING.finditer(prompt))
    ends = [h.start() for h in headings[1:]] + [len(prompt)]
    return {int(h.group(1)): prompt[h.end() : end] for h, end in zip(headings, ends, strict=True)}


def experience_ops(prompt: str, problem: Problem | None, rng: random.Random) -> ExperienceOps:
    """Summaries per rollout, an advantage sentence, and 1-3 mostly-'add' operations of stock experiences."""
    sections = _rollout_sections(prompt)
    rewards = {k: float(m.group(1)) for k, text in sections.items() if (m := REWARD.search(text))}
    summaries = [
        f"Rollout {k}: " + (f"r_total {rewards[k]:.2f}." if k in rewards else "no reward shown.")
        for k in sorted(sections)
    ]
    lesson = rng.choice(STRATEGIES)
    advantage = f"{SIMULATED} The better rollouts follow this: {lesson}"
    if len(set(rewards.values())) > 1:
        best, worst = max(rewards, key=rewards.__getitem__), min(rewards, key=rewards.__getitem__)
        advantage = f"{SIMULATED} Rollout {best} beat rollout {worst}; the better one follows this: {lesson}"
    marked = PROBLEM_TYPE.search(prompt)
    kind = (marked.group(1) or marked.group(2)).lower() if marked else problem_type(problem)
    existing = list(dict.fromkeys(EXPERIENCE_ID.findall(prompt)))
    operations = []
    for _ in range(rng.randint(1, 3)):
        mistake = rng.random() < 0.4
        content = rng.choice(MISTAKES if mistake else STRATEGIES)
        category = "common_mistake" if mistake else "problem_solving_strategy"
        scope = "shared" if rng.random() < 0.2 else "agent"
        if existing and rng.random() < 0.3:
            op = rng.choice(("modify", "delete", "keep"))
            operations.append(
                ExperienceOp(
                    op=op,
                    id=rng.choice(existing),
                    content=content if op == "modify" else None,
                    category=category,
                    problem_type=kind,
                    scope=scope,
                )
            )
        else:
            operations.append(
                ExperienceOp(op="add", content=content, category=category, problem_type=kind, scope=scope)
            )
    return ExperienceOps(summaries=summaries, advantage=advantage, operations=operations)


def fused_answer(prompt: str, problem: Problem | None, correct_rate: float, rng: random.Random) -> FusedAnswer:
    """A fused scaffold, right with `correct_rate`: no smarter than generation unless configured so."""
    numbers = sorted(_rollout_sections(prompt))
    used = sorted(rng.sample(numbers, min(len(numbers), rng.randint(1, 2)))) if numbers else []
    scaffold = build_scaffold(problem, draw_outcome(problem, correct_rate, rng), rng)
    notes = f"{SIMULATED} Kept the givens of proposal(s) {used or 'none'} and rebuilt the target."
    return FusedAnswer(scaffold=scaffold, used_proposals=used, notes=notes)


EARLIER_BOX_RATE = 0.2
"""Share of simulated text solutions that box an intermediate result while reasoning (the last box counts)."""
ANSWER_LINE_RATE = 0.1
"""Share of answered simulated text solutions that give their answer on an "Answer:" line, without a box."""
"""Share of simulated text solutions that box an intermediate result while reasoning (the last box counts)."""


def _latex_number(value: Fraction, domain: str) -> str:
    """A value as a model would write it: an integer or fraction exactly, a physics value to 4 digits."""
    if domain == "math":
        return _exact_text(value) if value.denominator == 1 else f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
    mantissa, _, exponent = f"{float(value):.4g}".partition("e")
    return f"{mantissa} \\times 10^{{{int(exponent)}}}" if exponent else mantissa


def _latex_unit(unit: str, rng: random.Random) -> str:
    """A unit inside a box, in one of the ways models write it."""
    if not unit:
        return ""
    if unit == "degree" and rng.random() < 0.5:
        return "^\\circ"
    return rng.choice((f"\\ \\mathrm{{{unit}}}", f" {unit}", f"\\,\\text{{{unit}}}"))


def text_solution(problem: Problem | None, outcome: Outcome, rng: random.Random) -> str:
    """A simulated chain of thought ending in a final answer that is right or wrong as `outcome` says.

    Each outcome keeps what it does to a scaffold, so both solvers give as many right, wrong and missing
    answers: an off value (off_value, dead_node: a valid scaffold with a wrong target), the right value in a
    unit of another dimension (wrong_unit), and no answer where the scaffold would not compute (cycle: the
    reply trails off without a box; unknown_reference: the box holds words; dimension_clash: the box holds
    symbols, not a value). How it is written (an "Answer:" line instead of a box now and then,
    an intermediate box while reasoning, the unit's spelling) is drawn from `variant_rng`, after every draw
    that decides the outcome and its value.
    """
    reference = _as_fraction(problem.answer) if problem else None
    domain, unit = (problem.domain, problem.unit or "") if problem else ("math", "")
    if reference is None:
        reference = Fraction(rng.randint(1, 999))
    right_value = outcome in ("right", "wrong_unit", "dimension_clash")
    value = reference if right_value else _off_value(reference, domain, rng)
    if outcome == "wrong_unit" and domain == "physics":
        unit = _wrong_unit(unit, rng)
    variants = variant_rng(rng)
    steps = variants.sample(TEXT_STEPS, variants.randint(2, len(TEXT_STEPS)))
    lines = [f"{SIMULATED} Step-by-step solution of a {problem_type(problem).replace('_', ' ')} problem."]
    for case in range(1, 1 + variants.choice((1, 1, 1, 3, 8))):
        lines.extend(f"Case {case}, step {i}: {step}" for i, step in enumerate(steps, start=1))
    answered = outcome not in ("cycle", "unknown_reference", "dimension_clash")
    if variants.random() < EARLIER_BOX_RATE and answered:
        part = _latex_number(reference * Fraction(variants.randint(2, 9), 10), domain)
        lines.insert(2, f"An intermediate result: \\boxed{{{part}}}, which is not yet the answer.")
    shown = _latex_number(value, domain) + _latex_unit(unit, variants)
    if outcome == "cycle":
        lines.append("Going around once more gives the same relation again, so the value is whatever it was.")
    elif outcome == "unknown_reference":
        lines.append("Therefore the answer is \\boxed{\\text{the value found above}}.")
    elif outcome == "dimension_clash":
        lines.append("Therefore the answer is \\boxed{\\frac{q}{m} t}, with q and m as above.")
    elif variants.random() < ANSWER_LINE_RATE:
        lines.append(f"Answer: {shown}")
    else:
        lines.append(f"Therefore the answer is \\boxed{{{shown}}}.")
    return "\n".join(lines)


TEXT_STEPS = (
    "Write down each number the problem states, with its unit.",
    "Relate the stated quantities by the governing law or identity.",
    "Solve the relation for the quantity asked for.",
    "Substitute the numbers and simplify carefully.",
    "Check the result's unit and order of magnitude.",
    "Consider the cases the problem allows and keep the valid one.",
)


RUNAWAY = " + ".join(f"powmod({b}, 10**3999, 10**3999 + 7)" for b in (2, 3, 5, 7, 11, 13, 17, 19))
"""Eight modular powers of 4000-digit numbers: legal, but minutes of CPU inside C code no Python budget stops."""


def runaway(scaffold: Scaffold) -> Scaffold:
    """The scaffold with its target computing RUNAWAY (the sandbox must stop it from outside)."""
    nodes = [
        n.model_copy(update={"kind": "derived", "formula": RUNAWAY, "value": None}) if n.id == scaffold.target else n
        for n in scaffold.nodes
    ]
    return scaffold.model_copy(update={"nodes": nodes})


def answer(
    classified: Classified, prompt: str, config: SimulatorConfig, rng: random.Random, index: ProblemIndex
) -> BaseModel | str:
    """The valid answer to a request: a schema instance for our kinds, a short text otherwise."""
    if classified.kind == "chat":
        return f"{SIMULATED} This is the causal-grpo simulator (model {config.model!r}); it solves nothing."
    if classified.kind == "LogicVerdict":
        return logic_verdict(prompt, rng)
    problem = index.find(prompt)
    if classified.kind == "TextSolution":
        return text_solution(problem, draw_outcome(problem, config.correct_rate, rng), rng)
    if classified.kind == "TextFusion":
        return text_solution(problem, draw_outcome(problem, config.effective_fusion_correct_rate, rng), rng)
    if classified.kind == "Scaffold":
        scaffold = build_scaffold(problem, draw_outcome(problem, config.correct_rate, rng), rng)
        runs_away = config.runaway_rate and variant_rng(rng).random() < config.runaway_rate
        return runaway(scaffold) if runs_away else scaffold
    if classified.kind == "FusedAnswer":
        return fused_answer(prompt, problem, config.effective_fusion_correct_rate, rng)
    return experience_ops(prompt, problem, rng)


# Valid JSON that fails each schema, as a confused model might write it.
WRONG_SCHEMA: dict[str, dict[str, Any]] = {
    "Scaffold": {"nodes": "given_1, core, answer", "target": 42},
    "FusedAnswer": {"scaffold": "see proposal 1", "used_proposals": [1]},
    "LogicVerdict": {"score": 7.5, "reason": "Mostly sound."},
    "ExperienceOps": {"summaries": "all rollouts were alike", "operations": [{"op": "rewrite"}]},
}


def render(
    classified: Classified,
    result: BaseModel | str,
    rng: random.Random,
    *,
    fence_rate: float,
    malformation: Malformation | None = None,
    max_tokens: int | None = None,
) -> Rendered:
    """Put an answer in the shape the request's mode expects, malformed if asked, cut at `max_tokens`."""
    finish: Literal["stop", "tool_calls", "length"] = "stop"
    if isinstance(result, str):
        text = json.dumps({"reply": result}) if classified.mode in ("json_schema", "json_object") else result
    else:
        text = result.model_dump_json(exclude_none=True)
        if malformation == "not_json":
            text = "I worked through the problem and I am fairly confident in the result, as explained above."
        elif malformation == "wrong_schema":
            text = json.dumps(WRONG_SCHEMA[classified.kind])
        elif malformation == "truncated":
            text, finish = text[: len(text) // 2], "length"
    structured = classified.kind in SCHEMAS
    if classified.mode == "text" and structured and malformation != "not_json" and rng.random() < fence_rate:
        text = f"Here is the {classified.kind}.\n\n```json\n{text}\n```\n\nEach value follows from the problem."
    if max_tokens is not None and estimate_tokens(text) > max_tokens:
        text, finish = text[: max(0, max_tokens * 4 - 4)], "length"
    if classified.mode == "tools" and structured:
        tool_finish = "tool_calls" if finish == "stop" else finish
        return Rendered(content=None, tool_call=(classified.kind, text), finish_reason=tool_finish)
    return Rendered(content=text, tool_call=None, finish_reason=finish)


def estimate_tokens(text: str) -> int:
    """Approximate token count: one token per four characters, plus one."""
    return len(text) // 4 + 1
