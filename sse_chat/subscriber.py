"""One client's view of a room: where its messages wait, or the socket they are written to.

Publishing never waits: a subscriber whose buffer is full is cut off (it ends, and so does its
stream), so one slow client cannot slow the others. It reconnects and resumes from history.
A subscriber attached to its client's socket (`Subscriber.attach`) is written to right in the
hub's publishing loop; the others queue messages for their stream's task.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

from . import sse
from .direct import SocketWriter, chunk, message_chunk
from .ids import MessageId
from .messages import Message
from .presence import Presence

if TYPE_CHECKING:
    from .cursor import Cursor


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
