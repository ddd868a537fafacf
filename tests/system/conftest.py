"""A cluster of real processes: redis-server, replicas of `python -m sse_chat` and HAProxy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from ..integration.redis_server import RedisServer
from .processes import Balancing, HAProxy, ReplicaProcess, replica_env

REPLICAS = 3


@dataclass
class Cluster:
    redis: RedisServer
    haproxy: HAProxy
    replicas: list[ReplicaProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The load balancer: what every client talks to."""
        return self.haproxy.url

    async def restart(self, replica: ReplicaProcess) -> None:
        """Start a stopped replica; return once it is ready and HAProxy sends it traffic."""
        await replica.start()
        await self.haproxy.wait_until_up([replica.replica_id])

    def logs(self) -> str:
        return "\n".join(process.log_tail() for process in [*self.replicas, self.haproxy])


@asynccontextmanager
async def open_cluster(
    nursery: trio.Nursery,
    directory: Path,
    settings: Mapping[str, str] | None = None,
    balancing: Balancing | None = None,
) -> AsyncIterator[Cluster]:
    """Redis (AOF, fsync always), 3 replicas on it and HAProxy in front; all ended afterwards.

    `settings` are extra `SSE_CHAT_*` variables of every replica.
    """
    redis = RedisServer(
        nursery, directory / "redis", "--appendonly", "yes", "--appendfsync", "always"
    )
    cluster = Cluster(redis=redis, haproxy=HAProxy(nursery, directory / "haproxy", balancing))
    try:
        await redis.start()
        env = replica_env(redis.url) | dict(settings or {})
        for n in range(1, REPLICAS + 1):
            replica = ReplicaProcess(nursery, f"r{n}", env)
            cluster.replicas.append(replica)
            await replica.start()
        await cluster.haproxy.start(cluster.replicas)
        yield cluster
    finally:
        with trio.CancelScope(shield=True):
            for process in [cluster.haproxy, *cluster.replicas]:
                await process.kill_if_running()
            await redis.kill()


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Cluster]:
    """The default cluster: 3 replicas on one Redis behind HAProxy."""
    async with open_cluster(nursery, tmp_path) as cluster:
        yield cluster
