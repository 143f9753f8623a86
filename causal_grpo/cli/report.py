"""`causal-grpo report`: a run's HTML page and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from causal_grpo.api import run_dir
from causal_grpo.cli.common import DB_OPTION, HOME_OPTION, fail
from causal_grpo.errors import CausalGrpoError
from causal_grpo.report import build_report


def report(
    run: Annotated[str, typer.Option(help="The run to report on.")],
    home: HOME_OPTION = Path("~/.causal-grpo"),
    db: DB_OPTION = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for index.html and the plots (default: <run>/report).")
    ] = None,
) -> None:
    """Write one self-contained HTML page (plots embedded, PNG files beside it) about a run."""
    console = Console(highlight=False)
    folder = run_dir(home, run)
    if not folder.is_dir():
        fail(console, f"no run {run!r} in {home.expanduser()} (no folder {folder})")
    try:
        page = build_report(folder, (out or folder / "report").expanduser(), db)
    except (CausalGrpoError, OSError) as exc:
        fail(console, str(exc))
    console.print(f"report: {page} (open it in a browser; the plots are embedded and beside it as PNG files)")
