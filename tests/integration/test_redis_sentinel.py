"""Redis Sentinel: the primary dies, a replica is promoted, delivery resumes by itself."""

from __future__ import annotations

import trio

from .conftest import StartRedis, StartReplica
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
