"""Optional posting auth: a shared bearer token, or per-user tokens signed with a key (pure).

A signed token is `<user>.<signature>` with the signature the URL-safe base64 of
HMAC-SHA256(key, user): it proves the name, so a POST made with it must use that name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


class NotAuthorized(Exception):
    """The POST lacks a valid token; the message says why."""


def sign_user(key: bytes, user: str) -> str:
    """A token for `user` (how an operator issues one)."""
    digest = hmac.new(key, user.encode(), hashlib.sha256).digest()
    return f"{user}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


def authorize(header: str | None, shared_token: str, signing_key: bytes) -> str | None:
    """Check an Authorization header; return the user a signed token binds, if any.

    With neither a shared token nor a signing key configured, everything is allowed.
    """
    if not shared_token and not signing_key:
        return None
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorized("posting needs an `Authorization: Bearer <token>` header")
    token = token.strip()
    if shared_token and hmac.compare_digest(token.encode(), shared_token.encode()):
        return None
    if signing_key:
        user, _, _ = token.rpartition(".")
        if user and hmac.compare_digest(token.encode(), sign_user(signing_key, user).encode()):
            return user
    raise NotAuthorized("the token is not valid")
