"""`causal-grpo worker`: work on the job queue of a PostgreSQL database until stopped (SIGINT/SIGTERM).

A stop signal stops the worker wherever it is, start-up included; its running jobs go back to the queue
(`causal_grpo.fleet.run_worker`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from causal_grpo.cli.common import fail
from causal_grpo.errors import CausalGrpoError
from causal_grpo.memory.backends import POSTGRES_SCHEMES, redact


def worker(
    db: Annotated[str, typer.Option(envvar="CAUSAL_GRPO_DB", help="The fleet's database: a postgresql:// URL.")],
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs (problems) this worker runs at once.")] = 4,
) -> None:
    """Run the problems and bank updates that `causal-grpo train --db URL --fleet` queues; any number, anywhere."""
    from causal_grpo.fleet import run_worker

    console = Console()
    if not db.startswith(POSTGRES_SCHEMES):
        fail(console, f"a worker needs a PostgreSQL database, not {redact(db)!r}")
    console.print(f"worker on {redact(db)}, {concurrency} job(s) at once; the API key comes from this environment")
    try:
        asyncio.run(run_worker(db, concurrency=concurrency))
    except CausalGrpoError as exc:
        fail(console, str(exc))
    except KeyboardInterrupt:  # before the worker's own handlers were in place
        raise typer.Exit(130) from None
    console.print("worker stopped")
