"""The backplane interface: where messages are stored and how they reach every replica."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import trio

from ..hub import Hub, Subscriber
from ..ids import MessageId
from ..messages import Draft, Message
from ..presence import Presence


class BackplaneUnavailable(Exception):
    """The message cannot be stored and forwarded right now (nothing was stored)."""


class OutcomeUnknown(BackplaneUnavailable):
    """The store did not answer in time: the message may be stored and delivered, or not.
    Retry only with the same idempotency key."""


class IdempotencyConflict(Exception):
    """The idempotency key was used for another message (another user or text)."""


def fingerprint(draft: Draft) -> str:
    """What an idempotency key is bound to: the message's room, user and text."""
    digest = hashlib.sha256(f"{draft.room}\0{draft.user}\0{draft.text}".encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Replay:
    """The retained messages after an id, oldest first."""

    messages: list[Message]
    # True when messages after the requested id were trimmed from history before `oldest`.
    gap: bool
    oldest: MessageId | None


class Backplane(Protocol):
    """Stores each room's messages in order and delivers new ones to every replica's hub."""

    @property
    def reconnects(self) -> int:
        """Times the connection was lost after being up."""
        ...

    @property
    def connected(self) -> bool:
        """True while messages can be stored and forwarded."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Do the background work (connections, subscriptions) until cancelled."""
        ...

    async def append(self, draft: Draft, idempotency_key: str | None = None) -> Message:
        """Give the draft its id, store it and publish it, as one step; or raise Unavailable.

        With an `idempotency_key` seen before in the room (within the replica's idempotency
        window), nothing is stored: the message stored then is returned, or
        IdempotencyConflict raised if it was another one. Check and append are one step."""
        ...

    async def recent(self, room: str, limit: int) -> list[Message]:
        """The last `limit` retained messages of a room, oldest first."""
        ...

    async def since(self, room: str, after: MessageId) -> Replay:
        """Every retained message of a room with an id greater than `after`."""
        ...

    async def follow(self, room: str) -> None:
        """Deliver the room's new messages to the hub; called right after a subscriber of the
        room joined the hub. Returns at once while disconnected (the next session follows
        every room the hub has subscribers for); never raises BackplaneUnavailable."""
        ...

    def unfollow(self, room: str) -> None:
        """Stop delivering the room (its last local subscriber left the hub); never waits."""
        ...

    def unreachable(self) -> list[str]:
        """Parts of the store this replica cannot reach while `connected` (Redis Cluster
        shards, by address): their rooms wait, the others work."""
        ...

    async def wait_connected(self) -> None:
        """Return once `connected` is True (at once if it is)."""
        ...

    def last_forwarded(self, room: str) -> MessageId | None:
        """The newest id of `room` this replica handed to its hub, if any is known."""
        ...

    async def count_hit(self, key: str, ttl_seconds: int) -> int:
        """Add one to a counter shared by every replica, kept `ttl_seconds`; its new value."""
        ...

    def mark_present(self, room: str, user: str) -> None:
        """Count one more stream of `user` in `room` (never waits; works while disconnected)."""
        ...

    def mark_absent(self, room: str, user: str) -> None:
        """Count one stream of `user` in `room` less (never waits; works while disconnected)."""
        ...

    async def settle(self) -> None:
        """Before stopping: until what this replica changed (who left) reached every replica."""
        ...

    async def presence(self, room: str) -> Presence:
        """Who is online in `room`, on every replica."""
        ...


@asynccontextmanager
async def subscribed(backplane: Backplane, hub: Hub, room: str) -> AsyncIterator[Subscriber]:
    """A subscriber of `room` that receives its new messages for the duration of the block."""
    subscriber = hub.subscriber(room)
    hub.add(subscriber)
    try:
        await backplane.follow(room)
        yield subscriber
    finally:
        if hub.remove(subscriber):
            backplane.unfollow(room)
