"""HTTP routes: parse the request, check who may do it, call the core, render the answer.

Each endpoint is one module-level handler of the `api` blueprint; the replica it serves is
reached through the app (`_replica()`). Who may do what is decided by `Access.authorize`,
which the stream intake below Quart calls too (through `stream_request`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import parse_qs

import orjson
import trio
from quart import Blueprint, Response, current_app, request

from .access import COOKIE, Credentials, credentials_from
from .backplane import BackplaneUnavailable, IdempotencyConflict, OutcomeUnknown
from .direct import connection_socket
from .errors import ApiError
from .messages import DEFAULT_ROOM, InvalidMessage, parse_draft
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .ratelimit import Window, client_address, is_trusted
from .replica import Replica
from .response_headers import SSE_HEADERS
from .stream import admit, event_stream
from .stream_request import read_stream_request, require_room

RETRY_AFTER_SECONDS = "1"
FORM_FIELDS_MAX = 16
COOKIE_MAX_AGE = 400 * 24 * 3600  # browsers keep a cookie at most this long anyway

api = Blueprint("api", __name__)


def _replica() -> Replica:
    replica: Replica = current_app.replica  # type: ignore[attr-defined]
    return replica


def _credentials(stream: bool = False) -> Credentials:
    query = {"access_token": request.args.get("access_token", "")} if stream else None
    return credentials_from(request.headers, query)


@api.post("/messages")
@api.post("/rooms/<room>/messages")
async def post_message(room: str = DEFAULT_ROOM) -> tuple[dict[str, Any], int]:
    """Store a message and forward it to every replica: 201 with the stored message."""
    replica = _replica()
    settings = replica.settings
    require_room(room)
    grant = replica.access.authorize([room], "post", _credentials())
    idempotency_key = _idempotency_key()
    fields = await _read_fields(settings.body_timeout_seconds)
    if grant is not None:
        fields.setdefault("user", grant.user)  # a token posts as its `sub`
    try:
        draft = parse_draft(room, fields, settings.limits)
    except InvalidMessage as invalid:
        raise ApiError(422, "invalid_message", str(invalid), field=invalid.field) from None
    if grant is not None and draft.user != grant.user:
        raise ApiError(
            403, "user_mismatch", f"this token posts as {grant.user!r} only", field="user"
        )
    await _check_post_rate(replica)
    try:
        message = await replica.backplane.append(draft, idempotency_key)
    except IdempotencyConflict:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used for another message; use a new key for a new one",
        ) from None
    except OutcomeUnknown as late:
        raise ApiError(
            503,
            "outcome_unknown",
            f"the message may or may not be stored ({late}); retry with the same"
            " Idempotency-Key, never without one",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from None
    except BackplaneUnavailable as down:
        raise _unavailable(f"the message could not be stored: {down}") from None
    replica.metrics.messages_posted.inc()
    return message.to_dict(), 201


def _idempotency_key() -> str | None:
    """The `Idempotency-Key` header: 1-255 visible ASCII characters; 400 otherwise."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all("!" <= char <= "~" for char in key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "an Idempotency-Key is 1-255 visible ASCII characters (no spaces)",
        )
    return key


@api.get("/rooms/<room>/messages")
async def list_messages(room: str) -> dict[str, Any]:
    """The room's recent history, oldest first."""
    replica = _replica()
    settings = replica.settings
    require_room(room)
    replica.access.authorize([room], "read", _credentials())
    raw = request.args.get("limit", str(settings.default_history_limit))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= settings.history_size:
        raise ApiError(
            422,
            "invalid_limit",
            f"limit must be a whole number from 1 to {settings.history_size}",
            field="limit",
        )
    try:
        messages = await replica.backplane.recent(room, int(raw))
    except BackplaneUnavailable as down:
        raise _unavailable(f"history cannot be read: {down}") from None
    return {"room": room, "messages": [message.to_dict() for message in messages]}


@api.get("/events")
@api.get("/rooms/<room>/events")
async def stream_events(room: str | None = None) -> Response:
    """The room's SSE stream (a connection's first stream request is served by `intake`)."""
    replica = _replica()
    stream_request = read_stream_request(
        replica.settings,
        replica.access,
        room,
        {key: request.args[key] for key in request.args},
        last_event_id=request.headers.get("Last-Event-ID"),
        forwarded_for=request.headers.get("X-Forwarded-For"),
        remote_addr=request.remote_addr or "",
        credentials=_credentials(stream=True),
    )
    if request.method == "HEAD":  # the stream's headers only: no slot, no presence
        return Response(b"", status=200, headers=SSE_HEADERS)
    admitted = admit(replica, stream_request)
    if isinstance(admitted, bytes):
        body: AsyncIterator[bytes] | bytes = admitted
    else:
        # HTTP/1.1 streams are written straight to their socket (chunked), bypassing h11.
        socket = connection_socket.get() if request.http_version == "1.1" else None
        body = event_stream(admitted, socket)
    response = Response(body, status=200, headers=SSE_HEADERS)
    response.timeout = None  # a stream lives as long as its client: no response timeout
    return response


@api.get("/rooms/<room>/presence")
async def presence(room: str) -> dict[str, Any]:
    """Who has a stream open in the room, on any replica."""
    replica = _replica()
    require_room(room)
    replica.access.authorize([room], "read", _credentials())
    try:
        return (await replica.backplane.presence(room)).to_dict()
    except BackplaneUnavailable as down:
        raise _unavailable(f"presence cannot be read: {down}") from None


@api.post("/session")
async def open_session() -> Response:
    """Keep the Bearer token in an HttpOnly cookie, so a browser's EventSource carries it."""
    replica = _replica()
    authorization = request.headers.get("Authorization")
    if not authorization:
        raise ApiError(
            401,
            "unauthorized",
            "send the token as `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    credentials = credentials_from(request.headers)
    grant = replica.access.verify(credentials)
    response = Response(b"", status=204)
    response.set_cookie(
        COOKIE,
        cast(str, credentials.token()),
        max_age=max(0, min(COOKIE_MAX_AGE, int(grant.expires - time.time()))),
        path="/",
        secure=_behind_tls(replica),
        httponly=True,
        samesite="Strict",
    )
    return response


@api.delete("/session")
async def close_session() -> Response:
    """Forget the token cookie."""
    response = Response(b"", status=204)
    response.delete_cookie(
        COOKIE, path="/", secure=_behind_tls(_replica()), httponly=True, samesite="Strict"
    )
    return response


@api.get("/metrics")
async def metrics() -> Response:
    """Prometheus text."""
    return Response(_replica().metrics.render(), content_type=METRICS_CONTENT_TYPE)


@api.get("/healthz")
async def healthz() -> dict[str, Any]:
    """Liveness: 200 while the process serves."""
    return {"status": "ok", "replica": _replica().settings.replica_id}


@api.get("/readyz")
async def readyz() -> dict[str, Any]:
    """Readiness: 200 while the backplane is connected and the replica is not draining."""
    replica = _replica()
    if replica.draining:
        raise _unavailable("draining")
    if not replica.backplane.connected:
        raise _unavailable("the backplane is not connected")
    ready: dict[str, Any] = {"status": "ready", "replica": replica.settings.replica_id}
    # One shard down must not take every replica out of the load balancer: name it instead.
    if unreachable := replica.backplane.unreachable():
        ready["unreachable_shards"] = unreachable
    return ready


@api.get("/openapi.json")
async def openapi() -> dict[str, Any]:
    """The OpenAPI document of this API, with this replica's limits."""
    return _replica().openapi


def _behind_tls(replica: Replica) -> bool:
    """The client reached us over TLS (directly, or through a trusted proxy that says so)."""
    if request.scheme == "https":
        return True
    proto = request.headers.get("X-Forwarded-Proto", "")
    return proto == "https" and is_trusted(
        request.remote_addr or "", replica.settings.trusted_networks
    )


def _client_address(replica: Replica) -> str:
    forwarded = request.headers.get("X-Forwarded-For")
    trusted = replica.settings.trusted_networks
    return client_address(request.remote_addr or "", forwarded, trusted)


async def _check_post_rate(replica: Replica) -> None:
    settings = replica.settings
    if not settings.post_rate_limit:
        return
    window = Window.at(time.time(), settings.post_rate_window_seconds)
    key = f"post:{_client_address(replica)}:{window.index}"
    try:
        count = await replica.backplane.count_hit(key, settings.post_rate_window_seconds)
    except BackplaneUnavailable as down:
        raise _unavailable(f"the message could not be stored: {down}") from None
    if count > settings.post_rate_limit:
        raise ApiError(
            429,
            "rate_limited",
            f"at most {settings.post_rate_limit} messages per"
            f" {settings.post_rate_window_seconds} s; try again in {window.retry_after} s",
            headers={"Retry-After": str(window.retry_after)},
        )


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": RETRY_AFTER_SECONDS})


async def _read_fields(body_seconds: float) -> dict[str, object]:
    """The posted fields of a JSON or url-encoded form body."""
    kind = request.mimetype
    if kind not in ("application/json", "application/x-www-form-urlencoded"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send application/json or application/x-www-form-urlencoded"
            + (f", not {kind}" if kind else " (the Content-Type header is missing)"),
        )
    # A client trickling its body (slowloris) is refused rather than waited for.
    with trio.move_on_after(body_seconds) as reading:
        body: bytes = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    if reading.cancelled_caught:
        raise ApiError(408, "request_timeout", f"the body did not arrive within {body_seconds:g} s")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_body", "the body is not valid UTF-8") from None
    if kind == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(
                text, keep_blank_values=True, max_num_fields=FORM_FIELDS_MAX, errors="strict"
            )
        except ValueError as bad:
            raise ApiError(400, "malformed_body", f"the form cannot be read: {bad}") from None
        return {name: values[0] for name, values in form.items()}
    try:
        # orjson refuses invalid UTF-8, lone surrogates and nesting deeper than 1,024 levels
        # with a JSONDecodeError (the standard library would recurse until RecursionError).
        data = orjson.loads(text)
    except orjson.JSONDecodeError as bad:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {bad}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", 'the body must be a JSON object {"user", "text"}')
    return cast(dict[str, object], data)
