"""Where Redis is (a URL, or Sentinel) and a coredis client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import coredis
from coredis.connection import TCPLocation
from coredis.retry import NoRetryPolicy

CONNECT_TIMEOUT = 1.0  # seconds to open a TCP connection
SENTINEL_TIMEOUT = 2.0  # seconds a sentinel may take to say where the primary is
# coredis's own limit on any reply, in wall time: only a last resort. The backplane bounds its
# waits itself, in event-loop run time, so a busy replica does not take Redis for dead.
BACKSTOP_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is: a URL for coredis, or sentinels and a service name."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    username: str | None = None
    password: str | None = None
    db: int = 0


def parse_redis_url(url: str, password: str | None = None) -> RedisTarget:
    """Read `redis://`, `rediss://`, `unix://` or `redis+sentinel://h1:p1,h2:p2/service[/db]`.

    `password` (from a secret file) overrides a password in the URL.
    """
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss", "unix"):
        return RedisTarget(url=url, password=password)
    if parts.scheme != "redis+sentinel":
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} in {url!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, url_password = credentials.partition(":")
    sentinels = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel {host_port!r} in {url!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    path = [part for part in parts.path.split("/") if part]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{url!r} must end with /SERVICE_NAME or /SERVICE_NAME/DB")
    return RedisTarget(
        sentinels=tuple(sentinels),
        service=path[0],
        username=unquote(username) or None,
        password=password if password is not None else (unquote(url_password) or None),
        db=int(path[1]) if len(path) == 2 else 0,
    )


@asynccontextmanager
async def open_redis(target: RedisTarget) -> AsyncIterator[coredis.Redis[str]]:
    """A coredis client for the target; it reconnects by itself, command by command."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "stream_timeout": BACKSTOP_TIMEOUT,
        "connect_timeout": CONNECT_TIMEOUT,
        # Never retry on our behalf: a retried append could store a message twice.
        "retry_policy": NoRetryPolicy(),
    }
    if target.url is not None:
        if target.password is not None:
            options["password"] = target.password
        async with coredis.Redis.from_url(target.url, **options) as client:
            yield client
        return
    locations = [TCPLocation(host, port) for host, port in target.sentinels]
    sentinel_options = {"connect_timeout": CONNECT_TIMEOUT, "stream_timeout": SENTINEL_TIMEOUT}
    async with coredis.Sentinel(
        locations, sentinel_kwargs={**sentinel_options, "decode_responses": True}, **options
    ) as sentinel:
        primary = sentinel.primary_for(
            target.service, username=target.username, password=target.password, db=target.db
        )
        async with primary as client:
            yield client  # type: ignore[misc]  # decode_responses=True: a Redis[str]
