"""The project's error types: systemic faults, and bad input that stops an operation with a clear message."""

from __future__ import annotations


class CausalGrpoError(Exception):
    """Base class of every error causal-grpo raises on purpose."""


class DatasetError(CausalGrpoError, ValueError):
    """A dataset name or file that cannot be loaded; the message names the file, line or item, and fault."""
