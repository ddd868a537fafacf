"""Local fan-out: each room's subscribers on this replica (`subscriber`), published to
without waiting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

from . import sse
from .direct import chunk, message_chunk
from .ids import MessageId
from .messages import Message
from .metrics import Metrics
from .presence import Presence
from .subscriber import Subscriber, SubscriptionEnded

if TYPE_CHECKING:
    from .cursor import Cursor

__all__ = ["Hub", "Subscriber", "SubscriptionEnded"]


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
