"""A client's event stream: admit it, replay what it missed, then follow live, once each.

Both ways of serving a stream go through here: `admit` (caps and draining, as one step),
`opening` (the first frames, waiting for the backplane if it is away) and `OpenStream.release`.
The Quart route runs `event_stream`; the connection intake hands an opened stream to the
replica's keeper, which holds it without a task of its own (`keeper`).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import trio

from . import sse
from .backplane import BackplaneUnavailable
from .cursor import Cursor
from .direct import KEEPALIVE_CHUNK, SocketWriter, TaskWatcher, chunk
from .hub import Subscriber, SubscriptionEnded
from .messages import Message
from .stream_request import StreamRequest

if TYPE_CHECKING:
    from .replica import Replica

MIN_REFUSAL_RETRY_MS = 1000  # a refused client waits at least this long before it comes back
CATCH_UP_RETRY_SECONDS = 1.0  # a resume whose catch-up failed while connected tries again


def jittered(retry_ms: int) -> int:
    """A reconnection delay drawn uniformly from [retry_ms, 4 x retry_ms], so that clients
    sent away together do not all come back in the same instant."""
    return random.randint(retry_ms, 4 * retry_ms)


def drain_frame(replica: Replica) -> bytes:
    """What a draining replica sends before it ends a stream: come back soon, elsewhere."""
    return sse.unavailable_frame(
        "draining",
        "this replica is shutting down; reconnect to another",
        jittered(replica.settings.drain_retry_ms),
    )


def expired_frame(replica: Replica) -> bytes:
    """What a stream sends when its token expires: reconnect with a new token."""
    return sse.unavailable_frame(
        "token_expired",
        "the token has expired; reconnect with a new one",
        replica.settings.retry_ms,
    )


class OpenStream:
    """An admitted stream: its slot, its subscribers (one per room) and presence, released once.

    A stream of several rooms has a subscriber per room, all writing to the same socket and
    framing messages with the stream's cursor (`cursor`), and all waking one parking lot.
    """

    __slots__ = ("cursor", "released", "replica", "request", "subscribers", "writer")

    def __init__(self, replica: Replica, request: StreamRequest) -> None:
        self.replica = replica
        self.request = request
        self.released = False
        self.cursor = Cursor(request.after) if request.multi else None
        lot = trio.lowlevel.ParkingLot() if request.multi else None
        hub = replica.hub
        self.subscribers = tuple(hub.subscriber(room, self.cursor, lot) for room in request.rooms)
        self.writer: SocketWriter | None = None  # set once frames go straight to the socket
        for subscriber in self.subscribers:
            hub.add(subscriber)
            if request.user:
                replica.backplane.mark_present(subscriber.room, request.user)
        replica.metrics.streams_open.inc()

    @property
    def subscriber(self) -> Subscriber:
        """The first room's subscriber (a keepalive written through it reaches the socket)."""
        return self.subscribers[0]

    @property
    def closed(self) -> bool:
        """A subscription of the stream ended (draining, or its client fell behind)."""
        return any(subscriber.closed for subscriber in self.subscribers)

    @property
    def overflowed(self) -> bool:
        """Its client fell behind and was cut off."""
        return any(subscriber.overflowed for subscriber in self.subscribers)

    @property
    def deadline(self) -> float | None:
        """When (trio clock) the stream must end because its token expires, if it has one."""
        expires = self.request.expires
        return None if expires is None else trio.current_time() + (expires - time.time())

    def attach(self, writer: SocketWriter) -> None:
        """Write every room's messages straight to `writer` from now on."""
        self.writer = writer
        for subscriber in self.subscribers:
            subscriber.attach(writer)

    def close(self) -> None:
        """End every subscription of the stream."""
        for subscriber in self.subscribers:
            subscriber.close()

    def frame(self, message: Message) -> bytes:
        """A message's frame on this stream: its id, or the stream's cursor after it."""
        return sse.message_frame(message) if self.cursor is None else self.cursor.frame(message)

    def release(self) -> None:
        """Give back the slot, the subscriptions and the presence (at most once)."""
        if self.released:
            return
        self.released = True
        replica, request = self.replica, self.request
        for subscriber in self.subscribers:
            subscriber.close()
            if replica.hub.remove(subscriber):
                replica.backplane.unfollow(subscriber.room)
            if request.user:
                replica.backplane.mark_absent(subscriber.room, request.user)
        replica.stream_slots.give_back(request.client)
        replica.metrics.streams_open.dec()


def admit(replica: Replica, request: StreamRequest) -> OpenStream | bytes:
    """Take a slot for the stream, or say why not as the frames of a 200 stream that ends:
    an `unavailable` event and a jittered `retry:` (an EventSource stops for good on a 503)."""
    if replica.draining:
        replica.metrics.streams_refused.labels("draining").inc()
        return drain_frame(replica)
    refused = replica.stream_slots.take(request.client)
    if refused is None:
        return OpenStream(replica, request)
    replica.metrics.streams_refused.labels(refused).inc()
    slots = replica.stream_slots
    message = (
        f"this replica holds all the {slots.per_replica} streams it can; try again"
        if refused == "replica_full"
        else f"at most {slots.per_client} open streams per client; try again later"
    )
    return sse.unavailable_frame(refused, message, jittered(MIN_REFUSAL_RETRY_MS))


async def _catch_up(stream: OpenStream) -> bytes:
    """Presence and what the client missed in each room; sets what it has."""
    backplane, metrics = stream.replica.backplane, stream.replica.metrics
    frames = []
    for subscriber in stream.subscribers:
        room, after = subscriber.room, stream.request.after.get(subscriber.room)
        subscriber.take_presence()  # the snapshot below is newer
        frames.append(sse.presence_frame(await backplane.presence(room)))
        if after is None:
            continue
        replay = await backplane.since(room, after)
        if replay.gap:
            frames.append(sse.gap_frame(room, after, replay.oldest))
        frames += [stream.frame(message) for message in replay.messages]
        subscriber.after = replay.messages[-1].id if replay.messages else after
        metrics.messages_delivered.inc(len(replay.messages))
    return b"".join(frames)


async def opening(stream: OpenStream) -> AsyncIterator[bytes]:
    """The stream's frames until it is live: `retry:` and `ready`, presence, the replay.

    The subscribers joined the hub already, so a message stored meanwhile is both replayed and
    queued live; `subscriber.after` makes the second copy be skipped. While the backplane is
    away the stream says `"live": false` and waits with keepalives; a client resuming from an
    id then gets its replay when the backplane is back, and a fresh one the messages this
    replica forwards from then on (its backplane backfills what it missed itself).
    """
    replica, request = stream.replica, stream.request
    backplane, settings = replica.backplane, replica.settings
    for room in request.rooms:
        await backplane.follow(room)
    first = True
    while not stream.closed:
        caught_up = None
        if backplane.connected:
            with contextlib.suppress(BackplaneUnavailable):
                caught_up = await _catch_up(stream)
        ready = b""
        if first:
            live = caught_up is not None
            rooms = list(request.rooms) if request.multi else None
            ready = sse.opening_frame(
                settings.retry_ms, settings.replica_id, request.room, live=live, rooms=rooms
            )
            first = False
        if caught_up is not None:
            yield ready + caught_up
            return
        yield ready or sse.KEEPALIVE_FRAME
        if not request.after:
            return
        # Connected but the catch-up failed (its room's Redis Cluster shard is down): try again
        # in a moment rather than at once.
        pause = CATCH_UP_RETRY_SECONDS if backplane.connected else settings.keepalive_seconds
        with trio.move_on_after(min(pause, settings.keepalive_seconds)):
            await _until_connected_or_closed(stream, backplane.connected)


async def _until_connected_or_closed(stream: OpenStream, connected: bool = False) -> None:
    """Until the backplane is back (unless it is `connected` already), or the stream is ended
    (a drain must not wait for it)."""
    async with trio.open_nursery() as nursery:

        async def until_connected() -> None:
            await stream.replica.backplane.wait_connected()
            nursery.cancel_scope.cancel()

        if not connected:
            nursery.start_soon(until_connected)
        while not stream.closed:
            await stream.subscriber.park()  # woken by a push or by the close of the drain
        nursery.cancel_scope.cancel()


async def event_stream(
    stream: OpenStream, socket: trio.socket.SocketType | None
) -> AsyncIterator[bytes]:
    """The bytes of one SSE response served by its own task, until the stream ends.

    With the client's `socket` (an HTTP/1.1 connection), only the opening goes through the
    server; after it the stream is written straight to the socket (see `direct`), and the
    generator returns when the stream ends. Without it every frame is yielded.
    """
    replica, metrics, settings = stream.replica, stream.replica.metrics, stream.replica.settings
    deadline = stream.deadline or math.inf  # its token's expiry
    try:
        async for frames in opening(stream):
            yield frames  # the first one sends the headers too
        if socket is not None:
            watcher = TaskWatcher()
            writer = SocketWriter(socket, settings.client_buffer_bytes, watcher)
            stream.attach(writer)
            with trio.move_on_at(deadline) as expiry:
                await _follow_directly(stream, writer, watcher, settings.keepalive_seconds)
            if stream.overflowed:
                metrics.slow_clients_cut.inc()
            elif writer.ok:  # closed, not cut off: reconnect soon (to another replica)
                ending = expired_frame(replica) if expiry.cancelled_caught else drain_frame(replica)
                writer.write(chunk(ending))
                await writer.flush()
            return
        while True:
            with trio.move_on_at(min(deadline, trio.current_time() + settings.keepalive_seconds)):
                await _wait_for_any(stream)
            if not any(subscriber.waiting for subscriber in stream.subscribers):
                if trio.current_time() >= deadline:
                    yield expired_frame(replica)
                    return
                yield sse.KEEPALIVE_FRAME
                continue
            try:
                parts = _take_frames(stream)
            except SubscriptionEnded as ended:
                if ended.overflowed:
                    metrics.slow_clients_cut.inc()
                    return
                break
            if parts:
                yield b"".join(parts)
        yield drain_frame(replica)  # closed, not cut off: reconnect soon (to another replica)
    finally:
        stream.release()


async def _wait_for_any(stream: OpenStream) -> None:
    """Until a subscriber of the stream has something (or ended)."""
    while not any(subscriber.waiting for subscriber in stream.subscribers):
        await stream.subscriber.park()  # a stream of several rooms: their lot is shared


def _take_frames(stream: OpenStream) -> list[bytes]:
    """The frames of what waits in the stream's subscribers, room by room."""
    metrics = stream.replica.metrics
    parts = []
    for subscriber in stream.subscribers:
        notice = subscriber.take_notice()
        if notice is not None:
            parts.append(notice)
        batch = subscriber.take_batch()
        if batch:
            metrics.messages_delivered.inc(len(batch))
            metrics.fanout_seconds.observe(trio.current_time() - subscriber.oldest_queued_at)
        parts += [stream.frame(message) for message in batch]
        presence = subscriber.take_presence()
        if presence is not None:
            parts.append(sse.presence_frame(presence))
    return parts


async def _follow_directly(
    stream: OpenStream, writer: SocketWriter, watcher: TaskWatcher, keepalive_seconds: float
) -> None:
    """Keep an attached stream going until it ends: flush what the socket could not take at
    once, and send a keepalive after each quiet interval."""
    while not stream.closed:
        with trio.move_on_after(keepalive_seconds) as quiet:
            if not writer.pending:
                await watcher.wait()
        if quiet.cancelled_caught:
            stream.subscriber.write(KEEPALIVE_CHUNK)
        if not await writer.flush():
            stream.close()
