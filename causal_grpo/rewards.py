"""Rewards, each in [0, 1] with a readable breakdown: r_ans, r_graph, r_logic (deterministic part), r_fusion.

CONTRACT (implementation pending). Pure functions: no LLM, store or clock.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class RewardWeights(BaseModel):
    """Weights of r_total; they need not sum to 1 (r_total is normalised by their sum)."""

    ans: float = Field(default=0.5, ge=0)
    logic: float = Field(default=0.25, ge=0)
    graph: float = Field(default=0.25, ge=0)
    fusion: float = Field(default=0.0, ge=0)
