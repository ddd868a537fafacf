"""What a stream request asks for, and the rules it must pass (pure: no I/O).

Both ways of serving a stream use these: the Quart route and the connection intake that serves
a connection's first request below hypercorn (`intake`). A refusal raises `ApiError` (4xx):
only what retrying cannot fix is refused here; caps and draining are answered on the stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import cursor
from .access import Access, Credentials
from .config import Settings
from .errors import ApiError
from .ids import MessageId
from .messages import DEFAULT_ROOM, InvalidMessage, is_valid_room, parse_user
from .ratelimit import client_address


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A stream request that passed the rules."""

    rooms: tuple[str, ...]
    after: dict[str, MessageId]  # per room: resume after this id; rooms not here start live
    user: str | None  # shown present in its rooms while the stream is open
    client: str  # the client's address, for the per-client cap
    expires: float | None = None  # Unix time its token expires: the stream ends then
    multi: bool = False  # a `?rooms=` stream: its event ids are cursors

    @property
    def room(self) -> str:
        """The first (for most streams: the only) room."""
        return self.rooms[0]


def require_room(room: str) -> None:
    """Refuse (404) a room name that is not legal."""
    if not is_valid_room(room):
        raise ApiError(
            404,
            "invalid_room",
            "room names are 1-64 letters, digits, '_' or '-', starting with a letter or digit",
        )


def parse_rooms(text: str, most: int) -> tuple[str, ...]:
    """`?rooms=a,b,c`: 404 for a bad name, 422 for an empty list, a duplicate or too many."""
    rooms = tuple(room.strip() for room in text.split(","))
    if not rooms or any(not room for room in rooms):
        raise _invalid_rooms("list the rooms as ?rooms=a,b,c (no empty names)")
    for room in rooms:
        require_room(room)
    if len(set(rooms)) != len(rooms):
        raise _invalid_rooms("each room may be listed once")
    if len(rooms) > most:
        raise _invalid_rooms(f"at most {most} rooms per stream")
    return rooms


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
    room: str | None,
    args: Mapping[str, str],
    *,
    last_event_id: str | None,
    forwarded_for: str | None,
    remote_addr: str,
    credentials: Credentials,
) -> StreamRequest:
    """Check a stream request: `room` from its path (None for `/events`), `args` its query
    (first values), the rest its headers (`Last-Event-ID`, `X-Forwarded-For`), the
    connection's peer address and where its token may be."""
    multi = room is None and "rooms" in args
    if multi:
        rooms = parse_rooms(args["rooms"], settings.max_rooms_per_stream)
    else:
        rooms = (DEFAULT_ROOM if room is None else room,)
        require_room(rooms[0])
    grant = access.authorize(rooms, "read", credentials)
    after: dict[str, MessageId] = {}
    if multi:
        raw = last_event_id or args.get("lastEventId") or ""
        if raw.strip():
            try:
                after = cursor.decode(raw, rooms)
            except ValueError as bad:
                raise ApiError(400, "invalid_last_event_id", str(bad)) from None
    else:
        resume = parse_last_event_id(last_event_id, args.get("lastEventId"))
        if resume is not None:
            after = {rooms[0]: resume}
    user = args.get("user")
    if user is not None:
        try:
            user = parse_user(user, settings.limits)
        except InvalidMessage as invalid:
            raise ApiError(422, "invalid_user", str(invalid), field="user") from None
    client = client_address(remote_addr, forwarded_for, settings.trusted_networks)
    expires = grant.expires if grant is not None else None
    return StreamRequest(rooms, after, user, client, expires, multi)


def _invalid_rooms(message: str) -> ApiError:
    return ApiError(422, "invalid_rooms", message, field="rooms")
