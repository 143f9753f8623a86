"""Evaluation statistics: Mean@k and Pass@k, bootstrap intervals, paired tests and a plain verdict.

Problems are the unit of resampling: a problem's k samples are not independent draws of the dataset's
accuracy, so every interval resamples whole problems. All randomness comes from a seeded `random.Random`,
so the same outcomes and seed give the same numbers.

- Mean@k of a problem: the share of its k samples that are right; of a dataset: the mean over problems.
- Pass@k of a problem: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k), for n
  samples of which c are right. With exactly n = k samples, as `eval` draws, it is 1 when any sample
  is right, else 0.
- Paired comparison of two arms on the same problems: the per-problem difference d_i of Mean@k. Its
  95% interval is a percentile bootstrap of mean(d); its two-sided p-value is a null bootstrap: the
  differences are centred on 0 (and scaled by sqrt(n / (n - 1)) so their spread is not understated
  on few problems), resampled, and p is the share of resampled means at least as far from 0 as the
  observed one. For Pass@k, whose per-problem outcomes are 0 or 1, the exact McNemar test is also
  given (a binomial test on the discordant problems).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pydantic import BaseModel

CONFIDENCE = 0.95
ALPHA = 0.05
RESAMPLES = 2000


class Interval(BaseModel):
    """An estimate with its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float = CONFIDENCE


class PairedTest(BaseModel):
    """A paired comparison of arm A against arm B over the same problems (A - B)."""

    n: int
    difference: Interval
    p_value: float
    alpha: float = ALPHA
    significant: bool
    verdict: str


class McNemarTest(BaseModel):
    """Exact McNemar test of binary per-problem outcomes: b = A right and B wrong, c = the reverse."""

    b: int
    c: int
    p_value: float


def mean_at_k(correct: int, samples: int) -> float:
    """The share of a problem's samples that are right."""
    if samples < 1 or not 0 <= correct <= samples:
        raise ValueError(f"need 0 <= correct <= samples and samples >= 1, got {correct} of {samples}")
    return correct / samples


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """Unbiased Pass@k from `samples` draws of which `correct` are right (Chen et al., 2021)."""
    if not 1 <= k <= samples or not 0 <= correct <= samples:
        raise ValueError(f"need 1 <= k <= samples and 0 <= correct <= samples, got k={k}, {correct} of {samples}")
    return 1.0 - math.comb(samples - correct, k) / math.comb(samples, k)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _resampled_means(values: Sequence[float], resamples: int, rng: random.Random) -> list[float]:
    n = len(values)
    return [math.fsum(rng.choices(values, k=n)) / n for _ in range(resamples)]


def _percentiles(sorted_values: Sequence[float], confidence: float) -> tuple[float, float]:
    """The two-sided percentile bounds (nearest rank) of an already sorted sample."""
    tail = (1.0 - confidence) / 2
    last = len(sorted_values) - 1
    return sorted_values[round(tail * last)], sorted_values[round((1.0 - tail) * last)]


def _check(values: Sequence[float], confidence: float, resamples: int) -> None:
    if not values:
        raise ValueError("no values to summarise")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be 1 or more, got {resamples}")


def bootstrap_mean(
    values: Sequence[float], *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> Interval:
    """The mean of per-problem values with its percentile bootstrap interval over problems."""
    _check(values, confidence, resamples)
    means = sorted(_resampled_means(list(values), resamples, random.Random(seed)))
    low, high = _percentiles(means, confidence)
    return Interval(estimate=_mean(values), low=low, high=high, confidence=confidence)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> PairedTest:
    """Compare per-problem values of arm A and arm B (same problems, same order): interval and p of mean(A - B).

    Raises:
        ValueError: The arms differ in length or are empty.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need the same problems: {len(a)} vs {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    _check(diffs, confidence, resamples)
    rng = random.Random(seed)
    observed = _mean(diffs)
    low, high = _percentiles(sorted(_resampled_means(diffs, resamples, rng)), confidence)
    n = len(diffs)
    inflate = math.sqrt(n / (n - 1)) if n > 1 else 1.0
    centred = [(d - observed) * inflate for d in diffs]
    # a tolerance so that float noise in a resampled mean never counts for or against the observed one
    as_far = sum(abs(m) >= abs(observed) - 1e-12 for m in _resampled_means(centred, resamples, rng))
    p_value = (as_far + 1) / (resamples + 1)
    difference = Interval(estimate=observed, low=low, high=high, confidence=confidence)
    alpha = round(1.0 - confidence, 10)
    return PairedTest(
        n=n,
        difference=difference,
        p_value=p_value,
        alpha=alpha,
        significant=p_value < alpha,
        verdict=verdict(difference, p_value, alpha),
    )


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemarTest:
    """Exact two-sided McNemar test of paired binary outcomes (a binomial test on the discordant pairs)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same problems: {len(a)} vs {len(b)}")
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    discordant = only_a + only_b
    tail = sum(math.comb(discordant, i) for i in range(min(only_a, only_b) + 1))
    p_value = min(1.0, 2 * tail / 2**discordant) if discordant else 1.0
    return McNemarTest(b=only_a, c=only_b, p_value=p_value)


def points(value: float) -> str:
    """A share as signed percentage points, e.g. '+3.3'."""
    return f"{value * 100:+.1f}"


def format_p(p_value: float) -> str:
    """A p-value as the verdict prints it."""
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def verdict(difference: Interval, p_value: float, alpha: float = ALPHA) -> str:
    """One plain line: the size of the difference and whether it is distinguishable from noise."""
    d = difference.estimate
    what = (
        f"gain of {points(d)} points"
        if d > 0
        else f"loss of {points(-d).lstrip('+')} points"
        if d < 0
        else "no difference (0.0 points)"
    )
    call = "is distinguishable from noise" if p_value < alpha else "is indistinguishable from noise"
    level = f"{difference.confidence:.0%}"
    return f"{what} {call} ({format_p(p_value)}, {level} CI {points(difference.low)} to {points(difference.high)})"
