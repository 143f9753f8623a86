"""`causal-grpo simulator serve`: the bundled OpenAI-compatible simulator, a declared test double."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from causal_grpo.cli.common import fail
from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.runner import serve as serve_simulator

app = typer.Typer(
    no_args_is_help=True,
    help="The bundled simulator: an OpenAI-compatible test double that measures the machinery, not a model.",
)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; loopback by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind; 0 picks a free one.")] = 8765,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 0,
    correct_rate: Annotated[float, typer.Option(help="Share of scaffolds whose target is right.")] = 0.5,
    fusion_correct_rate: Annotated[
        float | None, typer.Option(help="Share of fused scaffolds that are right (default: the correct rate).")
    ] = None,
    fence_rate: Annotated[float, typer.Option(help="Text mode: share of JSON answers in a ```json fence.")] = 0.3,
    latency_ms: Annotated[float, typer.Option(help="Time to first token, ms.")] = 0.0,
    tokens_per_s: Annotated[float, typer.Option(help="Completion tokens per second; 0 = instant.")] = 0.0,
    jitter: Annotated[float, typer.Option(help="Latency varies by up to this fraction.")] = 0.0,
    error_rate_429: Annotated[float, typer.Option(help="Share of requests answered 429.")] = 0.0,
    retry_after: Annotated[float, typer.Option(help="Retry-After seconds sent with 429s.")] = 1.0,
    error_rate_500: Annotated[float, typer.Option(help="Share of requests answered 500.")] = 0.0,
    drop_rate: Annotated[float, typer.Option(help="Share of responses cut off mid-flight.")] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="Share of requests that hang for --hang-s.")] = 0.0,
    hang_s: Annotated[float, typer.Option(help="How long a hanging request hangs, s.")] = 300.0,
    not_json_rate: Annotated[float, typer.Option(help="Share of structured answers replaced by prose.")] = 0.0,
    wrong_schema_rate: Annotated[float, typer.Option(help="Share of answers that are JSON failing the schema.")] = 0.0,
    truncated_rate: Annotated[float, typer.Option(help="Share of answers cut in half (finish 'length').")] = 0.0,
    max_concurrency: Annotated[int | None, typer.Option(help="Requests in flight above which 429 is sent.")] = None,
    require_api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CAUSAL_GRPO_SIMULATOR_KEY", help="Require this bearer key (else 401).", show_default=False
        ),
    ] = None,
    supported_mode: Annotated[
        list[str] | None,
        typer.Option(help="Structured modes served (repeat): json_schema, json_object, tools, text (default: all)."),
    ] = None,
) -> None:
    """Serve the simulator in the foreground until Ctrl-C."""
    console = Console(stderr=True)
    try:
        config = SimulatorConfig(
            seed=seed,
            correct_rate=correct_rate,
            fusion_correct_rate=fusion_correct_rate,
            fence_rate=fence_rate,
            latency_ms=latency_ms,
            tokens_per_s=tokens_per_s,
            jitter=jitter,
            error_rate_429=error_rate_429,
            retry_after_s=retry_after,
            error_rate_500=error_rate_500,
            drop_rate=drop_rate,
            timeout_rate=timeout_rate,
            hang_s=hang_s,
            not_json_rate=not_json_rate,
            wrong_schema_rate=wrong_schema_rate,
            truncated_rate=truncated_rate,
            max_concurrency=max_concurrency,
            require_api_key=require_api_key,
            **({"supported_modes": frozenset(supported_mode)} if supported_mode else {}),
        )
    except ValidationError as exc:
        fail(console, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), code=2)
    try:
        serve_simulator(config, host=host, port=port)
    except OSError as exc:
        fail(console, f"cannot listen on {host}:{port}: {exc}")
