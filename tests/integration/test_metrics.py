"""GET /metrics: what an operator scrapes."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import StartReplica
from .redis_server import RedisServer
from .support import open_stream, post


async def _scrape(
    client: httpx.AsyncClient,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_metrics_count_streams_posts_deliveries_and_requests(
    client: httpx.AsyncClient,
) -> None:
    async with open_stream(client) as first, open_stream(client):
        for n in range(3):
            await post(client, f"counted {n}")
        await first.messages(3)
        during = await _scrape(client)
    await client.get("/no/such/page")
    after = await _scrape(client)
    assert during[("sse_chat_streams_open", ())] == 2
    assert during[("sse_chat_messages_posted_total", ())] == 3
    assert during[("sse_chat_messages_delivered_total", ())] >= 3
    assert during[("sse_chat_fanout_seconds_count", ())] >= 1
    assert during[("sse_chat_backplane_connected", ())] == 1
    posts = ("sse_chat_http_requests_total", (("route", "/messages"), ("status", "201")))
    assert during[posts] == 3
    assert after[("sse_chat_http_requests_total", (("route", "unmatched"), ("status", "404")))] == 1
    assert after[("sse_chat_streams_open", ())] == 0


async def test_metrics_show_the_redis_backplane_state(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    replica = await start_replica(redis_url=redis.url)
    async with replica.client() as client:
        connected = await _scrape(client)
    assert connected[("sse_chat_backplane_connected", ())] == 1
    assert connected[("sse_chat_backplane_reconnects", ())] == 0
