"""The project's error types: systemic faults, and bad input that stops an operation with a clear message."""

from __future__ import annotations

import re
from typing import Literal


class CausalGrpoError(Exception):
    """Base class of every error causal-grpo raises on purpose."""


class DatasetError(CausalGrpoError, ValueError):
    """A dataset name or file that cannot be loaded; the message names the file, line or item, and fault."""


MAX_SHOWN_DIGITS = 40
"""Longest run of digits a message shows; a longer number is shortened to its first digits and its length."""

ErrorKind = Literal["syntax", "disallowed", "limit", "math", "dimension", "unit", "timeout"]

_LONG_NUMBER = re.compile(rf"\d{{{MAX_SHOWN_DIGITS + 1},}}")


def shorten_numbers(text: str) -> str:
    """`text` with every number over MAX_SHOWN_DIGITS digits shown as '1926…(610 digits)'."""
    return _LONG_NUMBER.sub(lambda m: f"{m.group()[:4]}…({len(m.group())} digits)", text)


class FormulaError(CausalGrpoError):
    """A formula that cannot be parsed or evaluated; `describe(node)` words it for one node."""

    def __init__(self, kind: ErrorKind, problem: str, detail: str = "") -> None:
        detail = shorten_numbers(detail)
        super().__init__(f"{problem}: {detail}" if detail else problem)
        self.kind: ErrorKind = kind
        self.problem = problem
        self.detail = detail

    def describe(self, node: str) -> str:
        """The message for a formula of `node`, e.g. 'disallowed syntax in F: attribute access'."""
        return f"{self.problem} in {node}" + (f": {self.detail}" if self.detail else "")
