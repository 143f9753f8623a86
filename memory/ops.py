"""The extractor's bank operations as plans and outcomes: content checks, the leakage guard, record edits.

`ExperienceBank.apply` (in `bank.py`) turns a list of `ExperienceOp` into a journal of `PlannedOp` and
then into record edits with the pure functions here. The leakage guard rejects content that would teach
the answer of one problem instead of a lesson: the problem's answer written out (a number of two or more
digits as a standalone token, an explicit "answer is 5", the answer with its unit, or a symbolic answer of
three or more characters), or a copied span of the problem text (8 consecutive words, or 60 common
characters). Single-digit answers are too common in good advice ("divide by 2") to ban outright.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from typing import Literal

from causal_grpo.agents.extractor.schemas import Category
from causal_grpo.memory.schemas import Edit, Experience
from pydantic import BaseModel

MAX_CONTENT_CHARS = 400
COPIED_WORDS = 8
COPIED_CHARS = 60
REJECTED_REASON = "rejected in review"  # an operation a reviewer rejected: in the journal, never applied

Status = Literal["applied", "kept", "ignored", "rejected"]

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_WORD = re.compile(r"\w+")


class OpOutcome(BaseModel):
    """What became of one operation: applied, kept, ignored (bad target) or rejected (bad content)."""

    index: int
    op: Literal["add", "modify", "delete", "keep"]
    status: Status
    id: str | None = None
    bank: str | None = None
    reason: str = ""


class PlannedOp(OpOutcome):
    """An outcome plus what to write; the journal holds these between planning and applying."""

    content: str | None = None
    category: Category = "problem_solving_strategy"
    problem_type: str = "general"

    def outcome(self) -> OpOutcome:
        """The outcome without the payload."""
        return OpOutcome.model_validate(self.model_dump(include=set(OpOutcome.model_fields)))


class ApplyResult(BaseModel):
    """The outcome of one bank update; `replayed` is true when the op key had been applied before."""

    op_key: str
    outcomes: list[OpOutcome]
    replayed: bool = False

    def ids(self, op: str, status: Status = "applied") -> list[str]:
        """Ids of the operations of one kind with the given status, in order."""
        return [o.id for o in self.outcomes if o.op == op and o.status == status and o.id]

    @property
    def rejected(self) -> list[OpOutcome]:
        """Operations refused by the content checks or the leakage guard."""
        return [o for o in self.outcomes if o.status == "rejected"]

    @property
    def ignored(self) -> list[OpOutcome]:
        """Operations whose target does not exist, is deleted or belongs to another bank."""
        return [o for o in self.outcomes if o.status == "ignored"]


def normalize_content(text: str | None) -> str:
    """Collapse whitespace (an experience is one prompt line) and strip."""
    return " ".join((text or "").split())


def _compact(text: str) -> str:
    return re.sub(r"[\s$]", "", text).lower()


def answer_leak(content: str, answer: str | None, unit: str | None = None) -> str | None:
    """Why `content` gives the problem's answer away, or None when it does not."""
    answer = (answer or "").strip().strip("$").strip()
    if not answer:
        return None
    lowered = content.lower()
    if unit and _compact(f"{answer}{unit}") in _compact(content):
        return f"states the answer with its unit ({answer} {unit})"
    if _NUMBER.fullmatch(answer):
        mantissa = re.split(r"[eE]", answer.lstrip("+-"))[0]
        # the answer as a whole token: not a digit run inside a longer number, 204.0 counts as 204
        token = re.compile(rf"(?<![\w.]){re.escape(answer)}(?:\.0+)?(?![\w]|\.\d)")
        if sum(c.isdigit() for c in mantissa) >= 2 and token.search(content):
            return f"contains the answer {answer}"
        if re.search(rf"answer\s*(?:is|=|:|of)\s*{re.escape(answer)}(?![\w]|\.\d)", lowered):
            return f"states the answer {answer}"
        return None
    if len(_compact(answer)) >= 3 and _compact(answer) in _compact(content):
        return f"contains the answer {answer}"
    return None


def copied_span(content: str, problem_text: str | None) -> str | None:
    """Why `content` copies the problem text, or None when it does not."""
    if not problem_text:
        return None
    words = _WORD.findall(content.lower())
    problem_words = _WORD.findall(problem_text.lower())
    grams = {tuple(problem_words[i : i + COPIED_WORDS]) for i in range(len(problem_words) - COPIED_WORDS + 1)}
    for i in range(len(words) - COPIED_WORDS + 1):
        if tuple(words[i : i + COPIED_WORDS]) in grams:
            return f"copies {COPIED_WORDS} consecutive words of the problem"
    a, b = normalize_content(content).lower(), normalize_content(problem_text).lower()
    # a common run of COPIED_CHARS or more contains one of exactly COPIED_CHARS: a set lookup per window
    # decides it in linear time; the (quadratic) longest match is measured only for the message
    windows = {b[i : i + COPIED_CHARS] for i in range(len(b) - COPIED_CHARS + 1)}
    if any(a[i : i + COPIED_CHARS] in windows for i in range(len(a) - COPIED_CHARS + 1)):
        match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
        return f"copies {match.size} characters of the problem"
    return None


def check_content(
    text: str | None, *, answer: str | None = None, unit: str | None = None, problem_text: str | None = None
) -> tuple[str, str | None]:
    """The normalised content and the reason to reject it (None when it is acceptable)."""
    content = normalize_content(text)
    if not content:
        return content, "empty content"
    if len(content) > MAX_CONTENT_CHARS:
        return content, f"content longer than {MAX_CONTENT_CHARS} characters"
    return content, answer_leak(content, answer, unit) or copied_span(content, problem_text)


def apply_planned(
    record: Experience | None, planned: PlannedOp, *, key: str, run: str, problem_id: str, at: str
) -> Experience | None:
    """The record after one planned edit, or None when there is nothing to write (already applied, gone).

    Args:
        record: The current record of `planned.id`, None if it does not exist.
        planned: An operation with status 'applied' from the journal.
        key: The edit key, `<op key>#<op index>`; an edit whose key is in the history is not applied again.
        run: Provenance of a new record.
        problem_id: Provenance of a new record.
        at: The edit's timestamp.
    """
    if record is not None and record.applied(key):
        return None
    if planned.op == "add":
        if record is not None:
            raise ValueError(f"experience id {planned.id} is already taken; the bank's sequence is behind")
        return Experience(
            id=planned.id or "",
            content=planned.content or "",
            category=planned.category,
            problem_type=planned.problem_type,
            run=run,
            problem_id=problem_id,
            created_at=at,
            updated_at=at,
            history=[Edit(key=key, op="add", new=planned.content, at=at)],
        )
    if record is None or record.deleted:
        return None
    edit = Edit(key=key, op=planned.op, old=record.content, at=at)  # type: ignore[arg-type]
    if planned.op == "modify":
        edit.new = planned.content
        update = {
            "content": planned.content,
            "category": planned.category,
            "problem_type": planned.problem_type,
        }
    else:
        edit.new = record.content
        update = {"deleted": True}
    return record.model_copy(update={**update, "updated_at": at, "history": [*record.history, edit]})
