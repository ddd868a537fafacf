"""Clients of the cluster through its load balancer: browsers' EventSource and a poster."""

from __future__ import annotations

import json
from collections import Counter
from contextlib import aclosing
from typing import Any

import httpx
import trio

from sse_chat.client import read_events

from ..integration.support import TIMEOUT, wait_until


class EventSourceClient:
    """Follows a room as a browser's EventSource does (and as the page does on a refusal).

    When its stream ends, breaks or is refused, it waits the last `retry:` the server sent and
    reconnects, sending `Last-Event-ID`: the load balancer may send it to any replica.
    """

    def __init__(self, name: str, base_url: str, max_connects: int = 200) -> None:
        self.name = name
        self.base_url = base_url
        self.max_connects = max_connects  # bounded: a broken cluster never loops forever
        self.retry_ms = 3000  # until the server says otherwise
        self.last_event_id: str | None = None
        self.messages: list[dict[str, Any]] = []
        self.gaps = 0
        self.replica: str | None = None  # the replica serving its open stream, if one is open
        self.streams: list[str] = []  # the replica of each stream it had, in turn
        self.endings: Counter[str] = Counter()  # how its connections ended: ended, broken, 503...
        self.connected = trio.Event()  # its first stream is open (subscribed)

    async def run(self) -> None:
        timeout = httpx.Timeout(TIMEOUT)  # keepalives come every second: silence is a hang
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout) as client:
            for _ in range(self.max_connects):
                self.endings[await self._follow_once(client)] += 1
                self.replica = None
                await trio.sleep(self.retry_ms / 1000)
        raise AssertionError(f"{self.name} reconnected {self.max_connects} times: {self.endings}")

    async def _follow_once(self, client: httpx.AsyncClient) -> str:
        """One connection, until it ends; how it ended."""
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        try:
            async with client.stream("GET", "/events", headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    return str(response.status_code)
                async with aclosing(read_events(response)) as events:
                    async for event in events:
                        self._take(event.event, event.data, event.id, event.retry)
        except httpx.TransportError as error:
            return f"broken ({type(error).__name__})"
        return "ended"

    def _take(self, name: str, data: str, event_id: str | None, retry: int | None) -> None:
        if retry is not None:
            self.retry_ms = retry
        if event_id is not None:
            self.last_event_id = event_id
        if name == "ready":
            self.replica = json.loads(data)["replica"]
            self.streams.append(self.replica)
            self.connected.set()
        elif name == "message":
            self.messages.append(json.loads(data))
        elif name == "gap":
            self.gaps += 1

    def has_all(self, ids: set[str]) -> bool:
        return ids <= {message["id"] for message in self.messages}


class Poster:
    """Posts numbered messages one after another through the load balancer until stopped."""

    def __init__(self, base_url: str, limit: int = 20000) -> None:
        self.base_url = base_url
        self.limit = limit  # bounded: never posts forever
        self.accepted: list[dict[str, Any]] = []
        self.refused: dict[str, str] = {}  # text -> how its POST failed: its fate is unknown
        self.phase = "steady"  # what the cluster is going through, named in `refused`
        self.stop = trio.Event()
        self.stopped = trio.Event()

    @property
    def posted(self) -> int:
        return len(self.accepted) + len(self.refused)

    async def run(self) -> None:
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=TIMEOUT) as client:
                for n in range(self.limit):
                    if self.stop.is_set():
                        return
                    await self._post(client, f"m{n}")
                    await trio.sleep(0.005)  # a steady rate, not a flood
            raise AssertionError(f"the poster reached its limit of {self.limit} posts")
        finally:
            self.stopped.set()

    async def _post(self, client: httpx.AsyncClient, text: str) -> None:
        try:
            response = await client.post("/messages", json={"user": "poster", "text": text})
        except httpx.TransportError as error:
            self.refused[text] = f"{type(error).__name__} in {self.phase}"
            return
        if response.status_code == 201:
            self.accepted.append(response.json())
            return
        # 503: the replica could not store it; 502/504: HAProxy lost the replica mid-request.
        assert response.status_code in (502, 503, 504), (response.status_code, response.text)
        self.refused[text] = f"{response.status_code} in {self.phase}"
        await trio.sleep(0.05)  # as a client honouring Retry-After would, but briefly

    async def accepted_count_reaches(self, count: int) -> None:
        await wait_until(lambda: len(self.accepted) >= count)


def delivery_faults(client: EventSourceClient, poster: Poster) -> dict[str, int]:
    """What `client` got wrong against what `poster` was told: all zero when nothing is."""
    ids = [message["id"] for message in client.messages]
    accepted_ids = {message["id"] for message in poster.accepted}
    delivered = [message for message in client.messages if message["id"] in accepted_ids]
    extras = [message["text"] for message in client.messages if message["id"] not in accepted_ids]
    return {
        "lost": len(accepted_ids - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        # an accepted message out of place, or changed on the way
        "misordered": sum(a != b for a, b in zip(delivered, poster.accepted, strict=False)),
        # a message that was never posted (only refused posts may appear unannounced)
        "unknown": len(set(extras) - set(poster.refused)),
        "gaps": client.gaps,
    }
