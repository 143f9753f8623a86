"""The simulator's knobs: what it answers, how fast, and which faults it injects."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StructuredMode = Literal["json_schema", "json_object", "tools", "text"]
ALL_MODES: frozenset[StructuredMode] = frozenset({"json_schema", "json_object", "tools", "text"})


class SimulatorConfig(BaseModel):
    """Knobs of the simulator, a declared test double for the model: it measures our machinery, not a model.

    Content is deterministic per request (seed + request body). Faults, malformed outputs and
    latency jitter are drawn from one per-server stream seeded by `seed`, so a retried request can
    succeed where its first attempt failed, as with a real server.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=0, description="Seed of every random draw.")
    model: str = Field(default="simulated", description="The only model id served; others get 404.")
    correct_rate: float = Field(default=0.5, ge=0.0, le=1.0, description="Share of scaffolds whose target is right.")
    fusion_correct_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Share of fused scaffolds that are right; None = correct_rate.",
    )
    fence_rate: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="Text mode: share of JSON answers wrapped in prose and a ```json fence.",
    )
    runaway_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of scaffolds whose target is a program that runs past every limit, as a brute force can.",
    )
    latency_ms: float = Field(default=0.0, ge=0.0, description="Time to first token, in milliseconds.")
    tokens_per_s: float = Field(default=0.0, ge=0.0, description="Completion token rate; 0 = instant.")
    jitter: float = Field(default=0.0, ge=0.0, le=1.0, description="Latency varies by up to this fraction either way.")
    error_rate_429: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of requests answered 429.")
    retry_after_s: float = Field(default=1.0, ge=0.0, description="Retry-After sent with every 429.")
    error_rate_500: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of requests answered 500.")
    drop_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of responses cut off mid-flight.")
    timeout_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of requests that hang for hang_s.")
    hang_s: float = Field(default=300.0, ge=0.0, description="How long a 'timeout' request hangs before answering.")
    not_json_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Structured answers replaced by prose.")
    wrong_schema_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Structured answers replaced by valid JSON that fails the schema.",
    )
    truncated_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Structured answers cut in half, with finish_reason 'length'.",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests in flight above which the server answers 429; None = unbounded.",
    )
    require_api_key: str | None = Field(
        default=None, description="If set, requests must carry 'Authorization: Bearer <key>' or get 401."
    )
    supported_modes: frozenset[StructuredMode] = Field(
        default=ALL_MODES,
        description="Structured-output modes served. An unsupported response_format gets 400; unsupported "
        "tools are ignored and answered in text mode (as llama.cpp does). Text is always served.",
    )
    unsupported_status: Literal[400, 500] = Field(
        default=400,
        description="Status of the answer to an unsupported response_format: 400 as most servers, or 500 as "
        "llama-cpp-python's own server answers json_schema.",
    )

    @model_validator(mode="after")
    def _text_always_served(self) -> SimulatorConfig:
        # Every chat server answers plain text; the set only restricts the structured modes.
        if "text" not in self.supported_modes:
            self.supported_modes = self.supported_modes | {"text"}
        return self

    @property
    def effective_fusion_correct_rate(self) -> float:
        """The critic's success rate: by default no smarter than generation."""
        return self.correct_rate if self.fusion_correct_rate is None else self.fusion_correct_rate
