from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from sse_chat.direct import SocketWriter
from sse_chat.hub import Hub, Subscriber, SubscriptionEnded
from sse_chat.ids import MessageId
from sse_chat.messages import Message


def message(room: str, seq: int) -> Message:
    return Message(MessageId(1, seq), room, "ann", f"text {seq}", "1970-01-01T00:00:00.001Z", "r1")


async def test_publish_reaches_every_subscriber_of_the_room_and_no_other() -> None:
    hub = Hub(capacity=10)
    with (
        hub.subscribe("lobby") as first,
        hub.subscribe("lobby") as second,
        hub.subscribe("other") as other,
    ):
        hub.publish(message("lobby", 1))
        hub.publish(message("other", 2))
        assert await first.receive_batch() == [message("lobby", 1)]
        assert await second.receive_batch() == [message("lobby", 1)]
        assert await other.receive_batch() == [message("other", 2)]


async def test_publish_to_a_room_without_subscribers_does_nothing() -> None:
    hub = Hub(capacity=10)
    hub.publish(message("empty", 1))
    assert hub.rooms() == []


async def test_batch_holds_every_waiting_message_oldest_first() -> None:
    hub = Hub(capacity=10)
    with hub.subscribe("lobby") as subscriber:
        for seq in range(3):
            hub.publish(message("lobby", seq))
        assert await subscriber.receive_batch() == [message("lobby", seq) for seq in range(3)]
        hub.publish(message("lobby", 3))
        assert await subscriber.receive_batch() == [message("lobby", 3)]


async def test_waiting_receiver_wakes_when_a_message_is_published() -> None:
    hub = Hub(capacity=10)
    received: list[Message] = []
    with hub.subscribe("lobby") as subscriber:
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                received.extend(await subscriber.receive_batch())

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            assert received == []
            hub.publish(message("lobby", 1))
    assert received == [message("lobby", 1)]


async def test_full_buffer_cuts_the_subscriber_off_without_affecting_others() -> None:
    hub = Hub(capacity=2)
    with hub.subscribe("lobby") as slow, hub.subscribe("lobby") as fast:
        for seq in range(2):
            hub.publish(message("lobby", seq))
        assert await fast.receive_batch() == [message("lobby", 0), message("lobby", 1)]
        assert not slow.closed
        for seq in range(2, 4):
            hub.publish(message("lobby", seq))
        assert (slow.closed, slow.overflowed) == (True, True)
        with pytest.raises(SubscriptionEnded) as ended:
            await slow.receive_batch()
        assert ended.value.overflowed
        assert not fast.closed
        assert await fast.receive_batch() == [message("lobby", seq) for seq in range(2, 4)]


async def test_a_subscriber_over_capacity_ends_as_overflowed() -> None:
    subscriber = Subscriber("lobby", capacity=1)
    subscriber.push(message("lobby", 1))
    subscriber.push(message("lobby", 2))
    with pytest.raises(SubscriptionEnded) as ended:
        await subscriber.receive_batch()
    assert ended.value.overflowed


async def test_close_ends_waiting_receivers_as_not_overflowed() -> None:
    hub = Hub(capacity=10)
    endings: list[SubscriptionEnded] = []
    with hub.subscribe("lobby") as first, hub.subscribe("other") as second:
        async with trio.open_nursery() as nursery:

            async def receive(subscriber: Subscriber) -> None:
                with pytest.raises(SubscriptionEnded) as ended:
                    await subscriber.receive_batch()
                endings.append(ended.value)

            nursery.start_soon(receive, first)
            nursery.start_soon(receive, second)
            await trio.testing.wait_all_tasks_blocked()
            hub.close()
    assert [ending.overflowed for ending in endings] == [False, False]


async def test_close_drops_undelivered_messages_and_ignores_later_ones() -> None:
    hub = Hub(capacity=10)
    with hub.subscribe("lobby") as subscriber:
        hub.publish(message("lobby", 1))
        hub.close()
        hub.publish(message("lobby", 2))
        with pytest.raises(SubscriptionEnded):
            await subscriber.receive_batch()


async def test_subscribing_to_a_closed_hub_gives_a_closed_subscriber() -> None:
    hub = Hub(capacity=10)
    hub.close()
    with hub.subscribe("lobby") as subscriber:
        assert subscriber.closed
        with pytest.raises(SubscriptionEnded) as ended:
            await subscriber.receive_batch()
        assert not ended.value.overflowed


def test_room_is_removed_when_its_last_subscriber_leaves() -> None:
    hub = Hub(capacity=10)
    with hub.subscribe("lobby"):
        with hub.subscribe("lobby"), hub.subscribe("other"):
            assert sorted(hub.rooms()) == ["lobby", "other"]
            assert hub.subscriber_count() == 3
        assert hub.rooms() == ["lobby"]
        assert hub.has_subscribers("lobby")
        assert not hub.has_subscribers("other")
    assert hub.rooms() == []
    assert hub.subscriber_count() == 0
    assert not hub.has_subscribers("lobby")


def test_subscriber_leaves_its_room_even_when_the_block_raises() -> None:
    hub = Hub(capacity=10)
    with pytest.raises(RuntimeError), hub.subscribe("lobby"):
        raise RuntimeError("client went away")
    assert hub.rooms() == []


@contextlib.contextmanager
def attached(capacity: int = 10) -> Iterator[tuple[SocketWriter, socket.socket]]:
    """A writer to one end of a socket pair, and the other end (the client's, non-blocking)."""
    server, client = socket.socketpair()
    client.setblocking(False)
    with server, client:
        yield SocketWriter(trio.socket.from_stdlib_socket(server), capacity), client


def received_ids(client: socket.socket) -> list[str]:
    data = b""
    with contextlib.suppress(BlockingIOError):
        while part := client.recv(65536):
            data += part
    return [line[4:].decode() for line in data.split(b"\n") if line.startswith(b"id: ")]


async def test_attach_writes_what_queued_after_the_replayed_id_then_each_message() -> None:
    hub = Hub(capacity=10)
    with attached() as (writer, client), hub.subscribe("lobby") as subscriber:
        for seq in range(1, 4):
            hub.publish(message("lobby", seq))  # queued while history was being read
        subscriber.attach(writer, MessageId(1, 1))  # the replay ended with 1-1
        hub.publish(message("lobby", 4))
        assert received_ids(client) == ["1-2", "1-3", "1-4"]


async def test_an_attached_subscriber_skips_live_copies_of_replayed_messages() -> None:
    hub = Hub(capacity=10)
    with attached() as (writer, client), hub.subscribe("lobby") as subscriber:
        subscriber.attach(writer, MessageId(1, 5))  # replay read 1-5 before pub/sub sent it
        for seq in range(4, 8):
            hub.publish(message("lobby", seq))
        assert received_ids(client) == ["1-6", "1-7"]


async def test_an_attached_subscriber_whose_client_is_gone_is_closed_not_overflowed() -> None:
    hub = Hub(capacity=10)
    with (
        attached() as (writer, client),
        hub.subscribe("lobby") as subscriber,
        hub.subscribe("lobby") as other,
    ):
        client.close()
        subscriber.attach(writer, None)
        hub.publish(message("lobby", 1))
        assert (subscriber.closed, subscriber.overflowed) == (True, False)
        assert await other.receive_batch() == [message("lobby", 1)]


async def test_closing_the_hub_wakes_an_attached_stream() -> None:
    hub = Hub(capacity=10)
    with attached() as (writer, _), hub.subscribe("lobby") as subscriber:
        subscriber.attach(writer, None)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.wait_for_work)
                await trio.testing.wait_all_tasks_blocked()
                hub.close()
        assert subscriber.closed


async def test_a_batch_reaches_an_attached_subscriber_as_one_chunk_per_room() -> None:
    hub = Hub(capacity=10)
    batch = [message("lobby", 1), message("dev", 2), message("lobby", 3)]
    with (
        attached() as (writer, client),
        hub.subscribe("lobby") as lobby,
        hub.subscribe("dev") as queued,
    ):
        lobby.attach(writer, None)
        hub.publish_batch(batch)
        data = client.recv(65536)
        size, _, rest = data.partition(b"\r\n")
        assert int(size, 16) == len(rest) - 2  # the whole write is one chunk
        assert [line for line in rest.split(b"\n") if line.startswith(b"id: ")] == [
            b"id: 1-1",
            b"id: 1-3",
        ]
        assert await queued.receive_batch() == [message("dev", 2)]
