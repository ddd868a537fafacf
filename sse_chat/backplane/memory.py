"""The embedded backplane: one process, history in memory, no external service."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import trio

from ..hub import Hub
from ..ids import ZERO_ID, MessageId
from ..messages import Draft, Message
from ..presence import LocalPresence, Presence
from .base import IdempotencyConflict, Replay, fingerprint


class _RoomLog:
    """A room's bounded history and the last id it handed out."""

    __slots__ = ("last_id", "messages", "trimmed_id")

    def __init__(self, size: int) -> None:
        self.messages: deque[Message] = deque(maxlen=size)
        self.last_id = ZERO_ID
        # The newest id dropped from history, if any: a resume from before it has a gap.
        self.trimmed_id: MessageId | None = None


class MemoryBackplane:
    """Stores and publishes within this process; every call completes without waiting."""

    def __init__(
        self,
        hub: Hub,
        replica: str,
        history_size: int,
        clock: Callable[[], float] = time.time,
        idempotency_seconds: float = 86400,
    ) -> None:
        self._hub = hub
        self._idempotency_seconds = idempotency_seconds
        # (room, key) -> (fingerprint, message, expires at)
        self._keys: dict[tuple[str, str], tuple[str, Message, float]] = {}
        self._replica = replica
        self._history_size = history_size
        self._clock = clock
        self._rooms: dict[str, _RoomLog] = {}
        self._present = LocalPresence()
        self.reconnects = 0  # nothing to lose: one process
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (count, expires at)

    @property
    def connected(self) -> bool:
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def append(self, draft: Draft, idempotency_key: str | None = None) -> Message:
        now = self._clock()
        if idempotency_key is not None:
            if len(self._keys) > 100_000:  # forget expired keys before they pile up
                self._keys = {k: v for k, v in self._keys.items() if v[2] > now}
            seen = self._keys.get((draft.room, idempotency_key))
            if seen is not None and seen[2] > now:
                if seen[0] != fingerprint(draft):
                    raise IdempotencyConflict(idempotency_key)
                return seen[1]
        log = self._rooms.get(draft.room)
        if log is None:
            log = self._rooms[draft.room] = _RoomLog(self._history_size)
        log.last_id = log.last_id.successor(int(now * 1000))
        message = Message.from_draft(
            draft, log.last_id, self._replica, datetime.fromtimestamp(now, UTC)
        )
        if len(log.messages) == log.messages.maxlen:
            log.trimmed_id = log.messages[0].id
        log.messages.append(message)
        if idempotency_key is not None:
            expires = now + self._idempotency_seconds
            self._keys[(draft.room, idempotency_key)] = (fingerprint(draft), message, expires)
        self._hub.publish(message)
        return message

    async def recent(self, room: str, limit: int) -> list[Message]:
        log = self._rooms.get(room)
        if log is None or limit <= 0:
            return []
        return list(log.messages)[-limit:]

    async def since(self, room: str, after: MessageId) -> Replay:
        log = self._rooms.get(room)
        if log is None:
            return Replay([], gap=False, oldest=None)
        newer: list[Message] = []
        for message in reversed(log.messages):
            if message.id <= after:
                break
            newer.append(message)
        newer.reverse()
        oldest = log.messages[0].id if log.messages else None
        gap = log.trimmed_id is not None and after < log.trimmed_id
        return Replay(newer, gap=gap, oldest=oldest)

    async def follow(self, room: str) -> None:
        pass  # every message of this process reaches the hub already

    def unfollow(self, room: str) -> None:
        pass

    async def wait_connected(self) -> None:
        await trio.lowlevel.checkpoint()

    def unreachable(self) -> list[str]:
        return []

    def last_forwarded(self, room: str) -> MessageId | None:
        log = self._rooms.get(room)
        return log.last_id if log is not None else None

    async def count_hit(self, key: str, ttl_seconds: int) -> int:
        now = self._clock()
        if len(self._counters) > 10_000:  # forget expired counters before they pile up
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        count, expires = self._counters.get(key, (0, 0.0))
        if expires <= now:
            count, expires = 0, now + ttl_seconds
        self._counters[key] = (count + 1, expires)
        return count + 1

    def mark_present(self, room: str, user: str) -> None:
        if self._present.join(room, user):
            self._hub.publish_presence(self._view(room, joined=user))

    def mark_absent(self, room: str, user: str) -> None:
        if self._present.leave(room, user):
            self._hub.publish_presence(self._view(room, left=user))

    async def settle(self) -> None:
        await trio.lowlevel.checkpoint()  # nothing is ever left to write

    async def presence(self, room: str) -> Presence:
        return self._view(room)

    def _view(self, room: str, joined: str | None = None, left: str | None = None) -> Presence:
        return Presence(room, tuple(sorted(self._present.users(room))), joined, left)
