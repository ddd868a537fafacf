"""Slow clients and shutdown: nobody is held up, nothing is left behind."""

from __future__ import annotations

import contextlib
import json
import socket

import trio
import trio.testing

from .conftest import StartReplica
from .support import TIMEOUT, open_stream, post, refused_stream, sent_away, wait_until


def _live_tasks() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for n in task.child_nurseries for child in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def _open_unread_stream(url: str) -> trio.SocketStream:
    """A client that requests a stream, then never reads: its receive buffer is tiny."""
    host, port = url.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return stream


async def test_a_client_that_falls_behind_is_cut_off_and_the_others_get_everything(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(client_buffer_bytes=2048)
    slow = await _open_unread_stream(replica.url)
    text = "x" * 3900
    received = []
    async with replica.client() as client, open_stream(client) as fast:

        async def read_fast() -> None:
            received.extend(await fast.messages(300))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_fast)
            posted = [await post(client, text) for _ in range(300)]
        assert [json.loads(event.data)["id"] for event in received] == [m["id"] for m in posted]

        # Cut off at once: its slot and its subscription are free before it reads anything.
        app_replica = replica.app.replica
        await wait_until(lambda: app_replica.stream_slots.total == 1)
        assert app_replica.hub.subscriber_count() == 1

    # The slow client now reads what reached it before the server ended its connection, long
    # before all 300 messages (about 1.2 MB) were written: it reconnects and resumes.
    data = bytearray()
    with trio.fail_after(TIMEOUT):
        while chunk := await slow.receive_some(65536):
            data += chunk
    await slow.aclose()
    assert data.startswith(b"HTTP/1.1 200")
    assert 0 < data.count(b"event: message\n") < 300
    assert replica.app.replica.metrics.slow_clients_cut._value.get() == 1


async def test_shutdown_ends_every_stream_and_leaves_no_task(
    start_replica: StartReplica,
) -> None:
    await trio.testing.wait_all_tasks_blocked()
    tasks_before = _live_tasks()
    replica = await start_replica()
    # Nested on purpose: the streams close (as a browser would) before the stop is awaited.
    async with trio.open_nursery() as nursery, replica.client() as client:  # noqa: SIM117
        async with (
            open_stream(client) as lobby,
            open_stream(client, "/rooms/dev/events") as dev,
            open_stream(client, "/rooms/dev/events?lastEventId=0-0") as resumed,
        ):
            message = await post(client, "last words", room="dev")
            assert json.loads((await dev.next_named("message")).data) == message
            nursery.start_soon(replica.stop)
            for stream in (lobby, dev, resumed):
                ending = await stream.rest()  # returns only when the server ends the stream
                sent_away(ending, replica.settings.drain_retry_ms)
    assert replica.stopped.is_set()
    await trio.testing.wait_all_tasks_blocked()
    assert _live_tasks() == tasks_before


async def test_new_streams_are_sent_elsewhere_with_200_while_draining(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica()
    async with replica.client() as client, open_stream(client) as stream:
        ready_before = await client.get("/readyz")
        replica.app.replica.drain()
        ready_during = await client.get("/readyz")
        refused = await refused_stream(client)
        ended = await stream.rest()
    assert ready_before.status_code == 200
    assert ready_during.status_code == 503
    assert ready_during.json()["error"] == "unavailable"
    drain_ms = replica.settings.drain_retry_ms
    assert sent_away(refused, drain_ms)["error"] == "draining"
    assert sent_away(ended, drain_ms)["error"] == "draining"


async def test_a_client_that_never_reads_is_disconnected_after_the_send_timeout(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(client_buffer_bytes=2048, send_timeout_seconds=0.5)
    hub = replica.app.replica.hub
    silent = await _open_unread_stream(replica.url)
    async with replica.client() as client:
        await wait_until(lambda: hub.subscriber_count() == 1)  # its request has arrived
        for _ in range(300):  # enough to fill every buffer between us and the silent client
            await post(client, "x" * 3900)
    # The kernel gives up on the connection once nothing was acknowledged for 0.5 s; the
    # server then drops the stream.
    await wait_until(lambda: hub.subscriber_count() == 0)
    # Its connection is over: the server cut it (its buffer overflowed) or the kernel did.
    with trio.fail_after(TIMEOUT), contextlib.suppress(trio.BrokenResourceError):
        while await silent.receive_some(65536):
            pass
    await silent.aclose()
