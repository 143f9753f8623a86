"""`causal-grpo scaffold check`: compute a scaffold file and show its values, answer and rewards.

With a reference it shows what the training loop would pay: r_ans, and the deterministic half of r_logic
(the judge's half needs a model).

Exit codes: 0 the graph is valid, 1 it is invalid (its errors are printed), 2 a usage error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from causal_grpo.cli.common import fail
from causal_grpo.errors import DatasetError
from causal_grpo.problems import Problem, load_problems
from causal_grpo.rewards import RewardPart, answer_reward, graph_reward, logic_checks
from causal_grpo.scaffold import Computation, Scaffold, shared_sandbox, units

app = typer.Typer(no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Check causal-graph scaffolds without a model."""


MAX_SCAFFOLD_BYTES = 1024 * 1024
_LEADING_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:\s*/\s*\d+)?)\s*(.*)")


def split_reference(text: str) -> tuple[str, str]:
    """Split a reference such as '6 N', '9.8 m/s^2', '204' or '3/4' into (value, unit).

    The unit is what follows a leading number when pint understands it; anything else (a LaTeX
    expression, say) is a math reference without a unit.
    """
    match = _LEADING_NUMBER.fullmatch(text)
    if not match or not match.group(2):
        return text.strip(), ""
    value, unit = match.group(1).replace(" ", ""), match.group(2).strip()
    if unit == "pi":  # pint knows pi as a unit, but '2 pi' is a math answer
        return text.strip(), ""
    try:
        units.registry().parse_units(unit)
    except Exception:  # pint raises assorted errors for text that is not a unit
        return text.strip(), ""
    return value, unit


def _reference_problem(answer: str | None, problem_id: str | None, console: Console) -> Problem | None:
    if answer is not None and problem_id is not None:
        fail(console, "give --answer or --problem-id, not both", code=2)
    if problem_id is not None:
        try:
            found = next((p for p in load_problems("full") if p.id == problem_id), None)
        except DatasetError as e:
            fail(console, str(e), code=2)
        if found is None:
            fail(console, f"no shipped problem has id {problem_id!r} (ids look like aime2024_001, physics_009)", code=2)
        return found
    if answer is None:
        return None
    value, unit = split_reference(answer)
    if not value:
        fail(console, "--answer is empty", code=2)
    domain = "physics" if unit else "math"
    return Problem(id="cli", text="", answer=value, unit=unit or None, dataset="cli", domain=domain)


def _read_scaffold(path: Path, console: Console) -> Any:
    if not path.is_file():
        fail(console, f"{path}: no such file", code=2)
    if path.stat().st_size > MAX_SCAFFOLD_BYTES:
        fail(console, f"{path}: larger than {MAX_SCAFFOLD_BYTES // 1024} KiB", code=2)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        fail(console, f"{path}: not UTF-8 text", code=2)
    except json.JSONDecodeError as e:
        fail(console, f"{path}: not JSON (line {e.lineno}, column {e.colno}: {e.msg})", code=2)


def _as_scaffold(data: Any) -> Scaffold | None:
    try:
        return Scaffold.model_validate(data)
    except ValidationError:
        return None


@app.command()
def check(
    file: Annotated[Path, typer.Argument(help="A scaffold as JSON (the generator's output format).")],
    answer: Annotated[
        str | None, typer.Option(help="Reference answer to score against, e.g. '6 N', '204', '3/4'.")
    ] = None,
    problem_id: Annotated[
        str | None, typer.Option(help="Score against this shipped problem's reference, e.g. physics_009.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Compute a scaffold file: node values, the answer, r_graph and (with a reference) r_ans and r_logic's checks."""
    errors = Console(stderr=True, soft_wrap=True)
    problem = _reference_problem(answer, problem_id, errors)
    data = _read_scaffold(file, errors)
    computation = shared_sandbox().compute(data)
    scaffold = _as_scaffold(data)
    analysis = scaffold.analysis if scaffold else ""
    r_graph = graph_reward(scaffold, computation)
    r_ans = answer_reward(computation.answer, problem) if problem is not None else None
    checks = logic_checks(scaffold, computation, problem) if problem is not None else None
    if json_out:
        typer.echo(json.dumps({"analysis": analysis, **_report(computation, r_graph, r_ans, checks)}, indent=2))
    else:
        console = Console(soft_wrap=True)
        if analysis:
            console.print(f"analysis: {escape(analysis)}", highlight=False)
        _print(console, computation, r_graph, r_ans, checks)
    raise typer.Exit(0 if computation.valid else 1)


def _report(
    computation: Computation, r_graph: RewardPart, r_ans: RewardPart | None, checks: RewardPart | None
) -> dict[str, Any]:
    return {
        "valid": computation.valid,
        "errors": [e.model_dump() for e in computation.errors],
        "values": computation.values,
        "numeric": computation.numeric,
        "units": computation.units,
        "answer": computation.answer.model_dump() if computation.answer else None,
        "exact": computation.answer.is_exact if computation.answer else None,
        "r_graph": r_graph.model_dump(),
        "r_ans": r_ans.model_dump() if r_ans else None,
        "r_logic_checks": checks.model_dump() if checks else None,
    }


def _print(
    console: Console,
    computation: Computation,
    r_graph: RewardPart,
    r_ans: RewardPart | None,
    checks: RewardPart | None,
) -> None:
    table = Table(title="Nodes")
    for column in ("node", "value", "numeric", "unit"):
        table.add_column(column)
    for node in computation.order:
        numeric = computation.numeric.get(node)
        table.add_row(
            escape(node),
            escape(computation.values.get(node, "")),
            "" if numeric is None else f"{numeric:.6g}",
            escape(computation.units.get(node, "")),
        )
    console.print(table)
    for error in computation.errors:
        where = f" ({error.node})" if error.node else ""
        console.print(f"[red]{error.kind}[/]{escape(where)}: {escape(error.message)}", highlight=False)
    if computation.answer is None:
        console.print("answer: [red]none[/]", highlight=False)
    else:
        exactness = "exact" if computation.answer.is_exact else "not exact: it went through a float"
        console.print(f"answer: {escape(str(computation.answer))} ({exactness})", highlight=False)
    graph = Table(title=f"r_graph = {r_graph.score:.3f}")
    graph.add_column("component")
    graph.add_column("value", justify="right")
    for name, value in r_graph.breakdown.items():
        graph.add_row(name, f"{value:.2f}")
    console.print(graph)
    console.print(f"r_graph: {escape(r_graph.detail)}", highlight=False)
    if r_ans is not None:
        console.print(f"r_ans = {r_ans.score:.0f}: {escape(r_ans.detail)}", highlight=False)
    if checks is not None:
        parts = ", ".join(f"{name} {value:.2f}" for name, value in checks.breakdown.items())
        console.print(
            f"r_logic checks = {checks.score:.2f} ({parts}; the judge's half needs a model): {escape(checks.detail)}",
            highlight=False,
        )
    console.print("[green]valid[/]" if computation.valid else "[red]invalid[/]")
