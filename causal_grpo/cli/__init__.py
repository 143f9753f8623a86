"""The `causal-grpo` command line: thin wrappers that turn flags into calls of the library."""

from __future__ import annotations

import typer

from causal_grpo.cli import datasets, eval, experiences, local_model, report, scaffold, simulator, train, worker

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.command("train")(train.train)
app.command("datasets")(datasets.datasets)
app.command("eval")(eval.eval_command)
app.command("report")(report.report)
app.command("worker")(worker.worker)
app.add_typer(scaffold.app, name="scaffold")
app.add_typer(simulator.app, name="simulator")
app.add_typer(experiences.app, name="experiences")
app.add_typer(local_model.app, name="local-model")


def main() -> None:
    """Entry point of the `causal-grpo` script."""
    app()
