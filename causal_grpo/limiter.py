"""The run's bound on model calls in flight, handing free slots to the most urgent caller first.

A plain semaphore serves callers in arrival order, so a batch's judge, fuse and extract calls would
queue behind new rollouts in whatever order they arrived. Here a waiter with a lower priority is
served first (first come, first served among equals). Priorities are tuples: first how many calls
of its problem's longest chain still follow the call, most first (`llm.CALLS_BEHIND` by agent, or
`calls_behind` where an agent's call sits later on the chain), then the problem's place in its batch
(`problem_rank`, set by the driver for each problem's task).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar

Priority = tuple[int, ...]

# The place of the current problem in its batch; tasks LangGraph starts for it inherit the value.
problem_rank: ContextVar[int] = ContextVar("problem_rank", default=0)
# Calls still to follow the current one on its problem's chain, where that is not its agent's usual place.
calls_behind: ContextVar[int | None] = ContextVar("calls_behind", default=None)


@contextmanager
def followed_by(calls: int) -> Iterator[None]:
    """The model calls made in the block have `calls` calls of their problem's chain still behind them."""
    token = calls_behind.set(calls)
    try:
        yield
    finally:
        calls_behind.reset(token)


class PriorityLimiter:
    """At most `slots` holders at once; freed slots go to the lowest priority number waiting."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a limiter needs at least one slot")
        self.slots = slots
        self._free = slots
        self._order = itertools.count()
        self._waiters: list[tuple[Priority, int, asyncio.Future[None]]] = []

    @property
    def in_use(self) -> int:
        """Slots held right now."""
        return self.slots - self._free

    async def acquire(self, priority: Priority = (0,)) -> None:
        """Wait for a slot."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted just as we were cancelled: pass the slot on
            raise

    def release(self) -> None:
        """Give a slot back, to the most urgent live waiter if there is one."""
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1

    @asynccontextmanager
    async def slot(self, priority: Priority = (0,)) -> AsyncIterator[None]:
        """Hold a slot for the duration of a block."""
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
