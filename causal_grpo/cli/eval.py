"""`causal-grpo eval`: frozen banks, k samples per problem, Mean@k / Pass@k with 95% intervals, paired verdicts.

Two forms: `--experiences A --baseline B` (two scaffold arms, or text ones with `--solver text`), and
`--arm NAME=SOLVER:BANKS ...` (two or more arms, each a solver with its banks) compared `--against` one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from causal_grpo.api import run_dir
from causal_grpo.cli.common import HOME_OPTION, Split, fail, folded, model_line, output_console, parse_generators
from causal_grpo.context import Context
from causal_grpo.errors import CausalGrpoError
from causal_grpo.evaluation import (
    Arm,
    ArmReport,
    ArmSummary,
    EvalError,
    EvalResult,
    ProblemResult,
    evaluate_arms,
    evaluate_dataset,
    load_experiences,
    parse_arm,
    resolve_experiences,
    save_evaluation,
)
from causal_grpo.problems import Problem, load_problems
from causal_grpo.settings import resolve_context
from causal_grpo.stats import MIN_PROBLEMS, Interval, format_p, points

# a bootstrap over so few problems understates its spread, so its intervals are rough and it calls no verdict
ROUGH = f"rough intervals, and no verdict below {MIN_PROBLEMS} problems (docs/evaluation.md)"


async def _arm(spec: str, path: Path | None, solver: str = "scaffold") -> Arm:
    return Arm(source=spec, store=await load_experiences(path) if path else None, solver=solver)  # type: ignore[arg-type]


def _arms(specs: list[str], home: Path) -> tuple[dict[str, Arm], str | None]:
    """The `--arm` arms by name, their banks loaded, and the first run whose folder one of them reads."""
    parsed = [parse_arm(spec) for spec in specs]
    if len(parsed) < 2:
        raise EvalError("--arm: give two arms or more (e.g. --arm cot=text:none --arm graph=scaffold:none)")
    names = [a.name for a in parsed]
    if len(set(names)) < len(names):
        raise EvalError(f"--arm: each arm needs its own name, got {', '.join(names)}")
    paths = [resolve_experiences(a.banks, home) for a in parsed]
    seen: dict[tuple[str, Path | None], str] = {}
    for arm, path in zip(parsed, paths, strict=True):
        key = (arm.solver, path.resolve() if path else None)
        if key in seen:
            # the same solver with the same banks would measure one configuration twice
            raise EvalError(f"--arm {arm.name} and {seen[key]} are the same solver with the same banks")
        seen[key] = arm.name
    arms = {a.name: asyncio.run(_arm(a.banks, path, a.solver)) for a, path in zip(parsed, paths, strict=True)}
    return arms, next((run for path in paths if (run := _run_of(path, home))), None)


def _run_of(path: Path | None, home: Path) -> str | None:
    """The run whose folder the experiences are, if they are one (its results then go to that run)."""
    if path is not None and path.is_dir() and path.resolve().parent == (home / "runs").resolve():
        return path.name
    return None


def _share(interval: Interval) -> str:
    return f"{interval.estimate:.1%} [{interval.low:.1%}, {interval.high:.1%}]"


def _tokens(arm: ArmSummary) -> str:
    return f"{arm.calls} calls, {(arm.prompt_tokens + arm.completion_tokens) / 1000:.1f}k tokens"


def render_arms(result: EvalResult, console: Console) -> None:
    """One row per arm and dataset, one per comparison, and one verdict line per comparison."""
    k = result.samples
    table = Table(title=f"eval {result.eval_id}: {result.model}, k = {k}, 95% bootstrap intervals over problems")
    for column in ("dataset", "problems", "arm", "solver:banks", f"Mean@{k} [95% CI]", f"Pass@{k} [95% CI]", "cost"):
        table.add_column(column, no_wrap=column in ("dataset", "arm"))
    datasets = list(dict.fromkeys(f.dataset for arm in result.arms for f in arm.datasets))
    for dataset in datasets:
        for arm in result.arms:
            figures = next(f for f in arm.datasets if f.dataset == dataset)
            count = f"{figures.problems}" + (f" ({figures.failed} failed)" if figures.failed else "")
            if figures.mean_at_k is None or figures.pass_at_k is None:
                continue
            mark = " (against)" if arm.name == result.against else ""
            table.add_row(
                dataset,
                count,
                arm.name + mark,
                f"{arm.solver}:{arm.banks}",
                _share(figures.mean_at_k),
                _share(figures.pass_at_k),
                _tokens(arm) if dataset == datasets[0] else "",
            )
        for c in (c for c in result.comparisons if c.dataset == dataset):
            diff = c.difference
            table.add_row(
                dataset,
                str(c.problems),
                f"{c.arm} - {c.against}",
                "paired",
                f"{points(diff.estimate)} pts [{points(diff.low)}, {points(diff.high)}], {format_p(c.p_value)}",
                f"McNemar {format_p(c.mcnemar_p)}",
                "",
            )
        table.rows[-1].end_section = True
    console.print(folded(table))
    for dataset in datasets:
        problems = next(f.problems for f in result.arms[0].datasets if f.dataset == dataset)
        if 0 < problems < MIN_PROBLEMS:
            console.print(f"{dataset}: only {problems} problems: {ROUGH}", highlight=False)
        if problems == 0:
            console.print(f"{dataset}: no problem finished in every arm; nothing to report", highlight=False)
    for c in result.comparisons:
        console.print(f"{c.dataset}: Mean@{k} {c.verdict}", highlight=False)


def render(result: EvalResult, console: Console) -> None:
    """The per-dataset table and one verdict line per compared dataset."""
    k = result.samples
    table = Table(title=f"eval {result.eval_id}: {result.model}, k = {k}, 95% bootstrap intervals over problems")
    for column in ("dataset", "problems", "arm", "experiences", f"Mean@{k} [95% CI]", f"Pass@{k} [95% CI]"):
        table.add_column(column, no_wrap=column in ("dataset", "arm"))
    for report in result.reports:
        arms: list[tuple[str, ArmReport | None]] = [("experiences", report.experiences), ("baseline", report.baseline)]
        count = f"{report.problems}" + (f" ({report.failed} failed)" if report.failed else "")
        for name, arm in arms:
            if arm is not None:
                table.add_row(report.dataset, count, name, arm.source, _share(arm.mean_at_k), _share(arm.pass_at_k))
        if report.comparison is not None and report.mcnemar is not None:
            diff, p_value = report.comparison.difference, format_p(report.comparison.p_value)
            table.add_row(
                report.dataset,
                count,
                "difference",
                "paired",
                f"{points(diff.estimate)} pts [{points(diff.low)}, {points(diff.high)}], {p_value}",
                f"McNemar {format_p(report.mcnemar.p_value)} ({report.mcnemar.b} vs {report.mcnemar.c} discordant)",
                end_section=True,
            )
    console.print(folded(table))
    for report in result.reports:
        if 0 < report.problems < MIN_PROBLEMS:
            console.print(f"{report.dataset}: only {report.problems} problems: {ROUGH}", highlight=False)
        if report.comparison is not None:
            console.print(f"{report.dataset}: Mean@{k} {report.comparison.verdict}", highlight=False)
        elif report.experiences is None:
            console.print(f"{report.dataset}: no problem finished in every arm; nothing to report", highlight=False)


def eval_command(
    dataset: Annotated[str, typer.Option(help="full | aime2024 | aime2025 | physics | a JSONL/JSON file")] = "full",
    max_problems: Annotated[int | None, typer.Option(help="Stop after this many problems.")] = None,
    start_problem: Annotated[int, typer.Option(help="1-based problem to start from.")] = 1,
    split: Annotated[Split | None, typer.Option(help="Evaluate one part of a seeded train/test split.")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 0,
    test_fraction: Annotated[float, typer.Option(help="Share of the problems in the test part.")] = 0.2,
    experiences: Annotated[
        str, typer.Option(help="none | a run name | an exported <bank>_experiences.json or a folder of them")
    ] = "none",
    baseline: Annotated[str, typer.Option(help="Compare with: none (no experiences) | a run | a file/folder")] = "none",
    samples: Annotated[int, typer.Option(min=1, max=16, help="k: samples per problem (Mean@k, Pass@k).")] = 4,
    generators: Annotated[str | None, typer.Option(help="Generators voting per sample, e.g. 1,2.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Overrides every generator's temperature.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Model calls in flight.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name, or 'simulated' for the bundled simulator.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint.")] = None,
    judge: Annotated[
        bool | None, typer.Option("--judge/--no-judge", help="LLM judge in r_logic (weighs votes).")
    ] = None,
    max_experience_tokens: Annotated[int | None, typer.Option(help="Token budget for experiences.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (the simulator's, and the bootstrap's).")] = None,
    run: Annotated[
        str | None, typer.Option(help="Where results go (default: the --experiences run, else 'eval').")
    ] = None,
    home: HOME_OPTION = Path("~/.causal-grpo"),
    config: Annotated[Path | None, typer.Option(help="Optional config file (JSON or TOML).")] = None,
    json_out: Annotated[
        Path | None, typer.Option(help="Also write the result here (the run folder always gets eval-<id>.json).")
    ] = None,
    arm: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=SOLVER:BANKS, twice or more, e.g. --arm cot=text:none --arm graph+exp=scaffold:runB "
            "(SOLVER: scaffold | text; BANKS as --experiences takes them). Replaces --experiences/--baseline."
        ),
    ] = None,
    against: Annotated[str | None, typer.Option(help="With --arm: the arm the others are compared with.")] = None,
    solver: Annotated[str, typer.Option(help="Without --arm: the solver of both arms, scaffold | text.")] = "scaffold",
) -> None:
    """Evaluate with frozen experience banks (nothing is learned) against a baseline, with paired statistics."""
    home = home.expanduser()
    options = dict(locals())  # the flags as given, for the helpers both forms share
    console = output_console()
    if arm:
        _eval_arms(arm, against, options, console)
        return
    if against is not None:
        fail(console, "--against needs --arm")
    try:
        if solver not in ("scaffold", "text"):
            raise EvalError(f"--solver {solver!r}: expected scaffold or text")
        tested_path = resolve_experiences(experiences, home)
        baseline_path = resolve_experiences(baseline, home)
    except CausalGrpoError as exc:
        fail(console, str(exc))
    ctx, problems = _setup(options, run or _run_of(tested_path, home), console)
    try:
        tested = asyncio.run(_arm(experiences, tested_path, solver))
        # two arms without experiences would measure the same configuration twice
        compared = (
            None
            if tested_path is None and baseline_path is None
            else asyncio.run(_arm(baseline, baseline_path, solver))
        )
        arms = 1 + (compared is not None)
        console.print(
            f"eval: {len(problems)} problems x {samples} samples x {arms} arm(s), frozen banks"
            + ("" if compared else " (no comparison: neither arm has experiences)")
        )
        result = _with_progress(
            console,
            len(problems) * arms,
            lambda advance: evaluate_dataset(
                problems, context=ctx, experiences=tested, baseline=compared, samples=samples, on_problem=advance
            ),
        )
        written = save_evaluation(result, run_dir(home, ctx.run), json_out)
    except CausalGrpoError as exc:
        fail(console, str(exc))
    render(result, console)
    _written(result, written, json_out, home, ctx.run, console)


def _setup(options: dict[str, Any], run: str | None, console: Console) -> tuple[Context, list[Problem]]:
    """The run's Context from the flags, the problems, and the model line (which says the simulator is noise)."""
    flags = {
        "run": options["run"] or run or "eval",
        "model": options["model"],
        "base_url": options["base_url"],
        "generators": parse_generators(options["generators"]),
        "temperature": options["temperature"],
        "concurrency": options["concurrency"],
        "judge": options["judge"],
        "max_experience_tokens": options["max_experience_tokens"],
        "seed": options["seed"],
    }
    try:
        ctx = resolve_context(flags, options["config"])
        problems = load_problems(
            options["dataset"],
            options["max_problems"],
            start_problem=options["start_problem"],
            split=options["split"],
            test_fraction=options["test_fraction"],
            split_seed=options["split_seed"],
        )
    except CausalGrpoError as exc:
        fail(console, str(exc))
    noise = "; it does not learn from experiences, so any difference it shows is noise"
    console.print(model_line(ctx) + (noise if ctx.model == "simulated" else ""), highlight=False)
    return ctx, problems


def _with_progress(
    console: Console,
    total: int,
    start: Callable[[Callable[[str, ProblemResult], None]], Coroutine[Any, Any, EvalResult]],
) -> EvalResult:
    """Run an evaluation under a progress bar that advances with each finished (arm, problem)."""
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating", total=total)
        return asyncio.run(start(lambda _arm, _result: progress.advance(task)))


def _written(result: EvalResult, written: Path, json_out: Path | None, home: Path, run: str, console: Console) -> None:
    also = f" and {json_out}" if json_out is not None and json_out.resolve() != written.resolve() else ""
    console.print(
        f"{result.usage.calls} model calls in {result.seconds:.1f}s; results in {written}{also} "
        f"and {run_dir(home, run) / 'results.db'} (tables evaluations, arm_evaluations); "
        f"causal-grpo report --run {run} shows them",
        highlight=False,
    )


def _eval_arms(specs: list[str], against: str | None, options: dict[str, Any], console: Console) -> None:
    """`eval --arm ...`: every arm on the same problems and samples, each compared with `against`."""
    home: Path = options["home"]
    try:
        arms, arm_run = _arms(specs, home)
    except CausalGrpoError as exc:
        fail(console, str(exc))
    ctx, problems = _setup(options, arm_run, console)
    samples: int = options["samples"]
    try:
        console.print(f"eval: {len(problems)} problems x {samples} samples x {len(arms)} arms, frozen banks")
        result = _with_progress(
            console,
            len(problems) * len(arms),
            lambda advance: evaluate_arms(
                problems, context=ctx, arms=arms, against=against, samples=samples, on_problem=advance
            ),
        )
        written = save_evaluation(result, run_dir(home, ctx.run), options["json_out"])
    except CausalGrpoError as exc:
        fail(console, str(exc))
    render_arms(result, console)
    _written(result, written, options["json_out"], home, ctx.run, console)
