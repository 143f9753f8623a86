"""`causal-grpo eval`: frozen banks, k samples per problem, Mean@k / Pass@k with 95% intervals, a paired verdict."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from causal_grpo.api import run_dir
from causal_grpo.cli.common import HOME_OPTION, Split, fail, model_line, parse_generators
from causal_grpo.errors import CausalGrpoError
from causal_grpo.evaluation import (
    Arm,
    ArmReport,
    EvalResult,
    evaluate_dataset,
    load_experiences,
    resolve_experiences,
    save_evaluation,
)
from causal_grpo.problems import load_problems
from causal_grpo.settings import resolve_context
from causal_grpo.stats import Interval, format_p, points

# below this many problems a bootstrap over problems is too coarse to take its intervals at face value
FEW_PROBLEMS = 20


async def _arm(spec: str, path: Path | None) -> Arm:
    return Arm(source=spec, store=await load_experiences(path) if path else None)


def _run_of(path: Path | None, home: Path) -> str | None:
    """The run whose folder the experiences are, if they are one (its results then go to that run)."""
    if path is not None and path.is_dir() and path.resolve().parent == (home / "runs").resolve():
        return path.name
    return None


def _share(interval: Interval) -> str:
    return f"{interval.estimate:.1%} [{interval.low:.1%}, {interval.high:.1%}]"


def render(result: EvalResult, console: Console) -> None:
    """The per-dataset table and one verdict line per compared dataset."""
    k = result.samples
    table = Table(title=f"eval {result.eval_id}: {result.model}, k = {k}, 95% bootstrap intervals over problems")
    for column in ("dataset", "problems", "arm", "experiences", f"Mean@{k} [95% CI]", f"Pass@{k} [95% CI]"):
        table.add_column(column)
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
    console.print(table)
    for report in result.reports:
        if 0 < report.problems < FEW_PROBLEMS:
            console.print(f"{report.dataset}: only {report.problems} problems, rough intervals", highlight=False)
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
    json_out: Annotated[Path | None, typer.Option(help="Also write the result here (default: in the run).")] = None,
) -> None:
    """Evaluate with frozen experience banks (nothing is learned) against a baseline, with paired statistics."""
    console = Console()
    home = home.expanduser()
    try:
        tested_path = resolve_experiences(experiences, home)
        baseline_path = resolve_experiences(baseline, home)
    except CausalGrpoError as exc:
        fail(console, str(exc))
    flags = {
        "run": run or _run_of(tested_path, home) or "eval",
        "model": model,
        "base_url": base_url,
        "generators": parse_generators(generators),
        "temperature": temperature,
        "concurrency": concurrency,
        "judge": judge,
        "max_experience_tokens": max_experience_tokens,
        "seed": seed,
    }
    try:
        ctx = resolve_context(flags, config)
        problems = load_problems(
            dataset,
            max_problems,
            start_problem=start_problem,
            split=split,
            test_fraction=test_fraction,
            split_seed=split_seed,
        )
        tested = asyncio.run(_arm(experiences, tested_path))
        # two arms without experiences would measure the same configuration twice
        compared = None if tested_path is None and baseline_path is None else asyncio.run(_arm(baseline, baseline_path))
        noise = "; it does not learn from experiences, so any difference it shows is noise"
        console.print(model_line(ctx) + (noise if ctx.model == "simulated" else ""), highlight=False)
        arms = 1 + (compared is not None)
        console.print(
            f"eval: {len(problems)} problems x {samples} samples x {arms} arm(s), frozen banks"
            + ("" if compared else " (no comparison: neither arm has experiences)")
        )
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("evaluating", total=len(problems) * arms)
            result = asyncio.run(
                evaluate_dataset(
                    problems,
                    context=ctx,
                    experiences=tested,
                    baseline=compared,
                    samples=samples,
                    on_problem=lambda _arm, _result: progress.advance(task),
                )
            )
        written = save_evaluation(result, run_dir(home, ctx.run), json_out)
    except CausalGrpoError as exc:
        fail(console, str(exc))
    render(result, console)
    console.print(
        f"{result.usage.calls} model calls in {result.seconds:.1f}s; results in {written} "
        f"and {run_dir(home, ctx.run) / 'results.db'} (table evaluations)",
        highlight=False,
    )
