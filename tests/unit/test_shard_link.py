"""A cluster shard's link: which rooms it serves, by the cluster's layout (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest
from coredis._utils import hash_slot

from sse_chat.backplane.redis.keys import KeyScheme
from sse_chat.backplane.redis.links import NotOwning, ShardLink
from sse_chat.backplane.redis.target import RedisTarget

KEYS = KeyScheme("sse-chat", sharded=True)


@dataclass
class _Node:
    name: str


class _Layout:
    """Slots below `split` on node a, the rest on node b."""

    def __init__(self, split: int) -> None:
        self.split = split

    def node_for_slot(self, slot: int) -> _Node:
        return _Node("127.0.0.1:7000" if slot < self.split else "127.0.0.1:7001")


def _link(layout: _Layout) -> ShardLink:
    target = RedisTarget(cluster=(("127.0.0.1", 7000),))
    return ShardLink(target, "127.0.0.1", 7000, lambda: cast(Any, layout), KEYS, "r1")


def test_a_shard_serves_the_rooms_whose_slot_it_owns_and_pings_on_one_of_its_slots() -> None:
    layout = _Layout(split=8192)
    link = _link(layout)
    rooms = [f"room-{n}" for n in range(40)]
    owned = [room for room in rooms if hash_slot(KEYS.channel(room).encode()) < 8192]
    assert 0 < len(owned) < len(rooms)
    assert [room for room in rooms if link.owns(room)] == owned
    assert hash_slot(link.control().encode()) < 8192


def test_a_shard_that_owns_no_slot_any_more_says_so_instead_of_picking_a_ping_channel() -> None:
    link = _link(_Layout(split=0))  # after a failover every slot is elsewhere
    assert not link.owns("lobby")
    with pytest.raises(NotOwning):
        link.control()
