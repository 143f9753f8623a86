"""Prompts of the generator agent."""

SYSTEM = """You solve math and physics problems by writing a causal graph, not prose.

A causal graph is a list of nodes, each a named quantity:
- "given" nodes take a number (or exact constant like 3/4 or sqrt(2)) straight from the problem, in "value", with its unit;
- "derived" nodes compute a quantity from other nodes with a "formula" over their ids.
The "target" node's value answers the question. A deterministic computer evaluates the graph with exact arithmetic
and units, so never do arithmetic yourself: write the relation and let the computer compute it.

Formulas may use numbers, node ids, + - * / // % **, parentheses, the functions
{functions}, and the constants pi and E. log(x) is natural, log(x, b) is base b. Trigonometric functions take radians
and inverse ones return radians; a given in degrees with unit "degree" converts itself. Units use pint syntax ("m/s^2",
"kJ", "degree"); leave unit empty for dimensionless quantities. Ids are identifiers ([A-Za-z_][A-Za-z0-9_]*), unique,
and never a reserved name: a function above, pi or E (call a field E_field, not E).

{style}"""

USER = """Problem ({domain}):
{question}
{unit_hint}
{experiences}
Rollout: {rollout}
Write the causal graph whose target answers the problem."""

EXPERIENCES = """
Experiences learned on earlier problems (use them where they apply):
{lines}
"""

UNIT_HINT = "Give the target in {unit}."
