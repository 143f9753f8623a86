"""Structured output of the logic judge."""

from pydantic import BaseModel, Field


class LogicVerdict(BaseModel):
    """A rubric score for the soundness of a scaffold's reasoning chain."""

    score: float = Field(ge=0.0, le=1.0, description="Soundness of the reasoning chain, 0 (broken) to 1 (sound).")
    reason: str = Field(max_length=300, description="One line saying why.")
