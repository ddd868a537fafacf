"""SocketWriter over a real connected socket pair: writes, the byte-bounded buffer, the cut-off
of a client that fell behind, failures, and who is told."""

from __future__ import annotations

import socket
import sys

import trio
import trio.testing

from sse_chat import sse
from sse_chat.direct import LAST_CHUNK, SocketWriter, TaskWatcher, chunk, message_chunk
from sse_chat.ids import MessageId
from sse_chat.messages import Message

BIG = 10_000_000  # a limit no test reaches


class RecordingWatcher:
    """Remembers the writer's state each time it is told something changed."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, bool, bool]] = []  # (pending, full, broken)

    def writer_changed(self, writer: SocketWriter) -> None:
        self.calls.append((writer.pending, writer.full, writer.broken))


def small_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A connected pair whose buffers fill after a few KiB, like a client that stopped reading."""
    server, client = trio.socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return server, client


def fill(writer: SocketWriter) -> None:
    """Write until the kernel refuses something, so that the next bytes wait in the buffer."""
    for _ in range(1000):
        writer.write(b"f" * 1000)
        if writer.pending:
            return
    raise AssertionError("the socket never filled up")


async def read_exactly(sock: trio.socket.SocketType, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = await sock.recv(65536)
        assert part, "closed early"
        data += part
    return data


async def read_to_end(sock: trio.socket.SocketType) -> bytes:
    data = b""
    with trio.fail_after(5):
        while part := await sock.recv(65536):
            data += part
    return data


def test_chunk_is_http_chunked_framing() -> None:
    assert chunk(b"hello\n") == b"6\r\nhello\n\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


def test_the_last_chunk_is_the_empty_chunk() -> None:
    assert chunk(b"") == LAST_CHUNK == b"0\r\n\r\n"


def test_a_message_is_encoded_once_however_many_streams_it_goes_to() -> None:
    message = Message(MessageId(1, 1), "lobby", "ann", "hi", "1970-01-01T00:00:00.001Z", "r1")
    assert message_chunk(message) is message_chunk(message)
    assert message_chunk(message) == chunk(sse.message_frame(message))


async def test_writes_reach_the_peer_in_order_without_waiting_or_buffering() -> None:
    server, client = trio.socket.socketpair()
    with server, client:
        watcher = RecordingWatcher()
        writer = SocketWriter(server, 1024, watcher)
        assert writer.write(b"one ") and writer.write(b"two")
        assert not writer.pending
        assert watcher.calls == []
        assert await read_exactly(client, 7) == b"one two"
        assert await writer.flush()


async def test_what_the_kernel_refuses_waits_and_flush_writes_it_in_order() -> None:
    server, client = small_pair()
    with server, client:
        writer = SocketWriter(server, BIG, RecordingWatcher())
        frames = [bytes([65 + n % 26]) * 1000 for n in range(200)]  # far more than the buffers
        assert all(writer.write(frame) for frame in frames)
        assert writer.pending
        flushed: list[bool] = []

        async def flush() -> None:
            flushed.append(await writer.flush())

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flush)
                received = await read_exactly(client, 200_000)
        assert received == b"".join(frames)
        assert flushed == [True]
        assert not writer.pending


async def test_flush_nowait_writes_what_the_socket_takes_and_says_when_nothing_is_left() -> None:
    server, client = small_pair()
    with server, client:
        writer = SocketWriter(server, BIG, RecordingWatcher())
        frames = [b"%05d" % n * 200 for n in range(100)]
        for frame in frames:
            writer.write(frame)
        received = b""
        with trio.fail_after(5):
            while not writer.flush_nowait():  # the socket is full: the client must read
                received += await client.recv(65536)
            assert not writer.pending
            received += await read_exactly(client, 100_000 - len(received))
        assert received == b"".join(frames)


async def test_more_frames_than_one_writev_takes_are_flushed_in_order() -> None:
    server, client = small_pair()
    with server, client:
        writer = SocketWriter(server, BIG, RecordingWatcher())
        frames = [b"%07d\n" % n for n in range(5000)]  # 5,000 buffers waiting at once
        assert all(writer.write(frame) for frame in frames)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.flush)
                received = await read_exactly(client, 40_000)
        assert received == b"".join(frames)


async def test_the_buffer_holds_the_frames_themselves_not_copies() -> None:
    first, first_client = small_pair()
    second, second_client = small_pair()
    with first, first_client, second, second_client:
        writers = [SocketWriter(sock, BIG, RecordingWatcher()) for sock in (first, second)]
        for writer in writers:
            fill(writer)
        frame = b"shared" * 200
        references = sys.getrefcount(frame)
        for writer in writers:
            assert writer.write(frame)
        # Each waiting stream holds a reference to the one frame, not bytes of its own.
        assert sys.getrefcount(frame) == references + len(writers)


async def test_a_writer_whose_buffer_would_pass_its_limit_is_full_cut_off_and_takes_nothing() -> (
    None
):
    server, client = small_pair()
    with server, client:
        writer = SocketWriter(server, 10_000, RecordingWatcher())
        accepted = 0
        while writer.write(b"x" * 1000):
            accepted += 1
            assert accepted < 1000, "never filled up"
        assert writer.full and not writer.ok and not writer.broken
        assert not writer.pending  # what waited for the client is dropped
        assert not writer.write(b"y")
        assert not await writer.flush()
        # Its connection is shut down: the client gets what the kernel took, then the end.
        received = await read_to_end(client)
        assert received == b"x" * len(received)
        waited = accepted * 1000 - len(received)  # bytes the buffer held when it was cut
        assert 10_000 - 1000 < waited <= 10_000


async def test_one_write_larger_than_the_limit_does_not_overfill_the_buffer() -> None:
    server, client = small_pair()
    with server, client:
        writer = SocketWriter(server, 1000, RecordingWatcher())
        writer.write(b"x" * 100_000)  # the kernel takes a few KiB, ~90 KiB would wait
        assert writer.full or not writer.pending


async def test_a_stream_waiting_to_flush_wakes_when_its_client_is_cut_off() -> None:
    server, client = small_pair()
    with server, client:
        writer = SocketWriter(server, 10_000, RecordingWatcher())
        fill(writer)
        flushed: list[bool] = []

        async def flush() -> None:
            flushed.append(await writer.flush())

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flush)
                await trio.testing.wait_all_tasks_blocked()
                assert flushed == []
                while writer.write(b"x" * 1000):
                    pass
        assert flushed == [False]


async def test_the_watcher_is_told_on_first_buffering_and_when_the_writer_is_cut_off() -> None:
    server, client = small_pair()
    with server, client:
        watcher = RecordingWatcher()
        writer = SocketWriter(server, 10_000, watcher)
        assert writer.write(b"x")
        assert watcher.calls == []
        fill(writer)
        assert watcher.calls == [(True, False, False)]
        assert writer.write(b"x" * 1000)  # more waiting bytes: nothing new to say
        assert watcher.calls == [(True, False, False)]
        while writer.write(b"x" * 1000):
            pass
        assert watcher.calls == [(True, False, False), (False, True, False)]
        assert not writer.write(b"x")
        assert len(watcher.calls) == 2


async def test_a_closed_peer_breaks_the_writer_and_the_watcher_is_told() -> None:
    server, client = trio.socket.socketpair()
    with server:
        client.close()
        watcher = RecordingWatcher()
        writer = SocketWriter(server, 1024, watcher)
        assert not writer.write(b"lost")
        assert writer.broken and not writer.ok and not writer.full
        assert watcher.calls == [(False, False, True)]
        assert not writer.write(b"more")
        assert not await writer.flush()


async def test_a_socket_closed_locally_breaks_the_writer_instead_of_writing_elsewhere() -> None:
    server, client = trio.socket.socketpair()
    with client:
        watcher = RecordingWatcher()
        writer = SocketWriter(server, 1024, watcher)
        server.close()  # its descriptor number may be reused by the next connection
        assert not writer.write(b"x")
        assert writer.broken
        assert watcher.calls == [(False, False, True)]
        assert not await writer.flush()


async def test_bytes_waiting_for_a_socket_closed_locally_are_dropped_and_flush_fails() -> None:
    server, client = small_pair()
    with client:
        writer = SocketWriter(server, BIG, RecordingWatcher())
        fill(writer)
        server.close()
        assert writer.flush_nowait()  # nothing left to wait for
        assert writer.broken and not writer.pending
        assert not await writer.flush()


async def test_a_write_marks_the_writer_as_having_written() -> None:
    server, client = trio.socket.socketpair()
    with server, client:
        writer = SocketWriter(server, 1024, RecordingWatcher())
        assert not writer.wrote
        writer.write(b"x")
        assert writer.wrote
        writer.wrote = False  # the keeper looked
        assert await writer.flush()
        assert not writer.wrote  # flushing is not news


async def test_a_task_watcher_wakes_its_task_when_the_writer_changes() -> None:
    server, client = trio.socket.socketpair()
    with server, client:
        watcher = TaskWatcher()
        writer = SocketWriter(server, 1024, watcher)
        woken: list[bool] = []

        async def wait() -> None:
            await watcher.wait()
            woken.append(True)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                await trio.testing.wait_all_tasks_blocked()
                assert woken == []
                writer.wake()
        assert woken == [True]
