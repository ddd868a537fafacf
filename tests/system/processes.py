"""Replica processes (`python -m sse_chat serve`) and an HAProxy in front of them."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from ..integration.redis_server import free_port
from ..integration.support import TIMEOUT, wait_until_ready

GRACEFUL_TIMEOUT_SECONDS = 5.0  # the replicas' default drain deadline
LOG_LIMIT = 256 * 1024  # bytes of a process's output kept for failure messages


class OwnedProcess:
    """A child process whose output is kept (its tail) and which can always be ended."""

    def __init__(self, nursery: trio.Nursery, name: str) -> None:
        self.nursery = nursery
        self.name = name
        self.process: trio.Process | None = None
        self.output = bytearray()

    async def _launch(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        assert not self.running, f"{self.name} is already running"
        self.output.clear()
        self.process = await trio.lowlevel.open_process(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.process.stdout is not None
        self.nursery.start_soon(self._keep_output, self.process.stdout)

    async def _keep_output(self, output: trio.abc.ReceiveStream) -> None:
        async with output:
            while chunk := await output.receive_some():
                self.output += chunk
                del self.output[:-LOG_LIMIT]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log_tail(self, size: int = 4000) -> str:
        return f"--- {self.name} output ---\n" + self.output[-size:].decode(errors="replace")

    async def end(self, signum: int, deadline: float = TIMEOUT) -> int:
        """Send `signum` and wait (at most `deadline` seconds) for the exit; its return code."""
        assert self.process is not None, f"{self.name} was never started"
        if self.process.returncode is None:
            self.process.send_signal(signum)
        with trio.fail_after(deadline):
            return await self.process.wait()

    async def kill_if_running(self) -> None:
        if self.running:
            await self.end(signal.SIGKILL)


class ReplicaProcess(OwnedProcess):
    """`python -m sse_chat serve` on a fixed port, so a restart comes back where it was."""

    def __init__(self, nursery: trio.Nursery, replica_id: str, env: dict[str, str]) -> None:
        super().__init__(nursery, replica_id)
        self.replica_id = replica_id
        self.port = free_port()
        self.env = env
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the process and wait until its /readyz answers 200 (Redis is connected)."""
        argv = [sys.executable, "-m", "sse_chat", "serve", "--port", str(self.port)]
        await self._launch([*argv, "--replica-id", self.replica_id], env=self.env)
        self.starts += 1
        try:
            await wait_until_ready(self.url, alive=lambda: self.running)
        except AssertionError:
            raise AssertionError(f"{self.name} exited at start\n{self.log_tail()}") from None

    async def terminate(self) -> int:
        """SIGTERM (a rolling update's stop): drain, then exit within the graceful timeout."""
        return await self.end(signal.SIGTERM, deadline=GRACEFUL_TIMEOUT_SECONDS + TIMEOUT)

    async def kill(self) -> int:
        """SIGKILL: a crash; nothing is drained."""
        return await self.end(signal.SIGKILL)


@dataclass(frozen=True)
class Balancing:
    """HAProxy's capacity and how strictly its health checks judge a replica."""

    # Client connections; HAProxy asks for two descriptors for each (the server side too), so
    # it must stay under half the RLIMIT_NOFILE it can raise itself to.
    maxconn: int = 2000
    # A /readyz answer later than this is a failed check (None: the 100 ms check interval
    # bounds it); `fall` failed checks in a row take the replica out of service. The defaults
    # react at once; a replica busy with thousands of streams needs slack.
    check_timeout_ms: int | None = None
    fall: int = 1


def haproxy_config(
    port: int, stats_port: int, replicas: list[ReplicaProcess], balancing: Balancing | None = None
) -> str:
    """Round-robin over the replicas, health-checked on /readyz, standing in for swarm's mesh."""
    balancing = balancing or Balancing()
    timeout = balancing.check_timeout_ms
    check_timeout = f"    timeout check {timeout}ms\n" if timeout is not None else ""
    servers = "".join(f"    server {r.replica_id} 127.0.0.1:{r.port}\n" for r in replicas)
    return (
        "global\n"
        f"    maxconn {balancing.maxconn}\n"
        "    log stdout format raw local0\n"
        "defaults\n"
        "    mode http\n"
        # Only failed or abnormal requests are logged: each one is worth reading.
        "    log global\n"
        "    option httplog\n"
        "    option dontlog-normal\n"
        "    timeout connect 1s\n"
        "    timeout http-request 10s\n"
        "    timeout queue 5s\n"
        # An SSE stream is one long response: the client and server timeouts must outlast it.
        "    timeout client 1h\n"
        "    timeout server 1h\n"
        "    timeout tunnel 1h\n"
        # A stopping replica refuses connections: retry them on another one. Only refused
        # connections are retried (nothing was sent), never a POST the server may have stored.
        "    retries 3\n"
        "    retry-on conn-failure\n"
        "    option redispatch 1\n"
        # One request per server connection: none is left idle on a replica that then stops.
        "    option http-server-close\n"
        "frontend chat\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend replicas\n"
        "backend replicas\n"
        "    balance roundrobin\n"
        "    option httpchk GET /readyz\n"
        "    http-check expect status 200\n"
        f"{check_timeout}"
        "    default-server check inter 100ms fastinter 100ms downinter 100ms rise 1"
        f" fall {balancing.fall}\n"
        f"{servers}"
        "listen stats\n"
        f"    bind 127.0.0.1:{stats_port}\n"
        "    stats enable\n"
        "    stats uri /stats\n"
    )


class HAProxy(OwnedProcess):
    """A real haproxy (`haproxy -db`, in the foreground) with a generated configuration."""

    def __init__(
        self, nursery: trio.Nursery, directory: Path, balancing: Balancing | None = None
    ) -> None:
        super().__init__(nursery, "haproxy")
        self.directory = directory
        self.balancing = balancing
        self.port = free_port()
        self.stats_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, replicas: list[ReplicaProcess]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "haproxy.cfg"
        config.write_text(haproxy_config(self.port, self.stats_port, replicas, self.balancing))
        await self._launch(["haproxy", "-db", "-f", str(config)])
        await self.wait_until_up([replica.replica_id for replica in replicas])

    async def stats(self) -> dict[str, dict[str, str]]:
        """The stats page's row of each server and of the backend ("BACKEND"), by name."""
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            response = await client.get(f"http://127.0.0.1:{self.stats_port}/stats;csv")
        rows = csv.DictReader(io.StringIO(response.text.lstrip("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == "replicas"}

    async def server_states(self) -> dict[str, str]:
        """Each server's status as HAProxy sees it (UP, DOWN, ...), from its stats page."""
        return {
            name: row["status"]
            for name, row in (await self.stats()).items()
            if name not in ("FRONTEND", "BACKEND")
        }

    async def wait_until_up(self, names: list[str]) -> None:
        """Until HAProxy's health checks have marked every named server UP (polled)."""
        with trio.fail_after(TIMEOUT):
            while True:
                assert self.running, f"haproxy exited\n{self.log_tail()}"
                try:
                    states = await self.server_states()
                except httpx.TransportError:
                    states = {}  # not listening yet
                if all(states.get(name) == "UP" for name in names):
                    return
                await trio.sleep(0.05)


def replica_env(redis_url: str) -> dict[str, str]:
    """The environment of every replica: the shared Redis, quick reconnects, no rate limit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_CHAT_")}
    env.update(
        SSE_CHAT_REDIS_URL=redis_url,
        SSE_CHAT_RETRY_MS="500",  # what a crashed replica's clients wait before reconnecting
        SSE_CHAT_KEEPALIVE_SECONDS="1",
        # The poster posts from one address far faster than a person: no rate limit.
        SSE_CHAT_POST_RATE_LIMIT="0",
    )
    return env
