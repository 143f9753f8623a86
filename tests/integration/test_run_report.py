"""What `causal-grpo train` says about a run: faults counted and said out loud, errors as one stderr line,
result.json over a resumed run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from causal_grpo.cli import app
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.runner import SimulatorServer

pytestmark = pytest.mark.integration

ENV = {"CAUSAL_GRPO_CONFIG": None, "CAUSAL_GRPO_DB": None}


def train(home: Path, *args: str, env: dict[str, str | None] | None = None):
    return CliRunner().invoke(app, ["train", "--home", str(home), *args], env={**ENV, **(env or {})})


def test_faults_are_counted_by_cause_in_the_summary_and_result_json(tmp_path):
    # 15 % transport errors (429, 500, drops, timeouts) and 20 % malformed output: the run finishes, and
    # says what it went through. The simulator's own statistics are the ground truth.
    config = SimulatorConfig(
        seed=3,
        error_rate_429=0.05,
        retry_after_s=0.01,
        error_rate_500=0.05,
        drop_rate=0.03,
        timeout_rate=0.02,
        hang_s=60.0,
        not_json_rate=0.1,
        wrong_schema_rate=0.1,
    )
    with SimulatorServer(config) as sim:
        done = train(
            tmp_path,
            *("--model", "simulated", "--base-url", sim.base_url, "--dataset", "physics", "--max-problems", "3"),
            *("--generators", "1,2", "--rollouts", "2", "--run", "faults", "--verbose"),
            env={
                "CAUSAL_GRPO_REQUEST_TIMEOUT": "1.0",
                "CAUSAL_GRPO_MAX_RETRIES": "3",
                "CAUSAL_GRPO_STRUCTURED_MODE": "json_schema",
            },
        )
        served = sim.stats()
    assert done.exit_code == 0, done.output
    faults = json.loads((tmp_path / "runs" / "faults" / "result.json").read_text())["faults"]
    # every injected fault was retried by the client, or ended a call after its retries
    for cause in ("429", "500", "drop", "timeout"):
        assert served["errors"].get(cause, 0) == faults["retries"].get(cause, 0) + faults["failed_calls"].get(cause, 0)
    assert faults["retried_calls"] == sum(faults["retries"].values()) > 0
    # every malformed reply was re-asked, or left its call's output invalid
    assert sum(served["malformed"].values()) == faults["reasks"] + sum(faults["invalid_output"].values())
    assert faults["reasks"] > 0
    assert faults["invalid_rollouts"] == faults["invalid_output"].get("generator", 0) + faults["invalid_output"].get(
        "critic", 0
    )

    summary = next(line for line in done.stdout.splitlines() if line.startswith("done in"))
    assert f"{faults['retried_calls']} call(s) retried (" in summary
    assert f"{faults['reasks']} re-ask(s) after invalid output" in summary
    warning = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"{faults['retried_calls']} call(s) retried" in warning[0]
    # --verbose: one log line per retry, naming its cause
    retried = [line for line in done.stderr.splitlines() if "retrying after" in line]
    assert len(retried) == faults["retried_calls"]
    for cause, n in faults["retries"].items():
        assert sum(f"retrying after {cause}" in line for line in retried) == n


def test_a_run_without_faults_says_nothing_of_them(simulator, tmp_path):
    done = train(
        tmp_path,
        *("--model", "simulated", "--base-url", simulator.base_url, "--dataset", "aime2024", "--max-problems", "1"),
        *("--generators", "1", "--rollouts", "2", "--run", "clean"),
    )
    assert done.exit_code == 0, done.output
    assert "faults:" not in done.stdout and done.stderr == ""
    faults = json.loads((tmp_path / "runs" / "clean" / "result.json").read_text())["faults"]
    assert faults["retried_calls"] == faults["reasks"] == faults["invalid_rollouts"] == 0


def test_a_bad_dataset_is_one_unwrapped_line_on_stderr(tmp_path):
    folder = tmp_path / "a folder whose name is long enough to push the message well past eighty columns"
    folder.mkdir()
    path = folder / "problems.jsonl"
    path.write_bytes(b'{"text": "ok", "answer": 1}\n{"text": "caf\xe9", "answer": 2}\n')
    done = train(tmp_path, "--model", "simulated", "--dataset", str(path))
    assert done.exit_code == 1
    assert done.stdout == ""
    assert done.stderr == f"error: {path}: line 2: not valid UTF-8 (byte 14 of the line)\n"
    assert len(done.stderr) > 120  # one line although much wider than a pipe's 80 columns


def test_an_oversized_problem_is_refused_before_anything_runs(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"text": "x" * 1_000_000, "answer": "1"}) + "\n")
    done = train(tmp_path, "--model", "simulated", "--dataset", str(path), "--run", "huge")
    assert done.exit_code == 1
    assert done.stderr.startswith(f"error: {path}: line 1: 'text' is 1,000,000 characters long; the limit is ")
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "runs" / "huge").exists()


def test_result_json_after_a_second_start_describes_the_whole_run(simulator, tmp_path):
    args = (
        *("--model", "simulated", "--base-url", simulator.base_url, "--dataset", "full", "--max-problems", "4"),
        *("--batch-size", "2", "--generators", "1,2", "--rollouts", "2", "--run", "twice"),
    )
    assert train(tmp_path, *args).exit_code == 0
    path = tmp_path / "runs" / "twice" / "result.json"
    first = json.loads(path.read_text())
    again = train(tmp_path, *args)
    assert again.exit_code == 0, again.output
    second = json.loads(path.read_text())

    # per problem: the bank sizes after its own batch, not the run's final ones
    sizes = [p["bank_sizes"] for p in second["problems"]]
    assert sizes == [p["bank_sizes"] for p in first["problems"]]
    assert sizes[0] == sizes[1] != sizes[2] == sizes[3] == second["bank_sizes"]
    # marked as finished by an earlier start, with the whole run's usage and none of it this start's
    assert [p["status"] for p in first["problems"]] == ["done"] * 4
    assert [p["status"] for p in second["problems"]] == ["earlier"] * 4
    assert [p["usage"] for p in second["problems"]] == [p["usage"] for p in first["problems"]]
    assert second["usage"] == first["usage"] == first["usage_this_start"] and first["usage"]["calls"] > 0
    assert second["usage_this_start"] == {"prompt_tokens": 0, "completion_tokens": 0, "calls": 0}
    assert f"{first['usage']['calls']} model calls" in again.stdout
    assert "0 model calls, 0+0 tokens this start" in again.stdout
    assert "over the whole run (4 problem(s) finished earlier, not rerun)" in again.stdout
