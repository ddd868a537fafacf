"""Where a pub/sub session connects: the one Redis (single-node, Sentinel), or one primary of a
Redis Cluster, whose rooms it follows by sharded pub/sub (SSUBSCRIBE)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import coredis
from coredis._utils import hash_slot
from coredis.cluster._layout import ClusterLayout
from coredis.commands.constants import CommandName
from coredis.patterns.pubsub import PubSub
from coredis.typing import RedisValueT

from .gather import gather
from .keys import KeyScheme
from .target import BACKSTOP_TIMEOUT, RedisTarget, open_node

_PUBSUB_OPTIONS: dict[str, Any] = {
    "retry_policy": None,  # a lost connection ends the session; the session decides what next
    "ignore_subscribe_messages": False,  # an unasked `sunsubscribe` says a slot moved
    "subscription_timeout": BACKSTOP_TIMEOUT,
    # Its keepalive pings with a wall-clock timeout; the session's self-ping does that.
    "max_idle_seconds": 24 * 3600,
}


class NotOwning(Exception):
    """The node owns no slot (any more), so it has no rooms to deliver."""


class SingleLink:
    """The one Redis every room lives on."""

    name = "redis"

    def __init__(self, client: coredis.Redis[str], keys: KeyScheme, replica: str) -> None:
        self._client = client
        self._control = keys.control(replica)

    def owns(self, room: str) -> bool:
        return True

    def control(self) -> str:
        return self._control

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        async with self._client.pubsub(**_PUBSUB_OPTIONS) as pubsub:
            yield pubsub

    async def ping(self, channel: str) -> None:
        await self._client.publish(channel, "ping")

    async def confirm(self, rooms: list[str]) -> None:
        pass


class ShardLink:
    """One primary of a Redis Cluster: the rooms whose slot it owns, by sharded pub/sub."""

    def __init__(
        self,
        target: RedisTarget,
        host: str,
        port: int,
        layout: Callable[[], ClusterLayout],
        keys: KeyScheme,
        replica: str,
    ) -> None:
        self.name = f"{host}:{port}"
        self._target, self._host, self._port = target, host, port
        self._layout, self._keys, self._replica = layout, keys, replica
        self._control = ""
        # The node's own client, while a session is connected: its self-pings.
        self.client: coredis.Redis[str] | None = None

    def owns(self, room: str) -> bool:
        return self._owns(self._keys.channel(room))

    def control(self) -> str:
        if not self._control:
            # A name of ours whose slot this shard owns; picked again by each session.
            for shard in range(1 << 16):
                if self._owns(channel := self._keys.control(self._replica, shard)):
                    self._control = channel
                    break
            else:  # the node lost its slots (a failover): its session ends, none replaces it
                raise NotOwning(f"{self.name} owns no slot of the cluster now")
        return self._control

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        self._control = ""
        async with open_node(self._target, self._host, self._port) as client:
            self.client = client
            try:
                async with _ShardedPubSub(client.connection_pool, **_PUBSUB_OPTIONS) as pubsub:
                    yield pubsub
            finally:
                self.client = None

    async def ping(self, channel: str) -> None:
        client = self.client
        if client is not None:
            await client.spublish(channel, "ping")

    async def confirm(self, rooms: list[str]) -> None:
        """Raise (MOVED, ASK) unless this node serves every room's slot now: a SSUBSCRIBE of a
        slot it does not serve gets an error reply coredis drops, and would wait unanswered."""
        client = self.client
        if client is None:
            raise coredis.exceptions.ConnectionError(f"{self.name} is not connected")
        await gather([partial(client.exists, [self._keys.stream(room)]) for room in rooms])

    def _owns(self, channel: str) -> bool:
        try:
            node = self._layout().node_for_slot(hash_slot(channel.encode()))
        except coredis.exceptions.RedisError:
            return False  # no layout yet
        return node.name == self.name


_SHARDED: dict[bytes, bytes] = {
    CommandName.SUBSCRIBE: CommandName.SSUBSCRIBE,
    CommandName.UNSUBSCRIBE: CommandName.SUNSUBSCRIBE,
}


class _ShardedPubSub(PubSub[str]):
    """coredis's pub/sub on one cluster node, with SSUBSCRIBE and SUNSUBSCRIBE (one channel
    per command: a command's channels must share a slot)."""

    def _execute_command(self, command: bytes, *args: RedisValueT) -> None:
        sharded = _SHARDED.get(command)
        if sharded is None:
            super()._execute_command(command, *args)
        elif not args:
            self.connection.send_command(sharded)
        else:
            for channel in args:
                self.connection.send_command(sharded, channel)
