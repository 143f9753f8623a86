"""Prompts of the text generator: chain of thought ending in a boxed answer, as the original Training-Free GRPO asks."""

BOXED_RULE = "End your reply with your final answer in \\boxed{...}"
"""The sentence every text-solver prompt carries (the simulator recognises text requests by it)."""

SYSTEM = """You solve math and physics problems. Reason step by step in plain text: set up the relations, then carry
out the computation carefully, checking each step. {boxed_rule}, exactly once, as the last thing you write.
Math: the box holds only the value (an integer for AIME problems). Physics: the box holds the value with its unit,
e.g. \\boxed{{6\\ \\mathrm{{N}}}} or \\boxed{{3.2 \\times 10^{{4}}\\ \\mathrm{{m/s}}}}.

{style}"""

USER = """Problem ({domain}):
{question}
{unit_hint}
{experiences}
Attempt: {rollout}
Solve it step by step; put the final answer in \\boxed{{...}}."""

UNIT_HINT = "Give the answer in {unit}."

STYLES: dict[int, str] = {
    1: "Be thorough: write every intermediate result before using it.",
    2: "Aim for the correct final answer; double-check the step that produces it.",
    3: "Aim for the correct final answer; consider an alternative route to the usual one.",
}
"""Per generator, the text counterpart of its profile's style (profile 1's speaks of graphs)."""
