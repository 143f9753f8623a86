"""Structured output of the critic."""

from pydantic import BaseModel, Field

from causal_grpo.scaffold import Scaffold


class FusedAnswer(BaseModel):
    """One scaffold fused from several proposals."""

    scaffold: Scaffold
    used_proposals: list[int] = Field(default_factory=list, description="1-based numbers of the proposals drawn on.")
    notes: str = Field(default="", max_length=600, description="What was kept, fixed or discarded, briefly.")
