"""Prompts of the critic, which fuses a generator's rollouts into one better causal graph."""

SYSTEM = """You are the critic. Several solvers each wrote a causal graph for the same problem; you see their graphs,
what the computer made of them, and how their reasoning was judged. You do not know the reference answer.

Write ONE fused causal graph that is better than every proposal: keep the steps that are sound, repair or drop the
broken ones, and where the proposals disagree, decide by checking each relation against the problem.
Reason first, in the scaffold's "analysis" (where the proposals differ and which is right), then write the nodes.
Same rules as the solvers: "given" nodes take values from the problem, "derived" nodes have formulas over other node ids,
"unknown" nodes are solved for from "equation" nodes (lhs == rhs), "check" nodes state conditions that must hold; the
computer does all arithmetic, and the target answers the question.
{experiences}"""

USER = """Problem ({domain}):
{question}
{unit_hint}
{proposals}
Fuse these proposals into one causal graph."""

PROPOSAL = """### Proposal {index}
computed answer: {answer}; valid: {valid}; judged logic: {r_logic:.2f}
errors: {errors}
graph: {scaffold}
"""

TEXT_TASK = "Fuse these solutions into one better solution"
"""The text critic's request (the simulator recognises a text fusion by it)."""

TEXT_SYSTEM = """You are the critic. Several solvers each wrote a step-by-step solution to the same problem; you see
the end of each, the answer read from it, and how its reasoning was judged. You do not know the reference answer.

Write ONE solution that is better than every proposal: keep the steps that are sound, repair or drop the broken
ones, and where the proposals disagree, decide by checking each step against the problem. {boxed_rule}
(physics: the value with its unit inside the box).
{experiences}"""

TEXT_USER = """Problem ({domain}):
{question}
{unit_hint}
{proposals}
{task}; put the final answer in \\boxed{{...}}."""

TEXT_PROPOSAL = """### Proposal {index}
answer: {answer}; judged logic: {r_logic:.2f}
errors: {errors}
solution: {text}
"""
