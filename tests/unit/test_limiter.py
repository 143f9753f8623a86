"""The priority limiter: the bound holds, urgent waiters go first, cancellation never leaks a slot."""

from __future__ import annotations

import asyncio

import pytest

from causal_grpo.limiter import PriorityLimiter

pytestmark = pytest.mark.anyio


async def test_urgent_waiters_are_served_first_and_equals_in_order():
    limiter = PriorityLimiter(1)
    await limiter.acquire()
    served: list[str] = []

    async def wait(name: str, priority: int) -> None:
        async with limiter.slot(priority):
            served.append(name)

    order = [("g1", (1, 0)), ("g2", (1, 1)), ("judge", (0, 1)), ("g3", (1, 0)), ("fuse", (0, 0))]
    tasks = [asyncio.create_task(wait(n, p)) for n, p in order]
    await asyncio.sleep(0)
    limiter.release()
    await asyncio.gather(*tasks)
    # Finishing calls first, then by problem rank, then in arrival order.
    assert served == ["fuse", "judge", "g1", "g3", "g2"]
    assert limiter.in_use == 0


async def test_the_bound_holds_under_load():
    limiter = PriorityLimiter(3)
    peak = 0

    async def work(i: int) -> None:
        nonlocal peak
        async with limiter.slot((i % 2,)):
            peak = max(peak, limiter.in_use)
            await asyncio.sleep(0.001)

    await asyncio.gather(*(work(i) for i in range(50)))
    assert peak == 3 and limiter.in_use == 0


async def test_a_cancelled_waiter_never_leaks_a_slot():
    limiter = PriorityLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire((0,)))
    await asyncio.sleep(0)
    limiter.release()  # grants the slot to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs: the slot must come back
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_use == 0
    await asyncio.wait_for(limiter.acquire(), 1)


def test_needs_a_slot():
    with pytest.raises(ValueError):
        PriorityLimiter(0)
