"""The run's configuration, read by every graph node as `runtime.context`.

It holds no secret: the API key is read from the environment variable `api_key_env` names, by
`causal_grpo.llm` alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from causal_grpo.rewards import RewardWeights

StructuredMode = Literal["auto", "json_schema", "tool", "text"]


class GeneratorProfile(BaseModel):
    """One generator's reward weights, sampling temperature and style hint."""

    weights: RewardWeights
    temperature: float = Field(default=0.7, ge=0, le=2)
    style: str = ""


# Generators 2 and 3 lean on answer correctness as the specification asks; 3 also samples hotter,
# so the three groups differ in exploration as well as in what they are rewarded for.
DEFAULT_PROFILES: dict[int, GeneratorProfile] = {
    1: GeneratorProfile(
        weights=RewardWeights(ans=0.5, logic=0.25, graph=0.25),
        temperature=0.7,
        style="Build a clean, complete causal graph; every intermediate quantity gets its own node.",
    ),
    2: GeneratorProfile(
        weights=RewardWeights(ans=0.7, logic=0.15, graph=0.15),
        temperature=0.7,
        style="Aim for the correct final answer; double-check the formula that produces the target.",
    ),
    3: GeneratorProfile(
        weights=RewardWeights(ans=0.7, logic=0.15, graph=0.15),
        temperature=1.0,
        style="Aim for the correct final answer; consider an alternative route to the usual one.",
    ),
}

CRITIC_WEIGHTS = RewardWeights(ans=0.3, logic=0.2, graph=0.2, fusion=0.3)


class AgentEndpoint(BaseModel):
    """Per-agent override of the model and endpoint (e.g. a stronger model for the critic)."""

    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float | None = None


class Context(BaseModel):
    """Everything a training run is configured by; serialisable, and free of secrets."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(default="default", description="Run name; thread ids are '<run>:<epoch>:<problem id>'.")
    model: str = Field(default="simulated", description="Model name, or 'simulated' for the bundled simulator.")
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint; None = the provider default.")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Name of the env var holding the API key.")
    agents: dict[str, AgentEndpoint] = Field(
        default_factory=dict, description="Overrides per agent: generator, judge, extractor, critic."
    )
    structured_mode: StructuredMode = Field(default="auto", description="How structured output is requested.")
    request_timeout: float = Field(default=120.0, gt=0, description="Seconds per model request.")
    max_retries: int = Field(default=4, ge=0, description="Retries of 429/5xx/timeouts per model call.")
    max_reasks: int = Field(default=2, ge=0, description="Re-asks after invalid structured output.")
    max_tokens: int | None = Field(default=None, description="Completion token cap per call.")
    concurrency: int = Field(default=8, ge=1, description="Model calls in flight across the whole run.")
    price_prompt_per_m: float | None = Field(default=None, ge=0, description="Price per 1M prompt tokens")
    price_completion_per_m: float | None = Field(default=None, ge=0, description="Price per 1M output tokens")
    temperature: float | None = Field(default=None, description="Overrides every generator's temperature.")
    judge: bool = Field(default=True, description="Use the LLM judge in r_logic; off = deterministic checks only.")
    rollouts: int = Field(default=3, ge=1, le=16, description="Rollouts per generator per problem.")
    generators: list[int] = Field(default_factory=lambda: [1, 2, 3], description="Which generator profiles run.")
    profiles: dict[int, GeneratorProfile] = Field(default_factory=lambda: dict(DEFAULT_PROFILES))
    critic_weights: RewardWeights = Field(default_factory=lambda: CRITIC_WEIGHTS.model_copy())
    fuse: bool = Field(default=True, description="Run the critic's fusion after extraction.")
    stage: Literal["all", "generators", "critic"] = Field(
        default="all",
        description="'generators': rollouts and their extraction only; 'critic': fusion over the rollouts a "
        "'generators' run stored, never regenerating them; 'all': both in one pass.",
    )
    tau: float = Field(default=0.05, ge=0, description="Extract experiences when std(r_total) of a group exceeds it.")
    solver: Literal["scaffold", "text"] = Field(
        default="scaffold",
        description="'scaffold': generators write causal graphs the computer evaluates; 'text': they reason in free "
        "text ending in \\boxed{...} (plain chain of thought; with experiences, the original Training-Free GRPO).",
    )
    group_filter: Literal["std", "mixed"] = Field(
        default="std",
        description="Which groups the extractor reads: 'std' when std(r_total) > tau; 'mixed' (the original "
        "method's rule) when the group's mean r_ans is strictly between 0 and 1.",
    )
    max_experience_tokens: int = Field(default=600, ge=0, description="Token budget for experiences in a prompt.")
    answer_rel_tol: float = Field(default=0.05, gt=0, description="Relative tolerance for physics answers.")
    seed: int = Field(default=0, description="Seed for the simulator and any sampling of ours.")
    verbose: bool = Field(default=False, description="Log prompts and responses.")
    review: bool = Field(
        default=False, description="Pause each problem's bank update for human review (`interrupt` in `learn`)."
    )
    accept_minibatch: int | None = Field(
        default=None, ge=1, description="Keep a batch's bank edits only if K seen problems do not get worse."
    )
    accept_margin: float = Field(default=0.0, description="How much lower the mean r_total may be with the edits.")

    def generator_temperature(self, generator: int) -> float:
        """The sampling temperature of a generator, after the run-wide override."""
        if self.temperature is not None:
            return self.temperature
        return self.profiles[generator].temperature
