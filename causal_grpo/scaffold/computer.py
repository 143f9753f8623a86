"""The computer: evaluates a scaffold's DAG exactly with sympy and pint, safely and under limits.

`compute(scaffold)` never raises for bad input: every problem becomes a `ComputeError` naming its node,
one per root cause (nodes downstream of a failure are not computed and are listed on that error).

Rules, in short (the formula language and its limits are in `formula`, units in
`units`):

- Node ids are identifiers, unique, and not a function or constant name. A given's `value` is a number or
  an exact constant expression without node names (`3/4`, `sqrt(2)`, `6.674e-11`); a derived node's
  `formula` uses other nodes by id, and those references are the graph's edges.
- Values are exact sympy numbers (`0.1` is 1/10, `1/3 + 1/6` is 1/2); `numeric` is a 15-digit float. A value
  whose expression outgrows EXACT_SIZE / EXACT_DEPTH (long chains of nested roots and trig) goes on as a
  FALLBACK_DIGITS-digit float, since sympy's exact evaluation slows exponentially there.
- A given's unit is its value's unit ('' = pure number). A derived node's unit follows from its formula:
  `+ -` (and min, max, `%`, `//`) need one dimension and convert to the left operand's unit, `* /` combine
  units, `**` needs a pure-number exponent (a rational one if the base has a unit), sin/exp/log... need
  pure numbers, with angles in degrees converted to radians. A derived node that declares a unit must
  have that dimension and is converted to it, exactly (km -> m is x1000); one that declares none keeps
  the formula's unit.
- Work is bounded: `time_limit_s` of the calling thread's CPU time per scaffold, checked between nodes
  and at every step of a formula (no signals, so it works in threads and under asyncio), plus the size
  limits of `formula` and `units`. CPU time, not wall clock, so a busy machine
  (four workers on two cores) cannot turn a valid scaffold into a timeout and change a run's results.
"""

from __future__ import annotations

import graphlib
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any, Literal

import sympy
from pydantic import BaseModel, Field, ValidationError

from causal_grpo.scaffold import solver, units
from causal_grpo.scaffold.budget import deadline_of
from causal_grpo.scaffold.evaluator import FALLBACK_DIGITS, Evaluator, Quantity, unit_name
from causal_grpo.scaffold.exact import PRECISE_DIGITS, simplest
from causal_grpo.scaffold.formula import (
    CONSTANT_NAMES,
    CONSTANTS,
    MAX_DIGITS,
    RESERVED,
    Compare,
    Expr,
    FormulaError,
    Mode,
    bound_names,
    checked,
    live_refs,
    log10_abs,
    parse,
    refs_of,
)
from causal_grpo.scaffold.formula import references as references
from causal_grpo.scaffold.implied import implied_rational
from causal_grpo.scaffold.schema import Node, Scaffold
from causal_grpo.scaffold.solver import symbol_for

logger = logging.getLogger(__name__)

ErrorKind = Literal[
    "schema",  # the JSON does not match the Scaffold model
    "syntax",  # a formula does not parse
    "disallowed",  # parses, but uses syntax or names outside the whitelist
    "duplicate_id",
    "reserved_id",  # a node id shadows a function or constant name
    "unknown_reference",
    "cycle",
    "missing_target",
    "given_with_reference",  # a given's value mentions a node
    "dimension",  # units do not combine (kg + s), or a declared unit disagrees with the formula
    "unit",  # a unit string pint does not know
    "math",  # division by zero, domain errors, non-finite results
    "limit",  # exponent / factorial / size / depth / length limits
    "timeout",
    "check",  # a check node, or an equation without unknowns, that does not hold
    "internal",  # a bug in the computer itself, reported rather than raised
]

MAX_SCHEMA_ERRORS = 5
"""How many pydantic errors a `schema` error lists."""
SIMPLIFY_SHARE = 0.5
"""Share of the time limit the target's simplification may use at most (it gives up quietly, keeping the value)."""
PERTURBATIONS = ((-40, -7), (500, 1000), (-600, -400))
"""Relative sizes (in thousandths, low and high) of the givens' moves in each trial of the typed-in test: a
small move down first, where a solution branch is easy to follow and a loop bound costs less; then large
ones, for steps such as floor(), a count or a least-k search that a small move leaves unchanged. A trial
runs only for the nodes the earlier ones did not show to move."""
MOVED_REL_TOL = 1e-9
"""A value moved when it changed by more than this (relative): a float-sized wiggle is not a dependence."""
_EXACT_ONLY = ("needs an exact rational", "needs integer bounds", "needs an integer")
_RELAXED: dict[str, str] = {"integer": "real", "positive_integer": "positive", "nonnegative_integer": "nonnegative"}


class ComputeError(BaseModel):
    """One problem found in a scaffold, naming the node it concerns."""

    kind: ErrorKind
    node: str | None = None
    message: str

    def __str__(self) -> str:
        return self.message


class Answer(BaseModel):
    """The target's value: its text, a float where it has one, its unit, and whether the text is exact."""

    exact: str = Field(description="The value as sympy prints it, simplified; a decimal when it is not exact.")
    numeric: float | None = None
    unit: str = ""
    is_exact: bool = Field(default=True, description="False when the value went through a float.")
    digits: str | None = Field(
        default=None, description=f"An exact irrational value to {PRECISE_DIGITS} significant digits."
    )

    def __str__(self) -> str:
        return f"{self.exact} {self.unit}".strip()


class Computation(BaseModel):
    """What the computer made of a scaffold; an invalid scaffold is a result, not an exception."""

    valid: bool
    values: dict[str, str] = Field(default_factory=dict, description="Exact value per computed node (sympy str).")
    numeric: dict[str, float | None] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict, description="Unit each computed node ended in.")
    order: list[str] = Field(default_factory=list, description="Topological order of the nodes that were computed.")
    parents: dict[str, list[str]] = Field(
        default_factory=dict,
        description="The graph's edges: node id -> ids its formula references (empty if unparsed).",
    )
    depends: dict[str, list[str]] = Field(
        default_factory=dict,
        description="The parents a node's built value really depends on (`0*x` does not depend on x).",
    )
    typed_in: dict[str, str] = Field(
        default_factory=dict,
        description="Derived nodes and unknowns whose value was not shown to depend on the givens, with the reason.",
    )
    answer: Answer | None = None
    errors: list[ComputeError] = Field(default_factory=list)
    elapsed_ms: float = 0.0

    @classmethod
    def missing(cls, reason: str) -> Computation:
        """The computation of a scaffold the model never delivered (the reason is the model's error)."""
        return cls(valid=False, errors=[ComputeError(kind="schema", message=reason)])


# --- evaluating one formula ------------------------------------------------------------------------


# --- the graph -------------------------------------------------------------------------------------


def _load(scaffold: Scaffold | dict[str, Any] | str) -> Scaffold | ComputeError:
    if isinstance(scaffold, Scaffold):
        return scaffold
    try:
        if isinstance(scaffold, str | bytes | bytearray):
            return Scaffold.model_validate_json(scaffold)
        return Scaffold.model_validate(scaffold)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        listed = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'scaffold'}: {e['msg']}" for e in problems[:MAX_SCHEMA_ERRORS]
        )
        more = f" (+{len(problems) - MAX_SCHEMA_ERRORS} more)" if len(problems) > MAX_SCHEMA_ERRORS else ""
        return ComputeError(kind="schema", message=f"not a valid scaffold: {listed}{more}")


def _numeric(magnitude: sympy.Expr) -> float | None:
    """The value as a float, after checking it is real, finite and of sane size (FormulaError if not)."""
    if magnitude.is_Rational:
        as_float = float(magnitude)
        return as_float if math.isfinite(as_float) else None
    real, imag = magnitude.evalf(15).as_real_imag()
    if not (real.is_number and imag.is_number and real.is_finite and imag.is_finite):
        raise FormulaError("math", "no finite value", str(magnitude)[:80])
    if imag != 0 and abs(imag) > 1e-12 * abs(real):
        raise FormulaError("math", "non-real value", str(magnitude)[:80])
    if real != 0 and abs(log10_abs(real)) > MAX_DIGITS:
        raise FormulaError("limit", "value too large or too small", f"beyond 10**±{MAX_DIGITS}")
    result = float(real)
    return result if math.isfinite(result) else None


class _Run:
    """One computation: collects errors, values and the root cause behind every uncomputed node."""

    def __init__(
        self,
        scaffold: Scaffold,
        deadline: float,
        time_limit_s: float,
        moves: dict[str, sympy.Expr] | None = None,
        branch: dict[str, float | None] | None = None,
    ) -> None:
        self.scaffold = scaffold
        # A perturbed run (the typed-in test): the givens get `moves` instead of their values, and each solved
        # unknown follows `branch`, its value in the real run; checks select nothing there (see `typed_in`).
        self.moves = moves
        self.branch = branch or {}
        self.result = Computation(valid=False)
        self.failed: dict[str, ComputeError] = {}  # node id -> the error that stopped it (its own or upstream)
        self.nodes: dict[str, Node] = {}
        self.reserved: set[str] = set()  # node ids refused as function or constant names
        self.formulas: dict[str, Expr] = {}
        self.quantities: dict[str, Quantity] = {}
        self.evaluator = Evaluator(self.quantities, deadline, time_limit_s)
        self.deadline = deadline
        self.skipped: dict[int, list[str]] = {}  # id() of a root-cause error -> nodes it kept from being computed

    def error(self, kind: ErrorKind, message: str, node: str | None = None, *, stops: bool = True) -> ComputeError:
        """Record an error; unless `stops` is False, its node (and what depends on it) is not computed."""
        err = ComputeError(kind=kind, node=node, message=message)
        self.result.errors.append(err)
        if node is not None and stops:
            self.failed.setdefault(node, err)
        return err

    def collect_nodes(self) -> None:
        for node in self.scaffold.nodes:
            if node.id in self.nodes:
                # Which of the two a formula meant cannot be known: neither is used.
                self.error("duplicate_id", f"duplicate node id {node.id}: rename one of them", node.id)
            elif node.id in RESERVED:
                what = CONSTANT_NAMES.get(node.id) or f"the function {node.id}"
                self.error("reserved_id", f"node id {node.id} is {what}: rename the node", node.id)
                self.reserved.add(node.id)
            else:
                self.nodes[node.id] = node
        target = self.nodes.get(self.scaffold.target)
        if target is None or not target.is_quantity:
            self.error("missing_target", f"target {self.scaffold.target} is not a usable node id")

    @property
    def shadowed(self) -> frozenset[str]:
        """Constants the graph also declared as nodes: a formula naming one means the (refused) node."""
        return frozenset(self.reserved & CONSTANTS.keys())

    def parse_nodes(self) -> None:
        for node_id, node in self.nodes.items():
            if node.kind == "unknown":
                self.result.parents[node_id] = []
                if (node.value or node.formula or "").strip():
                    self.error(
                        "syntax", f"unknown {node_id} has a value or formula: the equations determine it", node_id
                    )
                    continue
                self.check_unit(node)
                continue
            if not node.expression.strip():
                field = "value" if node.kind == "given" else "formula"
                self.error("syntax", f"{node.kind} node {node_id} has no {field}", node_id)
                continue
            try:
                expr = parse(node.expression, _MODES[node.kind])
            except FormulaError as exc:
                self.error(exc.kind, exc.describe(node_id), node_id)
                continue
            refs = refs_of(expr, self.shadowed)
            self.result.parents[node_id] = refs
            self.formulas[node_id] = expr
            unknown = [r for r in refs if r not in self.nodes and r not in self.reserved]
            valueless = [r for r in refs if r in self.nodes and not self.nodes[r].is_quantity]
            clashes = [b for b in bound_names(expr) if b in self.nodes or b in self.reserved]
            if node.kind == "given" and refs:
                message = f"given {node_id} references {', '.join(refs)}; a node computed from others is derived"
                self.error("given_with_reference", message, node_id)
            elif unknown:
                self.error("unknown_reference", f"unknown reference {', '.join(unknown)} in {node_id}", node_id)
            elif valueless:
                listed = ", ".join(f"{r} (an {self.nodes[r].kind})" for r in valueless)
                self.error("unknown_reference", f"{node_id} uses {listed}, which has no value", node_id)
            elif clashes:
                self.error("syntax", f"bound variable {clashes[0]} in {node_id} is also a node id", node_id)
            else:
                self.check_unit(node)

    def check_unit(self, node: Node) -> None:
        try:
            units.parse_unit(node.unit)
        except FormulaError as exc:
            self.error(exc.kind, exc.describe(node.id), node.id)

    def order(self) -> list[str]:
        """All node ids in dependency order; every cycle is reported once and its nodes fail."""
        graph = {n: [r for r in self.result.parents.get(n, []) if r in self.nodes] for n in self.nodes}
        while True:
            try:
                return list(graphlib.TopologicalSorter(graph).static_order())
            except graphlib.CycleError as exc:
                # graphlib lists each node before the nodes that use it; show "a uses b" as a -> b.
                cycle = list(reversed(exc.args[1]))
                err = self.error("cycle", f"cycle: {' -> '.join(cycle)}", cycle[0])
                for node_id in cycle:
                    self.failed.setdefault(node_id, err)
                    graph[node_id] = []

    def blocked(self, node_id: str) -> bool:
        """Whether an upstream failure keeps the node from being computed (recording it on the root cause)."""
        if node_id in self.failed:
            return True
        stopped = [p for p in self.result.parents.get(node_id, []) if p in self.failed]
        if not stopped:
            return False
        root = self.failed[stopped[0]]
        self.failed[node_id] = root
        self.skipped.setdefault(id(root), []).append(node_id)
        return True

    def attempt(self, node_id: str, step: Callable[[], None]) -> bool:
        """Run one node's step, turning every failure into an error on the node; False if it failed."""
        try:
            step()
            return True
        except FormulaError as exc:
            self.error(exc.kind, exc.describe(node_id), node_id)
        except ArithmeticError as exc:  # sympy giving up, e.g. PrecisionExhausted on floor(exp(9000))
            self.error("math", f"cannot evaluate {node_id} exactly ({type(exc).__name__})", node_id)
        except MemoryError:  # the sandbox's cap on a worker's memory
            self.error("limit", f"memory limit: {node_id} needs more memory than a computation may use", node_id)
        except RecursionError:
            self.error("limit", f"too large to evaluate in {node_id} (RecursionError)", node_id)
        except Exception as exc:  # a bug of ours: name it on the rollout, keep the run going
            logger.exception("computer failed on node %s", node_id)
            self.error("internal", f"internal error in {node_id}: {type(exc).__name__}: {exc}", node_id)
        return False

    def evaluate_all(self, order: list[str]) -> None:
        block = self.solved_block(order)
        for node_id in order:
            if node_id in block or self.blocked(node_id):
                continue
            if time.thread_time() > self.deadline:
                self.error("timeout", f"time limit exceeded before {node_id}: {self.evaluator.time_limit_s:g} s")
                return
            self.attempt(node_id, lambda n=node_id: self.compute_node(n))
            if any(e.kind == "timeout" for e in self.result.errors):
                return
        if block:
            self.solve(block)

    def finish_messages(self) -> None:
        for err in self.result.errors:
            if id(err) in self.skipped:
                err.message += f" (so not computed: {', '.join(self.skipped[id(err)])})"

    def compute_node(self, node_id: str) -> None:
        """Evaluate one node: record a quantity's value, test a check or an equation that holds no unknown."""
        node, expr = self.nodes[node_id], self.formulas[node_id]
        if node.kind in ("check", "equation"):
            self.test_condition(node_id, expr)
            return
        self.record(node_id, self.evaluate(node, expr))

    def test_condition(self, node_id: str, expr: Expr) -> None:
        if self.evaluator.truth(expr):
            return
        shown = ", ".join(
            f"{r} = {_short(self.result.values[r])}" for r in self.result.parents[node_id] if r in self.result.values
        )
        what = "check" if self.nodes[node_id].kind == "check" else "equation"
        formula = self.nodes[node_id].expression.strip()
        self.error("check", f"{what} {node_id} failed: {formula}" + (f" ({shown})" if shown else ""), node_id)

    # --- unknowns and equations --------------------------------------------------------------------

    def solved_block(self, order: list[str]) -> list[str]:
        """The unknowns and every node that depends on one, in order: computed after the equations are solved."""
        inside: set[str] = {n for n in order if self.nodes[n].kind == "unknown" and n not in self.failed}
        for node_id in order:
            if any(p in inside for p in self.result.parents.get(node_id, [])):
                inside.add(node_id)
        return [n for n in order if n in inside]

    def solve(self, block: list[str]) -> None:
        unknowns = [n for n in block if self.nodes[n].kind == "unknown"]
        equations = [n for n in block if self.nodes[n].kind == "equation"]
        domains = {u: self.domain(u) for u in unknowns}
        for u in unknowns:
            self.quantities[u] = Quantity(symbol_for(u, domains[u]), units.parse_unit(self.nodes[u].unit))
        residuals: list[sympy.Expr] = []
        # Only what the equations use is built over the unknowns' symbols; the rest waits for their values.
        feeding = set().union(*(ancestors(e, self.result.parents) for e in equations))
        for node_id in block:
            node = self.nodes[node_id]
            if node.kind in ("unknown", "check") or (node.kind == "derived" and node_id not in feeding):
                continue
            if self.blocked(node_id):
                continue
            if node.kind == "equation":
                self.attempt(node_id, lambda n=node_id: residuals.append(self.residual(n)))
            else:
                self.attempt(
                    node_id,
                    lambda n=node_id: self.quantities.__setitem__(n, self.evaluate(self.nodes[n], self.formulas[n])),
                )
        stuck = [n for n in equations if n in self.failed]
        symbols = {u: self.quantities[u].magnitude for u in unknowns}
        free = [u for u in unknowns if not any(symbols[u] in r.free_symbols for r in residuals)]
        for u in [] if stuck else free:
            self.error("math", f"unknown {u} is in no equation: nothing determines it", u)
        if stuck or free:
            self.fail_block(block, stuck[0] if stuck else free[0])
            return
        try:
            candidates = solver.solve(
                residuals, [solver.Unknown(u, domains[u]) for u in unknowns], self.deadline, near=self.near(unknowns)
            )
        except FormulaError as exc:
            self.error(
                exc.kind,
                f"{exc.problem} for {', '.join(unknowns)}" + (f": {exc.detail}" if exc.detail else ""),
                unknowns[0],
            )
            self.fail_block(block, unknowns[0])
            return
        if self.moves is not None:
            kept = self.nearest(candidates, unknowns)
        else:
            kept = [c for c in candidates if self.consistent(block, c)]
        if len(kept) != 1:
            self.error(
                "math",
                _count_message(kept or candidates, unknowns, self.nodes, bool(candidates) and not kept),
                unknowns[0],
            )
            self.fail_block(block, unknowns[0])
            return
        self.assign(block, kept[0])
        for node_id in block:
            if self.nodes[node_id].kind == "unknown":
                self.attempt(node_id, lambda n=node_id: self.record(n, self.quantities[n]))
            elif not self.blocked(node_id):
                self.attempt(node_id, lambda n=node_id: self.compute_node(n))
        target = self.scaffold.target
        if (
            self.moves is None
            and target in self.result.values
            and target in block
            and not self.quantities[target].exact
        ):
            self.implied(target, block, residuals, {symbol_for(u, domains[u]): kept[0][u] for u in unknowns})

    def domain(self, unknown: str) -> Any:
        """An unknown's domain; a perturbed run relaxes integers to reals (moved givens rarely keep it integral)."""
        domain = self.nodes[unknown].domain
        return domain if self.moves is None else _RELAXED.get(domain, domain)

    def near(self, unknowns: list[str]) -> tuple[float, ...] | None:
        """Where a perturbed run's solver starts: the real run's solution, if it solved every unknown."""
        if self.moves is None:
            return None
        values = [self.branch.get(u) for u in unknowns]
        return None if None in values else tuple(v for v in values if v is not None)

    def nearest(self, candidates: list[dict[str, sympy.Expr]], unknowns: list[str]) -> list[dict[str, sympy.Expr]]:
        """The candidate closest to the real run's solution: the branch the solution moves along."""

        def distance(candidate: dict[str, sympy.Expr]) -> float:
            total = 0.0
            for u in unknowns:
                real = self.branch.get(u)
                try:
                    moved = float(sympy.re(sympy.N(candidate[u], 15)))
                except (TypeError, ValueError, ArithmeticError):
                    return math.inf
                total += math.inf if real is None else abs(moved - real) / max(1.0, abs(real))
            return total

        ranked = sorted(((distance(c), i) for i, c in enumerate(candidates)), key=lambda p: p[0])
        return [candidates[ranked[0][1]]] if ranked and math.isfinite(ranked[0][0]) else []

    def residual(self, node_id: str) -> sympy.Expr:
        """lhs - rhs of an equation, in the left side's unit."""
        compare = self.formulas[node_id]
        assert isinstance(compare, Compare)
        left, right = (self.evaluator.evaluate(side) for side in compare.operands)
        return left.magnitude - self.evaluator.like(left, right, "==")

    def assign(self, block: list[str], solution: dict[str, sympy.Expr]) -> None:
        """Give the unknowns a candidate's values (numbers now) and clear the block's symbolic values."""
        for node_id in block:
            node = self.nodes[node_id]
            if node.kind == "unknown":
                value = solution[node_id]
                self.quantities[node_id] = Quantity(value, units.parse_unit(node.unit), exact=not value.is_Float)
            else:
                self.quantities.pop(node_id, None)

    def consistent(self, block: list[str], solution: dict[str, sympy.Expr]) -> bool:
        """Whether a candidate makes every check in the block hold (and the nodes those checks use computable).

        Nodes no check uses are left to the final pass, which reports their own errors on them.
        """
        checks = [n for n in block if self.nodes[n].kind == "check"]
        needed = set(checks).union(*(ancestors(c, self.result.parents) for c in checks))
        self.assign(block, solution)
        try:
            for node_id in block:
                node = self.nodes[node_id]
                if node.kind == "unknown" or node_id in self.failed or node_id not in needed:
                    continue
                if node.kind == "check":
                    if not self.evaluator.truth(self.formulas[node_id]):
                        return False
                elif node.kind == "derived":
                    self.quantities[node_id] = self.evaluate(node, self.formulas[node_id])
            return True
        except (FormulaError, ArithmeticError, TypeError, ValueError):
            return False
        finally:
            self.assign(block, solution)

    def fail_block(self, block: list[str], cause: str) -> None:
        root = self.failed.get(cause) or self.result.errors[-1]
        for node_id in block:
            if node_id != cause and node_id not in self.failed:
                self.failed[node_id] = root
                self.skipped.setdefault(id(root), []).append(node_id)

    # --- values ------------------------------------------------------------------------------------

    def evaluate(self, node: Node, expr: Expr) -> Quantity:
        q = self.evaluator.evaluate(expr)
        declared = units.parse_unit(node.unit)
        if node.kind == "given":
            magnitude = q.magnitude if self.moves is None else self.moves.get(node.id, q.magnitude)
            return Quantity(magnitude, declared, q.size, q.depth, q.exact)
        if not node.unit.strip():
            return q
        if not units.same_dimension(q.unit, declared):
            detail = f"formula gives {unit_name(q.unit)} ({q.unit.dimensionality})"
            raise FormulaError("dimension", f"declared unit {node.unit} does not match the formula", detail)
        return self.evaluator.quantity(checked(units.convert(q.magnitude, q.unit, declared)), declared, q)

    def record(self, node_id: str, q: Quantity) -> None:
        if self.moves is not None and self.nodes[node_id].kind == "derived" and not q.magnitude.is_Rational:
            # Whether a value moves needs no exact irrationals, which would make the perturbed run far slower
            # than the real one (a sqrt that was 17 inside a sum's % is not 17 any more).
            q = Quantity(q.magnitude.evalf(FALLBACK_DIGITS), q.unit, exact=False)
        numeric = _numeric(q.magnitude)
        try:
            exact = str(q.magnitude)
        except ValueError:  # Python refuses to print integers over 4300 digits
            raise FormulaError("limit", "number too large to print", f"over {MAX_DIGITS} digits") from None
        self.quantities[node_id] = q
        self.result.values[node_id] = exact
        self.result.numeric[node_id] = numeric
        self.result.units[node_id] = units.text(q.unit)
        self.result.order.append(node_id)

    def find_dependencies(self) -> None:
        """`depends` of every parsed node; an unknown depends on the equations that bind it."""
        for node_id, expr in self.formulas.items():
            parents = self.result.parents[node_id]
            if not parents or time.thread_time() > self.deadline:
                self.result.depends[node_id] = parents
                continue
            self.result.depends[node_id] = live_refs(expr, self.shadowed)
        for node_id, node in self.nodes.items():
            if node.kind == "unknown":
                self.result.depends[node_id] = [
                    e
                    for e, n in self.nodes.items()
                    if n.kind == "equation" and node_id in self.result.depends.get(e, [])
                ]

    def find_typed_in(self) -> None:
        """Which computed derived nodes and unknowns keep their value when every given moves (or fail then).

        The graph is computed again with all givens moved at once, each by its own generic amount (integers by
        integers, so loop bounds stay bounds), under the same deadline. A node whose value moves depends on the
        givens through the computation. One that keeps its value, or that cannot be computed with the givens
        moved (all at once, or any one alone), is typed in: its dependence is not shown, and running out of time
        shows nothing either.
        """
        pending = {
            n: "" for n in self.result.order if self.nodes[n].kind in ("derived", "unknown") and n not in self.failed
        }
        givens = [n for n in self.result.order if self.nodes[n].kind == "given"]
        branch = {n: self.result.numeric.get(n) for n in self.result.order if self.nodes[n].kind == "unknown"}
        # All givens at once, small then large moves; then, for a node that could not be computed that way,
        # each of its givens alone (a value that is only defined on some inputs, e.g. numer() of a solution).
        trials = [(low, high, givens, True) for low, high in PERTURBATIONS]
        trials += [(-1, -1, [g], False) for g in givens]
        for trial, (low, high, moving, together) in enumerate(trials):
            if not pending:
                break
            if not together and not any(
                moving[0] in ancestors(n, self.result.parents) and not r.startswith("keeps") for n, r in pending.items()
            ):
                continue
            moves = {g: _moved(self.quantities[g].magnitude, random.Random(f"{trial}:{g}"), low, high) for g in moving}
            run = _Run(self.scaffold, self.deadline, self.evaluator.time_limit_s, moves, branch)
            run.run()
            out_of_time = any(e.kind == "timeout" for e in run.result.errors)
            moved = {
                n
                for n in run.result.values
                if n in self.quantities and _moves(self.quantities[n].magnitude, run.quantities[n].magnitude)
            } | set(moving)
            for node_id in list(pending):
                cause = run.failed.get(node_id)
                if node_id in moved or (
                    # numer(), denom(), a loop bound: defined on exact rationals or integers only, which a moved
                    # input rarely stays; the node then depends on the givens as its inputs do.
                    cause is not None
                    and cause.node == node_id
                    and any(m in cause.message for m in _EXACT_ONLY)
                    and moved & set(self.result.depends.get(node_id, []))
                ):
                    del pending[node_id]
                elif node_id in run.result.values:
                    if together:
                        pending[node_id] = "keeps its value when the givens change"
                elif not pending[node_id].startswith("keeps"):
                    pending[node_id] = (
                        f"cannot be computed when the givens change ({_short(cause.message)})"
                        if cause is not None
                        else "the time limit ran out before it was computed with the givens changed"
                        if out_of_time
                        else "cannot be computed when the givens change"
                    )
            if out_of_time:
                break
        # A constant 0 or 1 inside the graph (binomial(k, k), an empty product) is structure, not a typed-in answer.
        self.result.typed_in = {
            n: why
            for n, why in pending.items()
            if n == self.scaffold.target or not why.startswith("keeps") or self.quantities[n].magnitude not in (0, 1)
        }

    def implied(
        self, target: str, block: list[str], residuals: list[sympy.Expr], root: dict[sympy.Symbol, sympy.Expr]
    ) -> None:
        """Make a target computed from a numeric root exact where the equations provably imply its value."""
        needed = ancestors(target, self.result.parents) | {target}
        numeric = dict(self.quantities)
        try:
            # The target over the unknowns' symbols: the block's nodes it uses, computed again before the root.
            for node_id in block:
                node = self.nodes[node_id]
                if node_id not in needed:
                    continue
                if node.kind == "unknown":
                    symbol = symbol_for(node_id, self.domain(node_id))
                    self.quantities[node_id] = Quantity(symbol, units.parse_unit(node.unit))
                elif node.kind == "derived":
                    self.quantities[node_id] = self.evaluate(node, self.formulas[node_id])
            over_unknowns = self.quantities[target].magnitude
        except (FormulaError, ArithmeticError, TypeError, ValueError, RecursionError):
            return
        finally:
            self.quantities.clear()
            self.quantities.update(numeric)
        q = numeric[target]
        budget = min(self.deadline, time.thread_time() + SIMPLIFY_SHARE * self.evaluator.time_limit_s)
        value = implied_rational(over_unknowns, residuals, root, q.magnitude, budget)
        if value is not None:
            self.result.order.remove(target)  # recorded again, in its exact value
            self.record(target, Quantity(value, q.unit, q.size, q.depth))

    def answer(self, target: str) -> Answer:
        q = self.quantities[target]
        unit = self.result.units[target]
        if not q.exact or q.magnitude.is_Rational:
            exact, numeric = self.result.values[target], self.result.numeric[target]
            return Answer(exact=exact, numeric=numeric, unit=unit, is_exact=q.exact)
        budget = min(self.deadline, time.thread_time() + SIMPLIFY_SHARE * self.evaluator.time_limit_s)
        value, digits = simplest(q.magnitude, budget)
        exact = str(value)
        self.result.values[target] = exact
        return Answer(exact=exact, numeric=self.result.numeric[target], unit=unit, digits=digits)

    def run(self) -> Computation:
        with deadline_of(self.deadline):
            self.collect_nodes()
            self.parse_nodes()
            self.evaluate_all(self.order())
            self.finish_messages()
            if self.moves is not None:
                return self.result
            self.find_dependencies()
            self.find_typed_in()
            result, target = self.result, self.scaffold.target
            if target in result.values:
                result.answer = self.answer(target)
        result.valid = not result.errors and result.answer is not None
        return result


_MODES: dict[str, Mode] = {"given": "value", "derived": "value", "equation": "equation", "check": "condition"}


def ancestors(node: str, parents: dict[str, list[str]]) -> set[str]:
    """Every node `node` depends on through `parents` (cycles allowed)."""
    seen: set[str] = set()
    stack = [node]
    while stack:
        for parent in parents.get(stack.pop(), []):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _moved(value: sympy.Expr, rng: random.Random, low: int, high: int) -> sympy.Expr:
    """A given's value moved generically by low..high thousandths: an integer by at least 1, staying an integer."""
    share = sympy.Rational(rng.randint(low, high), 1000)
    if value.is_Integer:
        step = max(1, int(abs(value) * abs(share))) + rng.randint(0, 2)
        # Down, but never through 0 or 1 (a count of one is often a divisor or a bound); small ones go up.
        return value - step if share < 0 and abs(value) - step >= 2 else value + step
    return value * (1 + share)


def _moves(before: sympy.Expr, after: sympy.Expr) -> bool:
    if before.is_Rational and after.is_Rational:
        return before != after
    try:
        a, b = float(before), float(after)
    except (TypeError, ValueError, OverflowError):
        return str(before) != str(after)
    return not math.isclose(a, b, rel_tol=MOVED_REL_TOL, abs_tol=0.0)


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _count_message(
    candidates: list[dict[str, sympy.Expr]], unknowns: list[str], nodes: dict[str, Node], checked_out: bool
) -> str:
    names = ", ".join(unknowns)
    if not candidates:
        domains = ", ".join(f"{u} in {nodes[u].domain}" for u in unknowns)
        return f"no solution for {domains}"
    if checked_out:
        return f"no solution for {names} passes the checks (candidates: {_listed(candidates, unknowns)})"
    return f"{len(candidates)} solutions for {names}: {_listed(candidates, unknowns)}; narrow the domain or add a check"


def _listed(candidates: list[dict[str, sympy.Expr]], unknowns: list[str]) -> str:
    shown = []
    for c in candidates[:5]:
        values = [_short(str(c[u])) for u in unknowns]
        shown.append(values[0] if len(values) == 1 else "(" + ", ".join(values) + ")")
    return ", ".join(shown) + (f" (+{len(candidates) - 5} more)" if len(candidates) > 5 else "")


def compute(scaffold: Scaffold | dict[str, Any] | str, *, time_limit_s: float = 2.0) -> Computation:
    """Evaluate a scaffold (model, dict or JSON text); bad input yields `valid=False` with errors, never raises."""
    start = time.perf_counter()
    try:
        units.registry()  # built once per process (about a second); that is start-up, not this scaffold's work
        loaded = _load(scaffold)
        if isinstance(loaded, ComputeError):
            result = Computation(valid=False, errors=[loaded])
        else:
            result = _Run(loaded, time.thread_time() + time_limit_s, time_limit_s).run()
    except MemoryError:  # the sandbox's address-space cap; in-process, the machine's memory
        result = Computation(valid=False, errors=[ComputeError(kind="limit", message="memory limit: out of memory")])
    except Exception as exc:  # a bug of ours: report it on the rollout instead of stopping the run
        logger.exception("computer failed")
        error = ComputeError(kind="internal", message=f"internal error: {type(exc).__name__}: {exc}")
        result = Computation(valid=False, errors=[error])
    result.elapsed_ms = (time.perf_counter() - start) * 1000
    return result
