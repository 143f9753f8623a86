"""Experience records, bank names, id prefixes and store namespaces."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from causal_grpo.agents.extractor.schemas import Category
from pydantic import BaseModel, Field

BANKS = ("shared", "generator_1", "generator_2", "generator_3", "critic")
PREFIXES = {"shared": "S", "generator_1": "G1", "generator_2": "G2", "generator_3": "G3", "critic": "C"}
BANK_OF_PREFIX = {prefix: bank for bank, prefix in PREFIXES.items()}

Kind = Literal["experiences", "journal", "sequence"]
EditOp = Literal["add", "modify", "delete", "rollback"]


def namespace(agent: str, kind: Kind = "experiences") -> tuple[str, ...]:
    """The store namespace of one bank's experiences, its apply journal or its id sequence."""
    check_bank(agent)
    return ("causal_grpo", kind, agent)


def check_bank(agent: str) -> str:
    """Return `agent` if it names a bank, else raise ValueError listing the banks."""
    if agent not in PREFIXES:
        raise ValueError(f"unknown experience bank {agent!r}; banks are {', '.join(BANKS)}")
    return agent


def make_id(agent: str, number: int) -> str:
    """The experience id of the `number`-th experience of a bank, such as 'G1-007'."""
    return f"{PREFIXES[check_bank(agent)]}-{number:03d}"


def parse_id(experience_id: str) -> tuple[str, int] | None:
    """The (bank, number) an id belongs to, or None when it is not one of ours."""
    prefix, _, number = experience_id.strip().partition("-")
    if prefix not in BANK_OF_PREFIX or not number.isdigit():
        return None
    return BANK_OF_PREFIX[prefix], int(number)


def utcnow() -> str:
    """The current UTC time as an ISO-8601 string (the default clock of every write)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class Edit(BaseModel):
    """One change of an experience; `key` is the op key plus the op's position, so replays are no-ops."""

    key: str
    op: EditOp
    old: str | None = None
    new: str | None = None
    at: str


class Experience(BaseModel):
    """One experience: the specification's fields plus provenance, edit history and applied counter keys."""

    id: str
    content: str
    category: Category = "problem_solving_strategy"
    problem_type: str = "general"
    success_count: int = 0
    usage_count: int = 0
    run: str = ""
    problem_id: str = ""
    created_at: str = ""
    updated_at: str = ""
    deleted: bool = False
    history: list[Edit] = Field(default_factory=list)
    counted: list[str] = Field(default_factory=list, description="Op keys whose usage was already counted.")

    @property
    def number(self) -> int:
        """The id's sequence number (ids sort by it)."""
        parsed = parse_id(self.id)
        return parsed[1] if parsed else 0

    @property
    def usefulness(self) -> float:
        """Smoothed success rate (success + 1) / (usage + 2): 0.5 for an unused experience."""
        return (self.success_count + 1) / (self.usage_count + 2)

    def applied(self, key: str) -> bool:
        """Whether the edit with this key is already in the history."""
        return any(edit.key == key for edit in self.history)

    def to_spec(self) -> dict[str, Any]:
        """The specification's record shape (plus provenance) for `*_experiences.json` exports."""
        return {
            "id": self.id,
            "content": self.content,
            "category": self.category,
            "success_count": self.success_count,
            "usage_count": self.usage_count,
            "problem_type": self.problem_type,
            "run": self.run,
            "problem_id": self.problem_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
