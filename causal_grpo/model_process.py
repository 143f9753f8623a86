"""The model calls' own process: ChatOpenAI, the SDK and their HTTP pools run there, off the event loop.

At 256 calls in flight LangChain, the openai SDK and httpx took about half of the event-loop thread's CPU
(5 of 9 ms a call, `benchmarks/README.md`), and a busy loop holds every call's slot longer. So each call's
request (the agent's settings, its key, the messages) goes to one server process over a Unix socket, one
connection per event loop; that process runs `ModelClient.exchange` on its own loop, with the run's
limiter and connection pools, and sends the reply or the classified error back. The key crosses only that
private socket (its folder is the user's alone) and is never logged there either.

One process serves every run of this one (started on first use or by `start`, kept warm, stopped at exit).
It ignores Ctrl-C, which its parent handles, and exits when its parent does. If it dies, the calls in
flight fail as transient errors (the nodes' retry policy asks again) and the next call starts a new one.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import pickle
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from causal_grpo import llm
from causal_grpo.limiter import calls_behind, problem_rank

_HEADER = struct.Struct("!I")
START_TIMEOUT_S = 120.0


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return pickle.loads(await reader.readexactly(size))


def _write_frame(writer: asyncio.StreamWriter, message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_HEADER.pack(len(body)) + body)


def _picklable(failure: Exception) -> Exception:
    try:
        pickle.dumps(failure)
    except Exception:  # noqa: BLE001 - any failure to pickle: send its words instead
        return llm.TransientModelError(f"the model process failed ({type(failure).__name__}: {failure})")
    return failure


# -- the server process ---------------------------------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.clients: dict[Any, llm.ModelClient] = {}

    def client(self, settings: Any, key: Any) -> llm.ModelClient:
        client = self.clients.get(settings)
        if client is None:
            client = self.clients[settings] = llm.ModelClient(settings, key)
        return client

    async def call(self, settings: Any, key: Any, request: tuple[Any, ...]) -> llm.Exchange:
        mode, messages, kwargs, behind, rank = request
        client = self.client(settings, key)
        calls_behind.set(behind)
        problem_rank.set(rank)
        try:
            return await client.exchange(mode, messages, kwargs)
        except Exception as exc:  # noqa: BLE001 - a bug of ours still answers the caller
            failure = llm.TransientModelError(client.scrub(f"the model process failed ({type(exc).__name__}: {exc})"))
            return llm.Exchange(None, failure, [])

    async def close(self) -> None:
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            await client.aclose()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks: dict[int, asyncio.Task[None]] = {}

        async def answer(ident: int, settings: Any, key: Any, request: tuple[Any, ...]) -> None:
            exchange = await self.call(settings, key, request)
            if exchange.failure is not None:
                exchange.failure = _picklable(exchange.failure)
            _write_frame(writer, (ident, exchange))
            tasks.pop(ident, None)

        async def closed(ident: int) -> None:
            await self.close()
            _write_frame(writer, (ident, None))

        try:
            while True:
                kind, ident, *rest = await _read_frame(reader)
                if kind == "call":
                    tasks[ident] = asyncio.create_task(answer(ident, *rest))
                elif kind == "cancel" and ident in tasks:
                    tasks.pop(ident).cancel()
                elif kind == "close":
                    tasks[ident] = asyncio.create_task(closed(ident))
        except (asyncio.IncompleteReadError, ConnectionError):
            for task in tasks.values():
                task.cancel()
        finally:
            writer.close()


async def _serve(path: str) -> None:
    loop = asyncio.get_running_loop()
    server = _Server()
    unix = await asyncio.start_unix_server(server.connection, path, limit=2**24)
    gone = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), gone.set)  # the parent's end closes when it exits, however it exits
    os.write(1, b"ready\n")
    os.dup2(2, 1)  # nothing else may write to the parent's pipe: stdout goes where stderr goes
    async with unix:
        await gone.wait()
    await server.close()
    os._exit(0)  # nothing left to flush; the interpreter's teardown would hold up the parent's exit


def main() -> None:
    """The server process: `python -m causal_grpo.model_process SOCKET`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    asyncio.run(_serve(sys.argv[1]))


# -- the caller's side -----------------------------------------------------------------------------------


class _Connection:
    """One event loop's connection to the server: requests out, replies matched to their callers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, process: ModelProcess) -> None:
        self._writer = writer
        self._waiting: dict[int, asyncio.Future[llm.Exchange | None]] = {}
        self._ids = itertools.count()
        self._reading = asyncio.create_task(self._read(reader, process))

    @property
    def alive(self) -> bool:
        return not self._reading.done()

    async def _read(self, reader: asyncio.StreamReader, process: ModelProcess) -> None:
        try:
            while True:
                ident, exchange = await _read_frame(reader)
                future = self._waiting.pop(ident, None)
                if future is not None and not future.done():
                    future.set_result(exchange)
        except (asyncio.IncompleteReadError, ConnectionError):
            stopped = process.lost()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(llm.TransientModelError(f"the model process stopped ({stopped})"))
            self._waiting.clear()

    async def send(self, kind: str, *payload: Any) -> llm.Exchange | None:
        if not self.alive:
            raise llm.TransientModelError("the model process stopped")
        ident = next(self._ids)
        future = self._waiting[ident] = asyncio.get_running_loop().create_future()
        _write_frame(self._writer, (kind, ident, *payload))
        try:
            return await future
        except asyncio.CancelledError:
            self._waiting.pop(ident, None)
            if self.alive:
                _write_frame(self._writer, ("cancel", ident))
            raise

    async def aclose(self) -> None:
        self._reading.cancel()
        self._writer.close()


class ModelProcess:
    """The server process and this process's connections to it, one per event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._folder: Path | None = None
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = (
            weakref.WeakKeyDictionary()
        )
        self._connecting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._generation = 0

    @property
    def _path(self) -> str:
        assert self._folder is not None
        return str(self._folder / f"model-{self._generation}.sock")

    def start(self) -> ModelProcess:
        """Start the server process if it is not running, and wait until it listens (blocking)."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return self
            self._reap()
            self._generation += 1
            self._folder = Path(tempfile.mkdtemp(prefix="causal-grpo-model-"))  # mode 0700: ours alone
            # a module run, not multiprocessing's spawn, which would import the caller's main script again;
            # its own session, so a terminal's Ctrl-C goes to us alone
            here = str(Path(__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
            process = subprocess.Popen(
                [sys.executable, "-m", "causal_grpo.model_process", self._path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": path},
                start_new_session=True,
            )
            assert process.stdout is not None
            readable, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
            if not readable or process.stdout.readline() != b"ready\n":
                process.kill()
                why = f"exit code {process.wait()}" if readable else f"not ready within {START_TIMEOUT_S:g} s"
                raise llm.TransientModelError(f"the model process did not start ({why})")
            self._process = process
            return self

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def lost(self) -> str:
        """Why the server process went away, once its connection closed; the next call starts another."""
        process = self._process
        if process is None:
            return "stopped"
        try:
            return f"exit code {process.wait(1)}"
        except subprocess.TimeoutExpired:
            return "its connection closed"

    def _reap(self) -> None:
        process = self._process
        if process is not None:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()  # the server sees its parent go and exits
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._process = self._folder = None

    def stop(self) -> None:
        """Stop the server process (calls in flight fail); it starts again on next use."""
        with self._lock:
            self._reap()

    async def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = self._connections.get(loop)
        if connection is not None and connection.alive:
            return connection
        async with self._connecting.setdefault(loop, asyncio.Lock()):  # the loop's first calls connect once
            connection = self._connections.get(loop)
            if connection is None or not connection.alive:
                if self.pid is None:
                    await asyncio.to_thread(self.start)
                reader, writer = await asyncio.open_unix_connection(self._path, limit=2**24)
                connection = self._connections[loop] = _Connection(reader, writer, self)
            return connection

    async def exchange(
        self, settings: Any, key: Any, mode: str, messages: list[Any], kwargs: dict[str, Any]
    ) -> llm.Exchange:
        """One request through the server process, with this task's place in the limiter's queue."""
        behind = calls_behind.get()
        behind = llm.CALLS_BEHIND[settings.agent] if behind is None else behind
        connection = await self._connection()
        return await connection.send("call", settings, key, (mode, messages, kwargs, behind, problem_rank.get()))

    async def close_clients(self) -> None:
        """Close the server's HTTP connections (the end of a run) and this loop's connection to it."""
        connection = self._connections.pop(asyncio.get_running_loop(), None)
        if connection is not None and connection.alive:
            await connection.send("close")
        if connection is not None:
            await connection.aclose()


_shared: ModelProcess | None = None
_shared_lock = threading.Lock()


def model_process() -> ModelProcess:
    """This process's model process (not started until used)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ModelProcess()
            atexit.register(_shared.stop)
        return _shared


if __name__ == "__main__":
    main()
