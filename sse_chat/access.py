"""Who may read and post: one function for every route and for the stream intake (pure).

Open by default. `SSE_CHAT_AUTH=post` needs a token for every POST, `all` for every POST,
stream, history and presence request; rooms in `SSE_CHAT_PRIVATE_ROOMS` always need a token
whose `rooms` claim grants them. A token is verified only where one is required: elsewhere an
invalid or expired one is ignored (an old cookie must not lock a browser out of public rooms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Literal, Protocol

from .config import Settings
from .errors import ApiError
from .tokens import Grant, InvalidToken, TokenVerifier, parse_patterns, room_matches

COOKIE = "sse_chat_token"
Action = Literal["read", "post"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where a request may carry its token."""

    authorization: str | None = None  # the Authorization header
    cookie: str | None = None  # the Cookie header
    access_token: str | None = None  # `?access_token=` (stream requests only)

    def token(self) -> str | None:
        """The token: a Bearer header first, then `?access_token=`, then the cookie."""
        if self.authorization:
            scheme, _, value = self.authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
            return ""  # present but not a Bearer token: refused where one is needed
        if self.access_token:
            return self.access_token
        if self.cookie:
            try:
                jar = SimpleCookie(self.cookie)
            except CookieError:
                return None
            morsel = jar.get(COOKIE)
            if morsel is not None and morsel.value:
                return morsel.value
        return None


class Access:
    """The authorization policy of one replica."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        """The policy `settings` describe (key files are read now)."""
        keys = settings.jwt_keys
        verifier = None
        if keys:
            verifier = TokenVerifier(
                keys,
                [name.strip() for name in settings.jwt_algorithms.split(",") if name.strip()],
                audience=settings.jwt_audience or None,
                issuer=settings.jwt_issuer or None,
            )
        return cls(settings.auth, parse_patterns(settings.private_rooms), verifier)

    def __init__(
        self, mode: str, private_rooms: Sequence[str], verifier: TokenVerifier | None
    ) -> None:
        self._mode = mode
        self._private = tuple(private_rooms)
        self._verifier = verifier

    def is_private(self, room: str) -> bool:
        """True when `room` needs a token that grants it."""
        return any(room_matches(pattern, room) for pattern in self._private)

    def verify(self, credentials: Credentials) -> Grant:
        """The grant of the request's token, wherever it is required or not; 401 if none."""
        token = credentials.token()
        if not token or self._verifier is None:
            raise _unauthorized("this request needs a token (Authorization: Bearer <token>)")
        try:
            return self._verifier.verify(token)
        except InvalidToken as invalid:
            raise _unauthorized(str(invalid)) from None

    def authorize(
        self, rooms: Sequence[str], action: Action, credentials: Credentials
    ) -> Grant | None:
        """The verified grant when the request needs a token (None when it needs none);
        ApiError 401 (no or bad token) or 403 (valid, but not for these rooms) otherwise."""
        private = [room for room in rooms if self.is_private(room)]
        needed = self._mode == "all" or (self._mode == "post" and action == "post") or private
        if not needed:
            return None
        grant = self.verify(credentials)
        refused = [room for room in private if not grant.opens(room)]
        if refused:
            raise ApiError(
                403, "forbidden_room", f"this token does not open the room {refused[0]!r}"
            )
        return grant


class HeaderLookup(Protocol):
    """Headers looked up by lower-case name (a dict of them, or Werkzeug's `Headers`)."""

    def get(self, key: str, /) -> str | None: ...


def credentials_from(headers: HeaderLookup, query: Mapping[str, str] | None = None) -> Credentials:
    """The token places of a request; `query` only for stream requests."""
    return Credentials(
        authorization=headers.get("authorization"),
        cookie=headers.get("cookie"),
        access_token=(query or {}).get("access_token"),
    )


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
