"""The Redis backplane: rooms stored in Redis streams, delivered to every replica by pub/sub.

Built on coredis, which runs natively on Trio (through anyio). Each room has a stream (the
source of truth: ids, history, resume) and a pub/sub channel (the fast path to every replica).
A Lua script appends to the stream and publishes in one atomic step, so pub/sub order is id
order. Sessions (`session`) follow the rooms that have local clients and backfill them after
any interruption; `shards` says how many there are (one, or one per cluster primary). With
`min_replicas`, an append also waits until that many replicas hold it (`WAIT`, on the same
connection as the script) before it counts as stored.

The same code serves one Redis, Sentinel and Cluster; they differ only in how connections and
sessions are made (`target`, `links`, `shards`) and in key names (`keys`).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import coredis
import coredis.exceptions
import trio

from ...hub import Hub
from ...ids import ZERO_ID, MessageId
from ...messages import Draft, Message, format_ts
from ...presence import Presence
from ..base import BackplaneUnavailable, IdempotencyConflict, OutcomeUnknown, Replay, fingerprint
from ..loop_clock import LoopClock
from .keys import KeyScheme
from .presence import RedisPresence
from .scripts import (
    COUNT_HIT_LUA,
    REDIS_ERRORS,
    SINCE_LUA,
    append_lua,
    decode,
    describe,
    encode_body,
    pairs,
    text,
)
from .session import HEALTH_INTERVAL, LIVENESS_TIMEOUT, SessionLost, unanswered
from .shards import ClusterShards, OneRedis, Shards
from .target import RedisTarget, open_cluster, open_redis

log = logging.getLogger(__name__)

# Deadlines count event-loop run time (see LoopClock), not wall time.
COMMAND_TIMEOUT = 2.0  # seconds a client's command may wait before it fails (503 for a POST)
# Messages forwarded within this window reach the hub together, so each stream gets them in one
# write. Under load, when pub/sub delivers a backlog at once, this saves a write per message.
BATCH_WINDOW = 0.001
RETRY_DELAY = 0.5  # seconds before a background write (presence) that failed is tried again


class RedisBackplane:
    """Rooms in Redis streams, delivered to every replica through pub/sub."""

    def __init__(self, hub: Hub, replica: str, history_size: int, target: RedisTarget,
                 prefix: str = "sse-chat", presence_ttl: float = 20.0,
                 idempotency_seconds: int = 86400, min_replicas: int = 0,
                 wait_ms: int = 500) -> None:  # fmt: skip
        self.hub = hub
        self.keys = KeyScheme(prefix, sharded=target.is_cluster)
        self.clock = LoopClock()
        # Rooms this replica follows, across sessions: the newest id handed to the hub.
        self.forwarded: dict[str, MessageId] = {}
        self._idempotency_seconds = idempotency_seconds
        self._replica = replica
        self._history_size = history_size
        self._target = target
        self._min_replicas, self._wait_ms = min_replicas, wait_ms
        self._client: coredis.Redis[str] | coredis.RedisCluster[str] | None = None
        self._shards: Shards | None = None
        self._up = trio.Event()  # set while any session is live; a new one after each loss
        self._recheck = trio.Event()  # rooms may be left unfollowed (a session came or went)
        self._outbox_send, self._outbox = trio.open_memory_channel[Message](math.inf)
        self._leaving_send, self._leaving_receive = trio.open_memory_channel[str](math.inf)
        self._presence = RedisPresence(hub, replica, self.keys, presence_ttl, self._publish)
        self._append_script: Any = None
        self._since_script: Any = None
        self._count_hit_script: Any = None
        self.gaps = 0  # times a room's history was trimmed past what this replica forwarded

    # -- the Backplane interface ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._up.is_set()

    @property
    def reconnects(self) -> int:
        """Sessions lost after they were up."""
        if self._shards is None:
            return 0
        sessions = self._shards.sessions()
        return self._shards.retired_reconnects + sum(s.reconnects for s in sessions)

    def unreachable(self) -> list[str]:
        """Cluster shards this replica cannot reach now (their rooms wait; the others work)."""
        if self._shards is None or not self._target.is_cluster:
            return []
        return sorted(session.name for session in self._shards.sessions() if not session.up)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        target = self._target
        opened = open_cluster(target) if target.is_cluster else open_redis(target)
        async with opened as client:
            self._client = client
            self._append_script = client.register_script(append_lua(self.keys.publish))
            self._since_script = client.register_script(SINCE_LUA)
            self._count_hit_script = client.register_script(COUNT_HIT_LUA)
            self._shards = (
                ClusterShards(self, client, target, self.keys, self._replica)
                if isinstance(client, coredis.RedisCluster)
                else OneRedis(self, client, self._replica)
            )
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.clock.run)
                    nursery.start_soon(self._publish_in_batches)
                    nursery.start_soon(self._unfollow_rooms_left_empty)
                    nursery.start_soon(self._follow_missing)
                    presence = self._presence
                    refresh = partial(presence.refresh, followed=self._followed)
                    nursery.start_soon(self._retrying, "writing presence", presence.write_changes)
                    nursery.start_soon(self._retrying, "refreshing presence", refresh)
                    nursery.start_soon(self._retrying, "announcing presence", presence.announce)
                    task_status.started()
                    await self._shards.run()
            finally:
                self._client = None
                if self._up.is_set():
                    self._up = trio.Event()

    async def append(self, draft: Draft, idempotency_key: str | None = None) -> Message:
        self._require_client()
        now = datetime.now(UTC)
        body = encode_body(draft.room, draft.user, draft.text, format_ts(now), self._replica)
        room, keys = draft.room, self.keys
        names = [keys.stream(room), keys.channel(room), keys.trimmed(room)]
        args: list[str | int] = [self._history_size, body]
        if idempotency_key is not None:
            names.append(keys.idempotency(room, idempotency_key))
            args += [fingerprint(draft), self._idempotency_seconds]
        with self._redis_errors_as_unavailable(writes=True):
            outcome = await self._store(room, names, args)
        if outcome[0] == "conflict":
            raise IdempotencyConflict(idempotency_key)
        if outcome[0] == "replay":
            raw_id, _, stored = text(outcome[1]).partition(" ")
            return decode(raw_id, stored)
        return decode(text(outcome[1]), body)

    async def recent(self, room: str, limit: int) -> list[Message]:
        client = self._require_client()
        with self._redis_errors_as_unavailable():
            entries = await client.xrevrange(self.keys.stream(room), "+", "-", count=limit)
        return [decode(entry.identifier, entry.field_values["m"]) for entry in reversed(entries)]

    async def since(self, room: str, after: MessageId) -> Replay:
        self._require_client()
        with self._redis_errors_as_unavailable():
            trimmed, oldest, messages = await self._read_since(room, after)
        gap = trimmed is not None and after < trimmed
        return Replay(messages, gap=gap, oldest=oldest)

    async def follow(self, room: str) -> None:
        session = self._shards.session_for(room) if self._shards is not None else None
        if session is not None:
            await session.follow(room)

    def unfollow(self, room: str) -> None:
        self._leaving_send.send_nowait(room)

    async def wait_connected(self) -> None:
        await self._up.wait()

    def last_forwarded(self, room: str) -> MessageId | None:
        return self.forwarded.get(room)

    async def count_hit(self, key: str, ttl_seconds: int) -> int:
        self._require_client()
        with self._redis_errors_as_unavailable():
            count = await self._count_hit_script(keys=[self.keys.counter(key)], args=[ttl_seconds])
        return int(count)

    def mark_present(self, room: str, user: str) -> None:
        self._presence.mark_present(room, user)

    def mark_absent(self, room: str, user: str) -> None:
        self._presence.mark_absent(room, user)

    async def settle(self) -> None:
        await self._presence.written()

    async def presence(self, room: str) -> Presence:
        client = self._require_client()
        with self._redis_errors_as_unavailable():
            return await self._presence.view(client, room)

    # -- what sessions share (session.Feed) --------------------------------------------------
    def forward(self, room: str, message: Message) -> None:
        """Hand a message to the hub once: in id order, never twice."""
        last = self.forwarded.get(room)
        if last is None or message.id <= last:
            return
        self.forwarded[room] = message.id
        self._outbox_send.send_nowait(message)

    def notice_presence(self, room: str, body: str) -> None:
        self._presence.notice(room, body)

    async def newest_id(self, room: str) -> MessageId:
        last = await self._require_client().xrevrange(self.keys.stream(room), "+", "-", count=1)
        return MessageId.parse(text(last[0].identifier)) if last else ZERO_ID

    async def backfill(self, room: str) -> list[Message]:
        """What the stream holds after the last id forwarded for `room` (a `gap` first when
        its history was trimmed past that id)."""
        last = self.forwarded.get(room)
        if last is None:
            return []
        trimmed, oldest, messages = await self._read_since(room, last)
        if trimmed is not None and last < trimmed:
            self.gaps += 1
            log.warning(
                "room %s: messages after %s were trimmed from its history (SSE_CHAT_HISTORY_SIZE)"
                " before this replica could forward them; its clients miss those up to %s",
                room,
                last,
                oldest,
            )
            self.hub.publish_gap(room, last, oldest)
        return messages

    def sessions_changed(self, moved: bool = False) -> None:
        """A session came up or went down, or a room's slot `moved` (its rooms are followed
        again once the cluster's layout is read, which calls this again)."""
        shards = self._shards
        if shards is None:
            return
        shards.changed()
        if moved:
            return
        up = any(session.up for session in shards.sessions())
        if up and not self._up.is_set():
            self._up.set()
        elif not up and self._up.is_set():
            self._up = trio.Event()
        self._recheck.set()

    # -- internals --------------------------------------------------------------------------
    def _require_client(self) -> coredis.Redis[str] | coredis.RedisCluster[str]:
        if self._client is None:
            raise BackplaneUnavailable("the Redis backplane is not running")
        return self._client

    async def _store(self, room: str, keys: list[str], args: list[str | int]) -> Any:
        """Run the append script; with `min_replicas`, coredis follows it with WAIT on the same
        connection (on a cluster, on the room's primary, after any redirect)."""
        client = self._require_client()
        if not self._min_replicas:
            return await self._append_script(keys=keys, args=args)
        try:
            with client.ensure_replication(self._min_replicas, self._wait_ms):
                return await self._append_script(keys=keys, args=args)
        except coredis.exceptions.ReplicationError as error:
            raise OutcomeUnknown(
                f"Redis: stored, but fewer than {self._min_replicas} replicas acknowledged it"
                f" within {self._wait_ms} ms"
            ) from error

    @contextmanager
    def _redis_errors_as_unavailable(self, writes: bool = False) -> Iterator[None]:
        """A client's command: Redis errors, and no answer within COMMAND_TIMEOUT, fail it.

        A command that `writes` and got no answer may have run: its outcome is unknown."""
        try:
            with self.clock.move_on_after(COMMAND_TIMEOUT) as deadline:
                yield
        except REDIS_ERRORS as error:
            if self._shards is not None:
                self._shards.changed()  # on a cluster, a MOVED or a lost node: read the layout
            if writes and _maybe_ran(error):
                raise OutcomeUnknown(f"Redis: {describe(error)}") from error
            raise BackplaneUnavailable(f"Redis: {describe(error)}") from error
        if deadline.cancelled_caught:
            late = f"Redis: no answer within {COMMAND_TIMEOUT:g} s"
            raise (OutcomeUnknown if writes else BackplaneUnavailable)(late)

    @contextmanager
    def _answered_in_time(self, what: str) -> Iterator[None]:
        """A background command: no answer within LIVENESS_TIMEOUT of loop time fails it."""
        with self.clock.move_on_after(LIVENESS_TIMEOUT) as deadline:
            yield
        if deadline.cancelled_caught:
            raise SessionLost(unanswered(self.clock, what))

    async def _retrying(self, what: str, task: Callable[..., Awaitable[None]]) -> None:
        """Run a background task of presence, again after each Redis failure."""
        while True:
            try:
                if self._client is None:
                    raise BackplaneUnavailable("not running")
                await task(self._client, self._answered_in_time)
            except (*REDIS_ERRORS, SessionLost, BackplaneUnavailable) as error:
                log.info("redis backplane: %s failed (%s); retrying", what, describe(error))
            await trio.sleep(random.uniform(RETRY_DELAY, 2 * RETRY_DELAY))

    def _followed(self) -> set[str]:
        sessions = self._shards.sessions() if self._shards is not None else []
        return set().union(*(session.subscribed for session in sessions))

    async def _publish(self, room: str, message: str) -> None:
        client = self._require_client()
        channel = self.keys.channel(room)
        if self.keys.sharded:
            await client.spublish(channel, message)
        else:
            await client.publish(channel, message)

    async def _read_since(
        self, room: str, after: MessageId
    ) -> tuple[MessageId | None, MessageId | None, list[Message]]:
        """The newest id trimmed from the room's history, its oldest retained id, and every
        message after `after`, in one consistent read."""
        trimmed, oldest, entries = await self._since_script(
            keys=[self.keys.stream(room), self.keys.trimmed(room)], args=[str(after)]
        )
        messages = [decode(entry_id, dict(pairs(fields))["m"]) for entry_id, fields in entries]
        return (
            MessageId.parse(trimmed) if trimmed else None,
            MessageId.parse(oldest) if oldest else None,
            messages,
        )

    async def _unfollow_rooms_left_empty(self) -> None:
        """Stop following rooms whose last local client left (unless one came back)."""
        async for room in self._leaving_receive:
            if self.hub.has_subscribers(room) or self._shards is None:
                continue
            for session in self._shards.sessions():
                await session.unfollow(room)
            if not self.hub.has_subscribers(room):
                self.forwarded.pop(room, None)

    async def _publish_in_batches(self) -> None:
        """Hand forwarded messages to the hub, those that arrive together in one batch."""
        while True:
            batch = [await self._outbox.receive()]
            await trio.sleep(BATCH_WINDOW)
            while True:
                try:
                    batch.append(self._outbox.receive_nowait())
                except trio.WouldBlock:
                    break
            self.hub.publish_batch(batch)

    async def _follow_missing(self) -> None:
        """Follow any room the hub has clients for but no session does: its follow failed
        while the session stayed up, or its shard changed."""
        while True:
            with trio.move_on_after(HEALTH_INTERVAL):
                await self._recheck.wait()
            self._recheck = trio.Event()
            followed = self._followed()
            for room in self.hub.rooms():
                if room not in followed:
                    await self.follow(room)


def _maybe_ran(error: BaseException) -> bool:
    """Whether a command that failed with `error` may have run: its connection broke after it
    was sent (not an error answer from Redis, nor a connection that was never made)."""
    if isinstance(error, coredis.exceptions.ResponseError):
        return False  # Redis answered: refused (MOVED, CLUSTERDOWN, a script error), not run
    return not str(error).startswith("Unable to establish a connection")
