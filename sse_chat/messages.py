"""The chat message model and its validation (pure: no I/O)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from .ids import MessageId

ROOM_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Unicode category Cc (C0, DEL, C1) and lone surrogates (Cs), which cannot even be encoded.
_USER_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_TEXT_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
DEFAULT_ROOM = "lobby"


def is_valid_room(room: str) -> bool:
    """True when `room` is a legal room name."""
    return ROOM_PATTERN.fullmatch(room) is not None


class InvalidMessage(ValueError):
    """A field of a posted message breaks a rule; `field` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """How long a user name and a text may be, in characters."""

    max_user: int = 40
    max_text: int = 4000


@dataclass(frozen=True, slots=True)
class Draft:
    """A validated message that has no id yet."""

    room: str
    user: str
    text: str


@dataclass(frozen=True)
class Message:
    """A stored message: what clients receive."""

    id: MessageId
    room: str
    user: str
    text: str
    ts: str
    replica: str

    @classmethod
    def from_draft(cls, draft: Draft, id: MessageId, replica: str, now: datetime) -> Message:
        """Stamp a draft with its id, time and accepting replica."""
        return cls(id, draft.room, draft.user, draft.text, format_ts(now), replica)

    @classmethod
    def from_json(cls, text: str | bytes) -> Message:
        """Decode the JSON form produced by `json`; raise ValueError if it is not one."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: object) -> Message:
        """Build a message from its `to_dict` form; raise ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a message must be a JSON object")
        try:
            values = [data[key] for key in ("id", "room", "user", "text", "ts", "replica")]
        except KeyError as missing:
            raise ValueError(f"message lacks {missing}") from None
        if not all(isinstance(value, str) for value in values):
            raise ValueError("message fields must be strings")
        return cls(MessageId.parse(values[0]), *values[1:])

    def to_dict(self) -> dict[str, Any]:
        """The message as a JSON-ready mapping."""
        return {
            "id": str(self.id),
            "room": self.room,
            "user": self.user,
            "text": self.text,
            "ts": self.ts,
            "replica": self.replica,
        }

    @cached_property
    def json(self) -> str:
        """One line of JSON (newlines in the text are escaped)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


def format_ts(now: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`."""
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_user(user: str, limits: Limits) -> str:
    """A valid user name (surrounding spaces removed), or raise InvalidMessage."""
    user = user.strip()
    _check_characters("user", user, _USER_FORBIDDEN)
    _check_length("user", user, limits.max_user)
    return user


def parse_draft(room: str, fields: Mapping[str, object], limits: Limits) -> Draft:
    """Validate posted fields into a Draft, or raise InvalidMessage."""
    user = parse_user(_string_field(fields, "user"), limits)
    text = _string_field(fields, "text").replace("\r\n", "\n").replace("\r", "\n")
    _check_characters("text", text, _TEXT_FORBIDDEN)
    if not text.strip():
        raise InvalidMessage("text", "must not be empty")
    _check_length("text", text, limits.max_text)
    return Draft(room=room, user=user, text=text)


def _string_field(fields: Mapping[str, object], name: str) -> str:
    value = fields.get(name)
    if value is None:
        raise InvalidMessage(name, "is required")
    if not isinstance(value, str):
        raise InvalidMessage(name, "must be a string")
    return value


def _check_length(name: str, value: str, maximum: int) -> None:
    if not 1 <= len(value) <= maximum:
        raise InvalidMessage(name, f"must be 1 to {maximum} characters long")


def _check_characters(name: str, value: str, forbidden: re.Pattern[str]) -> None:
    found = forbidden.search(value)
    if found is not None:
        code = ord(found[0])
        raise InvalidMessage(name, f"must not contain control character U+{code:04X}")
