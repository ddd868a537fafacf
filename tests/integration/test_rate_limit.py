"""POST rate limits per client, shared by every replica on one Redis."""

from __future__ import annotations

import httpx

from .conftest import StartReplica
from .redis_server import RedisServer
from .support import open_stream, wait_until

# A long window: a test never straddles two of them.
LIMITS = {"post_rate_limit": 3, "post_rate_window_seconds": 3600}


async def _post(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post("/messages", json={"user": "ana", "text": "hi"}, headers=headers)


async def test_a_client_over_its_limit_gets_429_with_retry_after_and_nothing_stored(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(**LIMITS)
    async with replica.client() as client:
        statuses = [(await _post(client)).status_code for _ in range(3)]
        refused = await _post(client)
        history = (await client.get("/rooms/lobby/messages")).json()["messages"]
    assert statuses == [201, 201, 201]
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert len(history) == 3


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(
    start_replica: StartReplica,
) -> None:
    trusting = await start_replica(**LIMITS, trusted_proxies="127.0.0.1/32")
    wary = await start_replica(**LIMITS)
    async with trusting.client() as through_proxy, wary.client() as direct:
        # Behind the trusted proxy, each forwarded client has its own allowance.
        per_client = [
            (await _post(through_proxy, {"X-Forwarded-For": f"203.0.113.{n}"})).status_code
            for n in range(5)
        ]
        # Without trust, a forged header changes nothing: it is all one client.
        forged = [
            (await _post(direct, {"X-Forwarded-For": f"203.0.113.{n}"})).status_code
            for n in range(4)
        ]
    assert per_client == [201] * 5
    assert forged == [201, 201, 201, 429]


async def test_the_limit_is_shared_by_replicas_on_one_redis(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    first, second = [await start_replica(redis_url=redis.url, **LIMITS) for _ in "ab"]
    async with first.client() as a, second.client() as b:
        statuses = [(await _post(client)).status_code for client in (a, b, a, b)]
    assert statuses == [201, 201, 201, 429]


async def test_streams_beyond_a_clients_cap_get_429_and_a_closed_one_frees_its_slot(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(max_streams_per_client=2)
    slots = replica.app.replica.stream_slots
    async with replica.client() as client:
        async with open_stream(client), open_stream(client):
            third = await client.get("/events")
        await wait_until(lambda: not slots.client_full("127.0.0.1"))
        async with open_stream(client) as again:
            assert again.response.status_code == 200
    assert third.status_code == 429
    assert third.json()["error"] == "too_many_streams" and third.headers["retry-after"]


async def test_streams_beyond_the_replicas_cap_get_503(start_replica: StartReplica) -> None:
    replica = await start_replica(max_streams=1)
    async with replica.client() as client, open_stream(client):
        second = await client.get("/rooms/other/events")
    assert second.status_code == 503
    assert second.json()["error"] == "unavailable" and second.headers["retry-after"]
