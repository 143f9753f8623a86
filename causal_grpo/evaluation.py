"""Evaluation with frozen experience banks: k samples per problem, Mean@k and Pass@k, paired comparisons of arms.

An arm is a solver (`scaffold` or `text`) with a set of experiences (a run's banks, exported bank files, or
none): `text:none` is plain chain of thought, `text:<banks>` the original free-text Training-Free GRPO,
`scaffold:none` causal graphs alone, `scaffold:<banks>` ours. Every arm answers the same problems with the
same k samples; each other arm is compared with one (`against`) by the paired per-problem difference of
Mean@k. Each arm reads a private in-memory copy of its banks, so nothing an evaluation does can reach a bank,
and no node that writes one (`learn`) is in the graph. Per problem, the graph fans out one rollout per
(generator, sample) exactly as training does, with the sample number as the rollout index (so samples differ);
per sample, the generators' rollouts vote with the final-answer rule (`graphs/final.choose_final`), which
never looks at the reference; then the chosen answer's correctness counts. The critic does not take part.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore, PutOp
from langgraph.store.memory import InMemoryStore
from pydantic import BaseModel, Field, ValidationError

from causal_grpo.context import Context
from causal_grpo.errors import CausalGrpoError
from causal_grpo.exports import atomic_write
from causal_grpo.graphs.final import choose_final
from causal_grpo.graphs.rollout import build_rollout_graph
from causal_grpo.graphs.state import InputState, Rollout, TrainingState
from causal_grpo.graphs.training import send_rollouts
from causal_grpo.llm import ModelAccessError, Usage, close_clients
from causal_grpo.memory.bank import ExperienceBank
from causal_grpo.memory.results import ArmEvalRecord, EvalRecord, ResultsDB
from causal_grpo.memory.schemas import BANKS, Experience, namespace, parse_id, utcnow
from causal_grpo.problems import MAX_FILE_BYTES, Problem
from causal_grpo.stats import (
    RESAMPLES,
    Interval,
    McNemarTest,
    PairedTest,
    bootstrap_mean,
    mcnemar_exact,
    paired_bootstrap,
    pass_at_k,
)

MAX_SAMPLES = 16  # the Context's bound on rollouts per generator
ALL = "all"


class EvalError(CausalGrpoError):
    """Experiences that cannot be loaded, or an evaluation that cannot run as asked."""


Solver = Literal["scaffold", "text"]
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}")


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a label for where its experiences come from, the store holding them, the solver."""

    source: str = "none"
    store: BaseStore | None = None  # None: no experiences
    solver: Solver = "scaffold"


@dataclass(frozen=True)
class ArmSpec:
    """An arm as `--arm NAME=SOLVER:BANKS` names it, before its banks are loaded."""

    name: str
    solver: Solver
    banks: str


def parse_arm(spec: str) -> ArmSpec:
    """`NAME=SOLVER:BANKS` (e.g. `cot=text:none`, `graph+exp=scaffold:runB`) as an `ArmSpec`.

    Raises:
        EvalError: The spec is not of that form, or names an unknown solver.
    """
    name, eq, rest = spec.partition("=")
    solver, colon, banks = rest.partition(":")
    if not eq or not colon or not banks.strip():
        raise EvalError(f"--arm {spec!r}: expected NAME=SOLVER:BANKS, e.g. cot=text:none or graph=scaffold:runA")
    if not ARM_NAME.fullmatch(name.strip()):
        raise EvalError(f"--arm {spec!r}: a name is 1-40 letters, digits or _.+-, starting with a letter or digit")
    if solver.strip() not in ("scaffold", "text"):
        raise EvalError(f"--arm {spec!r}: solver {solver.strip()!r} is not scaffold or text")
    return ArmSpec(name=name.strip(), solver=solver.strip(), banks=banks.strip())  # type: ignore[arg-type]


class SampleResult(BaseModel):
    """The answer chosen for one sample of a problem, and whether it is right."""

    sample: int
    answer: str | None = None
    correct: bool = False


class ProblemResult(BaseModel):
    """One problem under one arm: its k samples."""

    id: str
    dataset: str
    status: str = "done"  # "done" or "failed"
    samples: list[SampleResult] = Field(default_factory=list)
    usage: Usage = Usage()
    error: str | None = None

    @property
    def correct(self) -> int:
        """How many samples are right."""
        return sum(s.correct for s in self.samples)


class ArmReport(BaseModel):
    """One arm's accuracy on one dataset."""

    source: str
    mean_at_k: Interval
    pass_at_k: Interval


class DatasetReport(BaseModel):
    """One dataset's numbers; `problems` counts those finished in every arm (the paired ones)."""

    dataset: str
    problems: int
    failed: int = 0
    experiences: ArmReport | None = None
    baseline: ArmReport | None = None
    comparison: PairedTest | None = Field(default=None, description="Mean@k, experiences minus baseline.")
    mcnemar: McNemarTest | None = Field(default=None, description="Pass@k, experiences against baseline.")


class ArmFigures(BaseModel):
    """One arm on one dataset (or 'all'): Mean@k and Pass@k over the problems finished in every arm."""

    dataset: str
    problems: int
    failed: int = 0
    mean_at_k: Interval | None = None
    pass_at_k: Interval | None = None


class ArmSummary(BaseModel):
    """One arm of an evaluation: what it is, its figures per dataset, and what it cost."""

    name: str
    solver: Solver = "scaffold"
    banks: str = "none"
    bank_sizes: dict[str, int] = Field(default_factory=dict)
    datasets: list[ArmFigures] = Field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Comparison(BaseModel):
    """An arm against the `against` arm on one dataset: the paired Mean@k difference (arm minus against)."""

    arm: str
    against: str
    dataset: str
    problems: int
    difference: Interval
    p_value: float
    significant: bool | None = Field(description="p < 0.05; None: too few problems for a verdict.")
    verdict: str
    mcnemar_p: float = Field(description="Exact McNemar test of Pass@k.")


class EvalResult(BaseModel):
    """What an evaluation measured; JSON-able as it stands."""

    eval_id: str
    run: str
    model: str
    samples: int
    generators: list[int]
    seed: int
    experiences: str
    baseline: str | None = None
    bank_sizes: dict[str, dict[str, int]] = Field(default_factory=dict, description="Per arm: live experiences.")
    reports: list[DatasetReport] = Field(default_factory=list)
    arms: list[ArmSummary] = Field(default_factory=list, description="Every arm with its figures per dataset.")
    against: str | None = Field(default=None, description="The arm the others are compared with.")
    comparisons: list[Comparison] = Field(default_factory=list)
    problems: dict[str, list[ProblemResult]] = Field(default_factory=dict, description="Per arm, in dataset order.")
    usage: Usage = Usage()
    seconds: float = 0.0
    created_at: str = Field(default_factory=utcnow)

    def records(self) -> list[EvalRecord]:
        """The rows of the results database's `evaluations` table, one per dataset report."""
        rows = []
        for report in self.reports:
            if report.experiences is None:
                continue
            base, diff = report.baseline, report.comparison
            rows.append(
                EvalRecord(
                    run=self.run,
                    eval_id=self.eval_id,
                    dataset=report.dataset,
                    model=self.model,
                    samples=self.samples,
                    problems=report.problems,
                    experiences=self.experiences,
                    baseline=self.baseline,
                    mean_at_k=report.experiences.mean_at_k.estimate,
                    mean_at_k_low=report.experiences.mean_at_k.low,
                    mean_at_k_high=report.experiences.mean_at_k.high,
                    pass_at_k=report.experiences.pass_at_k.estimate,
                    pass_at_k_low=report.experiences.pass_at_k.low,
                    pass_at_k_high=report.experiences.pass_at_k.high,
                    baseline_mean_at_k=base.mean_at_k.estimate if base else None,
                    baseline_pass_at_k=base.pass_at_k.estimate if base else None,
                    difference=diff.difference.estimate if diff else None,
                    difference_low=diff.difference.low if diff else None,
                    difference_high=diff.difference.high if diff else None,
                    p_value=diff.p_value if diff else None,
                    mcnemar_p=report.mcnemar.p_value if report.mcnemar else None,
                    significant=diff.significant if diff else None,
                    verdict=diff.verdict if diff else None,
                    created_at=self.created_at,
                )
            )
        return rows

    def arm_records(self) -> list[ArmEvalRecord]:
        """The rows of the results database's `arm_evaluations` table, one per arm and dataset."""
        compared = {(c.arm, c.dataset): c for c in self.comparisons}
        rows = []
        for arm in self.arms:
            for figures in arm.datasets:
                if figures.mean_at_k is None or figures.pass_at_k is None:
                    continue
                c = compared.get((arm.name, figures.dataset))
                rows.append(
                    ArmEvalRecord(
                        run=self.run,
                        eval_id=self.eval_id,
                        arm=arm.name,
                        dataset=figures.dataset,
                        solver=arm.solver,
                        banks=arm.banks,
                        model=self.model,
                        samples=self.samples,
                        problems=figures.problems,
                        mean_at_k=figures.mean_at_k.estimate,
                        mean_at_k_low=figures.mean_at_k.low,
                        mean_at_k_high=figures.mean_at_k.high,
                        pass_at_k=figures.pass_at_k.estimate,
                        pass_at_k_low=figures.pass_at_k.low,
                        pass_at_k_high=figures.pass_at_k.high,
                        against=c.against if c else None,
                        difference=c.difference.estimate if c else None,
                        difference_low=c.difference.low if c else None,
                        difference_high=c.difference.high if c else None,
                        p_value=c.p_value if c else None,
                        mcnemar_p=c.mcnemar_p if c else None,
                        verdict=c.verdict if c else None,
                        calls=arm.calls,
                        tokens=arm.prompt_tokens + arm.completion_tokens,
                        created_at=self.created_at,
                    )
                )
        return rows


def build_eval_graph() -> StateGraph:
    """Per problem: one rollout per (generator, sample), fanned out as in training; nothing after them."""
    builder = StateGraph(TrainingState, input_schema=InputState, context_schema=Context)
    builder.add_node("rollout", build_rollout_graph().compile())
    builder.add_conditional_edges(START, send_rollouts, ["rollout"])
    builder.add_edge("rollout", END)
    return builder


async def frozen_copy(store: BaseStore | None) -> InMemoryStore:
    """A private in-memory copy of every bank's live experiences (empty for None)."""
    copy = InMemoryStore()
    if store is None:
        return copy
    puts = [
        PutOp(namespace(bank), e.id, e.model_dump(mode="json"))
        for bank in BANKS
        for e in await ExperienceBank(bank, store).list()
    ]
    if puts:
        await copy.abatch(puts)
    return copy


def _read_records(path: Path) -> list[tuple[str, Experience]]:
    """The (bank, record) pairs of one exported bank file (a JSON list of records); the id names the bank."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise EvalError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as e:
        raise EvalError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalError(f"{path}: not a JSON file of experiences ({e})") from None
    if not isinstance(data, list):
        raise EvalError(f"{path}: expected a JSON list of experience records")
    records = []
    for index, item in enumerate(data):
        try:
            record = Experience.model_validate(item)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "record"
            raise EvalError(f"{path}: item [{index}]: {field}: {first['msg']}") from None
        parsed = parse_id(record.id)
        if parsed is None:
            raise EvalError(f"{path}: item [{index}]: {record.id!r} is not an experience id such as G1-001")
        records.append((parsed[0], record))
    return records


async def load_experiences(path: Path) -> InMemoryStore:
    """Exported banks into a fresh store: one `<bank>_experiences.json` file, or a folder of them.

    Each record goes to the bank its id names (`S-` shared, `G1-` generator_1, ..., `C-` critic).

    Raises:
        EvalError: No such file or folder, a folder without exports, or a malformed file.
    """
    if path.is_dir():
        files = [path / f"{bank}_experiences.json" for bank in BANKS if (path / f"{bank}_experiences.json").is_file()]
        if not files:
            raise EvalError(f"{path}: no <bank>_experiences.json files (banks: {', '.join(BANKS)})")
    elif path.is_file():
        files = [path]
    else:
        raise EvalError(f"{path}: no such file or folder")
    store = InMemoryStore()
    puts = []
    for file in files:
        for bank, record in await asyncio.to_thread(_read_records, file):
            puts.append(PutOp(namespace(bank), record.id, record.model_dump(mode="json")))
    if puts:
        await store.abatch(puts)
    return store


def resolve_experiences(spec: str, home: Path) -> Path | None:
    """What `--experiences` / `--baseline` name: None for 'none', a file or folder, or a run's folder.

    Raises:
        EvalError: The name is neither a file, a folder, nor a run under `home`.
    """
    if spec.strip().lower() == "none":
        return None
    given = Path(spec).expanduser()
    if given.exists():
        return given
    run_folder = Path(home).expanduser() / "runs" / spec
    if run_folder.is_dir():
        return run_folder
    raise EvalError(f"experiences {spec!r}: not 'none', not a file or folder, and no run {run_folder}")


def choose_samples(rollouts: Sequence[Rollout], samples: int) -> list[SampleResult]:
    """Per sample number, the generators' rollouts vote (without the reference); the winner's correctness counts."""
    chosen = []
    for sample in range(1, samples + 1):
        candidates = sorted((r for r in rollouts if r["index"] == sample), key=lambda r: r["generator"])
        final = choose_final([], candidates)
        chosen.append(
            SampleResult(
                sample=sample,
                answer=final["answer"] if final else None,
                correct=bool(final and final["correct"]),
            )
        )
    return chosen


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


async def _evaluate_arm(
    arm: Arm,
    problems: Sequence[Problem],
    ctx: Context,
    on_problem: Callable[[str, ProblemResult], None],
    name: str,
) -> tuple[list[ProblemResult], dict[str, int]]:
    store = await frozen_copy(arm.store)
    sizes = {b: len(await ExperienceBank(b, store).list()) for b in BANKS}
    graph = build_eval_graph().compile(store=store)
    arm_ctx = ctx.model_copy(update={"solver": arm.solver})

    async def one(problem: Problem) -> ProblemResult:
        try:
            state = await graph.ainvoke({"problem": problem.model_dump(mode="json")}, context=arm_ctx)
        except ModelAccessError:
            raise
        except Exception as exc:  # one problem's failure is recorded and left out of the paired numbers
            result = ProblemResult(id=problem.id, dataset=problem.dataset, status="failed", error=_one_line(exc))
        else:
            usage = Usage()
            for r in state["rollouts"]:
                usage = usage + Usage.model_validate(r["usage"])
            result = ProblemResult(
                id=problem.id,
                dataset=problem.dataset,
                samples=choose_samples(state["rollouts"], ctx.rollouts),
                usage=usage,
            )
        on_problem(name, result)
        return result

    # model calls are bounded by the client's concurrency; the problems can all be in flight
    return list(await asyncio.gather(*(one(p) for p in problems))), sizes


def arm_report(source: str, results: Sequence[ProblemResult], samples: int, *, seed: int, resamples: int) -> ArmReport:
    """Mean@k and Pass@k with bootstrap intervals over the given (finished) problems."""
    means = [r.correct / samples for r in results]
    passes = [pass_at_k(samples, r.correct, samples) for r in results]
    return ArmReport(
        source=source,
        mean_at_k=bootstrap_mean(means, resamples=resamples, seed=seed),
        pass_at_k=bootstrap_mean(passes, resamples=resamples, seed=seed),
    )


def compare(
    a: Sequence[ProblemResult], b: Sequence[ProblemResult], samples: int, *, seed: int, resamples: int
) -> tuple[PairedTest, McNemarTest]:
    """Arm A against arm B on the same problems: the paired Mean@k difference, and McNemar on Pass@k."""
    paired = paired_bootstrap(
        [r.correct / samples for r in a], [r.correct / samples for r in b], resamples=resamples, seed=seed
    )
    return paired, mcnemar_exact([r.correct > 0 for r in a], [r.correct > 0 for r in b])


def paired_results(arms: dict[str, list[ProblemResult]]) -> tuple[dict[str, list[ProblemResult]], int]:
    """Each arm's results on the problems finished in every arm (in the first arm's order), and how many failed."""
    ids = [r.id for r in next(iter(arms.values()))]
    status = {name: {r.id: r for r in results} for name, results in arms.items()}
    paired = [i for i in ids if all(status[name][i].status == "done" for name in arms)]
    return {name: [status[name][i] for i in paired] for name in arms}, len(ids) - len(paired)


def dataset_report(
    dataset: str,
    arms: dict[str, tuple[str, list[ProblemResult]]],
    samples: int,
    *,
    seed: int,
    resamples: int,
) -> DatasetReport:
    """Each arm's numbers on the problems finished in every arm, and the paired comparison when there are two."""
    paired, failed = paired_results({name: results for name, (_, results) in arms.items()})
    exp = paired["experiences"]
    report = DatasetReport(dataset=dataset, problems=len(exp), failed=failed)
    if not exp:
        return report
    report.experiences = arm_report(arms["experiences"][0], exp, samples, seed=seed, resamples=resamples)
    if "baseline" in arms:
        base = paired["baseline"]
        report.baseline = arm_report(arms["baseline"][0], base, samples, seed=seed, resamples=resamples)
        report.comparison, report.mcnemar = compare(exp, base, samples, seed=seed, resamples=resamples)
    return report


def memberships(problems: Sequence[Problem]) -> dict[str, set[str]]:
    """The problem ids of each dataset, plus every id under 'all' when there is more than one dataset."""
    datasets = list(dict.fromkeys(p.dataset for p in problems))
    members = {d: {p.id for p in problems if p.dataset == d} for d in datasets}
    if len(datasets) > 1:
        members[ALL] = {p.id for p in problems}
    return members


def summarise_arms(
    arms: dict[str, Arm],
    results: dict[str, list[ProblemResult]],
    members: dict[str, set[str]],
    against: str,
    samples: int,
    *,
    seed: int,
    resamples: int,
) -> tuple[list[ArmSummary], list[Comparison]]:
    """Every arm's figures per dataset, and every other arm against `against`, on the problems all arms finished."""
    summaries = {
        name: ArmSummary(
            name=name,
            solver=arm.solver,
            banks=arm.source,
            calls=sum(r.usage.calls for r in results[name]),
            prompt_tokens=sum(r.usage.prompt_tokens for r in results[name]),
            completion_tokens=sum(r.usage.completion_tokens for r in results[name]),
        )
        for name, arm in arms.items()
    }
    comparisons = []
    for dataset, ids in members.items():
        paired, failed = paired_results({name: [r for r in results[name] if r.id in ids] for name in arms})
        n = len(paired[against])
        for name in arms:
            figures = ArmFigures(dataset=dataset, problems=n, failed=failed)
            if n:
                report = arm_report(arms[name].source, paired[name], samples, seed=seed, resamples=resamples)
                figures.mean_at_k, figures.pass_at_k = report.mean_at_k, report.pass_at_k
            summaries[name].datasets.append(figures)
            if n and name != against:
                test, mcnemar = compare(paired[name], paired[against], samples, seed=seed, resamples=resamples)
                comparisons.append(
                    Comparison(
                        arm=name,
                        against=against,
                        dataset=dataset,
                        problems=n,
                        difference=test.difference,
                        p_value=test.p_value,
                        significant=test.significant,
                        verdict=f"{name} vs {against}: {test.verdict}",
                        mcnemar_p=mcnemar.p_value,
                    )
                )
    return list(summaries.values()), comparisons


def _check_request(problems: Sequence[Problem], samples: int) -> None:
    if not problems:
        raise EvalError("no problems to evaluate")
    if not 1 <= samples <= MAX_SAMPLES:
        raise EvalError(f"samples must be 1 to {MAX_SAMPLES}, got {samples}")


async def evaluate_arms(
    problems: Sequence[Problem],
    *,
    context: Context,
    arms: dict[str, Arm],
    against: str | None = None,
    samples: int = 4,
    resamples: int = RESAMPLES,
    on_problem: Callable[[str, ProblemResult], None] | None = None,
) -> EvalResult:
    """Evaluate problems under each arm (solver and frozen banks), k samples each, and compare with one arm.

    Args:
        problems: The problems (any mix of datasets; each dataset gets its figures, plus 'all').
        context: The run's settings; each arm runs it with its own solver; its seed seeds the bootstrap.
        arms: The arms by name, in the order they are reported.
        against: The arm every other one is compared with; None for the first.
        samples: k, samples per problem (1 to 16).
        resamples: Bootstrap resamples per interval and test.
        on_problem: Called with the arm's name and each finished problem.

    Raises:
        EvalError: No problems or arms, samples out of range, or `against` not an arm.
        ModelAccessError: The endpoint refused the key or does not know the model.
    """
    _check_request(problems, samples)
    if not arms:
        raise EvalError("no arms to evaluate")
    against = against or next(iter(arms))
    if against not in arms:
        raise EvalError(f"--against {against!r}: no such arm (arms: {', '.join(arms)})")
    started = time.monotonic()
    ctx = context.model_copy(update={"rollouts": samples, "stage": "all"})
    report_problem = on_problem or (lambda _name, _result: None)
    try:
        outcomes = await asyncio.gather(
            *(_evaluate_arm(arm, problems, ctx, report_problem, name) for name, arm in arms.items())
        )
    finally:
        await close_clients()
    results = {name: outcome[0] for name, outcome in zip(arms, outcomes, strict=True)}
    sizes = {name: outcome[1] for name, outcome in zip(arms, outcomes, strict=True)}
    summaries, comparisons = summarise_arms(
        arms, results, memberships(problems), against, samples, seed=ctx.seed, resamples=resamples
    )
    for summary in summaries:
        summary.bank_sizes = sizes[summary.name]
    usage = Usage()
    for r in (r for arm_results in results.values() for r in arm_results):
        usage = usage + r.usage
    return EvalResult(
        eval_id=f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        run=ctx.run,
        model=ctx.model,
        samples=samples,
        generators=ctx.generators,
        seed=ctx.seed,
        experiences=next(iter(arms.values())).source,
        bank_sizes=sizes,
        arms=summaries,
        against=against if len(arms) > 1 else None,
        comparisons=comparisons,
        problems=results,
        usage=usage,
        seconds=round(time.monotonic() - started, 3),
    )


async def evaluate_dataset(
    problems: Sequence[Problem],
    *,
    context: Context,
    experiences: Arm,
    baseline: Arm | None = None,
    samples: int = 4,
    resamples: int = RESAMPLES,
    on_problem: Callable[[str, ProblemResult], None] | None = None,
) -> EvalResult:
    """Evaluate problems with frozen banks, k samples each, and compare with a baseline arm if one is given.

    The two-arm case of `evaluate_arms` (arms 'experiences' and 'baseline', compared with the baseline),
    with the per-dataset `reports` that case has always had.

    Args:
        problems: The problems (any mix of datasets; each dataset gets its own report, plus 'all').
        context: The run's settings; its generators vote per sample, its seed seeds the bootstrap.
        experiences: The arm under test.
        baseline: The arm to compare with (e.g. `Arm()`, no experiences); None for no comparison.
        samples: k, samples per problem (1 to 16).
        resamples: Bootstrap resamples per interval and test.
        on_problem: Called with the arm name ('experiences' or 'baseline') and each finished problem.

    Raises:
        EvalError: No problems, or samples out of range.
        ModelAccessError: The endpoint refused the key or does not know the model.
    """
    _check_request(problems, samples)
    arms = {"experiences": experiences} | ({"baseline": baseline} if baseline is not None else {})
    result = await evaluate_arms(
        problems,
        context=context,
        arms=arms,
        against="baseline" if baseline is not None else None,
        samples=samples,
        resamples=resamples,
        on_problem=on_problem,
    )
    result.baseline = baseline.source if baseline is not None else None
    result.reports = [
        dataset_report(
            name,
            {arm: (arms[arm].source, [r for r in result.problems[arm] if r.id in ids]) for arm in arms},
            samples,
            seed=result.seed,
            resamples=resamples,
        )
        for name, ids in memberships(problems).items()
    ]
    return result


def save_evaluation(result: EvalResult, run_dir: Path, json_out: Path | None = None) -> Path:
    """Write the result as JSON to `<run_dir>/eval-<id>.json` (and to `json_out` too) and its rows to results.db.

    The run folder always gets its copy, so the run's report shows every evaluation whatever the flags.

    Returns:
        The run folder's JSON file.
    """
    text = json.dumps(result.model_dump(mode="json"), indent=1, ensure_ascii=False) + "\n"
    paths = [run_dir / f"eval-{result.eval_id}.json"]
    if json_out is not None and json_out.resolve() != paths[0].resolve():
        paths.append(json_out)
    for path in paths:
        atomic_write(path, text)
    db = ResultsDB(run_dir / "results.db")
    try:
        db.record_evaluations(result.records())
        db.record_arm_evaluations(result.arm_records())
    finally:
        db.close()
    return paths[0]
