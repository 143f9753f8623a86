"""The critic agent."""
