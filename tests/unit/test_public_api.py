"""The public surface: every name `causal_grpo` promises resolves, and nothing else is promised."""

import causal_grpo

EXPECTED = {
    "Computation",
    "Context",
    "ExperienceBank",
    "GeneratorProfile",
    "Problem",
    "RewardWeights",
    "RolloutSubgraph",
    "Scaffold",
    "TrainingResult",
    "atrain",
    "build_rollout_graph",
    "build_training_graph",
    "compute",
    "evaluate",
    "extract",
    "fuse",
    "generate",
    "load_problems",
    "open_backends",
    "rollout_subgraph",
    "train",
}


def test_every_public_name_resolves():
    assert set(causal_grpo.__all__) == EXPECTED
    for name in causal_grpo.__all__:
        assert getattr(causal_grpo, name) is not None, name


def test_unknown_names_raise_attribute_error():
    try:
        causal_grpo.not_a_name  # noqa: B018
    except AttributeError as exc:
        assert "not_a_name" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")
