"""Review the bank operations a `train --review` run paused on: list them, approve, edit or reject them.

Decisions are written to the run's store (all of one call, or none) before anything resumes; running the same
`train` command again resumes every problem whose operations are all decided, with `Command(resume=...)`.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from causal_grpo.cli.common import DB_OPTION, HOME_OPTION, fail, folded, output_console
from causal_grpo.errors import CausalGrpoError

if TYPE_CHECKING:  # the command line starts without the library's heavy imports
    from causal_grpo.memory.review import ReviewRecord

CONTENT_WIDTH = 70


def parse_acceptance(text: str | None) -> int | None:
    """K from `minibatch:K` (the `--accept-updates` flag); None when the flag was not given."""
    if text is None:
        return None
    kind, _, number = text.partition(":")
    if kind != "minibatch" or not number.isdigit() or int(number) < 1:
        raise typer.BadParameter(f"use minibatch:K with K >= 1, not {text!r}")
    return int(number)


def review_hint(pending: int, run: str, home: Path, db: str | None) -> str:
    """The line `train` ends with while operations wait: how many, and the command that reviews them."""
    where = f"--db {shlex.quote(db)}" if db else f"--home {shlex.quote(str(home))}"
    return (
        f"{pending} bank operation(s) wait for review: causal-grpo review --run {shlex.quote(run)} {where} "
        "(then run the same train command again)"
    )


def _short(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= CONTENT_WIDTH else text[: CONTENT_WIDTH - 1] + "…"


def _table(found: list[ReviewRecord]) -> Table:
    table = Table(title=f"{sum(r.decision is None for r in found)} operation(s) wait for review", title_justify="left")
    for column in ("id", "agent", "op", "target", "category", "rewards", "content", "advantage", "decision"):
        table.add_column(column, no_wrap=column in ("id", "op", "target"))
    for r in found:
        op = r.operation
        decision = "-" if r.decision is None else r.decision.decision
        if r.decision is not None and r.decision.decision == "edit":
            decision += f": {_short(r.decision.content)}"
        rewards = " ".join(f"{x:.2f}" for x in op.rewards)
        table.add_row(
            op.id,
            op.agent + (" (shared)" if op.scope == "shared" and op.op == "add" else ""),
            op.op,
            op.experience_id or "new",
            op.category,
            rewards,
            Text(_short(op.content)),
            Text(_short(op.advantage)),
            Text(decision),
        )
    return table


def review(
    ids: Annotated[list[str] | None, typer.Argument(metavar="[ID]...", help="Operation ids, as listed.")] = None,
    run: Annotated[str, typer.Option(help="Run name, as in `train`.")] = "default",
    home: HOME_OPTION = Path("~/.causal-grpo"),
    db: DB_OPTION = None,
    approve: Annotated[bool, typer.Option("--approve", help="Approve the operations named.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Reject the operations named.")] = False,
    edit: Annotated[bool, typer.Option("--edit", help="Replace the content of the one operation named.")] = False,
    content: Annotated[str | None, typer.Option(help="The new content, with --edit.")] = None,
    approve_all: Annotated[bool, typer.Option("--approve-all", help="Approve every waiting operation.")] = False,
    reject_all: Annotated[bool, typer.Option("--reject-all", help="Reject every waiting operation.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="List decided operations too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for machines.")] = False,
) -> None:
    """Review the bank operations a `train --review` run paused on: list them, approve, edit or reject them."""
    actions = [a for a, on in (("approve", approve), ("reject", reject), ("edit", edit)) if on]
    actions += [a for a, on in (("approve", approve_all), ("reject", reject_all)) if on]
    if len(actions) > 1:
        raise typer.BadParameter("take one kind of decision per call")
    if (approve_all or reject_all) and ids:
        raise typer.BadParameter("--approve-all and --reject-all take no ids")
    if (approve or reject or edit) and not ids:
        raise typer.BadParameter("name the operations to decide (ids as `causal-grpo review` lists them)")
    if edit and (len(ids or []) != 1 or not content):
        raise typer.BadParameter("--edit takes one id and --content TEXT")
    if ids and not actions:
        raise typer.BadParameter("say what to do with the ids: --approve, --reject or --edit")
    console = output_console(highlight=False, soft_wrap=as_json)
    try:
        asyncio.run(_review(console, run, home, db, actions[0] if actions else None, ids, content, show_all, as_json))
    except CausalGrpoError as exc:
        fail(console, str(exc))


async def _review(
    console: Console,
    run: str,
    home: Path,
    db: str | None,
    action: str | None,
    ids: list[str] | None,
    content: str | None,
    show_all: bool,
    as_json: bool,
) -> None:
    from causal_grpo.api import STATE_FILE, run_dir
    from causal_grpo.memory.backends import open_backends
    from causal_grpo.memory.review import ReviewError, decide, records

    path = run_dir(home, run) / STATE_FILE
    if db is None and not path.exists():
        raise ReviewError(f"no run {run!r} in {Path(home).expanduser()} (no {path})")
    async with open_backends(db or path) as backends:
        found = await records(backends.store, run)
        if action is None:
            shown = [r for r in found if show_all or r.decision is None]
            if as_json:
                typer.echo(json.dumps([r.model_dump(mode="json") for r in shown], ensure_ascii=False, indent=1))
            elif shown:
                console.print(folded(_table(shown)))
            else:
                console.print(f"run {run}: no operation waits for review")
            return
        chosen = ids or [r.operation.id for r in found if r.decision is None]
        if not chosen:
            raise ReviewError(f"run {run!r} has no operation waiting for review")
        decided = await decide(backends.store, run, chosen, action, content=content)  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in decided], ensure_ascii=False, indent=1))
        return
    done = {"approve": "approved", "reject": "rejected", "edit": "edited"}[action]
    console.print(f"{len(decided)} operation(s) {done}: ", end="")
    console.print(", ".join(r.operation.id for r in decided), markup=False)
    console.print("run the same train command again to apply the decisions")
