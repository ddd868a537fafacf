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
from .direct import KEEPALIVE_CHUNK, SocketWriter, TaskWatcher, chunk
from .hub import Subscriber, SubscriptionEnded
from .stream_request import StreamRequest

if TYPE_CHECKING:
    from .replica import Replica

MIN_REFUSAL_RETRY_MS = 1000  # a refused client waits at least this long before it comes back


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
    """An admitted stream: its slot, its subscriber and its presence, released once."""

    __slots__ = ("replica", "request", "subscriber", "writer")

    def __init__(self, replica: Replica, request: StreamRequest) -> None:
        self.replica = replica
        self.request = request
        self.subscriber = subscriber = replica.hub.subscriber(request.room)
        self.writer: SocketWriter | None = None  # set once frames go straight to the socket
        replica.hub.add(subscriber)
        if request.user:
            replica.backplane.mark_present(request.room, request.user)
        replica.metrics.streams_open.inc()

    @property
    def deadline(self) -> float | None:
        """When (trio clock) the stream must end because its token expires, if it has one."""
        expires = self.request.expires
        return None if expires is None else trio.current_time() + (expires - time.time())

    def release(self) -> None:
        """Give back the slot, the subscription and the presence (at most once)."""
        subscriber = self.subscriber
        if subscriber.room == "":
            return
        replica, request = self.replica, self.request
        subscriber.close()
        if replica.hub.remove(subscriber):
            replica.backplane.unfollow(request.room)
        if request.user:
            replica.backplane.mark_absent(request.room, request.user)
        replica.stream_slots.give_back(request.client)
        replica.metrics.streams_open.dec()
        subscriber.room = ""  # released


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
    """Presence and what the client missed since its Last-Event-ID; sets what it has."""
    backplane, subscriber = stream.replica.backplane, stream.subscriber
    room, after = stream.request.room, stream.request.after
    subscriber.take_presence()  # the snapshot below is newer
    frames = [sse.presence_frame(await backplane.presence(room))]
    if after is not None:
        replay = await backplane.since(room, after)
        if replay.gap:
            frames.append(sse.gap_frame(after, replay.oldest))
        frames += [sse.message_frame(message) for message in replay.messages]
        subscriber.after = replay.messages[-1].id if replay.messages else after
        stream.replica.metrics.messages_delivered.inc(len(replay.messages))
    return b"".join(frames)


async def opening(stream: OpenStream) -> AsyncIterator[bytes]:
    """The stream's frames until it is live: `retry:` and `ready`, presence, the replay.

    The subscriber joined the hub already, so a message stored meanwhile is both replayed and
    queued live; `subscriber.after` makes the second copy be skipped. While the backplane is
    away the stream says `"live": false` and waits with keepalives; a client resuming from an
    id then gets its replay when the backplane is back, and a fresh one the messages this
    replica forwards from then on (its backplane backfills what it missed itself).
    """
    replica = stream.replica
    backplane, settings, room = replica.backplane, replica.settings, stream.request.room
    await backplane.follow(room)
    first = True
    while not stream.subscriber.closed:
        caught_up = None
        if backplane.connected:
            with contextlib.suppress(BackplaneUnavailable):
                caught_up = await _catch_up(stream)
        ready = b""
        if first:
            live = caught_up is not None
            ready = sse.opening_frame(settings.retry_ms, settings.replica_id, room, live=live)
            first = False
        if caught_up is not None:
            yield ready + caught_up
            return
        yield ready or sse.KEEPALIVE_FRAME
        if stream.request.after is None:
            return
        with trio.move_on_after(settings.keepalive_seconds):
            await backplane.wait_connected()


async def event_stream(
    stream: OpenStream, socket: trio.socket.SocketType | None
) -> AsyncIterator[bytes]:
    """The bytes of one SSE response served by its own task, until the stream ends.

    With the client's `socket` (an HTTP/1.1 connection), only the opening goes through the
    server; after it the stream is written straight to the socket (see `direct`), and the
    generator returns when the stream ends. Without it every frame is yielded.
    """
    replica, subscriber = stream.replica, stream.subscriber
    metrics, settings = replica.metrics, replica.settings
    deadline = stream.deadline or math.inf  # its token's expiry
    try:
        async for frames in opening(stream):
            yield frames  # the first one sends the headers too
        if socket is not None:
            watcher = TaskWatcher()
            stream.writer = writer = SocketWriter(socket, settings.client_buffer_bytes, watcher)
            subscriber.attach(writer)
            with trio.move_on_at(deadline) as expiry:
                await _follow_directly(subscriber, writer, watcher, settings.keepalive_seconds)
            if subscriber.overflowed:
                metrics.slow_clients_cut.inc()
            elif writer.ok:  # closed, not cut off: reconnect soon (to another replica)
                ending = expired_frame(replica) if expiry.cancelled_caught else drain_frame(replica)
                writer.write(chunk(ending))
                await writer.flush()
            return
        while True:
            batch = None
            with trio.move_on_at(min(deadline, trio.current_time() + settings.keepalive_seconds)):
                try:
                    batch = await subscriber.receive_batch()
                except SubscriptionEnded as ended:
                    if ended.overflowed:
                        metrics.slow_clients_cut.inc()
                        return
                    break
            if batch is None:
                if trio.current_time() >= deadline:
                    yield expired_frame(replica)
                    return
                yield sse.KEEPALIVE_FRAME
                continue
            if batch:
                metrics.messages_delivered.inc(len(batch))
                metrics.fanout_seconds.observe(trio.current_time() - subscriber.oldest_queued_at)
            parts = [sse.message_frame(message) for message in batch]
            presence = subscriber.take_presence()
            if presence is not None:
                parts.append(sse.presence_frame(presence))
            if parts:
                yield b"".join(parts)
        yield drain_frame(replica)  # closed, not cut off: reconnect soon (to another replica)
    finally:
        stream.release()


async def _follow_directly(
    subscriber: Subscriber, writer: SocketWriter, watcher: TaskWatcher, keepalive_seconds: float
) -> None:
    """Keep an attached stream going until it ends: flush what the socket could not take at
    once, and send a keepalive after each quiet interval."""
    while not subscriber.closed:
        with trio.move_on_after(keepalive_seconds) as quiet:
            if not writer.pending:
                await watcher.wait()
        if quiet.cancelled_caught:
            subscriber.write(KEEPALIVE_CHUNK)
        if not await writer.flush():
            subscriber.close()
