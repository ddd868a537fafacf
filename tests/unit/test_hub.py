"""The hub's fan-out: rooms, byte-bounded queues, cutting off slow subscribers, attached
subscribers written in the publishing loop, and `after` skipping what a client already has."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from sse_chat.direct import SocketWriter, TaskWatcher
from sse_chat.hub import Hub, Subscriber, SubscriptionEnded
from sse_chat.ids import MessageId
from sse_chat.messages import Message
from sse_chat.metrics import Metrics
from sse_chat.presence import Presence

LIMIT = 64 * 1024  # bytes: more than any test queues, unless it means to


def message(room: str, seq: int, text: str = "") -> Message:
    return Message(
        MessageId(1, seq), room, "ann", text or f"text {seq}", "1970-01-01T00:00:00.001Z", "r1"
    )


def big(seq: int) -> Message:
    """A lobby message of about 1 KiB, so that a limit counts a known number of them."""
    return message("lobby", seq, "x" * 1000)


BIG_LIMIT = 2500  # two `big` messages fit, a third does not


async def test_publish_reaches_every_subscriber_of_the_room_and_no_other() -> None:
    hub = Hub(LIMIT)
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
    hub = Hub(LIMIT)
    hub.publish(message("empty", 1))
    assert hub.rooms() == []


async def test_batch_holds_every_waiting_message_oldest_first() -> None:
    hub = Hub(LIMIT)
    with hub.subscribe("lobby") as subscriber:
        for seq in range(3):
            hub.publish(message("lobby", seq))
        assert await subscriber.receive_batch() == [message("lobby", seq) for seq in range(3)]
        hub.publish(message("lobby", 3))
        assert await subscriber.receive_batch() == [message("lobby", 3)]


async def test_publish_batch_queues_each_room_its_own_messages_in_order() -> None:
    hub = Hub(LIMIT)
    with hub.subscribe("lobby") as lobby, hub.subscribe("dev") as dev:
        hub.publish_batch([message("lobby", 1), message("dev", 2), message("lobby", 3)])
        assert await lobby.receive_batch() == [message("lobby", 1), message("lobby", 3)]
        assert await dev.receive_batch() == [message("dev", 2)]


async def test_waiting_receiver_wakes_when_a_message_is_published() -> None:
    hub = Hub(LIMIT)
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


async def test_a_queued_subscriber_over_its_byte_limit_is_cut_off_without_affecting_others() -> (
    None
):
    hub = Hub(BIG_LIMIT)
    with hub.subscribe("lobby") as slow, hub.subscribe("lobby") as fast:
        for seq in range(2):
            hub.publish(big(seq))
        assert await fast.receive_batch() == [big(0), big(1)]
        assert not slow.closed  # two messages fit
        hub.publish(big(2))
        assert (slow.closed, slow.overflowed) == (True, True)
        with pytest.raises(SubscriptionEnded) as ended:
            await slow.receive_batch()
        assert ended.value.overflowed
        assert not fast.closed
        assert await fast.receive_batch() == [big(2)]


async def test_the_byte_limit_counts_what_waits_not_what_was_taken() -> None:
    hub = Hub(BIG_LIMIT)
    with hub.subscribe("lobby") as subscriber:
        for seq in range(6):
            hub.publish(big(seq))
            assert await subscriber.receive_batch() == [big(seq)]
        assert not subscriber.closed


async def test_a_subscriber_over_its_limit_ends_as_overflowed() -> None:
    subscriber = Subscriber("lobby", BIG_LIMIT)
    for seq in range(3):
        subscriber.push(big(seq))
    with pytest.raises(SubscriptionEnded) as ended:
        await subscriber.receive_batch()
    assert ended.value.overflowed


async def test_presence_views_coalesce_and_never_overflow() -> None:
    subscriber = Subscriber("lobby", BIG_LIMIT)
    for count in range(1, 1000):
        subscriber.push_presence(Presence("lobby", ("ann",) * count))
    assert not subscriber.closed
    assert await subscriber.receive_batch() == []  # a presence view alone wakes the receiver
    assert subscriber.take_presence() == Presence("lobby", ("ann",) * 999)
    assert subscriber.take_presence() is None


async def test_receive_batch_skips_messages_up_to_after_and_advances_it() -> None:
    hub = Hub(LIMIT)
    with hub.subscribe("lobby") as subscriber:
        subscriber.after = MessageId(1, 2)  # the replay ended with 1-2
        for seq in range(1, 5):
            hub.publish(message("lobby", seq))  # queued while history was being read
        assert await subscriber.receive_batch() == [message("lobby", 3), message("lobby", 4)]
        assert subscriber.after == MessageId(1, 4)
        hub.publish(message("lobby", 4))  # a second copy of what it has
        hub.publish(message("lobby", 5))
        assert await subscriber.receive_batch() == [message("lobby", 5)]


async def test_close_ends_waiting_receivers_as_not_overflowed() -> None:
    hub = Hub(LIMIT)
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
    hub = Hub(LIMIT)
    with hub.subscribe("lobby") as subscriber:
        hub.publish(message("lobby", 1))
        hub.close()
        hub.publish(message("lobby", 2))
        with pytest.raises(SubscriptionEnded):
            await subscriber.receive_batch()


async def test_subscribing_to_a_closed_hub_gives_a_closed_subscriber() -> None:
    hub = Hub(LIMIT)
    hub.close()
    with hub.subscribe("lobby") as subscriber:
        assert subscriber.closed
        with pytest.raises(SubscriptionEnded) as ended:
            await subscriber.receive_batch()
        assert not ended.value.overflowed


def test_a_new_subscriber_has_the_hubs_limit_and_is_not_yet_in_its_room() -> None:
    hub = Hub(1234)
    subscriber = hub.subscriber("lobby")
    assert (subscriber.room, subscriber.limit) == ("lobby", 1234)
    assert hub.rooms() == []
    hub.add(subscriber)
    assert hub.rooms() == ["lobby"]


def test_remove_says_true_only_for_the_last_subscriber_of_a_room() -> None:
    hub = Hub(LIMIT)
    first, second, other = hub.subscriber("lobby"), hub.subscriber("lobby"), hub.subscriber("dev")
    for subscriber in (first, second, other):
        hub.add(subscriber)
    assert hub.remove(first) is False
    assert hub.has_subscribers("lobby")
    assert hub.remove(second) is True
    assert not hub.has_subscribers("lobby")
    assert hub.remove(second) is False  # removed already
    assert hub.remove(other) is True
    assert hub.rooms() == []


def test_room_is_removed_when_its_last_subscriber_leaves() -> None:
    hub = Hub(LIMIT)
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
    hub = Hub(LIMIT)
    with pytest.raises(RuntimeError), hub.subscribe("lobby"):
        raise RuntimeError("client went away")
    assert hub.rooms() == []


@contextlib.contextmanager
def attached(
    limit: int = LIMIT, *, small: bool = False
) -> Iterator[tuple[SocketWriter, socket.socket]]:
    """A writer to one end of a socket pair, and the other end (the client's, non-blocking).

    `small`: buffers that fill after a few KiB, like a client that stopped reading."""
    server, client = socket.socketpair()
    client.setblocking(False)
    if small:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with server, client:
        yield SocketWriter(trio.socket.from_stdlib_socket(server), limit, TaskWatcher()), client


def received(client: socket.socket) -> bytes:
    """What the client can read now; stops at the end of the connection too."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while part := client.recv(65536):
            data += part
    return data


def received_ids(client: socket.socket) -> list[str]:
    data = received(client)
    return [line[4:].decode() for line in data.split(b"\n") if line.startswith(b"id: ")]


async def test_attach_writes_what_queued_after_the_replayed_id_then_each_message() -> None:
    hub = Hub(LIMIT)
    with attached() as (writer, client), hub.subscribe("lobby") as subscriber:
        for seq in range(1, 4):
            hub.publish(message("lobby", seq))  # queued while history was being read
        subscriber.after = MessageId(1, 1)  # the replay ended with 1-1
        subscriber.attach(writer)
        assert subscriber.writer is writer
        hub.publish(message("lobby", 4))
        assert received_ids(client) == ["1-2", "1-3", "1-4"]


async def test_an_attached_subscriber_skips_live_copies_of_replayed_messages() -> None:
    hub = Hub(LIMIT)
    with attached() as (writer, client), hub.subscribe("lobby") as subscriber:
        subscriber.after = MessageId(1, 5)  # replay read 1-5 before pub/sub sent it
        subscriber.attach(writer)
        for seq in range(4, 8):
            hub.publish(message("lobby", seq))
        assert received_ids(client) == ["1-6", "1-7"]


async def test_an_attached_subscriber_skips_replayed_messages_inside_a_batch() -> None:
    hub = Hub(LIMIT)
    with attached() as (writer, client), hub.subscribe("lobby") as subscriber:
        subscriber.after = MessageId(1, 2)
        subscriber.attach(writer)
        hub.publish_batch([message("lobby", seq) for seq in range(1, 5)])
        hub.publish_batch([message("lobby", seq) for seq in range(5, 7)])
        assert received_ids(client) == ["1-3", "1-4", "1-5", "1-6"]


async def test_attach_writes_a_waiting_presence_view() -> None:
    hub = Hub(LIMIT)
    with attached() as (writer, client), hub.subscribe("lobby") as subscriber:
        hub.publish_presence(Presence("lobby", ("ann",), joined="ann"))
        subscriber.attach(writer)
        assert b"event: presence\n" in received(client)
        hub.publish_presence(Presence("lobby", ("ann", "bob"), joined="bob"))
        assert b'"joined":"bob"' in received(client)


async def test_an_attached_subscriber_whose_client_is_gone_is_closed_not_overflowed() -> None:
    hub = Hub(LIMIT)
    with (
        attached() as (writer, client),
        hub.subscribe("lobby") as subscriber,
        hub.subscribe("lobby") as other,
    ):
        client.close()
        subscriber.attach(writer)
        hub.publish(message("lobby", 1))
        assert (subscriber.closed, subscriber.overflowed) == (True, False)
        assert await other.receive_batch() == [message("lobby", 1)]


async def test_an_attached_subscriber_whose_client_falls_behind_is_cut_off_as_overflowed() -> None:
    hub = Hub(BIG_LIMIT)
    with (
        attached(BIG_LIMIT, small=True) as (writer, client),
        hub.subscribe("lobby") as slow,
        hub.subscribe("lobby") as other,
    ):
        slow.attach(writer)
        seq = 0
        while not slow.closed:
            seq += 1
            assert seq < 1000, "never cut off"
            hub.publish(big(seq))
            assert await other.receive_batch() == [big(seq)]
        assert slow.overflowed and writer.full
        data = received(client)
        assert data and client.recv(1) == b""  # what the kernel took, then the end
        hub.publish(big(seq + 1))
        assert await other.receive_batch() == [big(seq + 1)]


async def test_closing_the_hub_wakes_an_attached_stream() -> None:
    hub = Hub(LIMIT)
    watcher = TaskWatcher()
    server, client = socket.socketpair()
    with server, client, hub.subscribe("lobby") as subscriber:
        writer = SocketWriter(trio.socket.from_stdlib_socket(server), LIMIT, watcher)
        subscriber.attach(writer)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watcher.wait)
                await trio.testing.wait_all_tasks_blocked()
                hub.close()
        assert subscriber.closed


async def test_a_batch_reaches_an_attached_subscriber_as_one_chunk_per_room() -> None:
    hub = Hub(LIMIT)
    batch = [message("lobby", 1), message("dev", 2), message("lobby", 3)]
    with (
        attached() as (writer, client),
        hub.subscribe("lobby") as lobby,
        hub.subscribe("dev") as queued,
    ):
        lobby.attach(writer)
        hub.publish_batch(batch)
        data = client.recv(65536)
        size, _, rest = data.partition(b"\r\n")
        assert int(size, 16) == len(rest) - 2  # the whole write is one chunk
        assert [line for line in rest.split(b"\n") if line.startswith(b"id: ")] == [
            b"id: 1-1",
            b"id: 1-3",
        ]
        assert await queued.receive_batch() == [message("dev", 2)]


async def test_messages_written_to_attached_subscribers_are_counted_as_delivered() -> None:
    metrics = Metrics()
    hub = Hub(LIMIT, metrics)
    with (
        attached() as (first_writer, _),
        attached() as (second_writer, _),
        hub.subscribe("lobby") as first,
        hub.subscribe("lobby") as second,
    ):
        first.attach(first_writer)
        second.attach(second_writer)
        hub.publish_batch([message("lobby", 1), message("lobby", 2)])
    assert metrics.registry.get_sample_value("sse_chat_messages_delivered_total") == 4
