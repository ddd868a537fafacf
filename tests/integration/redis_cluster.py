"""A real 6-node Redis Cluster (3 primaries, 3 replicas) that tests can fail over and reshard.

The nodes are `RedisServer`s with cluster mode on; the cluster is driven with `redis-cli`, as an
operator would, and every change waits until all live nodes agree on who owns which slot.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path

import trio

from .redis_server import RedisServer
from .support import TIMEOUT

SLOTS = 16384
NODE_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "1000",
    "--appendonly", "no",
    "--repl-diskless-sync-delay", "0",  # 5 s by default: a replica would wait that to sync
)  # fmt: skip


def free_cluster_port(taken: set[int]) -> int:
    """A port that is free together with its cluster bus port (port + 10000)."""
    # Ports below 30000 keep every bus port (30000-39999) clear of every node port.
    while True:
        port = random.randrange(20000, 30000)
        if port in taken:
            continue
        try:
            with socket.socket() as sock, socket.socket() as bus:
                sock.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        taken.add(port)
        return port


@dataclass(frozen=True)
class ClusterNode:
    """One line of `CLUSTER NODES`: a node as some node sees it."""

    id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[str, ...]  # "0-5460", "5461"; migration markers ("[5461->-id]") left out

    @classmethod
    def parse(cls, line: str) -> ClusterNode:
        fields = line.split()
        id, address, flags, primary_id = fields[:4]
        port = int(address.split("@")[0].rsplit(":", 1)[1])
        slots = tuple(s for s in fields[8:] if not s.startswith("["))
        primary = None if primary_id == "-" else primary_id
        return cls(id, port, frozenset(flags.split(",")) - {"myself"}, primary, slots)

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def down(self) -> bool:
        return bool(self.flags & {"fail", "fail?"})

    @property
    def slot_count(self) -> int:
        return sum(last - first + 1 for first, last in self._ranges())

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self._ranges())

    def _ranges(self) -> list[tuple[int, int]]:
        return [(int(s.split("-")[0]), int(s.split("-")[-1])) for s in self.slots]


class RedisCluster:
    """Six cluster nodes the test owns; `start_cluster` starts them and kills them at the end."""

    def __init__(self, nursery: trio.Nursery, directory: Path, size: int = 6) -> None:
        taken: set[int] = set()
        self.nodes = [
            RedisServer(nursery, directory / f"node{n}", *NODE_ARGS, port=free_cluster_port(taken))
            for n in range(size)
        ]
        self._ids: dict[int, str] = {}
        self._startup_ports: list[int] = []

    @property
    def url(self) -> str:
        """The primaries the cluster was created with, as startup nodes (they may fail over)."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self._startup_ports)
        return f"redis+cluster://{hosts}"

    def _live(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def node_at(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    async def start(self) -> None:
        for node in self.nodes:
            await node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        await _redis_cli("--cluster", "create", *addresses, "--cluster-replicas", "1",
                         "--cluster-yes")  # fmt: skip
        await self.wait_until_settled()
        self._startup_ports = [port for _, port in await self.primaries()]

    async def kill_all(self) -> None:
        for node in self.nodes:
            await node.kill()  # a node killed before has no process: nothing to do

    async def command(self, node: RedisServer, *args: str, stdin: str | None = None) -> str:
        """One `redis-cli` call (or several commands on one connection, given as `stdin`)."""
        return await _redis_cli("-p", str(node.port), *args, stdin=stdin)

    async def info(self, node: RedisServer, section: str) -> dict[str, str]:
        lines = (await self.command(node, "INFO", section)).splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    async def node_id(self, node: RedisServer) -> str:
        if node.port not in self._ids:  # kept in nodes.conf: the id survives a restart
            self._ids[node.port] = (await self.command(node, "CLUSTER", "MYID")).strip()
        return self._ids[node.port]

    async def view(self, node: RedisServer) -> list[ClusterNode]:
        """The cluster as `node` sees it."""
        lines = (await self.command(node, "CLUSTER", "NODES")).splitlines()
        return [ClusterNode.parse(line) for line in lines if line.strip()]

    async def primaries(self) -> list[tuple[str, int]]:
        """(node id, port) of each primary that owns slots, by port."""
        view = await self.view(self._live()[0])
        owners = [n for n in view if n.is_primary and n.slots and not n.down]
        return sorted(((n.id, n.port) for n in owners), key=lambda owner: owner[1])

    async def keyslot(self, key: str) -> int:
        return int(await self.command(self._live()[0], "CLUSTER", "KEYSLOT", key))

    async def primary_for(self, key: str) -> RedisServer:
        """The node that owns the slot of `key` (or of a sharded channel of that name)."""
        slot = await self.keyslot(key)
        for node in await self.view(self._live()[0]):
            if node.is_primary and not node.down and node.owns(slot):
                return self.node_at(node.port)
        raise AssertionError(f"no live primary owns slot {slot}")

    async def replica_of(self, primary: RedisServer) -> RedisServer:
        primary_id = await self.node_id(primary)
        view = await self.view(self._live()[0])
        replica = next(n for n in view if n.primary_id == primary_id and not n.down)
        return self.node_at(replica.port)

    async def kill_primary_and_wait_for_failover(self, primary: RedisServer) -> RedisServer:
        """SIGKILL `primary`; returns its replica once it is promoted and every node knows."""
        replica = await self.replica_of(primary)
        await primary.kill()
        replica_id = await self.node_id(replica)
        with trio.fail_after(TIMEOUT):
            while True:
                view = await self.view(replica)
                promoted = any(n.id == replica_id and n.is_primary and n.slots for n in view)
                if promoted and await self.settled():
                    return replica
                await trio.sleep(0.05)  # failover is observed, not announced

    async def restart(self, node: RedisServer) -> None:
        """Start a killed node again: it rejoins (a former primary as a replica)."""
        await node.start()
        await self.wait_until_settled()

    async def migrate_slot(self, slot: int, source: RedisServer, target: RedisServer) -> None:
        """Move one slot and its keys, in the order `redis-cli --cluster reshard` uses."""
        source_id, target_id = await self.node_id(source), await self.node_id(target)
        await self.command(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        await self.command(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while True:
            listed = await self.command(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100")
            keys = [key for key in listed.splitlines() if key]  # no keys: one blank line
            if not keys:
                break
            await self.command(source, "MIGRATE", "127.0.0.1", str(target.port), "", "0",
                               str(TIMEOUT * 1000), "KEYS", *keys)  # fmt: skip
        # The target first, so that the slot is never owned by nobody.
        others = [self.node_at(port) for _, port in await self.primaries()]
        for node in [target, source, *(n for n in others if n not in (target, source))]:
            await self.command(node, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        await self.wait_until_settled()

    async def shard_numsub(self, node: RedisServer, *channels: str) -> dict[str, int]:
        lines = (await self.command(node, "PUBSUB", "SHARDNUMSUB", *channels)).splitlines()
        return {name: int(count) for name, count in zip(lines[::2], lines[1::2], strict=True)}

    async def settled(self) -> bool:
        """Every live node is up, sees the same slot owners and replicas, and serves."""
        live = self._live()
        ports = {node.port for node in live}
        views = set()
        for node in live:
            state = await self.command(node, "CLUSTER", "INFO")
            if "cluster_state:ok" not in state:
                return False
            replication = await self.info(node, "replication")
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
            view = await self.view(node)
            if {n.port for n in view if not n.down} != ports:
                return False  # a live node not yet known (or not yet cleared of a failure)
            owners = [n for n in view if n.is_primary and not n.down]
            if sum(n.slot_count for n in owners) != SLOTS:
                return False
            views.add(frozenset((n.id, n.is_primary, n.primary_id, n.slots) for n in view))
        return len(views) == 1

    async def wait_until_settled(self) -> None:
        with trio.fail_after(TIMEOUT):
            while not await self.settled():  # noqa: ASYNC110 - gossip announces nothing
                await trio.sleep(0.05)


async def _redis_cli(*args: str, stdin: str | None = None) -> str:
    result = await trio.run_process(
        ["redis-cli", "-e", *args],
        stdin=stdin.encode() if stdin is not None else b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    output = result.stdout.decode()
    if result.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)}: {output}{result.stderr.decode()}")
    return output


async def _own(cluster: RedisCluster, task_status: trio.TaskStatus[RedisCluster]) -> None:
    try:
        await cluster.start()
        task_status.started(cluster)
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await cluster.kill_all()


async def start_cluster(nursery: trio.Nursery, tmp_path: Path) -> RedisCluster:
    """A settled cluster whose nodes are all killed when `nursery` is cancelled (test teardown)."""
    cluster: RedisCluster = await nursery.start(_own, RedisCluster(nursery, tmp_path / "cluster"))
    return cluster
