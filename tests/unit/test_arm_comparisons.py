"""Arms with no true difference: the comparisons call a gain at about the nominal rate (seeded, no model)."""

from __future__ import annotations

import random

from causal_grpo.evaluation import Arm, ProblemResult, SampleResult, parse_arm, summarise_arms

TRIALS = 300
PROBLEMS = 30
SAMPLES = 4
RESAMPLES = 400


def outcomes(accuracy: list[float], rng: random.Random) -> list[ProblemResult]:
    """k samples per problem, each right with that problem's accuracy (the same in every arm)."""
    return [
        ProblemResult(
            id=f"p{i}",
            dataset="d",
            samples=[SampleResult(sample=s, correct=rng.random() < p) for s in range(1, SAMPLES + 1)],
        )
        for i, p in enumerate(accuracy)
    ]


def test_with_no_true_difference_gains_are_called_at_about_the_nominal_rate():
    rng = random.Random(20)
    arms = {"a": Arm(solver="text"), "b": Arm(source="x", solver="scaffold")}
    called = gains = 0
    for trial in range(TRIALS):
        accuracy = [rng.random() for _ in range(PROBLEMS)]  # problems differ in difficulty, arms do not
        results = {"a": outcomes(accuracy, rng), "b": outcomes(accuracy, rng)}
        _, comparisons = summarise_arms(
            arms, results, {"d": {f"p{i}" for i in range(PROBLEMS)}}, "a", SAMPLES, seed=trial, resamples=RESAMPLES
        )
        (c,) = comparisons
        assert (c.arm, c.against) == ("b", "a")
        called += c.significant
        gains += c.significant and c.difference.estimate > 0
    # two-sided 5%: about 5% of the trials call a difference, about half of them a gain (binomial sd ~1.3 and ~0.9 pts)
    assert 0.02 <= called / TRIALS <= 0.09, called
    assert gains / TRIALS <= 0.055, gains


def test_an_arm_spec_names_its_solver_and_banks():
    spec = parse_arm("graph+exp=scaffold:runs/a:b")
    assert (spec.name, spec.solver, spec.banks) == ("graph+exp", "scaffold", "runs/a:b")
