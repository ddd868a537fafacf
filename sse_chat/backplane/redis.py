"""The Redis backplane: rooms stored in Redis streams, delivered to every replica by pub/sub.

Built on coredis, which runs natively on Trio (through anyio). Each room has a stream (the
source of truth: ids, history, resume) and a pub/sub channel (the fast path to every replica).
A Lua script appends to the stream and publishes in one atomic step, so pub/sub order is id
order. One pub/sub connection per replica follows the rooms that have local clients; after any
interruption it resubscribes and backfills each room from the stream after the last id it
forwarded, dropping duplicates by id, so clients never see a gap.

Busy is not dead: every wait on Redis is measured in event-loop run time (`LoopClock`), so a
replica whose loop stalls under a reconnect storm does not take its own slowness for a lost
Redis. A session ends only on a connection error, or when Redis leaves a command or a self-ping
unanswered for LIVENESS_TIMEOUT seconds of that time.

Who is online lives in `redis_presence`; where Redis is, and the client for it, in
`redis_target`.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import anyio
import coredis
import coredis.exceptions
import trio

from ..hub import Hub
from ..ids import ZERO_ID, MessageId
from ..messages import Draft, Message, format_ts
from ..presence import Presence
from .base import (
    BackplaneUnavailable,
    IdempotencyConflict,
    OutcomeUnknown,
    Replay,
    fingerprint,
)
from .loop_clock import LoopClock
from .redis_presence import RedisPresence
from .redis_target import BACKSTOP_TIMEOUT, RedisTarget, open_redis, parse_redis_url

__all__ = ["RedisBackplane", "RedisTarget", "parse_redis_url"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# KEYS: stream, channel, trimmed-id key. ARGV: history size, message body (JSON without id).
# Records the newest id that trimming drops, so a resume from before it can report a gap
# (Redis 7.0's max-deleted-entry-id does not count trimmed entries).
_APPEND_LUA = """
if #KEYS == 4 then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    local at = string.find(seen, ' ', 1, true)
    if string.sub(seen, 1, at - 1) ~= ARGV[3] then return {'conflict'} end
    return {'replay', string.sub(seen, at + 1)}
  end
end
local size = tonumber(ARGV[1])
local length = redis.call('XLEN', KEYS[1])
if length >= size then
  local dropped = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', length - size + 1)
  redis.call('SET', KEYS[3], dropped[#dropped][1])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', size, '*', 'm', ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
if #KEYS == 4 then
  redis.call('SET', KEYS[4], ARGV[3] .. ' ' .. id .. ' ' .. ARGV[2], 'EX', ARGV[4])
end
return {'new', id}
"""

# KEYS: stream, trimmed-id key. ARGV: exclusive start id. One consistent read for a resume.
_SINCE_LUA = """
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local oldest = false
if #first > 0 then oldest = first[1][1] end
return {redis.call('GET', KEYS[2]) or false, oldest, entries}
"""

# KEYS: counter. ARGV: ttl seconds. A counter that expires on its own.
_COUNT_HIT_LUA = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""

# Errors that mean "Redis cannot be reached or answered badly right now". coredis raises
# anyio's when it writes to a connection that is closing under it.
_REDIS_ERRORS = (
    coredis.exceptions.RedisError,
    OSError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
)

# Deadlines count event-loop run time (see LoopClock), not wall time.
COMMAND_TIMEOUT = 2.0  # seconds a client's command may wait before it fails (503 for a POST)
# Seconds of loop run time Redis may leave a session's command or self-ping unanswered: generous,
# since a swamped loop reads replies late (a closed or reset connection is noticed at once).
LIVENESS_TIMEOUT = 15.0
HEALTH_INTERVAL = 1.0  # seconds between self-pings through the pub/sub connection
# Messages forwarded within this window reach the hub together, so each stream gets them in one
# write. Under load, when pub/sub delivers a backlog at once, this saves a write per message.
BATCH_WINDOW = 0.001
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0


class _SessionLost(Exception):
    """The pub/sub session stopped working (it ended, or Redis left a command unanswered)."""


class RedisBackplane:
    """Rooms in Redis streams, delivered to every replica through pub/sub."""

    def __init__(self, hub: Hub, replica: str, history_size: int, target: RedisTarget,
                 prefix: str = "sse-chat", presence_ttl: float = 20.0,
                 idempotency_seconds: int = 86400) -> None:  # fmt: skip
        self._hub = hub
        self._idempotency_seconds = idempotency_seconds
        self._replica = replica
        self._history_size = history_size
        self._target = target
        self._prefix = prefix
        self._client: coredis.Redis[str] | None = None
        self._pubsub: Any = None  # the live session's coredis PubSub, or None
        self._up = trio.Event()  # set while a session is live; a new one after each loss
        self._clock = LoopClock()
        # Rooms the live pub/sub connection was asked to subscribe to (so must unsubscribe).
        self._subscribed: set[str] = set()
        # Rooms this replica follows, across sessions: the newest id handed to the hub.
        self._last_forwarded: dict[str, MessageId] = {}
        self._session_waits: set[trio.CancelScope] = set()  # follows to end with the session
        self._outbox_send, self._outbox = trio.open_memory_channel[Message](math.inf)
        self._subscription_lock = trio.Lock()
        self._leaving_send, self._leaving_receive = trio.open_memory_channel[str](math.inf)
        self._pong = trio.Event()
        self._presence = RedisPresence(hub, replica, prefix, presence_ttl, self._channel)
        self._append_script: Any = None
        self._since_script: Any = None
        self._count_hit_script: Any = None
        self.reconnects = 0  # sessions lost after they were up
        self.gaps = 0  # times a room's history was trimmed past what this replica forwarded

    # -- keys ---------------------------------------------------------------------------
    def _stream_key(self, room: str) -> str:
        return f"{self._prefix}:room:{room}:messages"

    def _idempotency_key(self, room: str, key: str) -> str:
        return f"{self._prefix}:room:{room}:idempotency:{key}"

    def _trimmed_key(self, room: str) -> str:
        return f"{self._prefix}:room:{room}:trimmed"

    def _channel(self, room: str) -> str:
        return f"{self._prefix}:room:{room}"

    def _control_channel(self) -> str:
        return f"{self._prefix}:replica:{self._replica}"

    # -- the Backplane interface ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_redis(self._target) as client:
            self._client = client
            self._append_script = client.register_script(_APPEND_LUA)
            self._since_script = client.register_script(_SINCE_LUA)
            self._count_hit_script = client.register_script(_COUNT_HIT_LUA)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._clock.run)
                    nursery.start_soon(self._publish_in_batches)
                    nursery.start_soon(self._unfollow_rooms_left_empty)
                    task_status.started()
                    await self._follow_forever(client)
            finally:
                self._client = None
                self._session_ended()

    async def append(self, draft: Draft, idempotency_key: str | None = None) -> Message:
        self._require_client()
        now = datetime.now(UTC)
        body = _encode_body(draft.room, draft.user, draft.text, format_ts(now), self._replica)
        room = draft.room
        keys = [self._stream_key(room), self._channel(room), self._trimmed_key(room)]
        args: list[str | int] = [self._history_size, body]
        if idempotency_key is not None:
            keys.append(self._idempotency_key(room, idempotency_key))
            args += [fingerprint(draft), self._idempotency_seconds]
        with self._redis_errors_as_unavailable(writes=True):
            outcome = await self._append_script(keys=keys, args=args)
        if outcome[0] == "conflict":
            raise IdempotencyConflict(idempotency_key)
        if outcome[0] == "replay":
            raw_id, _, stored = _text(outcome[1]).partition(" ")
            return _decode(raw_id, stored)
        return _decode(_text(outcome[1]), body)

    async def recent(self, room: str, limit: int) -> list[Message]:
        client = self._require_client()
        with self._redis_errors_as_unavailable():
            entries = await client.xrevrange(self._stream_key(room), "+", "-", count=limit)
        return [_decode(entry.identifier, entry.field_values["m"]) for entry in reversed(entries)]

    async def since(self, room: str, after: MessageId) -> Replay:
        self._require_client()
        with self._redis_errors_as_unavailable():
            trimmed, oldest, messages = await self._read_since(room, after)
        gap = trimmed is not None and after < trimmed
        return Replay(messages, gap=gap, oldest=oldest)

    async def follow(self, room: str) -> None:
        if room in self._subscribed or not self.connected:
            return  # followed already, or the next session follows every room of the hub
        async with self._subscription_lock:
            pubsub, client = self._pubsub, self._client
            if pubsub is None or client is None or room in self._subscribed:
                return
            if not self._hub.has_subscribers(room):
                return  # its subscriber left while this waited
            with self._clock.move_on_after(LIVENESS_TIMEOUT) as wait:
                self._session_waits.add(wait)  # a session that ends ends this wait too
                try:
                    # Messages stored before the subscription reach a client through its
                    # replay; every later one has a greater id than this baseline.
                    newest = await self._newest_id(client, room)
                    self._last_forwarded[room] = max(newest, self._last_forwarded.get(room, newest))
                    # Recorded before it is sent: a SUBSCRIBE cut short (error, cancellation)
                    # is still answered by an UNSUBSCRIBE when the room empties.
                    self._subscribed.add(room)
                    await pubsub.subscribe(self._channel(room))
                except _REDIS_ERRORS as error:
                    # A broken connection ends the session, and the next one follows the
                    # room; a slow one gets its missing rooms followed by `_follow_missing`.
                    log.info("following room %s failed: %s", room, _describe(error))
                finally:
                    self._session_waits.discard(wait)

    def unfollow(self, room: str) -> None:
        self._leaving_send.send_nowait(room)

    async def wait_connected(self) -> None:
        await self._up.wait()

    def last_forwarded(self, room: str) -> MessageId | None:
        return self._last_forwarded.get(room)

    async def count_hit(self, key: str, ttl_seconds: int) -> int:
        self._require_client()
        with self._redis_errors_as_unavailable():
            count = await self._count_hit_script(
                keys=[f"{self._prefix}:count:{key}"], args=[ttl_seconds]
            )
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

    # -- deadlines --------------------------------------------------------------------------
    def _require_client(self) -> coredis.Redis[str]:
        if self._client is None:
            raise BackplaneUnavailable("the Redis backplane is not running")
        return self._client

    @contextmanager
    def _redis_errors_as_unavailable(self, writes: bool = False) -> Iterator[None]:
        """A client's command: Redis errors, and no answer within COMMAND_TIMEOUT, fail it.

        A command that `writes` and got no answer may have run: its outcome is unknown."""
        try:
            with self._clock.move_on_after(COMMAND_TIMEOUT) as deadline:
                yield
        except _REDIS_ERRORS as error:
            raise BackplaneUnavailable(f"Redis: {_describe(error)}") from error
        if deadline.cancelled_caught:
            late = f"Redis: no answer within {COMMAND_TIMEOUT:g} s"
            raise (OutcomeUnknown if writes else BackplaneUnavailable)(late)

    @contextmanager
    def _answered_in_time(self, what: str) -> Iterator[None]:
        """A session's command: no answer within LIVENESS_TIMEOUT ends the session. A reply
        coredis gave up on (its wall-clock backstop) is late, not lost: it passes."""
        with self._clock.move_on_after(LIVENESS_TIMEOUT) as deadline:
            try:
                yield
            except TimeoutError as late:
                log.info("redis backplane: %s answered late (%s)", what, late)
        if deadline.cancelled_caught:
            raise _SessionLost(self._unanswered(what))

    def _unanswered(self, what: str) -> str:
        return (
            f"Redis left {what} unanswered for {LIVENESS_TIMEOUT:g} s of event-loop time"
            f" (the loop itself stalled {self._clock.stalled:.1f} s in all,"
            f" {self._clock.longest_stall:.1f} s at most)"
        )

    # -- following rooms --------------------------------------------------------------------
    async def _newest_id(self, client: coredis.Redis[str], room: str) -> MessageId:
        last = await client.xrevrange(self._stream_key(room), "+", "-", count=1)
        return MessageId.parse(_text(last[0].identifier)) if last else ZERO_ID

    async def _read_since(
        self, room: str, after: MessageId
    ) -> tuple[MessageId | None, MessageId | None, list[Message]]:
        """The newest id trimmed from the room's history, its oldest retained id, and every
        message after `after`, in one consistent read."""
        trimmed, oldest, entries = await self._since_script(
            keys=[self._stream_key(room), self._trimmed_key(room)], args=[str(after)]
        )
        messages = [_decode(entry_id, dict(_pairs(fields))["m"]) for entry_id, fields in entries]
        return (
            MessageId.parse(trimmed) if trimmed else None,
            MessageId.parse(oldest) if oldest else None,
            messages,
        )

    async def _unfollow_rooms_left_empty(self) -> None:
        """Stop following rooms whose last local client left (unless one came back)."""
        async for room in self._leaving_receive:
            async with self._subscription_lock:
                if self._hub.has_subscribers(room):
                    continue
                self._last_forwarded.pop(room, None)
                if room not in self._subscribed:
                    continue
                self._subscribed.discard(room)
                pubsub = self._pubsub
                if pubsub is not None:
                    # A broken connection is the session's to notice; it subscribes anew.
                    with suppress(*_REDIS_ERRORS):
                        await pubsub.unsubscribe(self._channel(room))

    def _forward(self, room: str, message: Message) -> None:
        """Hand a message to the hub once: in id order, never twice."""
        last = self._last_forwarded.get(room)
        if room not in self._subscribed or last is None or message.id <= last:
            return
        self._last_forwarded[room] = message.id
        self._outbox_send.send_nowait(message)

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
            self._hub.publish_batch(batch)

    async def _backfill(self, room: str) -> int:
        """Forward what the stream holds after the last id forwarded for `room`."""
        last = self._last_forwarded[room]
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
            self._hub.publish_gap(room, last, oldest)
        for message in messages:
            self._forward(room, message)
        return len(messages)

    async def _follow_rooms(self, client: coredis.Redis[str], pubsub: Any, rooms: list[str]) -> int:
        """A session's subscription to `rooms`, backfilled; returns how many were backfilled.

        A room never followed before starts at its newest id, read before the SUBSCRIBE, so
        the backfill brings whatever arrived in between."""
        new = [room for room in rooms if room not in self._last_forwarded]
        newest = await _gather([partial(self._newest_id, client, room) for room in new])
        self._last_forwarded.update(zip(new, newest, strict=True))
        self._subscribed.update(rooms)  # recorded first, as in `follow`
        await pubsub.subscribe(*(self._channel(room) for room in rooms))
        return sum(await _gather([partial(self._backfill, room) for room in rooms]))

    async def _follow_forever(self, client: coredis.Redis[str]) -> None:
        """Keep a pub/sub session up: reconnect with backoff, log each transition once."""
        failures = 0
        while True:
            try:
                await self._session(client)
            except* (*_REDIS_ERRORS, _SessionLost) as group:
                reason = _first_error(group)
            else:
                reason = "the pub/sub connection ended"
            was_connected = self.connected
            self._session_ended()
            if was_connected:
                failures = 0
                self.reconnects += 1
                log.warning("redis backplane disconnected (%s); reconnecting", reason)
            elif failures == 0:
                log.warning("redis backplane cannot connect (%s); retrying", reason)
            failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(failures - 1, 10))
            await trio.sleep(random.uniform(delay / 2, delay))

    def _session_ended(self) -> None:
        self._pubsub = None
        self._subscribed = set()
        for wait in self._session_waits:
            wait.cancel()
        if self._up.is_set():
            self._up = trio.Event()

    async def _session(self, client: coredis.Redis[str]) -> None:
        with self._clock.move_on_after(LIVENESS_TIMEOUT) as connecting:
            async with (
                client.pubsub(
                    retry_policy=None,
                    ignore_subscribe_messages=True,
                    subscription_timeout=BACKSTOP_TIMEOUT,
                    # Its keepalive pings with a wall-clock timeout; `_check_health` does that.
                    max_idle_seconds=24 * 3600,
                ) as pubsub,
                trio.open_nursery() as nursery,
            ):
                self._clock.disarm(connecting)
                with self._clock.move_on_after(LIVENESS_TIMEOUT) as subscribing:
                    await pubsub.subscribe(self._control_channel())
                    async with self._subscription_lock:
                        # A follow cut short by the last session may have left its room here.
                        self._subscribed = set()
                        for room in [
                            r for r in self._last_forwarded if not self._hub.has_subscribers(r)
                        ]:
                            del self._last_forwarded[room]
                        # Nothing live is read until every room is backfilled: a live message
                        # forwarded first would make the older backfilled ones look like
                        # duplicates. Rooms that gain a client meanwhile are followed too.
                        backfilled = 0
                        while rooms := sorted(set(self._hub.rooms()) - self._subscribed):
                            backfilled += await self._follow_rooms(client, pubsub, rooms)
                        self._pubsub = pubsub
                        self._up.set()
                if subscribing.cancelled_caught:
                    raise _SessionLost(self._unanswered("the session's subscriptions"))
                log.info(
                    "redis backplane connected (%d rooms, %d backfilled)",
                    len(self._subscribed),
                    backfilled,
                )
                nursery.start_soon(self._check_health, client)
                nursery.start_soon(self._follow_missing)
                presence, answered = self._presence, self._answered_in_time
                nursery.start_soon(presence.write_changes, client, answered)
                nursery.start_soon(presence.refresh, client, lambda: self._subscribed, answered)
                nursery.start_soon(presence.announce, client, answered)
                async for item in pubsub:
                    self._receive(item)
                raise _SessionLost("the pub/sub connection ended")
        if connecting.cancelled_caught:
            raise _SessionLost(self._unanswered("a new connection"))

    def _receive(self, item: Any) -> None:
        channel, data = item["channel"], item["data"]
        if channel == self._control_channel():
            self._pong.set()
            return
        room = channel.rpartition(":room:")[2]
        raw_id, _, body = data.partition(" ")
        if raw_id == "presence":
            self._presence.notice(room, body)
            return
        try:
            message = _decode(raw_id, body)
        except ValueError:
            log.warning("ignored a malformed message on %s", channel)
            return
        self._forward(room, message)

    async def _check_health(self, client: coredis.Redis[str]) -> None:
        """Ping ourselves through Redis: the echo proves both connections work. Only a ping
        unanswered for LIVENESS_TIMEOUT of loop time ends the session, not a busy loop."""
        while True:
            await trio.sleep(HEALTH_INTERVAL)
            self._pong = pong = trio.Event()
            with self._clock.move_on_after(LIVENESS_TIMEOUT):
                with suppress(TimeoutError):  # coredis's backstop: the echo decides
                    await client.publish(self._control_channel(), "ping")
                await pong.wait()
            if not pong.is_set():
                # A last look: an echo read from the socket just now is not a lost one.
                await trio.sleep(self._clock.tick)
            if not pong.is_set():
                raise _SessionLost(self._unanswered("a self-ping"))

    async def _follow_missing(self) -> None:
        """Follow, now and then, any room the hub has clients for but this session does not
        (its `follow` failed while the session stayed up)."""
        while True:
            await trio.sleep(HEALTH_INTERVAL)
            for room in self._hub.rooms():
                if room not in self._subscribed:
                    await self.follow(room)


async def _gather(calls: list[Callable[[], Awaitable[_T]]]) -> list[_T]:
    """Await every call at once (coredis pipelines their commands on one connection)."""
    results: dict[int, _T] = {}

    async def one(index: int, call: Callable[[], Awaitable[_T]]) -> None:
        results[index] = await call()

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(one, index, call)
    return [results[index] for index in range(len(calls))]


def _encode_body(room: str, user: str, text: str, ts: str, replica: str) -> str:
    fields = {"room": room, "user": user, "text": text, "ts": ts, "replica": replica}
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def _decode(raw_id: str | bytes, body: str | bytes) -> Message:
    return Message.from_dict({"id": _text(raw_id), **json.loads(body)})


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[str]) -> Iterator[tuple[str, str]]:
    return zip(flat[::2], flat[1::2], strict=True)


def _first_error(group: BaseExceptionGroup[BaseException]) -> str:
    for error in _leaves(group):
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return "unknown error"


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error
