from __future__ import annotations

import pytest

from sse_chat.backplane import MemoryBackplane, Replay, subscribed
from sse_chat.hub import Hub
from sse_chat.ids import ZERO_ID, MessageId
from sse_chat.messages import Draft, Message
from sse_chat.presence import Presence


class FakeClock:
    """A wall clock that says whatever the test sets."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_backplane(history_size: int = 100) -> tuple[MemoryBackplane, FakeClock, Hub]:
    clock = FakeClock()
    hub = Hub(1 << 20)
    return MemoryBackplane(hub, "r1", history_size, clock=clock), clock, hub


async def post(backplane: MemoryBackplane, count: int, room: str = "lobby") -> list[Message]:
    return [await backplane.append(Draft(room, "ann", f"text {n}")) for n in range(count)]


async def test_append_stamps_the_message_with_clock_time_and_replica() -> None:
    backplane, clock, _ = make_backplane()
    clock.now = 1_700_000_000.123
    message = await backplane.append(Draft("lobby", "ann", "hi"))
    assert message == Message(
        MessageId(1_700_000_000_123, 0), "lobby", "ann", "hi", "2023-11-14T22:13:20.123Z", "r1"
    )


async def test_ids_strictly_increase_even_when_the_clock_repeats_or_goes_back() -> None:
    backplane, clock, _ = make_backplane()
    ids = []
    for now in [100.0, 100.0, 99.0, 50.0, 100.0, 101.0, 101.0]:
        clock.now = now
        ids.append((await backplane.append(Draft("lobby", "ann", "hi"))).id)
    assert ids == [
        MessageId(100_000, 0),
        MessageId(100_000, 1),
        MessageId(100_000, 2),
        MessageId(100_000, 3),
        MessageId(100_000, 4),
        MessageId(101_000, 0),
        MessageId(101_000, 1),
    ]


async def test_each_room_has_its_own_id_sequence() -> None:
    backplane, _, _ = make_backplane()
    [first] = await post(backplane, 1, room="a")
    [second] = await post(backplane, 1, room="b")
    assert first.id == second.id


@pytest.mark.parametrize(
    ("limit", "expected"), [(1, [4]), (3, [2, 3, 4]), (5, [0, 1, 2, 3, 4]), (50, [0, 1, 2, 3, 4])]
)
async def test_recent_returns_the_last_messages_oldest_first(
    limit: int, expected: list[int]
) -> None:
    backplane, _, _ = make_backplane()
    posted = await post(backplane, 5)
    assert await backplane.recent("lobby", limit) == [posted[n] for n in expected]


@pytest.mark.parametrize("limit", [0, -1])
async def test_recent_with_no_limit_left_returns_nothing(limit: int) -> None:
    backplane, _, _ = make_backplane()
    await post(backplane, 3)
    assert await backplane.recent("lobby", limit) == []


async def test_unknown_room_has_no_history() -> None:
    backplane, _, _ = make_backplane()
    assert await backplane.recent("nowhere", 10) == []
    assert await backplane.since("nowhere", ZERO_ID) == Replay([], gap=False, oldest=None)


@pytest.mark.parametrize("after", range(5))
async def test_since_returns_exactly_the_later_messages(after: int) -> None:
    backplane, _, _ = make_backplane()
    posted = await post(backplane, 5)
    replay = await backplane.since("lobby", posted[after].id)
    assert replay == Replay(posted[after + 1 :], gap=False, oldest=posted[0].id)


async def test_since_an_id_between_messages_returns_those_after_it() -> None:
    backplane, clock, _ = make_backplane()
    [first] = await post(backplane, 1)
    clock.now += 1
    [second] = await post(backplane, 1)
    between = MessageId(first.id.ms, first.id.seq + 5)
    assert (await backplane.since("lobby", between)).messages == [second]


async def test_history_keeps_only_the_newest_history_size_messages() -> None:
    backplane, _, _ = make_backplane(history_size=3)
    posted = await post(backplane, 5)
    assert await backplane.recent("lobby", 10) == posted[2:]
    assert (await backplane.since("lobby", ZERO_ID)).oldest == posted[2].id


@pytest.mark.parametrize(
    ("after", "gap"),
    [
        # posted[0] and posted[1] were trimmed; posted[2:] are retained.
        (None, True),
        (0, True),
        (1, False),
        (2, False),
        (4, False),
    ],
)
async def test_gap_is_reported_only_when_a_message_after_the_id_was_trimmed(
    after: int | None, gap: bool
) -> None:
    backplane, _, _ = make_backplane(history_size=3)
    posted = await post(backplane, 5)
    after_id = ZERO_ID if after is None else posted[after].id
    replay = await backplane.since("lobby", after_id)
    assert replay.gap is gap
    assert replay.messages == [m for m in posted[2:] if m.id > after_id]
    assert replay.oldest == posted[2].id


async def test_no_gap_before_history_is_full() -> None:
    backplane, _, _ = make_backplane(history_size=3)
    posted = await post(backplane, 3)
    assert await backplane.since("lobby", ZERO_ID) == Replay(posted, gap=False, oldest=posted[0].id)


async def test_append_publishes_to_the_rooms_subscribers() -> None:
    backplane, _, hub = make_backplane()
    async with subscribed(backplane, hub, "lobby") as subscriber:
        with hub.subscribe("other") as other:
            posted = await post(backplane, 2)
            [elsewhere] = await post(backplane, 1, room="other")
            assert await subscriber.receive_batch() == posted
            assert await other.receive_batch() == [elsewhere]
    assert hub.rooms() == []


async def test_memory_backplane_is_always_connected() -> None:
    backplane, _, _ = make_backplane()
    assert backplane.connected
    await backplane.wait_connected()  # returns at once


async def test_last_forwarded_is_the_rooms_newest_id() -> None:
    backplane, _, _ = make_backplane(history_size=2)
    assert backplane.last_forwarded("lobby") is None
    posted = await post(backplane, 3)
    assert backplane.last_forwarded("lobby") == posted[-1].id
    assert backplane.last_forwarded("other") is None


async def test_presence_counts_a_user_until_the_last_of_their_streams_is_absent() -> None:
    backplane, _, hub = make_backplane()
    with hub.subscribe("lobby") as subscriber:
        backplane.mark_present("lobby", "ann")
        backplane.mark_present("lobby", "ann")  # a second tab: no news
        joined = subscriber.take_presence()
        backplane.mark_present("lobby", "bob")
        backplane.mark_absent("lobby", "ann")
        assert subscriber.take_presence() == Presence("lobby", ("ann", "bob"), joined="bob")
        assert await backplane.presence("lobby") == Presence("lobby", ("ann", "bob"))
        backplane.mark_absent("lobby", "ann")
        assert subscriber.take_presence() == Presence("lobby", ("bob",), left="ann")
    assert joined == Presence("lobby", ("ann",), joined="ann")
