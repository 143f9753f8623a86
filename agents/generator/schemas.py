"""Structured output of a generator: the scaffold itself is the schema."""

from causal_grpo.scaffold import Scaffold

ScaffoldDraft = Scaffold

__all__ = ["ScaffoldDraft"]
