"""Failover: how many acknowledged messages a Redis primary failover loses.

    python3 bench/failover.py                 # Redis Cluster, SSE_CHAT_REDIS_MIN_REPLICAS 0 and 1
    python3 bench/failover.py --sentinel      # the same over Sentinel (1 primary, 1 replica)
    python3 bench/failover.py --rounds 3 --knobs 1

Starts a private Redis Cluster (3 primaries, 3 replicas; or a primary, a replica and one
Sentinel, each node with a config file the Sentinel rewrites), one sse-chat replica on it, and
POSTs to one room at a steady rate, each POST on a connection of its own with its own text and
Idempotency-Key. Each round SIGKILLs the primary that owns the room, waits until its replica is
promoted and every node agrees, restarts the killed node (it rejoins as a replica), waits until
its replication link is up, and keeps posting a few seconds more. Then the room's whole stream
is read from Redis and every answer is checked against it: a 201 whose text is not in the
stream is an acknowledged message lost. Nothing else is done to Redis: no pauses, no slowed
links; the only fault is the SIGKILL.

When sse-chat answers no 201 for 30 s although Redis has settled, the round is marked stuck and
sse-chat is restarted (counted in the table; its log keeps why), so the remaining rounds still
measure failovers; the timing rows leave stuck rounds out.

Prints a table and writes `bench/results/failover-<time>.json` (every round's timings, the error
messages, each acknowledged message lost and each refused one stored anyway) and, in
`bench/results/failover-<time>/`, the logs of sse-chat and every Redis node and every POST's
answer (`posts-*.jsonl`: text, sent, answered, outcome, detail, stored). Every process it starts
is stopped when it ends, also on failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
# trio comes with sse-chat: run in the project's venv whatever python3 started us.
if Path(sys.prefix).resolve() != VENV.resolve() and not os.environ.get("FAILOVER_REEXEC"):
    os.environ["FAILOVER_REEXEC"] = "1"
    os.execv(VENV / "bin" / "python", [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, astuple, dataclass, field  # noqa: E402
from typing import Any, Protocol  # noqa: E402

import trio  # noqa: E402
from ports import free_cluster_port  # noqa: E402

ROOM = "failover"
PREFIX = "sse-chat"
SLOTS = 16384
SETTLE_TIMEOUT = 60.0  # seconds a failover or a rejoin may take before the run gives up
RECOVERY_TIMEOUT = 30.0  # seconds sse-chat may take to answer 201 again once Redis settled
POLL = 0.05
POST_TIMEOUT = 10.0  # a POST unanswered this long counts as a transport error
# A connection refused, reset or closed early: trio says so with either kind.
BROKEN = (OSError, trio.BrokenResourceError)
NODE_ARGS = (
    "--save", "",
    "--appendonly", "no",
    "--repl-diskless-sync-delay", "0",  # 5 s by default: a rejoining replica would wait that
)  # fmt: skip
CLUSTER_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "1000",
)  # fmt: skip


# -- Redis, spoken directly (a few commands to chosen nodes; no client library needed) --------
class RedisError(Exception):
    """An error reply."""


async def command(port: int, *args: str | int, within: float = 2.0) -> Any:
    """One command to the node at 127.0.0.1:`port` on a fresh connection; its decoded reply."""
    with trio.fail_after(within):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            parts = [str(arg).encode() for arg in args]
            frame = b"*%d\r\n" % len(parts) + b"".join(
                b"$%d\r\n%s\r\n" % (len(part), part) for part in parts
            )
            await stream.send_all(frame)
            return await _Reply(stream).read()


class _Reply:
    """A RESP2 reply read off a stream."""

    __slots__ = ("buffer", "position", "stream")

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream, self.buffer, self.position = stream, bytearray(), 0

    async def read(self) -> Any:
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        length = int(rest)
        if length < 0:
            return None
        if kind == b"$":
            while len(self.buffer) < self.position + length + 2:
                await self._fill()
            data = self.buffer[self.position : self.position + length].decode()
            self.position += length + 2
            return data
        return [await self.read() for _ in range(length)]

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n", self.position)) < 0:
            await self._fill()
        line = bytes(self.buffer[self.position : end])
        self.position = end + 2
        return line

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(1 << 16)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        del self.buffer[: self.position]
        self.position = 0
        self.buffer += chunk


async def info(port: int, section: str) -> dict[str, str]:
    lines = (await command(port, "INFO", section)).splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


async def answers(port: int) -> bool:
    try:
        return bool(await command(port, "PING", within=0.5) == "PONG")
    except (*BROKEN, RedisError, trio.TooSlowError):
        return False


async def read_bodies(port: int, key: str) -> list[str]:
    """Every entry's message (its `m` field) of the stream `key`, oldest first."""
    bodies: list[str] = []
    start = "-"
    while entries := await command(port, "XRANGE", key, start, "+", "COUNT", 2000, within=10):
        for entry_id, fields in entries:  # noqa: B007 - the last one is where to go on
            bodies.append(dict(zip(fields[::2], fields[1::2], strict=True))["m"])
        start = f"({entry_id}"
    return bodies


async def wait_for(condition: Any, what: str, within: float = SETTLE_TIMEOUT) -> None:
    """Poll `condition()` until it is true; RuntimeError naming `what` after `within` seconds."""
    with trio.move_on_after(within):
        while not await condition():  # noqa: ASYNC110 - Redis announces none of these changes
            await trio.sleep(POLL)
        return
    raise RuntimeError(f"not within {within:g} s: {what}")


# -- processes ---------------------------------------------------------------------------------
class Processes:
    """Every process a run starts, by name, so that all of them are stopped however it ends."""

    def __init__(self) -> None:
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.argv: dict[str, tuple[list[str], Path, dict[str, str] | None]] = {}

    def start(
        self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        """Start `name`; with an empty `argv`, again as it was started before."""
        if argv:
            self.argv[name] = (argv, log, env)
        argv, log, env = self.argv[name]
        with log.open("ab") as out:
            # Its own session: a Ctrl-C reaches this script only, which then stops everything.
            self.running[name] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def alive(self, name: str) -> bool:
        process = self.running.get(name)
        return process is not None and process.poll() is None

    async def kill(self, name: str) -> None:
        """SIGKILL `name` and reap it."""
        process = self.running.pop(name)
        process.kill()
        await trio.to_thread.run_sync(process.wait)

    async def restart(self, name: str) -> None:
        """SIGTERM `name` (SIGKILL after 10 s), then start it again."""
        process = self.running.pop(name)
        process.terminate()
        try:
            await trio.to_thread.run_sync(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await trio.to_thread.run_sync(process.wait)
        self.start(name, [], Path())

    def stop_all(self) -> None:
        """SIGTERM everything, SIGKILL what is still there after 10 s; reap all."""
        for process in self.running.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for process in self.running.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()


# -- the two topologies ------------------------------------------------------------------------
class Topology(Protocol):
    """What a round needs of a Redis deployment."""

    url: str
    stream_key: str

    async def start(self) -> None: ...
    async def room_primary(self) -> int: ...
    async def fail_over(self, primary: int) -> int: ...
    async def restart(self, port: int) -> None: ...
    async def read_stream(self) -> list[str]: ...


@dataclass(frozen=True)
class ClusterNode:
    """One line of `CLUSTER NODES`: a node as some node sees it."""

    id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, line: str) -> ClusterNode:
        fields = line.split()
        id, address, flags, primary_id = fields[:4]
        ranges = []
        for part in fields[8:]:
            if not part.startswith("["):  # a migration marker
                first, _, last = part.partition("-")
                ranges.append((int(first), int(last or first)))
        port = int(address.split("@")[0].rsplit(":", 1)[1])
        primary = None if primary_id == "-" else primary_id
        return cls(id, port, frozenset(flags.split(",")) - {"myself"}, primary, tuple(ranges))

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def down(self) -> bool:
        return bool(self.flags & {"fail", "fail?"})

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


class Cluster:
    """Six nodes: `redis-cli --cluster create ... --cluster-replicas 1`."""

    def __init__(self, processes: Processes, data: Path, logs: Path, taken: set[int]) -> None:
        self.processes, self.data, self.logs = processes, data, logs
        self.ports = [free_cluster_port(taken) for _ in range(6)]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])
        self.stream_key = f"{{{PREFIX}:room:{ROOM}}}:messages"

    async def start(self) -> None:
        for port in self.ports:
            (self.data / str(port)).mkdir(parents=True)
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                    "--dir", str(self.data / str(port)), *CLUSTER_ARGS, *NODE_ARGS]  # fmt: skip
            self.processes.start(f"redis-{port}", argv, self.logs / f"redis-{port}.log")
        for port in self.ports:
            await wait_for(lambda port=port: answers(port), f"redis on {port} answers")
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        await trio.run_process(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1",
             "--cluster-yes"], capture_stdout=True, capture_stderr=True,
        )  # fmt: skip
        await wait_for(self.settled, "the new cluster settles")

    def live(self) -> list[int]:
        return [port for port in self.ports if self.processes.alive(f"redis-{port}")]

    async def view(self, port: int) -> list[ClusterNode]:
        lines = (await command(port, "CLUSTER", "NODES")).splitlines()
        return [ClusterNode.parse(line) for line in lines if line.strip()]

    async def room_primary(self) -> int:
        port = self.live()[0]
        slot = await command(port, "CLUSTER", "KEYSLOT", f"{{{PREFIX}:room:{ROOM}}}")
        for node in await self.view(port):
            if node.is_primary and not node.down and node.owns(slot):
                return node.port
        raise RuntimeError(f"no live primary owns slot {slot}")

    async def fail_over(self, primary: int) -> int:
        """SIGKILL `primary`; its replica's port once it is promoted and every node agrees."""
        view = await self.view(primary)
        primary_id = next(node.id for node in view if node.port == primary)
        replica = next(node for node in view if node.primary_id == primary_id and not node.down)
        await self.processes.kill(f"redis-{primary}")

        async def promoted() -> bool:
            try:
                mine = await self.view(replica.port)
            except (*BROKEN, RedisError, trio.TooSlowError):
                return False
            me = next(node for node in mine if node.id == replica.id)
            return me.is_primary and bool(me.slots) and await self.settled()

        await wait_for(promoted, f"the replica on {replica.port} takes over from {primary}")
        return replica.port

    async def restart(self, port: int) -> None:
        """Start a killed node again with its nodes.conf: it rejoins, as a replica."""
        self.processes.start(f"redis-{port}", [], self.logs / f"redis-{port}.log")
        await wait_for(self.settled, f"the node on {port} rejoins and the cluster settles")

    async def settled(self) -> bool:
        """Every live node serves, sees the same slot owners and replicas, and every replica's
        link to its primary is up."""
        try:
            return await self._settled()
        except (*BROKEN, RedisError, trio.TooSlowError):
            return False

    async def _settled(self) -> bool:
        live = self.live()
        views = set()
        for port in live:
            if "cluster_state:ok" not in await command(port, "CLUSTER", "INFO"):
                return False
            replication = await info(port, "replication")
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
            view = await self.view(port)
            if {node.port for node in view if not node.down} != set(live):
                return False  # a live node not yet known, or not yet cleared of a failure
            owners = [node for node in view if node.is_primary and not node.down]
            if sum(last - first + 1 for node in owners for first, last in node.slots) != SLOTS:
                return False
            views.add(frozenset((n.id, n.is_primary, n.primary_id, n.slots) for n in view))
        return len(views) == 1

    async def read_stream(self) -> list[str]:
        return await read_bodies(await self.room_primary(), self.stream_key)


class Sentinel:
    """A primary, a replica and one Sentinel (quorum 1). Each node has a config file, which the
    Sentinel rewrites when it changes the node's role, as in a deployment; a killed node comes
    back with it, and with the dump.rdb of its last full sync as a replica (`save ""` does not
    stop a replica writing the RDB it loads)."""

    SERVICE = "primary"

    def __init__(self, processes: Processes, data: Path, logs: Path, taken: set[int]) -> None:
        self.processes, self.data, self.logs = processes, data, logs
        self.ports = [free_cluster_port(taken), free_cluster_port(taken)]
        self.sentinel = free_cluster_port(taken)
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel}/{self.SERVICE}"
        self.stream_key = f"{PREFIX}:room:{ROOM}:messages"

    async def start(self) -> None:
        first, second = self.ports
        for port in self.ports:
            directory = self.data / str(port)
            directory.mkdir(parents=True)
            lines = [f"port {port}", "bind 127.0.0.1", f"dir {directory}", 'save ""',
                     "appendonly no", "repl-diskless-sync-delay 0"]  # fmt: skip
            if port == second:
                lines.append(f"replicaof 127.0.0.1 {first}")
            (directory / "redis.conf").write_text("\n".join(lines) + "\n")
            argv = ["redis-server", str(directory / "redis.conf")]
            self.processes.start(f"redis-{port}", argv, self.logs / f"redis-{port}.log")
        (self.data / "sentinel").mkdir()
        conf = self.data / "sentinel" / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\ndir {self.data / 'sentinel'}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {first} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 500\n"
            f"sentinel failover-timeout {self.SERVICE} 5000\n"
        )
        argv = ["redis-server", str(conf), "--sentinel"]
        self.processes.start("sentinel", argv, self.logs / f"sentinel-{self.sentinel}.log")
        await wait_for(self.settled, "the Sentinel sees a primary and a replica")

    async def room_primary(self) -> int:
        host_port = await command(
            self.sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE
        )
        return int(host_port[1])

    async def fail_over(self, primary: int) -> int:
        (replica,) = (port for port in self.ports if port != primary)
        await self.processes.kill(f"redis-{primary}")

        async def promoted() -> bool:
            try:
                return (await self.room_primary() == replica
                        and (await info(replica, "replication"))["role"] == "master")  # fmt: skip
            except (*BROKEN, RedisError, trio.TooSlowError):
                return False

        await wait_for(promoted, f"the Sentinel promotes {replica}")
        return replica

    async def restart(self, port: int) -> None:
        """Start a killed node as README tells operators to: without its stale RDB and as a
        replica of the current primary. (Left to come back a primary with the RDB of its last
        full sync, it was sometimes promoted again by the Sentinel, and the node holding the
        data resynced from it: acknowledged messages lost that no WAIT could save.)"""
        directory = self.data / str(port)
        (directory / "dump.rdb").unlink(missing_ok=True)
        with (directory / "redis.conf").open("a") as config:
            config.write(f"\nreplicaof 127.0.0.1 {await self.room_primary()}\n")
        self.processes.start(f"redis-{port}", [], self.logs / f"redis-{port}.log")
        # Whichever node the Sentinel ends up with: it may fail over again meanwhile.
        await wait_for(self.settled, f"{port} restarted: a primary and a synced replica")

    async def settled(self) -> bool:
        """The Sentinel's primary has the other node as its replica, link up, known to the
        Sentinel as a healthy replica."""
        try:
            primary = await self.room_primary()
            (replica,) = (port for port in self.ports if port != primary)
            replication = await info(replica, "replication")
            known = await command(self.sentinel, "SENTINEL", "REPLICAS", self.SERVICE)
        except (*BROKEN, RedisError, trio.TooSlowError):
            return False
        if replication["role"] != "slave" or replication.get("master_link_status") != "up":
            return False
        if replication.get("master_port") != str(primary):
            return False
        entries = [dict(zip(entry[::2], entry[1::2], strict=True)) for entry in known]
        return any(
            entry["port"] == str(replica) and entry["flags"] == "slave"
            and entry.get("master-link-status") == "ok" for entry in entries
        )  # fmt: skip

    async def read_stream(self) -> list[str]:
        return await read_bodies(await self.room_primary(), self.stream_key)


# -- posting -----------------------------------------------------------------------------------
@dataclass
class Post:
    """One POST: when it was sent and answered (seconds since the run began), and how."""

    text: str
    sent: float
    answered: float = 0.0
    outcome: str = ""  # "201", "unavailable", "outcome_unknown", or "<status> <code>"
    detail: str = ""  # what the error said, for anything but a 201

    @property
    def acknowledged(self) -> bool:
        return self.outcome == "201"


async def http(port: int, method: str, path: str, body: bytes = b"", key: str = "") -> Any:
    """(status, JSON body) of one request on a connection of its own.

    Its own connection, closed by the answer: no keep-alive connection that the server closes
    while a request is on its way, and far less work per POST than a pooling client, so that
    one Python process keeps 200 POSTs a second on schedule."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if key:
        head += f"Idempotency-Key: {key}\r\n"
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head.encode() + b"\r\n" + body)
        answer = bytearray()
        while chunk := await stream.receive_some(1 << 16):
            answer += chunk
    if not answer:
        raise ConnectionError("closed without an answer")
    status_line, _, rest = bytes(answer).partition(b"\r\n")
    content = rest.partition(b"\r\n\r\n")[2]
    try:
        parsed = json.loads(content) if content else {}
    except ValueError:
        parsed = {}
    return int(status_line.split()[1]), parsed


async def send(port: int, post: Post, key: str, began: float) -> None:
    body = json.dumps({"user": "failover", "text": post.text}).encode()
    with trio.move_on_after(POST_TIMEOUT):
        try:
            status, answer = await http(port, "POST", f"/rooms/{ROOM}/messages", body, key)
        except BROKEN as error:
            post.outcome, post.detail = f"transport {type(error).__name__}", str(error)[:200]
        else:
            post.outcome, post.detail = outcome_of(status, answer)
    if not post.outcome:
        post.outcome, post.detail = "transport timeout", f"no answer within {POST_TIMEOUT:g} s"
    post.answered = trio.current_time() - began


def outcome_of(status: int, answer: dict[str, Any]) -> tuple[str, str]:
    if status == 201:
        return "201", ""
    code, message = str(answer.get("error", "")), str(answer.get("message", ""))[:200]
    if status == 503 and code in ("unavailable", "outcome_unknown"):
        return code, message
    return f"{status} {code}".strip(), message


async def post_steadily(
    port: int, rate: float, tag: str, posts: list[Post], began: float, stop: trio.Event
) -> None:
    """POST at `rate` per second on schedule, each on its own task, until `stop`; then wait for
    every answer."""
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        while not stop.is_set():
            await trio.sleep_until(start + len(posts) / rate)
            post = Post(f"{tag} #{len(posts)}", trio.current_time() - began)
            nursery.start_soon(send, port, post, f"{tag}-{len(posts)}", began)
            posts.append(post)


async def first_201(posts: list[Post], since: float, alive: Any, within: float) -> float | None:
    """When the first POST sent since `since` that got a 201 was sent (None: none in time)."""
    with trio.move_on_after(within):
        while True:
            alive()
            first = None
            for post in reversed(posts):  # the newest first, back to `since`
                if post.sent < since:
                    break
                if post.acknowledged:
                    first = post.sent
            if first is not None:
                return first
            await trio.sleep(POLL)
    return None


# -- one run -----------------------------------------------------------------------------------
@dataclass
class Round:
    """One failover's timings, in seconds since the run began."""

    killed_port: int
    promoted_port: int = 0
    killed: float = 0.0
    promoted: float = 0.0
    restarted: float = 0.0
    rejoined: float = 0.0
    primary_after_rejoin: int = 0  # not promoted_port: Redis failed over again meanwhile
    recovered: float | None = None  # the first POST sent after the rejoin that got a 201
    stuck: str = ""  # why sse-chat was restarted in this round (it acknowledged nothing)
    ended: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


async def measure(
    topology: Topology, processes: Processes, knob: int, args: argparse.Namespace, log: Path,
    sse_port: int, tag: str,
) -> tuple[dict[str, Any], list[Post], set[str]]:  # fmt: skip
    """One run: start Redis and sse-chat, post through `args.rounds` failovers, count."""
    await topology.start()
    env = {
        **os.environ,
        "SSE_CHAT_PORT": str(sse_port),
        "SSE_CHAT_REDIS_URL": topology.url,
        "SSE_CHAT_REPLICA_ID": f"failover-{knob}",
        "SSE_CHAT_POST_RATE_LIMIT": "0",
        "SSE_CHAT_HISTORY_SIZE": "1000000",
        "SSE_CHAT_REDIS_MIN_REPLICAS": str(knob),
        "SSE_CHAT_REDIS_WAIT_MS": str(args.wait_ms),
    }
    processes.start("sse-chat", [str(VENV / "bin" / "sse-chat"), "serve"], log, env)

    async def ready() -> bool:
        try:
            return bool((await http(sse_port, "GET", "/readyz"))[0] == 200)
        except BROKEN:
            return False

    await wait_for(ready, "sse-chat is ready", 30)
    posts: list[Post] = []
    rounds: list[Round] = []
    began = trio.current_time()

    def now() -> float:
        if not processes.alive("sse-chat"):
            raise RuntimeError(f"sse-chat exited; see {log}")
        return trio.current_time() - began

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(post_steadily, sse_port, args.rate, tag, posts, began, stop)
        await trio.sleep(args.after)
        for number in range(1, args.rounds + 1):
            this = Round(await topology.room_primary())
            rounds.append(this)
            await fail_over_once(topology, this, posts, now, args.after)
            promoted, synced = this.promoted - this.killed, this.rejoined - this.restarted
            again = this.primary_after_rejoin != this.promoted_port
            print(f"  round {number}: {this.killed_port} -> {this.promoted_port}, promoted in"
                  f" {promoted:.2f} s, replica synced {synced:.2f} s after its restart"
                  + (f"; then failed over AGAIN, to {this.primary_after_rejoin}" if again else ""),
                  flush=True)  # fmt: skip
            if this.stuck:
                # Later rounds need a replica that answers: start a fresh one, and count it.
                print(f"  sse-chat stuck ({this.stuck}); restarting it; see {log}", flush=True)
                await processes.restart("sse-chat")
                await wait_for(ready, "the restarted sse-chat is ready", 30)
                await trio.sleep(args.after)
            this.ended = now()
        stop.set()
    ended = now()
    stored = [json.loads(body)["text"] for body in await topology.read_stream()]
    result = account(posts, rounds, stored, ended, args.rate)
    return (
        {"min_replicas": knob, "wait_ms": args.wait_ms, "rate": args.rate, **result},
        posts,
        set(stored),
    )


async def fail_over_once(
    topology: Topology, this: Round, posts: list[Post], now: Any, after: float
) -> None:
    """Kill the room's primary, wait for the promotion, restart it, wait until it is a synced
    replica, then post `after` seconds more; `this.stuck` says if sse-chat stopped answering
    201 although Redis had settled."""
    this.killed = now()
    this.promoted_port = await topology.fail_over(this.killed_port)
    this.promoted = this.restarted = now()
    await topology.restart(this.killed_port)
    this.rejoined = now()
    this.primary_after_rejoin = await topology.room_primary()
    this.recovered = await first_201(posts, this.rejoined, now, RECOVERY_TIMEOUT)
    if this.recovered is None:
        this.stuck = f"no 201 within {RECOVERY_TIMEOUT:g} s after Redis settled"
        return
    await trio.sleep(after)
    # The answers of the round's last second: a replica whose backplane died says 503 to all.
    if await first_201(posts, now() - 1.0, now, RECOVERY_TIMEOUT) is None:
        this.stuck = f"201s after the rejoin, then none for {RECOVERY_TIMEOUT:g} s"


def account(posts: list[Post], rounds: list[Round], stored: list[str], ended: float,
            rate: float) -> dict[str, Any]:  # fmt: skip
    """Every POST's answer against what the stream holds."""
    in_stream = set(stored)
    by_outcome: dict[str, dict[str, int]] = {}
    details: dict[str, int] = {}
    for post in posts:
        counts = by_outcome.setdefault(post.outcome, {"answers": 0, "stored": 0})
        counts["answers"] += 1
        counts["stored"] += post.text in in_stream
        if post.detail:
            details[f"{post.outcome}: {post.detail}"] = (
                details.get(f"{post.outcome}: {post.detail}", 0) + 1
            )
    lost = [asdict(post) for post in posts if post.acknowledged and post.text not in in_stream]
    refused_but_stored = [
        asdict(post) for post in posts
        if post.text in in_stream and post.outcome not in ("201", "outcome_unknown")
    ]  # fmt: skip
    for number, this in enumerate(rounds):
        end = rounds[number + 1].killed if number + 1 < len(rounds) else ended
        window = [post for post in posts if this.killed <= post.sent < end]
        this.figures = {
            "posts": len(window),
            "no_201_s": longest_stretch(window, lambda p: not p.acknowledged, end),
            "not_stored_s": longest_stretch(window, lambda p: p.text not in in_stream, end),
            "non_201_after_rejoin": sum(
                not p.acknowledged for p in window if p.sent >= this.rejoined
            ),
            "outcomes": count_outcomes(window),
        }
    sent = {post.text for post in posts}
    lags = [post.sent - posts[0].sent - number / rate for number, post in enumerate(posts)]
    return {
        "posts": len(posts),
        "seconds": round(ended, 1),
        "achieved_rate": round(len(posts) / ended, 1) if ended else 0,
        # How far the sends fell behind their schedule (the load generator being starved).
        "max_send_lag_s": round(max(lags, default=0.0), 3),
        "outcomes": by_outcome,
        "acknowledged": by_outcome.get("201", {}).get("answers", 0),
        "acknowledged_lost": len(lost),
        "lost": lost[:100],
        "refused_but_stored": refused_but_stored[:100],
        "stream_entries": len(stored),
        "stream_duplicates": len(stored) - len(in_stream),
        "stream_unknown": len(in_stream - sent),  # stored, but never posted by this run
        "errors": dict(sorted(details.items(), key=lambda item: -item[1])[:20]),
        "rounds": [asdict(this) for this in rounds],
    }


def longest_stretch(window: list[Post], failing: Any, end: float) -> float:
    """The longest time, in send order, from a failing POST until the next one that did not
    fail (or the window's end)."""
    longest, first = 0.0, None
    for post in sorted(window, key=lambda post: post.sent):
        if failing(post):
            first = post.sent if first is None else first
        elif first is not None:
            longest, first = max(longest, post.sent - first), None
    if first is not None:
        longest = max(longest, end - first)
    return round(longest, 3)


def count_outcomes(window: list[Post]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for post in window:
        counts[post.outcome] = counts.get(post.outcome, 0) + 1
    return counts


# -- the report --------------------------------------------------------------------------------
KNOWN = ("201", "unavailable", "outcome_unknown")


def table(runs: list[dict[str, Any]]) -> str:
    """One column per run; timings as median [min-max] over its failovers."""

    def answers(name: str, key: str = "answers") -> Any:
        def pick(run: dict[str, Any]) -> int:
            return sum(
                counts[key] for outcome, counts in run["outcomes"].items()
                if outcome == name or (name == "other" and outcome not in KNOWN)
            )  # fmt: skip

        return pick

    def spread(pick: Any) -> Any:
        def cell(run: dict[str, Any]) -> str:
            values = [pick(one) for one in run["rounds"] if not one["stuck"]]
            if not values:
                return "-"
            return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"

        return cell

    def figure(name: str) -> Any:
        return spread(lambda one: one["figures"][name])

    rows: list[tuple[str, Any]] = [
        ("POSTs sent", lambda run: run["posts"]),
        ("  rate achieved /s", lambda run: run["achieved_rate"]),
        ("  most behind schedule s", lambda run: run["max_send_lag_s"]),
        ("failovers", lambda run: len(run["rounds"])),
        ("201 acknowledged", answers("201")),
        ("  lost (not in the stream)", lambda run: run["acknowledged_lost"]),
        ("503 unavailable", answers("unavailable")),
        ("  stored anyway", answers("unavailable", "stored")),
        ("503 outcome_unknown", answers("outcome_unknown")),
        ("  stored", answers("outcome_unknown", "stored")),
        ("other errors", answers("other")),
        ("  stored", answers("other", "stored")),
        ("stream entries", lambda run: run["stream_entries"]),
        ("stream duplicates", lambda run: run["stream_duplicates"]),
        ("stream entries never posted", lambda run: run["stream_unknown"]),
        ("kill -> replica promoted s", spread(lambda one: one["promoted"] - one["killed"])),
        ("restart -> synced replica s", spread(lambda one: one["rejoined"] - one["restarted"])),
        ("longest no-201 stretch s", figure("no_201_s")),
        ("longest not-stored stretch s", figure("not_stored_s")),
        ("non-201 sent after the rejoin", lambda run: sum(
            one["figures"]["non_201_after_rejoin"] for one in run["rounds"] if not one["stuck"])),
        ("failed over again in the rejoin", lambda run: sum(
            one["primary_after_rejoin"] != one["promoted_port"] for one in run["rounds"])),
        ("sse-chat stuck, restarted", lambda run: sum(bool(one["stuck"]) for one in run["rounds"])),
        ("run s", lambda run: run["seconds"]),
    ]  # fmt: skip
    heads = [f"{run['backend']} min_replicas={run['min_replicas']}" for run in runs]
    width = max(len(name) for name, _ in rows)
    columns = [max(len(head), 24) for head in heads]
    lines = [
        " " * width + "".join(f"  {head:>{w}}" for head, w in zip(heads, columns, strict=True))
    ]
    for name, pick in rows:
        cells = "".join(f"  {pick(run)!s:>{w}}" for run, w in zip(runs, columns, strict=True))
        lines.append(f"{name:<{width}}{cells}")
    lines.append("timings and the rows below them: median [min-max] of the rounds where sse-chat"
                 " did not get stuck")  # fmt: skip
    for run, head in zip(runs, heads, strict=True):
        stretches = " ".join(
            f"{one['figures']['no_201_s']:.2f}{'(stuck)' if one['stuck'] else ''}"
            for one in run["rounds"]
        )
        lines.append(f"{head}, no-201 stretch of each failover, s: {stretches}")
    return "\n".join(lines)


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return result.stdout.strip()

    # sse_chat/ is what is measured: name the files that differ from the commit, if any.
    changed = git("status", "--porcelain", "--", "sse_chat").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "sse_chat_uncommitted": changed}


async def watch_sigterm() -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            raise KeyboardInterrupt  # the same way out as Ctrl-C: through every finally


def run_once(backend: str, knob: int, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    processes = Processes()
    data = Path(tempfile.mkdtemp(prefix="failover-"))
    taken: set[int] = set()
    kind = Sentinel if backend == "sentinel" else Cluster
    node_logs = logs / f"{backend}-{knob}"
    node_logs.mkdir(parents=True)
    topology = kind(processes, data, node_logs, taken)
    sse_port = free_cluster_port(taken)
    log = logs / f"sse-chat-{backend}-{knob}.log"
    tag = f"{backend}-{knob}-{int(time.time())}"

    async def main() -> tuple[dict[str, Any], list[Post], set[str]]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_sigterm)
            result = await measure(topology, processes, knob, args, log, sse_port, tag)
            nursery.cancel_scope.cancel()
        return result

    print(f"{backend}, SSE_CHAT_REDIS_MIN_REPLICAS={knob}: {topology.url}", flush=True)
    code = git_state()  # the sse-chat this run starts (the tree may change while it runs)
    try:
        result, posts, stored = trio.run(main)
    finally:
        processes.stop_all()
        shutil.rmtree(data, ignore_errors=True)
    with (logs / f"posts-{backend}-{knob}.jsonl").open("w") as out:
        for post in posts:  # every answer, for a closer look at a run
            out.write(json.dumps([*astuple(post), post.text in stored]) + "\n")
    return {"backend": backend, **result, "git": code, "sse_chat_log": str(log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentinel", action="store_true", help="Sentinel instead of a cluster")
    parser.add_argument("--rounds", type=int, default=10, help="failovers per run (10)")
    parser.add_argument("--rate", type=float, default=200.0, help="POSTs per second (200)")
    parser.add_argument(
        "--after",
        type=float,
        default=3.0,
        help="seconds of posting before the first kill and after each rejoin (3)",
    )
    parser.add_argument("--knobs", default="0,1", help="SSE_CHAT_REDIS_MIN_REPLICAS values (0,1)")
    parser.add_argument("--wait-ms", type=int, default=500, help="SSE_CHAT_REDIS_WAIT_MS (500)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit(f"failover.py needs {tool} (Debian: apt-get install redis-server)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out / f"failover-{stamp}"
    backend = "sentinel" if args.sentinel else "cluster"
    started = time.monotonic()
    runs, failed = [], []
    for knob in args.knobs.split(","):
        try:
            runs.append(run_once(backend, int(knob), args, logs))
        except Exception as error:  # one run's failure is reported, not fatal
            print(f"{backend} min_replicas={knob} failed: {error!r}", flush=True)
            failed.append({"backend": backend, "min_replicas": int(knob), "error": repr(error)})
    report = table(runs) if runs else "no run completed"
    print(report)
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    document = {
        "started": stamp,
        "seconds": round(time.monotonic() - started, 1),
        "redis": version.stdout.strip(),
        "loadavg_at_end": os.getloadavg(),  # other work on the machine shifts the timings
        "args": {**vars(args), "out": str(args.out)},
        "runs": runs,
        "failed": failed,
        "table": report,
    }
    out = args.out / f"failover-{stamp}.json"
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{document['seconds']:.0f} s; wrote {out} and {logs}/")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except* KeyboardInterrupt:  # trio's nurseries may wrap it in a group
        sys.exit("interrupted; every process it started is stopped")
