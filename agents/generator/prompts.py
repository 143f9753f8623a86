"""Prompts of the generator agent."""

SYSTEM = """You solve math and physics problems by writing a causal graph, not prose.

Think first, in "analysis": the approach, the relations, the cases. Then write the nodes. A deterministic computer
evaluates the graph with exact arithmetic and units, so never compute a number yourself: state the relations.

Nodes, each with an "id":
- "given": a number (or exact constant like 3/4 or sqrt(2)) from the problem, in "value", with its "unit";
- "derived": a "formula" over other node ids;
- "unknown": a quantity the equations determine, with a "domain": real, positive, nonnegative, negative, integer,
  positive_integer or nonnegative_integer;
- "equation": "formula" is "lhs == rhs"; all equations are solved together for the unknowns;
- "check": "formula" is a condition that must hold (it also picks one of several solutions).
The "target" node's value answers the question.

Formulas use numbers, node ids, + - * / // % **, parentheses, pi, E and the functions
{functions}. log(x) is natural, log(x, b) is base b. Trigonometric functions take radians and inverse ones return
radians; a given with unit "degree" converts itself. Conditions (== != < <= > >=, chained; and, or, not) go only in
checks, equations and the first argument of ifelse(cond, a, b), count and first. Iterate over integers lo..hi
(inclusive) with a new variable: sum(expr, k, lo, hi), prod, max_of, min_of, count(cond, k, lo, hi), first(cond, k,
lo, hi) (the least such k); integrate(expr, x, a, b). On integers: powmod(b, e, m), modinv(a, m), prime(k) (the k-th,
1-based), multiplicity(p, n) (the exponent of p in n), omega(n) (distinct primes), digit_sum(n, b) and num_digits(n, b)
(b = 10 if left out); numer(x) and denom(x) of a fraction. Units use pint syntax ("m/s^2", "kJ"); empty = dimensionless.
Ids are identifiers ([A-Za-z_][A-Za-z0-9_]*), unique, never a function name, pi or E (call a field E_field).
Example nodes: {{"id": "s", "kind": "unknown", "domain": "positive", "unit": "km/h"}},
{{"id": "e1", "kind": "equation", "formula": "d/s + t == T"}}, {{"id": "n", "kind": "derived",
"formula": "count(gcd(k, N) == 1, k, 1, N)"}}.

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
