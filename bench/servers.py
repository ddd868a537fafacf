"""The processes under test, on CPU 0: a private redis-server, sse-chat replicas, the Starlette
peer and nginx + nchan (a private Redis Cluster: redis_cluster.py)."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
PROJECT_PYTHON = PROJECT / ".venv" / "bin" / "python"
SERVER_CPU = "0"
KINDS = ("sse-chat", "peer", "nchan")
NGINX = Path("/usr/sbin/nginx")
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
NCHAN_PACKAGES = ("nginx", "libnginx-mod-nchan")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


@dataclass(frozen=True)
class Server:
    """A running server: its process, base URL, log, and the scratch directory it owns, if any."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    workdir: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """Its process and their children (nginx's worker), for CPU and RSS."""
        return [self.pid, *children(self.pid)]


def children(pid: int) -> list[int]:
    """The child processes of `pid` (none once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(command: list[str], cpu: str | None = SERVER_CPU) -> list[str]:
    """`command` run by taskset on `cpu` (taskset execs it, so the pid is the command's); left
    to float over every CPU if `cpu` is None."""
    return command if cpu is None else ["taskset", "-c", cpu, *command]


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


# What each kind answers with 2xx once it can serve the benchmark: sse-chat and the peer their
# readiness endpoint; nchan (no such endpoint) a published message, which went through Redis.
READY_PROBE: dict[str, tuple[str, str, bytes | None]] = {
    "sse-chat": ("GET", "/readyz", None),
    "peer": ("GET", "/readyz", None),
    "nchan": ("POST", "/rooms/bench-ready/messages", b'{"user": "bench", "text": "ready?"}'),
}


def wait_ready(
    process: subprocess.Popen[bytes], url: str, kind: str = "sse-chat", timeout: float = 30.0
) -> None:
    """Wait until the kind's readiness probe answers 2xx."""
    port = int(url.rsplit(":", 1)[1])
    method, path, body = READY_PROBE[kind]
    headers = {"Content-Type": "application/json"} if body else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request(method, path, body=body, headers=headers)
            if conn.getresponse().status // 100 == 2:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s")


METRIC_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{.*\})?\s+(\S+)")


def read_metrics(url: str, timeout: float = 10.0) -> dict[str, float]:
    """`GET /metrics` (Prometheus text): each metric's samples summed over their labels."""
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
        if response.status != 200:
            raise OSError(f"GET /metrics answered {response.status}")
    finally:
        conn.close()
    values: dict[str, float] = {}
    for line in text.splitlines():
        sample = METRIC_SAMPLE.match(line)
        if sample:
            name, value = sample.groups()
            values[name] = values.get(name, 0.0) + float(value)
    return values


# A private Redis: nothing saved, at most 1,000 clients.
REDIS_ARGS = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--maxclients", "1000")


def start_redis(
    port: int, log: Path, *args: str, cpu: str | None = SERVER_CPU
) -> subprocess.Popen[bytes]:
    """A private redis-server on `port` with `args` added, pinned to `cpu` (None: floating),
    answering PING."""
    command = ["redis-server", "--port", str(port), *REDIS_ARGS, *args]
    process = spawn(pinned(command, cpu), log)
    deadline = time.monotonic() + 10
    while True:
        try:
            if redis_command(port, "PING").startswith(b"+PONG"):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                message = f"redis-server on port {port} did not start: see {log}"
                raise RuntimeError(message) from None
            time.sleep(0.05)


def redis_url(port: int) -> str:
    """sse-chat's SSE_CHAT_REDIS_URL for the private Redis on `port`."""
    return f"redis://127.0.0.1:{port}/0"


@contextmanager
def redis_server(logs: Path, cpu: str | None = SERVER_CPU, log: str = "redis.log") -> Iterator[int]:
    """A private, non-persistent redis-server on a free port, pinned to `cpu` (None: floating);
    yields the port."""
    port = free_port()
    process = start_redis(port, logs / log, cpu=cpu)
    try:
        yield port
    finally:
        stop(process)


def start_sse_chat(redis_url: str, replica: str, logs: Path) -> Server:
    port = free_port()
    command = [str(PROJECT_PYTHON), "-m", "sse_chat", "serve", "--port", str(port)]
    command += ["--replica-id", replica]
    env = {
        "SSE_CHAT_REDIS_URL": redis_url,
        # Every benchmark client comes from 127.0.0.1: lift the per-address limits.
        "SSE_CHAT_POST_RATE_LIMIT": "0",
        "SSE_CHAT_MAX_STREAMS_PER_CLIENT": "1000000",
    }
    log = logs / f"sse-chat-{replica}.log"
    return Server(spawn(pinned(command), log, env), f"http://127.0.0.1:{port}", log)


def start_peer(redis_port: int, python: str, logs: Path) -> Server:
    port = free_port()
    command = [python, "-m", "uvicorn", "--app-dir", str(BENCH / "peers"), "starlette_peer:app"]
    command += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    command += ["--no-access-log", "--log-level", "warning", "--backlog", "2048"]
    env = {"PEER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
    log = logs / "peer.log"
    return Server(spawn(pinned(command), log, env), f"http://127.0.0.1:{port}", log)


def install_nchan() -> None:
    """Install nginx and its nchan module from Debian if either is missing (as root), with a
    policy-rc.d that keeps the package from starting nginx's service; SystemExit if it cannot."""
    if NGINX.exists() and NCHAN_MODULE.exists():
        return
    packages = " ".join(NCHAN_PACKAGES)
    advice = f"apt-get install {packages}, or leave nchan out (--servers sse-chat,peer)"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(f"the nchan peer needs {packages}: {advice}")
    print(f"installing {packages} (apt-get)", file=sys.stderr, flush=True)
    saved = POLICY_RC_D.read_bytes() if POLICY_RC_D.exists() else None
    mode = POLICY_RC_D.stat().st_mode if saved is not None else 0o755
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        POLICY_RC_D.write_text("#!/bin/sh\n# bench/servers.py: start no service now\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *NCHAN_PACKAGES],
        ):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(
                    f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr.strip()}\n"
                    f"the nchan peer needs {packages}: {advice}"
                )
    finally:
        if saved is None:
            POLICY_RC_D.unlink(missing_ok=True)
        else:
            POLICY_RC_D.write_bytes(saved)
            POLICY_RC_D.chmod(mode)
    if not (NGINX.exists() and NCHAN_MODULE.exists()):
        raise SystemExit(f"installed {packages}, yet {NGINX} or {NCHAN_MODULE} is missing")


def start_nchan(redis_port: int, logs: Path) -> Server:
    """nginx + nchan from peers/nchan.conf.in, its prefix and temp files in a scratch directory."""
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="bench-nchan-"))
    config = (BENCH / "peers" / "nchan.conf.in").read_text()
    fields = {
        "MODULE": str(NCHAN_MODULE),
        "PREFIX": str(prefix),
        "LOGS": str(logs.resolve()),
        "PORT": str(port),
        "REDIS_PORT": str(redis_port),
    }
    for name, value in fields.items():
        config = config.replace(f"@{name}@", value)
    (prefix / "nginx.conf").write_text(config)
    command = [str(NGINX), "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf")]
    command += ["-e", str(logs.resolve() / "nchan-error.log")]  # before the config is read
    log = logs / "nchan.log"
    return Server(spawn(pinned(command), log), f"http://127.0.0.1:{port}", log, prefix)


def stop_server(server: Server) -> None:
    """Stop its process, then any child left behind (an nginx worker whose master was killed),
    and remove its scratch directory."""
    left = children(server.pid)
    stop(server.process)
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if server.workdir:
        shutil.rmtree(server.workdir, ignore_errors=True)


def last_lines(log: Path, count: int = 5) -> str:
    """The end of a log, to say why a server did not start."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-count:])


@contextmanager
def servers(
    kind: str,
    replicas: int,
    redis_port: int,
    python: str,
    logs: Path,
    sse_chat_redis_url: str | None = None,
) -> Iterator[list[Server]]:
    """`replicas` fresh sse-chat processes, or one peer or nchan, ready; stopped on exit.

    sse-chat uses `sse_chat_redis_url` when given (a Redis Cluster), else the Redis on
    `redis_port`."""
    started: list[Server] = []
    try:
        if kind == "sse-chat":
            url = sse_chat_redis_url or redis_url(redis_port)
            for index in range(replicas):
                started.append(start_sse_chat(url, f"bench{index}", logs))
        elif kind == "peer":
            started.append(start_peer(redis_port, python, logs))
        elif kind == "nchan":
            started.append(start_nchan(redis_port, logs))
        else:
            raise ValueError(f"unknown server kind {kind!r} (one of {', '.join(KINDS)})")
        for server in started:
            try:
                wait_ready(server.process, server.url, kind)
            except RuntimeError as error:
                tail = last_lines(server.log)
                raise RuntimeError(f"{error}; {server.log} ends:\n{tail}") from None
        yield started
    finally:
        for server in started:
            stop_server(server)
