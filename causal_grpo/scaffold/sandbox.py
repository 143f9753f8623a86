"""The sandbox: every scaffold a model wrote is computed in a worker process under hard limits.

A scaffold is a program (loops, solving, integrals, number theory), and Python cannot stop its own C code
(a big-integer power, a str() of a huge number) nor be trusted to keep a limit it can catch. So the
computation runs in a pebble process pool, sized to the cores, started once per process and kept warm:

- wall clock: a computation still running after `wall_limit_s` has its worker killed (SIGKILL from the
  pool, not an exception inside it) and replaced; the rollout gets a `timeout` error saying so;
- memory: each worker's address space is capped (`resource.setrlimit(RLIMIT_AS)`) at its size after
  start-up plus `memory_limit_mb`; past it, allocation fails and the rollout gets a `limit` error;
- a worker that dies any other way is replaced too, and the rollout names the signal or exit code.

Inside the worker the computer keeps its cooperative CPU budget (`budget.py`, `time_limit_s` of CPU), which
gives an ordinary slow scaffold the same `timeout` result on a busy machine as on an idle one. The wall
limit sits well above it, so it only ever stops what the budget could not.

Workers come from a fork server that has already loaded sympy, pint and the unit registry (`warm`), so a
replaced worker is ready in milliseconds and no worker is forked from a process running threads.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import multiprocessing
import os
import resource
import signal
import threading
from concurrent.futures import Future, TimeoutError
from dataclasses import dataclass
from typing import Any

from pebble import ProcessExpired, ProcessPool
from sympy.core.cache import clear_cache

from causal_grpo.scaffold.computer import Computation, ComputeError, compute
from causal_grpo.scaffold.schema import Scaffold

TIME_LIMIT_S = 2.0
"""CPU seconds the computer's own budget gives one scaffold (deterministic: CPU, not wall time)."""
WALL_LIMIT_S = 6.0
"""Wall seconds after which a computation's worker is killed: the budget's limit with room for a busy machine."""
MEMORY_LIMIT_MB = 1024
"""Memory a computation may allocate on top of a started worker's own (about 200 MiB of address space)."""


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker(memory_limit_mb: int) -> None:
    """Runs in each new worker: cap its address space and make SIGTERM end it at once, even inside C code."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * resource.getpagesize()
    cap = size + memory_limit_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _compute_json(scaffold: str, time_limit_s: float) -> str:
    """The worker's task: JSON in, JSON out (cheaper to send than pydantic models).

    At the cap even reporting a MemoryError can raise another, which would escape through pebble's own
    error handling and end the worker (exit code 1, the rollout told only that it died): so the last one
    is caught here, and memory is given back before anything is said about it.
    """
    try:
        result = compute(scaffold, time_limit_s=time_limit_s)
        if not any(e.message.startswith("memory limit") for e in result.errors):
            return result.model_dump_json()
    except MemoryError:
        result = None
    clear_cache()  # sympy's caches may hold what filled the memory; the next computation needs it back
    gc.collect()
    return _OUT_OF_MEMORY if result is None else result.model_dump_json()


def _failed(kind: str, message: str) -> Computation:
    return Computation(valid=False, errors=[ComputeError(kind=kind, message=message)])  # type: ignore[arg-type]


_OUT_OF_MEMORY = _failed("limit", "memory limit: out of memory").model_dump_json()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


@dataclass(frozen=True)
class Limits:
    """The hard and cooperative limits of one sandbox."""

    time_limit_s: float = TIME_LIMIT_S
    wall_limit_s: float = WALL_LIMIT_S
    memory_limit_mb: int = MEMORY_LIMIT_MB


class Sandbox:
    """A warm pool of computer processes; `acompute` / `compute` never raise for anything a scaffold does."""

    def __init__(self, workers: int | None = None, limits: Limits = Limits()) -> None:
        self.workers = workers or _cores()
        self.limits = limits
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()

    def start(self) -> Sandbox:
        """Start the workers and wait until they answer (else on the first computation); idempotent."""
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["causal_grpo.scaffold.warm"])
                pool = ProcessPool(
                    max_workers=self.workers,
                    initializer=_start_worker,
                    initargs=(self.limits.memory_limit_mb,),
                    context=context,
                )
                pool.schedule(os.getpid).result()  # pebble forks its workers on the first task
                self._pool = pool
        return self

    def stop(self) -> None:
        """Stop the workers (running computations are killed); the sandbox starts again on next use."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            pool.join()

    def submit(self, function: Any, *args: Any) -> Future:
        """Run `function(*args)` in a worker under the wall limit (a picklable module-level function)."""
        pool = self.start()._pool
        assert pool is not None
        return pool.schedule(function, args=args, timeout=self.limits.wall_limit_s)

    def _schedule(self, scaffold: Scaffold | dict[str, Any] | str, time_limit_s: float | None = None) -> Future:
        if isinstance(scaffold, Scaffold):
            text = scaffold.model_dump_json()
        elif isinstance(scaffold, str):
            text = scaffold
        else:
            text = json.dumps(scaffold)
        return self.submit(_compute_json, text, self.limits.time_limit_s if time_limit_s is None else time_limit_s)

    def outcome(self, future: Future) -> Computation:
        """The computation a finished future holds, or the error that ended its worker."""
        try:
            return Computation.model_validate_json(future.result())
        except TimeoutError:
            limit = self.limits.wall_limit_s
            return _failed("timeout", f"time limit: still computing after {limit:g} s, stopped (worker replaced)")
        except MemoryError:
            limit = self.limits.memory_limit_mb
            return _failed("limit", f"memory limit: the computation needed more than {limit} MiB")
        except ProcessExpired as exc:
            reason = _exit_reason(exc.exitcode)
            return _failed("internal", f"the computer's worker died ({reason}); it was replaced")

    async def aoutcome(self, future: Future) -> Computation:
        """`outcome` without blocking the event loop; cancelling the caller kills the computation's worker."""
        try:
            await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception:  # a limit or a dead worker: `outcome` words it
            pass
        return self.outcome(future)

    async def acompute(self, scaffold: Scaffold | dict[str, Any] | str) -> Computation:
        """Compute a scaffold in a worker without blocking the event loop (nor starting the pool on it)."""
        if self._pool is None:
            await asyncio.to_thread(self.start)
        return await self.aoutcome(self._schedule(scaffold))

    def compute(self, scaffold: Scaffold | dict[str, Any] | str, *, time_limit_s: float | None = None) -> Computation:
        """Compute a scaffold in a worker, waiting for it (for synchronous callers such as `scaffold check`).

        `time_limit_s` replaces the limits' CPU budget for this one computation (never the wall limit).
        """
        future = self._schedule(scaffold, time_limit_s)
        try:
            future.exception()
        except BaseException:
            future.cancel()
            raise
        return self.outcome(future)


_shared: Sandbox | None = None
_shared_lock = threading.Lock()


def shared_sandbox() -> Sandbox:
    """The process's sandbox: every product path computes through it (workers from CAUSAL_GRPO_COMPUTE_WORKERS)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            workers = os.environ.get("CAUSAL_GRPO_COMPUTE_WORKERS")
            _shared = Sandbox(int(workers) if workers else None)
            atexit.register(_shared.stop)
        return _shared


def use_sandbox(sandbox: Sandbox) -> None:
    """Make `sandbox` (other limits, another pool size) the process's, stopping the one it replaces."""
    global _shared
    with _shared_lock:
        previous, _shared = _shared, sandbox
    if previous is not None and previous is not sandbox:
        previous.stop()
    atexit.register(sandbox.stop)


async def acompute(scaffold: Scaffold | dict[str, Any] | str) -> Computation:
    """Compute a model's scaffold in the shared sandbox."""
    return await shared_sandbox().acompute(scaffold)
