"""A small client of the HTTP API: post a message, follow a room's stream with resume."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import httpx
import trio

from .sse import ServerSentEvent, SSEDecoder


class ClientError(Exception):
    """A request could not be made or was refused; the message says why, for a person."""


class Refused(ClientError):
    """The server answered with an error; the message is its status and JSON error text."""

    @classmethod
    def by(cls, response: httpx.Response) -> Refused:
        """The refusal `response` (already read) stands for."""
        return cls(f"{response.status_code}: {response.text.strip()}")


class Unreachable(ClientError):
    """No answer from the server: it is down, the address is wrong, or the network is."""


def _not_sent(base_url: str, error: httpx.TransportError | httpx.InvalidURL) -> ClientError:
    """Why a request to `base_url` got no answer, as the error to raise."""
    if isinstance(error, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return ClientError(f"{base_url} is not a URL this client can use: {error}")
    return Unreachable(f"cannot reach {base_url}: {describe_transport_error(error)}")


def describe_transport_error(error: BaseException) -> str:
    """What went wrong with a connection in a few words: `connection refused`, `timed out`."""
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    reasons = list(dict.fromkeys(_os_reasons(error)))  # unique, in order (IPv6, then IPv4...)
    return "; ".join(reasons) or str(error) or type(error).__name__


def _os_reasons(error: BaseException) -> Iterator[str]:
    """The system's words for each OSError with an errno behind `error` (its causes and, for
    a group such as trio's "all attempts to connect failed", every attempt)."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and isinstance(current.errno, int):
            # gaierror's errno is negative and has its own words; os.strerror does not know it
            words = os.strerror(current.errno) if current.errno > 0 else current.strerror
            if words:
                yield words[0].lower() + words[1:]
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        cause = current.__cause__ or current.__context__
        if cause is not None:
            pending.append(cause)


# Retried as the page retries a send: ~30 s in all, a 503's Retry-After honoured up to a cap.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0)
RETRY_AFTER_CAP = 10.0
TRANSIENT_STATUSES = frozenset({502, 503, 504})


async def post_message(
    base_url: str,
    room: str,
    user: str,
    text: str,
    token: str | None = None,
    retry_delays: Sequence[float] = RETRY_DELAYS,
) -> dict[str, Any]:
    """POST a message and return the stored message; Refused or Unreachable otherwise.

    The message is stored once however often it is sent: one Idempotency-Key goes with every
    attempt. A lost answer (the request may have arrived) or a 502/503/504 is retried after
    each of `retry_delays`; a first attempt that cannot connect at all is reported at once,
    since nothing was sent and the address is most likely wrong.
    """
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    path = f"/rooms/{quote(room, safe='')}/messages"
    try:
        client = httpx.AsyncClient(base_url=base_url, timeout=10, headers=headers)
    except httpx.InvalidURL as error:
        raise _not_sent(base_url, error) from None
    async with client:
        for attempt, delay in enumerate((*retry_delays, None)):
            try:
                response = await client.post(path, json={"user": user, "text": text})
            except httpx.TransportError as error:
                if delay is None or (attempt == 0 and not _may_have_arrived(error)):
                    raise _not_sent(base_url, error) from None
            else:
                if response.status_code == 201:
                    body: dict[str, Any] = response.json()
                    return body
                if delay is None or response.status_code not in TRANSIENT_STATUSES:
                    raise Refused.by(response)
                delay = max(delay, min(_retry_after(response), RETRY_AFTER_CAP))
            await trio.sleep(delay)
    raise AssertionError("not reached: the last attempt returns or raises")


def _may_have_arrived(error: httpx.TransportError) -> bool:
    """False when the request surely never left: no connection, or not a URL to send to."""
    return not isinstance(error, httpx.ConnectError | httpx.UnsupportedProtocol)


def _retry_after(response: httpx.Response) -> float:
    """A response's Retry-After in seconds (0 when absent or an HTTP date)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0


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
    base_url: str,
    room: str,
    last_event_id: str | None = None,
    reconnect: bool = True,
    token: str | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Every message of a room from now (or after `last_event_id`), reconnecting as needed.

    The first request must reach the server and be accepted (Unreachable or Refused
    otherwise), so a wrong address or room is reported at once. After that a dropped
    stream, or a stream the server ends with a `retry:` (draining, full), is resumed.
    A 4xx is never retried: the server sends one only when retrying cannot help.
    """
    delay = 1.0
    timeout = httpx.Timeout(10, read=None)
    reached = False
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        client = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers)
    except httpx.InvalidURL as error:
        raise _not_sent(base_url, error) from None
    async with client:
        while True:
            resume = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                async with client.stream(
                    "GET", f"/rooms/{quote(room, safe='')}/events", headers=resume
                ) as response:
                    if response.status_code != 200 and (response.is_client_error or not reached):
                        await response.aread()
                        raise Refused.by(response)
                    reached = True
                    if response.status_code == 200:
                        async with aclosing(read_events(response)) as events:
                            async for event in events:
                                if event.retry is not None:
                                    delay = event.retry / 1000
                                if event.event == "message":
                                    last_event_id = event.id or last_event_id
                                    yield json.loads(event.data)
            except (httpx.TransportError, httpx.InvalidURL) as error:
                if not reached:
                    raise _not_sent(base_url, error) from None
            if not reconnect:
                return
            await trio.sleep(delay)
