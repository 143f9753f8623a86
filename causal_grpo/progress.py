"""Live progress of a training run: a rich bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from causal_grpo.graphs.driver import ProblemOutcome
from causal_grpo.llm import Usage

BANK_LABELS = {"shared": "S", "generator_1": "G1", "generator_2": "G2", "generator_3": "G3", "critic": "C"}


def fault_summary(faults: dict[str, Any]) -> str | None:
    """The faults a run met, in one phrase (None when there were none): retried calls by cause, calls that
    still failed, re-asks after invalid output, and rollouts left invalid by malformed output."""
    parts = []
    if retries := faults.get("retries"):
        causes = ", ".join(f"{cause}: {n}" for cause, n in retries.items())
        parts.append(f"{sum(retries.values())} call(s) retried ({causes})")
    if failed := faults.get("failed_calls"):
        causes = ", ".join(f"{cause}: {n}" for cause, n in failed.items())
        parts.append(f"{sum(failed.values())} call(s) still failing after retries ({causes})")
    if reasks := faults.get("reasks"):
        parts.append(f"{reasks} re-ask(s) after invalid output")
    if invalid := faults.get("invalid_rollouts"):
        parts.append(f"{invalid} rollout(s) left invalid by malformed output")
    other = {a: n for a, n in (faults.get("invalid_output") or {}).items() if a not in ("generator", "critic")}
    if other:
        parts.append("invalid output left by " + ", ".join(f"{a}: {n}" for a, n in other.items()))
    return "; ".join(parts) or None


def bank_line(sizes: dict[str, int]) -> str:
    """Bank sizes for people: `generator_1 4, generator_2 3, critic 2`; empty banks left out, "empty" if all are."""
    if not sizes:
        return ""
    return ", ".join(f"{bank} {n}" for bank, n in sizes.items() if n) or "empty"


def verdicts(outcome: ProblemOutcome) -> str:
    """Per agent: a mark per rollout (right / wrong) with its reward, and the group's accuracy."""
    parts = []
    for agent, accuracy in outcome.accuracy.items():
        marks = " ".join(
            f"{'[green]✓[/]' if r['correct'] else '[red]✗[/]'}{r['r_total']:.2f}"
            for r in outcome.rollouts
            if r["agent"] == agent
        )
        parts.append(f"{BANK_LABELS.get(agent, agent)} {marks} ({accuracy:.0%})")
    return "  ".join(parts)


class ProgressReporter:
    """Prints one line per finished problem and keeps an overall bar with ETA, tokens and cost."""

    def __init__(
        self,
        total: int,
        *,
        console: Console | None = None,
        prices: tuple[float | None, float | None] = (None, None),
    ):
        self.console = console or Console()
        self.prices = prices
        self.usage = Usage()
        self.correct = 0
        self.done = 0
        self.progress: Progress | None = None
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                console=self.console,
            )
            self.task = self.progress.add_task("train", total=total, stats="")

    def __enter__(self) -> ProgressReporter:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def stats(self) -> str:
        """Accuracy so far, tokens and (with prices) cost."""
        text = f"acc {self.correct}/{self.done}  tokens {self.usage.prompt_tokens}+{self.usage.completion_tokens}"
        cost = self.usage.cost(*self.prices)
        if cost is not None:
            text += f"  ${cost:.4f}"
        return text

    def __call__(self, outcome: ProblemOutcome) -> None:
        """Report one finished problem."""
        self.done += 1
        self.correct += outcome.final_correct
        self.usage = self.usage + outcome.usage
        if outcome.status == "failed":
            line = f"[red]{outcome.id}[/] failed: {outcome.error}"
        else:
            final = "[green]✓[/]" if outcome.final_correct else "[red]✗[/]"
            banks = " ".join(f"{BANK_LABELS[b]}:{n}" for b, n in outcome.bank_sizes.items())
            notes = {"earlier": " (finished earlier)", "review": f" ({outcome.pending_review} op(s) wait for review)"}
            earlier = notes.get(outcome.status, "")
            fusion = f"  rescues {outcome.rescues} losses {outcome.losses}" if "critic" in outcome.accuracy else ""
            answer = f"final {final} {outcome.final_answer}"
            # a paused problem has no sizes yet (its batch's update waits for review): no empty field
            line = f"{outcome.id}{earlier}  {verdicts(outcome)}{fusion}  {answer}"
            line += f"  banks {banks}" if banks else ""
        self.console.print(line, highlight=False)
        if self.progress:
            self.progress.update(self.task, advance=1, stats=self.stats())
