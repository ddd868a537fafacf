"""Fixtures that run real replicas (hypercorn on a free port) inside the test's trio loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from sse_chat.app import ChatApp, create_app
from sse_chat.config import Settings
from sse_chat.server import serve

from .redis_server import RedisServer
from .support import RunningReplica, wait_until

StartReplica = Callable[..., Awaitable[RunningReplica]]


@pytest.fixture
async def start_replica(nursery: trio.Nursery) -> AsyncIterator[StartReplica]:
    """Starts replicas with test settings (and any overrides); stops them all afterwards."""
    running: list[RunningReplica] = []

    async def start(app: ChatApp | None = None, **overrides: Any) -> RunningReplica:
        # Tests post from one address far faster than a person: no rate limit unless asked.
        overrides.setdefault("post_rate_limit", 0)
        settings = Settings(
            host="127.0.0.1", port=0, replica_id=f"r{len(running) + 1}", **overrides
        )
        app = app or create_app(settings)
        replica = RunningReplica(url="", settings=settings, app=app)

        async def run(task_status: trio.TaskStatus[str]) -> None:
            try:
                await serve(
                    settings, app=app, shutdown_trigger=replica._stop.wait, task_status=task_status
                )
            finally:
                replica.stopped.set()

        replica.url = await nursery.start(run)
        running.append(replica)
        await wait_until(lambda: app.replica.ready)  # e.g. until Redis is connected
        return replica

    yield start
    for replica in running:
        await replica.stop()


@pytest.fixture
async def replica(start_replica: StartReplica) -> RunningReplica:
    """One replica with default test settings."""
    return await start_replica()


@pytest.fixture
async def client(replica: RunningReplica) -> AsyncIterator[httpx.AsyncClient]:
    async with replica.client() as client:
        yield client


StartRedis = Callable[..., Awaitable[RedisServer]]


@pytest.fixture
async def start_redis(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[StartRedis]:
    """Starts redis-server processes on free ports (extra arguments are passed on)."""
    servers: list[RedisServer] = []

    async def start(*extra: str, sentinel_of: RedisServer | None = None) -> RedisServer:
        server = RedisServer(nursery, tmp_path / f"redis{len(servers)}", *extra)
        server.sentinel_of = sentinel_of
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.kill()


@pytest.fixture
async def redis(start_redis: StartRedis) -> RedisServer:
    """A redis-server with AOF on and fsync on every write, as in production."""
    return await start_redis("--appendonly", "yes", "--appendfsync", "always")
