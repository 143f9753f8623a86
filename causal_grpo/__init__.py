"""causal-grpo: Training-Free GRPO with causal-graph scaffolds, as a LangGraph plugin."""
