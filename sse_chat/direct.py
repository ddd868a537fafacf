"""Writing a stream's frames straight to its client's socket, below Quart and h11.

Fanning a message out through the ASGI stack costs each stream a task switch, an ASGI send,
an h11 event and a trio `send_all`. Once a stream's headers are out, its frames are written here
instead: the hub calls `SocketWriter.write` for every stream of a room in one loop, and the
kernel usually takes the bytes at once. What it does not take waits in the writer's buffer,
which the stream's own task flushes when the socket is writable again.

The bytes are HTTP/1.1 chunks (the response is `Transfer-Encoding: chunked`), so the server
ends the response normally once the stream's task returns.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from functools import lru_cache

import trio

from . import sse
from .messages import Message

# The socket of the connection the current task serves, when our own accept loop took it.
connection_socket: ContextVar[trio.socket.SocketType | None] = ContextVar(
    "connection_socket", default=None
)


def chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


@lru_cache(maxsize=256)
def message_chunk(message: Message) -> bytes:
    """A message's frame as a chunk, encoded once however many streams it goes to."""
    return chunk(sse.message_frame(message))


KEEPALIVE_CHUNK = chunk(sse.KEEPALIVE_FRAME)


class SocketWriter:
    """Non-blocking writes to one socket, with a bounded buffer for what the kernel refuses.

    `write` never waits. A writer whose buffer holds more than `capacity` frames is full: it
    takes nothing more (its client fell behind). `flush` waits until the buffer is written.
    """

    __slots__ = ("_buffer", "_capacity", "_frames", "_lot", "_socket", "broken", "full")

    def __init__(self, socket: trio.socket.SocketType, capacity: int) -> None:
        self._socket = socket
        self._capacity = capacity
        self._buffer = bytearray()
        self._frames = 0  # frames (or parts of one) waiting in the buffer
        self._lot = trio.lowlevel.ParkingLot()
        self.broken = False  # the connection failed or was closed
        self.full = False

    @property
    def ok(self) -> bool:
        """Still taking frames."""
        return not (self.broken or self.full)

    def write(self, data: bytes) -> bool:
        """Write or buffer `data`; False once the writer is broken or full (nothing written)."""
        if self.broken or self.full:
            return False
        if self._buffer:
            if self._frames >= self._capacity:
                self.full = True
                self._lot.unpark_all()
                return False
            self._buffer += data
            self._frames += 1
            return True
        fd = self._socket.fileno()
        if fd < 0:  # closed by the server (the client went away)
            self.broken = True
            self._lot.unpark_all()
            return False
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            self.broken = True
            self._lot.unpark_all()
            return False
        if written < len(data):
            self._buffer += data[written:]
            self._frames = 1
            self._lot.unpark_all()
        return True

    def wake(self) -> None:
        """Make a waiting `wait_for_work` return (the subscription ended)."""
        self._lot.unpark_all()

    async def wait_for_work(self) -> None:
        """Return when there is something to flush, or after `wake`."""
        if not self._buffer:
            await self._lot.park()

    async def flush(self) -> bool:
        """Wait until everything buffered is written; False if the connection failed."""
        while self._buffer and not self.broken:
            if self._socket.fileno() < 0:
                self.broken = True
                break
            try:
                await trio.lowlevel.wait_writable(self._socket)
                written = os.write(self._socket.fileno(), self._buffer)
            except BlockingIOError:
                continue
            except (OSError, trio.ClosedResourceError):
                self.broken = True
                break
            del self._buffer[:written]
        if not self._buffer:
            self._frames = 0
        return not self.broken
