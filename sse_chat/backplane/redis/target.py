"""Where Redis is (a URL, Sentinel, or a Cluster's startup nodes) and coredis clients for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import coredis
from coredis.connection import TCPLocation
from coredis.retry import NoRetryPolicy

from .pool_capacity import keep_pool_capacity

CONNECT_TIMEOUT = 1.0  # seconds to open a TCP connection
SENTINEL_TIMEOUT = 2.0  # seconds a sentinel may take to say where the primary is
# coredis's own limit on any reply, in wall time: only a last resort. The backplane bounds its
# waits itself, in event-loop run time, so a busy replica does not take Redis for dead.
BACKSTOP_TIMEOUT = 60.0
# Connections per pool (per node on a cluster). Commands share connections, except an append
# that waits for replicas (SSE_CHAT_REDIS_MIN_REPLICAS): it holds one for up to
# SSE_CHAT_REDIS_WAIT_MS. With coredis's 64, 200 POSTs/s while no replica answered queued for
# connections past the POST deadline, and none was stored until the queue drained.
MAX_CONNECTIONS = 512

_HOSTS_SCHEMES = {"redis+sentinel": False, "redis+cluster": False, "rediss+cluster": True}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is: a URL for coredis, sentinels and a service name, or cluster nodes."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    cluster: tuple[tuple[str, int], ...] = ()  # startup nodes of a Redis Cluster
    tls: bool = False  # (cluster) connect with TLS
    username: str | None = None
    password: str | None = None
    db: int = 0

    @property
    def is_cluster(self) -> bool:
        return bool(self.cluster)


def parse_redis_url(url: str, password: str | None = None) -> RedisTarget:
    """Read `redis://`, `rediss://`, `unix://`, `redis+sentinel://h1:p1,h2:p2/service[/db]` or
    `redis[s]+cluster://h1:p1,h2:p2`.

    `password` (from a secret file) overrides a password in the URL.
    """
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss", "unix"):
        return RedisTarget(url=url, password=password)
    if parts.scheme not in _HOSTS_SCHEMES:
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} in {url!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, url_password = credentials.partition(":")
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{host_port!r} in {url!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    user = unquote(username) or None
    secret = password if password is not None else (unquote(url_password) or None)
    path = [part for part in parts.path.split("/") if part]
    if parts.scheme != "redis+sentinel":
        if path:
            raise ValueError(f"{url!r}: a Redis Cluster has no database number or path")
        return RedisTarget(
            cluster=tuple(nodes), tls=_HOSTS_SCHEMES[parts.scheme], username=user, password=secret
        )
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{url!r} must end with /SERVICE_NAME or /SERVICE_NAME/DB")
    return RedisTarget(
        sentinels=tuple(nodes),
        service=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        username=user,
        password=secret,
    )


def _options(target: RedisTarget) -> dict[str, Any]:
    keep_pool_capacity()
    options: dict[str, Any] = {
        "decode_responses": True,
        "stream_timeout": BACKSTOP_TIMEOUT,
        "connect_timeout": CONNECT_TIMEOUT,
        # Never retry on our behalf: a retried append could store a message twice.
        "retry_policy": NoRetryPolicy(),
        "max_connections": MAX_CONNECTIONS,
    }
    if target.password is not None:
        options["password"] = target.password
    if target.username is not None and target.url is None:
        options["username"] = target.username
    return options


@asynccontextmanager
async def open_redis(target: RedisTarget) -> AsyncIterator[coredis.Redis[str]]:
    """A coredis client for one Redis (a URL, or Sentinel's primary); it reconnects by itself,
    command by command."""
    options = _options(target)
    if target.url is not None:
        async with coredis.Redis.from_url(target.url, **options) as client:
            yield client
        return
    locations = [TCPLocation(host, port) for host, port in target.sentinels]
    sentinel_options = {"connect_timeout": CONNECT_TIMEOUT, "stream_timeout": SENTINEL_TIMEOUT}
    options.pop("username", None)
    options.pop("password", None)
    async with coredis.Sentinel(
        locations, sentinel_kwargs={**sentinel_options, "decode_responses": True}, **options
    ) as sentinel:
        primary = sentinel.primary_for(
            target.service, username=target.username, password=target.password, db=target.db
        )
        async with primary as client:
            yield client  # type: ignore[misc]  # decode_responses=True: a Redis[str]


@asynccontextmanager
async def open_cluster(target: RedisTarget) -> AsyncIterator[coredis.RedisCluster[str]]:
    """A coredis cluster client: it routes each command to the node that owns its keys."""
    nodes = [TCPLocation(host, port) for host, port in target.cluster]
    async with coredis.RedisCluster(
        startup_nodes=nodes,
        ssl=target.tls,
        # A dead primary must not stop the layout being read from the others.
        skip_full_coverage_check=True,
        max_connections_per_node=True,
        **_options(target),
    ) as client:
        yield client


@asynccontextmanager
async def open_node(target: RedisTarget, host: str, port: int) -> AsyncIterator[coredis.Redis[str]]:
    """A client for one node of the cluster (its shard's pub/sub and acknowledged appends)."""
    async with coredis.Redis(host, port, ssl=target.tls, **_options(target)) as client:
        yield client
