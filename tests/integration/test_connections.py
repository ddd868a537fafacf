"""Connections the server means to close are closed, without waiting for the client."""

from __future__ import annotations

import trio

from .conftest import StartReplica
from .support import TIMEOUT, open_raw


async def read_until_closed(conn: trio.SocketStream) -> bytes:
    received = b""
    while chunk := await conn.receive_some(65536):
        received += chunk
    return received


async def test_a_response_that_says_connection_close_is_followed_by_the_close(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(graceful_timeout_seconds=60)
    async with await open_raw(replica) as conn:
        # Refused before its body is read, so the answer says `Connection: close`.
        await conn.send_all(
            b"PUT /messages HTTP/1.1\r\nHost: chat\r\nContent-Length: 5\r\n\r\nhello"
        )
        with trio.fail_after(TIMEOUT):
            answer = await read_until_closed(conn)
    assert answer.startswith(b"HTTP/1.1 405") and b"connection: close" in answer.lower()


async def test_draining_closes_idle_keep_alive_connections_at_once(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(graceful_timeout_seconds=60)
    async with await open_raw(replica) as conn:
        await conn.send_all(b"GET /healthz HTTP/1.1\r\nHost: chat\r\n\r\n")
        with trio.fail_after(TIMEOUT):
            answer = b""
            while b'"status":"ok"' not in answer:
                answer += await conn.receive_some(65536)
            assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" not in answer
            await replica.stop()  # would wait out the 60 s graceful timeout for this connection
            assert await conn.receive_some(65536) == b""
