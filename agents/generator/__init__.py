"""The generator agent."""
