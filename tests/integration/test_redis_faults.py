"""Redis failing under live traffic: every 201'd message reaches every client once, in order."""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

import httpx
import trio

from sse_chat.client import read_events

from .conftest import StartReplica
from .redis_proxy import Proxy
from .redis_server import RedisServer
from .support import (
    TIMEOUT,
    Collector,
    EventStream,
    RunningReplica,
    open_stream,
    post,
    wait_until,
)


class Poster:
    """Posts numbered messages to the replicas in turn until told to stop."""

    def __init__(self, clients: list[httpx.AsyncClient], limit: int = 2000) -> None:
        self.clients = clients
        self.limit = limit  # bounded: a fault test never posts forever
        self.accepted: list[dict[str, Any]] = []
        self.refused: list[str] = []  # texts whose POST failed: their outcome is unknown
        self.stop = trio.Event()
        self.stopped = trio.Event()  # no POST is in flight any more

    async def run(self) -> None:
        try:
            await self._post_until_stopped()
        finally:
            self.stopped.set()

    async def _post_until_stopped(self) -> None:
        for n in range(self.limit):
            if self.stop.is_set():
                return
            text = f"m{n}"
            try:
                response = await self.clients[n % len(self.clients)].post(
                    "/messages", json={"user": "poster", "text": text}
                )
            except httpx.TransportError:
                self.refused.append(text)
                continue
            if response.status_code == 201:
                self.accepted.append(response.json())
            else:
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"]
                # outcome_unknown: stored or not, its answer came too late to say
                assert response.json()["error"] in ("unavailable", "outcome_unknown")
                self.refused.append(text)
                await trio.sleep(0.05)  # as a client honouring Retry-After would, but briefly
            await trio.sleep(0.005)  # a steady rate, not a flood

    async def accepted_count_reaches(self, count: int) -> None:
        await wait_until(lambda: len(self.accepted) >= count)


def _assert_exactly_once_in_order(received: list[dict[str, Any]], poster: Poster) -> None:
    ids = [message["id"] for message in received]
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    accepted_ids = {message["id"] for message in poster.accepted}
    assert [m for m in received if m["id"] in accepted_ids] == poster.accepted
    # Anything else must be a post whose answer was lost with Redis (stored, but not 201'd).
    extras = [m["text"] for m in received if m["id"] not in accepted_ids]
    assert set(extras) <= set(poster.refused)


async def _ready(replica: RunningReplica) -> bool:
    async with replica.client() as client:
        return (await client.get("/readyz")).status_code == 200


async def test_redis_killed_and_restarted_under_traffic_loses_and_duplicates_nothing(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    replicas = [await start_replica(redis_url=redis.url, keepalive_seconds=0.2) for _ in "ab"]
    clients = [replica.client() for replica in replicas]
    poster = Poster(clients)
    async with (
        clients[0],
        clients[1],
        open_stream(clients[0]) as first,
        open_stream(clients[1]) as second,
        trio.open_nursery() as nursery,
    ):
        collectors = [Collector(first), Collector(second)]
        for collector in collectors:
            nursery.start_soon(collector.run)
        nursery.start_soon(poster.run)
        await poster.accepted_count_reaches(30)

        await redis.kill()
        killed_at = trio.current_time()
        with trio.fail_after(TIMEOUT):
            while await _ready(replicas[0]) or await _ready(replicas[1]):  # noqa: ASYNC110
                await trio.sleep(0.05)  # what swarm does: poll /readyz
        not_ready_after = trio.current_time() - killed_at
        await wait_until(lambda: len(poster.refused) >= 5)  # POSTs refused meanwhile
        # Open streams stay open through the outage: they keep getting keepalives.
        keepalives = [collector.keepalives for collector in collectors]
        await wait_until(
            lambda: all(c.keepalives > k for c, k in zip(collectors, keepalives, strict=True))
        )

        accepted_before_restart = len(poster.accepted)
        await redis.start()  # same port and directory: the AOF brings every message back
        await wait_until(lambda: all(r.app.replica.ready for r in replicas))
        await poster.accepted_count_reaches(accepted_before_restart + 30)
        poster.stop.set()
        await poster.stopped.wait()  # a POST in flight may still be accepted
        wanted = {message["id"] for message in poster.accepted}
        await wait_until(lambda: all(c.has_all(wanted) for c in collectors))
        nursery.cancel_scope.cancel()
    for collector in collectors:
        _assert_exactly_once_in_order(collector.messages, poster)
    assert not_ready_after < 2
    print(
        f"\nredis kill/restart: {len(poster.accepted)} posts accepted ({accepted_before_restart}"
        f" before the restart), {len(poster.refused)} refused during the outage; each of 2"
        f" clients got every accepted message exactly once, in order"
        f" ({len(collectors[0].messages)} and {len(collectors[1].messages)} delivered);"
        f" /readyz went 503 {not_ready_after:.2f} s after the kill"
    )


async def test_a_pubsub_connection_killed_by_redis_is_recovered_without_loss(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    replicas = [await start_replica(redis_url=redis.url) for _ in "ab"]
    clients = [replica.client() for replica in replicas]
    async with (
        clients[0],
        clients[1],
        open_stream(clients[0]) as first,
        open_stream(clients[1]) as second,
    ):
        posted = [await post(clients[n % 2], f"before {n}") for n in range(5)]
        killed = await trio.run_process(
            ["redis-cli", "-p", str(redis.port), "CLIENT", "KILL", "TYPE", "pubsub"],
            capture_stdout=True,
        )
        # Posted while both replicas' subscriptions are gone: pub/sub drops these, and the
        # backfill after resubscribing must bring them.
        posted += [await post(clients[n % 2], f"after {n}") for n in range(10)]
        for stream in (first, second):
            received = [json.loads(e.data) for e in await stream.messages(15)]
            assert received == posted
    assert int(killed.stdout) == 2  # both replicas' pub/sub connections were cut
    assert all(replica.app.replica.backplane.reconnects >= 1 for replica in replicas)  # type: ignore[attr-defined]


async def test_while_redis_is_down_posts_get_503_and_streams_wait_for_it(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    replica = await start_replica(redis_url=redis.url, keepalive_seconds=0.2)
    async with replica.client() as client, open_stream(client) as stream:
        before = await post(client, "before")
        await redis.kill()
        await wait_until(lambda: not replica.app.replica.ready)
        ready = await client.get("/readyz")
        posted = await client.post("/messages", json={"user": "a", "text": "lost?"})
        history = await client.get("/rooms/lobby/messages")
        assert (await stream.next_named("message")).id == before["id"]
        assert (await stream.next_event()).comment == "keepalive"
        # A new stream is answered 200 (an EventSource gives up on a 503) and waits.
        async with client.stream("GET", "/rooms/other/events") as response:
            assert response.status_code == 200
            async with aclosing(read_events(response)) as events:
                waiting = EventStream(response, events)
                opened = await waiting.next_named("ready")
                await redis.start()
                await wait_until(lambda: replica.app.replica.ready)
                after = await post(client, "after")
                elsewhere = await post(client, "elsewhere", room="other")
                assert json.loads((await stream.next_named("message")).data) == after
                assert json.loads((await waiting.next_named("message")).data) == elsewhere
    assert json.loads(opened.data)["live"] is False
    for refused in (ready, posted, history):
        assert refused.status_code == 503
        assert refused.json()["error"] == "unavailable"
    assert posted.headers["retry-after"]


async def test_streams_opened_while_redis_is_away_get_200_then_exactly_what_they_are_owed(
    nursery: trio.Nursery, start_replica: StartReplica, redis: RedisServer
) -> None:
    """Replica B loses Redis while A keeps posting; streams opened on B meanwhile (fresh, and
    resuming from an id) are answered 200 and, once Redis is back, get what they missed once
    and in order, then live messages."""
    proxy = Proxy(nursery, redis)
    await proxy.start()
    a = await start_replica(redis_url=redis.url)
    b = await start_replica(redis_url=proxy.url, keepalive_seconds=0.2)
    async with (
        a.client() as poster,
        b.client() as client,
        open_stream(client, "/rooms/r/events") as watching,
    ):
        seen = await post(poster, "seen by b", room="r")
        assert json.loads((await watching.next_named("message")).data) == seen  # b has it
        proxy.cut()
        await wait_until(lambda: not b.app.replica.backplane.connected)
        missed = [await post(poster, f"missed {n}", room="r") for n in range(3)]
        resume = {"Last-Event-ID": seen["id"]}
        async with (
            client.stream("GET", "/rooms/r/events") as fresh_response,
            client.stream("GET", "/rooms/r/events", headers=resume) as resumed_response,
            aclosing(read_events(fresh_response)) as fresh_events,
            aclosing(read_events(resumed_response)) as resumed_events,
        ):
            fresh = EventStream(fresh_response, fresh_events)
            resumed = EventStream(resumed_response, resumed_events)
            readies = [await fresh.next_named("ready"), await resumed.next_named("ready")]
            assert (await resumed.next_event()).comment == "keepalive"  # waiting, not dead
            proxy.restore()
            got_resumed = [json.loads(e.data) for e in await resumed.messages(3)]
            got_fresh = [json.loads(e.data) for e in await fresh.messages(3)]
            live = await post(poster, "live", room="r")
            assert json.loads((await resumed.next_named("message")).data) == live
            assert json.loads((await fresh.next_named("message")).data) == live
    assert [response.status_code for response in (fresh_response, resumed_response)] == [200, 200]
    assert [json.loads(ready.data)["live"] for ready in readies] == [False, False]
    assert got_resumed == missed  # from its Last-Event-ID
    assert got_fresh == missed  # after the newest message b had forwarded in the room


async def test_a_stream_waiting_for_redis_is_sent_elsewhere_at_once_when_its_replica_drains(
    nursery: trio.Nursery, start_replica: StartReplica, redis: RedisServer
) -> None:
    proxy = Proxy(nursery, redis)
    await proxy.start()
    replica = await start_replica(redis_url=proxy.url, keepalive_seconds=60)
    async with replica.client() as client:
        seen = await post(client, "seen", room="w")
        proxy.cut()
        await wait_until(lambda: not replica.app.replica.backplane.connected)
        resume = {"Last-Event-ID": seen["id"]}
        async with (
            client.stream("GET", "/rooms/w/events", headers=resume) as response,
            aclosing(read_events(response)) as events,
        ):
            waiting = EventStream(response, events)
            ready = await waiting.next_named("ready")
            nursery.start_soon(replica.stop)
            rest = await waiting.rest()  # within TIMEOUT, long before a 60 s keepalive
    assert json.loads(ready.data)["live"] is False
    assert json.loads(rest[-1].data)["error"] == "draining"
