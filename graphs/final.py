"""How a problem's final answer is chosen, without the reference.

Candidates are the valid fused results (weight 2) and the valid generator rollouts (weight 1).
Candidates whose answers agree pool their support, each adding weight x (r_graph + r_logic) / 2,
both of which are computed without the reference. A text rollout has no graph: it adds weight x its
r_logic (the judge's score), or weight alone when no judge scored it (a plain majority vote). Text
answers are compared as read (`answers.read_answer` normalises `\\frac{3}{4}` to 3/4, `6\\ \\mathrm{N}`
to 6 N). The answer with the most support wins; on a tie the one reached first (fused results before
rollouts, in generator order) wins.
"""

from __future__ import annotations

from causal_grpo.graphs.state import Rollout

FUSED_WEIGHT = 2.0


def quality(r: Rollout) -> float:
    """A candidate's reference-free quality: (r_graph + r_logic) / 2, or a text rollout's judged r_logic."""
    if r.get("solver") == "text":
        return r["r_logic"] if "judge" in r["rewards_detail"] and "score" in r["rewards_detail"]["judge"] else 1.0
    return (r["r_graph"] + r["r_logic"]) / 2


def choose_final(fused: list[Rollout], rollouts: list[Rollout]) -> Rollout | None:
    """The candidate carrying the best-supported answer, or None if nothing valid was produced."""
    support: dict[str, float] = {}
    first: dict[str, Rollout] = {}
    for weight, candidates in ((FUSED_WEIGHT, fused), (1.0, rollouts)):
        for r in candidates:
            if not r["valid"] or r["answer"] is None:
                continue
            key = r["answer"]
            support[key] = support.get(key, 0.0) + weight * quality(r)
            first.setdefault(key, r)
    if not support:
        return None
    best = max(support, key=lambda k: support[k])  # max keeps the first of equals
    return first[best]
