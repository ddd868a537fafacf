"""The backplane interface: where messages are stored and how they reach every replica."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import trio

from ..hub import Subscriber
from ..ids import MessageId
from ..messages import Draft, Message
from ..presence import Presence


class BackplaneUnavailable(Exception):
    """The message cannot be stored and forwarded right now (nothing was stored)."""


@dataclass(frozen=True, slots=True)
class Replay:
    """The retained messages after an id, oldest first."""

    messages: list[Message]
    # True when messages after the requested id were trimmed from history before `oldest`.
    gap: bool
    oldest: MessageId | None


class Backplane(Protocol):
    """Stores each room's messages in order and delivers new ones to every replica's hub."""

    reconnects: int  # times the connection was lost after being up

    @property
    def connected(self) -> bool:
        """True while messages can be stored and forwarded."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Do the background work (connections, subscriptions) until cancelled."""
        ...

    async def append(self, draft: Draft) -> Message:
        """Give the draft its id, store it and publish it, as one step; or raise Unavailable."""
        ...

    async def recent(self, room: str, limit: int) -> list[Message]:
        """The last `limit` retained messages of a room, oldest first."""
        ...

    async def since(self, room: str, after: MessageId) -> Replay:
        """Every retained message of a room with an id greater than `after`."""
        ...

    def subscribe(self, room: str) -> AbstractAsyncContextManager[Subscriber]:
        """Receive the room's new messages; live once the block is entered."""
        ...

    async def count_hit(self, key: str, ttl_seconds: int) -> int:
        """Add one to a counter shared by every replica, kept `ttl_seconds`; its new value."""
        ...

    def present(self, room: str, user: str) -> AbstractContextManager[None]:
        """Count `user` online in `room` for the duration of the block (never waits)."""
        ...

    async def presence(self, room: str) -> Presence:
        """Who is online in `room`, on every replica."""
        ...
