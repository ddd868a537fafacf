"""Helpers for tests that talk to real replicas over real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from sse_chat.app import ChatApp
from sse_chat.client import read_events
from sse_chat.config import Settings
from sse_chat.sse import ServerSentEvent

TIMEOUT = 10  # seconds any single wait in these tests may take before it counts as a hang


async def wait_until(
    condition: Callable[[], bool], interval: float = 0.02, seconds: float = TIMEOUT
) -> None:
    """Poll `condition` until it holds (or `seconds` pass): only for states with no event."""
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - nothing to await: the state is polled
            await trio.sleep(interval)


async def wait_until_ready(url: str, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll a starting replica's /readyz (as swarm does) until it answers 200.

    `alive` says whether the replica's process still runs: a crash fails at once.
    """
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        with trio.fail_after(TIMEOUT):
            while True:
                assert alive(), f"the replica at {url} exited while starting"
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                await trio.sleep(0.05)


@dataclass
class RunningReplica:
    """A replica served in the background; `stop()` drains it and waits until it is gone."""

    url: str
    settings: Settings
    app: ChatApp
    _stop: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)

    async def stop(self) -> None:
        self._stop.set()
        with trio.fail_after(TIMEOUT):
            await self.stopped.wait()

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        timeout = httpx.Timeout(TIMEOUT, read=None)
        return httpx.AsyncClient(base_url=self.url, timeout=timeout, **kwargs)


async def open_raw(replica: RunningReplica) -> trio.SocketStream:
    """A plain TCP connection to a replica, to send and read exact bytes."""
    host, port = replica.url.removeprefix("http://").split(":")
    return await trio.open_tcp_stream(host, int(port))


class EventStream:
    """An open SSE response, read event by event with a timeout."""

    def __init__(self, response: httpx.Response, events: AsyncIterator[ServerSentEvent]) -> None:
        self.response = response
        self._events = events
        self.presence: dict[str, Any] = {}  # the snapshot the stream opened with

    async def next_event(self) -> ServerSentEvent:
        """The next event or comment; raises StopAsyncIteration when the stream ends."""
        with trio.fail_after(TIMEOUT):
            return await anext(self._events)

    async def next_named(self, name: str) -> ServerSentEvent:
        """Skip comments and other events up to the next event called `name`."""
        while True:
            event = await self.next_event()
            if event.event == name:
                return event

    async def messages(self, count: int) -> list[ServerSentEvent]:
        """The next `count` chat messages."""
        return [await self.next_named("message") for _ in range(count)]

    async def rest(self) -> list[ServerSentEvent]:
        """Every remaining event until the server ends the stream."""
        remaining = []
        with trio.fail_after(TIMEOUT):
            async for event in self._events:
                remaining.append(event)
        return remaining


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, path: str = "/events", headers: dict[str, str] | None = None
) -> AsyncIterator[EventStream]:
    """GET an SSE path and wait for its `ready` event."""
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        async with aclosing(read_events(response)) as events:
            stream = EventStream(response, events)
            ready = await stream.next_event()
            assert ready.event == "ready", ready
            snapshot = await stream.next_event()
            assert snapshot.event == "presence", snapshot
            stream.presence = json.loads(snapshot.data)
            yield stream


async def post(
    client: httpx.AsyncClient, text: str, user: str = "ana", room: str | None = None
) -> dict[str, Any]:
    """Post a message as JSON; assert it was stored; return it."""
    path = f"/rooms/{room}/messages" if room else "/messages"
    response = await client.post(path, json={"user": user, "text": text})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


class Collector:
    """Reads a stream in the background, keeping its messages and counting keepalives."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.messages: list[dict[str, Any]] = []
        self.keepalives = 0

    async def run(self) -> None:
        while True:
            try:
                event = await self.stream.next_event()
            except StopAsyncIteration:
                return
            if event.event == "message":
                self.messages.append(json.loads(event.data))
            elif event.comment == "keepalive":
                self.keepalives += 1

    def has_all(self, ids: set[str]) -> bool:
        return ids <= {message["id"] for message in self.messages}


def sent_away(events: list[ServerSentEvent], least_ms: int) -> dict[str, Any]:
    """Assert a stream ended by sending its client away for a while: a `retry:` jittered in
    [least_ms, 4 x least_ms] and an `unavailable` event; return that event's data."""
    retries = [event.retry for event in events if event.retry is not None]
    assert retries and least_ms <= retries[-1] <= 4 * least_ms, events
    assert events[-1].event == "unavailable", events
    data: dict[str, Any] = json.loads(events[-1].data)
    assert data["error"] and data["message"]
    return data


async def refused_stream(client: httpx.AsyncClient, path: str = "/events") -> list[ServerSentEvent]:
    """GET a stream that the replica turns away: it must still be `200 text/event-stream`
    (an EventSource gives up on anything else), with no `ready`, and end; its events."""
    async with client.stream("GET", path) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"] == "text/event-stream"
        with trio.fail_after(TIMEOUT):
            async with aclosing(read_events(response)) as events:
                received = [event async for event in events]
    assert all(event.event != "ready" for event in received), received
    return received
