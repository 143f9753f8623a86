"""The causal-graph scaffold: the one wire format between model, computer, critic, store and exports."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_NODES = 64
MAX_FORMULA_CHARS = 500
MAX_ANALYSIS_CHARS = 8000

Kind = Literal["given", "derived", "unknown", "equation", "check"]
Domain = Literal["real", "positive", "nonnegative", "negative", "integer", "positive_integer", "nonnegative_integer"]

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"

NodeId = Annotated[str, Field(pattern=IDENTIFIER, max_length=64, description="Node name, a Python-style identifier.")]


class Node(BaseModel):
    """One node of the graph: a given, a derived quantity, an unknown to solve for, an equation or a check."""

    model_config = ConfigDict(extra="ignore")

    id: NodeId
    kind: Kind = Field(
        description="given: a value from the problem; derived: a formula over nodes; unknown: solved for by the "
        "equations; equation: formula 'lhs == rhs'; check: a condition that must hold."
    )
    value: str | None = Field(
        default=None,
        max_length=MAX_FORMULA_CHARS,
        description="For givens: a number or exact constant expression without node names, e.g. '3/4', 'sqrt(2)'.",
    )
    formula: str | None = Field(
        default=None,
        max_length=MAX_FORMULA_CHARS,
        description="For derived nodes: an expression over other node ids, e.g. 'm*a'.",
    )
    unit: str = Field(
        default="", max_length=64, description="Unit in pint syntax, e.g. 'm/s^2'; empty = dimensionless."
    )
    domain: Domain = Field(default="real", description="An unknown's domain.")
    description: str = Field(default="", max_length=300, description="What this quantity is.")

    @field_validator("value", "formula", mode="before")
    @classmethod
    def _numbers_as_text(cls, v: object) -> object:
        # Models often emit bare numbers for values; keep the exact decimal text they wrote.
        if isinstance(v, bool):
            return v
        if isinstance(v, int | float):
            return repr(v) if isinstance(v, float) else str(v)
        return v

    @field_validator("unit", "description", mode="before")
    @classmethod
    def _none_as_empty(cls, v: object) -> object:
        return "" if v is None else v

    @property
    def expression(self) -> str:
        """The text the computer evaluates: `value` for givens, `formula` for derived nodes."""
        return (self.value if self.kind == "given" else self.formula) or ""

    @property
    def is_quantity(self) -> bool:
        """Whether the node has a value (given, derived, unknown), unlike an equation or a check."""
        return self.kind in ("given", "derived", "unknown")


class Scaffold(BaseModel):
    """A DAG of named quantities ending in a target node.

    Graph-level checks (duplicate ids, cycles, unknown references, a missing target) are the
    computer's job, so that a malformed graph becomes an invalid rollout with a reason instead
    of a validation failure.
    """

    model_config = ConfigDict(extra="ignore")

    # First, so that under structured output the model reasons before it writes a node.
    analysis: str = Field(
        default="",
        max_length=MAX_ANALYSIS_CHARS,
        description="Reason here first, then write the graph.",
    )
    problem_type: str = Field(
        default="general",
        max_length=64,
        description="A short label such as 'math_algebra', 'math_geometry', 'physics_mechanics'.",
    )
    nodes: list[Node] = Field(min_length=1, max_length=MAX_NODES)
    target: str = Field(max_length=64, description="The id of the node whose value answers the question.")
    rationale: str = Field(default="", max_length=2000, description="The reasoning the graph encodes, briefly.")

    def node(self, node_id: str) -> Node | None:
        """The first node with this id, if any."""
        return next((n for n in self.nodes if n.id == node_id), None)
