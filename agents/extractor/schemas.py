"""Structured output of the experience extractor."""

from typing import Literal

from pydantic import BaseModel, Field

Category = Literal["problem_solving_strategy", "common_mistake"]


class ExperienceOp(BaseModel):
    """One proposed change to an experience bank."""

    op: Literal["add", "modify", "delete", "keep"]
    id: str | None = Field(default=None, description="The experience to modify, delete or keep; none for add.")
    content: str | None = Field(default=None, max_length=400, description="The experience text, for add and modify.")
    category: Category = "problem_solving_strategy"
    problem_type: str = Field(default="general", max_length=64)
    scope: Literal["agent", "shared"] = Field(
        default="agent", description="'shared' when the lesson holds for every agent, not just this one."
    )


class ExperienceOps(BaseModel):
    """The extractor's reading of a group: per-rollout summaries, the semantic advantage, bank operations."""

    summaries: list[str] = Field(default_factory=list, description="One line per rollout, in order.")
    advantage: str = Field(default="", max_length=800, description="What separates the better rollouts from the worse.")
    operations: list[ExperienceOp] = Field(default_factory=list, max_length=8)
