"""Evaluation statistics on seeded synthetic outcomes: calibration under no difference, power, coverage."""

from __future__ import annotations

import random

import pytest

from causal_grpo.stats import (
    MIN_PROBLEMS,
    Interval,
    bootstrap_mean,
    mcnemar_exact,
    mean_at_k,
    paired_bootstrap,
    pass_at_k,
    verdict,
)

PROBLEMS = 60
SAMPLES = 4


def arm(rng: random.Random, difficulty: list[float], gain: float = 0.0) -> list[float]:
    """Per-problem Mean@k of one arm: k Bernoulli samples at the problem's success rate plus `gain`."""
    return [sum(rng.random() < p + gain for _ in range(SAMPLES)) / SAMPLES for p in difficulty]


def paired_trials(trials: int, gain: float, seed: int) -> list[bool]:
    """Whether the paired test calls a difference, in each of `trials` synthetic evaluations."""
    rng = random.Random(seed)
    called = []
    for trial in range(trials):
        # problems differ in difficulty; both arms share it, as two arms on one dataset do
        difficulty = [rng.uniform(0.1, 0.7) for _ in range(PROBLEMS)]
        a, b = arm(rng, difficulty, gain), arm(rng, difficulty)
        called.append(paired_bootstrap(a, b, resamples=1000, seed=trial).significant)
    return called


def test_with_no_true_difference_a_gain_is_called_at_about_the_nominal_rate():
    called = paired_trials(200, gain=0.0, seed=1)
    assert sum(called) / len(called) <= 0.07


def test_a_planted_twenty_point_gain_on_sixty_problems_is_detected():
    called = paired_trials(100, gain=0.2, seed=2)
    assert sum(called) / len(called) >= 0.8


def test_the_planted_gain_lies_in_the_difference_interval():
    rng = random.Random(3)
    difficulty = [rng.uniform(0.1, 0.7) for _ in range(PROBLEMS)]
    test = paired_bootstrap(arm(rng, difficulty, 0.2), arm(rng, difficulty), seed=3)
    assert test.difference.low < 0.2 < test.difference.high
    assert test.significant and "is distinguishable from noise" in test.verdict


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = random.Random(4)
    truth = 0.4
    covered = 0
    for trial in range(200):
        values = [float(rng.random() < truth) for _ in range(PROBLEMS)]
        interval = bootstrap_mean(values, resamples=1000, seed=trial)
        assert interval.low <= interval.estimate <= interval.high
        covered += interval.low <= truth <= interval.high
    assert 0.88 <= covered / 200 <= 0.99


def test_results_are_reproducible_for_a_seed_and_vary_with_it():
    rng = random.Random(5)
    values = [rng.random() for _ in range(30)]
    assert bootstrap_mean(values, seed=1) == bootstrap_mean(values, seed=1)
    assert bootstrap_mean(values, seed=1) != bootstrap_mean(values, seed=2)


def test_identical_arms_show_no_difference():
    values = [0.0, 0.5, 1.0, 0.25] * 5
    test = paired_bootstrap(values, values)
    assert test.difference == Interval(estimate=0.0, low=0.0, high=0.0)
    assert test.p_value == 1.0 and not test.significant
    assert test.verdict.startswith("no difference (0.0 points) is indistinguishable from noise")


def test_paired_inputs_must_match():
    with pytest.raises(ValueError, match="same problems"):
        paired_bootstrap([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="no values"):
        bootstrap_mean([])


def test_mean_and_pass_at_k():
    assert mean_at_k(3, 4) == 0.75
    # with exactly k samples, Pass@k is "any sample right"
    assert [pass_at_k(4, c, 4) for c in range(5)] == [0.0, 1.0, 1.0, 1.0, 1.0]
    # the unbiased estimator with more samples than k: 1 - C(3, 2) / C(5, 2)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_exact_mcnemar():
    both = [True] * 5
    assert mcnemar_exact(both, both).p_value == 1.0
    ten_to_none = mcnemar_exact([True] * 10, [False] * 10)
    assert (ten_to_none.b, ten_to_none.c) == (10, 0)
    assert ten_to_none.p_value == pytest.approx(2 / 2**10)
    # symmetric, and an even split is no evidence
    assert mcnemar_exact([False] * 10, [True] * 10).p_value == ten_to_none.p_value
    assert mcnemar_exact([True, False] * 3, [False, True] * 3).p_value == 1.0


def test_verdict_lines():
    gain = Interval(estimate=0.033, low=-0.081, high=0.147)
    expected = "gain of +3.3 points is indistinguishable from noise (p = 0.620, 95% CI -8.1 to +14.7)"
    assert verdict(gain, 0.62) == expected
    loss = Interval(estimate=-0.2, low=-0.3, high=-0.1)
    expected = "loss of 20.0 points is distinguishable from noise (p < 0.001, 95% CI -30.0 to -10.0)"
    assert verdict(loss, 0.0004) == expected


@pytest.mark.parametrize("problems", [MIN_PROBLEMS, 25, 40])
def test_interval_and_p_come_from_one_test_and_always_agree(problems):
    """p < 0.05 exactly when the 95% interval excludes 0, across gains, losses and nulls."""
    rng = random.Random(problems)
    seen = set()
    for trial in range(150):
        difficulty = [rng.uniform(0.1, 0.7) for _ in range(problems)]
        gain = rng.choice([-0.25, -0.1, 0.0, 0.0, 0.1, 0.25])
        test = paired_bootstrap(arm(rng, difficulty, gain), arm(rng, difficulty), resamples=500, seed=trial)
        excludes = test.difference.low > 0 or test.difference.high < 0
        assert test.significant is (test.p_value < 0.05) is excludes, test
        assert test.difference.low <= test.difference.estimate <= test.difference.high
        seen.add(excludes)
    assert seen == {True, False}  # both cases were met, so the agreement was tested on each


def test_no_verdict_below_the_minimum_number_of_problems():
    # four problems, every one a gain: the bootstrap alone would call +50 points "distinguishable" (p of 0.01)
    few = paired_bootstrap([1.0, 1.0, 0.5, 0.5], [0.5, 0.5, 0.0, 0.0])
    assert few.significant is None and few.difference.estimate == pytest.approx(0.5)
    assert few.verdict.startswith("gain of +50.0 points on 4 problems: no verdict below 20 problems (p ")
    assert "distinguishable" not in few.verdict
    enough = paired_bootstrap([1.0, 1.0, 0.5, 0.5] * 5, [0.5, 0.5, 0.0, 0.0] * 5)
    assert enough.significant is True and "is distinguishable from noise" in enough.verdict
