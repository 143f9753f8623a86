"""The `causal-grpo` command line: thin wrappers that turn flags into calls of the library."""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import click
import typer
from typer.core import TyperGroup


class Entry(NamedTuple):
    """Where a command lives and its one-line help (what `--help` lists without importing it)."""

    module: str
    attribute: str
    help: str


COMMANDS: dict[str, Entry] = {
    "train": Entry(
        "causal_grpo.cli.train",
        "train",
        "Train: generators -> compute -> evaluate -> extract -> fuse, one checkpointed thread per problem.",
    ),
    "datasets": Entry(
        "causal_grpo.cli.datasets", "datasets", "List the shipped datasets and collections with their problem counts."
    ),
    "eval": Entry(
        "causal_grpo.cli.eval",
        "eval_command",
        "Evaluate with frozen experience banks (nothing is learned) against a baseline, with paired statistics.",
    ),
    "report": Entry(
        "causal_grpo.cli.report",
        "report",
        "Write one self-contained HTML page (plots embedded, PNG files beside it) about a run.",
    ),
    "worker": Entry(
        "causal_grpo.cli.worker",
        "worker",
        "Run the problems and bank updates that `causal-grpo train --db URL --fleet` queues; any number, anywhere.",
    ),
    "scaffold": Entry("causal_grpo.cli.scaffold", "app", "Check causal-graph scaffolds without a model."),
    "simulator": Entry(
        "causal_grpo.cli.simulator",
        "app",
        "The bundled simulator: an OpenAI-compatible test double that measures the machinery, not a model.",
    ),
    "experiences": Entry(
        "causal_grpo.cli.experiences",
        "app",
        "`causal-grpo experiences`: list, show, export, import, prune, diff and roll back the experience banks of a "
        "run.",
    ),
    "review": Entry(
        "causal_grpo.cli.review",
        "review",
        "Review the bank operations a `train --review` run paused on: list them, approve, edit or reject them.",
    ),
    "local-model": Entry(
        "causal_grpo.cli.local_model",
        "app",
        "A real model offline: llama.cpp's llama-server (built from PyPI) with Gemma 3 270M (the `local` extra).",
    ),
}
"""Every command, imported only when it runs: a prompt engineer's `scaffold check` loop must not pay for
LangGraph, LangChain, the OpenAI SDK or matplotlib (about 3 s of start-up when all were imported)."""


def load(name: str) -> click.Command:
    """The click command of one entry, importing its module."""
    entry = COMMANDS[name]
    target: Any = getattr(importlib.import_module(entry.module), entry.attribute)
    if isinstance(target, typer.Typer):
        # a group even with one subcommand (`simulator serve`), as add_typer made it
        command: click.Command = typer.main.get_group(target)
    else:
        single = typer.Typer()
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    plain_help(command)
    return command


def plain_help(command: click.Command) -> None:
    """Help in click's plain layout, which wraps every column to the width; rich's option table cuts words
    (flag names and their text) to 3-4 characters on 80 columns or in a pipe."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None  # type: ignore[attr-defined]
    for sub in getattr(command, "commands", {}).values():
        if sub.short_help is None and sub.help:
            # a group lists each command's first paragraph in full, wrapped, instead of cutting it with '...'
            sub.short_help = " ".join(sub.help.split("\n\n")[0].split())
        plain_help(sub)


class LazyGroup(TyperGroup):
    """A command group that imports a command's module only to run it or show its own help."""

    listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        if self.listing:  # the group's help needs each name and its line, nothing more
            line = COMMANDS[cmd_name].help
            return click.Command(cmd_name, help=line, short_help=line)  # short_help: wrapped, never cut
        return load(cmd_name)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


# help as wide as the terminal up to 120 columns (click's default stops at 80); never narrower than 50
HELP_WIDTH = {"max_content_width": 120}
app = typer.Typer(
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    rich_markup_mode=None,
    context_settings=HELP_WIDTH,
)


@app.callback()
def _group() -> None:
    """The `causal-grpo` command line: thin wrappers that turn flags into calls of the library."""


def main() -> None:
    """Entry point of the `causal-grpo` script."""
    app()
