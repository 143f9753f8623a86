"""Prompts of the logic judge: a rubric for the soundness of a causal graph's reasoning.

Also the rubric for a free-text solution (the text solver), and how any agent shows a scaffold to a model: compact JSON without defaults, its `analysis` cut to its
end when long (the conclusion a model reached is at the end of its reasoning).
"""

from __future__ import annotations

import json
from typing import Any

from causal_grpo.scaffold import Scaffold

JUDGE_ANALYSIS_CHARS = 1500
"""How much of a scaffold's analysis the judge sees (its end)."""
ROLLOUT_ANALYSIS_CHARS = 600
"""How much of each rollout's analysis the extractor and the critic see (its end)."""

JUDGE_TEXT_CHARS = 4000
"""How much of a text rollout's reply the judge sees (its end)."""
ROLLOUT_TEXT_CHARS = 1500
"""How much of each text rollout's reply the extractor and the critic see (its end)."""

SYSTEM = """You grade the reasoning of a causal graph that claims to solve a problem. You do not know the reference answer
and must not try to solve the problem yourself beyond checking the graph.

Nodes are givens, derived nodes, unknowns (solved for from the equations), equations (lhs == rhs) and checks
(conditions that must hold). The graph may open with the solver's "analysis", its reasoning before the graph (only its
end when long): use it to follow the graph, but grade the graph.

Rubric (score in [0, 1]):
- 1.0: every derived node and equation follows from its parents by a correct law or identity, the givens match the
  problem, and the target is what the question asks for;
- 0.7: sound overall with a minor gap (an unstated assumption, a loose description);
- 0.4: a real flaw in one step, or the target answers a different question;
- 0.0: no coherent reasoning, or the graph restates a guessed answer or one worked out outside the graph.
Reply with the score and a one-line reason."""

USER = """Problem:
{question}

Causal graph (JSON):
{scaffold}

Computed values:
{values}
Computed answer: {answer}
{errors}"""


TEXT_SYSTEM = """You grade the reasoning of a free-text solution to a problem. You do not know the reference answer
and must not try to solve the problem yourself beyond checking the solution's steps (only its end when long).

Rubric (score in [0, 1]):
- 1.0: every step follows from the previous ones by a correct law or identity, the numbers match the problem, and
  the final answer is what the question asks for;
- 0.7: sound overall with a minor gap (an unstated assumption, a skipped but routine step);
- 0.4: a real flaw in one step, or the final answer answers a different question;
- 0.0: no coherent reasoning, or a final answer that does not follow from the steps (or none).
Reply with the score and a one-line reason."""

TEXT_USER = """Problem:
{question}

Solution (free text):
{text}

Final answer read from it: {answer}"""


def tail(text: str, limit: int) -> str:
    """`text`, or its last `limit` characters after a note of how much was cut."""
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} earlier characters cut] " + text[len(text) - limit :]


def scaffold_json(scaffold: Scaffold | dict[str, Any], analysis_chars: int) -> str:
    """The scaffold as a model reads it: compact JSON without default fields, its analysis cut to `analysis_chars`.

    A stored scaffold (a rollout's dict) that no longer validates is shown as it is.
    """
    if isinstance(scaffold, dict):
        try:
            scaffold = Scaffold.model_validate(scaffold)
        except ValueError:
            return json.dumps(scaffold, separators=(",", ":"))
    shown = scaffold.model_copy(update={"analysis": tail(scaffold.analysis, analysis_chars)})
    return shown.model_dump_json(exclude_defaults=True)
