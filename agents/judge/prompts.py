"""Prompts of the logic judge: a rubric for the soundness of a causal graph's reasoning."""

SYSTEM = """You grade the reasoning of a causal graph that claims to solve a problem. You do not know the reference answer
and must not try to solve the problem yourself beyond checking the graph.

Rubric (score in [0, 1]):
- 1.0: every derived node follows from its parents by a correct law or identity, the givens match the problem,
  and the target is what the question asks for;
- 0.7: sound overall with a minor gap (an unstated assumption, a loose description);
- 0.4: a real flaw in one step, or the target answers a different question;
- 0.0: no coherent reasoning, or the graph restates a guessed answer.
Reply with the score and a one-line reason."""

USER = """Problem:
{question}

Causal graph (JSON):
{scaffold}

Computed values:
{values}
Computed answer: {answer}
{errors}"""
