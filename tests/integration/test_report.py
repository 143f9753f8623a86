"""`causal-grpo report` on a real simulated run: valid PNG plots, a page that references them, escaped run text."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from causal_grpo.graphs.driver import TrainingResult
from causal_grpo.memory.results import EvalRecord, ResultsDB
from PIL import Image
from typer.testing import CliRunner

from causal_grpo.api import run_dir, train
from causal_grpo.cli import app
from causal_grpo.context import Context
from causal_grpo.evaluation import Arm, evaluate_dataset, load_experiences, save_evaluation
from causal_grpo.problems import Problem, load_problems
from causal_grpo.report import NO_EVAL, PLOT_FILES, ReportError, bank_growth, build_report, critic_tallies, read_run
from causal_grpo.simulator.runner import SimulatorServer

pytestmark = pytest.mark.integration

EVIL_ID = '<script>alert("id")</script>&p1'
EVIL_DATASET = "phys<i>ics</i>"
EVIL_VERDICT = "<img src=x onerror=alert(1)> gain"


@dataclass(frozen=True)
class SimulatedRun:
    folder: Path
    result: TrainingResult
    before_eval: Path  # the page written before any evaluation
    page: Path  # the page written after one evaluation


def _problems() -> list[Problem]:
    """Two shipped problems and one whose id and dataset name carry markup (dataset text is untrusted)."""
    physics = load_problems("physics", 1)[0]
    evil = physics.model_copy(update={"id": EVIL_ID, "dataset": EVIL_DATASET})
    return [*load_problems("aime2024", 1), physics, evil]


@pytest.fixture(scope="module")
def simulated_run(simulator: SimulatorServer, tmp_path_factory: pytest.TempPathFactory) -> SimulatedRun:
    home = tmp_path_factory.mktemp("home")
    ctx = Context(
        run="report-run", model="simulated", base_url=simulator.base_url, generators=[1, 2], rollouts=3, seed=7
    )
    problems = _problems()
    result = train(problems, context=ctx, home=home, epochs=2, batch_size=2)
    folder = run_dir(home, ctx.run)
    before_eval = build_report(folder, folder / "before-eval")

    async def evaluate() -> None:
        arm = Arm(ctx.run, await load_experiences(folder))
        evaluation = await evaluate_dataset(
            problems, context=ctx, experiences=arm, baseline=Arm(), samples=2, resamples=200
        )
        save_evaluation(evaluation, folder)

    asyncio.run(evaluate())
    # an older evaluation known only from the results table (no JSON file): its baseline has no interval
    db = ResultsDB(folder / "results.db")
    db.record_evaluations(
        [
            EvalRecord(
                run=ctx.run,
                eval_id="older",
                dataset="aime2024",
                experiences=ctx.run,
                baseline="none",
                mean_at_k=0.5,
                mean_at_k_low=0.25,
                mean_at_k_high=0.75,
                baseline_mean_at_k=0.4,
                difference=0.1,
                difference_low=-0.2,
                difference_high=0.4,
                p_value=0.6,
                verdict=EVIL_VERDICT,
                created_at="2000-01-01T00:00:00+00:00",
            )
        ]
    )
    db.close()
    return SimulatedRun(folder, result, before_eval, build_report(folder, folder / "report"))


def _check_png(path: Path) -> None:
    """A real PNG with a sensible size and more than a blank canvas."""
    assert path.stat().st_size > 5_000, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width >= 400 and height >= 300, (path, image.size)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20, f"{path} looks blank"


def test_every_plot_is_a_valid_png_the_page_links_and_embeds(simulated_run: SimulatedRun) -> None:
    out = simulated_run.page.parent
    page = simulated_run.page.read_text(encoding="utf-8")
    for name in PLOT_FILES:
        _check_png(out / name)
        assert f'href="{name}"' in page
        embedded = base64.b64encode((out / name).read_bytes()).decode("ascii")
        assert f'src="data:image/png;base64,{embedded}"' in page
    # the page needs nothing but itself: no scripts, and no resources besides its data URIs and the linked PNGs
    assert "<script" not in page
    for target in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert target in PLOT_FILES or target.startswith("data:image/png;base64,"), target


def test_run_text_is_escaped(simulated_run: SimulatedRun) -> None:
    page = simulated_run.page.read_text(encoding="utf-8")
    for text in (EVIL_ID, EVIL_DATASET, EVIL_VERDICT):
        assert text not in page
    assert "&lt;script&gt;alert(&quot;id&quot;)&lt;/script&gt;&amp;p1" in page
    assert "phys&lt;i&gt;ics&lt;/i&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt; gain" in page


def test_numbers_agree_with_the_training_run(simulated_run: SimulatedRun) -> None:
    data = read_run(simulated_run.folder)
    result = simulated_run.result
    assert len(data.steps) == len(result.problems) == 6
    assert data.steps == [(p.epoch, p.id) for p in result.problems]
    # the report recounts rescues and losses from the rollouts table; the driver counted them from the state
    tallies = critic_tallies(data.rollouts, data.steps)
    assert [(t.rescues, t.losses) for t in tallies] == [(p.rescues, p.losses) for p in result.problems]
    # replaying the banks' edit histories ends at the banks' live sizes, and matches the driver after each batch
    growth = bank_growth(data.banks, data.run, data.steps)
    assert {bank: sizes[-1] for bank, sizes in growth.items()} == result.bank_sizes
    per_epoch = len(_problems())
    for i, outcome in enumerate(result.problems):
        # batch_size=2: the driver reads the sizes once per batch, after its last problem
        if i % per_epoch % 2 == 1 or i % per_epoch == per_epoch - 1:
            assert {bank: sizes[i] for bank, sizes in growth.items()} == outcome.bank_sizes
    assert sum(result.bank_sizes.values()) > 0


def test_evaluations_show_both_sources(simulated_run: SimulatedRun) -> None:
    data = read_run(simulated_run.folder)
    from_json = [row for row in data.evaluations if row.eval_id != "older"]
    assert {row.dataset for row in from_json} == {"aime2024", "physics", EVIL_DATASET, "all"}
    assert all(arm.mean_at_k.low is not None for row in from_json for arm in row.arms)
    older = next(row for row in data.evaluations if row.eval_id == "older")
    assert [arm.name for arm in older.arms] == ["experiences", "baseline"]
    assert older.arms[1].mean_at_k.low is None
    assert NO_EVAL not in simulated_run.page.read_text(encoding="utf-8")


def test_a_run_without_evaluation_says_so(simulated_run: SimulatedRun) -> None:
    out = simulated_run.before_eval.parent
    assert NO_EVAL in simulated_run.before_eval.read_text(encoding="utf-8")
    assert not (out / "evaluations.png").exists()
    for name in set(PLOT_FILES) - {"evaluations.png"}:
        _check_png(out / name)


def test_an_empty_run_gives_a_page_of_notes(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "empty"
    folder.mkdir(parents=True)
    page = build_report(folder, folder / "report")
    text = page.read_text(encoding="utf-8")
    assert "no results yet" in text and NO_EVAL in text and "no rollouts yet" in text
    assert not list(page.parent.glob("*.png"))
    assert not (folder / "results.db").exists()  # reading never creates a run's files
    with pytest.raises(ReportError, match="no run folder"):
        build_report(tmp_path / "runs" / "missing", tmp_path / "out")


def test_cli_writes_the_report_and_fails_in_one_line(simulated_run: SimulatedRun, tmp_path: Path) -> None:
    home = simulated_run.folder.parent.parent
    runner = CliRunner()
    done = runner.invoke(app, ["report", "--run", "report-run", "--home", str(home), "--out", str(tmp_path / "r")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "r" / "index.html").is_file() and "report:" in done.output
    missing = runner.invoke(app, ["report", "--run", "nope", "--home", str(home)])
    assert missing.exit_code == 1
    assert "error: no run 'nope'" in missing.output and "Traceback" not in missing.output


def test_the_page_renders_in_headless_chromium(simulated_run: SimulatedRun, tmp_path: Path, render_page) -> None:
    shot = tmp_path / "page.png"
    render_page(simulated_run.page, "--window-size=1280,2400", f"--screenshot={shot}")
    _check_png(shot)
    with Image.open(shot) as image:
        # the embedded plots are drawn: a plot's colours (matplotlib's tab:blue) are on the screen
        assert (31, 119, 180) in {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 22) or []}


def test_every_plot_of_a_simulated_run_says_so(simulated_run: SimulatedRun, tmp_path: Path) -> None:
    out = simulated_run.page.parent
    for name in PLOT_FILES:
        with Image.open(out / name) as image:  # the title is drawn on the plot and kept in the PNG's text
            assert "model: simulated" in image.info["Title"], name
    # a run on a real model says nothing of the kind
    real = tmp_path / "runs" / "real"
    shutil.copytree(simulated_run.folder, real, ignore=shutil.ignore_patterns("report", "before-eval", "eval-*"))
    # trained through the API, the run has no result.json: here `train` on a real model would have written one
    (real / "result.json").write_text(json.dumps({"model": "gpt-4o-mini"}))
    with sqlite3.connect(real / "results.db") as db:  # the simulated evaluations stay with the simulated run
        db.execute("delete from evaluations")
        db.execute("delete from arm_evaluations")
    page = build_report(real, real / "report")
    assert "model: simulated" not in page.read_text(encoding="utf-8")
    for png in page.parent.glob("*.png"):
        with Image.open(png) as image:
            assert "simulated" not in image.info["Title"], png.name
