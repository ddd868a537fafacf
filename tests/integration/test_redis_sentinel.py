"""Redis Sentinel: the primary dies, a replica is promoted, delivery resumes by itself."""

from __future__ import annotations

import trio

from .conftest import StartRedis, StartReplica
from .posting import RetryingPoster, assert_each_once_in_order
from .redis_server import RedisServer
from .support import TIMEOUT, Collector, open_stream, post, wait_until


async def _replication_info(server: RedisServer) -> dict[str, str]:
    result = await trio.run_process(
        ["redis-cli", "-p", str(server.port), "INFO", "replication"], capture_stdout=True
    )
    lines = result.stdout.decode().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


async def _wait_for_replication(primary: RedisServer, replica: RedisServer) -> None:
    """Until the replica holds everything the primary has written."""
    with trio.fail_after(TIMEOUT):
        while True:
            wanted = (await _replication_info(primary))["master_repl_offset"]
            info = await _replication_info(replica)
            if info.get("master_link_status") == "up" and info["slave_repl_offset"] == wanted:
                return
            await trio.sleep(0.05)  # replication offers no event to wait on


async def test_after_a_sentinel_failover_delivery_resumes_by_itself(
    start_replica: StartReplica, start_redis: StartRedis
) -> None:
    primary = await start_redis("--appendonly", "yes")
    standby = await start_redis("--replicaof", "127.0.0.1", str(primary.port))
    sentinel = await start_redis(sentinel_of=primary)
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/primary"
    replica = await start_replica(redis_url=url)

    async with (
        replica.client() as client,
        open_stream(client) as stream,
        trio.open_nursery() as nursery,
    ):
        collector = Collector(stream)
        nursery.start_soon(collector.run)
        posted = [await post(client, f"before {n}") for n in range(5)]
        await _wait_for_replication(primary, standby)

        await primary.kill()
        await wait_until(lambda: not replica.app.replica.ready)
        refused = await client.post("/messages", json={"user": "a", "text": "in the gap"})
        readyz_in_gap = (await client.get("/readyz")).status_code
        with trio.fail_after(TIMEOUT * 2):  # sentinel notices (0.5 s), then promotes
            await wait_until(lambda: replica.app.replica.ready)
        posted += [await post(client, f"after {n}") for n in range(5)]
        await wait_until(lambda: len(collector.messages) >= 10)
        nursery.cancel_scope.cancel()

    assert collector.messages == posted
    assert refused.status_code == 503 and readyz_in_gap == 503
    assert (await _replication_info(standby))["role"] == "master"


async def test_with_min_replicas_a_sentinel_failover_under_traffic_loses_no_acknowledged_message(
    start_replica: StartReplica, start_redis: StartRedis
) -> None:
    """SSE_CHAT_REDIS_MIN_REPLICAS=1: a 201 means the standby holds the message, so the
    standby Sentinel promotes has every acknowledged one."""
    no_delay = ("--repl-diskless-sync-delay", "0")  # 5 s by default before a replica syncs
    primary = await start_redis("--appendonly", "yes", *no_delay)
    standby = await start_redis("--replicaof", "127.0.0.1", str(primary.port), *no_delay)
    await _wait_for_replication(primary, standby)
    sentinel = await start_redis(sentinel_of=primary)
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/primary"
    settings = {"redis_url": url, "redis_min_replicas": 1, "keepalive_seconds": 1.0}
    replicas = [await start_replica(**settings) for _ in "ab"]
    clients = [replica.client() for replica in replicas]
    poster = RetryingPoster(clients, "lobby")

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

        await primary.kill()
        killed_at, accepted_at_kill = trio.current_time(), len(poster.accepted)
        await wait_until(lambda: not replicas[0].app.replica.ready)
        with trio.fail_after(TIMEOUT * 2):  # sentinel notices (0.5 s), then promotes
            await wait_until(lambda: all(replica.app.replica.ready for replica in replicas))
        # The old primary comes back and Sentinel makes it the new one's replica: writes can
        # be acknowledged by a replica again.
        await primary.start()
        restarted_at = trio.current_time()
        await poster.accepted_count_reaches(accepted_at_kill + 30, seconds=TIMEOUT * 2)
        poster.stop.set()
        await poster.stopped.wait()  # a POST in flight may still be accepted
        wanted = {message["id"] for message in poster.accepted}
        await wait_until(lambda: all(c.has_all(wanted) for c in collectors))
        history = await clients[1].get("/rooms/lobby/messages", params={"limit": 1000})
        nursery.cancel_scope.cancel()

    for collector in collectors:
        assert_each_once_in_order(collector.messages, poster)
    assert_each_once_in_order(history.json()["messages"], poster)  # the new primary has all
    assert (await _replication_info(standby))["role"] == "master"
    assert (await _replication_info(primary))["role"] == "slave"
    refused = [a for a in poster.attempts if a.started >= killed_at and a.status != 201]
    print(
        f"\nsentinel failover with min replicas 1: {len(poster.accepted)} acknowledged"
        f" ({accepted_at_kill} before the kill), {len(refused)} refused and retried"
        f" ({sorted({a.error or str(a.status) for a in refused})}), none lost;"
        f" the old primary restarted {restarted_at - killed_at:.2f} s after the kill"
    )
