"""The model door against the simulator over real HTTP: modes, fallback, faults, re-asks, usage, bounds, secrecy."""

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import openai
import openai.resources.chat.completions.completions as completions_module
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from causal_grpo.context import Context
from causal_grpo.llm import (
    ModelAccessError,
    ModelClient,
    TransientModelError,
    _formats,
    _ReadyBodyChatOpenAI,
    client_for,
    simulated_endpoint,
)
from causal_grpo.scaffold import Scaffold
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.runner import SimulatorServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

KEY_ENV = "CAUSAL_GRPO_LLM_TEST_KEY"
SECRET = "sk-causal-grpo-LEAKCHECK-7f3a9c1e5b"
PROMPT = [
    SystemMessage("You write causal-graph scaffolds."),
    HumanMessage("A car travels 120 km in 1.5 hours. What is its average speed in km/h?"),
]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


@asynccontextmanager
async def serving(**knobs: Any) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimulatorConfig(**knobs)) as sim:
        yield sim


async def stats(sim: SimulatorServer) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(sim.stats)


def client(sim: SimulatorServer, agent: str = "generator", **settings: Any) -> ModelClient:
    settings = {"max_retries": 0, "max_reasks": 0, **settings}
    return client_for(Context(model="simulated", base_url=sim.base_url, api_key_env=KEY_ENV, **settings), agent)


@pytest.mark.parametrize(("mode", "wire_mode"), [("json_schema", "json_schema"), ("tool", "tools"), ("text", "text")])
async def test_each_mode_parses_a_scaffold(mode: str, wire_mode: str) -> None:
    async with serving(fence_rate=1.0) as sim:
        result = await client(sim, structured_mode=mode).structured(Scaffold, PROMPT)
        served = await stats(sim)
    assert isinstance(result.value, Scaffold) and result.error is None
    assert result.value.node(result.value.target) is not None
    assert (result.mode, result.attempts) == (mode, 1)
    assert result.usage.calls == 1 and result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert served["by_mode"] == {wire_mode: 1}


@pytest.mark.parametrize("mode", ["json_schema", "tool", "text"])
async def test_the_body_on_the_wire_is_the_one_chatopenai_sends(mode: str) -> None:
    # Our ChatOpenAI hands the SDK messages and tools past its request transform; the JSON sent must not change.
    response_format, tool, _instruction = _formats(Scaffold)
    kwargs: dict[str, Any] = {
        "json_schema": {"extra_body": {"response_format": response_format}},
        "tool": {"tools": [tool], "tool_choice": {"type": "function", "function": {"name": tool["function"]["name"]}}},
        "text": {},
    }[mode]
    sent: dict[str, list[Any]] = {"plain": [], "ours": []}

    def chat_of(kind: str, chat: type[ChatOpenAI], sim: SimulatorServer) -> ChatOpenAI:
        async def record(request: Any) -> None:
            sent[kind].append(json.loads(request.content))

        http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [record]})
        return chat(model="simulated", base_url=sim.base_url, api_key="k", temperature=0.7, http_async_client=http)

    async with serving() as sim:
        for kind, chat in (("plain", ChatOpenAI), ("ours", _ReadyBodyChatOpenAI)):
            await chat_of(kind, chat, sim).ainvoke(PROMPT, **kwargs)
    assert sent["ours"] == sent["plain"]
    assert [m["content"] for m in sent["ours"][0]["messages"]] == [m.content for m in PROMPT]
    assert ("tools" in sent["ours"][0]) == (mode == "tool")


@pytest.mark.parametrize("mode", ["json_schema", "tool", "text"])
async def test_the_model_client_spares_the_sdk_its_walk_of_the_messages(mode: str, monkeypatch) -> None:
    # The ready-body ChatOpenAI above is the one our client builds: the SDK's transform gets no messages.
    walked: list[Any] = []
    transform = completions_module.async_maybe_transform

    async def recording(data: Any, *args: Any, **kwargs: Any) -> Any:
        walked.append(data.get("messages") if isinstance(data, dict) else data)
        return await transform(data, *args, **kwargs)

    monkeypatch.setattr(completions_module, "async_maybe_transform", recording)
    async with serving() as sim:
        model = client(sim, structured_mode=mode)
        # in this process: the exchange the model process runs for `structured`
        exchange = await model.exchange(mode, *model.request(mode, Scaffold, PROMPT, None))
        await model.aclose()
    assert exchange.reply is not None and exchange.reply.text and walked == [[]]


async def test_auto_falls_back_to_text_and_remembers() -> None:
    async with serving(supported_modes=frozenset({"text"})) as sim:
        model = client(sim, structured_mode="auto")
        assert model.mode == "auto"
        first = await asyncio.gather(*(model.structured(Scaffold, PROMPT) for _ in range(6)))
        after_detection = await stats(sim)
        second = await client(sim, "judge", structured_mode="auto").structured(Scaffold, PROMPT)
        served = await stats(sim)
    assert all(r.ok and r.mode == "text" for r in [*first, second]) and model.mode == "text"
    # Detected once for the endpoint, even under concurrent first calls: json_schema refused (400),
    # tools ignored (answered as plain text), then text; the other five calls go straight to text.
    assert after_detection["errors"].get("400") == 1 and after_detection["requests"] == 2 + 6
    # Remembered for the process: another agent's call on the endpoint needs one request.
    assert served["requests"] == 2 + 6 + 1


async def test_an_explicit_unsupported_mode_gives_an_invalid_result_not_a_crash() -> None:
    async with serving(supported_modes=frozenset({"text"})) as sim:
        result = await client(sim, structured_mode="json_schema", max_reasks=2).structured(Scaffold, PROMPT)
        served = await stats(sim)
    assert result.value is None and result.attempts == 1 and served["requests"] == 1
    assert result.error == "request rejected (400): response_format 'json_schema' is not supported."


async def test_auto_prefers_json_schema_when_served() -> None:
    async with serving() as sim:
        result = await client(sim, structured_mode="auto").structured(Scaffold, PROMPT)
        served = await stats(sim)
    assert result.ok and result.mode == "json_schema" and served["requests"] == 1


async def test_429_with_retry_after_is_retried() -> None:
    async with serving(seed=3, error_rate_429=0.5, retry_after_s=0.01) as sim:
        model = client(sim, max_retries=8)
        results = [await model.structured(Scaffold, PROMPT) for _ in range(4)]
        served = await stats(sim)
    assert all(r.ok for r in results)
    assert served["errors"]["429"] >= 1
    assert served["requests"] == 4 + served["errors"]["429"]


async def test_persistent_500_ends_in_a_transient_error_after_bounded_retries() -> None:
    async with serving(error_rate_500=1.0) as sim:
        with pytest.raises(TransientModelError, match=r"server error \(500\)") as info:
            await client(sim, max_retries=2, structured_mode="json_schema").structured(Scaffold, PROMPT)
        served = await stats(sim)
        # In auto mode a 500 may be one mode's fault, so each mode gets its bounded retries before giving up.
        with pytest.raises(TransientModelError):
            await client(sim, max_retries=2, structured_mode="auto").structured(Scaffold, PROMPT)
        served_auto = await stats(sim)
    assert served["requests"] == 3 and served_auto["requests"] == 3 + 3 * 3
    assert sim.base_url in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


async def test_dropped_connections_are_retried() -> None:
    async with serving(seed=5, drop_rate=0.5) as sim:
        model = client(sim, max_retries=8)
        results = [await model.structured(Scaffold, PROMPT) for _ in range(4)]
        served = await stats(sim)
    assert all(r.ok for r in results)
    assert served["errors"]["drop"] >= 1
    assert served["completed"] == 4


async def test_timeouts_are_retried_then_fail_bounded() -> None:
    async with serving(timeout_rate=1.0, hang_s=3.0) as sim:
        started = time.perf_counter()
        with pytest.raises(TransientModelError, match="timed out"):
            await client(sim, request_timeout=0.2, max_retries=1).structured(Scaffold, PROMPT)
        elapsed = time.perf_counter() - started
        served = await stats(sim)
    assert served["requests"] == 2
    assert elapsed < 2.5  # two 0.2 s attempts and one backoff of at most 0.5 s, not the 3 s hang


@pytest.mark.parametrize(
    ("knob", "mode", "reason"),
    [
        ("not_json_rate", "json_schema", "no JSON object in the output"),
        ("not_json_rate", "text", "no JSON object in the output"),
        ("wrong_schema_rate", "tool", "schema validation failed"),
        ("wrong_schema_rate", "text", "schema validation failed"),
    ],
)
async def test_malformed_output_is_reasked_then_invalid(knob: str, mode: str, reason: str) -> None:
    async with serving(**{knob: 1.0}) as sim:
        single = await client(sim, structured_mode=mode).structured(Scaffold, PROMPT)
        result = await client(sim, structured_mode=mode, max_reasks=2).structured(Scaffold, PROMPT)
        served = await stats(sim)
    assert single.attempts == 1 and single.error == result.error
    assert result.value is None and result.error is not None and result.error.startswith(reason)
    assert result.attempts == 3 and served["requests"] == 4
    # Usage is summed over the three attempts; each re-ask carries the error back, so prompts grow.
    assert result.usage.calls == 3
    assert result.usage.prompt_tokens > 3 * single.usage.prompt_tokens > 0
    assert result.usage.completion_tokens > 2 * single.usage.completion_tokens > 0


async def test_reask_recovers_when_a_later_attempt_is_valid() -> None:
    async with serving(seed=11, not_json_rate=0.5) as sim:
        model = client(sim, structured_mode="json_schema", max_reasks=4)
        results = [await model.structured(Scaffold, PROMPT) for _ in range(4)]
        served = await stats(sim)
    assert all(r.ok for r in results)
    assert served["malformed"]["not_json"] >= 1
    assert sum(r.attempts for r in results) == served["requests"] > 4


async def test_auto_moves_on_from_a_mode_the_server_answers_with_500() -> None:
    # llama-cpp-python's own server answers json_schema with HTTP 500 and serves tool calls.
    async with serving(supported_modes=frozenset({"tools", "text"}), unsupported_status=500) as sim:
        model = client(sim, structured_mode="auto", max_retries=1)
        results = [await model.structured(Scaffold, PROMPT) for _ in range(2)]
        served = await stats(sim)
    assert all(r.ok and r.mode == "tool" for r in results) and model.mode == "tool"
    assert served["errors"] == {"500": 2}  # the first call and its one retry; never asked again


async def test_auto_keeps_json_schema_when_the_first_reply_is_cut_short() -> None:
    # A reply cut at max_tokens means the server honoured json_schema and ran out (llama.cpp with a tiny model).
    async with serving(truncated_rate=1.0) as sim:
        model = client(sim, structured_mode="auto")
        result = await model.structured(Scaffold, PROMPT)
        served = await stats(sim)
    assert model.mode == result.mode == "json_schema"
    assert result.error == "truncated output (finish_reason=length)"
    assert served["by_mode"] == {"json_schema": 1}


@pytest.mark.parametrize("mode", ["json_schema", "tool", "text"])
async def test_truncated_output_is_reported(mode: str) -> None:
    async with serving(truncated_rate=1.0) as sim:
        result = await client(sim, structured_mode=mode, max_reasks=1).structured(Scaffold, PROMPT)
    assert result.value is None
    assert result.error == "truncated output (finish_reason=length)"
    assert result.attempts == 2 and result.usage.calls == 2 and result.usage.completion_tokens > 0
    assert result.raw  # the cut-off text is kept for the rollout record


async def test_wrong_key_is_a_quick_access_error_naming_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(require_api_key="sk-the-right-one") as sim:
        started = time.perf_counter()
        with pytest.raises(ModelAccessError) as info:
            await client(sim, max_retries=3).structured(Scaffold, PROMPT)
        served = await stats(sim)
    message = str(info.value)
    assert time.perf_counter() - started < 1.0 and served["requests"] == 1  # 401 is never retried
    assert message == (
        f"authentication failed (401) at {sim.base_url} for model simulated; check the API key in ${KEY_ENV}"
    )
    assert SECRET not in message and "sk-the-right-one" not in message
    assert info.value.__cause__ is None and info.value.__context__ is None


async def test_unknown_model_is_an_access_error() -> None:
    async with serving() as sim:
        context = Context(model="gpt-nope", base_url=sim.base_url, api_key_env=KEY_ENV, max_retries=2)
        with pytest.raises(ModelAccessError, match=r"not found \(404\) at .* for model gpt-nope"):
            await client_for(context, "critic").structured(Scaffold, PROMPT)
        served = await stats(sim)
    assert served["requests"] == 1


async def test_concurrency_bound_holds_across_agents() -> None:
    async with serving(latency_ms=40) as sim:
        agents = [client(sim, agent, concurrency=3, run="bounded") for agent in ("generator", "judge")]
        results = await asyncio.gather(*(agents[i % 2].structured(Scaffold, PROMPT) for i in range(20)))
        served = await stats(sim)
    assert all(r.ok for r in results)
    assert served["completed"] == 20
    assert served["max_in_flight"] == 3


async def test_simulated_model_starts_one_inprocess_simulator() -> None:
    first = client_for(Context(model="simulated", seed=4, api_key_env=KEY_ENV), "generator")
    second = client_for(Context(model="simulated", seed=4, api_key_env=KEY_ENV), "extractor")
    assert first.endpoint.base_url == second.endpoint.base_url == simulated_endpoint(4)
    assert first.endpoint.base_url.startswith("http://127.0.0.1:")
    result = await first.structured(Scaffold, PROMPT)
    assert result.ok


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


async def test_the_key_appears_nowhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with serving(
        require_api_key=SECRET, seed=2, not_json_rate=0.4, error_rate_429=0.3, retry_after_s=0.01
    ) as sim:
        context = Context(
            model="simulated", base_url=sim.base_url, api_key_env=KEY_ENV, verbose=True, max_retries=6, max_reasks=2
        )
        for agent in ("generator", "critic"):
            model = client_for(context, agent)
            result = await model.structured(Scaffold, PROMPT)
            texts += [repr(model), repr(result)]
            (tmp_path / f"{agent}.json").write_text(json.dumps(_dump(result)), encoding="utf-8")
        (tmp_path / "context.json").write_text(context.model_dump_json(), encoding="utf-8")
        texts.append(repr(context))
        failing = Context(model="gpt-nope", base_url=sim.base_url, api_key_env=KEY_ENV, verbose=True)
        with pytest.raises(ModelAccessError) as missing:
            await client_for(failing, "judge").structured(Scaffold, PROMPT)
        texts.append(str(missing.value))
        served = await stats(sim)
    async with serving(error_rate_500=1.0) as sim:
        with pytest.raises(TransientModelError) as transient:
            await client(sim, verbose=True).structured(Scaffold, PROMPT)
        texts.append(str(transient.value))
    assert served["errors"].get("401") is None  # the key really was sent, and accepted
    assert any("request" in r.message for r in caplog.records if r.name == "causal_grpo.llm")  # verbose did log
    written = [p.read_text(encoding="utf-8") for p in tmp_path.rglob("*") if p.is_file()]
    for text in [*texts, *written, caplog.text]:
        assert SECRET not in text
