"""Who is online in a room (pure: no I/O)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Presence:
    """The users online in a room, and the change that produced this view, if known."""

    room: str
    users: tuple[str, ...]
    joined: str | None = None
    left: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The `event: presence` data and the body of GET /rooms/{room}/presence."""
        data: dict[str, object] = {"room": self.room, "users": list(self.users)}
        if self.joined is not None:
            data["joined"] = self.joined
        if self.left is not None:
            data["left"] = self.left
        return data


class LocalPresence:
    """This replica's open streams per room and user: a user is here while one is open."""

    def __init__(self) -> None:
        self._rooms: dict[str, Counter[str]] = {}

    def join(self, room: str, user: str) -> bool:
        """Count one more stream; True when the user was not here before."""
        streams = self._rooms.setdefault(room, Counter())
        streams[user] += 1
        return streams[user] == 1

    def leave(self, room: str, user: str) -> bool:
        """Count one stream less; True when it was the user's last here."""
        streams = self._rooms[room]
        streams[user] -= 1
        if streams[user] > 0:
            return False
        del streams[user]
        if not streams:
            del self._rooms[room]
        return True

    def users(self, room: str) -> set[str]:
        """The users with an open stream in `room` on this replica."""
        return set(self._rooms.get(room, ()))

    def rooms(self) -> list[str]:
        """Rooms where someone is present on this replica."""
        return list(self._rooms)
