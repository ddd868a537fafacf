"""The pub/sub sessions of a replica: one for a single Redis, one per primary on a Cluster.

On a cluster, `ClusterShards` keeps a session per primary of the current layout: after a
failover, a `MOVED` or a slot migration (Redis tells sharded subscribers when a slot leaves), it
reads the layout again, ends the sessions of nodes that are no longer primaries, starts ones for
new primaries, and hands the rooms that moved to the session of their new shard, which follows
and backfills them. A shard that cannot be reached stops only its own rooms.
"""

from __future__ import annotations

import logging
from typing import Protocol

import coredis
import trio
from coredis.cluster._layout import ClusterLayout

from .keys import KeyScheme
from .links import ShardLink, SingleLink
from .scripts import REDIS_ERRORS, describe
from .session import Feed, Session
from .target import RedisTarget

log = logging.getLogger(__name__)

LAYOUT_INTERVAL = 5.0  # seconds between reads of the cluster's layout when nothing happens
LAYOUT_RETRY = 0.25  # seconds between reads while a shard is down or a slot just moved


class Shards(Protocol):
    """The sessions that follow rooms, and which one follows a given room."""

    def sessions(self) -> list[Session]: ...

    def session_for(self, room: str) -> Session | None: ...

    def changed(self) -> None:
        """Something suggests the layout changed (a shard lost, a slot moved, MOVED)."""
        ...

    @property
    def retired_reconnects(self) -> int: ...

    async def run(self) -> None: ...


class OneRedis:
    """A single Redis (or Sentinel's primary): one session follows every room."""

    def __init__(self, feed: Feed, client: coredis.Redis[str], replica: str) -> None:
        self._session = Session(feed, SingleLink(client, feed.keys, replica))

    def sessions(self) -> list[Session]:
        return [self._session]

    def session_for(self, room: str) -> Session | None:
        return self._session

    def changed(self) -> None:
        pass

    retired_reconnects = 0

    async def run(self) -> None:
        await self._session.run()


class ClusterShards:
    """One session per primary of a Redis Cluster, kept in step with its layout."""

    def __init__(self, feed: Feed, client: coredis.RedisCluster[str], target: RedisTarget,
                 keys: KeyScheme, replica: str) -> None:  # fmt: skip
        self._feed, self._client, self._target = feed, client, target
        self._keys, self._replica = keys, replica
        self._sessions: dict[str, tuple[Session, trio.CancelScope]] = {}
        self._changed = trio.Event()
        self.retired_reconnects = 0  # reconnects of sessions whose node left the primaries

    def sessions(self) -> list[Session]:
        return [session for session, _ in self._sessions.values()]

    def session_for(self, room: str) -> Session | None:
        for session, _ in self._sessions.values():
            if session.link.owns(room):
                return session
        return None

    def changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                self._changed = trio.Event()
                if await self._read_layout():
                    self._match_primaries(nursery)
                    moved = [room for s in self.sessions() for room in s.release_moved()]
                    if moved:
                        log.info("redis cluster: %d rooms moved to another shard", len(moved))
                    self._feed.sessions_changed()  # followed again by their new shard
                settled = all(session.up for session in self.sessions())
                with trio.move_on_after(LAYOUT_INTERVAL if settled else LAYOUT_RETRY):
                    await self._changed.wait()
                    await trio.sleep(LAYOUT_RETRY)  # changes come in bursts: read once

    def _layout(self) -> ClusterLayout:
        return self._client.connection_pool.cluster_layout

    async def _read_layout(self) -> bool:
        try:
            with trio.fail_after(5):
                await self._layout().initialize()
        except (*REDIS_ERRORS, trio.TooSlowError) as error:
            log.info("redis cluster: cannot read the layout (%s)", describe(error))
            return False
        except Exception:  # not foreseen: the sessions go on with the layout they have
            log.exception("redis cluster: reading the layout failed")
            return False
        return True

    def _match_primaries(self, nursery: trio.Nursery) -> None:
        primaries = {node.name: node for node in self._layout().primaries}
        for name in set(self._sessions) - set(primaries):
            log.info("redis cluster: %s is no longer a primary", name)
            session, scope = self._sessions.pop(name)
            scope.cancel()
            self.retired_reconnects += session.reconnects
        for name in set(primaries) - set(self._sessions):
            node = primaries[name]
            link = ShardLink(
                self._target, node.host, node.port, self._layout, self._keys, self._replica
            )
            session = Session(self._feed, link)
            scope = trio.CancelScope()
            self._sessions[name] = (session, scope)
            nursery.start_soon(_run_in, scope, session)


async def _run_in(scope: trio.CancelScope, session: Session) -> None:
    with scope:
        await session.run()
