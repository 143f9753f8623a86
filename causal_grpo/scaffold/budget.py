"""CPU-time budgets for work we cannot split into steps ourselves (sympy's simplify, solve, factorint).

sympy has no timeouts, and signals do not work in threads, so `cpu_bounded` sets a trace function that
checks the thread's CPU clock every few hundred Python calls and raises `OutOfTime` into the running code.
The computer sets the scaffold's deadline with `deadline_of`, so functions deep inside a formula can
bound themselves without being handed it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_CHECK_EVERY = 32
_local = threading.local()


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


@contextmanager
def cpu_bounded(deadline: float | None = None) -> Iterator[None]:
    """Raise `OutOfTime` inside the block once the thread's CPU clock passes `deadline` (default: current)."""
    limit = current_deadline() if deadline is None else deadline
    calls = 0

    def tracer(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        calls += 1
        if calls % _CHECK_EVERY == 0 and time.thread_time() > limit:
            raise OutOfTime
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(previous)
