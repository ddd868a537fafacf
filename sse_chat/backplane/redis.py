"""The Redis shim: the only module that talks to Redis.

Built on coredis, which runs natively on Trio (through anyio). Each room has a stream (the
source of truth: ids, history, resume) and a pub/sub channel (the fast path to every replica).
A Lua script appends to the stream and publishes in one atomic step, so pub/sub order is id
order. One pub/sub connection per replica follows the rooms that have local clients; after any
interruption it resubscribes and backfills each room from the stream after the last id it
forwarded, dropping duplicates by id, so clients never see a gap.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import coredis
import coredis.exceptions
import trio
from coredis.connection import TCPLocation
from coredis.retry import NoRetryPolicy

from ..hub import Hub, Subscriber
from ..ids import MessageId
from ..messages import Draft, Message, format_ts
from ..presence import LocalPresence, Presence
from .base import BackplaneUnavailable, Replay

log = logging.getLogger(__name__)

# KEYS: stream, channel, trimmed-id key. ARGV: history size, message body (JSON without id).
# Records the newest id that trimming drops, so a resume from before it can report a gap
# (Redis 7.0's max-deleted-entry-id does not count trimmed entries).
_APPEND_LUA = """
local size = tonumber(ARGV[1])
local length = redis.call('XLEN', KEYS[1])
if length >= size then
  local dropped = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', length - size + 1)
  redis.call('SET', KEYS[3], dropped[#dropped][1])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', size, '*', 'm', ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
return id
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

# Errors that mean "Redis cannot be reached or answered badly right now".
_REDIS_ERRORS = (coredis.exceptions.RedisError, OSError, trio.TooSlowError)

COMMAND_TIMEOUT = 2.0  # seconds: a command slower than this fails (503 for a POST)
HEALTH_INTERVAL = 1.0  # seconds between self-pings through the pub/sub connection
HEALTH_TIMEOUT = 10.0  # seconds a self-ping may take before the connection counts as lost
# Messages forwarded within this window reach the hub together, so each stream gets them in one
# write. Under load, when pub/sub delivers a backlog at once, this saves a write per message.
BATCH_WINDOW = 0.001
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0


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
        "stream_timeout": COMMAND_TIMEOUT,
        "connect_timeout": 1.0,
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
    sentinel_options = {"connect_timeout": 1.0, "stream_timeout": COMMAND_TIMEOUT}
    async with coredis.Sentinel(
        locations, sentinel_kwargs={**sentinel_options, "decode_responses": True}, **options
    ) as sentinel:
        primary = sentinel.primary_for(
            target.service, username=target.username, password=target.password, db=target.db
        )
        async with primary as client:
            yield client  # type: ignore[misc]  # decode_responses=True: a Redis[str]


class _SessionLost(Exception):
    """The pub/sub connection stopped delivering (ended, or a self-ping went unanswered)."""


class RedisBackplane:
    """Rooms in Redis streams, delivered to every replica through pub/sub."""

    def __init__(self, hub: Hub, replica: str, history_size: int, target: RedisTarget,
                 prefix: str = "sse-chat", presence_ttl: float = 20.0) -> None:  # fmt: skip
        self._hub = hub
        self._replica = replica
        self._history_size = history_size
        self._target = target
        self._prefix = prefix
        self._client: coredis.Redis[str] | None = None
        self._pubsub: Any = None  # the live session's coredis PubSub, or None
        self._connected = False
        self._subscribed: set[str] = set()  # rooms the pub/sub connection follows
        self._last_forwarded: dict[str, MessageId] = {}  # per followed room
        self._outbox_send, self._outbox = trio.open_memory_channel[Message](math.inf)
        self._subscription_lock = trio.Lock()
        self._leaving_send, self._leaving_receive = trio.open_memory_channel[str](math.inf)
        self._pong = trio.Event()
        self._present = LocalPresence()
        self._presence_ttl = presence_ttl
        # (room, change) to write to Redis / to announce locally; drained by session tasks.
        self._presence_changes_send, self._presence_changes = trio.open_memory_channel[
            tuple[str, dict[str, str]]
        ](math.inf)
        self._presence_notices_send, self._presence_notices = trio.open_memory_channel[
            tuple[str, dict[str, str]]
        ](math.inf)
        self._append_script: Any = None
        self._since_script: Any = None
        self._count_hit_script: Any = None
        self.reconnects = 0  # sessions lost after they were up

    # -- keys ---------------------------------------------------------------------------
    def _stream_key(self, room: str) -> str:
        return f"{self._prefix}:room:{room}:messages"

    def _trimmed_key(self, room: str) -> str:
        return f"{self._prefix}:room:{room}:trimmed"

    def _channel(self, room: str) -> str:
        return f"{self._prefix}:room:{room}"

    def _presence_key(self, room: str) -> str:
        return f"{self._prefix}:room:{room}:presence"

    def _control_channel(self) -> str:
        return f"{self._prefix}:replica:{self._replica}"

    # -- the Backplane interface ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_redis(self._target) as client:
            self._client = client
            self._append_script = client.register_script(_APPEND_LUA)
            self._since_script = client.register_script(_SINCE_LUA)
            self._count_hit_script = client.register_script(_COUNT_HIT_LUA)
            task_status.started()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._publish_in_batches)
                    await self._follow_forever(client)
            finally:
                self._client = None
                self._connected = False

    async def append(self, draft: Draft) -> Message:
        self._require_client()
        now = datetime.now(UTC)
        body = _encode_body(draft.room, draft.user, draft.text, format_ts(now), self._replica)
        room = draft.room
        with self._redis_errors_as_unavailable():
            raw_id = await self._append_script(
                keys=[self._stream_key(room), self._channel(room), self._trimmed_key(room)],
                args=[self._history_size, body],
            )
        return _decode(str(raw_id), body)

    async def recent(self, room: str, limit: int) -> list[Message]:
        client = self._require_client()
        with self._redis_errors_as_unavailable():
            entries = await client.xrevrange(self._stream_key(room), "+", "-", count=limit)
        return [_decode(entry.identifier, entry.field_values["m"]) for entry in reversed(entries)]

    async def since(self, room: str, after: MessageId) -> Replay:
        self._require_client()
        with self._redis_errors_as_unavailable():
            trimmed, oldest, entries = await self._since_script(
                keys=[self._stream_key(room), self._trimmed_key(room)],
                args=[str(after)],
            )
        messages = [_decode(entry_id, dict(_pairs(fields))["m"]) for entry_id, fields in entries]
        gap = bool(trimmed) and after < MessageId.parse(trimmed)
        return Replay(messages, gap=gap, oldest=MessageId.parse(oldest) if oldest else None)

    @asynccontextmanager
    async def subscribe(self, room: str) -> AsyncIterator[Subscriber]:
        if not self._connected:
            raise BackplaneUnavailable("Redis is not connected")
        # Join the hub first: a concurrent unsubscribe of the room then sees this client.
        try:
            with self._hub.subscribe(room) as subscriber:
                if room not in self._subscribed:
                    await self._follow_room(room)
                yield subscriber
        finally:
            if not self._hub.has_subscribers(room):
                self._leaving_send.send_nowait(room)

    async def count_hit(self, key: str, ttl_seconds: int) -> int:
        self._require_client()
        with self._redis_errors_as_unavailable():
            count = await self._count_hit_script(
                keys=[f"{self._prefix}:count:{key}"], args=[ttl_seconds]
            )
        return int(count)

    @contextmanager
    def present(self, room: str, user: str) -> Iterator[None]:
        if self._present.join(room, user):
            self._presence_changes_send.send_nowait((room, {"joined": user}))
        try:
            yield
        finally:
            if self._present.leave(room, user):
                self._presence_changes_send.send_nowait((room, {"left": user}))

    async def presence(self, room: str) -> Presence:
        client = self._require_client()
        with self._redis_errors_as_unavailable():
            users = await self._users_online(client, room)
        return Presence(room, tuple(sorted(users | self._present.users(room))))

    # -- presence ---------------------------------------------------------------------------
    # Each replica keeps `user\x1freplica` members in a sorted set per room, scored by when
    # they expire, and refreshes its own; a replica that dies stops refreshing, so its users
    # drop off after the TTL. Changes are announced on the room's channel as `presence {...}`.
    def _member(self, user: str) -> str:
        return f"{user}\x1f{self._replica}"

    def _expiry_ms(self) -> int:
        return int((_wall_clock() + self._presence_ttl) * 1000)

    async def _users_online(self, client: coredis.Redis[str], room: str) -> set[str]:
        members = await client.zrange(
            self._presence_key(room),
            int(_wall_clock() * 1000),
            "+inf",
            sortby=coredis.PureToken.BYSCORE,
        )
        return {_text(member).partition("\x1f")[0] for member in members}

    async def _write_presence_changes(self, client: coredis.Redis[str]) -> None:
        async for room, change in self._presence_changes:
            key = self._presence_key(room)
            if "joined" in change:
                await client.zadd(key, {self._member(change["joined"]): self._expiry_ms()})
            else:
                await client.zrem(key, [self._member(change["left"])])
            await client.publish(self._channel(room), "presence " + json.dumps(change))

    async def _refresh_presence(self, client: coredis.Redis[str]) -> None:
        """Renew our members' expiry and drop expired ones (a dead replica's), announcing it."""
        while True:
            rooms = set(self._present.rooms()) | self._subscribed
            for room in rooms:
                key = self._presence_key(room)
                users = self._present.users(room)
                if users:
                    expiry = self._expiry_ms()
                    await client.zadd(key, {self._member(user): expiry for user in users})
                expired = await client.zremrangebyscore(key, -math.inf, int(_wall_clock() * 1000))
                if expired:
                    await client.publish(self._channel(room), "presence {}")
            await trio.sleep(self._presence_ttl / 4)

    async def _announce_presence(self, client: coredis.Redis[str]) -> None:
        """Turn presence notices from any replica into views for local subscribers."""
        async for room, change in self._presence_notices:
            users = await self._users_online(client, room) | self._present.users(room)
            joined, left = change.get("joined"), change.get("left")
            self._hub.publish_presence(
                Presence(
                    room,
                    tuple(sorted(users)),
                    joined if joined in users else None,
                    left if left is not None and left not in users else None,
                )
            )

    # -- following rooms --------------------------------------------------------------------
    def _require_client(self) -> coredis.Redis[str]:
        if self._client is None:
            raise BackplaneUnavailable("the Redis backplane is not running")
        return self._client

    @contextmanager
    def _redis_errors_as_unavailable(self) -> Iterator[None]:
        try:
            with trio.fail_after(COMMAND_TIMEOUT):
                yield
        except _REDIS_ERRORS as error:
            raise BackplaneUnavailable(f"Redis: {error or type(error).__name__}") from error

    async def _follow_room(self, room: str) -> None:
        """Subscribe the pub/sub connection to a room that just got its first local client."""
        client = self._require_client()
        async with self._subscription_lock:
            if room in self._subscribed:
                return
            pubsub = self._pubsub
            if pubsub is None:
                raise BackplaneUnavailable("Redis is not connected")
            with self._redis_errors_as_unavailable():
                # Messages stored before the subscription reach a client through its replay;
                # every later one has a greater id than this baseline and arrives live.
                last = await client.xrevrange(self._stream_key(room), "+", "-", count=1)
                baseline = MessageId.parse(_text(last[0].identifier)) if last else MessageId(0, 0)
                self._last_forwarded[room] = max(baseline, self._last_forwarded.get(room, baseline))
                await pubsub.subscribe(self._channel(room))
            self._subscribed.add(room)

    async def _unfollow_rooms_left_empty(self) -> None:
        """Unsubscribe from rooms whose last local client left (unless one came back)."""
        async for room in self._leaving_receive:
            async with self._subscription_lock:
                if room not in self._subscribed or self._hub.has_subscribers(room):
                    continue
                self._subscribed.discard(room)
                self._last_forwarded.pop(room, None)
                await self._pubsub.unsubscribe(self._channel(room))

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

    async def _backfill(self, client: coredis.Redis[str], room: str) -> int:
        """Forward what the stream holds after the last id forwarded for `room`."""
        last = self._last_forwarded[room]
        entries = await client.xrange(self._stream_key(room), f"({last}", "+")
        for entry in entries:
            self._forward(room, _decode(entry.identifier, entry.field_values["m"]))
        return len(entries)

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
            was_connected, self._connected, self._pubsub = self._connected, False, None
            if was_connected:
                failures = 0
                self.reconnects += 1
                log.warning("redis backplane disconnected (%s); reconnecting", reason)
            elif failures == 0:
                log.warning("redis backplane cannot connect (%s); retrying", reason)
            failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(failures - 1, 10))
            await trio.sleep(random.uniform(delay / 2, delay))

    async def _session(self, client: coredis.Redis[str]) -> None:
        async with (
            client.pubsub(retry_policy=None, ignore_subscribe_messages=True) as pubsub,
            trio.open_nursery() as nursery,
        ):
            await pubsub.subscribe(self._control_channel())
            async with self._subscription_lock:
                # Rooms left while disconnected are dropped here rather than resubscribed.
                self._subscribed = {
                    room for room in self._subscribed if self._hub.has_subscribers(room)
                }
                rooms = sorted(self._subscribed)
                if rooms:
                    await pubsub.subscribe(*(self._channel(room) for room in rooms))
                # Nothing live is read until every room is backfilled: a live message
                # forwarded first would make the older backfilled ones look like duplicates.
                backfilled = sum([await self._backfill(client, room) for room in rooms])
                self._pubsub = pubsub
                self._connected = True
            log.info("redis backplane connected (%d rooms, %d backfilled)", len(rooms), backfilled)
            nursery.start_soon(self._unfollow_rooms_left_empty)
            nursery.start_soon(self._check_health, client)
            nursery.start_soon(self._write_presence_changes, client)
            nursery.start_soon(self._refresh_presence, client)
            nursery.start_soon(self._announce_presence, client)
            async for item in pubsub:
                self._receive(item)
            raise _SessionLost("the pub/sub connection ended")

    def _receive(self, item: Any) -> None:
        channel, data = item["channel"], item["data"]
        if channel == self._control_channel():
            self._pong.set()
            return
        room = channel.rpartition(":room:")[2]
        raw_id, _, body = data.partition(" ")
        if raw_id == "presence":
            try:
                change = json.loads(body)
            except ValueError:
                change = {}
            self._presence_notices_send.send_nowait((room, change))
            return
        try:
            message = _decode(raw_id, body)
        except ValueError:
            log.warning("ignored a malformed message on %s", channel)
            return
        self._forward(room, message)

    async def _check_health(self, client: coredis.Redis[str]) -> None:
        """Ping ourselves through Redis: a silent pub/sub connection is a lost one."""
        while True:
            await trio.sleep(HEALTH_INTERVAL)
            self._pong = trio.Event()
            await client.publish(self._control_channel(), "ping")
            # Lenient: a replica whose CPU is saturated answers late, and dropping its Redis
            # connection then would only add work. A dead Redis closes the socket at once.
            with trio.move_on_after(HEALTH_TIMEOUT):
                await self._pong.wait()
            if not self._pong.is_set():
                raise _SessionLost("a self-ping through pub/sub went unanswered")


def _wall_clock() -> float:
    return time.time()


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
        return f"{type(error).__name__}: {error}"
    return "unknown error"


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error
