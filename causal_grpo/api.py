"""The single-call public API: `train()` a dataset, with the store and checkpointer injected or opened for you."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from causal_grpo.context import Context
from causal_grpo.graphs.driver import Driver, ProblemOutcome, TrainingResult
from causal_grpo.memory.acceptance import BatchDecision
from causal_grpo.memory.backends import POSTGRES_SCHEMES, UnsupportedBackend, open_backends, pool_size_for
from causal_grpo.problems import Problem, load_problems

STATE_FILE = "state.sqlite"


def run_dir(home: Path, run: str) -> Path:
    """Where a run keeps its state, results and exports."""
    return Path(home).expanduser() / "runs" / run


async def atrain(
    dataset: str | Path | list[Problem] = "full",
    *,
    context: Context | None = None,
    store: BaseStore | None = None,
    checkpointer: BaseCheckpointSaver | None = None,
    home: Path | None = None,
    db: str | None = None,
    fleet: bool | None = None,
    local_worker: bool = True,
    max_problems: int | None = None,
    start_problem: int = 1,
    epochs: int = 1,
    batch_size: int = 4,
    on_problem: Callable[[ProblemOutcome], None] | None = None,
    on_batch: Callable[[BatchDecision], None] | None = None,
) -> TrainingResult:
    """Train on a dataset; see `train`."""
    ctx = context or Context()
    problems = (
        dataset if isinstance(dataset, list) else load_problems(dataset, max_problems, start_problem=start_problem)
    )
    folder = run_dir(home, ctx.run) if home is not None else None
    if store is not None and checkpointer is not None:
        driver = Driver(
            ctx, store=store, checkpointer=checkpointer, run_dir=folder, on_problem=on_problem, on_batch=on_batch
        )
        return await driver.run(problems, epochs=epochs, batch_size=batch_size)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    postgres = db is not None and db.startswith(POSTGRES_SCHEMES)
    if fleet and not postgres:
        raise UnsupportedBackend("a fleet run needs a PostgreSQL database: db='postgresql://...'")
    if postgres if fleet is None else fleet:
        if ctx.review or ctx.accept_minibatch:
            raise UnsupportedBackend("review and minibatch acceptance run in one process: pass --no-fleet")
        from causal_grpo.fleet import fleet_train  # the postgres extra

        return await fleet_train(
            problems,
            context=ctx,
            db=db,
            run_dir=folder,
            epochs=epochs,
            batch_size=batch_size,
            local_worker=local_worker,
            on_problem=on_problem,
        )
    target = db or (folder / STATE_FILE if folder is not None else None)
    if target is None:
        raise ValueError("give both a store and a checkpointer, a database URL, or a home folder for the run")
    async with open_backends(target, pool_size=pool_size_for(ctx.concurrency)) as backends:
        driver = Driver(
            ctx,
            store=store or backends.store,
            checkpointer=checkpointer or backends.checkpointer,
            run_dir=folder,
            on_problem=on_problem,
            results=db if postgres else None,
            on_batch=on_batch,
        )
        return await driver.run(problems, epochs=epochs, batch_size=batch_size)


def train(dataset: str | Path | list[Problem] = "full", **kwargs: object) -> TrainingResult:
    """Run Training-Free GRPO over a dataset and return what happened.

    Args:
        dataset: A shipped dataset name, a path to a JSONL/JSON file, or a list of problems.
        **kwargs: As `atrain`: context, store, checkpointer, home, db (a `postgresql://` URL or SQLite
            path for the checkpoints and banks; default `<home>/runs/<run>/state.sqlite`; a PostgreSQL database
            also holds the result tables), fleet (queue the run's problems and bank updates as jobs in that
            PostgreSQL database for `causal-grpo worker`s; default: whenever `db` is PostgreSQL),
            local_worker (a fleet run also works in this process), max_problems, start_problem, epochs,
            batch_size, on_problem, on_batch (hears each batch's acceptance decision).
    """
    return asyncio.run(atrain(dataset, **kwargs))  # type: ignore[arg-type]
