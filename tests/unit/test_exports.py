"""A run's export files: new problems appended, replaced ones rewritten, torn appends repaired, banks kept."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from causal_grpo.exports import Exporter, atomic_write


def state(problem_id: str, answer: str = "1") -> dict:
    rollout = {"generator": 1, "index": 1, "agent": "generator_1", "correct": True, "r_total": 0.9, "answer": answer}
    return {
        "problem": {"id": problem_id, "dataset": "aime2024", "answer": "1"},
        "rollouts": [rollout],
        "extractions": [],
        "fused": [],
    }


def lines(path: Path) -> list[tuple[int, str, str]]:
    records = [json.loads(raw) for raw in path.read_text().splitlines()]
    return [(r["epoch"], r["id"], r["rollouts"][0]["answer"]) for r in records]


def test_new_problems_are_appended_in_order_without_rewriting_the_file(tmp_path):
    exporter = Exporter(tmp_path)
    path = tmp_path / "generator_1_rollouts.jsonl"
    exporter.problems([state("p1"), state("p2")], epoch=1)
    inode = path.stat().st_ino
    exporter.problems([state("p3")], epoch=1)
    exporter.problems([state("p1")], epoch=2)  # another epoch is another line
    assert lines(path) == [(1, "p1", "1"), (1, "p2", "1"), (1, "p3", "1"), (2, "p1", "1")]
    assert path.stat().st_ino == inode  # appended in place: an atomic rewrite would have replaced the file


def test_a_problem_written_again_replaces_its_line_in_place(tmp_path):
    path = tmp_path / "generator_1_rollouts.jsonl"
    Exporter(tmp_path).problems([state("p1"), state("p2")], epoch=1)
    # a resumed run, in a new process, exports a finished problem again
    again = Exporter(tmp_path)
    again.problems([state("p1", answer="7")], epoch=1)
    assert lines(path) == [(1, "p1", "7"), (1, "p2", "1")]
    again.problems([state("p3")], epoch=1)
    assert lines(path) == [(1, "p1", "7"), (1, "p2", "1"), (1, "p3", "1")]


def test_an_append_cut_short_by_a_crash_is_dropped_at_the_next_write(tmp_path):
    path = tmp_path / "generator_1_rollouts.jsonl"
    Exporter(tmp_path).problems([state("p1")], epoch=1)
    with path.open("a") as handle:
        handle.write('{"id": "p2", "epoch": 1, "rollo')  # the process died inside the write
    Exporter(tmp_path).problems([state("p2")], epoch=1)
    assert lines(path) == [(1, "p1", "1"), (1, "p2", "1")]


def test_a_last_line_without_its_newline_is_not_glued_to_the_next_one(tmp_path):
    path = tmp_path / "generator_1_rollouts.jsonl"
    Exporter(tmp_path).problems([state("p1")], epoch=1)
    path.write_text(path.read_text().rstrip("\n"))  # e.g. saved by an editor that drops the final newline
    Exporter(tmp_path).problems([state("p2")], epoch=1)
    assert lines(path) == [(1, "p1", "1"), (1, "p2", "1")]


def test_a_bank_file_is_rewritten_only_when_its_records_change(tmp_path):
    exporter = Exporter(tmp_path)
    path = tmp_path / "critic_experiences.json"
    records = [{"id": "C-001", "content": "Check units.", "usage_count": 1}]
    exporter.bank("critic", records)
    inode = path.stat().st_ino
    exporter.bank("critic", [dict(r) for r in records])
    assert path.stat().st_ino == inode
    exporter.bank("critic", [{**records[0], "usage_count": 2}])
    assert path.stat().st_ino != inode
    assert json.loads(path.read_text())[0]["usage_count"] == 2


def test_a_temporary_left_by_a_killed_writer_is_removed_when_the_next_run_opens_the_folder(tmp_path):
    # A process SIGKILLed between writing `.<name>.<pid>.tmp` and renaming it over the file.
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from causal_grpo.exports import atomic_write\n"
        "os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_write(Path(sys.argv[1]) / 'shared_experiences.json', '[]')\n"
    )
    killed = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and re.fullmatch(r"\.shared_experiences\.json\.\d+\.tmp", left[0])
    (tmp_path / "notes.tmp").write_text("not ours")
    mine = tmp_path / f".result.json.{os.getpid()}.tmp"  # a live process's write in progress
    mine.write_text("{}")

    Exporter(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, "notes.tmp"])


def test_a_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    def disk_full(*_args):
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write(tmp_path / "result.json", "{}")
    assert list(tmp_path.iterdir()) == []
