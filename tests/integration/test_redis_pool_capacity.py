"""The Redis client's connection pool keeps its size through broken connections (a workaround
for coredis 6.9, which dropped a slot for each one: see `pool_capacity`)."""

from __future__ import annotations

from contextlib import suppress

import trio
from coredis.exceptions import ConnectionError

from sse_chat.backplane.redis.target import RedisTarget, open_redis

from .redis_server import RedisServer
from .support import TIMEOUT


async def test_waits_cut_off_by_a_deadline_do_not_use_up_the_pool(redis: RedisServer) -> None:
    """`WAIT` for a replica that does not exist, cut off by a deadline, again and again: as
    the POST deadline does to appends with SSE_CHAT_REDIS_MIN_REPLICAS when none answers."""
    async with open_redis(RedisTarget(url=redis.url)) as client:
        size = client.connection_pool.max_connections

        async def cut_off_wait() -> None:
            # A cut that lands while the connection is still being made fails the command
            # with "Unable to establish a connection" instead: not the case under test.
            with (
                trio.move_on_after(0.2),
                suppress(ConnectionError),
                client.ensure_replication(1, 1000),
            ):
                await client.set("pool", "x")

        for _ in range(3):
            async with trio.open_nursery() as nursery:
                for _ in range(size):
                    nursery.start_soon(cut_off_wait)
        with trio.fail_after(TIMEOUT):
            assert await client.get("pool") == "x"  # a connection is there to be had
