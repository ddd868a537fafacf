"""The benchmark's scenarios: the load shapes bench/run.py can run, and what each runs on (pure)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis_cluster import Layout


@dataclass(frozen=True)
class Scenario:
    """One load shape; `messages == 0` holds idle connections only.

    `burst`: the streams open all at once, not in a ramp. `storm`: they open all at once while
    POSTs go at `rate`/s until every stream is ready. `reconnect`: once all are open, that many
    are closed and reopened at once. `open_timeout`: seconds for the streams to be ready.
    `rooms`: messages go round-robin over that many rooms; each stream follows one of them, or
    all of them on one `/events?rooms=` stream if `multi_room`. `shards`: the rooms are chosen
    evenly over that many primaries of a Redis Cluster (by slot). `redis`: what it runs on, in
    turn: `one` Redis, a Redis `cluster`; `redis_floats`: its Redis processes (a one Redis of
    its own too) are not pinned to the servers' CPU. `sse_chat_only`: the peers have nothing to
    compare."""

    name: str
    title: str
    subscribers: int
    messages: int = 0
    rate: float = 1.0
    replicas: int = 1
    burst: bool = False
    storm: bool = False
    reconnect: int = 0
    open_timeout: float = 60.0
    rooms: int = 1
    multi_room: bool = False
    shards: int = 0
    redis: tuple[str, ...] = ("one",)
    redis_floats: bool = False
    sse_chat_only: bool = False

    def key(self, redis: str) -> str:
        """The name of its results on `redis` (the scenario's own, when it runs on one only)."""
        return self.name if len(self.redis) == 1 else f"{self.name}/{redis}"

    def title_on(self, redis: str) -> str:
        if len(self.redis) == 1:
            return self.title
        return f"{self.title}, {REDIS_KINDS[redis]}"

    def scaled(self, factor: float) -> Scenario:
        """The same shape with `factor` times the streams (for a quick smoke run)."""
        if factor == 1:
            return self
        return replace(
            self,
            subscribers=max(1, round(self.subscribers * factor)),
            reconnect=round(self.reconnect * factor),
            title=f"{self.title} x{factor:g}",
        )


# What a scenario can run on: one private Redis, or a private Redis Cluster (redis_cluster.py).
REDIS_KINDS = {"one": "one Redis", "cluster": "Redis Cluster (3 primaries + 3 replicas)"}
SCENARIOS = {
    s.name: s
    for s in (
        Scenario("a", "(a) 1k subs, 200 msg @50/s", 1000, 200, 50),
        Scenario(
            "a5",
            "(a5) as (a), each stream 5 rooms*",
            1000,
            200,
            50,
            rooms=5,
            multi_room=True,
            sse_chat_only=True,
        ),
        Scenario("b", "(b) 5k subs at once, 100 msg @20/s", 5000, 100, 20, burst=True),
        Scenario("c1k", "(c) idle 1k", 1000),
        Scenario("c5k", "(c) idle 5k", 5000),
        Scenario("d", "(d) as (a), 3 replicas*", 1000, 200, 50, replicas=3),
        Scenario("storm", "storm: 5k streams at once, POSTs @20/s", 5000, rate=20, storm=True),
        Scenario(
            "reconnect12k",
            "reconnect12k: 12k idle, 4k reconnect",
            12000,
            reconnect=4000,
            open_timeout=180,
        ),
        Scenario(
            "cluster300",
            "cluster300: 300 rooms x 20 subs, 3 replicas, 300 msg/s x 60 s*",
            6000,
            18000,
            300,
            replicas=3,
            rooms=300,
            shards=3,
            redis=("one", "cluster"),
            redis_floats=True,
            sse_chat_only=True,
        ),
    )
}
NOTES = {
    "a5": "* (a5): sse-chat only (the peer and nchan have no multi-room stream); message ids "
    "are checked per room.",
    "cluster300": "* cluster300: sse-chat only (it measures sse-chat's Redis backplane over "
    "shards); Redis CPU s is INFO cpu over the sending, per node.",
    "d": "* (d): sse-chat runs 3 replicas on CPU 0 sharing one Redis; the others one process.",
}


def rooms_for(scenario: Scenario, serial: int, layout: Layout | None = None) -> list[str]:
    """The rooms of run number `serial`: `r<serial>`, or `r<serial>-1` ... `r<serial>-K`; for a
    sharded scenario the same number on each primary of `layout` (without one, on each part of
    the slots as a fresh cluster splits them), the same rooms in every run."""
    if scenario.shards:
        import redis_cluster  # in bench/.venv

        shards = layout.shard_ranges() if layout else redis_cluster.even_ranges(scenario.shards)
        return redis_cluster.rooms_per_shard(shards, scenario.rooms // scenario.shards)
    if scenario.rooms == 1:
        return [f"r{serial}"]
    return [f"r{serial}-{n}" for n in range(1, scenario.rooms + 1)]
