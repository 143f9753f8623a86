"""The simulator over real HTTP, through the real `openai` client and LangChain's ChatOpenAI."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from causal_grpo.agents.critic.schemas import FusedAnswer
from causal_grpo.agents.extractor.schemas import ExperienceOps
from causal_grpo.agents.judge.schemas import LogicVerdict
from langchain_openai import ChatOpenAI

from causal_grpo.problems import load_problems
from causal_grpo.scaffold import Scaffold
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.runner import SimulatorServer, _bind

pytestmark = pytest.mark.integration

PROBLEM = load_problems("full")[62]
MARKER = "Respond with a JSON object for the schema named {}"


def _prompt(rollout: int = 1, schema: str = "Scaffold") -> str:
    return f"Problem ({PROBLEM.domain}):\n{PROBLEM.text}\nRollout: {rollout}\n{MARKER.format(schema)}"


def _messages(rollout: int = 1, schema: str = "Scaffold") -> list[dict[str, str]]:
    return [{"role": "user", "content": _prompt(rollout, schema)}]


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start simulators with given knobs; all are stopped at the end of the test."""
    servers: list[SimulatorServer] = []

    def start(**knobs: Any) -> SimulatorServer:
        servers.append(SimulatorServer(SimulatorConfig(**knobs)).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _client(sim: SimulatorServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=kwargs.pop("api_key", "test-key"), **kwargs)


def test_models_and_the_declaration_header(serve: Any) -> None:
    sim = serve()
    client = _client(sim)
    assert [m.id for m in client.models.list()] == ["simulated"]
    raw = client.chat.completions.with_raw_response.create(model="simulated", messages=_messages())
    assert raw.headers["x-causal-grpo-simulator"] == "1"
    completion = raw.parse()
    assert completion.model == "simulated" and completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    assert httpx.get(f"{sim.base_url}/nowhere").headers["x-causal-grpo-simulator"] == "1"


@pytest.mark.parametrize(
    ("method", "mode"), [("json_schema", "json_schema"), ("function_calling", "tools"), ("json_mode", "json_object")]
)
def test_chatopenai_structured_output_parses_in_every_mode(serve: Any, method: str, mode: str) -> None:
    sim = serve(seed=3)
    sent: list[dict[str, Any]] = []
    http_client = httpx.Client(event_hooks={"request": [lambda r: sent.append(json.loads(r.read()))]})
    llm = ChatOpenAI(model="simulated", base_url=sim.base_url, api_key="k", http_client=http_client, max_retries=0)
    result = llm.with_structured_output(Scaffold, method=method, include_raw=True).invoke(_prompt())
    assert result["parsing_error"] is None and isinstance(result["parsed"], Scaffold)
    assert result["parsed"].target == "answer"
    # LangChain names the schema after the pydantic class, in the place its method uses.
    if method == "json_schema":
        assert sent[0]["response_format"]["json_schema"]["name"] == "Scaffold"
    elif method == "function_calling":
        assert sent[0]["tools"][0]["function"]["name"] == "Scaffold"
        assert sent[0]["tool_choice"]["function"]["name"] == "Scaffold"
    else:
        assert sent[0]["response_format"] == {"type": "json_object"}
    assert sim.stats()["by_mode"] == {mode: 1}


@pytest.mark.parametrize("schema", [FusedAnswer, LogicVerdict, ExperienceOps])
def test_every_agent_kind_parses_through_chatopenai(serve: Any, schema: type) -> None:
    sim = serve()
    llm = ChatOpenAI(model="simulated", base_url=sim.base_url, api_key="k", max_retries=0)
    prompt = (
        _prompt(schema=schema.__name__) + "\n### Rollout 1\nreward r_total=0.500\n### Rollout 2\nreward r_total=0.1"
    )
    parsed = llm.with_structured_output(schema, method="json_schema").invoke(prompt)
    assert isinstance(parsed, schema)
    assert sim.stats()["by_kind"] == {schema.__name__: 1}


def test_text_mode_answers_parse_after_unfencing(serve: Any) -> None:
    sim = serve(fence_rate=1.0)
    content = _client(sim).chat.completions.create(model="simulated", messages=_messages()).choices[0].message.content
    block = re.search(r"```json\n(.*)\n```", content or "", re.S)
    assert block and Scaffold.model_validate_json(block.group(1))


def test_same_seed_same_answers_and_rollouts_differ(serve: Any) -> None:
    first, twin, other = serve(seed=5), serve(seed=5), serve(seed=6)

    def contents(sim: SimulatorServer) -> list[str | None]:
        client = _client(sim)
        return [
            client.chat.completions.create(model="simulated", messages=_messages(k), temperature=0.7)
            .choices[0]
            .message.content
            for k in range(1, 7)
        ]

    answers = contents(first)
    assert answers == contents(twin)
    assert len(set(answers)) > 3
    assert answers != contents(other)


def test_429_carries_retry_after_to_the_client(serve: Any) -> None:
    sim = serve(error_rate_429=1.0, retry_after_s=2)
    with pytest.raises(openai.RateLimitError) as caught:
        _client(sim, max_retries=0).chat.completions.create(model="simulated", messages=_messages())
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.response.headers["retry-after-ms"] == "2000"
    assert caught.value.code == "rate_limit_exceeded"
    assert sim.stats()["errors"] == {"429": 1}


def test_injected_429s_are_retried_through(serve: Any) -> None:
    # 500s are left out: without Retry-After the client backs off for seconds, as it should.
    sim = serve(seed=1, error_rate_429=0.4, retry_after_s=0.01)
    client = _client(sim, max_retries=12)
    for k in range(10):
        assert client.chat.completions.create(model="simulated", messages=_messages(k)).choices[0].message.content
    stats = sim.stats()
    assert stats["completed"] == 10 and stats["errors"]["429"] > 0
    assert stats["requests"] == 10 + stats["errors"]["429"]


def test_500_reaches_the_client(serve: Any) -> None:
    sim = serve(error_rate_500=1.0)
    with pytest.raises(openai.InternalServerError):
        _client(sim, max_retries=0).chat.completions.create(model="simulated", messages=_messages())


def test_dropped_connection_is_a_connection_error(serve: Any) -> None:
    sim = serve(drop_rate=1.0)
    body = {"model": "simulated", "messages": _messages()}
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{sim.base_url}/chat/completions", json=body)
    with pytest.raises(openai.APIConnectionError):
        _client(sim, max_retries=0).chat.completions.create(model="simulated", messages=_messages())
    assert sim.stats()["errors"] == {"drop": 2}


def test_hanging_request_times_out_in_the_client(serve: Any) -> None:
    sim = serve(timeout_rate=1.0, hang_s=3)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        _client(sim, max_retries=0, timeout=0.3).chat.completions.create(model="simulated", messages=_messages())
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("malformation", ["not_json", "wrong_schema"])
def test_malformed_output_is_a_parsing_error(serve: Any, malformation: str) -> None:
    sim = serve(**{f"{malformation}_rate": 1.0})
    llm = ChatOpenAI(model="simulated", base_url=sim.base_url, api_key="k", max_retries=0)
    result = llm.with_structured_output(Scaffold, method="json_mode", include_raw=True).invoke(_prompt())
    assert result["parsed"] is None and result["parsing_error"] is not None
    assert sim.stats()["malformed"] == {malformation: 1}


def test_truncated_output_ends_with_length(serve: Any) -> None:
    sim = serve(truncated_rate=1.0, fence_rate=0.0)
    choice = _client(sim).chat.completions.create(model="simulated", messages=_messages()).choices[0]
    assert choice.finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content or "")


def test_max_tokens_cuts_the_answer(serve: Any) -> None:
    sim = serve()
    completion = _client(sim).chat.completions.create(model="simulated", messages=_messages(), max_tokens=10)
    assert completion.choices[0].finish_reason == "length" and completion.usage
    assert completion.usage.completion_tokens <= 10


@pytest.mark.anyio
async def test_concurrency_limit_answers_429_and_stats_show_the_peak(serve: Any) -> None:
    sim = serve(max_concurrency=2, latency_ms=300)
    # Closed at the end: left to the garbage collector, the SDK closes its client from a later test's loop.
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as client:
        results = await asyncio.gather(
            *(client.chat.completions.create(model="simulated", messages=_messages(k)) for k in range(6)),
            return_exceptions=True,
        )
        rejected = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(rejected) == 4 and all(r.response.headers["retry-after"] == "1" for r in rejected)
        stats = sim.stats()
        assert stats["max_in_flight"] == 2 and stats["errors"] == {"concurrency_429": 4} and stats["in_flight"] == 0

        # A client that keeps its own bound below the server's never sees the limit.
        httpx.post(f"{sim.base_url}/simulator/reset")
        bound = asyncio.Semaphore(2)

        async def bounded(k: int) -> None:
            async with bound:
                await client.chat.completions.create(model="simulated", messages=_messages(k))

        await asyncio.gather(*(bounded(k) for k in range(6)))
    stats = sim.stats()
    assert stats["completed"] == 6 and stats["errors"] == {} and stats["max_in_flight"] == 2


def test_latency_and_token_rate(serve: Any) -> None:
    sim = serve(latency_ms=150, tokens_per_s=2000)
    started = time.monotonic()
    completion = _client(sim).chat.completions.create(model="simulated", messages=_messages())
    assert completion.usage
    elapsed = time.monotonic() - started
    assert elapsed >= 0.15 + completion.usage.completion_tokens / 2000


def test_service_time_counts_the_handler_but_not_the_latency(serve: Any) -> None:
    sim = serve(latency_ms=300)
    client = _client(sim)
    assert sim.stats()["last_completed_at"] is None
    started, started_at = time.monotonic(), time.time()
    for rollout in (1, 2):
        client.chat.completions.create(model="simulated", messages=_messages(rollout))
    elapsed_ms = (time.monotonic() - started) * 1000
    stats = sim.stats()
    # two answers were rendered (positive), and neither 300 ms sleep is in the figure
    assert 0 < stats["service_ms"] < elapsed_ms - 600
    assert started_at + 0.6 <= stats["last_completed_at"] <= time.time()
    httpx.post(f"{sim.base_url}/simulator/reset", timeout=5).raise_for_status()
    assert sim.stats()["service_ms"] == 0


def test_api_key_required(serve: Any) -> None:
    sim = serve(require_api_key="sekrit-123")
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(sim, api_key="wrong-key", max_retries=0).chat.completions.create(
            model="simulated", messages=_messages()
        )
    assert caught.value.code == "invalid_api_key" and "wrong-key" not in caught.value.response.text
    with pytest.raises(openai.AuthenticationError):
        _client(sim, api_key="wrong-key").models.list()
    assert _client(sim, api_key="sekrit-123").chat.completions.create(model="simulated", messages=_messages())


def test_unknown_model_is_404(serve: Any) -> None:
    sim = serve()
    with pytest.raises(openai.NotFoundError) as caught:
        _client(sim, max_retries=0).chat.completions.create(model="gpt-4o", messages=_messages())
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"stream": True}, "stream"), ({"n": 2}, "n"), ({"messages": []}, "messages")],
)
def test_unsupported_requests_are_400(serve: Any, extra: dict[str, Any], param: str) -> None:
    sim = serve()
    body = {"model": "simulated", "messages": _messages(), **extra}
    response = httpx.post(f"{sim.base_url}/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert httpx.post(f"{sim.base_url}/chat/completions", content=b"{not json").status_code == 400


def test_text_only_server_rejects_response_format_and_ignores_tools(serve: Any) -> None:
    sim = serve(supported_modes={"text"}, fence_rate=0.0)
    llm = ChatOpenAI(model="simulated", base_url=sim.base_url, api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        llm.with_structured_output(Scaffold, method="json_schema").invoke(_prompt())
    reply = llm.bind_tools([Scaffold], tool_choice="Scaffold").invoke(_prompt())
    assert reply.tool_calls == [] and Scaffold.model_validate_json(str(reply.content))
    assert sim.stats()["by_mode"] == {"text": 1}


def test_plain_chat_gets_a_short_declared_reply(serve: Any) -> None:
    sim = serve()
    reply = ChatOpenAI(model="simulated", base_url=sim.base_url, api_key="k").invoke("Hello, who are you?")
    assert "simulat" in str(reply.content) and sim.stats()["by_kind"] == {"chat": 1}


@pytest.mark.anyio
async def test_async_context_manager_and_clean_shutdown() -> None:
    def servers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "causal-grpo-simulator"}

    before = servers()
    async with SimulatorServer(SimulatorConfig(seed=2)) as sim:
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="k")
        completion = await client.chat.completions.create(model="simulated", messages=_messages())
        assert completion.choices[0].message.content
        await client.close()
    assert servers() == before
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.base_url}/models")


def test_cli_serve_announces_a_loopback_simulator_and_stops_on_interrupt() -> None:
    script = (
        "import typer\nfrom causal_grpo.cli.simulator import app\n"
        "root = typer.Typer()\nroot.add_typer(app, name='simulator')\nroot()\n"
    )
    args = [sys.executable, "-u", "-c", script, "simulator", "serve", "--port", "0", "--seed", "4"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline() + proc.stdout.readline()
            assert "test double" in banner
            match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", banner)
            assert match
            for _ in range(100):
                try:
                    models = httpx.get(f"{match.group(1)}/models").json()
                    break
                except httpx.ConnectError:
                    time.sleep(0.05)
            assert models["data"][0]["id"] == "simulated"
        finally:
            proc.send_signal(signal.SIGINT)
            # uvicorn shuts down gracefully, then re-raises the signal: 130 is Ctrl-C's usual status.
            assert proc.wait(timeout=10) in (0, 130)
            assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_connections_to_the_simulator_send_without_waiting_for_acks():
    # asyncio's own loop (a plain install has no uvloop) turns Nagle off only on sockets whose protocol is TCP;
    # with Nagle on, a response's body waited for the client's delayed ACK: 40 ms more on every call
    async def accepted_nodelay() -> int:
        listener = _bind("127.0.0.1", 0)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted = transport.get_extra_info("socket")
                seen.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            try:
                return await asyncio.wait_for(seen, 5)
            finally:
                writer.close()

    assert asyncio.run(accepted_nodelay()) != 0
