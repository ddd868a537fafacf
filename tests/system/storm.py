"""The reconnect storm's clients: thousands of EventSource streams in one Node process, a poster
at a steady rate, and what the replicas say about themselves (`/metrics`, their logs)."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from ..integration.redis_server import RedisServer
from ..integration.support import TIMEOUT
from .processes import HAProxy, OwnedProcess, ReplicaProcess

STORM_CLIENT = Path(__file__).with_name("storm_client.mjs")
BACKPLANE_LOST = "redis backplane disconnected"  # what a replica logs when its session drops
SERVER_STATE = re.compile(r"Server replicas/(\S+) is (DOWN|UP)(?:, reason: ([^,]+))?")
# An `option httplog` line: backend/server, five timers, status, bytes, two cookies, the
# termination state (e.g. `sC--`: the connect to the server timed out), ..., the request line.
ABNORMAL_REQUEST = re.compile(
    r" replicas/(\S+) [-+\d/]+ (\d{3}) \+?\d+ \S+ \S+ (\S{4}) .*\"(\w+) (\S+)"
)


@contextmanager
def open_file_limit(wanted: int) -> Iterator[int]:
    """Raise this process's RLIMIT_NOFILE (which children inherit) towards `wanted`; restore it.

    Node cannot raise its own, and each stream costs a descriptor in the client, in HAProxy
    (two) and in a replica. Returns the soft limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, raised), hard))
    try:
        yield max(soft, raised)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class StormClient(OwnedProcess):
    """`storm_client.mjs`: one JSON command a line on its stdin, one JSON answer a line back."""

    def __init__(self, nursery: trio.Nursery, url: str, room: str, streams: int) -> None:
        super().__init__(nursery, "storm client")
        self.argv = ["node", str(STORM_CLIENT), "--url", url, "--room", room]
        self.argv += ["--streams", str(streams)]
        self._answers = bytearray()

    async def start(self) -> None:
        assert not self.running, "the storm client is already running"
        self.process = await trio.lowlevel.open_process(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.process.stderr is not None
        self.nursery.start_soon(self._keep_output, self.process.stderr)

    async def ask(self, command: str, timeout_s: float = TIMEOUT, **args: Any) -> dict[str, Any]:
        """Run one command; its answer. The client's own deadline is `timeout_s`."""
        assert self.process is not None and self.process.stdin is not None
        assert self.process.stdout is not None
        line = json.dumps({"cmd": command, "timeout_s": timeout_s, **args}) + "\n"
        await self.process.stdin.send_all(line.encode())
        with trio.fail_after(timeout_s + TIMEOUT):
            while b"\n" not in self._answers:
                chunk = await self.process.stdout.receive_some()
                assert chunk, f"the storm client exited\n{self.log_tail()}"
                self._answers += chunk
        answer, _, rest = bytes(self._answers).partition(b"\n")
        self._answers[:] = rest
        result: dict[str, Any] = json.loads(answer)
        assert "error" not in result, f"{command}: {result['error']}"
        return result


class PacedPoster:
    """Posts numbered messages to a room at a steady rate until stopped, each POST on its own
    (a POST stuck on a dying replica never holds up the next one)."""

    def __init__(self, base_url: str, room: str, per_second: float, limit: int = 5000) -> None:
        self.base_url = base_url
        self.path = f"/rooms/{room}/messages"
        self.interval = 1 / per_second
        self.limit = limit  # bounded: never posts forever
        self.accepted: list[dict[str, Any]] = []
        self.refused: dict[str, str] = {}  # text -> how its POST failed: its fate is unknown
        self.phase = "steady"  # what the cluster is going through, named in `refused`
        self.stop = trio.Event()
        self.stopped = trio.Event()
        self._waiters: list[tuple[int, trio.Event]] = []

    @property
    def accepted_ids(self) -> list[str]:
        return [message["id"] for message in self.accepted]

    async def run(self) -> None:
        try:
            async with (
                httpx.AsyncClient(base_url=self.base_url, timeout=TIMEOUT) as client,
                trio.open_nursery() as posts,
            ):
                began = trio.current_time()
                for n in range(self.limit):
                    if self.stop.is_set():
                        return
                    posts.start_soon(self._post, client, f"s{n}")
                    await trio.sleep_until(began + (n + 1) * self.interval)
            raise AssertionError(f"the poster reached its limit of {self.limit} posts")
        finally:
            self.stopped.set()

    async def _post(self, client: httpx.AsyncClient, text: str) -> None:
        phase = self.phase
        try:
            response = await client.post(self.path, json={"user": "storm", "text": text})
        except httpx.TransportError as error:
            self.refused[text] = f"{type(error).__name__} ({error}) in {phase}"
            return
        if response.status_code != 201:
            origin = response.headers.get("X-Replica", "haproxy")
            self.refused[text] = f"{response.status_code} from {origin} in {phase}"
            return
        self.accepted.append(response.json())
        for count, event in self._waiters:
            if len(self.accepted) >= count:
                event.set()

    async def accepted_count_reaches(self, count: int, seconds: float = TIMEOUT) -> None:
        """Until `count` POSTs in all got 201."""
        reached = trio.Event()
        self._waiters.append((count, reached))
        if len(self.accepted) >= count:
            reached.set()
        try:
            with trio.fail_after(seconds):
                await reached.wait()
        finally:
            self._waiters.remove((count, reached))

    def unexpected_refusals(self) -> dict[str, str]:
        """Answers other than 201 or a replica's or HAProxy's 502/503/504. Those, and a broken
        connection, only leave the message's fate unknown, which the delivery check allows."""
        return {
            text: how
            for text, how in self.refused.items()
            if how[:3].isdigit() and how[:3] not in ("502", "503", "504")
        }


async def replica_metrics(replica: ReplicaProcess) -> dict[str, float]:
    """The replica's own `/metrics` samples without labels (gauges such as streams_open)."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        response = await client.get(f"{replica.url}/metrics")
    response.raise_for_status()
    samples = {}
    for line in response.text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            samples[name] = float(value)
    return samples


def backplane_losses(replica: ReplicaProcess) -> Counter[str]:
    """What the replica's log (this run's) says each time its Redis session dropped."""
    log = replica.output.decode(errors="replace")
    losses: Counter[str] = Counter()
    for line in log.splitlines():
        if BACKPLANE_LOST in line:
            try:
                losses[json.loads(line)["message"]] += 1
            except (ValueError, KeyError):
                losses[line] += 1
    return losses


async def haproxy_health(haproxy: HAProxy) -> dict[str, object]:
    """How often HAProxy took each replica (and the whole backend: "BACKEND") out of service,
    and why; and the abnormal requests it logged, by status and termination state (from the
    part of its log still kept)."""
    stats = await haproxy.stats()
    log = haproxy.output.decode(errors="replace")
    reasons = Counter(
        f"{name} {state}" + (f" ({reason})" if reason else "")
        for name, state, reason in SERVER_STATE.findall(log)
    )
    abnormal = Counter(
        f"{method} {path.partition('?')[0]} {status} {state} {server}"
        for server, status, state, method, path in ABNORMAL_REQUEST.findall(log)
    )
    downs = {name: int(row["chkdown"] or 0) for name, row in stats.items() if name != "FRONTEND"}
    return {"downs": downs, "reasons": dict(reasons), "abnormal": dict(abnormal.most_common(12))}


def cpu_seconds(process: OwnedProcess | RedisServer) -> float:
    """User plus system CPU time that a running process has used so far (from /proc)."""
    assert process.process is not None and process.process.returncode is None
    stat = Path(f"/proc/{process.process.pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
