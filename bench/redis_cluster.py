"""A private Redis Cluster for cluster300 (3 primaries, 3 replicas), its layout, and rooms chosen
so that each primary owns the same number.

sse-chat on a cluster keeps every key and the sharded channel of a room under the hash tag
`{<prefix>:room:<room>}`, so the slot of that tag says which primary carries the room.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import servers
from ports import free_cluster_port
from redis.crc import key_slot

SLOTS = 16384
SHARDS = 3
NODE_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "5000",
    "--repl-diskless-sync-delay", "0",  # 5 s by default: each replica would wait that to sync
)  # fmt: skip
SETTLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Node:
    """One node of the layout: its port, the port of its primary (None for a primary), and the
    slot ranges it owns."""

    port: int
    primary: int | None
    slots: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Layout:
    """Who owns which slots, as `CLUSTER NODES` says."""

    nodes: tuple[Node, ...]

    @property
    def primaries(self) -> list[Node]:
        """The primaries that own slots, by their first slot."""
        owners = [node for node in self.nodes if node.primary is None and node.slots]
        return sorted(owners, key=lambda node: node.slots[0][0])

    @property
    def url(self) -> str:
        """SSE_CHAT_REDIS_URL for the cluster: every primary as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.primaries)

    def labels(self) -> dict[int, str]:
        """port -> `primary N (slots a-b)`, then port -> `replica of N`; N counts primaries by
        their first slot."""
        labels = {}
        numbers = {primary.port: number for number, primary in enumerate(self.primaries, 1)}
        for primary in self.primaries:
            ranges = " ".join(f"{first}-{last}" for first, last in primary.slots)
            labels[primary.port] = f"primary {numbers[primary.port]} (slots {ranges})"
        for primary in self.primaries:
            for node in self.nodes:
                if node.primary == primary.port:
                    labels[node.port] = f"replica of {numbers[primary.port]}"
        return labels

    def shard_ranges(self) -> list[tuple[tuple[int, int], ...]]:
        """Each primary's slot ranges, by first slot."""
        return [primary.slots for primary in self.primaries]


def parse_cluster_nodes(text: str) -> Layout:
    """The layout from `CLUSTER NODES` (migration markers such as `[93->-id]` left out)."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    port_of = {row[0]: int(row[1].split("@")[0].rsplit(":", 1)[1]) for row in rows}
    nodes = []
    for row in rows:
        ranges = []
        for field in row[8:]:
            if not field.startswith("["):
                first, _, last = field.partition("-")
                ranges.append((int(first), int(last or first)))
        primary = None if row[3] == "-" else port_of.get(row[3])
        nodes.append(Node(port_of[row[0]], primary, tuple(ranges)))
    return Layout(tuple(sorted(nodes, key=lambda node: node.port)))


def even_ranges(shards: int = SHARDS) -> list[tuple[tuple[int, int], ...]]:
    """The slots as `redis-cli --cluster create` splits them over `shards` primaries (for 3:
    0-5460, 5461-10922, 10923-16383): where a fresh cluster puts the rooms."""
    ranges = []
    first = 0
    for shard in range(shards):
        last = SLOTS - 1 if shard == shards - 1 else round((shard + 1) * SLOTS / shards - 1)
        ranges.append(((first, last),))
        first = last + 1
    return ranges


def room_slot(room: str, prefix: str = "sse-chat") -> int:
    """The slot of the room's hash tag, `{<prefix>:room:<room>}`."""
    return int(key_slot(f"{{{prefix}:room:{room}}}".encode()))


def rooms_per_shard(
    shards: list[tuple[tuple[int, int], ...]], per_shard: int, stem: str = "c300-"
) -> list[str]:
    """`per_shard` rooms named `<stem><n>` whose slot each shard owns, n counting up from 0
    (the same rooms for the same slot ranges); interleaved shard by shard."""
    chosen: list[list[str]] = [[] for _ in shards]
    n = 0
    while any(len(rooms) < per_shard for rooms in chosen):
        room = f"{stem}{n}"
        slot = room_slot(room)
        for index, ranges in enumerate(shards):
            if any(first <= slot <= last for first, last in ranges):
                if len(chosen[index]) < per_shard:
                    chosen[index].append(room)
                break
        n += 1
    return [rooms[i] for i in range(per_shard) for rooms in chosen]


def redis_cli(*args: str) -> str:
    """One `redis-cli` call; its output, or RuntimeError with it."""
    done = subprocess.run(["redis-cli", *args], capture_output=True, text=True, timeout=60)
    if done.returncode or done.stdout.startswith(("ERR", "(error)")):
        raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout}{done.stderr}".strip())
    return done.stdout


def settled(ports: list[int]) -> Layout | None:
    """The layout once every node says `cluster_state:ok` and sees the same one: every node,
    `SHARDS` primaries owning every slot, the others replicas of them; and once each replica's
    link to its primary is up (a replica's role reaches the others by gossip, after `redis-cli
    --cluster create` has returned)."""
    layouts = set()
    for port in ports:
        if "cluster_state:ok" not in redis_cli("-p", str(port), "CLUSTER", "INFO"):
            return None
        layouts.add(parse_cluster_nodes(redis_cli("-p", str(port), "CLUSTER", "NODES")))
    if len(layouts) != 1:
        return None
    layout = layouts.pop()
    primaries = layout.primaries
    owned = sum(last - first + 1 for primary in primaries for first, last in primary.slots)
    replicas = [node for node in layout.nodes if node.primary is not None]
    if (
        sorted(node.port for node in layout.nodes) != sorted(ports)
        or len(primaries) != SHARDS
        or owned != SLOTS
        or len(primaries) + len(replicas) != len(ports)
    ):
        return None
    for replica in replicas:
        if "master_link_status:up" not in redis_cli("-p", str(replica.port), "INFO", "replication"):
            return None
    return layout


@contextmanager
def redis_cluster(
    logs: Path, cpu: str | None = servers.SERVER_CPU, size: int = 2 * SHARDS
) -> Iterator[Layout]:
    """`size` fresh cluster nodes, pinned to `cpu` (None: floating), made one cluster (`SHARDS`
    primaries, one replica each) by `redis-cli --cluster create`; yields its settled layout;
    every node is stopped and its directory removed on exit."""
    taken: set[int] = set()
    ports = [free_cluster_port(taken) for _ in range(size)]
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        for port in ports:
            directory = workdir / str(port)
            directory.mkdir()
            log = logs / f"redis-cluster-{port}.log"
            node = servers.start_redis(port, log, "--dir", str(directory), *NODE_ARGS, cpu=cpu)
            stack.callback(servers.stop, node)
        addresses = [f"127.0.0.1:{port}" for port in ports]
        redis_cli("--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes")
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while (layout := settled(ports)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster on {ports} did not settle: see {logs}")
            time.sleep(0.1)  # gossip spreads in its own time
        yield layout
