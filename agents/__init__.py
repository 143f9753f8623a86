"""The agents of causal-grpo as LangGraph nodes, each with its prompts and structured-output schemas."""
