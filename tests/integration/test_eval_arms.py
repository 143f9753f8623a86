"""`eval --arm`: plain chain of thought, free-text Training-Free GRPO, scaffolds and ours, on the simulator."""

from __future__ import annotations

import html
import json

import pytest
from causal_grpo.memory.results import ResultsDB
from PIL import Image
from typer.testing import CliRunner

from causal_grpo.cli import app

pytestmark = [pytest.mark.integration]

ARMS = ["cot", "tfgrpo", "graph", "graph+exp"]


def test_four_arms_on_the_same_problems_with_intervals_and_comparisons(simulator, sim_context, tmp_path, render_page):
    common = ["--home", str(tmp_path), "--model", "simulated", "--base-url", simulator.base_url, "--seed", "7"]
    common += ["--generators", "1,2"]
    run = sim_context.run
    trained = CliRunner().invoke(
        app, ["train", *common, "--dataset", "physics", "--max-problems", "2", "--run", run, "--solver", "text"]
    )
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "arms.json"
    arms = ["cot=text:none", f"tfgrpo=text:{run}", "graph=scaffold:none", f"graph+exp=scaffold:{run}"]
    args = ["eval", *common, "--dataset", "full", "--start-problem", "29", "--max-problems", "4", "--samples", "2"]
    args += [x for arm in arms for x in ("--arm", arm)] + ["--against", "cot", "--json-out", str(out)]
    done = CliRunner().invoke(app, args, env={"COLUMNS": "80"})  # a pipe on 80 columns: nothing may be cut
    assert done.exit_code == 0, done.output
    cells = [cell.strip() for line in done.output.splitlines() for cell in line.split("│")]
    for name, spec in zip(ARMS, arms, strict=True):
        assert name in cells or f"{name} (against)" in cells
        assert spec.split("=", 1)[1] in cells
    output = " ".join(done.output.split())
    assert "any difference it shows is noise" in output

    saved = json.loads(out.read_text())
    assert [a["name"] for a in saved["arms"]] == ARMS
    assert [(a["solver"], a["banks"]) for a in saved["arms"]] == [
        ("text", "none"), ("text", run), ("scaffold", "none"), ("scaffold", run)
    ]  # fmt: skip
    assert saved["against"] == "cot"
    for arm in saved["arms"]:
        assert [f["dataset"] for f in arm["datasets"]] == ["aime2024", "aime2025", "all"]
        for figures in arm["datasets"]:
            for metric in ("mean_at_k", "pass_at_k"):
                interval = figures[metric]
                assert interval["low"] <= interval["estimate"] <= interval["high"]
        assert arm["calls"] > 0 and arm["prompt_tokens"] > 0
    tested = {a["name"]: a["bank_sizes"] for a in saved["arms"]}
    assert sum(tested["tfgrpo"].values()) > 0 and sum(tested["cot"].values()) == 0
    pairs = [(c["arm"], c["against"], c["dataset"]) for c in saved["comparisons"]]
    assert sorted(pairs) == sorted((a, "cot", d) for a in ARMS[1:] for d in ("aime2024", "aime2025", "all"))
    for c in saved["comparisons"]:
        assert c["difference"]["low"] <= c["difference"]["estimate"] <= c["difference"]["high"]
        assert 0 < c["p_value"] <= 1 and c["verdict"].startswith(f"{c['arm']} vs cot: ")
        assert f"{c['dataset']}: Mean@2 {c['verdict'][:30]}" in output

    db = ResultsDB(tmp_path / "runs" / run / "results.db")  # the first run an arm reads
    rows = db.arm_evaluations(run)
    db.close()
    assert sorted((r.arm, r.dataset) for r in rows) == sorted(
        (a, d) for a in ARMS for d in ("aime2024", "aime2025", "all")
    )
    assert all((r.against is None) == (r.arm == "cot") for r in rows)

    # --json-out is a copy: the run folder has its own, so the run's report shows the evaluation
    assert json.loads((tmp_path / "runs" / run / f"eval-{saved['eval_id']}.json").read_text()) == saved
    assert f"eval-{saved['eval_id']}.json and {out}" in output
    # four problems per dataset: figures, but no verdict
    for c in saved["comparisons"]:
        assert "no verdict below 20 problems" in c["verdict"] and c["significant"] is None
    assert "only 4 problems: rough intervals, and no verdict below 20 problems" in output

    # the report plots the arms side by side and lists each comparison's verdict
    reported = CliRunner().invoke(app, ["report", "--run", run, "--home", str(tmp_path)])
    assert reported.exit_code == 0, reported.output
    page = (tmp_path / "runs" / run / "report" / "index.html").read_text()
    assert "evaluations.png" in " ".join(p.name for p in (tmp_path / "runs" / run / "report").iterdir())
    for arm in ARMS:
        assert f"{arm}: " in page
    assert all(html.escape(c["verdict"]) in page for c in saved["comparisons"])

    # and a browser shows them: the arms plot loads (its image has a size) and the eval table is on the page
    index = tmp_path / "runs" / run / "report" / "index.html"
    dom = render_page(index, "--dump-dom", "--virtual-time-budget=5000")
    assert "evaluations.png" in dom and all(html.escape(c["verdict"]) in dom for c in saved["comparisons"])
    with Image.open(tmp_path / "runs" / run / "report" / "evaluations.png") as plot:
        assert "model: simulated" in plot.info["Title"]

    # without the JSON file the report reads the arm_evaluations rows: the same arms and verdicts
    (tmp_path / "runs" / run / f"eval-{saved['eval_id']}.json").unlink()
    (index.parent / "evaluations.png").unlink()
    assert CliRunner().invoke(app, ["report", "--run", run, "--home", str(tmp_path)]).exit_code == 0
    from_table = index.read_text()
    assert "evaluations.png" in from_table and "no evaluation yet" not in from_table
    for arm in saved["arms"]:
        assert html.escape(f"{arm['name']}: {arm['solver']}:{arm['banks']}") in from_table
    assert all(html.escape(c["verdict"]) in from_table for c in saved["comparisons"])
    assert html.escape("paired difference: graph+exp - cot") in from_table

    shot = tmp_path / "report.png"
    render_page(index, "--window-size=1280,4000", f"--screenshot={shot}")
    with Image.open(shot) as image:  # the plots are drawn: matplotlib's tab:blue is on the screen
        assert (31, 119, 180) in {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 22) or []}


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        (["cot=text:none"], "two arms or more"),
        (["cot=text:none", "cot=scaffold:none"], "its own name"),
        (["a=text:none", "b=text:none"], "the same solver with the same banks"),
        (["a=prose:none", "b=text:none"], "is not scaffold or text"),
        (["a:text:none", "b=text:none"], "expected NAME=SOLVER:BANKS"),
        (["a=text:no-such-run", "b=text:none"], "no-such-run"),
    ],
)
def test_bad_arms_are_refused_before_any_model_call(tmp_path, arms, message):
    done = CliRunner().invoke(app, ["eval", "--home", str(tmp_path), *[x for a in arms for x in ("--arm", a)]])
    assert done.exit_code == 1, done.output
    assert message in " ".join(done.output.split()) and "Traceback" not in done.output


def test_against_must_name_an_arm(tmp_path, simulator):
    args = ["eval", "--home", str(tmp_path), "--model", "simulated", "--base-url", simulator.base_url]
    args += ["--dataset", "physics", "--max-problems", "1", "--samples", "1", "--generators", "1"]
    done = CliRunner().invoke(app, [*args, "--arm", "a=text:none", "--arm", "b=scaffold:none", "--against", "c"])
    assert done.exit_code == 1 and "no such arm" in done.output
