"""A client's event stream: subscribe, replay what it missed, then follow live, once each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, nullcontext

import trio

from . import sse
from .backplane import Backplane, BackplaneUnavailable
from .direct import KEEPALIVE_CHUNK, SocketWriter, chunk
from .hub import Subscriber, SubscriptionEnded
from .ids import MessageId
from .metrics import Metrics


def _present(backplane: Backplane, room: str, user: str | None) -> AbstractContextManager[None]:
    return backplane.present(room, user) if user else nullcontext()


async def event_stream(
    backplane: Backplane,
    room: str,
    after: MessageId | None,
    *,
    user: str | None = None,
    replica: str,
    retry_ms: int,
    keepalive_seconds: float,
    drain_retry_ms: int = 250,
    metrics: Metrics | None = None,
    hold: AbstractContextManager[None] | None = None,
    socket: trio.socket.SocketType | None = None,
    capacity: int = 256,
) -> AsyncIterator[bytes]:
    """The bytes of one SSE response, until the subscription ends.

    With the client's `socket` (an HTTP/1.1 connection), only the first frames go through the
    server; after them the stream is written straight to the socket (see `direct`), and the
    generator returns when the stream ends. Without it every frame is yielded.
    """
    # Subscribe before reading history: a message stored meanwhile is then both replayed and
    # queued live, and the id check below drops the second copy. The other order loses it.
    # If the backplane fails, the stream just ends: the client reconnects and resumes.
    metrics = metrics or Metrics()
    hold = hold or nullcontext()
    try:
        async with backplane.subscribe(room) as subscriber:
            with hold, _present(backplane, room, user), metrics.streams_open.track_inprogress():
                subscriber.take_presence()  # the snapshot below is newer
                snapshot = await backplane.presence(room)
                frames = [sse.opening_frame(retry_ms, replica, room), sse.presence_frame(snapshot)]
                last = after
                if after is not None:
                    replay = await backplane.since(room, after)
                    if replay.gap:
                        frames.append(sse.gap_frame(after, replay.oldest))
                    frames += [sse.message_frame(message) for message in replay.messages]
                    if replay.messages:
                        last = replay.messages[-1].id
                    metrics.messages_delivered.inc(len(replay.messages))
                yield b"".join(frames)  # this sends the headers too
                if socket is not None:
                    writer = SocketWriter(socket, capacity)
                    subscriber.attach(writer, last)
                    await _follow_directly(subscriber, writer, keepalive_seconds)
                    if subscriber.overflowed:
                        metrics.slow_clients_cut.inc()
                    elif writer.ok:  # closed, not cut off: reconnect soon (to another replica)
                        writer.write(chunk(sse.retry_frame(drain_retry_ms)))
                        await writer.flush()
                    return
                draining = False
                while True:
                    batch = None
                    with trio.move_on_after(keepalive_seconds):
                        try:
                            batch = await subscriber.receive_batch()
                        except SubscriptionEnded as ended:
                            draining = not ended.overflowed
                            if ended.overflowed:
                                metrics.slow_clients_cut.inc()
                            break
                    if batch is None:
                        yield sse.KEEPALIVE_FRAME
                        continue
                    if last is not None:
                        batch = [message for message in batch if message.id > last]
                    if batch:
                        last = batch[-1].id
                        metrics.messages_delivered.inc(len(batch))
                        waited = trio.current_time() - subscriber.oldest_queued_at
                        metrics.fanout_seconds.observe(waited)
                    frames = [sse.message_frame(message) for message in batch]
                    presence = subscriber.take_presence()
                    if presence is not None:
                        frames.append(sse.presence_frame(presence))
                    if frames:
                        yield b"".join(frames)
                if draining:  # closed, not cut off: reconnect soon (to another replica)
                    yield sse.retry_frame(drain_retry_ms)
    except BackplaneUnavailable:
        return


async def _follow_directly(
    subscriber: Subscriber, writer: SocketWriter, keepalive_seconds: float
) -> None:
    """Keep an attached stream going until it ends: flush what the socket could not take at
    once, and send a keepalive after each quiet interval."""
    while not subscriber.closed:
        with trio.move_on_after(keepalive_seconds) as quiet:
            await writer.wait_for_work()
        if quiet.cancelled_caught:
            subscriber.write(KEEPALIVE_CHUNK)
        if not await writer.flush():
            subscriber.close()
