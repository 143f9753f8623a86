"""State schemas of the rollout subgraph and the per-problem training graph.

State is plain data (TypedDicts of JSON-able values) so a checkpoint written by one process loads
in another and in LangGraph Studio. Parallel `Send` branches write shared keys only through
`operator.add` reducers, each branch adding one narrow item.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired

from typing_extensions import TypedDict


class Rollout(TypedDict):
    """One scored solution: a generator's rollout or a critic's fused scaffold."""

    agent: str  # "generator_1".."generator_3" or "critic"
    generator: int  # the generator whose group this belongs to
    index: int  # 1-based rollout number within the group; 0 for a fused result
    scaffold: dict[str, Any] | None  # the Scaffold as JSON, None if the model gave none
    valid: bool  # the computer evaluated it and reached the target
    answer: str | None  # the computed answer with its unit
    exact: NotRequired[bool | None]  # the answer is exact (False: it went through a float; None: no answer)
    errors: list[str]  # why it is invalid (schema, graph or model errors)
    r_ans: float
    r_logic: float
    r_graph: float
    r_fusion: float | None
    r_total: float
    correct: bool  # r_ans == 1
    rewards_detail: dict[str, Any]  # each reward's readable breakdown
    experiences_seen: list[str]  # ids of the experiences put into its prompt
    usage: dict[str, int]  # prompt_tokens, completion_tokens, calls (scaffold + judge)
    mode: str | None  # structured-output mode used
    seconds: float
    solver: NotRequired[str]  # "text" for a free-text rollout; absent on a scaffold rollout
    text: NotRequired[str | None]  # a text rollout's reply, as the model wrote it


class Extraction(TypedDict):
    """The extractor's reading of one group and the bank operations it proposed."""

    agent: str  # the bank the group belongs to: "generator_N" or "critic"
    std: float
    triggered: bool  # the group filter passed: std(r_total) > tau, or (mixed) 0 < mean r_ans < 1
    summaries: list[str]
    advantage: str
    operations: list[dict[str, Any]]  # ExperienceOp as JSON
    error: str | None
    usage: dict[str, int]


class InputState(TypedDict):
    """What a caller gives: the problem (a `Problem` as JSON), optionally the epoch, and, for the
    critic stage, the rollouts an earlier generators stage produced."""

    problem: dict[str, Any]
    epoch: NotRequired[int]
    rollouts: NotRequired[Annotated[list[Rollout], operator.add]]


class TrainingState(InputState):
    """The per-problem training graph's state."""

    rollouts: Annotated[list[Rollout], operator.add]
    extractions: Annotated[list[Extraction], operator.add]
    fused: Annotated[list[Rollout], operator.add]
    final_answer: NotRequired[str | None]
    final_correct: NotRequired[bool]
    learned: NotRequired[dict[str, Any]]  # what `learn` applied to each bank


class OutputState(TypedDict):
    """What a finished problem returns."""

    problem: dict[str, Any]
    rollouts: list[Rollout]
    extractions: list[Extraction]
    fused: list[Rollout]
    final_answer: NotRequired[str | None]
    final_correct: NotRequired[bool]
    learned: NotRequired[dict[str, Any]]


class RolloutInput(TypedDict):
    """What the fan-out sends to one rollout branch."""

    problem: dict[str, Any]
    generator: int
    index: int


class RolloutState(RolloutInput):
    """One rollout branch's working state, from prompt to rewards."""

    experiences_seen: NotRequired[list[str]]
    scaffold: NotRequired[dict[str, Any] | None]
    text: NotRequired[str | None]  # the text solver's reply
    model_error: NotRequired[str | None]
    computation: NotRequired[dict[str, Any]]
    read: NotRequired[dict[str, Any]]  # the text solver's final answer as read (`answers.ReadAnswer`)
    usage: NotRequired[dict[str, int]]
    mode: NotRequired[str | None]
    started: NotRequired[float]
    rollouts: Annotated[list[Rollout], operator.add]


class RolloutOutput(TypedDict):
    """A rollout branch adds exactly one item to the parent's `rollouts`."""

    rollouts: Annotated[list[Rollout], operator.add]
