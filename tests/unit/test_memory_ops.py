"""Content checks and the leakage guard of bank operations."""

from __future__ import annotations

import pytest
from causal_grpo.memory.ops import MAX_CONTENT_CHARS, PlannedOp, answer_leak, apply_planned, check_content, copied_span
from causal_grpo.memory.schemas import Experience, make_id, parse_id

PROBLEM = (
    "Let ABC be a triangle inscribed in circle omega. The tangents to omega at B and C intersect at point D, "
    "and AD intersects omega at P. If AB = 5, BC = 9 and AC = 10, find AP."
)


@pytest.mark.parametrize(
    ("content", "answer", "unit", "leaks"),
    [
        ("The answer is 204.", "204", None, True),
        ("So n = 204.0 works.", "204", None, True),
        ("Check 1204 and 2040 separately.", "204", None, False),
        ("Divide by 2 before squaring.", "2", None, False),
        ("The answer is 2.", "2", None, True),
        ("It comes out at 9.8 m/s^2 here.", "9.8", "m/s^2", True),
        ("Use g = 9.81 for Earth.", "9.8", "m/s^2", False),
        ("Final value \\frac{3}{4} again.", "\\frac{3}{4}", None, True),
        ("Angles near 109 degrees are obtuse.", "109", "degree", True),
        ("Nothing to see.", "", None, False),
    ],
)
def test_answer_leak(content, answer, unit, leaks):
    assert (answer_leak(content, answer, unit) is not None) is leaks


def test_copied_span_by_words_and_by_characters():
    assert "8 consecutive words" in copied_span(
        "The tangents to omega at B and C intersect at point D always.", PROBLEM
    )
    assert copied_span("Use power of a point at D, then the ratio AP/AD.", PROBLEM) is None
    long_formula = "x1y2z3w4v5u6t7s8r9q0p1o2n3m4l5k6j7i8h9g0f1e2d3c4b5a6z7y8x9w0"  # one word, 60 characters
    assert "characters" in copied_span(f"Combine {long_formula} first", f"Given {long_formula}, find k.")
    assert copied_span("anything", "") is None


def test_a_copied_run_counts_from_sixty_characters_and_is_reported_whole():
    run = "x1y2z3w4v5u6t7s8r9q0p1o2n3m4l5k6j7i8h9g0f1e2d3c4b5a6z7y8x9w0a1b2c3d4e5f6g7"  # one word, 74 characters
    problem = f"Given {run}, find k."
    assert copied_span(f"Combine{run[:59]}!", problem) is None
    assert copied_span(f"Combine{run[:60]}!", problem) == "copies 60 characters of the problem"
    assert copied_span(f"Use {run[5:]} and more", problem) == "copies 69 characters of the problem"


def test_check_content_normalises_and_caps():
    assert check_content("  two\n  lines ") == ("two lines", None)
    assert check_content(None)[1] == "empty content"
    assert "longer than" in check_content("word " * MAX_CONTENT_CHARS)[1]
    assert check_content("Power of a point.", answer="113", problem_text=PROBLEM) == ("Power of a point.", None)


def test_apply_planned_is_a_no_op_for_a_known_edit_key():
    add = PlannedOp(index=0, op="add", status="applied", id="G1-001", bank="generator_1", content="Lesson.")
    record = apply_planned(None, add, key="k#0", run="r", problem_id="p", at="t")
    assert record.content == "Lesson." and record.history[0].key == "k#0"
    assert apply_planned(record, add, key="k#0", run="r", problem_id="p", at="t") is None
    with pytest.raises(ValueError, match="already taken"):
        apply_planned(record, add, key="other#0", run="r", problem_id="p", at="t")
    delete = PlannedOp(index=1, op="delete", status="applied", id="G1-001", bank="generator_1")
    deleted = apply_planned(record, delete, key="k2#1", run="r", problem_id="p", at="t2")
    assert deleted.deleted and deleted.updated_at == "t2" and not record.deleted
    assert apply_planned(deleted, delete, key="k3#0", run="r", problem_id="p", at="t3") is None


def test_ids():
    assert make_id("generator_2", 7) == "G2-007" and make_id("shared", 1234) == "S-1234"
    assert parse_id("C-012") == ("critic", 12)
    assert parse_id("X-001") is None and parse_id("G1-abc") is None
    assert Experience(id="G3-010", content="x").number == 10
