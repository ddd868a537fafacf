"""Standard tokens (JWT) through PyJWT: who a client is and which private rooms it may use.

A token's `sub` is the user name, `exp` is required, and an optional `rooms` claim lists the
private rooms (names, or prefixes like `team-*`) it opens. Keys come from files (Docker
secrets): a shared secret for HS256, or a PEM public key for RS256, ES256 or EdDSA; several
files verify tokens signed by any of them (key rotation).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

LEEWAY_SECONDS = 30  # clock skew tolerated on exp, nbf and iat


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key a token may be signed with: a shared secret or a PEM public key."""

    secret: bytes | None = None
    public_pem: bytes | None = None

    @classmethod
    def from_file_content(cls, content: bytes) -> VerificationKey:
        """A PEM block is a public key; anything else is a shared secret."""
        content = content.strip()
        if content.startswith(b"-----BEGIN"):
            return cls(public_pem=content)
        return cls(secret=content)

    @property
    def material(self) -> bytes:
        return self.secret if self.secret is not None else (self.public_pem or b"")


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token says."""

    user: str
    rooms: tuple[str, ...]
    expires: float  # Unix time

    def opens(self, room: str) -> bool:
        """True when the token's `rooms` claim names `room` (or a prefix pattern of it)."""
        return any(room_matches(pattern, room) for pattern in self.rooms)


class InvalidToken(Exception):
    """The token cannot be used; the message says why (for a person)."""


def room_matches(pattern: str, room: str) -> bool:
    """`team-*` matches every room starting with `team-`; other patterns match exactly."""
    if pattern.endswith("*"):
        return room.startswith(pattern[:-1])
    return room == pattern


def parse_patterns(text: str) -> tuple[str, ...]:
    """`team-*, ops` -> ("team-*", "ops")."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


class TokenVerifier:
    """Verifies tokens against the configured keys, algorithms, audience and issuer."""

    def __init__(
        self,
        keys: Sequence[VerificationKey],
        algorithms: Sequence[str],
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self._keys = list(keys)
        self._algorithms = [name for name in algorithms if name.lower() != "none"]
        self._audience = audience
        self._issuer = issuer

    def verify(self, token: str) -> Grant:
        """The grant of a valid token; InvalidToken otherwise."""
        claims: dict[str, Any] | None = None
        reason = "the token is not valid"
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key.material,
                    algorithms=self._algorithms,
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=LEEWAY_SECONDS,
                    options={"require": ["exp", "sub"]},
                )
                break
            except jwt.InvalidSignatureError:
                reason = "the token's signature is not valid"
            except jwt.ExpiredSignatureError:
                raise InvalidToken("the token has expired") from None
            except jwt.InvalidKeyError:
                continue  # a key of another kind (e.g. a secret for an RS256 token)
            except jwt.PyJWTError as error:
                raise InvalidToken(f"the token is not valid: {error}") from None
        if claims is None:
            raise InvalidToken(reason)
        rooms = claims.get("rooms", [])
        if isinstance(rooms, str):
            rooms = parse_patterns(rooms)
        if not isinstance(rooms, list | tuple) or not all(isinstance(r, str) for r in rooms):
            raise InvalidToken("the token's `rooms` claim must be a list of room names")
        user = claims["sub"]
        if not isinstance(user, str) or not user:
            raise InvalidToken("the token's `sub` claim must name the user")
        try:
            expires = float(claims["exp"])
        except (OverflowError, TypeError, ValueError):
            raise InvalidToken("the token's `exp` claim is out of range") from None
        return Grant(user=user, rooms=tuple(rooms), expires=expires)


def issue_token(
    key: bytes,
    user: str,
    rooms: Sequence[str],
    ttl_seconds: float,
    *,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A token for `user` signed with the shared secret `key` (HS256)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + int(ttl_seconds)}
    if rooms:
        claims["rooms"] = list(rooms)
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm="HS256")
