"""Several replicas on one real Redis: delivery everywhere, one order, resume anywhere."""

from __future__ import annotations

import json
from typing import Any

import trio

from .conftest import StartReplica
from .redis_server import RedisServer
from .support import EventStream, RunningReplica, open_stream, post


async def _replicas(start_replica: StartReplica, redis: RedisServer, count: int,
                    **settings: Any) -> list[RunningReplica]:  # fmt: skip
    return [await start_replica(redis_url=redis.url, **settings) for _ in range(count)]


def _payloads(events: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(event.data) for event in events]


async def test_a_message_posted_to_any_replica_reaches_clients_of_every_replica(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    replicas = await _replicas(start_replica, redis, 3)
    clients = [replica.client() for replica in replicas]
    async with (
        clients[0],
        clients[1],
        clients[2],
        open_stream(clients[0], "/rooms/team/events") as first,
        open_stream(clients[1], "/rooms/team/events") as second,
        open_stream(clients[2], "/rooms/team/events") as third,
    ):
        posted = [await post(client, f"from {n}", room="team") for n, client in enumerate(clients)]
        for stream in (first, second, third):
            assert _payloads(await stream.messages(3)) == posted
    assert [message["replica"] for message in posted] == ["r1", "r2", "r3"]


async def test_concurrent_posts_to_different_replicas_arrive_in_one_order_everywhere(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    replicas = await _replicas(start_replica, redis, 3)
    per_replica = 30
    clients = [replica.client() for replica in replicas]
    async with clients[0], clients[1], clients[2]:
        streams: list[EventStream] = []
        async with (
            open_stream(clients[0]) as a,
            open_stream(clients[1]) as b,
            open_stream(clients[2]) as c,
        ):
            streams = [a, b, c]

            async def post_many(n: int) -> None:
                for i in range(per_replica):
                    await post(clients[n], f"r{n} #{i}")

            async with trio.open_nursery() as nursery:
                for n in range(3):
                    nursery.start_soon(post_many, n)
            received = [_payloads(await s.messages(3 * per_replica)) for s in streams]
    assert received[0] == received[1] == received[2]
    ids = [tuple(map(int, m["id"].split("-"))) for m in received[0]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for n in range(3):  # each replica's posts keep their own order too
        mine = [m["text"] for m in received[0] if m["text"].startswith(f"r{n} ")]
        assert mine == [f"r{n} #{i}" for i in range(per_replica)]


async def test_a_client_resuming_on_another_replica_gets_exactly_what_it_missed(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    first, second = await _replicas(start_replica, redis, 2)
    async with first.client() as a, second.client() as b:
        async with open_stream(a) as stream:
            await post(a, "seen")
            last_seen = (await stream.next_named("message")).id
        missed = [await post(b if n % 2 else a, f"missed {n}") for n in range(6)]
        assert last_seen is not None
        async with open_stream(b, headers={"Last-Event-ID": last_seen}) as stream:
            replayed = await stream.messages(6)
            live = await post(a, "live")
            after = await stream.next_named("message")
    assert _payloads(replayed) == missed
    assert json.loads(after.data) == live


async def test_history_comes_from_redis_and_is_bounded(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    first, second = await _replicas(start_replica, redis, 2, history_size=4)
    async with first.client() as a, second.client() as b:
        posted = [await post(a, f"h{n}", room="hist") for n in range(6)]
        history = (await b.get("/rooms/hist/messages", params={"limit": 4})).json()
        assert history["messages"] == posted[-4:]
        async with open_stream(b, "/rooms/hist/events", {"Last-Event-ID": posted[0]["id"]}) as s:
            gap = await s.next_event()
            replayed = await s.messages(4)
        async with open_stream(b, "/rooms/hist/events", {"Last-Event-ID": posted[1]["id"]}) as s:
            no_gap = await s.next_event()
    assert gap.event == "gap" and json.loads(gap.data)["oldestRetainedId"] == posted[2]["id"]
    assert _payloads(replayed) == posted[2:]
    assert no_gap.event == "message" and json.loads(no_gap.data) == posted[2]


async def test_the_redis_password_is_read_from_a_secret_file(
    start_replica: StartReplica, start_redis: Any, tmp_path: Any
) -> None:
    server = await start_redis("--requirepass", "s3cret pass")
    secret = tmp_path / "redis_password"
    secret.write_text("s3cret pass\n")
    replica = await start_replica(redis_url=server.url, redis_password_file=str(secret))
    async with replica.client() as client, open_stream(client) as stream:
        message = await post(client, "through a password")
        assert json.loads((await stream.next_named("message")).data) == message


async def _subscribers(redis: RedisServer, channel: str) -> int:
    result = await trio.run_process(
        ["redis-cli", "-p", str(redis.port), "PUBSUB", "NUMSUB", channel], capture_stdout=True
    )
    return int(result.stdout.split()[1])


async def test_a_replica_follows_a_room_only_while_it_has_local_clients(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    replica = await start_replica(redis_url=redis.url)
    channel = "sse-chat:room:brief"
    async with replica.client() as client:
        before = await _subscribers(redis, channel)
        async with (
            open_stream(client, "/rooms/brief/events"),
            open_stream(client, "/rooms/brief/events"),
        ):
            during = await _subscribers(redis, channel)
        with trio.fail_after(10):
            while await _subscribers(redis, channel):  # noqa: ASYNC110 - Redis has no event
                await trio.sleep(0.02)
    assert (before, during) == (0, 1)  # one subscription for both local clients
