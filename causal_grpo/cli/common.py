"""Pieces the commands share: options, the model line, generator parsing and the one-line failure exit."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # the command line starts without the library's heavy imports
    from causal_grpo.context import Context

HOME_OPTION = Annotated[
    Path, typer.Option(envvar="CAUSAL_GRPO_HOME", help="Folder holding runs (state, results, exports).")
]
DB_OPTION = Annotated[
    str | None,
    typer.Option(
        envvar="CAUSAL_GRPO_DB",
        help="Checkpoints and banks (and a PostgreSQL run's results): a postgresql:// URL or a SQLite file "
        "(default: the run's state.sqlite).",
    ),
]


def model_line(ctx: Context) -> str:
    """What the command talks to; a simulator says plainly that it is a test double, and where it runs."""
    if ctx.model != "simulated":
        return f"model: {ctx.model} at {ctx.base_url or 'default'}"
    where = "the bundled simulator" if ctx.base_url is None else f"the simulator at {ctx.base_url}"
    return (
        f"model: simulated — {where}, a test double for the model: "
        "it exercises the machinery over real HTTP and says nothing about a model's skill"
    )


def parse_generators(text: str | None) -> list[int] | None:
    """Generator numbers from `1,2,3`; None when the flag was not given."""
    if text is None:
        return None
    try:
        chosen = sorted({int(g) for g in text.split(",") if g.strip()})
    except ValueError:
        raise typer.BadParameter("use generator numbers like 1,2,3") from None
    if not chosen or not set(chosen) <= {1, 2, 3}:
        raise typer.BadParameter("generators are 1, 2 and 3")
    return chosen


class Split(StrEnum):
    """Which part of a seeded train/test split a command works on."""

    train = "train"
    test = "test"


PIPE_WIDTH = 200  # a table's width in a pipe or a file, where rich would take 80


def output_console(**options: object) -> Console:
    """Standard output for tables: on a terminal its width (tables fold long cells to it); in a pipe or a file at
    least `PIPE_WIDTH` columns, where rich would take 80 and squeeze a table's columns to 3-4 characters."""
    if sys.stdout.isatty():
        return Console(**options)  # type: ignore[arg-type]
    columns = os.environ.get("COLUMNS", "")
    width = max(PIPE_WIDTH, int(columns) if columns.isdigit() else 0)
    return Console(width=width, **options)  # type: ignore[arg-type]


def folded(table: Table) -> Table:
    """The table with no cell ever cut: long cells fold onto more lines, and a no_wrap column (ids, flags) keeps
    the width of its widest cell."""
    for column in table.columns:
        column.overflow = "fold"
        if column.no_wrap:
            widest = max((c.cell_len if isinstance(c, Text) else len(str(c)) for c in column.cells), default=0)
            column.min_width = max(column.min_width or 0, widest, len(str(column.header)))
    return table


def error_console() -> Console:
    """Standard error, never wrapped: a message stays one line whatever the width (a pipe's is 80)."""
    return Console(stderr=True, soft_wrap=True, highlight=False)


def one_line(message: str) -> str:
    """A message on one line: its lines joined by spaces."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def fail(console: Console, message: str, code: int = 1) -> NoReturn:
    """Print one line to standard error (never wrapped), no traceback, and exit.

    `console` is the command's own (standard output); errors never go there.
    """
    error_console().print(f"[red]error:[/] {escape(one_line(message))}")
    raise typer.Exit(code)
