"""Fixtures of the browser tests: one redis-server, two replicas on it, Debian's headless Chromium.

Nothing here skips: without Playwright (a test dependency) or Chromium (installed by tests/run)
the browser tests fail, as they should.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sse_chat.tokens import issue_token

from .support import TIMEOUT, OpenPage, OpenProfile, Profile, Redis, Replica

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"  # Debian's: nothing here may download a browser of its own
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"


@dataclass
class Servers:
    redis: Redis
    replicas: list[Replica]
    env: dict[str, str]  # the replicas' environment


@dataclass
class PrivateReplica:
    """A replica whose rooms `team-*` and `ops` need a token that grants them."""

    replica: Replica
    key: bytes  # the HS256 secret its tokens are signed with

    @property
    def url(self) -> str:
        return self.replica.url

    def token(self, user: str, rooms: list[str], ttl_seconds: float = 600) -> str:
        return issue_token(self.key, user, rooms, ttl_seconds)


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """One redis-server and two replicas (r1, r2) on it, for the whole session."""
    directory = tmp_path_factory.mktemp("browser-servers")
    redis = Redis("redis", directory / "redis.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_CHAT_")}
    env.update(
        SSE_CHAT_REDIS_URL=redis.url,
        SSE_CHAT_RETRY_MS="500",
        SSE_CHAT_POST_RATE_LIMIT="0",  # the tests post faster than a person
        PYTHONUNBUFFERED="1",
    )
    replicas = [Replica(name, directory / f"{name}.log", env=env) for name in ("r1", "r2")]
    try:
        redis.start(directory)
        for replica in replicas:
            replica.start()
        yield Servers(redis, replicas, env)
    finally:
        for process in [*replicas, redis]:
            if process.running:
                process.end(signal.SIGKILL)


@pytest.fixture
def own_replicas(servers: Servers, tmp_path: Path) -> Iterator[list[Replica]]:
    """Two replicas (m1, m2) of this test's own on the session's Redis: whatever streams they
    hold are this test's."""
    replicas = [Replica(name, tmp_path / f"{name}.log", env=servers.env) for name in ("m1", "m2")]
    try:
        for replica in replicas:
            replica.start()
        yield replicas
    finally:
        for replica in replicas:
            if replica.running:
                replica.end(signal.SIGKILL)


@pytest.fixture
def replicas(servers: Servers) -> list[Replica]:
    """The two replicas, each running (a test before may have stopped one and failed)."""
    for replica in servers.replicas:
        if not replica.running:
            replica.start()
    return servers.replicas


@pytest.fixture(scope="session")
def private_replica(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateReplica]:
    """A third replica (p1) on the same Redis, with private rooms `team-*` and `ops`."""
    directory = tmp_path_factory.mktemp("browser-private")
    key = secrets.token_hex(32).encode()
    key_file = directory / "jwt.key"
    key_file.write_bytes(key)
    env = {
        **servers.env,
        "SSE_CHAT_PRIVATE_ROOMS": "team-*,ops",
        "SSE_CHAT_JWT_KEY_FILE": str(key_file),
    }
    replica = Replica("p1", directory / "p1.log", env=env)
    try:
        replica.start()
        yield PrivateReplica(replica, key)
    finally:
        if replica.running:
            replica.end(signal.SIGKILL)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; a launch starts from a fresh temporary profile."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium)"
    expect.set_options(timeout=TIMEOUT * 1000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


# Runs before the page's own scripts: records what the Content-Security-Policy blocked.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective}: ${event.blockedURI}`);
});
"""


@pytest.fixture
def new_profile(browser: Browser) -> Iterator[OpenProfile]:
    """Opens browser profiles (contexts): each its own storage, cookies and SharedWorker, as
    another person's browser; the tabs of one share them.

    Afterwards, each tab still open must have thrown no uncaught error and had nothing blocked
    by the Content-Security-Policy.
    """
    profiles: list[Profile] = []

    def open_profile(**options: object) -> Profile:
        context = browser.new_context(**options)  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT * 1000)
        context.add_init_script(RECORD_CSP_VIOLATIONS)
        profiles.append(Profile(context))
        return profiles[-1]

    try:
        yield open_profile
        for profile in profiles:
            profile.check()
    finally:
        for profile in profiles:
            profile.context.close()


@pytest.fixture
def new_page(new_profile: OpenProfile) -> OpenPage:
    """Opens pages, each in a browser profile of its own (its own storage: another person)."""

    def open_page(url: str, **options: object) -> Page:
        return new_profile(**options).open(url)

    return open_page


@pytest.fixture
def room(request: pytest.FixtureRequest) -> str:
    """A room of this test's own, so tests never see each other's messages."""
    return f"t-{request.node.name[5:45].replace('_', '-')}-{time.monotonic_ns() % 10**6}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (`/artifacts/` is git-ignored); emptied at the start of a run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS
