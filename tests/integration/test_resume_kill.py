"""Kill `causal-grpo train` with a real SIGKILL and start it again: it must end exactly as an undisturbed run.

Each killed process is the real command run by `kill_harness.py`, which sends itself SIGKILL at a chosen
event (see there). The resumed run's exports (rollouts, extractions, fusions, final answers, bank records
and counters), result rows and result.json must equal the undisturbed run's, clock fields aside.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

HARNESS = Path(__file__).with_name("kill_harness.py")
RUN = "ref"
# 4 problems in batches of 2 with 2 generators x 2 rollouts: two batches, so the second batch's rollouts
# read the banks the first one left, and a problem run after its batch's updates would see other ones.
ARGS = [
    "train",
    "--model",
    "simulated",
    "--dataset",
    "full",
    "--max-problems",
    "4",
    "--batch-size",
    "2",
    "--rollouts",
    "2",
    "--generators",
    "1,2",
    "--run",
    RUN,
    "--seed",
    "7",
]


def train(
    home: Path, kill: str | None = None, log: Path | None = None, *extra: str, command: list[str] = ARGS
) -> subprocess.CompletedProcess[str]:
    """The train command (or another) in a process of its own, killed at `kill` (`<event>:<n>`, see kill_harness)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAUSAL_GRPO_", "OPENAI_"))}
    if kill is not None:
        env["CAUSAL_GRPO_KILL"] = kill
    if log is not None:
        env["KILL_HARNESS_LOG"] = str(log)
    return subprocess.run(
        [sys.executable, str(HARNESS), *command, *extra, "--home", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def killed(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode == -9


def summary(folder: Path) -> dict[str, Any]:
    """What result.json says about the whole run, without what only this start (and its clock) decides."""
    result = json.loads((folder / "result.json").read_text())
    per_start = {"status", "usage_this_start"}
    return {
        "problems": [{k: v for k, v in p.items() if k not in per_start} for p in result["problems"]],
        "usage": result["usage"],
        "bank_sizes": result["bank_sizes"],
        "accuracy": result["accuracy"],
    }


@pytest.fixture
def assert_same_run(exports, same_results):
    """`assert_same_run(reference folder, resumed folder)`."""

    def check(reference: Path, resumed: Path) -> None:
        assert exports(resumed) == exports(reference)
        same_results(reference / "results.db", resumed / "results.db", RUN)
        assert summary(resumed) == summary(reference)
        assert not [p.name for p in resumed.iterdir() if p.name.endswith(".tmp")]

    return check


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The undisturbed run's folder."""
    home = tmp_path_factory.mktemp("undisturbed")
    done = train(home)
    assert done.returncode == 0, done.stderr
    return home / "runs" / RUN


def test_a_kill_right_after_a_threads_start_writes_resumes_as_the_undisturbed_run(reference, tmp_path, assert_same_run):
    # The 4th problem's thread is the second batch's second one: killed right after its `__start__` task's
    # writes were committed, it holds only its input checkpoint and those writes (no next node), while the
    # 3rd problem may be further on. Taken for finished, it was run inside the learn step after the 3rd
    # problem's bank update, and its rollouts saw experiences the undisturbed run never shows them.
    log = tmp_path / "kills.log"
    first = train(tmp_path, "start-writes:4", log)
    assert killed(first), first.stderr
    assert log.read_text().startswith("killed at start-writes 4 ref:1:")
    second = train(tmp_path)
    assert second.returncode == 0, second.stderr
    folder = tmp_path / "runs" / RUN
    assert_same_run(reference, folder)

    result = json.loads((folder / "result.json").read_text())
    statuses = [p["status"] for p in result["problems"]]
    assert statuses == ["earlier", "earlier", "done", "done"]
    earlier = [line.split()[0] for line in second.stdout.splitlines() if "(finished earlier)" in line]
    assert earlier == [p["id"] for p in result["problems"][:2]]
    # usage is the whole run's; this start's share is what the problems it finished recorded in it
    shares = [p["usage_this_start"]["calls"] for p in result["problems"]]
    assert shares[:2] == [0, 0] and all(n > 0 for n in shares[2:])
    assert result["usage_this_start"]["calls"] == sum(shares) < result["usage"]["calls"]


def test_seeded_kill_points_over_a_run_each_resume_as_the_undisturbed_run(reference, tmp_path, assert_same_run):
    # One run killed again and again, each start at another seeded point: during start-up (before anything
    # is written), mid-batch (after a committed write), in a bank update (between its store writes), between
    # an export's temporary file and its rename, while the second batch's problems start (the second one's
    # start writes: the kill that changed the result before), and after a checkpoint; then started once more.
    rng = random.Random(19)
    points = [
        f"time:{rng.randint(100, 1000)}",
        f"writes:{rng.randint(3, 20)}",
        f"bank-write:{rng.randint(1, 2)}",  # a batch's updates are written together: the first batch's 2 writes
        f"replace:{rng.randint(1, 3)}",
        "start-writes:2",
        f"checkpoint:{rng.randint(2, 6)}",
    ]
    log = tmp_path / "kills.log"
    for point in points:
        done = train(tmp_path, point, log)
        assert killed(done), f"{point}: {done.returncode} {done.stderr}"
    landed = log.read_text().splitlines()
    assert [line.split()[2] for line in landed] == [p.split(":")[0] for p in points]
    last = train(tmp_path)
    assert last.returncode == 0, last.stderr
    assert_same_run(reference, tmp_path / "runs" / RUN)


def reviewed_run(home: Path, kill_resume: str | None = None) -> Path:
    """The first batch under --review, every operation approved; its resume killed once at `kill_resume`."""
    approve = ["review", "--run", RUN, "--approve-all"]
    one_batch = ("--review", "--max-problems", "2")
    for _ in range(4):
        done = train(home, None, None, *one_batch)
        if done.returncode == 0:
            return home / "runs" / RUN
        assert done.returncode == 3, done.stderr
        assert train(home, command=approve).returncode == 0
        if kill_resume is not None:  # the start that applies the approved operations dies inside a bank write
            assert killed(train(home, kill_resume, None, *one_batch))
            kill_resume = None
    raise AssertionError("the reviewed run never finished")


def test_a_kill_while_a_review_resumes_ends_as_the_undisturbed_reviewed_run(tmp_path, exports):
    reference = reviewed_run(tmp_path / "undisturbed")
    resumed = reviewed_run(tmp_path / "killed", kill_resume="bank-write:1")
    assert exports(resumed) == exports(reference)
