"""`causal-grpo local-model serve`: llama.cpp's server with Gemma 3 270M on loopback, offline."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer
from rich.console import Console

from causal_grpo.cli.common import fail
from causal_grpo.local_model import (
    DEFAULT_CTX_PER_SLOT,
    DEFAULT_MAX_TOKENS,
    DEFAULT_PARALLEL,
    MODEL_ALIAS,
    LlamaServer,
    LocalModelError,
    assemble_model,
    ensure_llama_server,
)

app = typer.Typer(
    no_args_is_help=True,
    help="A real model offline: llama.cpp's llama-server (built from PyPI) with Gemma 3 270M (the `local` extra).",
)


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 8080,
    parallel: Annotated[int, typer.Option(help="Server slots: requests decoded at once.")] = DEFAULT_PARALLEL,
    threads: Annotated[int, typer.Option(help="CPU threads of the server.")] = 2,
    ctx_per_slot: Annotated[int, typer.Option(help="Context tokens per slot.")] = DEFAULT_CTX_PER_SLOT,
    max_tokens: Annotated[int, typer.Option(help="Completion token cap per reply.")] = DEFAULT_MAX_TOKENS,
    jobs: Annotated[int, typer.Option(help="Compile jobs if llama-server must be built.")] = 2,
) -> None:
    """Build or find llama-server, assemble the model, serve it in the foreground until Ctrl-C."""
    console = Console(stderr=True, soft_wrap=True)

    def say(text: str) -> None:
        console.print(text, highlight=False)

    try:
        binary = ensure_llama_server(jobs=jobs, say=say)
        model = assemble_model()
        server = LlamaServer(
            binary,
            model,
            port=port,
            parallel=parallel,
            threads=threads,
            ctx_per_slot=ctx_per_slot,
            max_tokens=max_tokens,
        )
        say(f"starting {binary} with {model.name} (log {server.log_path})")
        server.start()
    except LocalModelError as exc:
        fail(console, str(exc))
    say(
        f"serving Gemma 3 270M at {server.base_url} as model '{MODEL_ALIAS}', {parallel} slots; "
        "a tiny base model: expect near-zero accuracy, it proves the protocol and pipeline. Train against it with:"
    )
    print(
        f"CAUSAL_GRPO_MAX_TOKENS={max_tokens} causal-grpo train --model {MODEL_ALIAS} "
        f"--base-url {server.base_url} --concurrency {parallel} --dataset physics --max-problems 1"
    )
    # A plain `kill` must stop llama-server too, not leave it running without us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        server.stop()
    if code:
        fail(console, f"llama-server exited with {code}; log {server.log_path}")
