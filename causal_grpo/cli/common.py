"""Pieces every command shares: the home option and the one-line failure exit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

HOME_OPTION = Annotated[
    Path, typer.Option(envvar="CAUSAL_GRPO_HOME", help="Folder holding runs (state, results, exports).")
]


def fail(console: Console, message: str, code: int = 1) -> NoReturn:
    """Print one line, no traceback, and exit."""
    console.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
