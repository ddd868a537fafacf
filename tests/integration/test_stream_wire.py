"""A stream's bytes on the wire, read by strict parsers: HTTP/1.1 chunks and HTTP/1.0 close.

HTTP/1.1 streams are written straight to the socket below the server's HTTP layer, so their
chunked framing is checked here by h11 (which refuses any malformed chunk), through messages,
keepalives and the end of the stream when the replica drains. Either way the server then
closes the connection itself (streams are `Connection: close`), long before its graceful
timeout would cut it.
"""

from __future__ import annotations

import h11
import trio

from sse_chat.sse import ServerSentEvent, SSEDecoder

from .conftest import StartReplica
from .support import TIMEOUT, open_raw, post, sent_away, wait_until


def decode(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [decoder.feed(line) for line in body.decode().split("\n")]
    return [event for event in events if event is not None]


async def test_an_http11_stream_is_well_formed_chunks_to_its_last_chunk(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(keepalive_seconds=0.1, graceful_timeout_seconds=60)
    texts = ["plain", "ünïcödé ✓ 🎉", "x" * 2000, "<b>markup</b>", "line\\nbreak"]
    parser = h11.Connection(h11.CLIENT)
    body = bytearray()
    async with await open_raw(replica) as conn, replica.client() as client:
        request = h11.Request(method="GET", target="/events", headers=[("Host", "chat")])
        await conn.send_all(parser.send(request))

        async def next_event() -> h11.Event | type[h11.NEED_DATA]:
            event = parser.next_event()
            while event is h11.NEED_DATA:
                parser.receive_data(await conn.receive_some(65536))
                event = parser.next_event()
            if isinstance(event, h11.Data):
                body.extend(event.data)
            return event

        with trio.fail_after(TIMEOUT):
            response = await next_event()
            assert isinstance(response, h11.Response) and response.status_code == 200
            assert (b"transfer-encoding", b"chunked") in response.headers
            posted = [await post(client, text) for text in texts]
            while body.count(b"event: message\n") < len(texts) or b": keepalive" not in body:
                await next_event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(replica.stop)
                while not isinstance(await next_event(), h11.EndOfMessage):
                    pass
                assert await conn.receive_some(65536) == b""  # closed by the server
    events = decode(bytes(body))
    assert [event.event for event in events[:2]] == ["ready", "presence"]
    messages = [event for event in events if event.event == "message"]
    assert [event.id for event in messages] == [message["id"] for message in posted]
    assert [
        event.data.count(text.replace("\\n", "\\\\n"))
        for event, text in zip(messages, texts, strict=True)
    ]
    sent_away(events, 250)  # the drain tells it to come back soon, elsewhere


async def test_an_http10_client_gets_the_same_stream_ended_by_close(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(graceful_timeout_seconds=60)
    received = bytearray()
    async with await open_raw(replica) as conn, replica.client() as client:
        await conn.send_all(b"GET /rooms/old/events HTTP/1.0\r\nHost: chat\r\n\r\n")
        with trio.fail_after(TIMEOUT):
            while b"event: presence" not in received:
                received += await conn.receive_some(65536)
            posted = [await post(client, f"n{n}", room="old") for n in range(3)]
            while received.count(b"event: message\n") < 3:
                received += await conn.receive_some(65536)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(replica.stop)
                while chunk := await conn.receive_some(65536):
                    received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    events = decode(body)
    assert [e.id for e in events if e.event == "message"] == [m["id"] for m in posted]
    sent_away(events, 250)


async def _read_response(conn: trio.SocketStream, parser: h11.Connection) -> bytes:
    """One whole response to a request sent through `parser` (strictly parsed); its body."""
    body = bytearray()
    with trio.fail_after(TIMEOUT):
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                parser.receive_data(await conn.receive_some(65536))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
                assert (b"content-type", b"text/event-stream") in event.headers
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)


async def test_head_of_a_stream_sends_its_headers_only_and_takes_no_slot_or_presence(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(keepalive_seconds=0.05)
    parser = h11.Connection(h11.CLIENT)
    async with await open_raw(replica) as conn, replica.client() as client:
        head = h11.Request(
            method="HEAD", target="/rooms/h/events?user=ghost", headers=[("Host", "c")]
        )
        # A pipelined GET behind it: the HEAD's answer must still parse, and nothing follows
        # it but the answer to that GET or the end of the connection.
        await conn.send_all(parser.send(head) + b"GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n")
        assert await _read_response(conn, parser) == b""
        assert replica.app.replica.stream_slots.total == 0
        assert (await client.get("/rooms/h/presence")).json()["users"] == []
        await post(client, "after the head", room="h")
        rest = b""
        with trio.fail_after(TIMEOUT):
            while data := await conn.receive_some(65536):
                rest += data
    assert b"event:" not in rest and b"keepalive" not in rest
    assert rest == b"" or rest.startswith(b"HTTP/1.1 200")


async def test_bytes_after_a_stream_request_end_the_stream_cleanly(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica()
    parser = h11.Connection(h11.CLIENT)
    async with await open_raw(replica) as conn:
        request = h11.Request(method="GET", target="/rooms/s/events", headers=[("Host", "c")])
        await conn.send_all(parser.send(request))
        received = b""
        with trio.fail_after(TIMEOUT):
            while b"event: presence" not in received:
                received += await conn.receive_some(65536)
        await conn.send_all(b"\r\n")  # a stray CRLF
        parser.receive_data(received)
        body = await _read_response(conn, parser)  # the last chunk comes: the stream ended
        with trio.fail_after(TIMEOUT):
            assert await conn.receive_some(65536) == b""  # and the server closed
    events = decode(body)
    assert [event.event for event in events[:2]] == ["ready", "presence"]
    assert events[-1].retry == replica.settings.retry_ms
    await wait_until(lambda: replica.app.replica.stream_slots.total == 0)
