"""The cooperative CPU budget: it stops the block's own code, and never raises where Python would drop it."""

from __future__ import annotations

import gc
import sys
import time

import pytest

from causal_grpo.scaffold.budget import OutOfTime, cpu_bounded


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_block_past_its_deadline_is_stopped():
    started = time.thread_time()
    with pytest.raises(OutOfTime), cpu_bounded(started + 0.05):
        _burn(5.0)
    assert time.thread_time() - started < 1.0


class _Slow:
    def __del__(self) -> None:
        _burn(0.1)


def _slow_gc_callback(phase: str, info: dict) -> None:
    _burn(0.1)


@pytest.mark.parametrize("where", ["__del__", "gc callback"])
def test_the_deadline_is_not_raised_where_python_would_swallow_it(where, monkeypatch):
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    if where == "gc callback":
        gc.callbacks.append(_slow_gc_callback)
    try:
        with pytest.raises(OutOfTime), cpu_bounded(time.thread_time() + 0.02):
            if where == "__del__":
                _Slow()  # dropped at once: its __del__ runs past the deadline
            else:
                gc.collect()  # its callbacks, ours and the weak references' the collection clears, run past it
            _burn(5.0)  # the block's own code: stopped here, once the callback has returned
    finally:
        if where == "gc callback":
            gc.callbacks.remove(_slow_gc_callback)
    assert unraisable == []
