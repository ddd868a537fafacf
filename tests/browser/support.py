"""Servers the browser tests own: a redis-server and replicas, as plain subprocesses.

Playwright's sync API runs its own event loop, so the browser tests are plain functions
(pytest-trio leaves them alone) and the servers are subprocesses, never in-process apps.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from ..integration.redis_server import free_port

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

TIMEOUT = 10.0  # seconds any single wait may take before it counts as a hang

OpenPage = Callable[..., "Page"]  # the `new_page` fixture: (url, **context options) -> a page
OpenProfile = Callable[..., "Profile"]  # the `new_profile` fixture: (**context options) -> one


@dataclass
class Profile:
    """A browser profile (a Playwright context): its tabs share storage, cookies and workers."""

    context: BrowserContext
    tabs: list[tuple[Page, list[str]]] = field(default_factory=list)  # each with its errors

    def open(self, url: str) -> Page:
        """A new tab showing `url`."""
        page = self.context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        self.tabs.append((page, errors))
        page.goto(url)
        return page

    def check(self) -> None:
        """Each tab still open threw no uncaught error and had nothing blocked by the CSP."""
        for page, errors in self.tabs:
            if page.is_closed():
                continue
            assert errors == [], f"uncaught errors in {page.url}: {errors}"
            violations = page.evaluate("window.__cspViolations")
            assert violations == [], f"blocked by the CSP in {page.url}: {violations}"


def wait_for(ready: Callable[[], bool], what: str, process: OwnedProcess) -> None:
    """Poll `ready()` until true: for a starting server, which signals readiness no other way."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        assert process.running, f"{process.name} exited while starting\n{process.log_tail()}"
        assert time.monotonic() < deadline, f"{what} not ready in {TIMEOUT} s\n{process.log_tail()}"
        time.sleep(0.05)


@dataclass
class OwnedProcess:
    """A child process with its output in a log file; ended (SIGKILL at worst) by its owner."""

    name: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def launch(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        assert not self.running, f"{self.name} is already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, size: int = 4000) -> str:
        text = self.log.read_bytes()[-size:].decode(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} output ---\n{text}"

    def end(self, signum: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        """Send `signum`, wait for the exit (SIGKILL after `timeout`); the return code."""
        assert self.process is not None, f"{self.name} was never started"
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            message = f"{self.name} ignored signal {signum}\n{self.log_tail()}"
            raise AssertionError(message) from None


@dataclass
class Redis(OwnedProcess):
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, directory: Path) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        self.launch([*argv, "--dir", str(directory), "--save", "", "--appendonly", "no"])
        wait_for(self._pong, "redis-server", self)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@dataclass
class Replica(OwnedProcess):
    """`python -m sse_chat serve` on a fixed port, so that a restart comes back at the same URL."""

    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "sse_chat", "serve", "--port", str(self.port)]
        self.launch([*argv, "--replica-id", self.name], env=self.env)
        wait_for(self._ready, self.name, self)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def streams_open(self) -> int:
        """The streams the replica holds open (its `sse_chat_streams_open` gauge)."""
        metrics = httpx.get(f"{self.url}/metrics", timeout=TIMEOUT).text
        for line in metrics.splitlines():
            name, _, value = line.partition(" ")
            if name == "sse_chat_streams_open":
                return int(float(value))
        raise AssertionError(f"{self.name}'s /metrics has no sse_chat_streams_open")

    def post(self, room: str, user: str, text: str) -> dict[str, object]:
        """Post as another client would (curl, a script): the stored message."""
        response = httpx.post(
            f"{self.url}/rooms/{room}/messages", json={"user": user, "text": text}, timeout=TIMEOUT
        )
        assert response.status_code == 201, response.text
        message: dict[str, object] = response.json()
        return message
