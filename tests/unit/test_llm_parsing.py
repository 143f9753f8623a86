"""The model door's pure parts: JSON extraction, reply parsing, usage, endpoints and client caching."""

import pytest
from pydantic import BaseModel, Field

from causal_grpo.context import AgentEndpoint, Context
from causal_grpo.llm import (
    ModelAccessError,
    Usage,
    client_for,
    endpoint_for,
    extract_json,
    parse_reply,
)


class Verdict(BaseModel):
    score: float = Field(ge=0, le=1)
    reason: str


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  {"a": {"b": [1, 2]}}\n', {"a": {"b": [1, 2]}}),
        ('Here it is:\n```json\n{"a": "x}y"}\n```\nDone.', {"a": "x}y"}),
        ('Use {braces} like {this}. Answer: {"a": 2} and {"b": 3}', {"a": 2}),
        ('{"a": "quote \\" and { brace"}', {"a": 'quote " and { brace'}),
        ("[1, 2, 3]", None),
        ("no json at all", None),
        ('{"a": 1', None),
        ("", None),
    ],
)
def test_extract_json(text: str, expected: dict | None) -> None:
    assert extract_json(text) == expected


def test_parse_reply_valid_in_prose() -> None:
    value, error = parse_reply(Verdict, 'Sure.\n```json\n{"score": 0.5, "reason": "ok"}\n```', "stop")
    assert value == Verdict(score=0.5, reason="ok") and error is None


@pytest.mark.parametrize(
    ("text", "finish", "reason"),
    [
        ('{"score": 0.5, "reason": "o', "length", "truncated output (finish_reason=length)"),
        ("I think it is fine.", "stop", "no JSON object in the output"),
        ("", "stop", "empty output"),
        (None, "stop", "empty output"),
        ('{"score": 0.5}', "content_filter", "output withheld by the content filter"),
    ],
)
def test_parse_reply_invalid_reasons(text: str | None, finish: str, reason: str) -> None:
    assert parse_reply(Verdict, text, finish) == (None, reason)


def test_parse_reply_schema_error_is_short_and_named() -> None:
    value, error = parse_reply(Verdict, '{"score": 7}', "stop")
    assert value is None
    assert error is not None and error.startswith("schema validation failed")
    assert "score" in error and "reason" in error and len(error) <= 300


def test_usage_sums_and_costs() -> None:
    total = Usage(prompt_tokens=1000, completion_tokens=10, calls=1) + Usage(
        prompt_tokens=500, completion_tokens=90, calls=2
    )
    assert total == Usage(prompt_tokens=1500, completion_tokens=100, calls=3)
    assert total.cost(2.0, 10.0) == pytest.approx((1500 * 2 + 100 * 10) / 1e6)
    assert total.cost(None, None) is None


def test_endpoint_overrides_per_agent() -> None:
    context = Context(
        model="small",
        base_url="http://h:1/v1",
        agents={"critic": AgentEndpoint(model="big", base_url="http://h:2/v1", api_key_env="CRITIC_KEY")},
    )
    assert endpoint_for(context, "generator").model == "small"
    critic = endpoint_for(context, "critic")
    assert (critic.model, critic.base_url, critic.api_key_env) == ("big", "http://h:2/v1", "CRITIC_KEY")
    with pytest.raises(ValueError, match="unknown agent"):
        endpoint_for(context, "poet")


def test_clients_are_cached_and_repr_hides_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_TEST_KEY", "sk-unit-secret-123")
    context = Context(model="m", base_url="http://h:1/v1", api_key_env="UNIT_TEST_KEY")
    client = client_for(context, "judge")
    assert client_for(context.model_copy(), "judge") is client
    assert client_for(context, "extractor") is not client
    assert "sk-unit-secret-123" not in repr(client) + repr(context) + str(vars(client))
    assert "http://h:1/v1" in repr(client)


def test_missing_key_for_the_default_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIT_TEST_ABSENT_KEY", raising=False)
    with pytest.raises(ModelAccessError, match=r"\$UNIT_TEST_ABSENT_KEY"):
        client_for(Context(model="gpt-x", api_key_env="UNIT_TEST_ABSENT_KEY"), "generator")
