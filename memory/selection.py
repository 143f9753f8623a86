"""Choosing the experiences a prompt shows: relevance ranking, packing under a token budget, the prompt block.

Score of an experience for a problem, each part in [0, 1]:
`0.5 * lexical relevance + 0.2 * problem-type match + 0.3 * usefulness`, where lexical relevance is an
idf-weighted overlap of content words with the problem text (normalised by the best in the bank),
type match is the share of the experience's problem-type words found in the problem's type ('general'
scores 0.3), and usefulness is the smoothed success rate (success + 1) / (usage + 2). The ranked list is
packed greedily: an experience that does not fit is skipped and smaller ones after it may still fit.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

from causal_grpo.memory.schemas import Experience

RELEVANCE_WEIGHT = 0.5
TYPE_WEIGHT = 0.2
USEFULNESS_WEIGHT = 0.3
GENERAL_TYPE_MATCH = 0.3

CATEGORY_LABELS = {"problem_solving_strategy": "strategy", "common_mistake": "mistake"}

_STOPWORDS = frozenset(
    """
    the and for are but not you all any can had her was one our out has him his how its may new now
    old see two way who did get let put say she too use that with have this will your from they been
    were said each which their what there when into than then them these some would make like more
    also only over such very just most must should could where while about after before every other
    using given find value
    """.split()
)


def count_tokens(text: str) -> int:
    """Approximate token count, ceil(characters / 4).

    The usual rate of BPE tokenizers on English text; exact counts would need tiktoken, whose encoding
    files are downloaded on first use and this project must run offline. It is the one token counter of
    the budgets, so prompts and tests agree.
    """
    return math.ceil(len(text) / 4)


@lru_cache(maxsize=16384)
def content_words(text: str) -> frozenset[str]:
    """The distinct lower-cased content words of a text (three letters or more, no stop words)."""
    return frozenset(w for w in re.findall(r"[a-z][a-z0-9]{2,}", text.lower()) if w not in _STOPWORDS)


@lru_cache(maxsize=4096)
def type_match(problem_type: str | None, experience_type: str) -> float:
    """Share of the experience's problem-type words in the problem's type; 'general' gets a fixed share."""
    words = set(re.findall(r"[a-z0-9]+", experience_type.lower()))
    if not words or words == {"general"}:
        return GENERAL_TYPE_MATCH
    wanted = set(re.findall(r"[a-z0-9]+", (problem_type or "").lower()))
    return len(words & wanted) / len(words)


def rank(experiences: Iterable[Experience], problem_text: str, problem_type: str | None) -> list[Experience]:
    """Live experiences, best first (ties: lower id number first)."""
    live = [e for e in experiences if not e.deleted]
    if not live:
        return []
    query = content_words(problem_text)
    words = {e.id: content_words(e.content) for e in live}
    df = Counter(w for ws in words.values() for w in ws & query)
    idf = {w: math.log(1 + len(live) / n) for w, n in df.items()}
    raw = {e.id: sum(idf[w] for w in words[e.id] & query) / math.sqrt(len(words[e.id]) or 1) for e in live}
    best = max(raw.values()) or 1.0

    def score(e: Experience) -> float:
        return (
            RELEVANCE_WEIGHT * raw[e.id] / best
            + TYPE_WEIGHT * type_match(problem_type, e.problem_type)
            + USEFULNESS_WEIGHT * e.usefulness
        )

    return sorted(live, key=lambda e: (-score(e), e.number))


def format_line(experience: Experience) -> str:
    """One prompt line, `[G1-007] (strategy) text`."""
    label = CATEGORY_LABELS.get(experience.category, experience.category)
    return f"[{experience.id}] ({label}) {' '.join(experience.content.split())}"


def format_experiences(experiences: Iterable[Experience]) -> str:
    """The prompt block: one line per experience; empty when there are none."""
    return "\n".join(format_line(e) for e in experiences)


def pack(ranked: Iterable[Experience], budget_tokens: int) -> list[Experience]:
    """The ranked experiences that fit the budget, greedily; their block never exceeds it."""
    chosen, left = [], budget_tokens
    for experience in ranked:
        # counting the newline with each line keeps the sum an upper bound of the joined block's count
        cost = count_tokens(format_line(experience) + "\n")
        if cost <= left:
            chosen.append(experience)
            left -= cost
    return chosen
