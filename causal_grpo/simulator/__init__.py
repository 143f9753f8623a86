"""The bundled OpenAI-compatible simulator: a declared test double for the model.

It answers every request kind of causal-grpo with schema-valid output (model id `simulated`, header
`x-causal-grpo-simulator: 1`), with configurable latency, errors and malformed outputs. It measures
our machinery, never a model's skill.
"""

from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.runner import SimulatorServer, serve
from causal_grpo.simulator.server import create_app

__all__ = ["SimulatorConfig", "SimulatorServer", "create_app", "serve"]
