"""What a stream request asks for, and the rules it must pass (pure: no I/O).

Both ways of serving a stream use these: the Quart route and the connection intake that serves
a connection's first request below hypercorn (`intake`). A refusal raises `ApiError` (4xx):
only what retrying cannot fix is refused here; caps and draining are answered on the stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .access import Access, Credentials
from .config import Settings
from .errors import ApiError
from .ids import MessageId
from .messages import InvalidMessage, is_valid_room, parse_user
from .ratelimit import client_address


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A stream request that passed the rules."""

    room: str
    after: MessageId | None  # resume after this id (Last-Event-ID), else start live
    user: str | None  # shown present in the room while the stream is open
    client: str  # the client's address, for the per-client cap
    expires: float | None = None  # Unix time its token expires: the stream ends then


def require_room(room: str) -> None:
    """Refuse (404) a room name that is not legal."""
    if not is_valid_room(room):
        raise ApiError(
            404,
            "invalid_room",
            "room names are 1-64 letters, digits, '_' or '-', starting with a letter or digit",
        )


def parse_last_event_id(header: str | None, query: str | None) -> MessageId | None:
    """The id to resume after: the `Last-Event-ID` header, else `?lastEventId=`; 400 if bad."""
    raw = header or query or ""
    if not raw.strip():
        return None
    try:
        return MessageId.parse(raw)
    except ValueError as bad:
        raise ApiError(400, "invalid_last_event_id", str(bad)) from None


def read_stream_request(
    settings: Settings,
    access: Access,
    room: str,
    args: Mapping[str, str],
    *,
    last_event_id: str | None,
    forwarded_for: str | None,
    remote_addr: str,
    credentials: Credentials,
) -> StreamRequest:
    """Check a stream request: `args` is its query (first values), the rest its headers
    (`Last-Event-ID`, `X-Forwarded-For`) and the connection's peer address."""
    require_room(room)
    grant = access.authorize([room], "read", credentials)
    after = parse_last_event_id(last_event_id, args.get("lastEventId"))
    user = args.get("user")
    if user is not None:
        try:
            user = parse_user(user, settings.limits)
        except InvalidMessage as invalid:
            raise ApiError(422, "invalid_user", str(invalid), field="user") from None
    client = client_address(remote_addr, forwarded_for, settings.trusted_networks)
    expires = grant.expires if grant is not None else None
    return StreamRequest(room=room, after=after, user=user, client=client, expires=expires)
