"""The processes under test: a private redis-server, sse-chat replicas and the peer, on CPU 0."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
PROJECT_PYTHON = PROJECT / ".venv" / "bin" / "python"
SERVER_CPU = "0"


@dataclass(frozen=True)
class Server:
    """A running server: its process and base URL."""

    process: subprocess.Popen[bytes]
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(command: list[str], cpu: str = SERVER_CPU) -> list[str]:
    """`command` run by taskset on `cpu` (taskset execs it, so the pid is the command's)."""
    return ["taskset", "-c", cpu, *command]


def spawn(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def redis_command(port: int, *words: str) -> bytes:
    """Send one command to Redis (RESP) and return the raw reply."""
    request = f"*{len(words)}\r\n".encode()
    for word in words:
        request += f"${len(word.encode())}\r\n{word}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        return sock.recv(65536)


def wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float = 30.0) -> None:
    """Wait for `GET /readyz` to answer 200."""
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s")


@contextmanager
def redis_server(logs: Path) -> Iterator[int]:
    """A private, non-persistent redis-server on a free port; yields the port."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--maxclients", "1000"]
    process = spawn(pinned(command), logs / "redis.log")
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis_command(port, "PING").startswith(b"+PONG"):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        stop(process)


def start_sse_chat(redis_port: int, replica: str, logs: Path) -> Server:
    port = free_port()
    command = [str(PROJECT_PYTHON), "-m", "sse_chat", "serve", "--port", str(port)]
    command += ["--replica-id", replica]
    env = {
        "SSE_CHAT_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        # Every benchmark client comes from 127.0.0.1: lift the per-address limits.
        "SSE_CHAT_POST_RATE_LIMIT": "0",
        "SSE_CHAT_MAX_STREAMS_PER_CLIENT": "1000000",
    }
    process = spawn(pinned(command), logs / f"sse-chat-{replica}.log", env)
    return Server(process, f"http://127.0.0.1:{port}")


def start_peer(redis_port: int, python: str, logs: Path) -> Server:
    port = free_port()
    command = [python, "-m", "uvicorn", "--app-dir", str(BENCH / "peers"), "starlette_peer:app"]
    command += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    command += ["--no-access-log", "--log-level", "warning", "--backlog", "2048"]
    env = {"PEER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
    process = spawn(pinned(command), logs / "peer.log", env)
    return Server(process, f"http://127.0.0.1:{port}")


@contextmanager
def servers(
    kind: str, replicas: int, redis_port: int, python: str, logs: Path
) -> Iterator[list[Server]]:
    """`replicas` fresh sse-chat processes, or one peer, ready; stopped on exit."""
    started: list[Server] = []
    try:
        if kind == "sse-chat":
            for index in range(replicas):
                started.append(start_sse_chat(redis_port, f"bench{index}", logs))
        else:
            started.append(start_peer(redis_port, python, logs))
        for server in started:
            wait_ready(server.process, server.url)
        yield started
    finally:
        for server in started:
            stop(server.process)
