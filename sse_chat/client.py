"""A small client of the HTTP API: post a message, follow a room's stream with resume."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import httpx
import trio

from .sse import ServerSentEvent, SSEDecoder


class PostRefused(Exception):
    """The server refused a post; the message is its JSON error text."""


async def post_message(
    base_url: str, room: str, user: str, text: str, token: str | None = None
) -> dict[str, Any]:
    """POST a message and return the stored message."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers=headers) as client:
        response = await client.post(f"/rooms/{room}/messages", json={"user": user, "text": text})
    if response.status_code != 201:
        raise PostRefused(f"{response.status_code}: {response.text.strip()}")
    body: dict[str, Any] = response.json()
    return body


async def read_events(response: httpx.Response) -> AsyncGenerator[ServerSentEvent, None]:
    """The events (and comments) of an open SSE response."""
    decoder = SSEDecoder()
    # httpx's own line iterator is not closed early here: it chains generators that it does
    # not close itself either, so aclosing() it would not help.
    async for line in response.aiter_lines():
        event = decoder.feed(line)
        if event is not None:
            yield event


async def follow_room(
    base_url: str, room: str, last_event_id: str | None = None, reconnect: bool = True
) -> AsyncGenerator[dict[str, Any], None]:
    """Every message of a room from now (or after `last_event_id`), reconnecting as needed."""
    delay = 1.0
    timeout = httpx.Timeout(10, read=None)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                async with client.stream(
                    "GET", f"/rooms/{room}/events", headers=headers
                ) as response:
                    response.raise_for_status()
                    async with aclosing(read_events(response)) as events:
                        async for event in events:
                            if event.retry is not None:
                                delay = event.retry / 1000
                            if event.event == "message":
                                last_event_id = event.id or last_event_id
                                yield json.loads(event.data)
            except httpx.TransportError:
                pass
            if not reconnect:
                return
            await trio.sleep(delay)
