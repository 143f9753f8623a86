"""Loading the shipped datasets and users' files, and the errors bad files get."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from causal_grpo.errors import CausalGrpoError, DatasetError
from causal_grpo.problems import MAX_ANSWER_CHARS, MAX_TEXT_CHARS, dataset_names, list_datasets, load_problems


@pytest.mark.parametrize(
    ("name", "count", "first", "last", "domain"),
    [
        ("aime2024", 30, "aime2024_001", "aime2024_030", "math"),
        ("aime2025", 30, "aime2025_001", "aime2025_030", "math"),
        ("physics", 30, "physics_001", "physics_030", "physics"),
    ],
)
def test_shipped_dataset(name: str, count: int, first: str, last: str, domain: str) -> None:
    problems = load_problems(name)
    assert len(problems) == count
    assert (problems[0].id, problems[-1].id) == (first, last)
    assert {p.domain for p in problems} == {domain}
    assert {p.dataset for p in problems} == {name}
    assert all(p.text and p.answer for p in problems)


def test_full_is_the_three_sets_in_order() -> None:
    problems = load_problems()
    assert len(problems) == 90
    assert [p.dataset for p in problems[::30]] == ["aime2024", "aime2025", "physics"]
    assert len({p.id for p in problems}) == 90


def test_shipped_fields() -> None:
    physics = {p.id: p for p in load_problems("physics")}
    assert physics["physics_009"].answer == "1590"
    assert physics["physics_009"].unit == "km"
    assert physics["physics_011"].answer == "3.51e15"
    assert physics["physics_021"].unit == ""
    assert physics["physics_001"].topic == "mechanics: vectors"
    aime = load_problems("aime2024")
    assert aime[0].answer == "204" and aime[0].unit is None
    assert all(re.fullmatch(r"\d{1,3}", p.answer) for p in aime)


@pytest.mark.parametrize(
    ("kwargs", "ids"),
    [
        ({"max_problems": 2}, ["aime2024_001", "aime2024_002"]),
        ({"start_problem": 30, "max_problems": 2}, ["aime2024_030", "aime2025_001"]),
        ({"start_problem": 89}, ["physics_029", "physics_030"]),
        ({"start_problem": 90, "max_problems": 5}, ["physics_030"]),
        ({"max_problems": 0}, []),
    ],
)
def test_slicing(kwargs: dict[str, int], ids: list[str]) -> None:
    assert [p.id for p in load_problems("full", **kwargs)] == ids


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_problem": 0}, "start_problem must be 1 or more"),
        ({"start_problem": 91}, "past the end"),
        ({"max_problems": -1}, "max_problems must be 0 or more"),
    ],
)
def test_bad_slicing(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_problems("full", **kwargs)


def test_loaded_problems_are_copies() -> None:
    load_problems("physics")[0].answer = "changed"
    assert load_problems("physics")[0].answer == "109"


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(DatasetError) as info:
        load_problems("aime2023")
    message = str(info.value)
    assert "aime2023" in message
    for name in ("full", "aime2024", "aime2025", "physics"):
        assert name in message
    assert isinstance(info.value, CausalGrpoError) and isinstance(info.value, ValueError)


def test_list_datasets() -> None:
    infos = {i.name: i for i in list_datasets()}
    assert list(infos) == dataset_names() == ["full", "aime2024", "aime2025", "physics"]
    assert infos["full"].count == 90 and infos["full"].domains == ["math", "physics"]
    assert infos["physics"].files == ["physics.json"] and infos["physics"].count == 30


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_user_jsonl(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "text": "What is 2+2?", "answer": 4},
        {"text": "Drop a ball for 2 s; how far?", "answer": 19.6, "unit": "m", "topic": "kinematics"},
        {"text": "Half of 3?", "answer": "3/2", "domain": "math", "source": "ignored"},
        {"text": "Speed?", "answer": "3.0e8", "domain": "physics"},
    ]
    path = _write(tmp_path, "mine.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    problems = load_problems(path)
    assert [p.id for p in problems] == ["a", "mine_002", "mine_003", "mine_004"]
    assert [p.answer for p in problems] == ["4", "19.6", "3/2", "3.0e8"]
    assert [p.domain for p in problems] == ["math", "physics", "math", "physics"]
    assert {p.dataset for p in problems} == {"mine"}
    assert problems[1].topic == "kinematics" and problems[1].unit == "m"
    assert load_problems(str(path), start_problem=2, max_problems=1)[0].id == "mine_002"


def test_numbers_keep_their_written_text(tmp_path: Path) -> None:
    path = _write(tmp_path, "n.json", '[{"text": "t", "answer": 3.51e15}, {"text": "u", "answer": 2.50}]')
    assert [p.answer for p in load_problems(path)] == ["3.51e15", "2.50"]


def test_user_json_array(tmp_path: Path) -> None:
    path = _write(tmp_path, "set.json", json.dumps([{"id": "x1", "text": "q", "answer": "7", "unit": "N"}]))
    (problem,) = load_problems(path)
    assert (problem.id, problem.domain, problem.dataset, problem.unit) == ("x1", "physics", "set", "N")


@pytest.mark.parametrize(
    ("content", "ids"),
    [
        ('  [{"text": "q", "answer": 1}]', ["data_001"]),
        ('{"text": "q", "answer": 1}\n{"text": "r", "answer": 2}', ["data_001", "data_002"]),
    ],
)
def test_unknown_extension_is_sniffed(tmp_path: Path, content: str, ids: list[str]) -> None:
    assert [p.id for p in load_problems(_write(tmp_path, "data.txt", content))] == ids


def test_raw_line_separator_inside_a_string(tmp_path: Path) -> None:
    path = _write(tmp_path, "s.jsonl", '{"text": "a\u2028b", "answer": 1}\n')
    assert load_problems(path)[0].text == "a\u2028b"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("e.jsonl", "", r"e\.jsonl: the file is empty"),
        ("e.json", "  \n ", r"e\.json: the file is empty"),
        ("e.json", "[]", r"e\.json: contains no problems"),
        ("b.jsonl", '{"text": "q", "answer": 1}\n{"text": "q", answer: 1}', r"b\.jsonl: line 2: invalid JSON"),
        ("b.json", '[{"text": "q",\n "answer": 1,}]', r"b\.json: line 2: invalid JSON"),
        ("b.jsonl", '\n{"answer": 1}', r"b\.jsonl: line 2: missing 'text'"),
        ("b.json", '[{"text": "q", "answer": 1}, {"text": "q"}]', r"b\.json: item \[1\]: missing 'answer'"),
        ("b.json", '{"text": "q", "answer": 1}', r"b\.json: expected a JSON array of problem objects, got an object"),
        ("b.json", '[{"text": "q", "answer": 1}, 5]', r"item \[1\]: expected a problem object, got a number"),
        ("b.jsonl", '["q", 1]', r"line 1: expected a problem object, got an array"),
        ("b.jsonl", '{"text": 5, "answer": 1}', r"line 1: 'text' must be a string, got a number"),
        ("b.jsonl", '{"text": "q", "answer": true}', r"line 1: 'answer' must be a string or a number, got a boolean"),
        ("b.jsonl", '{"text": "q", "answer": null}', r"'answer' must be a string or a number, got null"),
        ("b.jsonl", '{"text": "q", "answer": ""}', r"line 1: 'answer': String should have at least 1 character"),
        ("b.jsonl", '{"text": "q", "answer": 1, "unit": 3}', r"'unit' must be a string, got a number"),
        ("b.jsonl", '{"text": "q", "answer": 1, "domain": "chemistry"}', r"line 1: 'domain': Input should be"),
        (
            "b.jsonl",
            '{"id": "p", "text": "q", "answer": 1}\n{"id": "p", "text": "r", "answer": 2}',
            r"line 2: duplicate id 'p' \(first at line 1\)",
        ),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_problems(_write(tmp_path, name, content))


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "latin.jsonl", b'{"text": "ok", "answer": 1}\n{"text": "caf\xe9", "answer": 2}\n')
    with pytest.raises(DatasetError, match=r"latin\.jsonl: line 2: not valid UTF-8"):
        load_problems(path)


def test_a_directory_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_problems(tmp_path)


def test_a_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    path = _write(tmp_path, "bom.txt", b'\xef\xbb\xbf[{"text": "q", "answer": 1}]')
    assert [p.id for p in load_problems(path)] == ["bom_001"]


def test_not_utf8_names_the_byte_within_its_line(tmp_path: Path) -> None:
    # the bad byte is the 14th of line 2, the 42nd of the file
    path = _write(tmp_path, "latin.jsonl", b'{"text": "ok", "answer": 1}\n{"text": "caf\xe9", "answer": 2}\n')
    with pytest.raises(DatasetError, match=r"line 2: not valid UTF-8 \(byte 14 of the line\)$"):
        load_problems(path)


def test_an_absurdly_long_problem_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    huge = json.dumps({"text": "x" * (5 * 1024 * 1024), "answer": 1})
    path = _write(tmp_path, "big.jsonl", '{"text": "fine", "answer": 1}\n' + huge + "\n")
    with pytest.raises(
        DatasetError, match=rf"big\.jsonl: line 2: 'text' is 5,242,880 characters long; the limit is {MAX_TEXT_CHARS:,}"
    ):
        load_problems(path)
    # at the limit it is a problem like any other
    path = _write(tmp_path, "edge.jsonl", json.dumps({"text": "y" * MAX_TEXT_CHARS, "answer": 1}) + "\n")
    assert len(load_problems(path)[0].text) == MAX_TEXT_CHARS


def test_an_absurdly_long_answer_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "answers.json", json.dumps([{"text": "t", "answer": "9" * (MAX_ANSWER_CHARS + 1)}]))
    with pytest.raises(DatasetError, match=r"answers\.json: item \[0\]: 'answer' is 201 characters long"):
        load_problems(path)


def test_every_shipped_problem_is_within_the_limits() -> None:
    problems = load_problems("full")
    assert max(len(p.text) for p in problems) < 2000 < MAX_TEXT_CHARS
    assert max(len(p.answer) for p in problems) <= MAX_ANSWER_CHARS
