"""The simulator's HTTP face: an OpenAI-compatible Starlette app with fault injection and statistics.

Every response carries the header `x-causal-grpo-simulator: 1`, and the only model is `simulated`:
this is a test double that measures our machinery, never a model's skill.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import random
import sys
import time
import uuid
from collections import Counter
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.responders import (
    SCHEMAS,
    Classified,
    Malformation,
    Rendered,
    answer,
    classify,
    estimate_tokens,
    message_text,
    render,
    request_rng,
    shipped_index,
)

HEADER = (b"x-causal-grpo-simulator", b"1")
Fault = Literal["429", "500", "drop", "timeout"]


# the requests that solve a problem; a problem the simulator does not ship gets made-up numbers
SOLVING = ("Scaffold", "TextSolution")
UNKNOWN_PROBLEM = (
    "simulator: a problem it does not ship (not in the bundled datasets): it answers with unrelated random "
    "integers, so its rewards and accuracy on such problems mean nothing; use a real model for your own problems"
)


class DroppedConnection(Exception):
    """Raised after the response has started, so the server closes the connection mid-response."""


class _DropFilter(logging.Filter):
    """Keeps injected drops, and hangs cancelled at shutdown, out of uvicorn's error log; they are not bugs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection | asyncio.CancelledError))


class _DeclareSimulator:
    """ASGI middleware adding the simulator header to every HTTP response, error pages included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def declared(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), HEADER]}
            await send(message)

        await self.app(scope, receive, declared if scope["type"] == "http" else send)


class _DroppedResponse(Response):
    """Starts a 200 response, sends part of the body, then aborts: the client sees a broken connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-', "more_body": True})
        raise DroppedConnection("injected connection drop")


def error(
    status: int, message: str, type_: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in the OpenAI API's shape."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class Simulator:
    """Per-server state: the config, the fault stream, and the statistics."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.index = shipped_index()
        self.warned_unknown = False  # the note about problems of one's own is printed once per server
        self.faults = random.Random(config.seed)
        self.reset()

    def reset(self) -> None:
        """Zero the statistics (the fault stream keeps going)."""
        self.requests = 0
        self.by_kind: Counter[str] = Counter()
        self.by_mode: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.completed = 0
        # time in the chat handler other than the latency sleep: the double's own cost, not the client's
        self.service_s = 0.0
        # wall-clock time (time.time) of the last answer, so a client can tell how long it went on without one
        self.last_completed_at: float | None = None

    def stats(self) -> dict[str, Any]:
        """The statistics as JSON-ready data."""
        return {
            "requests": self.requests,
            "completed": self.completed,
            "by_kind": dict(self.by_kind),
            "by_mode": dict(self.by_mode),
            "errors": dict(self.errors),
            "malformed": dict(self.malformed),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "service_ms": round(self.service_s * 1000, 3),
            "last_completed_at": self.last_completed_at,
        }

    def _draw(self, rates: dict[str, float]) -> str | None:
        u, edge = self.faults.random(), 0.0
        for name, rate in rates.items():
            edge += rate
            if u < edge:
                return name
        return None

    def draw_fault(self) -> Fault | None:
        """One injected fault per request at most, by the configured rates."""
        c = self.config
        rates = {
            "429": c.error_rate_429,
            "500": c.error_rate_500,
            "drop": c.drop_rate,
            "timeout": c.timeout_rate,
        }
        return self._draw(rates)  # type: ignore[return-value]

    def draw_malformation(self) -> Malformation | None:
        """A deliberate malformation of a structured answer, by the configured rates."""
        c = self.config
        rates = {
            "not_json": c.not_json_rate,
            "wrong_schema": c.wrong_schema_rate,
            "truncated": c.truncated_rate,
        }
        return self._draw(rates)  # type: ignore[return-value]

    def latency_s(self, completion_tokens: int) -> float:
        """Time to first token plus generation time, with jitter."""
        c = self.config
        base = c.latency_ms / 1000 + (completion_tokens / c.tokens_per_s if c.tokens_per_s else 0.0)
        return base * (1 + self.faults.uniform(-c.jitter, c.jitter)) if c.jitter else base

    def retry_after(self) -> dict[str, str]:
        """Retry-After in whole seconds (the standard) and in milliseconds (as OpenAI also sends)."""
        seconds = self.config.retry_after_s
        return {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}

    def authorised(self, request: Request) -> bool:
        """Whether the request carries the required key (always, if none is required)."""
        key = self.config.require_api_key
        if key is None:
            return True
        return hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {key}")


def _unauthorised() -> JSONResponse:
    # Like OpenAI, but never echoing the key that was sent.
    return error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")


async def list_models(request: Request) -> Response:
    """GET /v1/models: the one simulated model."""
    sim: Simulator = request.app.state.simulator
    if not sim.authorised(request):
        return _unauthorised()
    model = {"id": sim.config.model, "object": "model", "created": 0, "owned_by": "causal-grpo-simulator"}
    return JSONResponse({"object": "list", "data": [model]})


async def simulator_stats(request: Request) -> Response:
    """GET /v1/simulator/stats: requests by kind and mode, injected errors, peak concurrency."""
    return JSONResponse(request.app.state.simulator.stats())


async def simulator_reset(request: Request) -> Response:
    """POST /v1/simulator/reset: zero the statistics, e.g. between benchmark phases."""
    sim: Simulator = request.app.state.simulator
    sim.reset()
    return JSONResponse(sim.stats())


def _invalid(sim: Simulator, message: str, param: str | None = None) -> JSONResponse:
    sim.errors["400"] += 1
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return JSONResponse(body, status_code=400)


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions: validate, maybe inject a fault, then answer after the configured latency."""
    sim: Simulator = request.app.state.simulator
    started = time.perf_counter()
    try:
        return await _handle(sim, request)
    finally:
        sim.service_s += time.perf_counter() - started


async def _handle(sim: Simulator, request: Request) -> Response:
    config = sim.config
    sim.requests += 1
    if not sim.authorised(request):
        sim.errors["401"] += 1
        return _unauthorised()
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _invalid(sim, "The request body is not valid JSON.")
    except ClientDisconnect:  # the client gave up (Ctrl-C, a timeout): nobody reads an answer, nothing to log
        return Response(status_code=499)
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        return _invalid(sim, "'messages' must be a non-empty list.", "messages")
    if body.get("model") != config.model:
        sim.errors["404"] += 1
        message = f"The model `{body.get('model')}` does not exist; this simulator serves only `{config.model}`."
        return error(404, message, "invalid_request_error", "model_not_found")
    if body.get("stream"):
        return _invalid(sim, "Streaming is not supported by the causal-grpo simulator; send stream=false.", "stream")
    if body.get("n") not in (None, 1):
        return _invalid(sim, "Only n=1 is supported by the causal-grpo simulator.", "n")
    classified = classify(body)
    if classified.mode not in config.supported_modes:
        if classified.mode != "tools" and config.unsupported_status == 500:
            sim.errors["500"] += 1
            return error(500, "Internal server error.", "server_error", None)
        if classified.mode != "tools":
            return _invalid(sim, f"response_format {classified.mode!r} is not supported.", "response_format")
        # Like llama.cpp without tool support: the tools are ignored and the answer comes as text.
        classified = Classified(kind=classified.kind, mode="text", schema_name=classified.schema_name)
    if config.max_concurrency is not None and sim.in_flight >= config.max_concurrency:
        sim.errors["concurrency_429"] += 1
        return error(429, "Too many concurrent requests.", "requests", "rate_limit_exceeded", headers=sim.retry_after())
    sim.by_kind[classified.kind] += 1
    sim.by_mode[classified.mode] += 1
    sim.in_flight += 1
    sim.max_in_flight = max(sim.max_in_flight, sim.in_flight)
    try:
        return await _answer(sim, body, classified)
    finally:
        sim.in_flight -= 1


async def _answer(sim: Simulator, body: dict[str, Any], classified: Classified) -> Response:
    config = sim.config
    fault = sim.draw_fault()
    if fault is not None:
        sim.errors[fault] += 1
    if fault == "429":
        return error(429, "Rate limit reached (injected).", "requests", "rate_limit_exceeded", sim.retry_after())
    if fault == "500":
        return error(500, "The server had an error (injected).", "server_error")
    if fault == "drop":
        return _DroppedResponse()
    if fault == "timeout":
        await asyncio.sleep(config.hang_s)
    malformation = sim.draw_malformation() if classified.kind in SCHEMAS else None
    if malformation is not None:
        sim.malformed[malformation] += 1
    prompt = message_text(body)
    if classified.kind in SOLVING and not sim.warned_unknown and sim.index.find(prompt) is None:
        sim.warned_unknown = True
        print(UNKNOWN_PROBLEM, file=sys.stderr, flush=True)
    rng = request_rng(config.seed, body, classified)
    result = answer(classified, prompt, config, rng, sim.index)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    rendered = render(
        classified,
        result,
        rng,
        fence_rate=config.fence_rate,
        malformation=malformation,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )
    prompt_tokens = estimate_tokens(json.dumps(body.get("messages")) + json.dumps(body.get("tools") or []))
    completion_tokens = estimate_tokens(rendered.text)
    delay = sim.latency_s(completion_tokens)
    if delay > 0:
        await asyncio.sleep(delay)
        sim.service_s -= delay
    sim.completed += 1
    sim.last_completed_at = time.time()
    return JSONResponse(_completion(config.model, rendered, prompt_tokens, completion_tokens))


def _completion(model: str, rendered: Rendered, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The chat.completion envelope, shaped as the OpenAI API's."""
    message: dict[str, Any] = {"role": "assistant", "content": rendered.content, "refusal": None}
    if rendered.tool_call is not None:
        name, arguments = rendered.tool_call
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "causal-grpo-simulator",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": rendered.finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """The simulator as an ASGI app; `app.state.simulator` holds its state."""
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropFilter) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_DropFilter())
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/simulator/stats", simulator_stats, methods=["GET"]),
            Route("/v1/simulator/reset", simulator_reset, methods=["POST"]),
        ],
        middleware=[Middleware(_DeclareSimulator)],
    )
    app.state.simulator = Simulator(config or SimulatorConfig())
    return app
