"""`causal-grpo train`: flags -> Context -> `atrain()` with live progress -> result.json."""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import click
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

if TYPE_CHECKING:  # the command line starts without the library's heavy imports
    from causal_grpo.graphs.driver import TrainingResult
    from causal_grpo.llm import Usage

INTERRUPTED = "interrupted; run the same command to resume"
_said = False


def _say_interrupted(line: bytes = (INTERRUPTED + "\n").encode()) -> None:
    """The one line, written to the descriptor: it must get out at any moment, module teardown included."""
    global _said
    if not _said:
        _said = True
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):  # closed or torn down: the line goes out all the same
            pass
        os.write(2, line)


def _quiet_teardown() -> None:
    """After the line, what the interrupt cut off only complains on the way out: aiosqlite's threads fail against
    the closed event loop, a half-built loop fails in `__del__`, a coroutine never started warns. What finished
    is committed already, so none of it is news to the user."""
    threading.excepthook = lambda args: None
    sys.unraisablehook = lambda unraisable: None
    warnings.simplefilter("ignore")


def _script() -> bool:
    """Running as the `causal-grpo` script; a host process (a test's CliRunner) keeps its own Ctrl-C and exit."""
    return Path(sys.argv[0]).name == "causal-grpo"


def _leave(code: int) -> NoReturn:
    """End the script without the interpreter's teardown: Ctrl-C there would find SIGINT reset to its default and
    kill the process silently (exit -2, no line), and daemon threads can crash it. What the teardown must do runs
    first: the atexit functions stop the sandbox's workers and release multiprocessing's semaphores. A Ctrl-C
    meanwhile says the line at once and exits 130 when they are done (cut short, the semaphores would leak and
    multiprocessing's resource tracker warn of them); a second one leaves at once."""
    interrupts = 0

    def interrupted(signum: int, frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        _say_interrupted()
        if interrupts > 1:
            os._exit(130)

    signal.signal(signal.SIGINT, interrupted)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(130 if interrupts else code)


def _resumable(command: Callable[..., Any]) -> Callable[..., Any]:
    """Ctrl-C anywhere in the command prints one line and exits 130: every finished step is checkpointed, so the
    same command resumes. After the command (shutdown) a Ctrl-C leaves at once, with the same line."""

    @functools.wraps(command)  # typer reads the options from the wrapped signature
    def run(*args: Any, **kwargs: Any) -> None:
        code = 0
        try:
            command(*args, **kwargs)
        # A CancelledError out of the command is a Ctrl-C too (nothing else cancels its main task): Python 3.11's
        # `asyncio.Runner` sets its count of Ctrl-Cs to 0 just after installing its SIGINT handler, so one taken in
        # between cancels the main task and leaves as CancelledError (a clean-clone `make test` saw it once).
        except (KeyboardInterrupt, asyncio.CancelledError):
            _say_interrupted()
            _quiet_teardown()
            code = 130
        except (typer.Exit, click.exceptions.Exit) as exc:
            code = exc.exit_code
        if _script():
            _leave(code)
        if code:
            raise typer.Exit(code)

    return run


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


def _tokens(usage: Usage) -> str:
    return f"{usage.calls} model calls, {usage.prompt_tokens}+{usage.completion_tokens} tokens"


def summary(result: TrainingResult, faults: str | None) -> str:
    """The run's closing line: what this start and the whole run did, and, when paused, how to go on."""
    from causal_grpo.progress import bank_line

    failed = sum(p.status == "failed" for p in result.problems)
    earlier = sum(p.status == "earlier" for p in result.problems)
    paused = [p for p in result.problems if p.status == "review"]
    answered = [p for p in result.problems if p.status != "failed"]
    # a paused problem answered (its calls are spent) and waits only at its bank update: it counts in both
    usage = result.usage
    for p in paused:
        usage = usage + p.usage
    now = result.usage_this_start
    right = sum(p.final_correct for p in answered)
    if paused:
        head = (
            f"paused for review after {result.seconds:.1f}s: {result.pending_review} bank operation(s) wait; "
            f"final answers right on {right}/{len(answered)} problem(s) answered so far"
        )
    else:
        head = f"done in {result.seconds:.1f}s: final accuracy {result.accuracy:.0%} ({right}/{len(answered)})"
    text = f"{head}, {_tokens(now)} this start"
    if usage != now:
        text += f", {_tokens(usage)} over the whole run"
    if earlier:
        text += f" ({earlier} problem(s) finished earlier, not rerun)"
    if result.acceptance:
        kept = sum(d.decision == "keep" for d in result.acceptance)
        trial = sum(d.usage.calls for d in result.acceptance)
        text += (
            f", minibatch acceptance: {kept} batch(es) kept, {len(result.acceptance) - kept} rolled back, "
            f"{trial} trial call(s)"
        )
    if banks := bank_line(result.bank_sizes):
        text += f", banks {banks}"
    if faults:
        text += f", faults: {faults}"
    if failed:
        text += f", {failed} problem(s) failed (run again to resume)"
    return text


@_resumable
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
    faults = fault_summary(result.faults)
    console.print(summary(result, faults), highlight=False)
    if faults:
        error_console().print(f"[yellow]warning:[/] the model endpoint's faults this start: {faults}")
    console.print(f"exports in {folder}")
    if any(p.status == "failed" for p in result.problems):
        raise typer.Exit(1)
    if result.pending_review:
        console.print(review_hint(result.pending_review, ctx.run, home, db), highlight=False)
        raise typer.Exit(3)
