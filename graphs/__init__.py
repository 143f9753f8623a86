"""State schemas, the per-problem training graph and the run driver."""
