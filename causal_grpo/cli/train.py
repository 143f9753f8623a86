"""`causal-grpo train`: flags -> Context -> `atrain()` with live progress -> result.json."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from causal_grpo.cli.common import (
    DB_OPTION,
    HOME_OPTION,
    Split,
    error_console,
    fail,
    model_line,
    parse_generators,
)
from causal_grpo.cli.review import parse_acceptance, review_hint
from causal_grpo.errors import CausalGrpoError
from causal_grpo.problems import load_problems


@contextmanager
def _logs(verbose: bool) -> Iterator[None]:
    """With --verbose: the `causal_grpo` loggers (prompts, replies, each retry with its cause) to stderr."""
    if not verbose:
        yield
        return
    logger = logging.getLogger("causal_grpo")
    handler = RichHandler(console=error_console(), show_path=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def train(
    dataset: Annotated[str, typer.Option(help="full | aime2024 | aime2025 | physics | a JSONL/JSON file")] = "full",
    max_problems: Annotated[int | None, typer.Option(help="Stop after this many problems.")] = None,
    start_problem: Annotated[int, typer.Option(help="1-based problem to start from.")] = 1,
    split: Annotated[Split | None, typer.Option(help="Train on one part of a seeded train/test split.")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/test split (as in eval).")] = 0,
    test_fraction: Annotated[float, typer.Option(help="Share of the problems in the test part.")] = 0.2,
    rollouts: Annotated[int | None, typer.Option(help="Rollouts per generator per problem.")] = None,
    generators: Annotated[str | None, typer.Option(help="Which generators run, e.g. 1,2.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Overrides every generator's temperature.")] = None,
    tau: Annotated[float | None, typer.Option(help="Extract when std(r_total) of a group exceeds tau.")] = None,
    solver: Annotated[
        str | None, typer.Option(help="scaffold (causal graphs) | text (chain of thought ending in \\boxed{...}).")
    ] = None,
    group_filter: Annotated[
        str | None, typer.Option(help="std (std(r_total) > tau) | mixed (0 < mean r_ans < 1, the original rule).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Model calls in flight, all agents together.")] = None,
    batch_size: Annotated[int, typer.Option(help="Problems in flight; their bank updates apply after each batch.")] = 4,
    epochs: Annotated[int, typer.Option(help="Passes over the dataset; banks carry over.")] = 1,
    model: Annotated[str | None, typer.Option(help="Model name, or 'simulated' for the bundled simulator.")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    ] = None,
    judge: Annotated[bool | None, typer.Option("--judge/--no-judge", help="LLM judge in r_logic.")] = None,
    fuse: Annotated[bool | None, typer.Option("--fuse/--no-fuse", help="Run the critic's fusion.")] = None,
    stage: Annotated[
        str | None, typer.Option(help="all | generators | critic (fuses the rollouts a generators run stored).")
    ] = None,
    max_experience_tokens: Annotated[int | None, typer.Option(help="Token budget for experiences.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (the simulator's, and ours).")] = None,
    run: Annotated[str, typer.Option(help="Run name: its folder, threads and banks.")] = "default",
    home: HOME_OPTION = Path("~/.causal-grpo"),
    db: DB_OPTION = None,
    fleet: Annotated[
        bool | None,
        typer.Option(
            "--fleet/--no-fleet",
            help="Queue problems and bank updates as jobs for `causal-grpo worker`s (default: with a PostgreSQL --db).",
        ),
    ] = None,
    local_worker: Annotated[bool, typer.Option(help="In a fleet run, also work in this process.")] = True,
    config: Annotated[Path | None, typer.Option(help="Optional config file (JSON or TOML).")] = None,
    verbose: Annotated[bool, typer.Option(help="Log prompts, responses and each retry with its cause.")] = False,
    review: Annotated[
        bool, typer.Option("--review", help="Pause each bank update for `causal-grpo review`; exits 3 while some wait.")
    ] = False,
    accept_updates: Annotated[
        str | None,
        typer.Option(help="minibatch:K: keep a batch's bank edits only if K seen problems do not get worse."),
    ] = None,
    accept_margin: Annotated[
        float | None, typer.Option(help="With --accept-updates: how much lower the mean r_total may be.")
    ] = None,
) -> None:
    """Train: generators -> compute -> evaluate -> extract -> fuse, one checkpointed thread per problem."""
    # the library (LangGraph, LangChain, the model client) loads only when a run starts, not for `--help`
    from causal_grpo.api import atrain, run_dir
    from causal_grpo.exports import atomic_write
    from causal_grpo.progress import ProgressReporter, fault_summary
    from causal_grpo.settings import resolve_context

    console = Console(soft_wrap=True)  # lines stay whole in a pipe or a log (a non-terminal is 80 wide)
    flags = {
        "run": run,
        "model": model,
        "base_url": base_url,
        "rollouts": rollouts,
        "generators": parse_generators(generators),
        "temperature": temperature,
        "tau": tau,
        "solver": solver,
        "group_filter": group_filter,
        "concurrency": concurrency,
        "judge": judge,
        "fuse": fuse,
        "stage": stage,
        "max_experience_tokens": max_experience_tokens,
        "seed": seed,
        "verbose": verbose or None,
        "review": review or None,
        "accept_minibatch": parse_acceptance(accept_updates),
        "accept_margin": accept_margin,
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
        folder = run_dir(home, ctx.run)
        console.print(model_line(ctx))
        console.print(f"run {ctx.run}: {len(problems)} problems x {epochs} epoch(s), folder {folder}")
        reporter = ProgressReporter(
            len(problems) * epochs,
            console=console,
            prices=(ctx.price_prompt_per_m, ctx.price_completion_per_m),
        )
        with reporter, _logs(verbose):
            result = asyncio.run(
                atrain(
                    problems,
                    context=ctx,
                    home=home,
                    db=db,
                    fleet=fleet,
                    local_worker=local_worker,
                    epochs=epochs,
                    batch_size=batch_size,
                    on_problem=reporter,
                    on_batch=lambda decision: console.print(decision.line(), highlight=False, markup=False),
                )
            )
    except CausalGrpoError as exc:
        fail(console, str(exc))
    atomic_write(folder / "result.json", json.dumps(result.to_dict(), indent=1) + "\n")
    failed = sum(p.status == "failed" for p in result.problems)
    earlier = sum(p.status == "earlier" for p in result.problems)
    usage, now = result.usage, result.usage_this_start
    faults = fault_summary(result.faults)
    console.print(
        f"done in {result.seconds:.1f}s: final accuracy {result.accuracy:.0%}, "
        f"{usage.calls} model calls, {usage.prompt_tokens}+{usage.completion_tokens} tokens"
        + (
            f" over the whole run ({now.calls} calls, {now.prompt_tokens}+{now.completion_tokens} tokens this start"
            + (f"; {earlier} problem(s) finished earlier, not rerun" if earlier else "")
            + ")"
            if usage != now
            else ""
        )
        + f", banks {result.bank_sizes}"
        + (f", faults: {faults}" if faults else "")
        + (f", {failed} problem(s) failed (run again to resume)" if failed else ""),
        highlight=False,
    )
    if faults:
        error_console().print(f"[yellow]warning:[/] the model endpoint's faults this start: {faults}")
    console.print(f"exports in {folder}")
    if failed:
        raise typer.Exit(1)
    if result.pending_review:
        console.print(review_hint(result.pending_review, ctx.run, home, db), highlight=False)
        raise typer.Exit(3)
