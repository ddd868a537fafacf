"""Cursors: the event ids of a stream of several rooms (pure: no I/O).

A cursor tells the server where a client is in every room of its stream, so that a reconnect
with `Last-Event-ID` resumes each room exactly. It is opaque to clients, URL-safe, unsigned and
grants nothing: per room, 4 bytes of a hash of the room's name, the message id's milliseconds
in 6 bytes and its sequence as a varint (11 bytes for most ids), base64url-encoded after a
version byte. Cursors are keyed by room, so one is valid with any `rooms=` list: rooms it
covers resume, others start live, and rooms it names that are not listed are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import lru_cache

from .direct import chunk
from .ids import MessageId
from .messages import Message

VERSION = 1
_MS_BYTES = 6


@lru_cache(maxsize=4096)
def room_tag(room: str) -> bytes:
    """4 bytes that stand for a room name in a cursor."""
    return hashlib.blake2s(room.encode(), digest_size=4).digest()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_entry(room: str, position: MessageId) -> bytes:
    """One room's part of a cursor."""
    if position.ms >= 1 << (8 * _MS_BYTES):
        raise ValueError(f"message id {position} is out of a cursor's range")
    return room_tag(room) + position.ms.to_bytes(_MS_BYTES, "big") + _varint(position.seq)


def decode(text: str, rooms: tuple[str, ...]) -> dict[str, MessageId]:
    """Where a cursor says the client is in each of `rooms`; ValueError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not a cursor: not base64url") from None
    if len(raw) < 2 or raw[0] != VERSION:  # every cursor this server sends names a room
        raise ValueError("not a cursor of this server")
    by_tag = {room_tag(room): room for room in rooms}
    positions: dict[str, MessageId] = {}
    at = 1
    while at < len(raw):
        if len(raw) < at + 4 + _MS_BYTES + 1:
            raise ValueError("not a cursor: truncated")
        tag, at = raw[at : at + 4], at + 4
        ms, at = int.from_bytes(raw[at : at + _MS_BYTES], "big"), at + _MS_BYTES
        seq, shift = 0, 0
        while True:
            if at >= len(raw) or shift > 63:
                raise ValueError("not a cursor: bad sequence number")
            byte, at = raw[at], at + 1
            seq |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        room = by_tag.get(tag)
        if room is not None:
            positions[room] = MessageId(ms, seq)
    return positions


@lru_cache(maxsize=256)
def _message_body(message: Message) -> bytes:
    """A message's frame without its `id:` line, encoded once for every cursor stream."""
    return f"event: message\ndata: {message.json}\n\n".encode()


class Cursor:
    """One multi-room stream's position in each of its rooms; frames its messages."""

    __slots__ = ("_entries",)

    def __init__(self, positions: dict[str, MessageId]) -> None:
        self._entries = {room: encode_entry(room, at) for room, at in positions.items()}

    def advance(self, room: str, position: MessageId) -> None:
        """The client now has `room` up to `position`."""
        self._entries[room] = encode_entry(room, position)

    def text(self) -> bytes:
        """The cursor as it stands, for an `id:` line."""
        raw = bytes([VERSION]) + b"".join(self._entries.values())
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    def frame(self, message: Message) -> bytes:
        """The message's frame, its `id:` the cursor just after it."""
        self.advance(message.room, message.id)
        return b"id: " + self.text() + b"\n" + _message_body(message)

    def chunk(self, messages: list[Message]) -> bytes:
        """`frame` of each message, as one HTTP/1.1 chunk."""
        return chunk(b"".join(self.frame(message) for message in messages))
