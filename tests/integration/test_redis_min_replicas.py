"""SSE_CHAT_REDIS_MIN_REPLICAS: a message counts as stored only once enough replicas hold it."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from sse_chat.backplane import OutcomeUnknown
from sse_chat.backplane.redis import RedisBackplane, parse_redis_url
from sse_chat.hub import Hub
from sse_chat.messages import Draft

from .conftest import StartRedis, StartReplica
from .redis_server import RedisServer
from .support import TIMEOUT, open_stream, post


async def _until_acknowledged(primary: RedisServer) -> None:
    """Until the primary's replica acknowledges a write (WAIT 1): it is online and has
    caught up (the first second after its initial sync, it does not yet answer WAIT)."""
    with trio.fail_after(TIMEOUT):
        while True:
            written = await trio.run_process(
                ["redis-cli", "-p", str(primary.port)],
                stdin=b"INCR probe\nWAIT 1 100\n",
                capture_stdout=True,
            )
            if written.stdout.split()[-1] == b"1":
                return


async def _primary_with_one_replica(start_redis: StartRedis) -> tuple[RedisServer, RedisServer]:
    """A primary and a replica that is connected and in sync with it."""
    no_delay = ("--repl-diskless-sync-delay", "0")  # 5 s by default before a replica syncs
    primary = await start_redis(*no_delay)
    standby = await start_redis("--replicaof", "127.0.0.1", str(primary.port))
    await _until_acknowledged(primary)
    return primary, standby


@asynccontextmanager
async def _stopped(server: RedisServer) -> AsyncIterator[None]:
    """SIGSTOP the server (alive, connected, silent); SIGCONT it afterwards."""
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


def _outcome_unknown(response: Any) -> bool:
    return (
        response.status_code == 503
        and response.json()["error"] == "outcome_unknown"
        and bool(response.headers["retry-after"])
    )


async def test_a_post_no_replica_acknowledges_is_503_outcome_unknown_yet_stored_and_delivered(
    start_replica: StartReplica, start_redis: StartRedis
) -> None:
    primary, standby = await _primary_with_one_replica(start_redis)
    replica = await start_replica(redis_url=primary.url, redis_min_replicas=1, redis_wait_ms=200)
    async with replica.client() as client, open_stream(client, "/rooms/w/events") as stream:
        acknowledged = await post(client, "acknowledged", room="w")
        async with _stopped(standby):
            refused = await client.post("/rooms/w/messages", json={"user": "a", "text": "late"})
            (first, second) = await stream.messages(2)
            history = (await client.get("/rooms/w/messages")).json()["messages"]
        after = await post(client, "after", room="w")
        (third,) = await stream.messages(1)

    assert _outcome_unknown(refused), refused.text
    assert first.id == acknowledged["id"]
    unacknowledged = history[-1]
    assert unacknowledged["text"] == "late" and second.id == unacknowledged["id"]
    assert [m["text"] for m in history] == ["acknowledged", "late"]
    assert third.id == after["id"]


async def test_a_retry_with_the_same_key_is_not_acknowledged_while_no_replica_holds_it(
    start_replica: StartReplica, start_redis: StartRedis
) -> None:
    """The retry that outcome_unknown asks for must not turn into a 201 while the message is
    still on the primary alone: a failover then would lose an acknowledged message."""
    primary, standby = await _primary_with_one_replica(start_redis)
    replica = await start_replica(redis_url=primary.url, redis_min_replicas=1, redis_wait_ms=200)
    message = {"user": "a", "text": "once"}
    headers = {"Idempotency-Key": "k-1"}
    async with replica.client() as client:
        async with _stopped(standby):
            first = await client.post("/rooms/k/messages", json=message, headers=headers)
            retried = await client.post("/rooms/k/messages", json=message, headers=headers)
        # Once the replica has caught up, the retry confirms the message it stored first.
        await _until_acknowledged(primary)
        confirmed = await client.post("/rooms/k/messages", json=message, headers=headers)
        history = (await client.get("/rooms/k/messages")).json()["messages"]

    assert _outcome_unknown(first), first.text
    assert _outcome_unknown(retried), f"{retried.status_code} {retried.text}"
    assert confirmed.status_code == 201 and [confirmed.json()] == history


async def test_a_retry_on_another_replica_is_not_acknowledged_while_no_replica_holds_it(
    start_replica: StartReplica, start_redis: StartRedis
) -> None:
    """As above, with the retry on another replica (as behind a load balancer): its
    connection to Redis never wrote the message, yet it must not confirm it either."""
    primary, standby = await _primary_with_one_replica(start_redis)
    settings = {"redis_url": primary.url, "redis_min_replicas": 1, "redis_wait_ms": 200}
    one, other = await start_replica(**settings), await start_replica(**settings)
    message = {"user": "a", "text": "once"}
    headers = {"Idempotency-Key": "k-2"}
    async with one.client() as to_one, other.client() as to_other, _stopped(standby):
        first = await to_one.post("/rooms/k/messages", json=message, headers=headers)
        retried = await to_other.post("/rooms/k/messages", json=message, headers=headers)

    assert _outcome_unknown(first), first.text
    assert _outcome_unknown(retried), f"{retried.status_code} {retried.text}"


async def test_a_burst_of_posts_no_replica_acknowledges_is_each_stored_and_answered_in_time(
    start_redis: StartRedis,
) -> None:
    """200 appends at once, each holding a connection for SSE_CHAT_REDIS_WAIT_MS while no
    replica answers (as after a failover, at 200 POSTs/s): each is stored and told so; none
    waits for a connection past the POST deadline (coredis's 64 connections made most wait)."""
    primary, standby = await _primary_with_one_replica(start_redis)
    hub = Hub(1 << 20)
    backplane = RedisBackplane(
        hub, "burst", 1000, parse_redis_url(primary.url), min_replicas=1, wait_ms=800
    )
    answers: list[str] = []

    async def append(n: int) -> None:
        try:
            await backplane.append(Draft("burst", "ann", f"m{n}"))
            answers.append("acknowledged")
        except OutcomeUnknown as unknown:
            answers.append("stored" if "replicas acknowledged" in str(unknown) else str(unknown))

    async with trio.open_nursery() as nursery:
        await nursery.start(backplane.run)
        with trio.fail_after(TIMEOUT):
            await backplane.wait_connected()
        # The same burst while the replica answers: the connections are made (and the
        # script loaded) first, so the timed part below is only the waits.
        async with trio.open_nursery() as posting:
            for n in range(200):
                posting.start_soon(append, n)
        assert answers == ["acknowledged"] * 200, sorted(set(answers))
        answers.clear()
        async with _stopped(standby), trio.open_nursery() as posting:
            for n in range(200, 400):
                posting.start_soon(append, n)
        nursery.cancel_scope.cancel()
    assert answers == ["stored"] * 200, sorted(set(answers))
    stored = await trio.run_process(
        ["redis-cli", "-p", str(primary.port), "XLEN", "sse-chat:room:burst:messages"],
        capture_stdout=True,
    )
    assert int(stored.stdout) == 400
