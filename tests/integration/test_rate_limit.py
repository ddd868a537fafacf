"""POST rate limits per client, shared by every replica on one Redis."""

from __future__ import annotations

from collections import Counter

import httpx
import trio

from .conftest import StartReplica
from .redis_server import RedisServer
from .support import (
    TIMEOUT,
    RunningReplica,
    open_raw,
    open_stream,
    refused_stream,
    sent_away,
    wait_until,
)

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


async def test_a_stream_beyond_a_clients_cap_is_sent_away_with_200_and_a_closed_one_frees_its_slot(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(max_streams_per_client=2)
    slots = replica.app.replica.stream_slots
    async with replica.client() as client:
        async with open_stream(client), open_stream(client):
            third = await refused_stream(client)
        await wait_until(lambda: slots.total == 0)
        async with open_stream(client) as again:
            assert again.response.status_code == 200
    assert sent_away(third, 1000)["error"] == "client_full"
    assert _refused(replica, "client_full") == 1


async def test_a_stream_beyond_the_replicas_cap_is_sent_away_with_200(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(max_streams=1)
    async with replica.client() as client, open_stream(client):
        second = await refused_stream(client, "/rooms/other/events")
    assert sent_away(second, 1000)["error"] == "replica_full"
    assert _refused(replica, "replica_full") == 1


async def test_the_per_client_cap_holds_when_requests_arrive_together(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(max_streams_per_client=3)
    outcomes: list[bytes] = []
    all_answered = trio.Event()

    async def one() -> None:
        async with await open_raw(replica) as conn:
            await conn.send_all(b"GET /events HTTP/1.1\r\nHost: chat\r\n\r\n")
            data = b""
            while b"event: " not in data:
                data += await conn.receive_some(65536)
            outcomes.append(data.partition(b"event: ")[2].partition(b"\n")[0])
            if len(outcomes) == 40:
                all_answered.set()
            await all_answered.wait()  # the streams that opened stay open until then

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(one)
    assert Counter(outcomes) == {b"ready": 3, b"unavailable": 37}


def _refused(replica: RunningReplica, reason: str) -> float:
    metrics = replica.app.replica.metrics
    value = metrics.registry.get_sample_value("sse_chat_streams_refused_total", {"reason": reason})
    return value or 0.0
