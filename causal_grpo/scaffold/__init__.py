"""The scaffold language: one concept, one folder, one public surface.

A scaffold is a DAG of named quantities written by a model (`schema`); the computer evaluates it exactly
(`formula` parses, `evaluator` walks a tree, `iteration` runs bounded loops, `solver` solves equations,
`numbertheory`, `exact` and `units` serve them) under hard limits (`sandbox`). Code outside this folder
imports from here only. The schema loads eagerly (it is light: the simulator and prompts need it); the
computer's names load on first use, so `from causal_grpo.scaffold import Scaffold` does not pull in sympy.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from causal_grpo.scaffold.schema import (
    MAX_ANALYSIS_CHARS,
    MAX_FORMULA_CHARS,
    MAX_NODES,
    Domain,
    Node,
    Scaffold,
)

_LAZY = {
    "Answer": "computer",
    "Computation": "computer",
    "ComputeError": "computer",
    "ancestors": "computer",
    "compute": "computer",
    "references": "computer",
    "CONSTANTS": "formula",
    "FUNCTIONS": "formula",
    "FormulaError": "formula",
    "PRECISE_DIGITS": "exact",
    "Limits": "sandbox",
    "Sandbox": "sandbox",
    "acompute": "sandbox",
    "shared_sandbox": "sandbox",
    "use_sandbox": "sandbox",
}

__all__ = [
    "MAX_ANALYSIS_CHARS",
    "MAX_FORMULA_CHARS",
    "MAX_NODES",
    "Domain",
    "Node",
    "Scaffold",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'causal_grpo.scaffold' has no attribute {name!r}")
    value = getattr(import_module(f"causal_grpo.scaffold.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
