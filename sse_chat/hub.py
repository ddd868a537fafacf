"""Local fan-out: each room's subscribers on this replica, each with a bounded buffer.

Publishing never waits: a subscriber whose buffer is full is cut off (it ends, and so does its
stream), so one slow client cannot slow the others. It reconnects and resumes from history.
A subscriber attached to its client's socket (`Subscriber.attach`) is written to right in the
publishing loop; the others queue messages for their stream's task.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

from . import sse
from .direct import SocketWriter, chunk, message_chunk

if TYPE_CHECKING:
    from .cursor import Cursor
from .ids import MessageId
from .messages import Message
from .metrics import Metrics
from .presence import Presence


class SubscriptionEnded(Exception):
    """The subscriber was closed (replica draining) or cut off (it fell behind)."""

    def __init__(self, overflowed: bool) -> None:
        super().__init__("subscriber fell behind" if overflowed else "subscription closed")
        self.overflowed = overflowed


class Subscriber:
    """One client's view of a room: messages wait here until its stream takes them.

    Lean on purpose (a replica holds thousands, mostly idle): the queue and the parking lot
    are made only for a stream whose task waits on them.
    """

    __slots__ = ("_lot", "_notice", "_pending", "_pending_bytes", "_presence", "_writer", "after",
                 "closed", "cursor", "limit", "oldest_queued_at", "overflowed", "room")  # fmt: skip

    def __init__(
        self,
        room: str,
        limit: int,
        cursor: Cursor | None = None,
        lot: trio.lowlevel.ParkingLot | None = None,
    ) -> None:
        self.room = room
        self.limit = limit  # bytes queued before the subscriber is cut off
        self.closed = False
        self.overflowed = False
        self._pending: deque[Message] | None = None
        self._pending_bytes = 0
        self._presence: Presence | None = None  # only the latest view matters
        self._notice: bytes | None = None  # a `gap` frame waiting to go before the messages
        self.oldest_queued_at = 0.0  # trio clock: when the oldest waiting message arrived
        # Shared by the subscribers of one stream of several rooms, which wait together.
        self._lot = lot
        self._writer: SocketWriter | None = None
        # A stream of several rooms frames messages with its cursor as their ids.
        self.cursor = cursor
        # The newest id the client already has: live copies up to it are skipped.
        self.after: MessageId | None = None

    @property
    def writer(self) -> SocketWriter | None:
        """The socket writer this subscriber writes to, once attached."""
        return self._writer

    def attach(self, writer: SocketWriter) -> None:
        """Write to `writer` from now on: what is queued first, then each message pushed."""
        if self.closed:
            return
        self._writer = writer
        notice = self.take_notice()
        if notice is not None:
            self.write(chunk(notice))
        queued, self._pending, self._pending_bytes = self._pending or (), None, 0
        for message in queued:
            self.push(message)
        presence = self.take_presence()
        if presence is not None:
            self.write(chunk(sse.presence_frame(presence)))

    def write(self, data: bytes) -> bool:
        """Write to the attached socket; a writer that fails or is full ends the subscriber."""
        writer = self._writer
        assert writer is not None
        if writer.write(data):
            return True
        self.overflowed = writer.full
        self.close()
        return False

    def push(self, message: Message) -> bool:
        """Hand over a message without waiting; overflowing the buffer cuts the subscriber off.

        True when the message was written to the client's socket (an attached subscriber).
        """
        if self.closed:
            return False
        after = self.after
        if after is not None:
            if message.id <= after:
                return False
            if self._writer is not None:
                self.after = None  # ids only grow from here
        if self._writer is not None:
            cursor = self.cursor
            return self.write(message_chunk(message) if cursor is None else cursor.chunk([message]))
        size = len(message.json) + 64  # about its frame's size
        if self._pending_bytes + size > self.limit:
            self.overflowed = True
            self.close()
            return False
        if self._pending is None:
            self._pending = deque()
        if not self._pending:
            self.oldest_queued_at = trio.current_time()
        self._pending.append(message)
        self._pending_bytes += size
        self._wake()
        return False

    def push_many(self, messages: list[Message], data: bytes) -> int:
        """`push` each of `messages` (one room's, in order); `data` is their frames as one
        chunk, which an attached subscriber writes at once. Returns how many were written."""
        if self.closed:
            return 0
        if self._writer is not None and self.after is None:
            if self.cursor is not None:
                data = self.cursor.chunk(messages)
            return len(messages) if self.write(data) else 0
        return sum(self.push(message) for message in messages)

    def push_presence(self, presence: Presence, frame: bytes | None = None) -> None:
        """Replace the waiting presence view (views coalesce: no buffer to overflow).

        `frame` is the view's chunk, when the caller has it (an attached subscriber writes it).
        """
        if self.closed:
            return
        if self._writer is not None:
            self.write(frame or chunk(sse.presence_frame(presence)))
            return
        self._presence = presence
        self._wake()

    def push_notice(self, frame: bytes) -> None:
        """An event in the stream's order (a `gap`): written to an attached socket, or queued
        to go before the messages queued after it."""
        if self.closed:
            return
        if self._writer is not None:
            self.write(chunk(frame))
            return
        self._notice = (self._notice or b"") + frame
        self._wake()

    def take_notice(self) -> bytes | None:
        """The events queued by `push_notice` since the last call, if any."""
        notice, self._notice = self._notice, None
        return notice

    def take_presence(self) -> Presence | None:
        """The presence view waiting since the last call, if any."""
        presence, self._presence = self._presence, None
        return presence

    def close(self) -> None:
        """End the subscription; a waiting `receive_batch` raises SubscriptionEnded."""
        if self.closed:
            return
        self.closed = True
        self._pending, self._pending_bytes = None, 0
        self._presence = self._notice = None
        self._wake()
        if self._writer is not None:
            self._writer.wake()

    def _wake(self) -> None:
        if self._lot is not None:
            self._lot.unpark_all()

    @property
    def waiting(self) -> bool:
        """Messages or a presence view wait to be taken, or the subscription ended."""
        return (
            bool(self._pending)
            or self._presence is not None
            or self._notice is not None
            or self.closed
        )

    async def receive_batch(self) -> list[Message]:
        """Wait for messages (or a presence view) and take all messages waiting, oldest first.

        Messages up to `after` are skipped (the client has them from its replay).
        """
        if self.waiting:
            await trio.lowlevel.checkpoint()
        while not self.waiting:
            await self.park()
        return self.take_batch()

    async def park(self) -> None:
        """Until something is pushed to this subscriber (or to one sharing its lot)."""
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()

    def take_batch(self) -> list[Message]:
        """The messages waiting now, oldest first (SubscriptionEnded once closed and empty)."""
        if self.closed and not self._pending:
            raise SubscriptionEnded(self.overflowed)
        batch = list(self._pending or ())
        self._pending, self._pending_bytes = None, 0
        after = self.after
        if after is not None:
            batch = [message for message in batch if message.id > after]
        if batch:
            self.after = batch[-1].id
        return batch


class Hub:
    """room -> subscribers on this replica."""

    def __init__(self, limit: int, metrics: Metrics | None = None) -> None:
        self._limit = limit
        self._rooms: dict[str, set[Subscriber]] = {}
        self._metrics = metrics or Metrics()
        self.closed = False

    def subscriber(
        self,
        room: str,
        cursor: Cursor | None = None,
        lot: trio.lowlevel.ParkingLot | None = None,
    ) -> Subscriber:
        """A new subscriber of `room` with this hub's buffer limit (not yet added)."""
        return Subscriber(room, self._limit, cursor, lot)

    def add(self, subscriber: Subscriber) -> None:
        """Deliver the room's messages to `subscriber` until `remove` (closed at once if the
        hub is closed)."""
        if self.closed:
            subscriber.close()
        self._rooms.setdefault(subscriber.room, set()).add(subscriber)

    def remove(self, subscriber: Subscriber) -> bool:
        """Stop delivering to `subscriber`; True when its room has no subscriber left."""
        subscribers = self._rooms.get(subscriber.room)
        if subscribers is None:
            return False
        subscribers.discard(subscriber)
        if subscribers:
            return False
        del self._rooms[subscriber.room]
        return True

    @contextmanager
    def subscribe(self, room: str) -> Iterator[Subscriber]:
        """A subscriber of `room` for the duration of the block."""
        subscriber = self.subscriber(room)
        self.add(subscriber)
        try:
            yield subscriber
        finally:
            self.remove(subscriber)

    def publish(self, message: Message) -> None:
        """Hand a message to every subscriber of its room, without waiting."""
        self._fan_out(message.room, [message])

    def publish_batch(self, messages: list[Message]) -> None:
        """`publish` each message; an attached subscriber gets its room's in one write."""
        rooms: dict[str, list[Message]] = {}
        for message in messages:
            rooms.setdefault(message.room, []).append(message)
        for room, batch in rooms.items():
            self._fan_out(room, batch)

    def _fan_out(self, room: str, batch: list[Message]) -> None:
        """The replica's hot path: one room's new messages to its thousands of streams.

        Attached subscribers get them written to their sockets right here, as one chunk.
        """
        subscribers = self._rooms.get(room)
        if not subscribers:
            return
        started = time.perf_counter()
        if len(batch) == 1:
            data = message_chunk(batch[0])
        else:
            data = chunk(b"".join(sse.message_frame(message) for message in batch))
        written = 0
        for subscriber in tuple(subscribers):
            written += subscriber.push_many(batch, data)
        if written:
            self._metrics.messages_delivered.inc(written)
            self._metrics.fanout_seconds.observe(time.perf_counter() - started)

    def publish_presence(self, presence: Presence) -> None:
        """Hand a presence view to every subscriber of its room."""
        subscribers = self._rooms.get(presence.room)
        if not subscribers:
            return
        frame = chunk(sse.presence_frame(presence))
        for subscriber in tuple(subscribers):
            subscriber.push_presence(presence, frame)

    def publish_gap(self, room: str, after: MessageId, oldest: MessageId | None) -> None:
        """Tell the room's subscribers that messages after `after` were lost to trimming."""
        frame = sse.gap_frame(room, after, oldest)
        for subscriber in tuple(self._rooms.get(room, ())):
            subscriber.push_notice(frame)

    def has_subscribers(self, room: str) -> bool:
        """True while at least one local client follows `room`."""
        return room in self._rooms

    def rooms(self) -> list[str]:
        """Rooms that have local subscribers."""
        return list(self._rooms)

    def subscriber_count(self) -> int:
        """Open subscriptions on this replica."""
        return sum(len(subscribers) for subscribers in self._rooms.values())

    def close(self) -> None:
        """End every subscription and refuse new ones (the replica is draining)."""
        self.closed = True
        for subscribers in self._rooms.values():
            for subscriber in subscribers:
                subscriber.close()
