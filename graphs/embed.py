"""The rollout subgraph for other LangGraph apps: one builder that returns it with the schemas it reads and writes.

The contract (docs/embedding.md):

- input (`RolloutInput`): `problem`, a `Problem` as JSON (`id`, `text`, `answer`, `dataset` and `domain`
  "math" | "physics" are required; `unit`, `topic` optional); `generator`, 1-3, whose prompt profile and
  bank the rollout uses; `index`, the 1-based rollout number (samples of one problem differ by it).
- output (`RolloutOutput`): `rollouts`, a list with exactly one `Rollout` (`answer`, `correct`, `r_total`
  and the other rewards, `scaffold` or `text`, `usage`, ...), under the reducer `operator.add`, so parallel
  branches (a `Send` per rollout) append to one list.
- context (`Context`): given as `context=` when the parent graph runs; the parent declares
  `context_schema=Context`. Without one, the defaults (the bundled simulator) apply.
- store: the parent's, if it has one: the rollout reads the generator's bank (and `shared`), never writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from causal_grpo.graphs.rollout import build_rollout_graph
from causal_grpo.graphs.state import Rollout, RolloutInput, RolloutOutput
from langgraph.graph.state import CompiledStateGraph

from causal_grpo.context import Context
from causal_grpo.problems import Problem


@dataclass(frozen=True)
class RolloutSubgraph:
    """The compiled rollout subgraph with its input, output and context schemas."""

    graph: CompiledStateGraph
    input_schema: type = RolloutInput
    output_schema: type = RolloutOutput
    context_schema: type = Context

    def input(self, problem: Problem | dict[str, Any], generator: int = 1, index: int = 1) -> RolloutInput:
        """The subgraph's input for one rollout of a problem (a `Problem`, or a dict it validates as one).

        Raises:
            pydantic.ValidationError: The dict is not a `Problem` (say, no `dataset` or `domain`).
            ValueError: The generator is not 1-3, or the index is below 1.
        """
        checked = problem if isinstance(problem, Problem) else Problem.model_validate(problem)
        if generator not in (1, 2, 3):
            raise ValueError(f"generator must be 1, 2 or 3, got {generator}")
        if index < 1:
            raise ValueError(f"index is the 1-based rollout number, got {index}")
        return {"problem": checked.model_dump(mode="json"), "generator": generator, "index": index}

    @staticmethod
    def rollout(output: dict[str, Any]) -> Rollout:
        """The one rollout a run of the subgraph returned."""
        (only,) = output["rollouts"]
        return only


def rollout_subgraph(name: str = "causal-grpo-rollout") -> RolloutSubgraph:
    """The rollout subgraph, compiled without a store or checkpointer of its own (it uses its parent's)."""
    return RolloutSubgraph(graph=build_rollout_graph().compile(name=name))
