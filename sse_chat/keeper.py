"""The keeper of a replica's open streams: one task and one epoll for all of them.

A stream that is live needs no task of its own: the hub writes its frames straight to its
socket (`direct`). What is left is watching: whether the client went away or sent something
(which ends the stream), whether the socket can take bytes that waited, a keepalive after each
quiet interval, and the stream's end when the replica drains. One task does that for every
stream the intake opened, through an epoll of its own that trio waits on like any socket. An
idle stream then costs a handful of small objects, not a task with its coroutines, cancel
scopes and buffers, which is what lets a replica hold tens of thousands of them and take
thousands at once without long garbage-collector pauses.

Rules it keeps: every stream it holds is released exactly once (`OpenStream.release`) and its
socket closed; a stream whose subscription ended cleanly (draining) gets its drain frame and
the last chunk before the socket closes; a cut or broken one is closed at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import select

import trio

from . import sse
from .direct import KEEPALIVE_CHUNK, LAST_CHUNK, SocketWriter, chunk
from .stream import OpenStream, drain_frame, expired_frame

log = logging.getLogger(__name__)

_WATCH = select.EPOLLIN | select.EPOLLRDHUP
_ENDED = select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP
MAX_EVENTS = 1024  # handled per wake-up, so one busy moment cannot starve the other tasks


class StreamKeeper:
    """Holds streams between messages (see the module's docstring)."""

    def __init__(self, keepalive_seconds: float, retry_ms: int) -> None:
        self._keepalive_seconds = keepalive_seconds
        self._retry_ms = retry_ms
        self._streams: dict[int, OpenStream] = {}  # by socket fd
        self._ending: set[int] = set()  # streams waiting to flush their last bytes
        self._attention: set[int] = set()  # writers that changed since the keeper looked
        self._epoll: select.epoll | None = None
        self._wakeup = -1  # an eventfd in the epoll: `writer_changed` rings it
        self._stopping = False
        # (deadline, serial, fd, stream) of streams whose token expires: they end then.
        self._expiring: list[tuple[float, int, int, OpenStream]] = []
        self._serial = itertools.count()
        self._expiring_changed = trio.Event()

    def __len__(self) -> int:
        return len(self._streams)

    # -- taking streams ---------------------------------------------------------------------
    def adopt(self, stream: OpenStream) -> bool:
        """Hold `stream` (its writer attached) until it ends: the keeper owns its socket now.
        False (and nothing taken) once the keeper has stopped."""
        writer = stream.writer
        assert writer is not None
        if self._epoll is None or self._stopping:
            return False
        fd = writer.socket.fileno()
        self._streams[fd] = stream
        deadline = stream.deadline
        if deadline is not None:
            heapq.heappush(self._expiring, (deadline, next(self._serial), fd, stream))
            self._expiring_changed.set()
        self._epoll.register(fd, _WATCH | (select.EPOLLOUT if writer.pending else 0))
        self._look_at(fd)
        return True

    def writer_changed(self, writer: SocketWriter) -> None:
        """A writer has bytes waiting, became full or broken, or its subscription ended."""
        fd = writer.socket.fileno()
        if fd in self._streams:
            if not self._attention:
                os.eventfd_write(self._wakeup, 1)
            self._attention.add(fd)

    # -- the task ---------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch every adopted stream until cancelled, or until `stop` and no stream is left.
        Streams still held then are closed."""
        with select.epoll() as epoll:
            self._epoll, self._wakeup = epoll, os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            epoll.register(self._wakeup, select.EPOLLIN)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_keepalives)
                    nursery.start_soon(self._end_expired)
                    task_status.started()
                    while not (self._stopping and not self._streams):
                        await trio.lowlevel.wait_readable(epoll.fileno())
                        self._handle(epoll.poll(0, MAX_EVENTS))
                    nursery.cancel_scope.cancel()
            finally:
                for fd in list(self._streams):
                    self._close(fd)
                os.close(self._wakeup)
                self._epoll = None

    def stop(self) -> None:
        """Return from `run` once the last stream has ended (the replica is draining)."""
        self._stopping = True
        if self._epoll is not None:
            os.eventfd_write(self._wakeup, 1)

    def _handle(self, events: list[tuple[int, int]]) -> None:
        for fd, mask in events:
            if fd == self._wakeup:
                os.eventfd_read(self._wakeup)
                attention, self._attention = self._attention, set()
                for changed in attention:
                    self._look_at(changed)
                continue
            stream = self._streams.get(fd)
            if stream is None:
                continue
            if mask & select.EPOLLIN and fd not in self._ending:
                self._read_from_client(fd, stream)
            elif mask & _ENDED:
                self._close(fd)
            elif mask & select.EPOLLOUT:
                self._look_at(fd)

    def _look_at(self, fd: int) -> None:
        """Act on a stream's state: close it, end it, or flush what waits for its socket."""
        stream = self._streams.get(fd)
        if stream is None:
            return
        writer = stream.writer
        assert writer is not None and self._epoll is not None
        if not writer.ok:
            self._close(fd)
            return
        if stream.closed and fd not in self._ending:
            self._end(fd, drain_frame(stream.replica))
            return
        if not writer.flush_nowait():
            self._epoll.modify(fd, _WATCH | select.EPOLLOUT)
        elif fd in self._ending or not writer.ok:
            self._close(fd)
        else:
            self._epoll.modify(fd, _WATCH)

    def _read_from_client(self, fd: int, stream: OpenStream) -> None:
        """The client closed its end, or sent bytes (a stream request has no successor on
        its connection): end the stream, cleanly if the client is still there."""
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(fd)
        else:
            self._end(fd, sse.retry_frame(self._retry_ms))

    def _end(self, fd: int, frames: bytes) -> None:
        """Send the last frames and the last chunk, then close once they are out."""
        stream = self._streams[fd]
        assert stream.writer is not None
        stream.close()
        self._ending.add(fd)
        stream.writer.write(chunk(frames) + LAST_CHUNK)
        self._look_at(fd)

    def _close(self, fd: int) -> None:
        stream = self._streams.pop(fd)
        self._ending.discard(fd)
        self._attention.discard(fd)
        writer = stream.writer
        assert writer is not None and self._epoll is not None
        self._epoll.unregister(fd)
        if writer.full:
            stream.replica.metrics.slow_clients_cut.inc()
        stream.release()
        writer.socket.close()

    async def _end_expired(self) -> None:
        """End each stream whose token expired (a reconnect then needs a new token)."""
        while True:
            first = self._expiring[0][0] if self._expiring else math.inf
            with trio.move_on_at(first):
                self._expiring_changed = trio.Event()
                await self._expiring_changed.wait()  # a sooner one may come
            now = trio.current_time()
            while self._expiring and self._expiring[0][0] <= now:
                _, _, fd, stream = heapq.heappop(self._expiring)
                if self._streams.get(fd) is stream and fd not in self._ending:
                    self._end(fd, expired_frame(stream.replica))

    async def _send_keepalives(self) -> None:
        """After each quiet interval, a keepalive to every stream that got nothing in it."""
        while True:
            await trio.sleep(self._keepalive_seconds)
            for stream in list(self._streams.values()):
                writer = stream.writer
                assert writer is not None
                if writer.wrote:
                    writer.wrote = False
                elif not stream.closed:
                    stream.subscriber.write(KEEPALIVE_CHUNK)
                    writer.wrote = False
