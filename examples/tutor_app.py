"""An outside LangGraph app that embeds causal-grpo's rollout subgraph in its own StateGraph.

The app ("tutor") has its own state: a question, its reference answer, and a verdict. It turns the
question into a `Problem`, fans out one rollout per sample to the mounted subgraph with `Send` (the
subgraph's `rollouts` key has the reducer `operator.add`, so the branches append to one list), and
grades the majority answer. Run it against the bundled simulator, or a real endpoint:

    .venv/bin/python examples/tutor_app.py
    .venv/bin/python examples/tutor_app.py --model gpt-4o-mini --base-url https://api.openai.com/v1

The simulator does not solve problems it does not ship: it answers this one with unrelated numbers
(and says so on stderr). The contract is in docs/embedding.md.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
from collections import Counter
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.store.memory import InMemoryStore
from langgraph.types import Send
from typing_extensions import TypedDict

from causal_grpo import Context, Problem, rollout_subgraph

ROLLOUT = rollout_subgraph()


class TutorState(TypedDict):
    """The app's own state; only `rollouts` is shared with the subgraph (same name, same reducer)."""

    question: str
    reference: str
    unit: str | None
    samples: int
    rollouts: Annotated[list[dict[str, Any]], operator.add]
    verdict: str


def fan_out(state: TutorState) -> list[Send]:
    """One branch per sample: the subgraph's input for generator 1, rollout k."""
    problem = Problem(
        id="tutor-1",
        text=state["question"],
        answer=state["reference"],
        unit=state["unit"],
        dataset="tutor",  # required: results and experiences are filed by dataset
        domain="physics" if state["unit"] else "math",  # required: it picks the answer comparison
    )
    return [Send("rollout", ROLLOUT.input(problem, generator=1, index=k)) for k in range(1, state["samples"] + 1)]


def grade(state: TutorState) -> dict[str, Any]:
    """The most common answer among the valid rollouts, and whether it matched the reference."""
    answers = Counter(r["answer"] for r in state["rollouts"] if r["valid"] and r["answer"] is not None)
    if not answers:
        return {"verdict": "no answer"}
    best, votes = answers.most_common(1)[0]
    right = any(r["correct"] for r in state["rollouts"] if r["answer"] == best)
    return {"verdict": f"{best} ({votes}/{len(state['rollouts'])} votes): {'right' if right else 'wrong'}"}


def build_app() -> StateGraph:
    """The tutor graph: START -> rollout x samples (the embedded subgraph) -> grade -> END."""
    builder = StateGraph(TutorState, context_schema=ROLLOUT.context_schema)
    builder.add_node("rollout", ROLLOUT.graph)
    builder.add_node(grade)
    builder.add_conditional_edges(START, fan_out, ["rollout"])
    builder.add_edge("rollout", "grade")
    builder.add_edge("grade", END)
    return builder


async def ask(question: str, reference: str, unit: str | None, samples: int, context: Context) -> TutorState:
    """Run the tutor once; the store holds the banks the rollouts read (empty here: no experiences)."""
    app = build_app().compile(store=InMemoryStore())
    start = {"question": question, "reference": reference, "unit": unit, "samples": samples, "rollouts": []}
    return await app.ainvoke(start, context=context)  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="simulated")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    context = Context(model=args.model, base_url=args.base_url, generators=[1])
    question = "A cart of mass 2 kg is pushed with a net force of 6 N. What is its acceleration?"
    state = asyncio.run(ask(question, "3", "m/s^2", args.samples, context))
    for r in state["rollouts"]:
        print(f"rollout {r['index']}: answer {r['answer']}, r_total {r['r_total']:.2f}")
    print(f"tutor: {state['verdict']}")


if __name__ == "__main__":  # scaffolds compute in worker processes, which re-import this file
    main()
