"""The `causal-grpo` command line."""
