"""Headers that both ways of answering a request add: security, SSE and CORS (pure)."""

from __future__ import annotations

from .config import Settings

# On every response: the page may run only its own scripts and styles, and nothing sniffs types.
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    # When a stream ends (drain, slow client) the client reconnects on a new connection, which
    # the load balancer may send to another replica; hypercorn would not serve a reused one
    # once it is shutting down.
    "Connection": "close",
}


def cors_headers(settings: Settings, origin: str | None, preflight: bool) -> list[tuple[str, str]]:
    """What lets `origin` read the answer: nothing unless it is a configured origin."""
    if origin is None or origin not in settings.cors_origin_set:
        return []
    headers = [("Access-Control-Allow-Origin", origin)]
    if settings.cors_allow_credentials:
        headers.append(("Access-Control-Allow-Credentials", "true"))
    if preflight:
        headers += [
            ("Access-Control-Allow-Methods", "GET, POST, DELETE"),
            (
                "Access-Control-Allow-Headers",
                "Content-Type, Last-Event-ID, Authorization, Idempotency-Key",
            ),
            ("Access-Control-Max-Age", "600"),
        ]
    return headers
