"""A new connection's first request: a stream request is served here, below hypercorn.

In a reconnect storm thousands of streams open within a second, and through the ASGI stack
each costs about a millisecond of CPU (hypercorn's protocol objects and tasks, Quart's request
context) and keeps ~220 objects alive for as long as it stays open. A plain `GET` of a stream
on a fresh HTTP/1.1 connection (what an EventSource sends) is read here instead: its head is
parsed by h11, checked by the same rules as the Quart route (`stream_request`), admitted by the
same `stream.admit`, opened by the same `stream.opening`, and then handed to the replica's
keeper, which holds it without a task. Anything else (other routes, HEAD, HTTP/1.0, a request
the rules refuse, a stream asked on a reused connection) goes to hypercorn with the bytes read
so far, and Quart answers it as always.
"""

from __future__ import annotations

import socket as stdlib_socket
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio

from .access import credentials_from
from .direct import LAST_CHUNK, SocketWriter, chunk
from .errors import ApiError
from .replica import Replica
from .response_headers import SECURITY_HEADERS, SSE_HEADERS, cors_headers
from .stream import OpenStream, admit, drain_frame, opening
from .stream_request import read_stream_request

MAX_HEAD = 16 * 1024  # a longer head goes to hypercorn, which refuses it its own way
REFUSAL_SECONDS = 5  # how long a refused client has to read its answer
NEED_MORE = -1
NOT_A_STREAM = 0


def stream_head_length(data: bytes) -> int:
    """How long the head of a stream request at the start of `data` is; NEED_MORE when `data`
    may still become one, NOT_A_STREAM when it cannot (pure)."""
    if not data.startswith(b"GET /"):
        return NEED_MORE if b"GET /".startswith(data) else NOT_A_STREAM
    line_end = data.find(b"\n")
    if line_end < 0:
        return NEED_MORE if len(data) < MAX_HEAD else NOT_A_STREAM
    parts = data[:line_end].split(b" ")
    if len(parts) != 3 or _route(parts[1]) is None:
        return NOT_A_STREAM
    ends = [end + len(blank) for blank in (b"\r\n\r\n", b"\n\n") if (end := data.find(blank)) >= 0]
    if ends:
        return min(ends) if min(ends) <= MAX_HEAD else NOT_A_STREAM
    return NEED_MORE if len(data) < MAX_HEAD else NOT_A_STREAM


def _route(target: bytes) -> tuple[str, str | None] | None:
    """(route rule, room) of a stream target, or None; `/events` has no room in its path."""
    path = target.partition(b"?")[0]
    if path == b"/events":
        return "/events", None
    parts = path.split(b"/")
    if len(parts) == 4 and parts[0] == b"" and parts[1] == b"rooms" and parts[3] == b"events":
        return "/rooms/<room>/events", unquote(parts[2].decode("latin-1"))
    return None


def parse_stream_head(
    head: bytes,
) -> tuple[str, str | None, dict[str, str], dict[str, str]] | None:
    """(route rule, room, query, headers) of a bodiless HTTP/1.1 GET of a stream; None for
    anything hypercorn should see instead (pure)."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(head)
    try:
        request = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(request, h11.Request) or (request.method, request.http_version) != (
        b"GET",
        b"1.1",
    ):
        return None
    route = _route(request.target)
    if route is None:
        return None
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.headers:
        headers.setdefault(raw_name.decode("latin-1"), raw_value.decode("latin-1"))
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        return None
    query: dict[str, str] = {}
    for key, value in parse_qsl(urlsplit(request.target.decode("latin-1")).query, True):
        query.setdefault(key, value)
    return route[0], route[1], query, headers


def response_head(replica: Replica, origin: str | None) -> bytes:
    """The status line and headers of a stream (the Quart route sends the same ones)."""
    settings = replica.settings
    headers: list[tuple[str, str]] = [
        *SSE_HEADERS.items(),
        ("Transfer-Encoding", "chunked"),
        ("Date", formatdate(usegmt=True)),
        ("X-Replica", settings.replica_id),
        *SECURITY_HEADERS,
        ("Vary", "Origin"),
        *cors_headers(settings, origin, preflight=False),
    ]
    lines = [f"{name}: {value}\r\n" for name, value in headers]
    return ("HTTP/1.1 200 \r\n" + "".join(lines) + "\r\n").encode("latin-1")


async def read_first_request(sock: trio.socket.SocketType, seconds: float) -> tuple[bytes, int]:
    """What the client sent first: enough bytes to tell whether it is a stream request, and
    its head's length (or NOT_A_STREAM). Empty bytes: the client sent nothing in `seconds`."""
    data = b""
    with trio.move_on_after(seconds):
        while True:
            received = await sock.recv(MAX_HEAD)
            if not received:
                return data, NOT_A_STREAM
            data += received
            length = stream_head_length(data)
            if length != NEED_MORE:
                return data, length
    return data, NOT_A_STREAM


async def serve_stream(
    replica: Replica, sock: trio.socket.SocketType, data: bytes, head_length: int
) -> bool:
    """Serve the stream request at the start of `data`; False (nothing sent) if hypercorn
    should answer it instead. On True the socket belongs to the keeper, or is closed."""
    parsed = parse_stream_head(data[:head_length])
    if parsed is None:
        return False
    route, room, query, headers = parsed
    try:
        peer: Any = sock.getpeername()
        request = read_stream_request(
            replica.settings,
            replica.access,
            room,
            query,
            last_event_id=headers.get("last-event-id"),
            forwarded_for=headers.get("x-forwarded-for"),
            remote_addr=str(peer[0]),
            credentials=credentials_from(headers, query),
        )
    except (ApiError, OSError):
        return False  # the Quart route refuses it, with the same rules, in its own words
    replica.metrics.http_requests.labels(route, "200").inc()
    # As trio's SocketStream does: frames go out at once, and the kernel holds at most 16 KiB
    # not yet sent, so a client that stops reading fills its own buffer (and is cut) quickly.
    sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
    if hasattr(stdlib_socket, "TCP_NOTSENT_LOWAT"):
        sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NOTSENT_LOWAT, 2**14)
    head = response_head(replica, headers.get("origin"))
    admitted = admit(replica, request)
    if isinstance(admitted, bytes):
        await _send_and_close(sock, head + chunk(admitted) + LAST_CHUNK)
        return True
    await _open(admitted, sock, head, client_spoke=len(data) > head_length)
    return True


async def _open(
    stream: OpenStream, sock: trio.socket.SocketType, head: bytes, client_spoke: bool
) -> None:
    """Send the opening and hand the live stream to the keeper; if it cannot get there,
    release it and close its socket."""
    replica = stream.replica
    adopted = False
    try:
        # The opening (a replay may be long) is sent in full, however slowly it is read; the
        # writer's byte limit applies to what is pushed to the stream after it.
        if not await _send_all(sock, head):
            return
        async for frames in opening(stream):
            if not await _send_all(sock, chunk(frames)):
                return
        if client_spoke:  # bytes after a stream request: nothing more is read on it
            await _send_all(sock, chunk(drain_frame(replica)) + LAST_CHUNK)
            return
        writer = SocketWriter(sock, replica.settings.client_buffer_bytes, replica.keeper)
        stream.attach(writer)
        adopted = replica.keeper.adopt(stream)
        if not adopted:
            writer.write(chunk(drain_frame(replica)) + LAST_CHUNK)
            await writer.flush()
    finally:
        if not adopted:
            stream.release()
            sock.close()


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> bool:
    """Send all of `data`, waiting as the client reads; False if the connection failed."""
    view = memoryview(data)
    try:
        while view:
            view = view[await sock.send(view) :]
    except OSError:
        return False
    return True


async def _send_and_close(sock: trio.socket.SocketType, data: bytes) -> None:
    try:
        with trio.move_on_after(REFUSAL_SECONDS):
            await _send_all(sock, data)
    finally:
        sock.close()


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A socket stream whose first received bytes are `prefix` (read before hypercorn got the
    connection)."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()
