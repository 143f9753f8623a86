"""The `datasets` and `scaffold check` commands through typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from causal_grpo.cli import scaffold
from causal_grpo.cli.datasets import datasets

runner = CliRunner()


def _datasets_app() -> typer.Typer:
    app = typer.Typer()
    app.command("datasets")(datasets)

    @app.callback()
    def _root() -> None:
        """Keep 'datasets' a subcommand, as in the main app."""

    return app


def test_datasets_table() -> None:
    result = runner.invoke(_datasets_app(), ["datasets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name, count in [("full", "90"), ("aime2024", "30"), ("aime2025", "30"), ("physics", "30")]:
        line = next(line for line in result.output.splitlines() if line.startswith(f"│ {name} "))
        assert count in line


def test_datasets_json() -> None:
    result = runner.invoke(_datasets_app(), ["datasets", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(d["name"], d["count"]) for d in listed] == [
        ("full", 90),
        ("aime2024", 30),
        ("aime2025", 30),
        ("physics", 30),
    ]
    assert listed[3]["domains"] == ["physics"] and listed[3]["files"] == ["physics.json"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6 N", ("6", "N")),
        ("9.8 m/s^2", ("9.8", "m/s^2")),
        ("1.59e6m", ("1.59e6", "m")),
        ("-5 e", ("-5", "e")),
        ("204", ("204", "")),
        ("3/4", ("3/4", "")),
        (" 3 / 4 ", ("3 / 4", "")),
        (r"2\sqrt{3}", (r"2\sqrt{3}", "")),
        (r"3 \sqrt{2}", (r"3 \sqrt{2}", "")),
        (r"\frac{3}{4}", (r"\frac{3}{4}", "")),
        ("2 pi", ("2 pi", "")),
        ("30 degree", ("30", "degree")),
    ],
)
def test_split_reference(text: str, expected: tuple[str, str]) -> None:
    assert scaffold.split_reference(text) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "missing.json"], "missing.json: no such file"),
        (["check", "bad.json"], "bad.json: not JSON (line 1"),
        (["check", "bad.json", "--answer", "6 N", "--problem-id", "physics_009"], "not both"),
        (["check", "bad.json", "--problem-id", "physics_999"], "no shipped problem has id 'physics_999'"),
    ],
)
def test_scaffold_check_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{nodes: []}", encoding="utf-8")
    result = runner.invoke(scaffold.app, args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


FORCE = {
    "nodes": [
        {"id": "m", "kind": "given", "value": "2.0", "unit": "kg", "description": "mass"},
        {"id": "a", "kind": "given", "value": "3", "unit": "m/s^2", "description": "acceleration"},
        {"id": "F", "kind": "derived", "formula": "m*a", "unit": "N", "description": "net force"},
    ],
    "target": "F",
}


def _file(tmp_path: Path, data: object) -> str:
    path = tmp_path / "scaffold.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_check_a_valid_scaffold(tmp_path: Path) -> None:
    result = runner.invoke(scaffold.app, ["check", _file(tmp_path, FORCE), "--answer", "6 N"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "answer: 6 N" in result.stdout
    assert "r_graph = 1.000" in result.stdout
    assert "r_ans = 1: 6 N = 6 N; reference 6 N" in result.stdout
    assert "valid" in result.stdout


@pytest.mark.parametrize(
    ("answer", "r_ans"),
    [("6 N", 1.0), ("6000 mN", 1.0), ("6 kg", 0.0), ("7 N", 0.0), ("6", 1.0), ("3/4", 0.0)],
)
def test_check_json_with_an_answer(tmp_path: Path, answer: str, r_ans: float) -> None:
    result = runner.invoke(scaffold.app, ["check", _file(tmp_path, FORCE), "--answer", answer, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["errors"] == []
    assert report["values"] == {"m": "2", "a": "3", "F": "6"}
    assert report["answer"]["unit"] == "N"
    assert report["r_graph"]["score"] == pytest.approx(1.0)
    assert report["r_ans"]["score"] == r_ans


def test_check_against_a_shipped_problem(tmp_path: Path) -> None:
    data = {
        "nodes": [
            {"id": "r_km", "kind": "given", "value": "1590", "unit": "km"},
            {"id": "r", "kind": "derived", "formula": "r_km", "unit": "m"},
        ],
        "target": "r",
    }
    args = ["check", _file(tmp_path, data), "--problem-id", "physics_009", "--json"]
    report = json.loads(runner.invoke(scaffold.app, args).stdout)
    assert report["r_ans"]["score"] == 1.0 and "1590 km" in report["r_ans"]["detail"]


def test_check_shows_exactness_and_the_deterministic_half_of_r_logic(tmp_path: Path) -> None:
    data = {
        "nodes": [
            {"id": "perigee", "kind": "given", "value": "300", "unit": "km"},
            {"id": "fudge", "kind": "given", "value": "7"},
            {"id": "r", "kind": "derived", "formula": "perigee * fudge / 7", "unit": "m"},
        ],
        "target": "r",
    }
    path = _file(tmp_path, data)
    report = json.loads(runner.invoke(scaffold.app, ["check", path, "--problem-id", "physics_009", "--json"]).stdout)
    assert report["exact"] is True
    checks = report["r_logic_checks"]
    assert checks["breakdown"]["givens_traceable"] == pytest.approx(0.5)
    assert "untraced: fudge" in checks["detail"]
    result = runner.invoke(scaffold.app, ["check", path, "--problem-id", "physics_009"], env={"COLUMNS": "80"})
    assert "(exact)" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("r_logic checks = "))
    assert "givens_traceable 0.50" in line and "untraced: fudge" in line  # one line, not wrapped at 80 columns


def test_check_shows_the_analysis(tmp_path: Path) -> None:
    path = _file(tmp_path, {**FORCE, "analysis": "Newton's second law: F = m a."})
    result = runner.invoke(scaffold.app, ["check", path], env={"COLUMNS": "120"})
    assert "analysis: Newton's second law: F = m a." in result.stdout
    report = json.loads(runner.invoke(scaffold.app, ["check", path, "--json"]).stdout)
    assert report["analysis"] == "Newton's second law: F = m a."


def test_check_an_invalid_scaffold(tmp_path: Path) -> None:
    data = {**FORCE, "nodes": [*FORCE["nodes"][:2], {"id": "F", "kind": "derived", "formula": "m + a", "unit": "N"}]}
    result = runner.invoke(scaffold.app, ["check", _file(tmp_path, data)], env={"COLUMNS": "120"})
    assert result.exit_code == 1
    assert "dimension" in result.stdout and "invalid" in result.stdout
    report = json.loads(runner.invoke(scaffold.app, ["check", _file(tmp_path, data), "--json"]).stdout)
    assert report["valid"] is False and report["errors"][0]["kind"] == "dimension"
    assert report["r_graph"]["breakdown"]["units_consistent"] == 0.0
    assert report["r_ans"] is None


def test_check_json_that_is_not_a_scaffold(tmp_path: Path) -> None:
    result = runner.invoke(scaffold.app, ["check", _file(tmp_path, {"nodes": "none"}), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["errors"][0]["kind"] == "schema" and report["r_graph"]["score"] == 0.0
