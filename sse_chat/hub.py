"""Local fan-out: each room's subscribers on this replica, each with a bounded buffer.

Publishing never waits: a subscriber whose buffer is full is cut off (it ends, and so does its
stream), so one slow client cannot slow the others. It reconnects and resumes from history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from .messages import Message
from .presence import Presence


class SubscriptionEnded(Exception):
    """The subscriber was closed (replica draining) or cut off (it fell behind)."""

    def __init__(self, overflowed: bool) -> None:
        super().__init__("subscriber fell behind" if overflowed else "subscription closed")
        self.overflowed = overflowed


class Subscriber:
    """One client's view of a room: messages wait here until its stream takes them."""

    __slots__ = (
        "_capacity",
        "_lot",
        "_pending",
        "_presence",
        "closed",
        "oldest_queued_at",
        "overflowed",
        "room",
    )

    def __init__(self, room: str, capacity: int) -> None:
        self.room = room
        self.closed = False
        self.overflowed = False
        self._capacity = capacity
        self._pending: deque[Message] = deque()
        self._presence: Presence | None = None  # only the latest view matters
        self.oldest_queued_at = 0.0  # trio clock: when the oldest waiting message arrived
        self._lot = trio.lowlevel.ParkingLot()

    def push(self, message: Message) -> None:
        """Queue a message without waiting; overflowing the buffer cuts the subscriber off."""
        if self.closed:
            return
        if len(self._pending) >= self._capacity:
            self.overflowed = True
            self.close()
            return
        if not self._pending:
            self.oldest_queued_at = trio.current_time()
        self._pending.append(message)
        self._lot.unpark_all()

    def push_presence(self, presence: Presence) -> None:
        """Replace the waiting presence view (views coalesce: no buffer to overflow)."""
        if not self.closed:
            self._presence = presence
            self._lot.unpark_all()

    def take_presence(self) -> Presence | None:
        """The presence view waiting since the last call, if any."""
        presence, self._presence = self._presence, None
        return presence

    def close(self) -> None:
        """End the subscription; a waiting `receive_batch` raises SubscriptionEnded."""
        self.closed = True
        self._pending.clear()
        self._presence = None
        self._lot.unpark_all()

    async def receive_batch(self) -> list[Message]:
        """Wait for messages (or a presence view) and take all messages waiting, oldest first."""
        while not self._pending and self._presence is None:
            if self.closed:
                raise SubscriptionEnded(self.overflowed)
            await self._lot.park()
        batch = list(self._pending)
        self._pending.clear()
        return batch


class Hub:
    """room -> subscribers on this replica."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._rooms: dict[str, set[Subscriber]] = {}
        self.closed = False

    @contextmanager
    def subscribe(self, room: str) -> Iterator[Subscriber]:
        """Register a subscriber for the duration of the block."""
        subscriber = Subscriber(room, self._capacity)
        if self.closed:
            subscriber.close()
        self._rooms.setdefault(room, set()).add(subscriber)
        try:
            yield subscriber
        finally:
            subscribers = self._rooms[room]
            subscribers.discard(subscriber)
            if not subscribers:
                del self._rooms[room]

    def publish(self, message: Message) -> None:
        """Hand a message to every subscriber of its room, without waiting."""
        for subscriber in tuple(self._rooms.get(message.room, ())):
            subscriber.push(message)

    def publish_presence(self, presence: Presence) -> None:
        """Hand a presence view to every subscriber of its room."""
        for subscriber in tuple(self._rooms.get(presence.room, ())):
            subscriber.push_presence(presence)

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
