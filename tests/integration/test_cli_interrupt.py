"""Ctrl-C during `causal-grpo train`, at several moments: one line, exit 130, and the same command resumes
(issue 26, item 6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from causal_grpo.cli.train import INTERRUPTED

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "causal-grpo")


def command(home: Path) -> list[str]:
    return [CLI, "train", "--model", "simulated", "--max-problems", "3", "--rollouts", "2", "--batch-size", "1",
            "--home", str(home)]  # fmt: skip


# The script at its shutdown, held there: the sandbox's workers are still to be stopped when the Ctrl-C comes.
SHUTDOWN = """
import os, sys, time
from causal_grpo.cli import app
from causal_grpo.scaffold import sandbox

stop = sandbox.Sandbox.stop

def stop_slowly(self):
    print("stopping the sandbox", flush=True)
    time.sleep(float(os.environ.get("STOP_SECONDS", "1")))
    stop(self)

sandbox.Sandbox.stop = stop_slowly
sys.argv[0] = "causal-grpo"
app(sys.argv[1:])
"""


def interrupted_at(
    home: Path, marker: str, delay: float = 0.0, times: int = 1, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    """Run the command, send SIGINT `times` times `delay` seconds after the first stdout line starting with `marker`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **env_vars}
    argv = [sys.executable, "-c", SHUTDOWN, *command(home)[1:]] if marker == "stopping" else command(home)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(marker):
            time.sleep(delay)
            assert proc.poll() is None, "the command ended before it could be interrupted"
            for _ in range(times):
                proc.send_signal(signal.SIGINT)
                time.sleep(0.1)
            break
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + out, err)


# early: models and graphs still loading; mid-run: after the first problem's line; shutdown: stopping the workers
MOMENTS = [("run ", 0.0), ("run ", 0.5), ("aime2024_001", 0.0), ("stopping", 0.0)]


@pytest.mark.parametrize(("marker", "delay"), MOMENTS)
def test_ctrl_c_says_one_line_exits_130_and_the_same_command_resumes(tmp_path, marker, delay):
    done = interrupted_at(tmp_path, marker, delay)
    assert done.returncode == 130, (done.stdout, done.stderr)
    assert done.stderr.strip().splitlines() == [INTERRUPTED], done.stderr
    assert "Traceback" not in done.stdout + done.stderr

    again = subprocess.run(command(tmp_path), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "done in" in again.stdout and "final accuracy" in again.stdout
    assert (tmp_path / "runs" / "default" / "result.json").exists()


def test_a_second_ctrl_c_at_shutdown_leaves_without_waiting_for_the_workers(tmp_path):
    # the workers' stop is held for 10 minutes: only leaving at once ends the command within the 30 s it is given
    done = interrupted_at(tmp_path, "stopping", times=2, STOP_SECONDS="600")
    assert done.returncode == 130, done.stderr
    assert done.stderr.startswith(INTERRUPTED + "\n") and "Traceback" not in done.stdout + done.stderr


# asyncio.run with a Ctrl-C taken just after its SIGINT handler is installed (before it resets its count of them)
RACE = """
import functools, signal, sys
from causal_grpo.cli import app

install = signal.signal

def signal_then_ctrl_c(signum, handler):
    previous = install(signum, handler)
    if isinstance(handler, functools.partial) and getattr(handler.func, "__name__", "") == "_on_sigint":
        handler(signal.SIGINT, None)
    return previous

signal.signal = signal_then_ctrl_c
app(sys.argv[1:])
"""


def test_a_ctrl_c_as_the_event_loop_starts_says_the_one_line_and_exits_130(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", RACE, *command(tmp_path)[1:]], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [INTERRUPTED] and "Traceback" not in done.stdout + done.stderr
