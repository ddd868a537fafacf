"""SocketWriter over a real connected socket pair: writes, buffering, limits, failures."""

from __future__ import annotations

import socket

import trio
import trio.testing

from sse_chat.direct import SocketWriter, chunk


def small_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A connected pair whose buffers fill after a few KiB, like a client that stopped reading."""
    server, client = trio.socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return server, client


async def read_exactly(sock: trio.socket.SocketType, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = await sock.recv(65536)
        assert part, "closed early"
        data += part
    return data


def test_chunk_is_http_chunked_framing() -> None:
    assert chunk(b"hello\n") == b"6\r\nhello\n\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


async def test_writes_reach_the_peer_in_order_without_waiting() -> None:
    server, client = trio.socket.socketpair()
    with server, client:
        writer = SocketWriter(server, capacity=4)
        assert writer.write(b"one ") and writer.write(b"two")
        assert await read_exactly(client, 7) == b"one two"
        assert await writer.flush()


async def test_what_the_kernel_refuses_waits_and_is_flushed_in_order() -> None:
    server, client = small_pair()
    with server, client:
        writer = SocketWriter(server, capacity=1000)
        frames = [bytes([65 + n % 26]) * 1000 for n in range(200)]  # far more than the buffers
        assert all(writer.write(frame) for frame in frames)
        received = b""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.flush)
            received = await read_exactly(client, 200_000)
        assert received == b"".join(frames)


async def test_a_writer_more_than_capacity_frames_behind_is_full_and_takes_nothing() -> None:
    server, client = small_pair()
    with server, client:
        writer = SocketWriter(server, capacity=3)
        accepted = 0
        while writer.write(b"x" * 1000):
            accepted += 1
            assert accepted < 1000, "never filled up"
        assert writer.full and not writer.ok
        assert not writer.write(b"y")
        # What it accepted is still delivered when the client catches up.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.flush)
            assert await read_exactly(client, accepted * 1000) == b"x" * 1000 * accepted


async def test_a_closed_peer_breaks_the_writer() -> None:
    server, client = trio.socket.socketpair()
    with server:
        client.close()
        writer = SocketWriter(server, capacity=4)
        assert not writer.write(b"lost")
        assert writer.broken and not writer.ok


async def test_a_socket_closed_locally_breaks_the_writer_instead_of_writing_elsewhere() -> None:
    server, client = trio.socket.socketpair()
    with client:
        writer = SocketWriter(server, capacity=4)
        server.close()  # its descriptor number may be reused by the next connection
        assert not writer.write(b"x")
        assert writer.broken
        assert not await writer.flush()


async def test_wait_for_work_returns_on_wake() -> None:
    server, client = trio.socket.socketpair()
    with server, client:
        writer = SocketWriter(server, capacity=4)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.wait_for_work)
                await trio.testing.wait_all_tasks_blocked()
                writer.wake()
