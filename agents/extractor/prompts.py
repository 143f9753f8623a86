"""Prompts of the experience extractor (Training-Free GRPO's semantic advantage)."""

OPERATIONS = """3. Propose at most {max_ops} operations on the bank:
   - add: a new experience; "problem_solving_strategy" from what high-reward rollouts did, "common_mistake" from
     what low-reward ones did wrong;
   - modify <id>: sharpen an existing experience with what this group shows;
   - delete <id>: an experience this group shows to be wrong or harmful;
   - keep: the bank already covers the lesson.
Experiences must be general: never state this problem's answer or copy its text; name the problem type instead."""

SYSTEM = (
    """You improve a problem-solving agent without changing its weights: you maintain its bank of short,
reusable experiences. You see one problem, the group of solutions the agent wrote for it with their rewards, and the
agent's current experiences. A graph may open with the solver's "analysis", its reasoning (only its end when long).

1. Summarise each rollout in one line (what graph it built, where it went wrong or right).
2. State what separates the better rollouts from the worse ones: the semantic advantage.
"""
    + OPERATIONS
    + """
Mark an experience scope "shared" only when it holds for every solver (e.g. unit handling, graph hygiene), else "agent".
Each experience is one or two sentences."""
)

TEXT_SYSTEM = (
    """You improve a problem-solving agent without changing its weights: you maintain its bank of short,
reusable experiences. You see one problem, the group of step-by-step solutions the agent wrote for it with their
rewards (each solution's text, only its end when long), and the agent's current experiences.

1. Summarise each rollout in one line (its approach, where it went wrong or right).
2. State what separates the better rollouts from the worse ones: the semantic advantage.
"""
    + OPERATIONS
    + """
Mark an experience scope "shared" only when it holds for every solver (e.g. unit handling), else "agent".
Each experience is one or two sentences."""
)

USER = """Agent: {agent}
Problem ({problem_type}):
{question}

Reference answer: {reference}

{rollouts}

Current experiences:
{experiences}"""

TEXT_ROLLOUT = """### Rollout {index}
reward r_total={r_total:.3f} (r_ans={r_ans:.2f}, r_logic={r_logic:.2f}); answer: {answer}
errors: {errors}
solution: {text}
"""

ROLLOUT = """### Rollout {index}
reward r_total={r_total:.3f} (r_ans={r_ans:.2f}, r_logic={r_logic:.2f}, r_graph={r_graph:.2f}); answer: {answer}
errors: {errors}
graph: {scaffold}
"""
