"""The computer: evaluates a scaffold's DAG exactly with sympy and pint, safely and under limits.

`compute(scaffold)` never raises for bad input: every problem becomes a `ComputeError` naming its node,
one per root cause (nodes downstream of a failure are not computed and are listed on that error).

Rules, in short (the formula language and its limits are in `causal_grpo.formula`, units in
`causal_grpo.units`):

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
  limits of `causal_grpo.formula` and `causal_grpo.units`. CPU time, not wall clock, so a busy machine
  (four workers on two cores) cannot turn a valid scaffold into a timeout and change a run's results.
"""

from __future__ import annotations

import graphlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import pint
import sympy
from pydantic import BaseModel, Field, ValidationError

from causal_grpo import units
from causal_grpo.formula import (
    CONSTANT_NAMES,
    CONSTANTS,
    FUNCTIONS,
    MAX_DIGITS,
    RESERVED,
    Binary,
    Call,
    Const,
    Expr,
    FormulaError,
    Num,
    Ref,
    Unary,
    call,
    checked,
    divide,
    floor_divide,
    live_refs,
    log10_abs,
    modulo,
    parse,
    power,
    refs_of,
)
from causal_grpo.formula import references as references
from causal_grpo.scaffold import Node, Scaffold

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
    "internal",  # a bug in the computer itself, reported rather than raised
]

MAX_SCHEMA_ERRORS = 5
"""How many pydantic errors a `schema` error lists."""
EXACT_SIZE = 200
"""Largest expression tree, in nodes, a value keeps exactly; a bigger one goes on as a FALLBACK_DIGITS float."""
EXACT_DEPTH = 5
"""Deepest nesting of functions and powers a value keeps exactly (sympy's evalf slows exponentially with it)."""
FALLBACK_DIGITS = 30
"""Significant digits of a value that outgrew the exact budget."""
PRECISE_DIGITS = 50
"""Significant digits the target's exact irrational value is evaluated to, for telling it from an integer."""
SIMPLIFY_SHARE = 0.5
"""Share of the time limit the target's simplification may use at most (it gives up quietly, keeping the value)."""
RATIONAL_GUESS_DENOMINATOR = 10**6
"""Largest denominator of the rational an irrational-looking target is tried against."""


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
    answer: Answer | None = None
    errors: list[ComputeError] = Field(default_factory=list)
    elapsed_ms: float = 0.0

    @classmethod
    def missing(cls, reason: str) -> Computation:
        """The computation of a scaffold the model never delivered (the reason is the model's error)."""
        return cls(valid=False, errors=[ComputeError(kind="schema", message=reason)])


# --- evaluating one formula ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quantity:
    """A magnitude in a pint unit; `size` and `depth` bound its expression tree, `exact` is False for floats."""

    magnitude: sympy.Expr
    unit: pint.Unit
    size: int = 1
    depth: int = 0
    exact: bool = True


def _unit_name(unit: pint.Unit) -> str:
    return units.text(unit) or "dimensionless"


class _Evaluator:
    """Walks a formula's tree over already computed node values, checking units, limits and the clock."""

    def __init__(self, values: dict[str, Quantity], deadline: float, time_limit_s: float) -> None:
        self.values = values
        self.deadline = deadline
        self.time_limit_s = time_limit_s
        self.pure = units.dimensionless()
        self.radian = units.parse_unit("radian")

    def quantity(self, magnitude: sympy.Expr, unit: pint.Unit, *parts: Quantity, nested: bool = False) -> Quantity:
        """The result of an operation on `parts`; `nested` for functions and powers."""
        exact = all(p.exact for p in parts)
        if exact and magnitude.is_Atom:
            return Quantity(magnitude, unit)
        size = 1 + sum(p.size for p in parts)
        depth = max((p.depth for p in parts), default=0) + nested
        if not exact or size > EXACT_SIZE or depth > EXACT_DEPTH:
            # Past this budget sympy's exact arithmetic and printing get very slow; go on with a precise float.
            return Quantity(magnitude.evalf(FALLBACK_DIGITS), unit, exact=False)
        return Quantity(magnitude, unit, size, depth)

    def _powered(self, magnitude: sympy.Expr, unit: pint.Unit, *parts: Quantity) -> Quantity:
        simple = units.simplest(unit)
        return self.quantity(checked(units.convert(magnitude, unit, simple)), simple, *parts, nested=True)

    def _number(self, q: Quantity, what: str) -> sympy.Expr:
        if not q.unit.dimensionless:
            raise FormulaError("dimension", f"{what} needs a pure number", f"got {_unit_name(q.unit)}")
        return units.convert(q.magnitude, q.unit, self.pure)

    def _like(self, first: Quantity, other: Quantity, symbol: str) -> sympy.Expr:
        """`other`'s magnitude in `first`'s unit, if they share a dimension."""
        if not units.same_dimension(first.unit, other.unit):
            detail = f"{_unit_name(first.unit)} {symbol} {_unit_name(other.unit)}"
            raise FormulaError("dimension", "dimension mismatch", detail)
        return units.convert(other.magnitude, other.unit, first.unit)

    def evaluate(self, expr: Expr) -> Quantity:
        if time.thread_time() > self.deadline:
            raise FormulaError("timeout", "time limit exceeded", f"{self.time_limit_s:g} s")
        match expr:
            case Num(value):
                return Quantity(value, self.pure)
            case Const(name):
                return Quantity(CONSTANTS[name], self.pure)
            case Ref(name):
                return self.values[name]
            case Unary(op, operand):
                q = self.evaluate(operand)
                return q if op == "+" else self.quantity(-q.magnitude, q.unit, q)
            case Binary(op, left, right):
                return self._binary(op, self.evaluate(left), self.evaluate(right))
            case Call(func, args):
                return self._call(func, [self.evaluate(a) for a in args])
        raise AssertionError(f"unknown expression {expr!r}")

    def _binary(self, op: str, a: Quantity, b: Quantity) -> Quantity:
        x = a.magnitude
        match op:
            case "+" | "-":
                y = self._like(a, b, op)
                return self.quantity(checked(x + y if op == "+" else x - y), a.unit, a, b)
            case "*":
                return self.quantity(checked(x * b.magnitude), units.bounded(a.unit * b.unit), a, b)
            case "/":
                return self.quantity(divide(x, b.magnitude), units.bounded(a.unit / b.unit), a, b)
            case "//":
                return self.quantity(floor_divide(x, self._like(a, b, op)), self.pure, a, b, nested=True)
            case "%":
                return self.quantity(modulo(x, self._like(a, b, op)), a.unit, a, b, nested=True)
            case "**":
                exponent = self._number(b, "an exponent")
                if a.unit.dimensionless:
                    magnitude = power(self._number(a, "a power"), exponent)
                    return self.quantity(magnitude, self.pure, a, b, nested=True)
                if not exponent.is_Rational:
                    raise FormulaError("dimension", "a quantity with a unit needs a rational exponent", str(exponent))
                return self._powered(power(x, exponent), units.power(a.unit, exponent), a, b)
        raise AssertionError(f"unknown operator {op}")

    def _call(self, func: str, args: list[Quantity]) -> Quantity:
        rule = FUNCTIONS[func].units
        if rule == "plain":
            return self.quantity(call(func, [self._number(q, func) for q in args]), self.pure, *args, nested=True)
        if rule == "sqrt":
            (q,) = args
            return self._powered(call(func, [q.magnitude]), units.power(q.unit, sympy.Rational(1, 2)), q)
        if rule == "angle" and len(args) == 1:
            return self.quantity(call(func, [self._number(args[0], func)]), self.radian, *args, nested=True)
        first = args[0]
        magnitudes = [first.magnitude, *(self._like(first, q, ",") for q in args[1:])]
        unit = first.unit if rule == "keep" else self.radian
        return self.quantity(call(func, magnitudes), unit, *args, nested=True)


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

    def __init__(self, scaffold: Scaffold, deadline: float, time_limit_s: float) -> None:
        self.scaffold = scaffold
        self.result = Computation(valid=False)
        self.failed: dict[str, ComputeError] = {}  # node id -> the error that stopped it (its own or upstream)
        self.nodes: dict[str, Node] = {}
        self.reserved: set[str] = set()  # node ids refused as function or constant names
        self.formulas: dict[str, Expr] = {}
        self.quantities: dict[str, Quantity] = {}
        self.evaluator = _Evaluator(self.quantities, deadline, time_limit_s)
        self.deadline = deadline

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
        if self.scaffold.target not in self.nodes:
            self.error("missing_target", f"target {self.scaffold.target} is not a usable node id")

    @property
    def shadowed(self) -> frozenset[str]:
        """Constants the graph also declared as nodes: a formula naming one means the (refused) node."""
        return frozenset(self.reserved & CONSTANTS.keys())

    def parse_nodes(self) -> None:
        for node_id, node in self.nodes.items():
            if not node.expression.strip():
                field = "value" if node.kind == "given" else "formula"
                self.error("syntax", f"{node.kind} node {node_id} has no {field}", node_id)
                continue
            try:
                expr = parse(node.expression)
            except FormulaError as exc:
                self.error(exc.kind, exc.describe(node_id), node_id)
                continue
            refs = refs_of(expr, self.shadowed)
            self.result.parents[node_id] = refs
            self.formulas[node_id] = expr
            unknown = [r for r in refs if r not in self.nodes and r not in self.reserved]
            if node.kind == "given" and refs:
                message = f"given {node_id} references {', '.join(refs)}; a node computed from others is derived"
                self.error("given_with_reference", message, node_id)
            elif unknown:
                self.error("unknown_reference", f"unknown reference {', '.join(unknown)} in {node_id}", node_id)
            else:
                try:
                    units.parse_unit(node.unit)
                except FormulaError as exc:
                    self.error(exc.kind, exc.describe(node_id), node_id)

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

    def evaluate_all(self, order: list[str]) -> None:
        skipped: dict[int, list[str]] = {}  # id() of a root-cause error -> nodes it kept from being computed
        for node_id in order:
            if node_id in self.failed:
                continue
            blocked = [p for p in self.result.parents[node_id] if p in self.failed]
            if blocked:
                root = self.failed[blocked[0]]
                self.failed[node_id] = root
                skipped.setdefault(id(root), []).append(node_id)
                continue
            if time.thread_time() > self.deadline:
                self.error("timeout", f"time limit exceeded before {node_id}: {self.evaluator.time_limit_s:g} s")
                break
            try:
                self.record(node_id, self.evaluate(self.nodes[node_id], self.formulas[node_id]))
            except FormulaError as exc:
                self.error(exc.kind, exc.describe(node_id), node_id)
                if exc.kind == "timeout":
                    break
            except ArithmeticError as exc:  # sympy giving up, e.g. PrecisionExhausted on floor(exp(9000))
                self.error("math", f"cannot evaluate {node_id} exactly ({type(exc).__name__})", node_id)
            except (RecursionError, MemoryError) as exc:
                self.error("limit", f"too large to evaluate in {node_id} ({type(exc).__name__})", node_id)
            except Exception as exc:  # a bug of ours: name it on the rollout, keep the run going
                logger.exception("computer failed on node %s", node_id)
                self.error("internal", f"internal error in {node_id}: {type(exc).__name__}: {exc}", node_id)
        for err in self.result.errors:
            if id(err) in skipped:
                err.message += f" (so not computed: {', '.join(skipped[id(err)])})"

    def evaluate(self, node: Node, expr: Expr) -> Quantity:
        q = self.evaluator.evaluate(expr)
        declared = units.parse_unit(node.unit)
        if node.kind == "given":
            return Quantity(q.magnitude, declared, q.size, q.depth, q.exact)
        if not node.unit.strip():
            return q
        if not units.same_dimension(q.unit, declared):
            detail = f"formula gives {_unit_name(q.unit)} ({q.unit.dimensionality})"
            raise FormulaError("dimension", f"declared unit {node.unit} does not match the formula", detail)
        return self.evaluator.quantity(checked(units.convert(q.magnitude, q.unit, declared)), declared, q)

    def record(self, node_id: str, q: Quantity) -> None:
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
        """`depends` of every parsed node; its text references where time ran out or the build failed."""
        for node_id, expr in self.formulas.items():
            parents = self.result.parents[node_id]
            if not parents or time.thread_time() > self.deadline:
                self.result.depends[node_id] = parents
                continue
            self.result.depends[node_id] = live_refs(expr, self.shadowed)

    def answer(self, target: str) -> Answer:
        q = self.quantities[target]
        unit = self.result.units[target]
        if not q.exact or q.magnitude.is_Rational:
            return Answer(
                exact=self.result.values[target], numeric=self.result.numeric[target], unit=unit, is_exact=q.exact
            )
        budget = min(self.deadline, time.thread_time() + SIMPLIFY_SHARE * self.evaluator.time_limit_s)
        value, digits = _simplest(q.magnitude, budget)
        exact = str(value)
        self.result.values[target] = exact
        return Answer(exact=exact, numeric=self.result.numeric[target], unit=unit, digits=digits)

    def run(self) -> Computation:
        self.collect_nodes()
        self.parse_nodes()
        self.evaluate_all(self.order())
        self.find_dependencies()
        result, target = self.result, self.scaffold.target
        if target in result.values:
            result.answer = self.answer(target)
        result.valid = not result.errors and result.answer is not None
        return result


class _OutOfTime(BaseException):
    """Raised inside sympy when a bounded step runs out of CPU time; a BaseException so sympy cannot swallow it."""


@contextmanager
def _cpu_bounded(deadline: float) -> Iterator[None]:
    """Stop the Python code run inside (sympy's, say) once the thread's CPU clock passes `deadline`.

    sympy has no timeouts and signals do not work in threads, so a trace function checks the clock
    every few hundred calls and raises `_OutOfTime` into the running code.
    """
    calls = 0

    def tracer(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        calls += 1
        if calls % 256 == 0 and time.thread_time() > deadline:
            raise _OutOfTime
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(previous)


def _simplest(value: sympy.Expr, deadline: float) -> tuple[sympy.Expr, str | None]:
    """An exact irrational-looking value in its simplest form found before `deadline`, and its digits.

    A value within 10**-40 of a rational with a small denominator is proven equal to it (sympy's `equals`)
    or left as it is; otherwise sympy's `simplify` is kept when it is shorter. Out of time, the value so far.
    """
    digits: str | None = None
    try:
        with _cpu_bounded(deadline):
            approx = sympy.N(value, PRECISE_DIGITS)
            if approx.is_Float:
                digits = str(approx)
                guess = Fraction(digits).limit_denominator(RATIONAL_GUESS_DENOMINATOR)
                candidate = sympy.Rational(guess.numerator, guess.denominator)
                if abs(approx - candidate) <= sympy.Float(10, 5) ** -40 * max(1, abs(candidate)):
                    if (value - candidate).equals(0) is True:
                        return candidate, None
            simpler = sympy.simplify(value)
            if simpler.is_Rational or sympy.count_ops(simpler) < sympy.count_ops(value):
                value = simpler
    except _OutOfTime:
        pass
    except (ArithmeticError, TypeError, ValueError, RecursionError):  # sympy giving up on an odd value
        pass
    return value, (None if value.is_Rational else digits)


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
    except Exception as exc:  # a bug of ours: report it on the rollout instead of stopping the run
        logger.exception("computer failed")
        error = ComputeError(kind="internal", message=f"internal error: {type(exc).__name__}: {exc}")
        result = Computation(valid=False, errors=[error])
    result.elapsed_ms = (time.perf_counter() - start) * 1000
    return result
