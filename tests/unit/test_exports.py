"""A run's export files: new problems appended, replaced ones rewritten, torn appends repaired, banks kept."""

from __future__ import annotations

import json
from pathlib import Path

from causal_grpo.exports import Exporter


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
