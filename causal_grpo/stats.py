"""Evaluation statistics: Mean@k and Pass@k, bootstrap intervals, paired tests and a plain verdict.

Problems are the unit of resampling: a problem's k samples are not independent draws of the dataset's
accuracy, so every interval resamples whole problems. All randomness comes from a seeded `random.Random`,
so the same outcomes and seed give the same numbers.

- Mean@k of a problem: the share of its k samples that are right; of a dataset: the mean over problems.
- Pass@k of a problem: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k), for n
  samples of which c are right. With exactly n = k samples, as `eval` draws, it is 1 when any sample
  is right, else 0.
- Paired comparison of two arms on the same problems: the per-problem difference d_i of Mean@k, and
  one paired bootstrap of mean(d) behind both its interval and its p-value, so they always agree. The
  95% interval is the percentile interval of the resampled means; the two-sided p-value is the
  smallest level whose percentile interval still excludes 0: twice the share of resampled means on
  the far side of 0 (at 0 or beyond, against the observed sign; counting the observed mean as one
  resample, so p is never 0), at most 1. So p < 0.05 exactly when the 95% interval excludes 0
  (Efron & Tibshirani, 1993, ch. 15-16). Below `MIN_PROBLEMS` problems
  there is no verdict: the bootstrap of a mean over so few values understates its spread (by a factor
  sqrt((n - 1) / n) and the few distinct resamples), so its intervals cover less than they claim and
  its p-values are too small. For Pass@k, whose per-problem outcomes are 0 or 1, the exact McNemar
  test is also given (a binomial test on the discordant problems).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pydantic import BaseModel, Field

CONFIDENCE = 0.95
ALPHA = 0.05
RESAMPLES = 2000
# fewest paired problems for a verdict: on seeded outcomes with no true difference the 95% interval excluded 0
# (p < 0.05) in 14% of trials at 5 problems, 9% at 8, 7.5% at 10 and 5.9% at 20 (docs/evaluation.md)
MIN_PROBLEMS = 20


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
    significant: bool | None = Field(description="p < alpha; None: fewer than MIN_PROBLEMS problems, no verdict.")
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
    """The two-sided percentile bounds of an already sorted sample of R values: the j-th smallest and j-th largest,
    j = ceil(tail * (R + 1)) - 1, so a bound lies beyond 0 exactly when the bootstrap p-value
    2 * (values on the other side + 1) / (R + 1) is below 1 - confidence."""
    j = math.ceil((1.0 - confidence) / 2 * (len(sorted_values) + 1) - 1e-9) - 1
    return sorted_values[j - 1], sorted_values[len(sorted_values) - j]


def _check(values: Sequence[float], confidence: float, resamples: int) -> None:
    if not values:
        raise ValueError("no values to summarise")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    fewest = math.floor(2 / (1.0 - confidence) + 1e-9)
    if resamples < fewest:
        # fewer resamples leave no value in the interval's tails
        raise ValueError(f"a {confidence:.0%} interval needs {fewest} resamples or more, got {resamples}")


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
    observed = _mean(diffs)
    means = sorted(_resampled_means(diffs, resamples, random.Random(seed)))
    low, high = _percentiles(means, confidence)
    # resampled means on the far side of 0: at or below it for a gain, at or above it for a loss (both for none);
    # a tolerance so that float noise in a mean of exact zeros never counts for or against the observed one
    below = sum(m <= 1e-12 for m in means)
    above = sum(m >= -1e-12 for m in means)
    far = min(below, above) if abs(observed) <= 1e-12 else below if observed > 0 else above
    # +1 on both sides: the observed difference counts as one of the resamples, so p is never 0
    p_value = min(1.0, 2 * (far + 1) / (resamples + 1))
    difference = Interval(estimate=observed, low=low, high=high, confidence=confidence)
    alpha = round(1.0 - confidence, 10)
    n = len(diffs)
    return PairedTest(
        n=n,
        difference=difference,
        p_value=p_value,
        alpha=alpha,
        significant=p_value < alpha if n >= MIN_PROBLEMS else None,
        verdict=verdict(difference, p_value, alpha, problems=n),
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


def verdict(difference: Interval, p_value: float, alpha: float = ALPHA, *, problems: int | None = None) -> str:
    """One plain line: the size of the difference and whether it is distinguishable from noise.

    With fewer than `MIN_PROBLEMS` problems it says there is no verdict instead (the figures stay).
    """
    d = difference.estimate
    what = (
        f"gain of {points(d)} points"
        if d > 0
        else f"loss of {points(-d).lstrip('+')} points"
        if d < 0
        else "no difference (0.0 points)"
    )
    if problems is not None and problems < MIN_PROBLEMS:
        call = f"on {problems} problems: no verdict below {MIN_PROBLEMS} problems"
    else:
        call = "is distinguishable from noise" if p_value < alpha else "is indistinguishable from noise"
    level = f"{difference.confidence:.0%}"
    return f"{what} {call} ({format_p(p_value)}, {level} CI {points(difference.low)} to {points(difference.high)})"
