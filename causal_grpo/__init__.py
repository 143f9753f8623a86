"""causal-grpo: Training-Free GRPO with causal-graph scaffolds, as a LangGraph plugin.

Everything another LangGraph app needs to embed our agents is importable from here. Names load on
first use, so `import causal_grpo.scaffold` (e.g. in the simulator) does not pull in LangGraph.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Computation": "causal_grpo.scaffold",
    "compute": "causal_grpo.scaffold",
    "Context": "causal_grpo.context",
    "GeneratorProfile": "causal_grpo.context",
    "ExperienceBank": "causal_grpo.memory.bank",
    "open_backends": "causal_grpo.memory.backends",
    "Problem": "causal_grpo.problems",
    "load_problems": "causal_grpo.problems",
    "RewardWeights": "causal_grpo.rewards",
    "Scaffold": "causal_grpo.scaffold",
    "TrainingResult": "causal_grpo.graphs.driver",
    "atrain": "causal_grpo.api",
    "train": "causal_grpo.api",
    "build_rollout_graph": "causal_grpo.graphs.rollout",
    "rollout_subgraph": "causal_grpo.graphs.embed",
    "RolloutSubgraph": "causal_grpo.graphs.embed",
    "build_training_graph": "causal_grpo.graphs.training",
    "generate": "causal_grpo.agents.generator.node",
    "evaluate": "causal_grpo.agents.judge.node",
    "extract": "causal_grpo.agents.extractor.node",
    "fuse": "causal_grpo.agents.critic.node",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'causal_grpo' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
