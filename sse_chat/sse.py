"""Server-Sent Events framing, both ways (pure: no I/O).

Encoding builds the frames a stream sends; `SSEDecoder` turns received lines back into events,
following the WHATWG event-stream parsing rules, for the CLI client and the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

from .ids import MessageId
from .messages import Message
from .presence import Presence

KEEPALIVE_FRAME = b": keepalive\n\n"


@lru_cache(maxsize=256)
def message_frame(message: Message) -> bytes:
    """`id:`/`event: message`/`data:` for one chat message.

    Cached: a message fanned out to thousands of streams is encoded once, and they all send the
    same bytes. Only recent messages are being fanned out, so the cache stays small.
    """
    return f"id: {message.id}\nevent: message\ndata: {message.json}\n\n".encode()


def event_frame(event: str, data: object) -> bytes:
    """A named event without an id (it leaves the client's last event id alone)."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def opening_frame(
    retry_ms: int, replica: str, room: str, *, live: bool = True, rooms: list[str] | None = None
) -> bytes:
    """What every stream starts with: the reconnection delay and the `ready` event.

    `live` is false while the backplane is unreachable: the stream then waits, and replays
    what the client missed once it is back. A stream of several `rooms` names them all.
    """
    where: dict[str, object] = {"room": room} if rooms is None else {"rooms": rooms}
    ready = event_frame("ready", {"replica": replica, **where, "live": live})
    return f"retry: {retry_ms}\n".encode() + ready


def unavailable_frame(code: str, message: str, retry_ms: int) -> bytes:
    """Ends a stream for a passing reason (replica full, draining): come back after `retry_ms`.

    A browser's EventSource gives up for good on any answer but `200 text/event-stream`, so
    a transient refusal is this event on a 200 stream, never a 503.
    """
    return retry_frame(retry_ms) + event_frame("unavailable", {"error": code, "message": message})


def gap_frame(room: str, requested: MessageId, oldest: MessageId | None) -> bytes:
    """Says that messages of `room` after `requested` were dropped from history before
    `oldest`."""
    return event_frame(
        "gap",
        {
            "room": room,
            "lastEventId": str(requested),
            "oldestRetainedId": None if oldest is None else str(oldest),
            "message": "some messages after your last event id are no longer retained",
        },
    )


def presence_frame(presence: Presence) -> bytes:
    """Who is online in the room (and who just joined or left)."""
    return event_frame("presence", presence.to_dict())


def retry_frame(retry_ms: int) -> bytes:
    """Changes how soon the client reconnects."""
    return f"retry: {retry_ms}\n\n".encode()


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event, or a comment (`event == ""` and `comment` set)."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comment: str | None = None


@dataclass
class SSEDecoder:
    """Feed it lines (without their ending); it returns events as they complete."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _retry: int | None = None
    last_event_id: str = ""
    _saw_id: bool = False

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line; return an event when the line dispatches one (or is a comment)."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return ServerSentEvent(event="", comment=line[1:].lstrip(" "))
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
            self._saw_id = True
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data, retry, saw_id = self._event, self._data, self._retry, self._saw_id
        self._event, self._data, self._retry, self._saw_id = "", [], None, False
        if not data:
            if retry is not None:
                return ServerSentEvent(event="", retry=retry)
            return None
        return ServerSentEvent(
            event=event or "message",
            data="\n".join(data),
            id=self.last_event_id if saw_id else None,
            retry=retry,
        )
