"""The Redis Cluster the cluster tests stand on: it forms, fails over and reshards for real."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from .redis_cluster import RedisCluster, start_cluster
from .support import TIMEOUT


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> RedisCluster:
    return await start_cluster(nursery, tmp_path)


async def _owners_of(cluster: RedisCluster, slot: int) -> set[str]:
    """The id of the primary owning `slot`, as each live node sees it."""
    owners = set()
    for node in cluster.nodes:
        if node.process is not None:
            view = await cluster.view(node)
            owners |= {n.id for n in view if n.is_primary and not n.down and n.owns(slot)}
    return owners


async def _receive_exactly(stream: trio.SocketStream, expected: bytes) -> bytes:
    received = b""
    with trio.fail_after(TIMEOUT):
        while len(received) < len(expected):
            chunk = await stream.receive_some()
            assert chunk, f"the connection closed after {received!r}"
            received += chunk
    return received


async def test_the_cluster_forms_with_three_replicated_primaries_and_rooms_spread_over_them(
    cluster: RedisCluster,
) -> None:
    primaries = await cluster.primaries()
    assert len(primaries) == 3
    assert cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for _, p in primaries)
    for _, port in primaries:
        replica = await cluster.replica_of(cluster.node_at(port))
        info = await cluster.info(replica, "replication")
        assert (info["role"], info["master_port"]) == ("slave", str(port))

    view = await cluster.view(cluster.nodes[0])
    shard_of = {n.port: n.slots for n in view if n.is_primary}
    rooms_by_shard: dict[tuple[str, ...], list[int]] = {}
    for n in range(30):
        owner = await cluster.primary_for(f"{{room-{n}}}:messages")
        rooms_by_shard.setdefault(shard_of[owner.port], []).append(n)
    assert rooms_by_shard == {
        ("0-5460",): [2, 3, 6, 7, 12, 16, 22, 23, 26, 27],
        ("5461-10922",): [0, 4, 8, 10, 13, 14, 17, 18, 21, 25, 29],
        ("10923-16383",): [1, 5, 9, 11, 15, 19, 20, 24, 28],
    }


async def test_a_killed_primary_fails_over_to_its_replica_with_its_writes_and_rejoins_as_replica(
    cluster: RedisCluster,
) -> None:
    key = "{room-1}:messages"
    primary = await cluster.primary_for(key)
    # WAIT on the writing connection: the write is on the replica before the primary dies.
    written = await cluster.command(primary, stdin=f"SET {key} before\nWAIT 1 1000\n")
    assert written.split() == ["OK", "1"]

    promoted = await cluster.kill_primary_and_wait_for_failover(primary)

    assert await cluster.primary_for(key) is promoted
    assert (await cluster.info(promoted, "replication"))["role"] == "master"
    assert await cluster.command(promoted, "GET", key) == "before\n"
    await cluster.restart(primary)
    info = await cluster.info(primary, "replication")
    assert (info["role"], info["master_port"]) == ("slave", str(promoted.port))


async def test_a_migrated_slot_takes_its_keys_along_and_its_shard_subscribers_are_dropped(
    cluster: RedisCluster,
) -> None:
    key = "{room-0}:messages"
    slot = await cluster.keyslot(key)
    source = await cluster.primary_for(key)
    target = cluster.node_at(next(p for _, p in await cluster.primaries() if p != source.port))
    await cluster.command(source, "SET", key, "moved")
    async with await trio.open_tcp_stream("127.0.0.1", source.port) as subscriber:
        await subscriber.send_all(f"SSUBSCRIBE {key}\r\n".encode())
        subscribed = f"*3\r\n$10\r\nssubscribe\r\n${len(key)}\r\n{key}\r\n:1\r\n".encode()
        assert await _receive_exactly(subscriber, subscribed) == subscribed

        await cluster.migrate_slot(slot, source, target)

        assert await cluster.primary_for(key) is target
        assert await _owners_of(cluster, slot) == {await cluster.node_id(target)}
        assert await cluster.command(target, "GET", key) == "moved\n"
        with pytest.raises(RuntimeError, match=f"MOVED {slot} 127.0.0.1:{target.port}"):
            await cluster.command(source, "GET", key)
        # Redis drops the subscriptions of a slot that moves away: clients must subscribe anew.
        dropped = f"*3\r\n$12\r\nsunsubscribe\r\n${len(key)}\r\n{key}\r\n:0\r\n".encode()
        assert await _receive_exactly(subscriber, dropped) == dropped
    assert await cluster.shard_numsub(target, key) == {key: 0}
