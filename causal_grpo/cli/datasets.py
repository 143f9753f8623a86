"""`causal-grpo datasets`: list the shipped datasets with their problem counts."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from causal_grpo.problems import list_datasets


def datasets(
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """List the shipped datasets and collections with their problem counts."""
    infos = list_datasets()
    if json_out:
        typer.echo(json.dumps([info.model_dump() for info in infos], indent=2))
        return
    table = Table(title="Datasets (or pass a .jsonl / .json file of your own)")
    for column in ("name", "problems", "domain", "files", "description"):
        table.add_column(column, justify="right" if column == "problems" else "left")
    for info in infos:
        table.add_row(info.name, str(info.count), ", ".join(info.domains), ", ".join(info.files), info.description)
    Console().print(table)
