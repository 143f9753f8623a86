"""The text generator agent: plain step-by-step reasoning ending in \\boxed{...} (the text solver)."""
