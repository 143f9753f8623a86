"""Export files in the specification's shapes, so its `jq` snippets work on them.

`generator_N_rollouts.jsonl` and `critic_results.jsonl` hold one line per (epoch, problem); a line is
replaced, never appended twice, so re-running or resuming a run leaves each problem once. Files are
written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from causal_grpo.rewards import group_std


def atomic_write(path: Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def upsert_lines(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace or add JSONL lines keyed by (epoch, id), keeping file order stable."""
    lines: dict[tuple[int, str], dict[str, Any]] = {}
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                rec = json.loads(raw)
                lines[(rec.get("epoch", 1), rec["id"])] = rec
    for rec in records:
        lines[(rec.get("epoch", 1), rec["id"])] = rec
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines.values()))


def group_summary(rollouts: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and reward statistics of a group."""
    totals = [r["r_total"] for r in rollouts]
    return {
        "accuracy": sum(r["correct"] for r in rollouts) / len(rollouts) if rollouts else 0.0,
        "mean_r_total": sum(totals) / len(totals) if totals else 0.0,
        "std_r_total": group_std(totals) if totals else 0.0,
    }


def problem_lines(state: dict[str, Any], epoch: int) -> dict[str, dict[str, Any]]:
    """The export lines of one finished problem, keyed by file name."""
    problem = state["problem"]
    head = {
        "id": problem["id"],
        "epoch": epoch,
        "dataset": problem["dataset"],
        "reference": problem["answer"],
    }
    extractions = {e["agent"]: e for e in state.get("extractions", [])}
    out: dict[str, dict[str, Any]] = {}
    generators = sorted({r["generator"] for r in state["rollouts"]})
    for g in generators:
        agent = f"generator_{g}"
        group = sorted((r for r in state["rollouts"] if r["generator"] == g), key=lambda r: r["index"])
        out[f"{agent}_rollouts.jsonl"] = {
            **head,
            "rollouts": group,
            "group": group_summary(group),
            "extraction": extractions.get(agent),
        }
    fused = sorted(state.get("fused", []), key=lambda r: r["generator"])
    if fused:
        out["critic_results.jsonl"] = {
            **head,
            "fused": {f"generator_{r['generator']}": r for r in fused},
            "group": group_summary(fused),
            "extraction": extractions.get("critic"),
            "final_answer": state.get("final_answer"),
            "final_correct": state.get("final_correct", False),
        }
    return out


def write_problems(run_dir: Path, states: list[dict[str, Any]], epoch: int) -> None:
    """Upsert finished problems into every export file they belong to, each file rewritten once."""
    per_file: dict[str, list[dict[str, Any]]] = {}
    for state in states:
        for name, line in problem_lines(state, epoch).items():
            per_file.setdefault(name, []).append(line)
    for name, lines in per_file.items():
        upsert_lines(run_dir / name, lines)


def write_bank(run_dir: Path, bank: str, records: list[dict[str, Any]]) -> None:
    """`<bank>_experiences.json`: a JSON list of experience records."""
    atomic_write(run_dir / f"{bank}_experiences.json", json.dumps(records, ensure_ascii=False, indent=1) + "\n")
