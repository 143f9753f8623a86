"""The model client's HTTP layer holds a slot of the run's limiter only while a request is on the wire."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from causal_grpo.limiter import PriorityLimiter, calls_behind, followed_by, problem_rank
from causal_grpo.llm import CALLS_BEHIND, POOL_SHARD, _PoolShards, _SlotHttpClient

pytestmark = pytest.mark.anyio

URL = "http://model.test/v1/chat/completions"


async def test_the_slot_is_held_while_the_request_is_sent_and_the_body_read():
    limiter = PriorityLimiter(1)
    held = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        held.append(limiter.in_use)
        return httpx2.Response(200, json={"ok": True})

    async with _SlotHttpClient(limiter, 0, transport=httpx2.MockTransport(handler)) as client:
        response = await client.post(URL, json={})
    assert held == [1] and limiter.in_use == 0 and response.json() == {"ok": True}


async def test_a_failed_request_gives_its_slot_back():
    limiter = PriorityLimiter(1)

    async def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    async with _SlotHttpClient(limiter, 0, transport=httpx2.MockTransport(handler)) as client:
        with pytest.raises(httpx2.ConnectError):
            await client.post(URL, json={})
    assert limiter.in_use == 0


async def test_waiting_requests_go_by_calls_behind_them_then_problem_rank():
    limiter = PriorityLimiter(1)
    order = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        order.append(request.headers["x-who"])
        return httpx2.Response(200, json={})

    transport = httpx2.MockTransport(handler)
    async with (
        _SlotHttpClient(limiter, CALLS_BEHIND["generator"], transport=transport) as generator,
        _SlotHttpClient(limiter, CALLS_BEHIND["judge"], transport=transport) as judge,
        _SlotHttpClient(limiter, CALLS_BEHIND["extractor"], transport=transport) as extractor,
    ):
        await limiter.acquire()  # every request below waits

        async def ask(client: _SlotHttpClient, who: str, rank: int, behind: int | None = None) -> None:
            problem_rank.set(rank)
            if behind is not None:
                calls_behind.set(behind)
            await client.post(URL, json={}, headers={"x-who": who})

        tasks = [
            asyncio.create_task(ask(judge, "judge rank 1", 1)),
            asyncio.create_task(ask(judge, "last judge rank 0", 0, behind=0)),
            asyncio.create_task(ask(extractor, "extractor rank 0", 0)),
            asyncio.create_task(ask(judge, "judge rank 0", 0)),
            asyncio.create_task(ask(generator, "generator rank 2", 2)),
        ]
        await asyncio.sleep(0.05)
        limiter.release()
        await asyncio.gather(*tasks)
    # rollouts have the longest chain of calls behind them (critical path first); a judge's call with no call
    # after it (as `followed_by(0)` says) goes after an extraction with one
    assert order == ["generator rank 2", "judge rank 0", "judge rank 1", "extractor rank 0", "last judge rank 0"]


def test_followed_by_holds_for_its_block_only():
    assert calls_behind.get() is None
    with followed_by(1):
        assert calls_behind.get() == 1
        with followed_by(0):
            assert calls_behind.get() == 0
        assert calls_behind.get() == 1
    assert calls_behind.get() is None


async def test_a_loop_s_clients_share_pools_that_split_the_limits_and_close_with_the_last(simulator):
    """Over real HTTP: requests go to the pools in turn, one agent's connections serve another's calls."""
    url = f"{simulator.base_url}/models"
    first = _SlotHttpClient(PriorityLimiter(16), CALLS_BEHIND["generator"], pools=4)
    second = _SlotHttpClient(PriorityLimiter(16), CALLS_BEHIND["judge"], pools=4)
    shards = first._transport
    assert second._transport is shards and isinstance(shards, _PoolShards) and len(shards.pools) == 4
    # the SDK's limits (1,000 connections) split over the pools; each keeps a pool's worth alive
    assert {(p._pool._max_connections, p._pool._max_keepalive_connections) for p in shards.pools} == {(250, POOL_SHARD)}
    replies = await asyncio.gather(*(first.get(url) for _ in range(16)))
    assert [len(p._pool.connections) for p in shards.pools] == [4, 4, 4, 4]
    replies += await asyncio.gather(*(second.get(url) for _ in range(16)))
    assert [len(p._pool.connections) for p in shards.pools] == [4, 4, 4, 4]  # none opened
    await first.aclose()
    replies.append(await second.get(url))
    assert all(r.status_code == 200 for r in replies)
    await second.aclose()
    assert all(not p._pool.connections for p in shards.pools)


def test_a_model_client_has_a_pool_per_shard_of_its_run_s_calls_in_flight(make_sim_context):
    from causal_grpo.llm import client_for

    async def pools(concurrency: int) -> int:
        ctx = make_sim_context(f"pools-{concurrency}").model_copy(update={"concurrency": concurrency})
        http = client_for(ctx, "generator")._http_client()
        await http.aclose()
        return len(http._transport.pools)

    assert asyncio.run(pools(8)) == 1 and asyncio.run(pools(POOL_SHARD * 8)) == 8
