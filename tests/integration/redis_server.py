"""Real `redis-server` processes on free ports, which tests can kill and restart."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import trio

from .support import TIMEOUT


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server (or sentinel) that the test owns; `start()` waits until it is ready."""

    def __init__(
        self, nursery: trio.Nursery, directory: Path, *extra: str, port: int | None = None
    ) -> None:
        self.nursery = nursery
        self.port = port or free_port()
        self.directory = directory
        self.extra = list(extra)
        self.process: trio.Process | None = None
        self.sentinel_of: RedisServer | None = None  # set: this is a sentinel monitoring it

    def _sentinel_config(self) -> Path:
        assert self.sentinel_of is not None
        config = self.directory / "sentinel.conf"
        if not config.exists():  # the sentinel rewrites it as it learns; keep its version
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor primary 127.0.0.1 {self.sentinel_of.port} 1\n"
                "sentinel down-after-milliseconds primary 500\n"
                "sentinel failover-timeout primary 5000\n"
            )
        return config

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        if self.sentinel_of is not None:
            return ["redis-server", str(self._sentinel_config()), "--sentinel"]
        return [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "notice",
            *self.extra,
        ]  # fmt: skip

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = await trio.lowlevel.open_process(
            self.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.process.stdout is not None
        log = b""
        with trio.fail_after(TIMEOUT):
            while b"Ready to accept connections" not in log and b"+monitor master" not in log:
                chunk = await self.process.stdout.receive_some()
                assert chunk, f"redis-server exited: {log.decode(errors='replace')}"
                log += chunk
        # Keep reading its output so that it never blocks on a full pipe.
        self.nursery.start_soon(_drain, self.process.stdout)

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no final save."""
        await self._end(signal.SIGKILL)

    async def stop(self) -> None:
        await self._end(signal.SIGTERM)

    async def _end(self, signum: int) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.send_signal(signum)
        with trio.fail_after(TIMEOUT):
            await self.process.wait()
        self.process = None


async def _drain(output: trio.abc.ReceiveStream) -> None:
    async with output:
        while await output.receive_some():
            pass
