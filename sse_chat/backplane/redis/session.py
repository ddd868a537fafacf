"""One pub/sub session: a connection that follows rooms and forwards their messages.

On one Redis (or Sentinel's primary) a replica has one session; on a Redis Cluster it has one
per shard, each following the rooms whose slot that shard owns, by sharded pub/sub. A `Link`
says where a session's connection goes; everything else (subscribing a room when its first
local client joins, backfilling it from its stream so no message is missed between the read
and the subscription, reconnecting, the self-ping) is the same on all of them.

Busy is not dead: every wait is measured in event-loop run time (`LoopClock`). A session ends
only on a connection error, or when Redis leaves a command or a self-ping unanswered for
LIVENESS_TIMEOUT seconds of that time; the next one follows its rooms again and backfills each
from the last id forwarded, so clients see no gap and no duplicate.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager, suppress
from functools import partial
from typing import Any, Protocol

import trio

from ...hub import Hub
from ...ids import MessageId
from ...messages import Message
from ..loop_clock import LoopClock
from .gather import gather
from .keys import KeyScheme
from .links import NotOwning
from .scripts import REDIS_ERRORS, decode, describe, first_error

log = logging.getLogger(__name__)

# Seconds of loop run time Redis may leave a session's command or self-ping unanswered: generous,
# since a swamped loop reads replies late (a closed or reset connection is noticed at once).
LIVENESS_TIMEOUT = 15.0
HEALTH_INTERVAL = 1.0  # seconds between self-pings through the pub/sub connection
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0


class SessionLost(Exception):
    """The pub/sub session stopped working (it ended, or Redis left a command unanswered)."""


class Link(Protocol):
    """Where a session's pub/sub connection goes: the one Redis, or one shard's primary."""

    name: str

    def owns(self, room: str) -> bool:
        """Whether this link's node delivers the room's messages (as far as is known)."""
        ...

    def control(self) -> str:
        """The channel the session pings itself through."""
        ...

    def connect(self) -> AbstractAsyncContextManager[Any]:
        """A coredis pub/sub object on a fresh connection, for one session."""
        ...

    async def ping(self, channel: str) -> None:
        """Publish a ping on `channel` (it must reach this link's node)."""
        ...

    async def confirm(self, rooms: list[str]) -> None:
        """Raise unless this link's node delivers these rooms now (before subscribing)."""
        ...


class Feed(Protocol):
    """What sessions share: the rooms followed and the newest id forwarded in each."""

    hub: Hub
    keys: KeyScheme
    clock: LoopClock
    forwarded: dict[str, MessageId]

    def forward(self, room: str, message: Message) -> None: ...

    def notice_presence(self, room: str, body: str) -> None: ...

    async def newest_id(self, room: str) -> MessageId: ...

    async def backfill(self, room: str) -> list[Message]: ...

    def sessions_changed(self, moved: bool = False) -> None: ...


class Session:
    """The pub/sub session of one link, reconnected until cancelled."""

    def __init__(self, feed: Feed, link: Link) -> None:
        self.feed = feed
        self.link = link
        self.up = False
        self.reconnects = 0  # sessions lost after they were up
        self.subscribed: set[str] = set()  # rooms this session's connection was asked to follow
        self._pubsub: Any = None  # the live session's coredis PubSub, or None
        self._lock = trio.Lock()
        self._waits: set[trio.CancelScope] = set()  # follows to end with the session
        self._filling: dict[str, list[Message]] = {}  # rooms being backfilled: live ones held
        self._pong = trio.Event()

    @property
    def name(self) -> str:
        return self.link.name

    async def run(self) -> None:
        """Keep a session up: reconnect with backoff, log each transition once."""
        failures = 0
        try:
            while True:
                try:
                    await self._session()
                except* (*REDIS_ERRORS, SessionLost, NotOwning) as group:
                    reason = first_error(group)
                except* Exception as group:
                    # A bug, or coredis failing in a way not foreseen: it must not stop the
                    # replica's backplane for good. Logged in full; the session starts again.
                    log.exception("redis %s: the session failed", self.name, exc_info=group)
                    reason = first_error(group)
                else:
                    reason = "the pub/sub connection ended"
                was_up = self.up
                self._ended()
                if was_up:
                    failures = 0
                    self.reconnects += 1
                    log.warning("redis %s disconnected (%s); reconnecting", self.name, reason)
                elif failures == 0:
                    log.warning("redis %s cannot connect (%s); retrying", self.name, reason)
                failures += 1
                delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(failures - 1, 10))
                await trio.sleep(random.uniform(delay / 2, delay))
        finally:
            self._ended()

    async def follow(self, room: str) -> None:
        """Follow a room that gained its first local client (if this session is up)."""
        if room in self.subscribed or not self.up:
            return
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None or room in self.subscribed or not self.feed.hub.has_subscribers(room):
                return  # the session ended, another follow did it, or the client left
            failed = ""
            with self.feed.clock.move_on_after(LIVENESS_TIMEOUT) as wait:
                self._waits.add(wait)  # a session that ends ends this wait too
                try:
                    await self._follow_rooms(pubsub, [room])
                except REDIS_ERRORS as error:
                    failed = describe(error)
                finally:
                    self._waits.discard(wait)
            if failed or wait.cancelled_caught:
                # A broken connection ends the session, and the next one follows the room;
                # after a slow one nothing is left subscribed, and the backplane's
                # `follow_missing` tries again while the room has clients.
                log.info("following room %s failed: %s", room, failed or "no answer in time")
                self.feed.sessions_changed(moved=True)  # on a cluster: read the layout again
                self.subscribed.discard(room)
                self._filling.pop(room, None)
                with suppress(*REDIS_ERRORS):
                    await pubsub.unsubscribe(self.feed.keys.channel(room))

    async def unfollow(self, room: str) -> None:
        """Stop following a room (its last local client left)."""
        async with self._lock:
            # A client may have joined while this waited; its follow saw the room followed.
            if room not in self.subscribed or self.feed.hub.has_subscribers(room):
                return
            self.subscribed.discard(room)
            pubsub = self._pubsub
            if pubsub is not None:
                # A broken connection is the session's to notice; it subscribes anew.
                with suppress(*REDIS_ERRORS):
                    await pubsub.unsubscribe(self.feed.keys.channel(room))

    def release_moved(self) -> list[str]:
        """Forget rooms this link no longer owns (the cluster's layout changed); their new
        shard's session follows and backfills them."""
        moved = [room for room in self.subscribed if not self.link.owns(room)]
        self.subscribed.difference_update(moved)
        return moved

    # -- deadlines ---------------------------------------------------------------------------
    @contextmanager
    def answered_in_time(self, what: str) -> Iterator[None]:
        """A session's command: no answer within LIVENESS_TIMEOUT ends the session. A reply
        coredis gave up on (its wall-clock backstop) is late, not lost: it passes."""
        clock = self.feed.clock
        with clock.move_on_after(LIVENESS_TIMEOUT) as deadline:
            try:
                yield
            except TimeoutError as late:
                log.info("redis %s: %s answered late (%s)", self.name, what, late)
        if deadline.cancelled_caught:
            raise SessionLost(unanswered(clock, what))

    # -- the session -------------------------------------------------------------------------
    async def _follow_rooms(self, pubsub: Any, rooms: list[str]) -> int:
        """Subscribe to `rooms` and backfill each; returns how many messages were backfilled.

        A room never followed before starts at its newest id, read before the subscription, so
        the backfill brings whatever arrived in between; live messages of a room are held until
        its backfill is done (a live one forwarded first would make older ones look like
        duplicates)."""
        feed = self.feed
        new = [room for room in rooms if room not in feed.forwarded]
        newest = await gather([partial(feed.newest_id, room) for room in new])
        for room, last in zip(new, newest, strict=True):
            feed.forwarded.setdefault(room, last)
        await self.link.confirm(rooms)
        # Recorded before it is sent: a subscription cut short (error, cancellation) is still
        # answered by an unsubscription when the room empties.
        self.subscribed.update(rooms)
        for room in rooms:
            self._filling.setdefault(room, [])
        await pubsub.subscribe(*(feed.keys.channel(room) for room in rooms))
        backfilled = await gather([partial(feed.backfill, room) for room in rooms])
        for room, messages in zip(rooms, backfilled, strict=True):
            for message in [*messages, *self._filling.pop(room, [])]:
                feed.forward(room, message)
        return sum(map(len, backfilled))

    def _ended(self) -> None:
        self._pubsub = None
        self.subscribed = set()
        self._filling = {}
        for wait in self._waits:
            wait.cancel()
        if self.up:
            self.up = False
            self.feed.sessions_changed()

    async def _session(self) -> None:
        feed, clock = self.feed, self.feed.clock
        with clock.move_on_after(LIVENESS_TIMEOUT) as connecting:
            async with self.link.connect() as pubsub, trio.open_nursery() as nursery:
                clock.disarm(connecting)
                with clock.move_on_after(LIVENESS_TIMEOUT) as subscribing:
                    await pubsub.subscribe(self.link.control())
                    async with self._lock:
                        self.subscribed = set()
                        backfilled = 0
                        # Rooms that gain a client meanwhile are followed too.
                        while rooms := self._rooms_to_follow():
                            backfilled += await self._follow_rooms(pubsub, rooms)
                        self._pubsub = pubsub
                        self.up = True
                        feed.sessions_changed()
                if subscribing.cancelled_caught:
                    raise SessionLost(unanswered(clock, "the session's subscriptions"))
                log.info(
                    "redis %s connected (%d rooms, %d backfilled)",
                    self.name,
                    len(self.subscribed),
                    backfilled,
                )
                nursery.start_soon(self._check_health)
                async for item in pubsub:
                    self._receive(item)
                raise SessionLost("the pub/sub connection ended")
        if connecting.cancelled_caught:
            raise SessionLost(unanswered(clock, "a new connection"))

    def _rooms_to_follow(self) -> list[str]:
        hub, link = self.feed.hub, self.link
        return sorted(
            room for room in hub.rooms() if room not in self.subscribed and link.owns(room)
        )

    def _receive(self, item: Any) -> None:
        kind, channel, data = item["type"], item["channel"], item["data"]
        control = channel == self.link.control()
        if kind == "sunsubscribe" or kind == "unsubscribe":
            # Unasked: the cluster moved the slot away (Redis tells its subscribers so).
            if control:
                raise SessionLost("the cluster moved this replica's ping channel")
            room = self.feed.keys.room_of(channel)
            if room in self.subscribed:
                self.subscribed.discard(room)
                self.feed.sessions_changed(moved=True)
            return
        if kind != "message":
            return
        if control:
            self._pong.set()
            return
        room = self.feed.keys.room_of(channel)
        if room not in self.subscribed:
            return
        raw_id, _, body = data.partition(" ")
        if raw_id == "presence":
            self.feed.notice_presence(room, body)
            return
        try:
            message = decode(raw_id, body)
        except ValueError:
            log.warning("ignored a malformed message on %s", channel)
            return
        held = self._filling.get(room)
        if held is not None:
            held.append(message)
        else:
            self.feed.forward(room, message)

    async def _check_health(self) -> None:
        """Ping ourselves through Redis: the echo proves both connections work. Only a ping
        unanswered for LIVENESS_TIMEOUT of loop time ends the session, not a busy loop."""
        clock = self.feed.clock
        while True:
            await trio.sleep(HEALTH_INTERVAL)
            self._pong = pong = trio.Event()
            with clock.move_on_after(LIVENESS_TIMEOUT):
                with suppress(TimeoutError):  # coredis's backstop: the echo decides
                    await self.link.ping(self.link.control())
                await pong.wait()
            if not pong.is_set():
                # A last look: an echo read from the socket just now is not a lost one.
                await trio.sleep(clock.tick)
            if not pong.is_set():
                raise SessionLost(unanswered(clock, "a self-ping"))


def unanswered(clock: LoopClock, what: str) -> str:
    return (
        f"Redis left {what} unanswered for {LIVENESS_TIMEOUT:g} s of event-loop time"
        f" (the loop itself stalled {clock.stalled:.1f} s in all,"
        f" {clock.longest_stall:.1f} s at most)"
    )
