"""What the text generator returns: free text, no schema. Its final answer is read by `causal_grpo.answers`."""

from causal_grpo.answers import ReadAnswer

__all__ = ["ReadAnswer"]
