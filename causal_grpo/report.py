"""A run's report: one self-contained HTML page and PNG plots (matplotlib, Agg) from what the run wrote.

Sources, all in the run folder: `results.db` (rollouts, problems, evaluations), `state.sqlite` (the banks,
whose edit histories give the bank size after each problem; a PostgreSQL run has both in its database),
the export files (the order problems ran in), `result.json` (the model) and `eval-*.json` (baseline
intervals). Each part is optional: whatever is missing becomes a note on the page. The page embeds every
plot as a PNG data URI, so the one HTML file works on its own, and links each to its PNG file next to it.
Text from the run (answers, experiences, problem ids, verdicts) is untrusted model or dataset output and
is escaped.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import ValidationError

from causal_grpo.errors import CausalGrpoError
from causal_grpo.evaluation import Comparison, EvalResult
from causal_grpo.exports import atomic_write
from causal_grpo.memory.backends import POSTGRES_SCHEMES, open_backends
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.manage import ManageError, load_records
from causal_grpo.memory.results import ArmEvalRecord, EvalRecord, ProblemRecord, RolloutRecord, open_results
from causal_grpo.memory.schemas import BANKS, Experience, utcnow
from causal_grpo.stats import MIN_PROBLEMS, Interval

AGENTS = ("generator_1", "generator_2", "generator_3", "critic")
COLORS = {
    "generator_1": "tab:blue",
    "generator_2": "tab:orange",
    "generator_3": "tab:green",
    "critic": "tab:red",
    "shared": "tab:gray",
    "final answer": "black",
}
DPI = 110
MAX_EVAL_ROWS = 20  # (eval, dataset) rows in the evaluation plot, the latest ones
MAX_EXPERIENCES = 15  # per bank in the page's table
PLOT_FILES = ("rewards.png", "accuracy.png", "banks_tokens.png", "critic.png", "evaluations.png")
NO_EVAL = "no evaluation yet: run causal-grpo eval"


class ReportError(CausalGrpoError):
    """A report that cannot be written (no such run folder)."""


@dataclass(frozen=True)
class Bound:
    """An estimate with its 95% interval when one is known."""

    estimate: float
    low: float | None = None
    high: float | None = None

    def __str__(self) -> str:
        if self.low is None or self.high is None:
            return f"{self.estimate:.1%}"
        return f"{self.estimate:.1%} [{self.low:.1%}, {self.high:.1%}]"


@dataclass(frozen=True)
class EvalArm:
    """One arm of one evaluated dataset."""

    name: str  # "experiences" / "baseline", or an `eval --arm` name
    source: str  # its banks; for an `--arm` arm, "solver:banks"
    mean_at_k: Bound
    pass_at_k: Bound | None


@dataclass(frozen=True)
class EvalDiff:
    """One paired comparison on one dataset: arm minus against, of Mean@k."""

    arm: str
    against: str
    difference: Bound
    p_value: float | None = None
    mcnemar_p: float | None = None
    verdict: str | None = None


@dataclass(frozen=True)
class EvalRow:
    """One dataset of one evaluation, from its JSON file or, failing that, from the results tables."""

    eval_id: str
    created_at: str
    model: str
    samples: int
    dataset: str
    problems: int
    arms: tuple[EvalArm, ...]
    differences: tuple[EvalDiff, ...] = ()
    against: str | None = None  # the arm the others are compared with


@dataclass
class RunData:
    """Everything the report reads from one run folder."""

    run: str
    rollouts: list[RolloutRecord] = field(default_factory=list)
    problems: list[ProblemRecord] = field(default_factory=list)
    steps: list[tuple[int, str]] = field(default_factory=list)  # (epoch, problem id) in the order they ran
    banks: dict[str, list[Experience]] = field(default_factory=dict)  # tombstones included
    evaluations: list[EvalRow] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def correct(record: RolloutRecord) -> bool:
    """A rollout's answer is right (the judge's rule: r_ans of 1)."""
    return record.r_ans >= 1.0


# ---- reading ---------------------------------------------------------------------------------------------


def _bound(interval: Interval) -> Bound:
    return Bound(interval.estimate, interval.low, interval.high)


def _diff(c: Comparison) -> EvalDiff:
    return EvalDiff(c.arm, c.against, _bound(c.difference), c.p_value, c.mcnemar_p, c.verdict)


def _arm_rows_from_json(result: EvalResult) -> list[EvalRow]:
    """An arms evaluation (`eval --arm`): one row per dataset with every arm and each comparison."""
    rows = []
    for dataset in dict.fromkeys(f.dataset for arm in result.arms for f in arm.datasets):
        figures = [(arm, next(f for f in arm.datasets if f.dataset == dataset)) for arm in result.arms]
        arms = tuple(
            EvalArm(arm.name, f"{arm.solver}:{arm.banks}", _bound(f.mean_at_k), _bound(f.pass_at_k))
            for arm, f in figures
            if f.mean_at_k is not None and f.pass_at_k is not None
        )
        if not arms:
            continue
        rows.append(
            EvalRow(
                eval_id=result.eval_id,
                created_at=result.created_at,
                model=result.model,
                samples=result.samples,
                dataset=dataset,
                problems=figures[0][1].problems,
                arms=arms,
                differences=tuple(_diff(c) for c in result.comparisons if c.dataset == dataset),
                against=result.against,
            )
        )
    return rows


def _eval_rows_from_json(result: EvalResult) -> list[EvalRow]:
    if result.arms and not result.reports:
        return _arm_rows_from_json(result)
    rows = []
    for report in result.reports:
        if report.experiences is None:
            continue
        arms = tuple(
            EvalArm(name, arm.source, _bound(arm.mean_at_k), _bound(arm.pass_at_k))
            for name, arm in (("experiences", report.experiences), ("baseline", report.baseline))
            if arm is not None
        )
        diff = report.comparison
        differences = (
            (
                EvalDiff(
                    "experiences",
                    "baseline",
                    _bound(diff.difference),
                    diff.p_value,
                    report.mcnemar.p_value if report.mcnemar else None,
                    diff.verdict,
                ),
            )
            if diff
            else ()
        )
        rows.append(
            EvalRow(
                eval_id=result.eval_id,
                created_at=result.created_at,
                model=result.model,
                samples=result.samples,
                dataset=report.dataset,
                problems=report.problems,
                arms=arms,
                differences=differences,
                against="baseline" if report.baseline is not None else None,
            )
        )
    return rows


def _eval_row_from_record(r: EvalRecord) -> EvalRow:
    """A row of the `evaluations` table: the baseline's numbers are kept there without their intervals."""
    arms = [
        EvalArm(
            "experiences",
            r.experiences,
            Bound(r.mean_at_k, r.mean_at_k_low, r.mean_at_k_high),
            Bound(r.pass_at_k, r.pass_at_k_low, r.pass_at_k_high),
        )
    ]
    if r.baseline is not None and r.baseline_mean_at_k is not None:
        base_pass = Bound(r.baseline_pass_at_k) if r.baseline_pass_at_k is not None else None
        arms.append(EvalArm("baseline", r.baseline, Bound(r.baseline_mean_at_k), base_pass))
    differences = (
        (
            EvalDiff(
                "experiences",
                "baseline",
                Bound(r.difference, r.difference_low, r.difference_high),
                r.p_value,
                r.mcnemar_p,
                r.verdict,
            ),
        )
        if r.difference is not None
        else ()
    )
    return EvalRow(
        eval_id=r.eval_id,
        created_at=r.created_at,
        model=r.model,
        samples=r.samples,
        dataset=r.dataset,
        problems=r.problems,
        arms=tuple(arms),
        differences=differences,
        against="baseline" if len(arms) > 1 else None,
    )


def _arm_rows_from_records(records: list[ArmEvalRecord]) -> list[EvalRow]:
    """Rows of the `arm_evaluations` table (`eval --arm`), one EvalRow per evaluation and dataset."""
    grouped: dict[tuple[str, str], list[ArmEvalRecord]] = defaultdict(list)
    for r in records:
        grouped[(r.eval_id, r.dataset)].append(r)
    rows = []
    for (eval_id, dataset), unordered in grouped.items():
        arms = sorted(unordered, key=lambda a: a.against is not None)  # the against arm first, as the eval lists it
        first = arms[0]
        rows.append(
            EvalRow(
                eval_id=eval_id,
                created_at=first.created_at,
                model=first.model,
                samples=first.samples,
                dataset=dataset,
                problems=first.problems,
                arms=tuple(
                    EvalArm(
                        a.arm,
                        f"{a.solver}:{a.banks}",
                        Bound(a.mean_at_k, a.mean_at_k_low, a.mean_at_k_high),
                        Bound(a.pass_at_k, a.pass_at_k_low, a.pass_at_k_high),
                    )
                    for a in arms
                ),
                differences=tuple(
                    EvalDiff(
                        a.arm,
                        a.against,
                        Bound(a.difference, a.difference_low, a.difference_high),
                        a.p_value,
                        a.mcnemar_p,
                        a.verdict,
                    )
                    for a in arms
                    if a.against is not None and a.difference is not None
                ),
                against=next((a.against for a in arms if a.against is not None), None),
            )
        )
    return rows


def _read_evaluations(
    run_dir: Path, records: list[EvalRecord], arm_records: list[ArmEvalRecord], notes: list[str]
) -> list[EvalRow]:
    """Evaluations from `eval-*.json` (they hold every interval), then the results tables' other evaluations."""
    rows: list[EvalRow] = []
    for path in sorted(run_dir.glob("eval-*.json")):
        try:
            rows.extend(_eval_rows_from_json(EvalResult.model_validate_json(path.read_bytes())))
        except (OSError, ValidationError) as exc:
            notes.append(f"{path.name}: not an evaluation result, left out ({type(exc).__name__})")
    from_json = {row.eval_id for row in rows}
    two_arm = [r for r in records if r.eval_id not in from_json]
    rows.extend(_eval_row_from_record(r) for r in two_arm)
    # a two-arm eval writes both tables; its `evaluations` rows already stand for it
    covered = from_json | {r.eval_id for r in two_arm}
    rows.extend(_arm_rows_from_records([r for r in arm_records if r.eval_id not in covered]))
    return sorted(rows, key=lambda row: (row.created_at, row.eval_id, row.dataset))


def _export_order(run_dir: Path) -> dict[tuple[int, str], int]:
    """The position of each (epoch, problem) in the export files, which keep the order problems ran in."""
    order: dict[tuple[int, str], int] = {}
    for path in sorted(run_dir.glob("*_rollouts.jsonl")) + [run_dir / "critic_results.jsonl"]:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                key = (int(record.get("epoch", 1)), str(record["id"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue  # a stray line only costs its problem its place, which falls back to time order
            order.setdefault(key, len(order))
    return order


def _steps(run_dir: Path, rollouts: list[RolloutRecord], problems: list[ProblemRecord]) -> list[tuple[int, str]]:
    position = _export_order(run_dir)
    first_seen: dict[tuple[int, str], str] = {}
    for r in rollouts:
        key = (r.epoch, r.problem_id)
        first_seen[key] = min(first_seen.get(key, r.created_at), r.created_at)
    keys = set(first_seen) | {(p.epoch, p.problem_id) for p in problems}
    return sorted(keys, key=lambda k: (k[0], position.get(k, math.inf), first_seen.get(k, ""), k[1]))


async def _store_banks(state: str | Path) -> dict[str, list[Experience]]:
    async with open_backends(state) as backends:
        return {b: await ExperienceBank(b, backends.store).list(include_deleted=True) for b in BANKS}


def _read_banks(run_dir: Path, notes: list[str], db: str | None = None) -> dict[str, list[Experience]]:
    """The banks from the run's store (`db`, else its state.sqlite); without one, from the exported bank files."""
    state = db or run_dir / "state.sqlite"
    if db or Path(state).is_file():
        try:
            return asyncio.run(_store_banks(state))
        except Exception as exc:  # a damaged or foreign store only costs the report its bank section
            notes.append(f"the store could not be read ({type(exc).__name__}: {exc}); banks from the exports")
    banks: dict[str, list[Experience]] = {}
    for bank in BANKS:
        path = run_dir / f"{bank}_experiences.json"
        if path.is_file():
            try:
                banks[bank] = load_records(path)
            except ManageError as exc:
                notes.append(str(exc))
    if banks:
        notes.append("no state.sqlite: bank sizes over time need the store's edit history; current sizes only")
    return banks


def read_run(run_dir: Path, db: str | None = None) -> RunData:
    """Read what a run folder (and, for a PostgreSQL run, its database `db`) holds; missing parts become notes.

    Raises:
        ReportError: There is no such folder.
    """
    if not run_dir.is_dir():
        raise ReportError(f"no run folder {run_dir}")
    data = RunData(run=run_dir.name)
    records: list[EvalRecord] = []
    arm_records: list[ArmEvalRecord] = []
    # a PostgreSQL run's rows are in its database; `eval` writes its rows to the run folder's results.db
    for source in ([db] if db and db.startswith(POSTGRES_SCHEMES) else []) + [run_dir / "results.db"]:
        if isinstance(source, Path) and not source.is_file():
            continue
        results = open_results(source)
        try:
            if not data.rollouts and not data.problems:
                data.rollouts, data.problems = results.rollouts(data.run), results.problems(data.run)
            records += results.evaluations(data.run)
            arm_records += results.arm_evaluations(data.run)
        finally:
            results.close()
    if not data.rollouts and not data.problems:
        data.notes.append("no results yet: the run has not finished a problem")
    summary = run_dir / "result.json"
    if summary.is_file():
        try:
            loaded = json.loads(summary.read_text(encoding="utf-8"))
            data.summary = loaded if isinstance(loaded, dict) else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data.notes.append("result.json is not valid JSON; left out")
    data.steps = _steps(run_dir, data.rollouts, data.problems)
    data.banks = _read_banks(run_dir, data.notes, db)
    data.evaluations = _read_evaluations(run_dir, records, arm_records, data.notes)
    return data


# ---- derived numbers -------------------------------------------------------------------------------------


def bank_growth(banks: dict[str, list[Experience]], run: str, steps: Sequence[tuple[int, str]]) -> dict[str, list[int]]:
    """Live experiences per bank after each step, replaying the adds and deletes that step's learning made.

    An edit's key is `<run>:<epoch>:<problem>:<agent>#<op index>`; edits made outside training (import,
    prune, rollback) have other keys and are not part of the curve.
    """
    step_of = {f"{run}:{epoch}:{pid}:{agent}": i for i, (epoch, pid) in enumerate(steps) for agent in AGENTS}
    growth = {}
    for bank, records in banks.items():
        delta = [0] * len(steps)
        for record in records:
            for edit in record.history:
                i = step_of.get(edit.key.rpartition("#")[0])
                if i is not None and edit.op in ("add", "delete"):
                    delta[i] += 1 if edit.op == "add" else -1
        growth[bank] = list(accumulate(delta))
    return growth


@dataclass(frozen=True)
class CriticTally:
    """The critic's rescues and losses on one (epoch, problem)."""

    step: int
    fused: int
    rescues: int
    losses: int


def critic_tallies(rollouts: Iterable[RolloutRecord], steps: Sequence[tuple[int, str]]) -> list[CriticTally]:
    """Per step, the critic's rescues and losses (as `ProblemOutcome` counts them).

    Rescue: fused right where most of that generator's rollouts were wrong; loss: fused wrong where one was
    right. A critic row's `rollout` is the number of the generator it fused.
    """
    proposals: dict[tuple[int, str, str], list[bool]] = defaultdict(list)
    fused: dict[tuple[int, str], list[RolloutRecord]] = defaultdict(list)
    for r in rollouts:
        if r.agent == "critic":
            fused[(r.epoch, r.problem_id)].append(r)
        else:
            proposals[(r.epoch, r.problem_id, r.agent)].append(correct(r))
    tallies = []
    for i, (epoch, pid) in enumerate(steps):
        rescues = losses = 0
        for f in fused.get((epoch, pid), []):
            group = proposals.get((epoch, pid, f"generator_{f.rollout}"), [])
            rescues += correct(f) and sum(group) * 2 < len(group)
            losses += not correct(f) and any(group)
        tallies.append(CriticTally(i, len(fused.get((epoch, pid), [])), rescues, losses))
    return tallies


# ---- plots -----------------------------------------------------------------------------------------------


SIMULATED = "model: simulated (a test double: these numbers say nothing about skill)"


def _title(fig: Figure, title: str, simulated: bool) -> None:
    """The figure's title; a simulated run says so on every plot, since a PNG travels without its page."""
    fig.suptitle(f"{title}\n{SIMULATED}" if simulated else title, color="black")


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    # the title goes into the PNG's text too, so a copied plot still says what it shows (and if it was simulated)
    fig.savefig(path, dpi=DPI, metadata={"Title": fig.get_suptitle().replace("\n", " - ")})


def _agents_in(rollouts: Iterable[RolloutRecord]) -> list[str]:
    present = {r.agent for r in rollouts}
    return [a for a in AGENTS if a in present] + sorted(present - set(AGENTS))


def plot_rewards(rollouts: list[RolloutRecord], path: Path, simulated: bool = False) -> None:
    """Box plots of r_total per agent over every rollout, and each agent's mean reward parts."""
    agents = _agents_in(rollouts)
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1.1, 1))
    totals = [[r.r_total for r in rollouts if r.agent == a] for a in agents]
    boxes = left.boxplot(totals, tick_labels=agents, patch_artist=True, showmeans=True, widths=0.5)
    for patch, agent in zip(boxes["boxes"], agents, strict=True):
        patch.set(facecolor=COLORS.get(agent, "tab:purple"), alpha=0.35)
    for x, values in enumerate(totals, start=1):
        # a fixed spread by index, so the plot is the same every time it is drawn
        offsets = [((i * 0.618) % 1 - 0.5) * 0.3 for i in range(len(values))]
        left.scatter([x + o for o in offsets], values, s=9, color="black", alpha=0.45, zorder=3)
    left.set(title="r_total per rollout (box: quartiles, triangle: mean)", ylabel="r_total", ylim=(-0.05, 1.05))
    left.grid(axis="y", alpha=0.3)
    parts = ("r_ans", "r_logic", "r_graph", "r_fusion")
    width = 0.8 / len(parts)
    for j, part in enumerate(parts):
        means = []
        for a in agents:
            values = [getattr(r, part) for r in rollouts if r.agent == a and getattr(r, part) is not None]
            means.append(statistics.fmean(values) if values else 0.0)
        right.bar([i + (j - 1.5) * width for i in range(len(agents))], means, width, label=part)
    right.set_xticks(range(len(agents)), agents)
    right.set(
        title="mean reward parts per agent", ylabel="mean reward", ylim=(0, 1.18), yticks=[0, 0.2, 0.4, 0.6, 0.8, 1]
    )
    right.legend(ncols=4, loc="upper center", fontsize="small")
    right.grid(axis="y", alpha=0.3)
    _title(fig, f"Reward distributions ({len(rollouts)} rollouts)", simulated)
    _save(fig, path)


def plot_accuracy(data: RunData, path: Path, simulated: bool = False) -> None:
    """Running accuracy per dataset: the final answers', and each agent's share of right rollouts."""
    dataset_of = {(p.epoch, p.problem_id): p.dataset or "unknown" for p in data.problems}
    final = {(p.epoch, p.problem_id): bool(p.correct) for p in data.problems if p.status == "done"}
    by_step: dict[tuple[int, str], list[RolloutRecord]] = defaultdict(list)
    for r in data.rollouts:
        by_step[(r.epoch, r.problem_id)].append(r)
    datasets = list(dict.fromkeys(dataset_of.get(s, "unknown") for s in data.steps))
    agents = _agents_in(data.rollouts)
    cols = min(3, len(datasets))
    rows = math.ceil(len(datasets) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, dataset in zip(axes, datasets, strict=False):
        steps = [s for s in data.steps if dataset_of.get(s, "unknown") == dataset]
        xs = range(1, len(steps) + 1)
        finals = [final[s] for s in steps if s in final]
        if finals:
            x_final = [x for x, s in zip(xs, steps, strict=True) if s in final]
            running = [sum(finals[: i + 1]) / (i + 1) for i in range(len(finals))]
            ax.plot(x_final, running, color="black", lw=2.2, marker="o", ms=3, label="final answer")
        for agent in agents:
            right = total = 0
            xa, ya = [], []
            for x, s in zip(xs, steps, strict=True):
                group = [correct(r) for r in by_step[s] if r.agent == agent]
                if group:
                    right, total = right + sum(group), total + len(group)
                    xa.append(x)
                    ya.append(right / total)
            if xa:
                ax.plot(
                    xa,
                    ya,
                    color=COLORS.get(agent),
                    lw=1.3,
                    label=f"{agent} fused" if agent == "critic" else f"{agent} rollouts",
                )
        for x, (prev, cur) in enumerate(zip(steps, steps[1:], strict=False), start=1):
            if cur[0] != prev[0]:
                ax.axvline(x + 0.5, color="gray", ls=":", lw=1)
                ax.text(x + 0.6, 0.02, f"epoch {cur[0]}", fontsize="x-small", color="gray")
        ax.set(title=f"{dataset} ({len(steps)} problem runs)", xlabel="problems seen (in run order)")
        ax.set(ylabel="running accuracy", ylim=(-0.03, 1.03), xlim=(0.5, max(len(steps), 1) + 0.5))
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="best")
    for ax in axes[len(datasets) :]:
        ax.set_visible(False)
    _title(fig, "Accuracy per dataset over problems and epochs", simulated)
    _save(fig, path)


def plot_banks_tokens(data: RunData, growth: dict[str, list[int]], path: Path, simulated: bool = False) -> None:
    """Bank sizes after each problem, and prompt tokens per rollout, over the same axis of problems."""
    index = {s: i + 1 for i, s in enumerate(data.steps)}
    fig = Figure(figsize=(11, 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs = range(1, len(data.steps) + 1)
    if growth:
        for bank, sizes in growth.items():
            top.step(xs, sizes, where="mid", color=COLORS.get(bank), label=bank, lw=1.6, marker="o", ms=3)
        # beside the axes, so it never hides a line
        top.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        top.text(0.5, 0.5, "no bank history in this run", ha="center", va="center", transform=top.transAxes)
    top.set(title="experience bank size after each problem", ylabel="live experiences")
    top.yaxis.get_major_locator().set_params(integer=True)
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    for agent in _agents_in(data.rollouts):
        own = [r for r in data.rollouts if r.agent == agent and (r.epoch, r.problem_id) in index]
        bottom.scatter(
            [index[(r.epoch, r.problem_id)] for r in own],
            [r.prompt_tokens for r in own],
            s=10,
            alpha=0.35,
            color=COLORS.get(agent),
        )
        per_step: dict[int, list[int]] = defaultdict(list)
        for r in own:
            per_step[index[(r.epoch, r.problem_id)]].append(r.prompt_tokens)
        xs_mean = sorted(per_step)
        bottom.plot(
            xs_mean,
            [statistics.fmean(per_step[x]) for x in xs_mean],
            color=COLORS.get(agent),
            lw=1.5,
            label=f"{agent} (mean)",
        )
    bottom.set(
        title="prompt tokens per rollout (dots) and their mean per problem (lines)",
        xlabel="problem runs (in run order)",
        ylabel="prompt tokens",
    )
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    if data.rollouts:
        bottom.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _title(fig, "Bank size and prompt tokens over time", simulated)
    _save(fig, path)


def plot_critic(tallies: list[CriticTally], path: Path, simulated: bool = False) -> None:
    """Rescues (up) and losses (down) per problem, and their running totals."""
    fig = Figure(figsize=(11, 5.6), layout="constrained")
    per_problem, totals = fig.subplots(2, 1, sharex=True, height_ratios=(1.4, 1))
    xs = [t.step + 1 for t in tallies]
    per_problem.bar(
        xs, [t.rescues for t in tallies], color="tab:green", label="rescues: fused right, most proposals wrong"
    )
    per_problem.bar(xs, [-t.losses for t in tallies], color="tab:red", label="losses: fused wrong, a proposal right")
    per_problem.axhline(0, color="black", lw=0.8)
    per_problem.set(title="per problem (rescues up, losses down)", ylabel="fused groups")
    per_problem.yaxis.set_major_formatter(lambda v, _: f"{abs(v):g}")
    per_problem.yaxis.get_major_locator().set_params(integer=True)
    per_problem.legend(fontsize="small", loc="best")
    totals.step(xs, list(accumulate(t.rescues for t in tallies)), where="mid", color="tab:green", label="rescues")
    totals.step(xs, list(accumulate(t.losses for t in tallies)), where="mid", color="tab:red", label="losses")
    totals.set(
        title="running totals",
        xlabel="problem runs (in run order)",
        ylabel="fused groups",
        xlim=(0.4, len(tallies) + 0.6),
    )
    totals.set_ylim(bottom=0)
    totals.yaxis.get_major_locator().set_params(integer=True)
    totals.legend(fontsize="small", loc="upper left")
    for ax in (per_problem, totals):
        ax.grid(axis="y", alpha=0.3)
    rescues, losses = sum(t.rescues for t in tallies), sum(t.losses for t in tallies)
    fused = sum(t.fused for t in tallies)
    _title(fig, f"Critic: {rescues} rescues, {losses} losses over {fused} fused groups", simulated)
    _save(fig, path)


def _errorbar(ax: Any, bound: Bound, y: float, color: str, label: str | None, marker: str = "o") -> None:
    err = None
    if bound.low is not None and bound.high is not None:
        err = [[bound.estimate - bound.low], [bound.high - bound.estimate]]
    ax.errorbar([bound.estimate], [y], xerr=err, fmt=marker, color=color, capsize=4, label=label)


def plot_evaluations(rows: list[EvalRow], path: Path, simulated: bool = False) -> None:
    """Per (evaluation, dataset): each arm's Mean@k and Pass@k, and each paired Mean@k difference, with 95% intervals.

    An arm is labelled with its solver:banks (or its banks); the arm the others are compared with is the
    baseline, drawn as a square; the differences (arm minus baseline) have their own panel around 0.
    """
    rows = rows[-MAX_EVAL_ROWS:]
    width = max([len(row.arms) for row in rows] + [1])
    fig = Figure(figsize=(14, 1.6 + 0.32 * len(rows) * (width + 1)), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True, width_ratios=(1, 1, 1.1))
    labels = [f"{row.eval_id}\n{row.dataset} (k={row.samples}, n={row.problems})" for row in rows]
    # one colour per arm, whatever evaluations it appears in; its label says what it is
    names = list(dict.fromkeys((arm.name, arm.source) for row in rows for arm in row.arms))
    color = {key: f"C{i % 10}" for i, key in enumerate(names)}

    def offset(i: int, count: int) -> float:
        return 0.6 * (i / (count - 1) - 0.5) if count > 1 else 0.0

    seen: set[str] = set()
    for y, row in enumerate(rows):
        for i, arm in enumerate(row.arms):
            baseline = arm.name == row.against
            label = f"{arm.name} = {arm.source}" + (" (baseline)" if baseline else "")
            for ax, bound in zip(axes[:2], (arm.mean_at_k, arm.pass_at_k), strict=True):
                if bound is not None:
                    shown = None if label in seen else label
                    _errorbar(ax, bound, y + offset(i, len(row.arms)), color[(arm.name, arm.source)], shown,
                              "s" if baseline else "o")  # fmt: skip
                    seen.add(label)
        source = {arm.name: arm.source for arm in row.arms}
        position = {arm.name: i for i, arm in enumerate(row.arms)}
        for diff in row.differences:
            dy = offset(position.get(diff.arm, 0), len(row.arms))  # level with its arm in the other panels
            _errorbar(axes[2], diff.difference, y + dy, color.get((diff.arm, source.get(diff.arm, "")), "tab:purple"),
                      None, "D")  # fmt: skip
            p = f", p={diff.p_value:.3f}" if diff.p_value is not None else ""
            axes[2].annotate(
                f"{diff.arm} - {diff.against}{p}",
                (diff.difference.high if diff.difference.high is not None else diff.difference.estimate, y + dy),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize="x-small",
            )
    for ax, title in zip(axes[:2], ("Mean@k", "Pass@k"), strict=True):
        ax.set(title=f"{title} with 95% bootstrap interval", xlim=(-0.02, 1.02), xlabel="accuracy")
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
        ax.grid(axis="x", alpha=0.3)
    axes[2].axvline(0, color="black", lw=0.8)
    axes[2].set(title="paired difference of Mean@k (arm - baseline)", xlabel="percentage points", xlim=(-1.05, 1.4))
    axes[2].xaxis.set_major_formatter(lambda v, _: f"{v * 100:+.0f}")
    axes[2].grid(axis="x", alpha=0.3)
    handles, legend = axes[0].get_legend_handles_labels()
    fig.legend(handles, legend, loc="outside lower center", ncols=min(3, max(1, len(legend))), fontsize="small")
    axes[0].set_yticks(range(len(rows)), labels, fontsize="small")
    axes[0].invert_yaxis()
    _title(fig, "Evaluations (frozen banks)", simulated)
    _save(fig, path)


# ---- the page --------------------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#666}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4em .8em;margin:.5em 0}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}th,td{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top;white-space:nowrap}td.wrap{white-space:normal}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee}.ok{color:#1a7f37}.bad{color:#c62828}
details{margin:.6em 0}
"""


def esc(value: object) -> str:
    """Any value as HTML text: run text is untrusted."""
    return html.escape(str(value), quote=True)


def _table(
    header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = (), wrap: Sequence[int] = ()
) -> str:
    """An HTML table; `numeric` columns align right, `wrap` columns (long text) may wrap."""
    classes = {**dict.fromkeys(numeric, " class=num"), **dict.fromkeys(wrap, " class=wrap")}
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{classes.get(i, '')}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _figure(path: Path, alt: str) -> str:
    """The plot embedded as a data URI (the page stands alone), linked to its PNG file next to the page."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<p><a href="{esc(path.name)}"><img src="data:image/png;base64,{data}" alt="{esc(alt)}"></a><br>'
        f'<small>file: <a href="{esc(path.name)}">{esc(path.name)}</a></small></p>'
    )


def _share(right: int, total: int) -> str:
    return f"{right}/{total} ({right / total:.0%})" if total else "-"


def _summary_section(data: RunData, tallies: list[CriticTally]) -> str:
    done = [p for p in data.problems if p.status == "done"]
    failed = [p for p in data.problems if p.status == "failed"]
    datasets = list(dict.fromkeys(p.dataset or "unknown" for p in data.problems))
    rows: list[tuple[str, object]] = [
        ("problem runs", f"{len(data.problems)} ({len(failed)} failed)" if failed else len(data.problems)),
        ("epochs", len({p.epoch for p in data.problems})),
        ("final answers right", _share(sum(bool(p.correct) for p in done), len(done))),
    ]
    for dataset in datasets:
        of = [p for p in done if (p.dataset or "unknown") == dataset]
        rows.append((f"final answers right: {dataset}", _share(sum(bool(p.correct) for p in of), len(of))))
    for agent in _agents_in(data.rollouts):
        own = [r for r in data.rollouts if r.agent == agent]
        what = "fused answers" if agent == "critic" else "rollouts"
        rows.append((f"{agent} {what} right", _share(sum(map(correct, own)), len(own))))
    rows += [
        (
            "prompt / completion tokens",
            f"{sum(r.prompt_tokens for r in data.rollouts):,} / "
            f"{sum(r.completion_tokens for r in data.rollouts):,} (rollouts and fusions)",
        ),
        ("critic rescues / losses", f"{sum(t.rescues for t in tallies)} / {sum(t.losses for t in tallies)}"),
        (
            "live experiences now",
            ", ".join(f"{b} {sum(not e.deleted for e in es)}" for b, es in data.banks.items()) or "-",
        ),
    ]
    if data.summary.get("seconds") is not None:
        rows.append(("wall time of the last invocation", f"{data.summary['seconds']} s"))
    return "<h2>Summary</h2>" + _table(("", "value"), rows)


def _evaluation_section(rows: list[EvalRow], plot: str) -> str:
    if not rows:
        return "<h2>Evaluations</h2>" + _note(NO_EVAL)
    table_rows: list[tuple[object, ...]] = []
    verdicts = []
    for row in rows:
        head = (row.eval_id, row.model, row.dataset, row.samples, row.problems)
        for arm in row.arms:
            mark = " (baseline)" if arm.name == row.against else ""
            table_rows.append((*head, f"{arm.name}: {arm.source}{mark}", arm.mean_at_k, arm.pass_at_k or "-"))
        for diff in row.differences:
            d = diff.difference
            interval = f" [{d.low * 100:+.1f}, {d.high * 100:+.1f}]" if d.low is not None and d.high is not None else ""
            p = f", p = {diff.p_value:.3g}" if diff.p_value is not None else ""
            mcnemar = f"McNemar p = {diff.mcnemar_p:.3g}" if diff.mcnemar_p is not None else "-"
            what = f"paired difference: {diff.arm} - {diff.against}"
            table_rows.append((*head, what, f"{d.estimate * 100:+.1f} pts{interval}{p}", mcnemar))
            if diff.verdict:
                verdicts.append(
                    f"<li>{esc(row.eval_id)}, {esc(row.dataset)}: Mean@{row.samples} {esc(diff.verdict)}</li>"
                )
    header = ("eval", "model", "dataset", "k", "problems", "arm: experiences", "Mean@k [95% CI]", "Pass@k [95% CI]")
    return (
        "<h2>Evaluations</h2><p>Frozen banks, k samples per problem; intervals are 95% bootstrap intervals over "
        "problems, and each p-value comes from the same bootstrap as its interval (p &lt; 0.05 exactly when the "
        f"interval excludes 0); below {MIN_PROBLEMS} problems there is no verdict. A baseline read from the results "
        "table alone has no interval.</p>"
        + plot
        + '<div style="overflow-x:auto">'
        + _table(header, table_rows, numeric=(3, 4))
        + "</div>"
        + (f"<ul>{''.join(verdicts)}</ul>" if verdicts else "")
    )


def _problems_section(data: RunData, tallies: list[CriticTally]) -> str:
    problem = {(p.epoch, p.problem_id): p for p in data.problems}
    rows = []
    for (epoch, pid), tally in zip(data.steps, tallies, strict=True):
        p = problem.get((epoch, pid))
        accuracy = ", ".join(f"{a} {v:.0%}" for a, v in p.group_accuracy.items()) if p else ""
        verdict = "-" if p is None or p.correct is None else ("right" if p.correct else "wrong")
        rows.append(
            (
                tally.step + 1,
                epoch,
                pid,
                p.dataset if p else "",
                p.status if p else "(rollouts only)",
                p.final_answer if p and p.final_answer is not None else "-",
                verdict,
                accuracy,
                f"{tally.rescues}/{tally.losses}" if tally.fused else "-",
            )
        )
    header = ("#", "epoch", "problem", "dataset", "status", "final answer", "", "rollouts right", "rescues/losses")
    return (
        f"<h2>Problems</h2><details><summary>{len(rows)} problem runs, in run order</summary>"
        + _table(header, rows, numeric=(0, 1), wrap=(5,))
        + "</details>"
    )


def _experiences_section(banks: dict[str, list[Experience]]) -> str:
    parts = []
    for bank, records in banks.items():
        live = sorted((e for e in records if not e.deleted), key=lambda e: (-e.usage_count, e.number))
        if not live:
            continue
        rows = [
            (e.id, e.content, e.category, f"{e.success_count}/{e.usage_count}", e.problem_id)
            for e in live[:MAX_EXPERIENCES]
        ]
        more = f", the {MAX_EXPERIENCES} most used" if len(live) > MAX_EXPERIENCES else ""
        parts.append(
            f"<details><summary>{esc(bank)}: {len(live)} live{esc(more)}</summary>"
            + _table(("id", "content", "category", "success/uses", "learned on"), rows, wrap=(1,))
            + "</details>"
        )
    return "<h2>Experiences</h2>" + ("".join(parts) or _note("no experiences learned yet"))


def _acceptance_section(summary: dict[str, Any]) -> str:
    """Each batch's minibatch acceptance decision (`train --accept-updates`), from result.json."""
    decisions = [d for d in summary.get("acceptance") or [] if isinstance(d, dict)]
    if not decisions:
        return ""
    rows = [
        (
            f"{d.get('epoch')}.{d.get('batch')}",
            d.get("decision"),
            f"{d.get('before_mean') or 0:.3f}",
            f"{d.get('after_mean') or 0:.3f}",
            f"{len(d.get('problems') or [])} {d.get('drawn_from', '')}",
            d.get("margin"),
            (d.get("usage") or {}).get("calls", 0),
        )
        for d in decisions
    ]
    header = ("batch", "decision", "mean before", "mean after", "K problems", "margin", "trial calls")
    return (
        "<h2>Minibatch acceptance</h2><p>Each batch's bank edits were kept only if the mean r_total of the "
        "trial problems with them was not lower than without by more than the margin.</p>"
        + _table(header, rows, numeric=(2, 3, 5, 6))
    )


def render_page(data: RunData, figures: dict[str, str], tallies: list[CriticTally]) -> str:
    """The HTML page; `figures` maps a section to its figure's HTML (absent: the section shows a note)."""
    model = data.summary.get("model")
    meta = f"model: {esc(model)} · " if model else ""

    def section(title: str, key: str, missing: str, intro: str = "") -> str:
        body = figures.get(key)
        return f"<h2>{esc(title)}</h2>" + (f"<p>{esc(intro)}</p>" + body if body else _note(missing))

    sections = [
        section("Reward distributions per agent", "rewards", "no rollouts yet"),
        section(
            "Accuracy per dataset",
            "accuracy",
            "no problems yet",
            "Running accuracy in run order: of the final answers (chosen without the reference) and of each "
            "agent's rollouts (r_ans = 1). Dotted lines mark new epochs.",
        ),
        section(
            "Bank size and prompt tokens",
            "banks",
            "no problems yet",
            "Bank sizes replay the adds and deletes of each problem's learning (edits made later by "
            "`causal-grpo experiences` are not in the curve).",
        ),
        section(
            "Critic: rescues and losses",
            "critic",
            "the critic fused nothing in this run",
            "Rescue: the fused answer is right where most of that generator's rollouts were wrong. "
            "Loss: the fused answer is wrong where one of them was right.",
        ),
        _evaluation_section(data.evaluations, figures.get("evaluations", "")),
        _acceptance_section(data.summary),
        _experiences_section(data.banks),
        _problems_section(data, tallies) if data.steps else "",
    ]
    notes = "".join(_note(n) for n in data.notes)
    if simulated_run(data) or simulated_evals(data):
        notes += _note(
            "model: simulated — the bundled simulator is a test double: these numbers say nothing about a model's skill"
        )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>causal-grpo report: {esc(data.run)}</title><style>{STYLE}</style></head><body>"
        f"<h1>causal-grpo run <code>{esc(data.run)}</code></h1>"
        f'<p class="meta">{meta}report written {esc(utcnow())}</p>'
        + notes
        + (_summary_section(data, tallies) if data.problems or data.rollouts else "")
        + "".join(sections)
        + "</body></html>\n"
    )


def simulated_run(data: RunData) -> bool:
    """The run's model was the bundled simulator: its result.json says so, or, without one (a run trained through
    the API writes none), its evaluations were made on the simulator."""
    model = data.summary.get("model")
    return model == "simulated" if model else simulated_evals(data)


def simulated_evals(data: RunData) -> bool:
    """An evaluation of the run was made on the simulator."""
    return any(row.model == "simulated" for row in data.evaluations)


def build_report(run_dir: Path, out: Path, db: str | None = None) -> Path:
    """Write `index.html` and the PNG plots of a run into `out`; returns the page.

    Args:
        db: The run's PostgreSQL database, if it ran on one (its result rows and banks are there).

    Raises:
        ReportError: `run_dir` is not a folder.
    """
    data = read_run(Path(run_dir), db)
    out.mkdir(parents=True, exist_ok=True)
    for name in PLOT_FILES:  # a plot this run no longer has must not linger beside the new page
        (out / name).unlink(missing_ok=True)
    tallies = critic_tallies(data.rollouts, data.steps)
    plots: dict[str, tuple[str, str]] = {}  # section -> (file, alt text)
    simulated = simulated_run(data)
    if data.rollouts:
        plot_rewards(data.rollouts, out / "rewards.png", simulated)
        plots["rewards"] = ("rewards.png", "r_total per agent")
    if data.steps:
        plot_accuracy(data, out / "accuracy.png", simulated)
        growth = bank_growth(data.banks, data.run, data.steps)
        plot_banks_tokens(data, growth, out / "banks_tokens.png", simulated)
        plots["accuracy"] = ("accuracy.png", "running accuracy per dataset")
        plots["banks"] = ("banks_tokens.png", "bank sizes and prompt tokens per problem")
    if any(t.fused for t in tallies):
        plot_critic(tallies, out / "critic.png", simulated)
        plots["critic"] = ("critic.png", "critic rescues and losses per problem")
    if data.evaluations:
        plot_evaluations(data.evaluations, out / "evaluations.png", simulated_evals(data))
        plots["evaluations"] = ("evaluations.png", "evaluation accuracies with 95% intervals")
    figures = {key: _figure(out / name, alt) for key, (name, alt) in plots.items()}
    page = out / "index.html"
    atomic_write(page, render_page(data, figures, tallies))
    return page
