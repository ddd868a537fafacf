"""Replicas on a real Redis Cluster: rooms sharded over 3 primaries by sharded pub/sub, in order
across replicas, through a primary's failover and a slot's migration, without loss."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio

from sse_chat.ids import MessageId

from .conftest import StartReplica
from .posting import RetryingPoster, assert_each_once_in_order
from .redis_cluster import RedisCluster, start_cluster
from .redis_server import RedisServer
from .support import TIMEOUT, RunningReplica, open_stream, post, wait_until

_T = TypeVar("_T")

# Short keepalives: an idle stream still shows it is open (and a read never waits TIMEOUT).
REPLICA_SETTINGS: dict[str, Any] = {"keepalive_seconds": 1.0, "post_rate_limit": 0}


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> RedisCluster:
    return await start_cluster(nursery, tmp_path)


def channel(room: str) -> str:
    """A room's sharded pub/sub channel (its keys share the hash tag)."""
    return f"{{sse-chat:room:{room}}}"


async def _by_shard(cluster: RedisCluster, rooms: Iterable[str]) -> dict[int, list[str]]:
    """The rooms whose slot each primary (by port) owns."""
    by_shard: dict[int, list[str]] = {port: [] for _, port in await cluster.primaries()}
    for room in rooms:
        by_shard[(await cluster.primary_for(channel(room))).port].append(room)
    return by_shard


async def _rooms_on_each_shard(cluster: RedisCluster, count: int) -> dict[int, list[str]]:
    """The first `count` rooms of each primary (by port), named room-0, room-1, ..."""
    ports = [port for _, port in await cluster.primaries()]
    rooms: dict[int, list[str]] = {port: [] for port in ports}
    n = 0
    while any(len(listed) < count for listed in rooms.values()):
        room = f"room-{n}"
        listed = rooms[(await cluster.primary_for(channel(room))).port]
        if len(listed) < count:
            listed.append(room)
        n += 1
    return rooms


async def _serve_without_full_coverage(cluster: RedisCluster) -> None:
    """`cluster-require-full-coverage no` on every live node, as a deployment that wants one
    shard's failure to spare the others must set: by default every node refuses every command
    ("CLUSTERDOWN The cluster is down") from when a primary is marked failed until its
    replica is promoted."""
    for node in cluster.nodes:
        if node.process is not None:
            await cluster.command(node, "CONFIG", "SET", "cluster-require-full-coverage", "no")


async def _until_equal(
    observe: Callable[[], Awaitable[_T]], expected: _T, seconds: float = TIMEOUT
) -> None:
    """Poll `observe()` until it returns `expected` (Redis announces none of this)."""
    observed = await observe()
    with trio.move_on_after(seconds):
        while observed != expected:
            await trio.sleep(0.05)
            observed = await observe()
    assert observed == expected


class Reader:
    """One SSE stream read in the background: its messages with their event ids, until closed.
    It never reconnects: `ended` says the server ended it.

    One room: `/rooms/{room}/events`; with `several`, `/events?rooms=...` (even for one)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        rooms: list[str],
        several: bool = False,
        last_event_id: str | None = None,
    ) -> None:
        self.client, self.rooms = client, rooms
        assert several or len(rooms) == 1
        self.path = "/events?rooms=" + ",".join(rooms) if several else f"/rooms/{rooms[0]}/events"
        self.headers = {"Last-Event-ID": last_event_id} if last_event_id else None
        self.received: list[tuple[str, dict[str, Any]]] = []  # (event id, message)
        self.ended = False
        self._scope = trio.CancelScope()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the stream (started once it is ready), then read it until `close()`."""
        with self._scope:
            async with open_stream(self.client, self.path, self.headers) as stream:
                task_status.started()
                while True:
                    try:
                        event = await stream.next_event()
                    except StopAsyncIteration:
                        self.ended = True
                        return
                    if event.event == "message":
                        self.received.append((event.id or "", json.loads(event.data)))

    def close(self) -> None:
        self._scope.cancel()

    def messages(self, room: str | None = None) -> list[dict[str, Any]]:
        return [m for _, m in self.received if room is None or m["room"] == room]

    def has_all(self, messages: Iterable[dict[str, Any]]) -> bool:
        """Whether every one of `messages` that is in this stream's rooms came."""
        ids = {m["id"] for _, m in self.received}
        return all(m["id"] in ids for m in messages if m["room"] in self.rooms)

    @property
    def last_event_id(self) -> str:
        return self.received[-1][0]


async def _until_delivered(
    readers: Iterable[Reader], messages: list[dict[str, Any]], seconds: float = TIMEOUT
) -> None:
    """Wait until each reader has every one of `messages` of its rooms; else say what is missing."""
    readers = list(readers)
    with trio.move_on_after(seconds):
        while not all(reader.has_all(messages) for reader in readers):  # noqa: ASYNC110
            await trio.sleep(0.02)  # readers append as they read: nothing to wait on
    missing = {
        f"{reader.client.base_url}{reader.path}": [
            f"{m['room']}: {m['text']}" for m in messages if not reader.has_all([m])
        ]
        for reader in readers
        if not reader.has_all(messages)
    }
    assert not missing, f"not delivered within {seconds} s: {missing}"


class ReadinessWatch:
    """Polls a replica's /readyz and /metrics, as swarm and Prometheus would: what it saw, when."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        # (time, /readyz status, its unreachable_shards, shards /metrics says are unreachable)
        self.seen: list[tuple[float, int, list[str], list[str]]] = []

    async def run(self) -> None:
        while True:
            at = trio.current_time()
            ready = await self.client.get("/readyz")
            metrics = (await self.client.get("/metrics")).text
            unreachable = re.findall(
                r'^sse_chat_backplane_shard_unreachable\{shard="([^"]+)"\} 1\.0$', metrics, re.M
            )
            self.seen.append(
                (at, ready.status_code, ready.json().get("unreachable_shards", []), unreachable)
            )
            await trio.sleep(0.05)

    def unreachable_between(self, start: float, end: float) -> set[str]:
        """Every shard /readyz named unreachable between `start` and `end`."""
        return {shard for at, _, shards, _ in self.seen if start <= at <= end for shard in shards}


async def _open(nursery: trio.Nursery, reader: Reader) -> Reader:
    await nursery.start(reader.run)
    return reader


async def _keep_open(
    client: httpx.AsyncClient, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Hold `client` open until the nursery is cancelled (then close it)."""
    async with client:
        task_status.started()
        await trio.sleep_forever()


async def _stop(posters: Iterable[RetryingPoster]) -> None:
    """Stop posting; return once no POST is in flight (one in flight may still be accepted)."""
    posters = list(posters)
    for poster in posters:
        poster.stop.set()
    for poster in posters:
        await poster.stopped.wait()


async def _start_replicas(
    start_replica: StartReplica, url: str, count: int, **settings: Any
) -> list[RunningReplica]:
    return [
        await start_replica(redis_url=url, **REPLICA_SETTINGS, **settings) for _ in range(count)
    ]


async def test_rooms_on_all_three_shards_reach_every_stream_in_order_and_resume_on_any_replica(
    cluster: RedisCluster, start_replica: StartReplica
) -> None:
    rooms = [f"room-{n}" for n in range(30)]
    by_shard = await _by_shard(cluster, rooms)
    assert sorted(map(len, by_shard.values())) == [9, 10, 11]  # on all 3 primaries
    replicas = await _start_replicas(start_replica, cluster.url, 3)
    readers_clients = [replica.client() for replica in replicas]
    posters = [replica.client() for replica in replicas]
    # Streams of several rooms, each with rooms of every shard.
    groups = [[room for listed in by_shard.values() for room in listed[k::3]] for k in range(3)]
    # Streams that leave after the first batch and come back on another replica.
    leaving_rooms = [listed[0] for listed in by_shard.values()]  # one on each shard
    leaving_group = [room for listed in by_shard.values() for room in listed[1:3]]
    posted: dict[str, list[dict[str, Any]]] = {room: [] for room in rooms}

    async def post_in_every_room(batch: str, count: int) -> None:
        async def post_in(n: int, room: str) -> None:
            for k in range(count):  # one after another: their order is the room's order
                client = posters[(n + k) % 3]
                posted[room].append(await post(client, f"{batch} {k}", user=f"u{n}", room=room))

        async with trio.open_nursery() as posting:
            for n, room in enumerate(rooms):
                posting.start_soon(post_in, n, room)

    async with trio.open_nursery() as nursery:
        for client in [*readers_clients, *posters]:
            await nursery.start(_keep_open, client)
        # Each room on two replicas by its own stream, and on a third in a stream of several.
        singles = {
            room: [
                await _open(nursery, Reader(readers_clients[r], [room]))
                for r in (n % 3, (n + 1) % 3)
            ]
            for n, room in enumerate(rooms)
        }
        multis = [
            await _open(nursery, Reader(readers_clients[k], group, several=True))
            for k, group in enumerate(groups)
        ]
        leaving = [
            await _open(nursery, Reader(readers_clients[0], [room])) for room in leaving_rooms
        ]
        leaving_multi = await _open(
            nursery, Reader(readers_clients[0], leaving_group, several=True)
        )
        staying = [*(reader for pair in singles.values() for reader in pair), *multis]

        await post_in_every_room("first", 4)
        first = {room: list(messages) for room, messages in posted.items()}
        every_first = [m for messages in first.values() for m in messages]
        await _until_delivered([*staying, *leaving, leaving_multi], every_first)
        for reader in [*leaving, leaving_multi]:
            reader.close()

        await post_in_every_room("missed", 3)
        # Back on replicas 2 and 3, each from where it left: a message id, or the cursor.
        resumed = [
            await _open(nursery, Reader(readers_clients[1 + n % 2], [room], last_event_id=last))
            for n, (room, last) in enumerate(
                zip(leaving_rooms, [r.last_event_id for r in leaving], strict=True)
            )
        ]
        resumed_multi = await _open(
            nursery,
            Reader(
                readers_clients[2],
                leaving_group,
                several=True,
                last_event_id=leaving_multi.last_event_id,
            ),
        )
        await post_in_every_room("live", 1)
        every = [m for messages in posted.values() for m in messages]
        await _until_delivered(staying, every)
        missed_and_live = [m for messages in posted.values() for m in messages[4:]]
        await _until_delivered([*resumed, resumed_multi], missed_and_live)
        nursery.cancel_scope.cancel()

    for port, listed in by_shard.items():  # a room's stream is on its channel's shard
        for room in listed:
            length = await cluster.command(
                cluster.node_at(port), "XLEN", f"{channel(room)}:messages"
            )
            assert int(length) == len(posted[room])
    for group in groups:  # every stream of several rooms spans the 3 shards
        assert all(set(group) & set(listed) for listed in by_shard.values())
    for room in rooms:  # posted one after another: in id order
        ids = [MessageId.parse(m["id"]) for m in posted[room]]
        assert ids == sorted(set(ids))
        for reader in singles[room]:  # every stream: each message once, in id order
            assert reader.messages() == posted[room]
            assert [event_id for event_id, _ in reader.received] == [m["id"] for m in posted[room]]
    for reader, group in zip(multis, groups, strict=True):
        assert {m["room"] for m in reader.messages()} == set(group)
        for room in group:
            assert reader.messages(room) == posted[room]
    for room, left, back in zip(leaving_rooms, leaving, resumed, strict=True):
        assert left.messages() == first[room]
        assert back.messages() == posted[room][4:]  # exactly what it missed, then live
    for room in leaving_group:
        assert leaving_multi.messages(room) == first[room]
        assert resumed_multi.messages(room) == posted[room][4:]
    assert not any(reader.ended for reader in [*staying, *resumed, resumed_multi])


async def test_each_room_is_followed_by_sharded_pubsub_on_its_own_primary_only(
    cluster: RedisCluster, start_replica: StartReplica
) -> None:
    by_shard = await _rooms_on_each_shard(cluster, 4)
    # On each shard, its j-th room is followed by the first j replicas (none, 1, 2 or 3).
    followers = {room: j for listed in by_shard.values() for j, room in enumerate(listed)}
    rooms = list(followers)
    replicas = await _start_replicas(start_replica, cluster.url, 3)
    clients = [replica.client() for replica in replicas]
    nodes = list(cluster.nodes)  # primaries and their replicas

    async def shard_subscribers() -> dict[tuple[int, str], int]:
        """(node port, room) -> PUBSUB SHARDNUMSUB of the room's channel on that node."""
        counts = {}
        for node in nodes:
            numsub = await cluster.shard_numsub(node, *map(channel, rooms))
            counts.update({(node.port, room): numsub[channel(room)] for room in rooms})
        return counts

    def expected(follow: dict[str, int]) -> dict[tuple[int, str], int]:
        owner = {room: port for port, listed in by_shard.items() for room in listed}
        return {
            (node.port, room): follow[room] if node.port == owner[room] else 0
            for node in nodes
            for room in rooms
        }

    async with trio.open_nursery() as nursery:
        for client in clients:
            await nursery.start(_keep_open, client)
        readers: dict[str, list[Reader]] = {room: [] for room in rooms}
        for room, count in followers.items():
            for client in clients[:count]:
                readers[room].append(await _open(nursery, Reader(client, [room])))
        # A second stream of the same rooms on replica 1: still one subscription a room.
        followed = [room for room in rooms if followers[room]]
        await _open(nursery, Reader(clients[0], followed, several=True))

        await _until_equal(shard_subscribers, expected(followers))
        shard_channels = {
            node.port: set(
                (await cluster.command(node, "PUBSUB", "SHARDCHANNELS", "*:room:*")).split()
            )
            for node in nodes
        }
        plain = {
            node.port: (
                await cluster.command(node, "PUBSUB", "NUMSUB", *map(channel, rooms)),
                await cluster.command(node, "PUBSUB", "CHANNELS"),
                (await cluster.info(node, "stats"))["pubsub_channels"],
            )
            for node in nodes
        }

        # The last replica's clients leave the rooms the three replicas followed.
        for room in rooms:
            if followers[room] == 3:
                readers[room][-1].close()
        fewer = {room: min(count, 2) for room, count in followers.items()}
        await _until_equal(shard_subscribers, expected(fewer))
        nursery.cancel_scope.cancel()

    for port, listed in by_shard.items():  # each primary's channels are its own rooms'
        assert shard_channels[port] == {channel(room) for room in listed if followers[room]}
    primaries = set(by_shard)
    assert all(shard_channels[node.port] == set() for node in nodes if node.port not in primaries)
    for port, (numsub, channels, count) in plain.items():  # no plain pub/sub at all
        assert numsub.split()[1::2] == ["0"] * len(rooms), (port, numsub)
        assert channels.strip() == "" and count.strip() == "0", (port, channels, count)


async def test_a_primary_killed_under_traffic_fails_over_losing_no_acknowledged_message(
    cluster: RedisCluster, start_replica: StartReplica
) -> None:
    """With SSE_CHAT_REDIS_MIN_REPLICAS=1 a 201 means a cluster replica holds the message, so
    a primary's SIGKILL loses none; only its own rooms pause, the others go on throughout."""
    busy, *others = [listed[0] for listed in (await _rooms_on_each_shard(cluster, 1)).values()]
    rooms = [busy, *others]
    await _serve_without_full_coverage(cluster)
    doomed = await cluster.primary_for(channel(busy))
    dead_shard = f"127.0.0.1:{doomed.port}"
    replicas = await _start_replicas(start_replica, cluster.url, 3, redis_min_replicas=1)
    stream_clients = [replica.client() for replica in replicas]
    post_clients = [replica.client() for replica in replicas]
    watches = [ReadinessWatch(replica.client()) for replica in replicas]
    posters = {room: RetryingPoster(post_clients, room) for room in rooms}

    async with trio.open_nursery() as nursery:
        for client in [*stream_clients, *post_clients, *(watch.client for watch in watches)]:
            await nursery.start(_keep_open, client)
        singles = {
            room: [await _open(nursery, Reader(client, [room])) for client in stream_clients]
            for room in rooms
        }
        multis = [await _open(nursery, Reader(c, rooms, several=True)) for c in stream_clients]
        for task in [*watches, *posters.values()]:
            nursery.start_soon(task.run)
        for poster in posters.values():
            await poster.accepted_count_reaches(20)

        def elsewhere_received() -> list[int]:
            return [len(reader.messages(room)) for room in others for reader in multis]

        killed_at, at_kill = trio.current_time(), elsewhere_received()
        promoted = await cluster.kill_primary_and_wait_for_failover(doomed)
        promoted_at, at_promotion = trio.current_time(), elsewhere_received()
        # Back as the promoted primary's replica: a write can be acknowledged by one again.
        await cluster.restart(doomed)
        await _serve_without_full_coverage(cluster)
        rejoined_at, accepted_at_rejoin = trio.current_time(), len(posters[busy].accepted)
        await posters[busy].accepted_count_reaches(accepted_at_rejoin + 20)
        await wait_until(lambda: all(w.seen[-1][1:] == (200, [], []) for w in watches))
        await _stop(posters.values())
        every = [m for poster in posters.values() for m in poster.accepted]
        await _until_delivered(
            [*(r for listed in singles.values() for r in listed), *multis], every
        )
        nursery.cancel_scope.cancel()

    assert await cluster.primary_for(channel(busy)) is promoted
    assert not any(r.ended for r in [*multis, *(r for listed in singles.values() for r in listed)])
    for room, poster in posters.items():  # every stream: every 201'd message once, in order
        for reader in [*singles[room], *multis]:
            assert_each_once_in_order(reader.messages(room), poster)
    in_gap = posters[busy].attempts_between(killed_at, promoted_at)
    assert any(attempt.status == 503 for attempt in in_gap), in_gap
    # Once the old primary is back as a replica, every POST is acknowledged (the first may
    # still wait for it to catch up: outcome_unknown, retried).
    after = posters[busy].attempts_between(rejoined_at, math.inf)
    settled = next(n for n, attempt in enumerate(after) if attempt.status == 201)
    assert {attempt.status for attempt in after[settled:]} == {201}, after
    assert {attempt.error for attempt in after[:settled]} <= {"outcome_unknown"}, after
    for room in others:  # the other shards never refused a POST, nor stopped delivering
        refused = [a for a in posters[room].attempts if a.status != 201]
        assert not refused, [(round(a.started - killed_at, 2), a.error, a.message) for a in refused]
    assert all(later > before for later, before in zip(at_promotion, at_kill, strict=True))
    for watch in watches:  # ready throughout, naming the dead shard while it was down
        assert {status for _, status, _, _ in watch.seen} == {200}
        assert dead_shard in watch.unreachable_between(killed_at, promoted_at)
        assert any(dead_shard in shards for at, _, _, shards in watch.seen if at >= killed_at)
    refused = [a for a in posters[busy].attempts if a.status != 201]
    print(
        f"\ncluster failover: promoted {promoted_at - killed_at:.2f} s after the kill, old primary"
        f" back as its replica {rejoined_at - promoted_at:.2f} s later; the busy room's POSTs"
        f" refused {len(refused)} times, from {refused[0].started - killed_at:.2f} s to"
        f" {refused[-1].started - killed_at:.2f} s after the kill"
        f" ({sorted({a.error or str(a.status) for a in refused})});"
        f" {sum(len(p.accepted) for p in posters.values())} messages acknowledged in all, none"
        f" lost; the other rooms got {at_promotion[0] - at_kill[0]} and"
        f" {at_promotion[-1] - at_kill[-1]} messages during the gap"
    )


async def test_a_slot_migrated_under_traffic_loses_and_repeats_nothing_and_streams_stay_open(
    cluster: RedisCluster, start_replica: StartReplica
) -> None:
    busy, calm, _ = [listed[0] for listed in (await _rooms_on_each_shard(cluster, 1)).values()]
    rooms = [busy, calm]
    source = await cluster.primary_for(channel(busy))
    target = await cluster.primary_for(channel(calm))
    slot = await cluster.keyslot(channel(busy))
    replicas = await _start_replicas(start_replica, cluster.url, 3)
    stream_clients = [replica.client() for replica in replicas]
    post_clients = [replica.client() for replica in replicas]
    posters = {room: RetryingPoster(post_clients, room) for room in rooms}

    async with trio.open_nursery() as nursery:
        for client in [*stream_clients, *post_clients]:
            await nursery.start(_keep_open, client)
        readers = [
            *[await _open(nursery, Reader(client, [busy])) for client in stream_clients],
            *[await _open(nursery, Reader(c, rooms, several=True)) for c in stream_clients],
        ]
        for poster in posters.values():
            nursery.start_soon(poster.run)
        await posters[busy].accepted_count_reaches(20)

        migrating_at = trio.current_time()
        await cluster.migrate_slot(slot, source, target)
        migrated_at, accepted_then = trio.current_time(), len(posters[busy].accepted)
        await posters[busy].accepted_count_reaches(accepted_then + 30)
        await _stop(posters.values())
        every = [m for poster in posters.values() for m in poster.accepted]
        await _until_delivered(readers, every)
        # The replicas follow the room on its new shard only.
        on_source_and_target = partial(_shard_numsub_on, cluster, [source, target], busy)
        await _until_equal(on_source_and_target, [0, 3])
        nursery.cancel_scope.cancel()

    assert await cluster.primary_for(channel(busy)) is target
    for reader in readers:  # the same stream objects, never ended: all, once, in order
        assert not reader.ended
        for room in reader.rooms:
            assert_each_once_in_order(reader.messages(room), posters[room])
    refusals = sorted({a.error or str(a.status) for a in posters[busy].attempts if a.status != 201})
    print(
        f"\nslot migration: {migrated_at - migrating_at:.2f} s; {len(posters[busy].accepted)}"
        f" messages acknowledged in the moved room, {len(posters[busy].uncertain)} retried"
        f" ({refusals})"
    )


async def _shard_numsub_on(cluster: RedisCluster, nodes: list[RedisServer], room: str) -> list[int]:
    return [(await cluster.shard_numsub(node, channel(room)))[channel(room)] for node in nodes]


async def test_primaries_killed_and_restarted_in_turn_leave_the_backplane_following_every_shard(
    cluster: RedisCluster, start_replica: StartReplica, caplog: pytest.LogCaptureFixture
) -> None:
    """Each primary in turn is killed, replaced by its replica and back at once (as a replica):
    the replica ends the sessions of nodes that own nothing now (one may reconnect to its
    restarted node first), starts ones for the promoted, and goes on following every shard,
    with no error logged."""
    rooms = [listed[0] for listed in (await _rooms_on_each_shard(cluster, 1)).values()]
    await _serve_without_full_coverage(cluster)
    [replica] = await _start_replicas(start_replica, cluster.url, 1)
    async with trio.open_nursery() as nursery, replica.client() as client:
        stream_client = replica.client()
        await nursery.start(_keep_open, stream_client)
        reader = await _open(nursery, Reader(stream_client, rooms, several=True))
        for room in rooms:
            doomed = await cluster.primary_for(channel(room))
            await cluster.kill_primary_and_wait_for_failover(doomed)
            await cluster.restart(doomed)
            await _serve_without_full_coverage(cluster)
        await _until_equal(partial(_ready_shards, client), (200, []))
        posted = [await post(client, f"after the failovers in {room}", room=room) for room in rooms]
        await _until_delivered([reader], posted)
        nursery.cancel_scope.cancel()
    failures = [r for r in caplog.records if r.levelname == "ERROR" and "sse_chat" in r.name]
    assert not failures, [r.getMessage() for r in failures]


async def _ready_shards(client: httpx.AsyncClient) -> tuple[int, list[str]]:
    ready = await client.get("/readyz")
    return ready.status_code, ready.json().get("unreachable_shards", [])
