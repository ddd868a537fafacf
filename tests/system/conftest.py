"""A cluster of real processes: redis-server, replicas of `python -m sse_chat` and HAProxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from ..integration.redis_server import RedisServer
from .processes import HAProxy, ReplicaProcess, replica_env

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


@pytest.fixture
async def cluster(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Redis (AOF, fsync always), 3 replicas on it and HAProxy in front; all ended afterwards."""
    redis = RedisServer(
        nursery, tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always"
    )
    cluster = Cluster(redis=redis, haproxy=HAProxy(nursery, tmp_path / "haproxy"))
    try:
        await redis.start()
        env = replica_env(redis.url)
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
