"""What `causal-grpo train` and `review` say, through the real command line (issue 26, items 3, 7 and 12)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "causal-grpo")
TRAIN = ["train", "--model", "simulated", "--max-problems", "4", "--rollouts", "2", "--batch-size", "2"]


def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == code, (done.stdout, done.stderr)
    return done


def closing(stdout: str, start: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(start))


def test_a_paused_review_run_says_what_it_did_and_review_says_rejected(tmp_path):
    home = ["--home", str(tmp_path)]
    done = cli(*TRAIN, "--review", *home, code=3)
    line = closing(done.stdout, "paused for review")
    answered = [lng for lng in done.stdout.splitlines() if lng.startswith("aime2024_")]
    right = sum("final ✓" in lng for lng in answered)
    assert f"final answers right on {right}/{len(answered)}" in line and right > 0
    assert "0 model calls" not in line and "accuracy 0%" not in line
    assert "causal-grpo review" in done.stdout  # how to go on
    assert not any(lng.rstrip().endswith("banks") for lng in answered)  # no empty banks field

    decided = cli("review", "--reject-all", *home)
    assert re.match(r"\d+ operation\(s\) rejected: ", decided.stdout) and "rejectd" not in decided.stdout

    again = cli(*TRAIN, "--review", *home, code=3)
    line = closing(again.stdout, "paused for review")
    this, whole = re.search(r"(\d+) model calls, \S+ tokens this start, (\d+) model calls", line).groups()
    assert 0 < int(this) < int(whole)


def test_a_dead_endpoint_fails_at_once_naming_it(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    started = time.monotonic()
    env_key = {"OPENAI_API_KEY": "sk-secret-key-1234"}
    os.environ.update(env_key)
    try:
        done = cli(*TRAIN, "--base-url", url, "--home", str(tmp_path), code=1)
    finally:
        os.environ.pop("OPENAI_API_KEY")
    assert time.monotonic() - started < 15  # startup included; it retried for 33 s before
    assert done.stderr.strip().splitlines() == [f"error: cannot connect to {url} for model simulated "
                                                "(connection refused); check --base-url"]  # fmt: skip
    assert "sk-secret" not in done.stdout + done.stderr


def test_minibatch_decisions_follow_their_batch_and_the_summary_counts_them(tmp_path):
    done = cli(*TRAIN, "--accept-updates", "minibatch:2", "--home", str(tmp_path))
    lines = done.stdout.splitlines()
    kinds = ["p" if lng.startswith("aime2024_") else "b" for lng in lines if lng.startswith(("aime2024_", "batch "))]
    assert kinds == ["p", "p", "b", "p", "p", "b"]
    decisions = [lng for lng in lines if lng.startswith("batch ")]
    kept = sum("edits kept" in d for d in decisions)
    trial = sum(int(re.search(r"trial cost (\d+) calls", d).group(1)) for d in decisions)
    summary = closing(done.stdout, "done in")
    assert f"minibatch acceptance: {kept} batch(es) kept, {2 - kept} rolled back, {trial} trial call(s)" in summary
    assert "{" not in summary and "'" not in summary  # no Python dict
    if "banks " in summary:
        assert re.search(r"banks (empty|[a-z_0-9]+ \d+(, [a-z_0-9]+ \d+)*)", summary)
