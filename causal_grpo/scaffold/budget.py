"""CPU-time budgets for the steps of one computation (sympy's simplify, solve, integrate, factorint).

These are cooperative: they split one computation's time between its steps (an exact integral may use
half of what is left before the quadrature takes over) and keep an ordinary scaffold's result the same on
a busy machine, since they count CPU time, not wall time. They are not the limit on untrusted work: that
is the sandbox (`causal_grpo.scaffold.sandbox`), which kills a worker process from outside.

`cpu_bounded` arms a profiling timer (SIGPROF) whose handler raises `OutOfTime` in the running code. A
signal costs nothing until it fires, where a trace function slowed every Python call inside sympy. Where
Python would swallow the exception (a `__del__`, a gc or weak-container callback) it is not raised; where
it is swallowed all the same (a generator being closed, another weak reference's callback), the timer
fires again a few milliseconds later instead of going quiet for good. C code is not interrupted: that is
the sandbox's job.
Signals reach only the main thread, so in any other thread a block is bounded only by the computer's own
clock checks between steps.
"""

from __future__ import annotations

import _weakrefset
import gc
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

REFIRE_S = 0.005
"""How soon the timer fires again once a deadline has passed, in case the first `OutOfTime` was swallowed."""

_WEAKREF_FILES = {weakref.__file__, _weakrefset.__file__}  # their callbacks run as finalizers

_local = threading.local()
_open: list[tuple[float, FrameType]] = []  # the main thread's open blocks: deadline, frame running the block


class OutOfTime(BaseException):
    """The budget ran out; a BaseException so that sympy's `except Exception` cannot swallow it."""


@contextmanager
def deadline_of(deadline: float) -> Iterator[None]:
    """Make `deadline` (a `time.thread_time()` value) the current thread's budget inside the block."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


def current_deadline() -> float:
    """The current thread's deadline; without one, a second from now (nothing we run may go unbounded)."""
    deadline = getattr(_local, "deadline", None)
    return deadline if deadline is not None else time.thread_time() + 1.0


def _arm() -> None:
    """Set the timer for the nearest open deadline, or clear it when no block is open."""
    delay = max(REFIRE_S, min(d for d, _ in _open) - time.thread_time()) if _open else 0.0
    signal.setitimer(signal.ITIMER_PROF, delay)


def _on_timer(signum: int, frame: FrameType | None) -> None:
    chain = []
    while frame is not None:
        chain.append(frame)
        frame = frame.f_back
    # A block whose frame is no longer running (its exit was itself interrupted) is dropped here, so a
    # stale deadline can never keep raising into unrelated code.
    running = {id(f) for f in chain}
    _open[:] = [block for block in _open if id(block[1]) in running]
    if _open and time.thread_time() >= min(d for d, _ in _open):
        signal.setitimer(signal.ITIMER_PROF, REFIRE_S)
        if not _would_be_swallowed(chain):
            raise OutOfTime
        return
    _arm()  # the process clock counts other threads too, so it can fire before this thread's deadline


def _would_be_swallowed(chain: list[FrameType]) -> bool:
    """Whether the code interrupted inside the block may be a finalizer (a `__del__`, a gc callback, the
    callbacks of the standard library's weak containers), where Python would print the exception as
    unraisable and drop it. Not raising is always safe: the timer fires again a few milliseconds later.
    Another weak reference's callback is not recognised; there the exception is dropped, then raised again."""
    blocks = {id(f) for _, f in _open}
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    for f in chain:
        if id(f) in blocks:
            return False
        code = f.f_code
        if code in callbacks or code.co_name == "__del__" or code.co_filename in _WEAKREF_FILES:
            return True
    return False


class cpu_bounded:
    """Raise `OutOfTime` inside the block once the thread's CPU clock passes `deadline` (default: current)."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = current_deadline() if deadline is None else deadline
        self.entry: tuple[float, FrameType] | None = None

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGPROF) is not _on_timer:
            signal.signal(signal.SIGPROF, _on_timer)
        self.entry = (self.deadline, sys._getframe(1))
        _open.append(self.entry)
        _arm()

    def __exit__(self, *exc: object) -> None:
        if self.entry is not None:
            _open[:] = [block for block in _open if block is not self.entry]
            self.entry = None
            _arm()
