"""The commands a prompt engineer runs in a loop start without importing the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from causal_grpo.cli import COMMANDS, app, load

HEAVY = ("langgraph", "langchain_core", "langchain_openai", "openai", "matplotlib")
# Runs a command in-process, then reports which heavy packages it imported.
PROBE = """
import json, sys
from causal_grpo.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.stdin.readline())))
print("HEAVY=" + json.dumps(heavy))
"""


def _imported(tmp_path: Path, *args: str) -> tuple[list[str], str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        input=json.dumps(HEAVY) + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    marker = next(line for line in result.stdout.splitlines() if line.startswith("HEAVY="))
    return json.loads(marker.removeprefix("HEAVY=")), result.stdout


@pytest.mark.parametrize("args", [["--help"], ["datasets"], ["scaffold", "check", "SCAFFOLD"]])
def test_light_commands_import_no_heavy_library(tmp_path: Path, args: list[str]) -> None:
    scaffold = tmp_path / "s.json"
    scaffold.write_text(
        json.dumps(
            {
                "nodes": [{"id": "a", "kind": "given", "value": "2"}, {"id": "t", "kind": "derived", "formula": "a*3"}],
                "target": "t",
            }
        )
    )
    heavy, out = _imported(tmp_path, *[str(scaffold) if a == "SCAFFOLD" else a for a in args])
    assert heavy == [], out
    if args == ["--help"]:
        assert all(name in out for name in COMMANDS)
    if args[0] == "scaffold":
        assert "answer: 6" in out


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    heavy, _ = _imported(tmp_path, "report", "--help")
    assert "langgraph" in heavy


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_listed_help_is_the_commands_own(name: str) -> None:
    assert COMMANDS[name].help == load(name).get_short_help_str(limit=500)


def test_every_command_still_runs_through_the_group() -> None:
    for name in COMMANDS:
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_every_subcommand_of_a_group_is_reachable() -> None:
    # `simulator` and `local-model` hold a single subcommand; they must stay groups, as before the lazy load
    for group, sub in [
        ("simulator", "serve"),
        ("local-model", "serve"),
        ("scaffold", "check"),
        ("experiences", "list"),
    ]:
        result = CliRunner().invoke(app, [group, sub, "--help"])
        assert result.exit_code == 0, (group, sub, result.output)
