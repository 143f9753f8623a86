"""`causal-grpo experiences` on a run made by a short simulated training: list, show, export/import, prune, diff."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from causal_grpo.api import atrain
from causal_grpo.cli import app
from causal_grpo.context import Context

pytestmark = pytest.mark.integration

RUN = "trained"
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(simulator, tmp_path_factory) -> Path:
    """A home holding one run of 8 problems (two batches, so the second batch's rollouts count usage)."""
    home = tmp_path_factory.mktemp("home")
    context = Context(run=RUN, model="simulated", base_url=simulator.base_url, generators=[1], rollouts=3)
    asyncio.run(atrain("full", max_problems=8, context=context, home=home, batch_size=4))
    return home


@pytest.fixture
def home(trained, tmp_path) -> Path:
    """A copy of the trained home that a test may change."""
    shutil.copytree(trained / "runs" / RUN, tmp_path / "runs" / RUN)
    return tmp_path


def cli(home: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["experiences", *args, "--home", str(home)], env={"COLUMNS": "250"})
    assert result.exit_code == code, result.output
    return result.output


def listed(home: Path, run: str = RUN, bank: str = "generator_1", *flags: str) -> list[dict]:
    return json.loads(cli(home, "list", "--json", "--bank", bank, "--run", run, *flags))[bank]


def test_list_and_show(home):
    records = listed(home)
    assert records and all(not r["deleted"] for r in records)
    assert any(r["usage_count"] > 0 for r in records)
    table = cli(home, "list", "--run", RUN)
    assert "generator_1:" in table and all(r["id"] in table for r in records)
    shown = json.loads(cli(home, "show", records[0]["id"], "--run", RUN))
    assert {k: shown[k] for k in records[0]} == records[0] and shown["history"][0]["op"] == "add"
    assert "not an experience id" in cli(home, "show", "X-1", "--run", RUN, code=1)
    assert "no run 'missing'" in cli(home, "list", "--run", "missing", code=1)
    assert not (home / "runs" / "missing").exists()


def test_export_import_round_trip_is_unchanged(home, tmp_path):
    cli(home, "export", "--out", str(tmp_path / "out"), "--run", RUN)
    cli(home, "import", str(tmp_path / "out"), "--run", "moved")
    cli(home, "export", "--out", str(tmp_path / "again"), "--run", "moved")
    for name in ("shared", "generator_1", "generator_2", "generator_3", "critic"):
        first = (tmp_path / "out" / f"{name}_experiences.json").read_text()
        assert (tmp_path / "again" / f"{name}_experiences.json").read_text() == first
    assert json.loads((tmp_path / "out" / "generator_1_experiences.json").read_text())

    # one bank as one file, into another run
    cli(home, "export", "--bank", "generator_1", "--out", str(tmp_path / "g1.json"), "--run", RUN)
    cli(home, "import", str(tmp_path / "g1.json"), "--bank", "generator_1", "--run", "single")
    cli(home, "export", "--bank", "generator_1", "--out", str(tmp_path / "g1_again.json"), "--run", "single")
    assert (tmp_path / "g1_again.json").read_text() == (tmp_path / "g1.json").read_text()
    # the run's own spec-shaped export follows the imported bank
    spec = json.loads((home / "runs" / "single" / "generator_1_experiences.json").read_text())
    assert [r["id"] for r in spec] == [r["id"] for r in listed(home)]

    # a run's own folder (specification-shaped files) imports too
    cli(home, "import", str(home / "runs" / RUN), "--run", "from_spec")
    assert listed(home, "from_spec") == listed(home)

    refused = cli(home, "import", str(tmp_path / "g1.json"), "--bank", "generator_1", "--run", "single", code=1)
    assert "not empty" in refused and "--renumber" in refused


def test_import_errors_name_the_file_and_record(home, tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[{"id": "G1-001", "content": "x"', encoding="utf-8")
    assert "bad.json: not valid JSON (line 1" in cli(home, "import", str(bad_json), "--bank", "critic", code=1)
    bad_record = tmp_path / "bad_record.json"
    bad_record.write_text(json.dumps([{"id": "C-001", "content": "Fuse."}, {"id": "C-002", "usage_count": -1}]))
    output = cli(home, "import", str(bad_record), "--bank", "critic", "--run", RUN, code=1)
    assert "bad_record.json: record 1" in output.replace("\n", "") and "content" in output
    assert "--bank" in cli(home, "import", str(bad_record), code=1)
    assert listed(home, RUN, "critic") == []


def test_prune_dry_run_then_prune_history_and_rollback(home):
    before = listed(home)
    rate = {r["id"]: r["success_count"] / r["usage_count"] for r in before if r["usage_count"] >= 3}
    assert rate, "the run should have used experiences"
    threshold = max(rate.values()) + 0.01
    expected = sorted(rate, key=lambda i: int(i.split("-")[1]))

    args = ["prune", "--bank", "generator_1", "--min-success-rate", str(threshold), "--min-uses", "3", "--run", RUN]
    dry = cli(home, *args, "--dry-run")
    assert f"would soft-delete {len(expected)}" in dry and all(i in dry for i in expected)
    assert listed(home) == before

    done = cli(home, *args)
    assert f"soft-deleted {len(expected)}" in done
    assert [r["id"] for r in listed(home)] == [r["id"] for r in before if r["id"] not in expected]
    spec = json.loads((home / "runs" / RUN / "generator_1_experiences.json").read_text())
    assert [r["id"] for r in spec] == [r["id"] for r in listed(home)]

    victim = expected[0]
    history = cli(home, "history", victim, "--run", RUN)
    assert "prune:success_rate@" in history and "delete" in history
    shown = json.loads(cli(home, "show", victim, "--run", RUN))
    delete = len(shown["history"]) - 1
    assert shown["history"][delete]["op"] == "delete"
    # --rollback K undoes edit K: the K of the delete brings the experience back in one step, as it was
    restored = cli(home, "history", victim, "--rollback", str(delete), "--run", RUN)
    assert f"{victim}: edit {delete} undone, back to its state after edit {delete - 1} (live)" in restored
    assert shown["content"] in " ".join(restored.split())
    back = next(r for r in listed(home) if r["id"] == victim)
    assert back["content"] == shown["content"]
    exported = json.loads((home / "runs" / RUN / "generator_1_experiences.json").read_text())
    assert victim in [r["id"] for r in exported]  # the run's export lists live records
    # and undoing that rollback deletes it again
    again = cli(home, "history", victim, "--rollback", str(delete + 1), "--run", RUN)
    assert "(deleted)" in again and victim not in [r["id"] for r in listed(home)]
    assert "edit 0 of" in cli(home, "history", victim, "--rollback", "0", "--run", RUN, code=1)
    assert "takes 1.." in cli(home, "history", victim, "--rollback", "99", "--run", RUN, code=1)


def test_prune_max_size_and_dedupe(home, tmp_path):
    live = listed(home)
    dry = cli(home, "prune", "--bank", "generator_1", "--max-size", "2", "--dry-run", "--run", RUN)
    assert f"would soft-delete {len(live) - 2}" in dry and listed(home) == live

    used = max(live, key=lambda r: r["usage_count"])
    near = tmp_path / "near.json"
    near.write_text(json.dumps([{"id": "X", "content": used["content"].rstrip(".") + " again."}]))
    imported = cli(home, "import", str(near), "--bank", "generator_1", "--renumber", "--run", RUN)
    new_id = f"G1-{max(int(r['id'].split('-')[1]) for r in listed(home, RUN, 'generator_1', '--include-deleted')):03d}"
    assert f"X->{new_id}" in imported
    deduped = cli(home, "prune", "--bank", "generator_1", "--dedupe", "--run", RUN)
    assert f"{new_id} [duplicate] near-duplicate of {used['id']}" in deduped.replace("\n", "")
    assert [r["id"] for r in listed(home)] == [r["id"] for r in live]
    assert "give a rule" in cli(home, "prune", "--bank", "critic", "--run", RUN, code=2)


def test_diff_runs_and_files(home, tmp_path):
    cli(home, "export", "--bank", "generator_1", "--out", str(tmp_path / "g1.json"), "--run", RUN)
    same = cli(home, "diff", RUN, str(tmp_path / "g1.json"), "--bank", "generator_1")
    assert "0 added, 0 removed, 0 changed" in same

    records = json.loads((tmp_path / "g1.json").read_text())
    live = sum(1 for r in records if not r.get("deleted"))
    first, second = records[0]["id"], records[1]["id"]
    records[0] |= {"content": "Edited content.", "usage_count": records[0]["usage_count"] + 2}
    records[1]["deleted"] = True
    records.append({"id": "G1-999", "content": "A brand new lesson."})
    (tmp_path / "generator_1_experiences.json").write_text(json.dumps(records))
    changed = cli(home, "diff", RUN, str(tmp_path / "generator_1_experiences.json")).replace("\n", "")
    assert "generator_1: 1 added, 1 removed, 1 changed" in changed
    assert "+ G1-999 A brand new lesson." in changed and f"- {second}" in changed
    assert f"~ {first} content: " in changed and "'Edited content.'" in changed and "usage_count:" in changed

    shutil.copytree(home / "runs" / RUN, home / "runs" / "pruned")
    cli(home, "prune", "--bank", "generator_1", "--max-size", "1", "--run", "pruned")
    between = cli(home, "diff", RUN, "pruned", "--bank", "generator_1")
    # pruned to one live record: every other live one is removed (a record the run deleted already is not)
    assert f"0 added, {live - 1} removed, 0 changed" in between


def test_list_and_history_piped_on_80_columns_keep_ids_and_labels_whole(home):
    """Through the real command line in a pipe (rich would take 80 columns there and cut cells to 3-4 characters)."""
    env = {**os.environ, "COLUMNS": "80"}
    cli_path = str(Path(sys.executable).parent / "causal-grpo")
    args = [cli_path, "experiences", "list", "--bank", "generator_1", "--run", RUN, "--home", str(home)]
    shown = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120).stdout
    records = listed(home)
    assert records and "…" not in shown.replace(" (deleted)", "").split("│")[0]
    tokens = shown.split()
    for r in records:
        assert r["id"] in tokens and r["category"] in tokens and r["problem_type"] in tokens, r["id"]
    history = [cli_path, "experiences", "history", records[0]["id"], "--run", RUN, "--home", str(home)]
    shown = subprocess.run(history, capture_output=True, text=True, env=env, timeout=120).stdout
    key = json.loads(cli(home, "show", records[0]["id"], "--run", RUN))["history"][0]["key"]
    assert key in shown.split()
