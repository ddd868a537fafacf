"""Writing a stream's frames straight to its client's socket, below Quart and h11.

Fanning a message out through the ASGI stack costs each stream a task switch, an ASGI send,
an h11 event and a trio `send_all`. Once a stream's headers are out, its frames are written here
instead: the hub calls `SocketWriter.write` for every stream of a room in one loop, and the
kernel usually takes the bytes at once. What it does not take waits in the writer's buffer (the
frames themselves, shared with every other stream, not copies), and the writer's watcher is told
so: the stream's own task (`TaskWatcher`) or the replica's keeper of idle streams flushes it
when the socket is writable again.

Rules it keeps: `write` never waits; a buffer over its byte limit makes the writer `full` (its
client fell behind and is cut off); the bytes are HTTP/1.1 chunks (the response is
`Transfer-Encoding: chunked`).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections import deque
from contextvars import ContextVar
from functools import lru_cache
from typing import Protocol

import trio

from . import sse
from .messages import Message

# The socket of the connection the current task serves, when our own accept loop took it.
connection_socket: ContextVar[trio.socket.SocketType | None] = ContextVar(
    "connection_socket", default=None
)

LAST_CHUNK = b"0\r\n\r\n"
_IOV_MAX = 512  # buffers handed to one writev


def chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


@lru_cache(maxsize=256)
def message_chunk(message: Message) -> bytes:
    """A message's frame as a chunk, encoded once however many streams it goes to."""
    return chunk(sse.message_frame(message))


KEEPALIVE_CHUNK = chunk(sse.KEEPALIVE_FRAME)


class Watcher(Protocol):
    """Who flushes a writer: told when it has bytes waiting, or became full or broken."""

    def writer_changed(self, writer: SocketWriter) -> None: ...


class SocketWriter:
    """Non-blocking writes to one socket, with a byte-bounded buffer for what the kernel refuses.

    `write` never waits. A writer whose buffer would pass `limit` bytes is full: it takes
    nothing more (its client fell behind). `flush_nowait` writes what the socket takes now.
    """

    __slots__ = ("_buffer", "_buffered", "_limit", "_offset", "_socket", "_watcher", "broken",
                 "full", "wrote")  # fmt: skip

    def __init__(self, socket: trio.socket.SocketType, limit: int, watcher: Watcher) -> None:
        self._socket = socket
        self._limit = limit
        self._watcher = watcher
        self._buffer: deque[bytes] | None = None  # made on first use: most streams never wait
        self._buffered = 0  # bytes waiting, from `_offset` into the first buffer
        self._offset = 0
        self.broken = False  # the connection failed or was closed
        self.full = False
        self.wrote = False  # something was written since the keeper last looked

    @property
    def ok(self) -> bool:
        """Still taking frames."""
        return not (self.broken or self.full)

    @property
    def pending(self) -> bool:
        """Bytes wait in the buffer."""
        return self._buffered > 0

    @property
    def socket(self) -> trio.socket.SocketType:
        """The client's socket."""
        return self._socket

    def write(self, data: bytes) -> bool:
        """Write or buffer `data`; False once the writer is broken or full (nothing written)."""
        if self.broken or self.full:
            return False
        self.wrote = True
        if self._buffered:
            if self._buffered + len(data) > self._limit:
                self._cut()
                return False
            assert self._buffer is not None
            self._buffer.append(data)
            self._buffered += len(data)
            return True
        fd = self._socket.fileno()
        if fd < 0:  # closed by the server (the client went away)
            return self._break()
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return self._break()
        if written < len(data):
            if len(data) - written > self._limit:
                self._cut()
                return False
            if self._buffer is None:
                self._buffer = deque()
            self._buffer.append(data)
            self._offset = written
            self._buffered = len(data) - written
            self._watcher.writer_changed(self)
        return True

    def _cut(self) -> None:
        """The client fell behind: drop what waits for it and end its connection now, so
        that whoever waits to flush wakes and the stream's slot and presence are released."""
        self.full = True
        self._buffered, self._buffer = 0, None
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._watcher.writer_changed(self)

    def _break(self) -> bool:
        self.broken = True
        self._watcher.writer_changed(self)
        return False

    def wake(self) -> None:
        """Tell the watcher to look at this writer (its subscription ended)."""
        self._watcher.writer_changed(self)

    def flush_nowait(self) -> bool:
        """Write what the socket takes now; True once nothing is left (or the writer broke)."""
        buffer = self._buffer
        while self._buffered and not self.broken:
            assert buffer is not None
            fd = self._socket.fileno()
            if fd < 0:
                self.broken = True
                break
            views = [memoryview(buffer[0])[self._offset :]]
            views += [buffer[i] for i in range(1, min(len(buffer), _IOV_MAX))]  # type: ignore[misc]
            try:
                written = os.writev(fd, views)
            except BlockingIOError:
                return False
            except OSError:
                self.broken = True
                break
            self._buffered -= written
            written += self._offset
            while buffer and written >= len(buffer[0]):
                written -= len(buffer.popleft())
            self._offset = written
        if self.broken:
            self._buffered, self._buffer = 0, None
        return True

    async def flush(self) -> bool:
        """Wait until everything buffered is written; False if the connection failed or the
        writer is full (its client was cut off)."""
        while not self.flush_nowait():
            try:
                await trio.lowlevel.wait_writable(self._socket)
            except (OSError, trio.ClosedResourceError):
                self.broken = True
        return not (self.broken or self.full)


class TaskWatcher:
    """The watcher of a stream served by its own task: wakes that task."""

    __slots__ = ("_lot",)

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()

    def writer_changed(self, writer: SocketWriter) -> None:
        self._lot.unpark_all()

    async def wait(self) -> None:
        """Until `writer_changed` is called."""
        await self._lot.park()
