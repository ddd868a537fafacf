"""A workaround for coredis 6.9's connection pools losing capacity.

A connection that breaks while it is leased (a blocking command such as `WAIT` cancelled by
our deadline, Redis dying mid-reply) is released unusable: the pool drops it without putting
back the empty slot that would let it open a new one. Each such loss shrinks the pool for
good; once its size (64) is lost, every command waits forever. Seen with
SSE_CHAT_REDIS_MIN_REPLICAS after a Sentinel failover (WAITs queued past the POST deadline):
POSTs stopped being stored at all. This puts the slot back.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from coredis._concurrency import QueueFull
from coredis.pool import ClusterConnectionPool, ConnectionPool

_patched = False


def keep_pool_capacity() -> None:
    """Make released broken connections give their slot back (once per process)."""
    global _patched
    if _patched:
        return
    _patched = True
    release, cluster_release = ConnectionPool.release, ClusterConnectionPool.release

    def release_keeping_slot(pool: Any, connection: Any) -> None:
        release(pool, connection)
        if not connection.usable:
            with suppress(QueueFull):
                pool._available_connections.append_nowait(None)

    def cluster_release_keeping_slot(pool: Any, connection: Any) -> None:
        cluster_release(pool, connection)
        if not connection.usable:
            with suppress(QueueFull):
                pool._node_pool(connection.location).append_nowait(None)

    ConnectionPool.release = release_keeping_slot  # type: ignore[method-assign,assignment]
    ClusterConnectionPool.release = cluster_release_keeping_slot  # type: ignore[method-assign,assignment]
