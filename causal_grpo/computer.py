"""The computer: evaluates a scaffold's DAG exactly with sympy and pint, safely and under limits.

CONTRACT (implementation pending): `compute(scaffold) -> Computation` never raises for bad input.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from causal_grpo.scaffold import Scaffold

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
]


class ComputeError(BaseModel):
    """One problem found in a scaffold, naming the node it concerns."""

    kind: ErrorKind
    node: str | None = None
    message: str

    def __str__(self) -> str:
        return self.message


class Answer(BaseModel):
    """The target's value: exact text, a float where it has one, and its unit."""

    exact: str
    numeric: float | None = None
    unit: str = ""

    def __str__(self) -> str:
        return f"{self.exact} {self.unit}".strip()


class Computation(BaseModel):
    """What the computer made of a scaffold; an invalid scaffold is a result, not an exception."""

    valid: bool
    values: dict[str, str] = Field(default_factory=dict, description="Exact value per computed node (sympy str).")
    numeric: dict[str, float | None] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict, description="Unit each computed node ended in.")
    order: list[str] = Field(default_factory=list, description="Topological order of the nodes that were computed.")
    answer: Answer | None = None
    errors: list[ComputeError] = Field(default_factory=list)
    elapsed_ms: float = 0.0


def compute(scaffold: Scaffold | dict[str, Any] | str, *, time_limit_s: float = 2.0) -> Computation:
    """Evaluate a scaffold (model, dict or JSON text); bad input yields `valid=False` with errors."""
    raise NotImplementedError
