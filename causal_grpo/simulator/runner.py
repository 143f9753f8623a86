"""Running the simulator: in-process on an ephemeral loopback port, or blocking for the CLI."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import anyio.to_thread
import httpx
import uvicorn

from causal_grpo.simulator.config import SimulatorConfig
from causal_grpo.simulator.server import create_app

START_TIMEOUT_S = 10.0


def _bind(host: str, port: int) -> socket.socket:
    """A bound, listening socket: port 0 resolves to a real port, and connections queue until uvicorn serves.

    Its protocol is named (IPPROTO_TCP, not 0) because asyncio's own event loop turns Nagle's algorithm off
    only on sockets that say they are TCP: without it, a response's headers and body went out as two
    segments, the second held until the client's delayed ACK, and every call took 40 ms more (uvloop,
    which the dev extra brings, sets TCP_NODELAY on any socket, so only a plain install paid it).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(socket.SOMAXCONN)
    return sock


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


class SimulatorServer:
    """The simulator served by uvicorn in a background thread; usable from sync and async code.

    Example:
        with SimulatorServer(SimulatorConfig(seed=1)) as sim:
            ChatOpenAI(model="simulated", base_url=sim.base_url, api_key="x")
    """

    def __init__(self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self.host, self.port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.base_url = ""

    def start(self, *, wait: bool = True) -> SimulatorServer:
        """Bind, start serving in a daemon thread and, with `wait`, wait until uvicorn is up.

        Requests sent before then queue on the listening socket, so `wait=False` suits an event loop
        that must not block (LangGraph dev fails a node that sleeps).
        """
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        self._sock = _bind(self.host, self.port)
        self.base_url = _base_url(self._sock)
        # No lifespan work to do; the 1 s grace period ends hanging 'timeout' requests on stop.
        config = uvicorn.Config(
            create_app(self.config),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="causal-grpo-simulator",
            daemon=True,
        )
        self._thread.start()
        if not wait:
            return self
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulator failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for its thread, and release the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=START_TIMEOUT_S)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def stats(self) -> dict[str, Any]:
        """The server's statistics, read over HTTP (thread-safe)."""
        return httpx.get(f"{self.base_url}/simulator/stats", timeout=5).json()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatorServer:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(self, *_: object) -> None:
        await anyio.to_thread.run_sync(self.stop)


def serve(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the simulator in the foreground until interrupted, announcing its base URL."""
    sock = _bind(host, port)
    print("causal-grpo simulator (a test double, model 'simulated'; it measures the machinery, not a model)")
    print(f"base URL: {_base_url(sock)}")
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="info", timeout_graceful_shutdown=1))
    server.run(sockets=[sock])
