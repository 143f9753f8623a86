"""Imported once by the sandbox's fork server, so every worker it forks starts with sympy, pint and the unit
registry already loaded (about 0.8 s of start-up paid once, not per worker)."""

from causal_grpo.scaffold import units
from causal_grpo.scaffold.computer import compute as compute

units.registry()
