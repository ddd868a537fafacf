"""Who is online in a room, on every replica, kept in Redis.

Each replica keeps `user\\x1freplica` members in a sorted set per room, scored by when they
expire, and refreshes its own; a replica that dies stops refreshing, so its users drop off after
the TTL. Changes are announced on the room's channel as `presence {...}`; each replica turns
those notices into views for its local clients.

Marking a user present or absent never waits: the change is queued (one per user, kept while
Redis is away) and written by the session's `write_changes` task.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import coredis
import trio

from ...hub import Hub
from ...presence import LocalPresence, Presence
from .keys import KeyScheme
from .scripts import REDIS_ERRORS

# The backplane's way to bound a wait on Redis: a context manager named after what it waits for.
Answered = Callable[[str], AbstractContextManager[None]]
Client = Any  # a coredis Redis or RedisCluster client


VIEW_SECONDS = 0.25  # how long a room's presence read from Redis serves streams that open
MAX_VIEWS = 10_000  # rooms whose view is kept before expired ones are dropped


class RedisPresence:
    """This replica's users per room, written to Redis, and views of every replica's."""

    def __init__(self, hub: Hub, replica: str, keys: KeyScheme, ttl: float,
                 publish: Callable[[str, str], Awaitable[None]]) -> None:  # fmt: skip
        self._hub = hub
        self._replica = replica
        self._keys = keys
        self._ttl = ttl
        self._publish = publish  # on a room's pub/sub channel
        self._local = LocalPresence()
        # (room, user) -> "joined" or "left": changes not yet written to Redis, one per user.
        self._changes: dict[tuple[str, str], str] = {}
        self._changed = trio.Event()
        # room -> (fresh until, users on other replicas): one read shared by streams opening
        self._views: dict[str, tuple[float, set[str]]] = {}
        self._reading: dict[str, trio.Event] = {}
        self._all_written = trio.Event()  # set while no change waits or is being written
        self._all_written.set()
        self._notices_send, self._notices = trio.open_memory_channel[tuple[str, dict[str, str]]](
            math.inf
        )

    def mark_present(self, room: str, user: str) -> None:
        if self._local.join(room, user):
            self._change(room, user, "joined")

    def mark_absent(self, room: str, user: str) -> None:
        if self._local.leave(room, user):
            self._change(room, user, "left")

    def rooms(self) -> list[str]:
        """Rooms where someone is present on this replica."""
        return self._local.rooms()

    async def view(self, client: Client, room: str) -> Presence:
        """Who is online in `room`, on every replica.

        In a reconnect storm thousands of streams of one room open at once and each wants
        this view: they share one read of Redis (and its result for VIEW_SECONDS) rather than
        making thousands; a change after it still reaches every stream as a presence event.
        """
        now = trio.current_time()
        cached = self._views.get(room)
        if cached is not None and cached[0] > now:
            users = cached[1]
        else:
            reading = self._reading.get(room)
            if reading is None:
                self._reading[room] = reading = trio.Event()
                try:
                    users = await self._users_online(client, room)
                    self._views[room] = (trio.current_time() + VIEW_SECONDS, users)
                finally:
                    del self._reading[room]
                    reading.set()
            else:
                await reading.wait()
                cached = self._views.get(room)
                if cached is None:  # the read failed: try on our own
                    users = await self._users_online(client, room)
                else:
                    users = cached[1]
            if len(self._views) > MAX_VIEWS:
                self._views = {r: v for r, v in self._views.items() if v[0] > now}
        return Presence(room, tuple(sorted(users | self._local.users(room))))

    def notice(self, room: str, data: str) -> None:
        """A `presence` notice read from a room's channel (the text after `presence `)."""
        self._views.pop(room, None)  # a view read before it is out of date
        try:
            change = json.loads(data)
        except ValueError:
            change = {}
        self._notices_send.send_nowait((room, change if isinstance(change, dict) else {}))

    # -- the session's tasks ---------------------------------------------------------------
    async def write_changes(self, client: Client, answered: Answered) -> None:
        """Write queued changes and announce them, until cancelled (or Redis fails)."""
        while True:
            while not self._changes:
                await self._changed.wait()
                self._changed = trio.Event()
            (room, user), change = next(iter(self._changes.items()))
            del self._changes[room, user]
            try:
                with answered("a presence change"):
                    key = self._key(room)
                    if change == "joined":
                        await client.zadd(key, {self._member(user): self._expiry_ms()})
                    else:
                        await client.zrem(key, [self._member(user)])
                    await self._publish(room, f"presence {json.dumps({change: user})}")
                if not self._changes:
                    self._all_written.set()
            except BaseException:
                # Not written: keep it for the next session, unless the user changed since.
                self._changes.setdefault((room, user), change)
                raise

    async def refresh(
        self, client: Client, answered: Answered, followed: Callable[[], Iterable[str]]
    ) -> None:
        """Renew our members' expiry and drop expired ones (a dead replica's), announcing it.
        A room whose Redis shard fails is skipped until the next round (the others go on)."""
        while True:
            for room in set(self._local.rooms()) | set(followed()):
                key = self._key(room)
                users = self._local.users(room)
                try:
                    with answered("a presence refresh"):
                        if users:
                            expiry = self._expiry_ms()
                            await client.zadd(key, {self._member(user): expiry for user in users})
                        if await client.zremrangebyscore(key, -math.inf, _now_ms()):
                            await self._publish(room, "presence {}")
                except REDIS_ERRORS:
                    continue
            await trio.sleep(self._ttl / 4)

    async def announce(self, client: Client, answered: Answered) -> None:
        """Turn presence notices from any replica into views for local subscribers."""
        async for room, change in self._notices:
            with answered("a presence read"):
                online = await self._users_online(client, room)
            users = online | self._local.users(room)
            joined, left = change.get("joined"), change.get("left")
            self._hub.publish_presence(
                Presence(
                    room,
                    tuple(sorted(users)),
                    joined if joined in users else None,
                    left if left is not None and left not in users else None,
                )
            )

    # -- internals --------------------------------------------------------------------------
    def _key(self, room: str) -> str:
        return self._keys.presence(room)

    def _member(self, user: str) -> str:
        return f"{user}\x1f{self._replica}"

    def _expiry_ms(self) -> int:
        return _now_ms() + int(self._ttl * 1000)

    def _change(self, room: str, user: str, change: str) -> None:
        """Queue a change; an opposite one not yet written cancels out with it."""
        key = (room, user)
        if self._changes.get(key, change) != change:
            del self._changes[key]
        else:
            self._changes[key] = change
        self._changed.set()
        if self._all_written.is_set():
            self._all_written = trio.Event()

    async def written(self) -> None:
        """Until every change queued so far is written to Redis."""
        await self._all_written.wait()

    async def _users_online(self, client: Client, room: str) -> set[str]:
        members = await client.zrange(
            self._key(room), _now_ms(), "+inf", sortby=coredis.PureToken.BYSCORE
        )
        return {member.partition("\x1f")[0] for member in members}


def _now_ms() -> int:
    return int(time.time() * 1000)
