"""create_app(settings): the ASGI app of one replica, its routes and its lifespan."""

from __future__ import annotations

import os
from pathlib import Path

import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from quart import Response, jsonify, request, send_file
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .api import api
from .config import Settings
from .errors import HTTP_ERROR_CODES, ApiError
from .replica import Replica
from .response_headers import SECURITY_HEADERS, cors_headers


def static_dir() -> Path:
    """The page's files: inside the installed package, else the checkout's `static/`."""
    package = Path(__file__).resolve().parent
    installed = package / "static"
    return installed if installed.is_dir() else package.parent / "static"


SETTLE_SECONDS = 1.0  # how long a stopping replica waits to tell others who left
_SECURITY_HEADERS = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS]


class ChatApp(QuartTrio):
    """The Quart-Trio app of one replica."""

    replica: Replica

    async def asgi_app(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await super().asgi_app(scope, receive, send)
            return
        extra_headers = [(b"x-replica", self.replica.settings.replica_id.encode())]
        extra_headers += _SECURITY_HEADERS

        headers = dict(scope.get("headers", ()))
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        body_read = not has_body

        async def receive_noting_body() -> ASGIReceiveEvent:
            nonlocal body_read
            event = await receive()
            if event["type"] == "http.request" and not event.get("more_body", False):
                body_read = True
            return event

        async def send_with_replica(event: ASGISendEvent) -> None:
            if event["type"] == "http.response.start":
                response_headers = [*event.get("headers", ()), *extra_headers]
                if not body_read:
                    # Answered before the body was read (e.g. 405, 415): hypercorn can then
                    # stall the connection's next request, so the client should not reuse it.
                    response_headers.append((b"connection", b"close"))
                event["headers"] = response_headers
            elif event["type"] == "http.response.body" and not event.get("more_body", False):
                # hypercorn ends the exchange inside this call (closes the connection, or
                # readies it for the next request), while quart-trio cancels the request as
                # soon as it hears the exchange is over: cancelled midway, the connection was
                # neither closed nor watched for idleness, and stayed open until the client
                # left. Nothing here waits longer than a socket write, and those hypercorn
                # shields anyway.
                with trio.CancelScope(shield=True):
                    await send(event)
                return
            await send(event)

        await super().asgi_app(scope, receive_noting_body, send_with_replica)


def create_app(settings: Settings | None = None) -> ChatApp:
    """A replica's app; settings default to the environment."""
    settings = settings or Settings.from_env(os.environ)
    app = ChatApp(__name__, static_folder=str(static_dir()), static_url_path="/static")
    app.replica = replica = Replica(settings)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep a message's field order
    # `/rooms/a%2F/events` is no room (404), not a redirect to `/rooms/a/events`.
    app.url_map.merge_slashes = False
    app.register_blueprint(api)

    @app.get("/")
    async def index() -> Response:
        return await send_file(static_dir() / "index.html", mimetype="text/html")

    @app.get("/docs")
    async def api_reference() -> Response:
        return await send_file(static_dir() / "api.html", mimetype="text/html")

    # The backplane runs in the lifespan's nursery; its own scope stops it at once on shutdown
    # instead of waiting out Quart's grace period for background tasks.
    backplane_scope = trio.CancelScope()

    async def run_backplane(task_status: trio.TaskStatus[None]) -> None:
        with backplane_scope:
            await replica.backplane.run(task_status=task_status)

    @app.before_serving
    async def start_backplane() -> None:
        await app.nursery.start(run_backplane)

    @app.after_serving
    async def stop_backplane() -> None:
        # The users of the streams just ended leave on every replica before we go.
        with trio.move_on_after(SETTLE_SECONDS):
            await replica.backplane.settle()
        backplane_scope.cancel()

    @app.after_request
    async def allow_listed_origins(response: Response) -> Response:
        response.vary.add("Origin")
        preflight = request.method == "OPTIONS"
        for name, value in cors_headers(settings, request.headers.get("Origin"), preflight):
            response.headers[name] = value
        return response

    @app.after_request
    async def count_request(response: Response) -> Response:
        rule = request.url_rule
        route = rule.rule if rule is not None else "unmatched"
        replica.metrics.http_requests.labels(route, str(response.status_code)).inc()
        return response

    @app.errorhandler(ApiError)
    async def render_api_error(error: ApiError) -> Response:
        response = jsonify(error.body())
        response.status_code = error.status
        response.headers.update(error.headers)
        return response

    @app.errorhandler(HTTPException)
    async def render_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = HTTP_ERROR_CODES.get(status, "http_error")
        response = jsonify({"error": code, "message": error.description or error.name})
        response.status_code = status
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value  # e.g. `Allow` on a 405
        return response

    return app
