"""The extractor agent."""
