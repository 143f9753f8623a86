"""Export files in the specification's shapes, so its `jq` snippets work on them.

`generator_N_rollouts.jsonl` and `critic_results.jsonl` hold one line per (epoch, problem); a line is
replaced, never appended twice, so re-running or resuming a run leaves each problem once. A run's
`Exporter` appends the lines of new problems (one write per file and batch) and rewrites a file whole
only when a line of it is replaced, so a run writes each line about once instead of every file every
batch. Whole files are written to a temporary name and renamed, so a crash never leaves half a file; an
append cut short by a crash leaves a last line that does not parse, which the next write drops by
rewriting the file (the problem's finished thread is exported again).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from causal_grpo.rewards import group_std

TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def atomic_write(path: Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never a mix.

    The text goes to `.<name>.<pid>.tmp` beside it, then is renamed over it; a failed write removes its
    temporary, and one a killed process left is removed by the next `remove_stale_temporaries`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or not ours to judge: leave its file alone
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries of `atomic_write` that a process killed between write and rename left in a
    folder (those whose process is gone); the ones removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = TEMPORARY.match(path.name)
        if match and path.is_file() and not _alive(int(match["pid"])):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


Key = tuple[int, str]


def line_key(record: dict[str, Any]) -> Key:
    """What identifies an export line: its epoch and problem id."""
    return (record.get("epoch", 1), record["id"])


def read_lines(path: Path) -> tuple[dict[Key, dict[str, Any]], bool]:
    """A JSONL export's records by key, and whether the file is whole: every line parsed and ended, so a line
    appended next starts a line of its own (False after a torn append)."""
    lines: dict[Key, dict[str, Any]] = {}
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    whole = not text or text.endswith("\n")
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            lines[line_key(record)] = record
        except (ValueError, KeyError, TypeError, AttributeError):
            whole = False
    return lines, whole


def upsert_lines(path: Path, records: Iterable[dict[str, Any]]) -> set[Key]:
    """Replace or add JSONL lines keyed by (epoch, id), keeping file order stable; the file's keys after."""
    lines, _ = read_lines(path)
    for record in records:
        lines[line_key(record)] = record
    atomic_write(path, jsonl(lines.values()))
    return set(lines)


def jsonl(records: Iterable[dict[str, Any]]) -> str:
    """Records as JSONL text, each line ended."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def append_lines(path: Path, records: list[dict[str, Any]]) -> None:
    """Add JSONL lines at the end of a file in one write."""
    data = jsonl(records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def group_summary(rollouts: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and reward statistics of a group."""
    totals = [r["r_total"] for r in rollouts]
    return {
        "accuracy": sum(r["correct"] for r in rollouts) / len(rollouts) if rollouts else 0.0,
        "mean_r_total": sum(totals) / len(totals) if totals else 0.0,
        "std_r_total": group_std(totals) if totals else 0.0,
    }


def problem_lines(state: dict[str, Any], epoch: int, stage: str = "all") -> dict[str, dict[str, Any]]:
    """The export lines of one finished problem, keyed by file name.

    A critic stage's thread holds the rollouts its generators stage made, not their extraction: its lines
    are the critic's alone, and the generators' files keep the lines their own stage wrote.
    """
    problem = state["problem"]
    head = {
        "id": problem["id"],
        "epoch": epoch,
        "dataset": problem["dataset"],
        "reference": problem["answer"],
    }
    extractions = {e["agent"]: e for e in state.get("extractions", [])}
    # a review's rejections and edits, per bank (none when every operation was approved, or without review)
    reviewed: dict[str, list[dict[str, Any]]] = {}
    for decision in (state.get("learned") or {}).get("reviewed", []):
        reviewed.setdefault(decision["agent"], []).append(decision)
    out: dict[str, dict[str, Any]] = {}
    generators = sorted({r["generator"] for r in state["rollouts"]}) if stage != "critic" else []
    for g in generators:
        agent = f"generator_{g}"
        group = sorted((r for r in state["rollouts"] if r["generator"] == g), key=lambda r: r["index"])
        out[f"{agent}_rollouts.jsonl"] = {
            **head,
            "rollouts": group,
            "group": group_summary(group),
            "extraction": extractions.get(agent),
        } | ({"review": reviewed[agent]} if agent in reviewed else {})
    fused = sorted(state.get("fused", []), key=lambda r: r["generator"])
    if fused:
        out["critic_results.jsonl"] = {
            **head,
            "fused": {f"generator_{r['generator']}": r for r in fused},
            "group": group_summary(fused),
            "extraction": extractions.get("critic"),
            "final_answer": state.get("final_answer"),
            "final_correct": state.get("final_correct", False),
        } | ({"review": reviewed["critic"]} if "critic" in reviewed else {})
    return out


def problem_files(states: list[dict[str, Any]], epoch: int, stage: str) -> dict[str, list[dict[str, Any]]]:
    """The export lines of finished problems of a stage, grouped by file name."""
    per_file: dict[str, list[dict[str, Any]]] = {}
    for state in states:
        for name, line in problem_lines(state, epoch, stage).items():
            per_file.setdefault(name, []).append(line)
    return per_file


class Exporter:
    """A run folder's export files, brought up to date after each batch (see the module docstring).

    It remembers the keys of each problems file (read once, when first written) and the records of each bank
    file last written, so it is one per run folder and process, and nothing else writes those files meanwhile.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        remove_stale_temporaries(run_dir)
        self._keys: dict[str, set[Key] | None] = {}
        self._banks: dict[str, list[dict[str, Any]]] = {}

    def problems(self, states: list[dict[str, Any]], epoch: int, stage: str = "all") -> None:
        """Add or replace finished problems' lines: appended when new, the file rewritten when one is there."""
        for name, lines in problem_files(states, epoch, stage).items():
            path = self.run_dir / name
            if name not in self._keys:
                found, whole = read_lines(path)
                self._keys[name] = set(found) if whole else None
            keys = self._keys[name]
            new = [line_key(line) for line in lines]
            if keys is None or len(set(new)) < len(new) or not keys.isdisjoint(new):
                self._keys[name] = upsert_lines(path, lines)
            else:
                append_lines(path, lines)
                keys.update(new)

    def bank(self, bank: str, records: list[dict[str, Any]]) -> None:
        """`<bank>_experiences.json`, rewritten only when its records differ from the ones last written."""
        if self._banks.get(bank) != records:
            write_bank(self.run_dir, bank, records)
            self._banks[bank] = records


def write_bank(run_dir: Path, bank: str, records: list[dict[str, Any]]) -> None:
    """`<bank>_experiences.json`: a JSON list of experience records."""
    atomic_write(run_dir / f"{bank}_experiences.json", json.dumps(records, ensure_ascii=False, indent=1) + "\n")
