"""The one door to models: ChatOpenAI clients, structured output with mode fallback, re-asks, retries, usage.

Retries: the openai SDK under `ChatOpenAI` retries connection errors, timeouts, 408, 409, 429 and
every 5xx up to `max_retries` times (`openai._base_client.AsyncAPIClient.request`, `_should_retry`).
It waits `Retry-After`/`Retry-After-Ms` when the server sends one within (0, 120] s (a longer one is
not retried), else backs off exponentially, 0.5 s doubling to at most 8 s, minus up to 25 % jitter
(`_calculate_retry_timeout`). Nothing had to be added; what still fails afterwards becomes
`TransientModelError`, which the graph's RetryPolicy may retry at the node level.

Faults are counted per run in this process (`fault_counts`): each attempt the SDK retried, by its cause
(`429`, `500`..., `timeout`, `drop`, `connect`), each call that still failed after the retries, each re-ask after
invalid output, and each structured call left without a valid value (an invalid rollout, fusion, judgement
or extraction). With `--verbose` each retry is logged with its cause.

The API key is read here alone, from the env var `Context.api_key_env` names, handed to ChatOpenAI
as a SecretStr, and scrubbed from every message we build; it never enters a Context, log or error.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import logging
import os
import ssl
import threading
import time
import weakref
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from typing import Any, Generic, Literal, TypeVar, cast

import openai
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from causal_grpo.context import AgentEndpoint, Context
from causal_grpo.errors import CausalGrpoError
from causal_grpo.limiter import PriorityLimiter, calls_behind, problem_rank

try:  # openai >= 3 sends through httpx2, earlier releases through httpx
    import httpx2 as _http
    from httpx2 import create_ssl_context
except ImportError:  # pragma: no cover
    import httpx as _http  # type: ignore[no-redef]
    from httpx import create_ssl_context

log = logging.getLogger("causal_grpo.llm")

T = TypeVar("T", bound=BaseModel)

AGENTS = frozenset({"generator", "judge", "extractor", "critic"})
# Calls with the longest chain of calls still behind them go first (critical path first): every
# rollout is written before most judging starts, so the batch ends in full rounds of judge, fuse and
# extract calls rather than in the lone chains of the rollouts started last. Measured with
# `make bench`: wall / ideal at concurrency 64 went from 1.150x (finishing calls first) to 1.072x.
# A problem's chain: generate -> judge -> fuse -> judge the fusion -> the critic's extraction; the judge
# and the extractor also sit later on it, which their nodes say with `limiter.followed_by`.
CALLS_BEHIND = {"generator": 4, "judge": 3, "critic": 2, "extractor": 1}
SIMULATED = "simulated"
Mode = Literal["json_schema", "tool", "text"]
MODES: tuple[Mode, ...] = ("json_schema", "tool", "text")
TEXT_INSTRUCTION = "Respond with a JSON object for the schema named {name}"
REASK = "Your previous reply was invalid: {reason}. Reply again with only a JSON object for the schema {name}."
# Local servers (vLLM, Ollama, llama.cpp) usually need no key, but the SDK insists on one.
NO_KEY = "not-needed"
MAX_REASON_CHARS = 300
MAX_JSON_STARTS = 64


class TransientModelError(CausalGrpoError):
    """The endpoint kept failing (429, 5xx, timeout, dropped connection) after the SDK's retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:  # across the model process, with its status
        return (type(self), (str(self), self.status))


class ModelAccessError(CausalGrpoError):
    """The endpoint refuses us (401, 403) or lacks the model (404): the run cannot go on."""


class _Unreachable(openai.APIConnectionError):
    """No connection to an endpoint this process never reached: a wrong --base-url or a server not started.

    An OpenAIError, so the SDK raises it at once instead of retrying (33 s of backoff for a closed port).
    """


# endpoints (base URLs) that answered at least once in this process: a refused connection to one of them is a
# restart or a blip mid-run and is retried; to any other it is a dead address, and the run stops at once
_reached: set[str | None] = set()


class Usage(BaseModel):
    """Token counts and calls, summed over attempts."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
        )

    def cost(self, prompt_per_m: float | None, completion_per_m: float | None) -> float | None:
        """Cost at the given prices per million tokens; None when no price is known."""
        if prompt_per_m is None and completion_per_m is None:
            return None
        return (self.prompt_tokens * (prompt_per_m or 0.0) + self.completion_tokens * (completion_per_m or 0.0)) / 1e6


@dataclass(frozen=True)
class StructuredResult(Generic[T]):
    """A structured call's outcome: the parsed value, or why there is none (an invalid rollout)."""

    value: T | None
    error: str | None
    usage: Usage
    attempts: int
    mode: str
    raw: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        """True when a value was parsed."""
        return self.value is not None


@dataclass(frozen=True)
class TextResult:
    """A free-text call's outcome: the reply (possibly cut or empty, then with `error` set) and its cost."""

    text: str
    error: str | None
    usage: Usage
    finish_reason: str | None
    seconds: float


@dataclass(frozen=True)
class Endpoint:
    """Where an agent's calls go; the key itself is not here, only the env var naming it."""

    model: str
    base_url: str | None
    api_key_env: str

    def describe(self) -> str:
        """One phrase naming the endpoint for messages, never the key."""
        return f"{self.base_url or 'the default OpenAI endpoint'} for model {self.model}"


@dataclass(frozen=True)
class _Settings:
    endpoint: Endpoint
    agent: str
    temperature: float | None
    structured_mode: str
    request_timeout: float
    max_retries: int
    max_reasks: int
    max_tokens: int | None
    concurrency: int
    run: str
    verbose: bool


@dataclass(frozen=True)
class _Reply:
    mode: Mode
    text: str | None
    finish_reason: str | None
    usage: Usage
    # False when the server answered without the structure the mode asks for (it ignored the mode).
    structured: bool
    # Set when the reply is unusable before parsing, e.g. a malformed body from the server.
    problem: str | None = None


class _Rejected(Exception):
    """A 400/422-style refusal of the request itself (e.g. an unsupported response_format)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Faults:
    """One run's fault counters in this process."""

    retries: Counter[str] = field(default_factory=Counter)  # attempts retried by the SDK, by cause
    failed: Counter[str] = field(default_factory=Counter)  # calls still failing after the SDK's retries
    reasks: int = 0  # re-asks after invalid output
    invalid: Counter[str] = field(default_factory=Counter)  # structured calls left invalid, by agent


@dataclass
class _Attempts:
    """One model call's attempts as its HTTP client sees them: the cause of the last failed one, if any,
    and the causes of the failures the SDK retried."""

    failure: str | None = None
    retried: list[str] = field(default_factory=list)


@dataclass
class Exchange:
    """One request's outcome where the HTTP client runs: its reply or the error it ended in, the causes of
    the attempts the SDK retried, and (for a call that failed for good) the last failure's cause."""

    reply: _Reply | None
    failure: Exception | None
    retried: list[str]
    failed: str | None = None


_faults: dict[str, _Faults] = {}
_faults_lock = threading.Lock()
_attempts: ContextVar[_Attempts | None] = ContextVar("causal_grpo_attempts", default=None)
RETRIED_STATUSES = frozenset({408, 409, 429})


def _faults_of(run: str) -> _Faults:
    with _faults_lock:
        return _faults.setdefault(run, _Faults())


def fault_counts(run: str) -> dict[str, Any]:
    """A run's fault counters in this process so far, as plain data (see the module docstring)."""
    f = _faults_of(run)
    with _faults_lock:
        return {
            "retries": dict(sorted(f.retries.items())),
            "failed_calls": dict(sorted(f.failed.items())),
            "reasks": f.reasks,
            "invalid_output": dict(sorted(f.invalid.items())),
        }


def fault_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What `fault_counts` grew by between two readings, with the rollouts left invalid by malformed output."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            grown = {k: v - before.get(key, {}).get(k, 0) for k, v in value.items()}
            out[key] = {k: v for k, v in grown.items() if v}
        else:
            out[key] = value - before.get(key, 0)
    out["retried_calls"] = sum(out["retries"].values())
    invalid = out["invalid_output"]
    out["invalid_rollouts"] = invalid.get("generator", 0) + invalid.get("critic", 0)
    return out


def _cause(exc: BaseException) -> str:
    """A transport failure's cause: no connection made, no reply in time, or a connection dropped mid-way."""
    if isinstance(exc, _http.ConnectError):
        return "connect"
    return "timeout" if isinstance(exc, _http.TimeoutException) else "drop"


# Process-wide memory of the structured mode each (base_url, model) supports.
_detected_modes: dict[tuple[str | None, str], Mode] = {}
# Per event loop: one semaphore per (run, concurrency) and one detection lock per endpoint.
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], PriorityLimiter]] = (
    weakref.WeakKeyDictionary()
)
_detect_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str | None, str], asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
_clients: dict[_Settings, ModelClient] = {}
_clients_lock = threading.Lock()
_simulator: Any = None
_simulator_lock = threading.Lock()


def extract_json(text: str) -> dict[str, Any] | None:
    """The first JSON object in text, tolerating code fences and prose around it; None if there is none."""
    stripped = text.strip()
    try:
        whole = json.loads(stripped)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return whole
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(MAX_JSON_STARTS):
        if start < 0:
            return None
        try:
            value, _end = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def validation_reason(exc: ValidationError) -> str:
    """A short, model-readable summary of a validation error (first few problems)."""
    problems = [f"{'.'.join(map(str, e['loc'])) or 'object'}: {e['msg']}" for e in exc.errors()[:3]]
    more = len(exc.errors()) - len(problems)
    text = "schema validation failed: " + "; ".join(problems) + (f" (+{more} more)" if more > 0 else "")
    return text[:MAX_REASON_CHARS]


def parse_reply(schema: type[T], text: str | None, finish_reason: str | None) -> tuple[T | None, str | None]:
    """Parse a reply into the schema, or say why it is invalid."""
    if finish_reason == "length":
        return None, "truncated output (finish_reason=length)"
    if finish_reason == "content_filter":
        return None, "output withheld by the content filter"
    if not text or not text.strip():
        return None, "empty output"
    data = extract_json(text)
    if data is None:
        return None, "no JSON object in the output"
    try:
        return schema.model_validate(data), None
    except ValidationError as exc:
        return None, validation_reason(exc)


@lru_cache(maxsize=64)
def _formats(schema: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any], str]:
    json_schema = schema.model_json_schema()
    response_format = {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": json_schema}}
    tool = convert_to_openai_tool(schema)
    instruction = TEXT_INSTRUCTION.format(name=schema.__name__) + "\n" + json.dumps(json_schema)
    return response_format, tool, instruction


@cache
def _ssl_context() -> ssl.SSLContext:
    """The SDK's default TLS context, built once per process.

    Loading the CA bundle takes ~30 ms, which every run's four clients would otherwise pay again.
    """
    return create_ssl_context()


# Connections per pool of a client's transport (see `_PoolShards`).
POOL_SHARD = 32


class _PoolShards(_http.AsyncBaseTransport):
    """Connection pools that the model clients of one event loop share, requests spread over them in turn.

    httpcore scans every connection of its pool each time a request starts or ends, so in one pool the cost
    of a request grows with the calls in flight: 11 % of the event loop's busy time at 256. Pools of
    `POOL_SHARD` connections keep the scan short, and each keeps that many alive. Shared by every agent's
    client, a connection one agent's call opened serves the next call of any agent: at 256 in flight, with
    one pool per agent's client, 891 of 2,431 calls opened a connection, 87 ms each on average, inside
    their slots. Closed when the last client using it closes.
    """

    def __init__(self, pools: list[_http.AsyncBaseTransport]) -> None:
        self.pools = pools
        self.users = 0
        self._turn = itertools.cycle(pools)

    async def handle_async_request(self, request: Any) -> Any:
        return await next(self._turn).handle_async_request(request)

    async def aclose(self) -> None:
        self.users -= 1
        if self.users == 0:
            for pool in self.pools:
                await pool.aclose()


# Per event loop and number of pools: the pools its model clients send through (loops may run in threads).
_shared_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _PoolShards]] = (
    weakref.WeakKeyDictionary()
)
_shared_pools_lock = threading.Lock()


def _share(limit: int | None, parts: int) -> int | None:
    return None if limit is None else -(-limit // parts)


class _SlotHttpClient(openai.DefaultAsyncHttpxClient):
    """The SDK's HTTP client, holding a slot of the run's limiter only while a request is on the wire.

    Building the request (LangChain, the SDK) and parsing the reply stay outside the slot, so at a bound of
    N calls in flight that CPU work overlaps the other calls' latency instead of adding to it. The SDK's
    retries take a slot per attempt and wait out their backoff without one.
    """

    def __init__(
        self,
        limiter: PriorityLimiter,
        behind: int,
        *,
        base_url: str | None = None,
        pools: int = 1,
        **kwargs: Any,
    ) -> None:
        self._pools = pools  # read by `_init_transport`, which the base class calls
        super().__init__(**kwargs)
        self._base = base_url
        self._slots = limiter
        self._behind = behind

    def _init_transport(self, *, limits: Any = None, transport: Any = None, **kwargs: Any) -> Any:
        """The running loop's shared `_PoolShards`: httpx's own transport, `pools` times, sharing its limits.

        Proxies stay httpx's own (its mounts). Outside a loop the client gets pools of its own.
        """
        if transport is not None:
            return transport
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with _shared_pools_lock:
            shared = _shared_pools.setdefault(loop, {}) if loop is not None else {}
            shards = shared.get(self._pools)
            if shards is None or shards.users == 0:
                share = _http.Limits(
                    max_connections=_share(limits.max_connections, self._pools),
                    max_keepalive_connections=max(
                        _share(limits.max_keepalive_connections, self._pools) or 0, POOL_SHARD
                    ),
                    keepalive_expiry=limits.keepalive_expiry,
                )
                base = super()._init_transport
                shards = shared[self._pools] = _PoolShards([base(limits=share, **kwargs) for _ in range(self._pools)])
            shards.users += 1
        return shards

    async def send(self, request: Any, **kwargs: Any) -> Any:
        """Send once a slot is free; a non-streamed body is read before the slot is given back.

        A call's attempt that follows a failed one is the SDK's retry of it: counted here by the failure's cause.
        """
        attempts = _attempts.get()
        if attempts is not None and attempts.failure is not None:
            attempts.retried.append(attempts.failure)
            attempts.failure = None
        try:
            behind = calls_behind.get()
            async with self._slots.slot((-(self._behind if behind is None else behind), problem_rank.get())):
                response = await super().send(request, **kwargs)
        except _http.ConnectError as exc:
            if self._base not in _reached:
                raise _Unreachable(message="connection refused", request=request) from exc
            if attempts is not None:
                attempts.failure = _cause(exc)
            raise
        except _http.TransportError as exc:
            if attempts is not None:
                attempts.failure = _cause(exc)
            raise
        _reached.add(self._base)
        if attempts is not None and (response.status_code in RETRIED_STATUSES or response.status_code >= 500):
            attempts.failure = str(response.status_code)
        # let the waiter the slot went to put its request on the wire before this reply is parsed
        await asyncio.sleep(0)
        return response


class _ReadyBodyChatOpenAI(ChatOpenAI):
    """ChatOpenAI handing the SDK its messages and tools as a ready JSON body.

    LangChain has built them as plain JSON already; the SDK's request transform would walk them again
    against its typed-dict unions and change nothing (0.4 ms of CPU per scaffold call here). The SDK
    merges `extra_body` into the request last, so the body sent is the same.
    """

    def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        ready = {key: payload.pop(key) for key in ("messages", "tools", "response_format") if key in payload}
        payload["messages"] = []  # `create` requires the argument; `extra_body`'s messages replace it
        payload["extra_body"] = {**(payload.get("extra_body") or {}), **ready}
        return payload


def _with_instruction(messages: list[BaseMessage], instruction: str) -> list[BaseMessage]:
    # Several chat templates accept only one leading system message, so extend it when there is one.
    if messages and isinstance(messages[0], SystemMessage) and isinstance(messages[0].content, str):
        return [SystemMessage(f"{messages[0].content}\n\n{instruction}"), *messages[1:]]
    return [SystemMessage(instruction), *messages]


def _usage_of(message: AIMessage) -> Usage:
    meta = message.usage_metadata or {}
    return Usage(prompt_tokens=meta.get("input_tokens", 0), completion_tokens=meta.get("output_tokens", 0), calls=1)


def simulated_endpoint(seed: int = 0) -> str:
    """Base URL of the process's one in-process simulator, started on first use (the first seed wins)."""
    global _simulator
    with _simulator_lock:
        if _simulator is None:
            from causal_grpo.simulator.config import SimulatorConfig
            from causal_grpo.simulator.runner import SimulatorServer

            # Called from inside async nodes: start without waiting on the event loop.
            server = SimulatorServer(SimulatorConfig(seed=seed)).start(wait=False)
            atexit.register(server.stop)
            _simulator = server
            log.info("model: simulated (a test double at %s, seed %d)", server.base_url, seed)
        return _simulator.base_url


def endpoint_for(context: Context, agent: str) -> Endpoint:
    """The endpoint an agent's calls go to, after its overrides in `context.agents`."""
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}; expected one of {sorted(AGENTS)}")
    override = context.agents.get(agent) or AgentEndpoint()
    model = override.model or context.model
    base_url = override.base_url or context.base_url
    if model == SIMULATED and base_url is None:
        base_url = simulated_endpoint(context.seed)
    return Endpoint(model=model, base_url=base_url, api_key_env=override.api_key_env or context.api_key_env)


def client_for(context: Context, agent: str) -> ModelClient:
    """The (cached) model client of an agent under this context."""
    override = context.agents.get(agent) or AgentEndpoint()
    settings = _Settings(
        endpoint=endpoint_for(context, agent),
        agent=agent,
        temperature=override.temperature,
        structured_mode=context.structured_mode,
        request_timeout=context.request_timeout,
        max_retries=context.max_retries,
        max_reasks=context.max_reasks,
        max_tokens=context.max_tokens,
        concurrency=context.concurrency,
        run=context.run,
        verbose=context.verbose,
    )
    with _clients_lock:
        client = _clients.get(settings)
        if client is None:
            client = _clients[settings] = ModelClient(settings)
        return client


async def close_clients() -> None:
    """Close the model clients' HTTP connections (the end of a run)."""
    from causal_grpo.model_process import model_process

    await model_process().close_clients()


class ModelClient:
    """Structured calls to one agent's endpoint through ChatOpenAI over HTTP.

    The HTTP exchange itself (`exchange`: ChatOpenAI, the SDK, the connection pools and the run's limiter)
    runs in the model process (`causal_grpo.model_process`); structured output, re-asks and counting here.
    """

    def __init__(self, settings: _Settings, key: SecretStr | None = None) -> None:
        self._settings = settings
        self.endpoint = settings.endpoint
        self._key = key or self._read_key()
        # ChatOpenAI's async HTTP pool belongs to one event loop, so each loop gets its own.
        self._chats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ChatOpenAI] = weakref.WeakKeyDictionary()
        self._http: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.DefaultAsyncHttpxClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        where = self.endpoint.describe()
        return f"ModelClient(agent={self._settings.agent!r}, endpoint={where!r}, mode={self.mode!r})"

    @property
    def mode(self) -> str:
        """The structured-output mode in use: configured, detected, or 'auto' until detected."""
        if self._settings.structured_mode != "auto":
            return self._settings.structured_mode
        return _detected_modes.get(self._mode_key, "auto")

    @property
    def _mode_key(self) -> tuple[str | None, str]:
        return (self.endpoint.base_url, self.endpoint.model)

    def _read_key(self) -> SecretStr:
        value = os.environ.get(self.endpoint.api_key_env)
        if value:
            return SecretStr(value)
        if self.endpoint.base_url is None:
            raise ModelAccessError(
                f"no API key for {self.endpoint.describe()}: set ${self.endpoint.api_key_env} "
                "(or give --base-url for a local server)"
            )
        return SecretStr(SIMULATED if self.endpoint.model == SIMULATED else NO_KEY)

    def scrub(self, text: str) -> str:
        """`text` with the key masked."""
        key = self._key.get_secret_value()
        return text.replace(key, "***") if len(key) >= 4 else text

    def _chat(self) -> ChatOpenAI:
        loop = asyncio.get_running_loop()
        chat = self._chats.get(loop)
        if chat is None:
            s = self._settings
            chat = _ReadyBodyChatOpenAI(
                model=self.endpoint.model,
                base_url=self.endpoint.base_url,
                api_key=self._key,
                timeout=s.request_timeout,
                max_retries=s.max_retries,
                max_tokens=s.max_tokens,
                use_responses_api=False,
                http_async_client=self._http.setdefault(loop, self._http_client()),
            )
            self._chats[loop] = chat
        return chat

    def _http_client(self) -> _SlotHttpClient:
        return _SlotHttpClient(
            self._limiter(),
            CALLS_BEHIND[self._settings.agent],
            base_url=self.endpoint.base_url,
            pools=-(-self._settings.concurrency // POOL_SHARD),
            verify=_ssl_context(),
        )

    async def aclose(self) -> None:
        """Close this loop's HTTP connections.

        Left to the garbage collector, the SDK's client closes itself from whatever loop runs then,
        touching sockets of a loop that is already closed.
        """
        loop = asyncio.get_running_loop()
        self._chats.pop(loop, None)
        http = self._http.pop(loop, None)
        if http is not None:
            await http.aclose()

    def _limiter(self) -> PriorityLimiter:
        per_loop = _limiters.setdefault(asyncio.get_running_loop(), {})
        key = (self._settings.run, self._settings.concurrency)
        if key not in per_loop:
            per_loop[key] = PriorityLimiter(self._settings.concurrency)
        return per_loop[key]

    def _detect_lock(self) -> asyncio.Lock:
        return _detect_locks.setdefault(asyncio.get_running_loop(), {}).setdefault(self._mode_key, asyncio.Lock())

    async def structured(
        self, schema: type[T], messages: list[BaseMessage], *, temperature: float | None = None
    ) -> StructuredResult[T]:
        """Ask for one schema instance; invalid output is re-asked up to `max_reasks` times.

        Raises:
            ModelAccessError: 401/403/404 from the endpoint.
            TransientModelError: the endpoint kept failing after the SDK's retries.
        """
        started = time.perf_counter()
        temperature = self._settings.temperature if temperature is None else temperature
        conversation = list(messages)
        usage = Usage()
        reply: _Reply | None = None
        reason = "no attempt made"
        attempts = 0
        faults = _faults_of(self._settings.run)
        rejected_request = False
        for attempts in range(1, self._settings.max_reasks + 2):
            if attempts > 1:
                with _faults_lock:
                    faults.reasks += 1
            try:
                reply = await self._ask(schema, conversation, temperature)
            except _Rejected as rejected:
                reason = rejected.reason
                rejected_request = True
                break
            usage += reply.usage
            value, error = (
                (None, reply.problem) if reply.problem else parse_reply(schema, reply.text, reply.finish_reason)
            )
            if value is not None:
                return StructuredResult(value, None, usage, attempts, reply.mode, reply.text, self._since(started))
            reason = error or "invalid output"
            log.info(
                "%s: invalid %s output (attempt %d): %s",
                self._settings.agent,
                schema.__name__,
                attempts,
                reason,
            )
            conversation = [*conversation, HumanMessage(REASK.format(reason=reason, name=schema.__name__))]
        if not rejected_request:
            with _faults_lock:
                faults.invalid[self._settings.agent] += 1
        mode = reply.mode if reply else self.mode
        raw = reply.text if reply else None
        return StructuredResult(None, reason, usage, attempts, mode, raw, self._since(started))

    async def text(self, messages: list[BaseMessage], *, temperature: float | None = None) -> TextResult:
        """Ask for a free-text reply (no schema, no re-ask: what the reply says is the model's answer).

        Raises:
            ModelAccessError: 401/403/404 from the endpoint.
            TransientModelError: the endpoint kept failing after the SDK's retries.
        """
        started = time.perf_counter()
        temperature = self._settings.temperature if temperature is None else temperature
        kwargs: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
        reply = await self._invoke("text", list(messages), kwargs)
        error = reply.problem or (None if reply.text else "the model returned an empty reply")
        if reply.finish_reason == "length" and not error:
            error = "the reply was cut at max_tokens"
        return TextResult(reply.text or "", error, reply.usage, reply.finish_reason, self._since(started))

    @staticmethod
    def _since(started: float) -> float:
        return time.perf_counter() - started

    async def _ask(self, schema: type[T], conversation: list[BaseMessage], temperature: float | None) -> _Reply:
        if self.mode == "auto":
            async with self._detect_lock():
                if self.mode == "auto":
                    return await self._detect(schema, conversation, temperature)
        return await self._call(cast(Mode, self.mode), schema, conversation, temperature)

    async def _detect(self, schema: type[T], conversation: list[BaseMessage], temperature: float | None) -> _Reply:
        usage = Usage()
        for mode in MODES:
            try:
                reply = await self._call(mode, schema, conversation, temperature)
            except (_Rejected, TransientModelError) as rejected:
                # A 5xx that outlives the retries for one mode (llama-cpp-python's server answers json_schema
                # with 500) says the mode is broken there; timeouts and 429s say nothing about the mode.
                server_fault = isinstance(rejected, TransientModelError) and (rejected.status or 0) >= 500
                if mode == "text" or (isinstance(rejected, TransientModelError) and not server_fault):
                    raise
                log.info(
                    "%s: %s not supported (%s); trying the next mode",
                    self.endpoint.describe(),
                    mode,
                    rejected,
                )
                continue
            usage += reply.usage
            if reply.structured:
                _detected_modes[self._mode_key] = mode
                log.info("structured output at %s: %s", self.endpoint.describe(), mode)
                return replace(reply, usage=usage)
            log.info("%s: the server ignored %s; trying the next mode", self.endpoint.describe(), mode)
        raise AssertionError("text mode always yields a reply")  # pragma: no cover

    async def _call(
        self, mode: Mode, schema: type[T], conversation: list[BaseMessage], temperature: float | None
    ) -> _Reply:
        return await self._invoke(mode, *self.request(mode, schema, conversation, temperature))

    @staticmethod
    def request(
        mode: Mode, schema: type[T], conversation: list[BaseMessage], temperature: float | None
    ) -> tuple[list[BaseMessage], dict[str, Any]]:
        """The messages and ChatOpenAI arguments of one structured request in `mode`."""
        response_format, tool, instruction = _formats(schema)
        kwargs: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
        messages = conversation
        if mode == "json_schema":
            # In the body rather than as `response_format=`: LangChain then calls `create`, not `parse`,
            # which spares the SDK's type-walk of the whole schema on every call (about a quarter of the
            # client's CPU); truncated and filtered replies are judged by `parse_reply` like in every mode.
            kwargs["extra_body"] = {"response_format": response_format}
        elif mode == "tool":
            kwargs["tools"] = [tool]
            kwargs["tool_choice"] = {"type": "function", "function": {"name": tool["function"]["name"]}}
        else:
            messages = _with_instruction(conversation, instruction)
        return messages, kwargs

    async def _invoke(self, mode: Mode, messages: list[BaseMessage], kwargs: dict[str, Any]) -> _Reply:
        """One request as it stands, through the model process; its transport faults counted."""
        from causal_grpo.model_process import model_process

        agent = self._settings.agent
        if self._settings.verbose:
            log.info("%s %s request:\n%s", agent, mode, self._render(messages))
        exchange = cast(Exchange, await model_process().exchange(self._settings, self._key, mode, messages, kwargs))
        faults = _faults_of(self._settings.run)
        with _faults_lock:
            faults.retries.update(exchange.retried)
            if exchange.failed is not None:
                faults.failed[exchange.failed] += 1
        for cause in exchange.retried:
            log.info("%s at %s: retrying after %s", agent, self.endpoint.describe(), cause)
        if exchange.failure is not None:
            if exchange.failed is not None:
                log.info("%s: %s", agent, exchange.failure)
            raise exchange.failure
        reply = cast(_Reply, exchange.reply)
        if self._settings.verbose:
            log.info("%s %s reply (%s):\n%s", agent, mode, reply.finish_reason, reply.text)
        return reply

    async def exchange(self, mode: Mode, messages: list[BaseMessage], kwargs: dict[str, Any]) -> Exchange:
        """One request over HTTP in this process (the model process runs it), its failure classified."""
        attempts = _Attempts()
        token = _attempts.set(attempts)
        try:
            # the limiter's slot is taken by the HTTP client around the request itself (`_SlotHttpClient`)
            message = await self._chat().ainvoke(messages, **kwargs)
        except openai.APIError as exc:
            # classified outside the except block so no openai exception rides along as __context__
            failure = exc
        except (ValueError, KeyError, TypeError) as exc:
            # A malformed body from the server (not the model's text): an invalid reply, re-asked.
            problem = f"malformed response from the server ({type(exc).__name__})"
            reply = _Reply(mode, None, None, Usage(calls=1), structured=False, problem=problem)
            return Exchange(reply, None, attempts.retried)
        else:
            return Exchange(self._reply(mode, message), None, attempts.retried)
        finally:
            _attempts.reset(token)
        classified = self._classify(failure)
        if isinstance(classified, TransientModelError):
            return Exchange(None, classified, attempts.retried, attempts.failure or str(classified.status or "error"))
        return Exchange(None, classified, attempts.retried)

    def _reply(self, mode: Mode, message: AIMessage) -> _Reply:
        finish = message.response_metadata.get("finish_reason")
        usage = _usage_of(message)
        if mode != "tool":
            text = message.text
            # A reply cut at max_tokens says nothing against the mode: the server honoured it and ran out.
            structured = mode == "text" or finish == "length" or extract_json(text) is not None
            return _Reply(mode, text, finish, usage, structured)
        if message.tool_calls:
            return _Reply(mode, json.dumps(message.tool_calls[0]["args"]), finish, usage, structured=True)
        if message.invalid_tool_calls:
            return _Reply(mode, message.invalid_tool_calls[0].get("args"), finish, usage, structured=True)
        return _Reply(mode, message.text, finish, usage, structured=False)

    def _classify(self, exc: openai.APIError) -> Exception:
        where = self.endpoint.describe()
        retries = self._settings.max_retries
        # LangChain wraps the SDK's connection error in its own; ours rides along as the cause
        if isinstance(exc, _Unreachable) or isinstance(exc.__cause__, _Unreachable):
            return ModelAccessError(f"cannot connect to {where} (connection refused); check --base-url")
        if isinstance(exc, openai.APITimeoutError):
            return TransientModelError(f"request timed out at {where} after {retries} retries")
        if isinstance(exc, openai.APIConnectionError):
            return TransientModelError(f"connection failed at {where} after {retries} retries")
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            what = "authentication failed" if status == 401 else "permission denied"
            return ModelAccessError(f"{what} ({status}) at {where}; check the API key in ${self.endpoint.api_key_env}")
        if status == 404:
            return ModelAccessError(f"model or endpoint not found (404) at {where}; check --model and --base-url")
        if status is None or status in (408, 409, 429) or status >= 500:
            return TransientModelError(
                f"server error ({status or 'unknown'}) at {where} after {retries} retries", status
            )
        return _Rejected(self.scrub(f"request rejected ({status}): {self._server_message(exc)}"))

    @staticmethod
    def _server_message(exc: openai.APIError) -> str:
        body = exc.body
        if isinstance(body, dict):
            body = body.get("error", body)
        if isinstance(body, dict):
            body = body.get("message", body)
        return str(body)[:MAX_REASON_CHARS]

    def _render(self, messages: list[BaseMessage]) -> str:
        return self.scrub("\n".join(f"[{m.type}] {m.content}" for m in messages))
