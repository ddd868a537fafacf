"""Clients that misbehave on purpose: the replica answers them and everyone else is served."""

from __future__ import annotations

import json

import trio

from .conftest import StartReplica
from .support import TIMEOUT, RunningReplica, open_raw, open_stream, post


async def _response(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(TIMEOUT):
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    return data


async def _others_still_served(replica: RunningReplica) -> None:
    async with replica.client() as client, open_stream(client) as stream:
        message = await post(client, "still here")
        assert json.loads((await stream.next_named("message")).data) == message


async def test_a_body_trickled_slowly_is_refused_with_408(start_replica: StartReplica) -> None:
    replica = await start_replica(body_timeout_seconds=0.3)
    slow = await open_raw(replica)
    await slow.send_all(
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 40\r\n\r\n{"user"'
    )
    await _others_still_served(replica)  # while the slow body is pending
    answer = await _response(slow)
    await slow.aclose()
    assert answer.startswith(b"HTTP/1.1 408")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "request_timeout"


async def test_a_10_mb_body_is_refused_with_413_without_reading_it(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica()
    big = await open_raw(replica)
    await big.send_all(
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10485760\r\n\r\n" + b"x" * 65536
    )
    answer = await _response(big)
    await big.aclose()
    assert answer.startswith(b"HTTP/1.1 413")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "payload_too_large"
    await _others_still_served(replica)


async def test_a_huge_header_is_refused_and_the_replica_stays_healthy(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica()
    huge = await open_raw(replica)
    await huge.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * 200_000)
    data = b""
    with trio.fail_after(TIMEOUT):
        while chunk := await huge.receive_some(65536):
            data += chunk
    await huge.aclose()
    assert data.startswith(b"HTTP/1.1 4")  # refused by the HTTP layer, connection closed
    await _others_still_served(replica)
