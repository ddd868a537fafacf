"""The reference peer: Starlette + sse-starlette on uvicorn, fanned out through redis.asyncio.

The usual Python stack (as with `broadcaster`): one pub/sub connection per process and an
unbounded asyncio queue per client. It serves only the API subset the benchmark uses, in the same
shape as sse-chat. Run: `uvicorn --app-dir bench/peers starlette_peer:app` with PEER_REDIS_URL set.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from redis import asyncio as aioredis
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
REPLICA = os.environ.get("PEER_REPLICA_ID", "peer")
PREFIX = "peer:room:"
ROOM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

# Stores and publishes in one step, so publish order is id order (as sse-chat's script does).
APPEND_AND_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000, '*', 'm', ARGV[1])
local message = '{"id":"' .. id .. '",' .. string.sub(ARGV[1], 2)
redis.call('PUBLISH', KEYS[2], message)
return message
"""

rooms: dict[str, set[asyncio.Queue[str]]] = {}
state: dict[str, Any] = {}


async def dispatch(pubsub: Any) -> None:
    """Forward each published message to every local client of its room."""
    async for item in pubsub.listen():
        if item["type"] != "pmessage":
            continue
        room = item["channel"].decode()[len(PREFIX) :]
        data = item["data"].decode()
        for queue in rooms.get(room, ()):
            queue.put_nowait(data)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    redis = aioredis.from_url(REDIS_URL)
    pubsub = redis.pubsub()
    await pubsub.psubscribe(PREFIX + "*")
    state["redis"] = redis
    state["append"] = redis.register_script(APPEND_AND_PUBLISH)
    task = asyncio.create_task(dispatch(pubsub))
    yield
    task.cancel()
    await pubsub.aclose()
    await redis.aclose()


def error(status: int, code: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": code}, status_code=status)


async def post_message(request: Request) -> Response:
    room = request.path_params["room"]
    if not ROOM.match(room):
        return error(404, "not_found")
    try:
        body = await request.json()
        user, text = body["user"], body["text"]
    except (ValueError, KeyError, TypeError):
        return error(400, "malformed")
    if not (isinstance(user, str) and isinstance(text, str) and user and text):
        return error(422, "invalid")
    ts = datetime.now(UTC).isoformat()
    rest = json.dumps(
        {"room": room, "user": user, "text": text, "ts": ts, "replica": REPLICA},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    keys = [f"{PREFIX}{room}:messages", PREFIX + room]
    message = await state["append"](keys=keys, args=[rest])
    return Response(message, status_code=201, media_type="application/json")


async def events(request: Request) -> Response:
    room = request.path_params["room"]
    if not ROOM.match(room):
        return error(404, "not_found")
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def stream() -> AsyncIterator[ServerSentEvent]:
        rooms.setdefault(room, set()).add(queue)
        try:
            ready = json.dumps({"replica": REPLICA, "room": room}, separators=(",", ":"))
            yield ServerSentEvent(data=ready, event="ready", retry=3000, sep="\n")
            while True:
                data = await queue.get()
                message_id = data[7 : data.index('"', 7)]
                yield ServerSentEvent(data=data, event="message", id=message_id, sep="\n")
        finally:
            rooms[room].discard(queue)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Replica": REPLICA}
    return EventSourceResponse(stream(), headers=headers, sep="\n")


async def readyz(request: Request) -> Response:
    return JSONResponse({"ready": "redis" in state})


app = Starlette(
    routes=[
        Route("/rooms/{room}/messages", post_message, methods=["POST"]),
        Route("/rooms/{room}/events", events),
        Route("/readyz", readyz),
    ],
    lifespan=lifespan,
)
