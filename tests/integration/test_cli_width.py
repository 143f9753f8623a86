"""Help and tables through the real command line, piped on 80 columns: nothing is cut (issue 26, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from causal_grpo.cli import COMMANDS, load

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "causal-grpo")


def piped(*args: str) -> str:
    """The command's standard output through a pipe, as `causal-grpo ... | less` sees it on 80 columns."""
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def words(text: str) -> str:
    return " ".join(text.split())


def test_the_command_list_keeps_every_name_and_line_whole():
    shown = piped("--help")
    assert max(map(len, shown.splitlines())) <= 80
    for name, entry in COMMANDS.items():
        assert f"  {name}  " in shown
        assert words(entry.help) in words(shown), name


HELPS = [(["eval"], "eval"), (["train"], "train"), (["experiences", "list"], "experiences"), (["review"], "review")]


@pytest.mark.parametrize(("path", "command"), HELPS)
def test_help_shows_every_flag_whole_and_wraps_its_text(path, command):
    shown = piped(*path, "--help")
    assert "…" not in shown and max(map(len, shown.splitlines())) <= 80
    target = load(command)
    if len(path) > 1:  # a group's subcommand
        target = target.commands[path[1]]
    for param in target.params:
        for flag in param.opts + param.secondary_opts:
            if flag.startswith("--"):
                assert flag in shown.split() or f"{flag}/" in shown, flag
        if getattr(param, "help", None):
            assert words(param.help) in words(shown), param.name
