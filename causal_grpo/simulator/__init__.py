"""The bundled OpenAI-compatible simulator: a declared test double for the model."""
