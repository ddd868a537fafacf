"""Stream slots: caps per replica and per client, checked and taken in one step."""

from __future__ import annotations

import trio

from sse_chat.slots import StreamSlots


def test_take_counts_a_stream_and_give_back_releases_it() -> None:
    slots = StreamSlots(per_replica=10, per_client=3)
    assert slots.take("10.0.0.1") is None
    assert slots.take("10.0.0.2") is None
    assert slots.total == 2
    slots.give_back("10.0.0.1")
    assert slots.total == 1


def test_a_client_at_its_cap_is_refused_while_others_are_not() -> None:
    slots = StreamSlots(per_replica=10, per_client=2)
    assert [slots.take("a") for _ in range(3)] == [None, None, "client_full"]
    assert slots.take("b") is None
    assert slots.total == 3  # a refusal takes nothing


def test_a_full_replica_refuses_everyone_and_says_so_first() -> None:
    slots = StreamSlots(per_replica=2, per_client=1)
    assert slots.take("a") is None
    assert slots.take("b") is None
    assert slots.take("c") == "replica_full"
    assert slots.take("a") == "replica_full"  # both caps reached: the replica's is named
    assert slots.total == 2


def test_give_back_frees_a_slot_for_the_same_client_and_the_replica() -> None:
    slots = StreamSlots(per_replica=2, per_client=2)
    assert slots.take("a") is None and slots.take("a") is None
    assert slots.take("b") == "replica_full"
    slots.give_back("a")
    assert slots.take("b") is None
    assert slots.take("a") == "replica_full"
    slots.give_back("b")
    assert slots.take("a") is None


def test_a_client_that_gave_back_every_slot_starts_afresh() -> None:
    slots = StreamSlots(per_replica=100, per_client=3)
    for _ in range(5):
        assert [slots.take("a") for _ in range(4)] == [None, None, None, "client_full"]
        for _ in range(3):
            slots.give_back("a")
        assert slots.total == 0


async def test_a_hundred_streams_of_one_client_arriving_together_get_exactly_its_cap() -> None:
    slots = StreamSlots(per_replica=1000, per_client=3)
    answers: list[str | None] = []

    async def open_stream() -> None:
        await trio.lowlevel.checkpoint()  # all have arrived before any is counted
        answers.append(slots.take("10.0.0.1"))

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(open_stream)
    assert answers.count(None) == 3
    assert answers.count("client_full") == 97
    assert slots.total == 3
    slots.give_back("10.0.0.1")
    assert slots.take("10.0.0.1") is None
