"""HTTP handlers: parse the request, call the core, render the answer."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import parse_qs

import trio
from quart import Quart, Request, Response, request

from .auth import NotAuthorized, authorize
from .backplane import BackplaneUnavailable
from .direct import connection_socket
from .errors import ApiError
from .messages import DEFAULT_ROOM, InvalidMessage, parse_draft
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .openapi import openapi_document
from .ratelimit import Window, client_address
from .replica import Replica
from .response_headers import SSE_HEADERS
from .stream import admit, event_stream
from .stream_request import read_stream_request, require_room

RETRY_AFTER_SECONDS = "1"


def register_routes(app: Quart, replica: Replica) -> None:
    """Add the chat API's routes to `app`, serving `replica`."""
    settings = replica.settings
    post_token, signing_key = settings.post_token, settings.signing_key

    async def post_message(room: str = DEFAULT_ROOM) -> tuple[dict[str, Any], int]:
        require_room(room)
        try:
            bound_user = authorize(request.headers.get("Authorization"), post_token, signing_key)
        except NotAuthorized as refused:
            raise ApiError(
                401, "unauthorized", str(refused), headers={"WWW-Authenticate": "Bearer"}
            ) from None
        fields = await _read_fields(request, settings.body_timeout_seconds)
        try:
            draft = parse_draft(room, fields, settings.limits)
        except InvalidMessage as invalid:
            raise ApiError(422, "invalid_message", str(invalid), field=invalid.field) from None
        if bound_user is not None and draft.user != bound_user:
            raise ApiError(
                403, "user_mismatch", f"this token posts as {bound_user!r} only", field="user"
            )
        await _check_post_rate(request)
        try:
            message = await replica.backplane.append(draft)
        except BackplaneUnavailable as down:
            raise _unavailable(f"the message could not be stored: {down}") from None
        replica.metrics.messages_posted.inc()
        return message.to_dict(), 201

    trusted = settings.trusted_networks

    def _client_address(request: Request) -> str:
        forwarded = request.headers.get("X-Forwarded-For")
        return client_address(request.remote_addr or "", forwarded, trusted)

    async def _check_post_rate(request: Request) -> None:
        if not settings.post_rate_limit:
            return
        address = _client_address(request)
        window = Window.at(time.time(), settings.post_rate_window_seconds)
        try:
            count = await replica.backplane.count_hit(
                f"post:{address}:{window.index}", settings.post_rate_window_seconds
            )
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

    async def list_messages(room: str) -> dict[str, Any]:
        require_room(room)
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

    async def stream_events(room: str = DEFAULT_ROOM) -> Response:
        args = {key: request.args[key] for key in request.args}
        stream_request = read_stream_request(
            settings,
            room,
            args,
            last_event_id=request.headers.get("Last-Event-ID"),
            forwarded_for=request.headers.get("X-Forwarded-For"),
            remote_addr=request.remote_addr or "",
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

    async def presence(room: str) -> dict[str, Any]:
        require_room(room)
        try:
            return (await replica.backplane.presence(room)).to_dict()
        except BackplaneUnavailable as down:
            raise _unavailable(f"presence cannot be read: {down}") from None

    async def metrics() -> Response:
        return Response(replica.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "replica": settings.replica_id}

    async def readyz() -> dict[str, Any]:
        if replica.draining:
            raise _unavailable("draining")
        if not replica.backplane.connected:
            raise _unavailable("the backplane is not connected")
        return {"status": "ready", "replica": settings.replica_id}

    app.add_url_rule("/messages", view_func=post_message, methods=["POST"])
    app.add_url_rule("/rooms/<room>/messages", view_func=post_message, methods=["POST"])
    app.add_url_rule("/rooms/<room>/messages", view_func=list_messages, methods=["GET"])
    app.add_url_rule("/events", view_func=stream_events, methods=["GET"])
    app.add_url_rule("/rooms/<room>/events", view_func=stream_events, methods=["GET"])
    app.add_url_rule("/rooms/<room>/presence", view_func=presence, methods=["GET"])
    document = openapi_document(settings)

    async def openapi() -> dict[str, Any]:
        return document

    app.add_url_rule("/openapi.json", view_func=openapi, methods=["GET"])
    app.add_url_rule("/metrics", view_func=metrics, methods=["GET"])
    app.add_url_rule("/healthz", view_func=healthz, methods=["GET"])
    app.add_url_rule("/readyz", view_func=readyz, methods=["GET"])


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": RETRY_AFTER_SECONDS})


async def _read_fields(request: Request, body_seconds: float) -> dict[str, object]:
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
            form = parse_qs(text, keep_blank_values=True, max_num_fields=16, errors="strict")
        except (ValueError, UnicodeDecodeError) as bad:
            raise ApiError(400, "malformed_body", f"the form cannot be read: {bad}") from None
        return {name: values[0] for name, values in form.items()}
    try:
        data = json.loads(text)
    except ValueError as bad:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {bad}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", 'the body must be a JSON object {"user", "text"}')
    return cast(dict[str, object], data)
