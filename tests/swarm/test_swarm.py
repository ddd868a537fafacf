"""The real thing: the Dockerfile built and stack.yml deployed on a single-node Docker Swarm.

No registry is reachable here, so the base images are stand-ins built from a minimal Debian and
imported under the names the Dockerfile and stack ask for. This kernel has no IPVS: the routing
mesh and service VIPs do not route, so the test deploys stack.yml with the least override that
works (dnsrr endpoints, the chat port unpublished) plus an HAProxy gateway resolving
`tasks.chat`, published on a host port. Then: chat across replicas, a rolling update, a killed
task, and nothing lost. Everything is torn down and the host's network restored.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml

from ..integration.redis_server import free_port
from ..integration.support import TIMEOUT, wait_until
from ..system.clients import EventSourceClient
from .engine import Dockerd, HostState, run, standin_rootfs

ROOT = Path(__file__).resolve().parents[2]
CHAT_IMAGE = "sse-chat:swarm-test"
GATEWAY_IMAGE = "sse-chat-test/haproxy:standin"
REPLICAS = 3


@dataclass
class Swarm:
    dockerd: Dockerd
    url: str  # the gateway, standing in for the routing mesh
    timings: dict[str, float]  # seconds each setup step took, for the report

    def chat_containers(self) -> list[str]:
        names = self.dockerd.docker("ps", "--filter", "name=chat_chat.", "--format", "{{.ID}}")
        return names.split()


def _base_image_arg() -> tuple[str, str]:
    """The Dockerfile's base-image build ARG and its default (e.g. python:3.12-slim)."""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        match = re.match(r"\s*ARG\s+(\w+)=(\S*python\S*)", line)
        if match:
            return match[1], match[2]
    raise AssertionError("the Dockerfile names no python base image ARG")


def _prepare_standin(rootfs: Path) -> None:
    """Make the minimal Debian behave like the official images where the build relies on it."""
    python = rootfs / "usr/local/bin/python"
    if not python.exists():
        python.symlink_to("/usr/bin/python3")
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    # pip inside `docker build` reaches PyPI only if it trusts this machine's CA bundle.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/")
    # The official redis image has /data owned by its redis user; a volume copies that.
    data = rootfs / "data"
    data.mkdir(exist_ok=True)
    for line in (rootfs / "etc/passwd").read_text().splitlines():
        name, _, uid, gid, *_ = line.split(":")
        if name == "redis":
            os.chown(data, int(uid), int(gid))


def _import(dockerd: Dockerd, rootfs: Path, tag: str) -> None:
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        [
            "docker", "import",
            "--change", "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin",
            "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
            "-", tag,
        ],
        stdin=tar.stdout,
        env=dockerd.env,
        check=True,
        capture_output=True,
    )  # fmt: skip
    assert tar.stdout is not None
    tar.stdout.close()
    assert tar.wait() == 0


def _gateway_config() -> str:
    return f"""
global
  maxconn 4096
resolvers docker
  nameserver dns 127.0.0.11:53
  hold valid 1s
defaults
  mode http
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  retries 3
  option redispatch
frontend chat
  bind :8000
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /readyz
  default-server check inter 500ms fall 1 rise 1 resolvers docker init-addr none
  server-template chat {REPLICAS + 2} tasks.chat:8000
"""


def _stack_for_this_machine(dockerd: Dockerd, workdir: Path, port: int) -> Path:
    """stack.yml as deployed, with only what this kernel forces changed, plus the gateway."""
    rendered = dockerd.docker(
        "stack", "config", "--skip-interpolation", "-c", str(ROOT / "stack.yml")
    )
    stack: dict[str, Any] = yaml.safe_load(rendered)
    services = stack["services"]
    for service in services.values():
        service.setdefault("deploy", {})["endpoint_mode"] = "dnsrr"  # no IPVS here
        service.pop("ports", None)  # dnsrr forbids ports on the routing mesh
    services["chat"]["image"] = CHAT_IMAGE
    network = next(iter(stack["networks"]))
    (workdir / "haproxy.cfg").write_text(_gateway_config())
    stack.setdefault("configs", {})["gateway"] = {"file": str(workdir / "haproxy.cfg")}
    services["gateway"] = {
        "image": GATEWAY_IMAGE,
        "command": ["haproxy", "-W", "-db", "-f", "/etc/haproxy.cfg"],
        "configs": [{"source": "gateway", "target": "/etc/haproxy.cfg"}],
        "networks": [network],
        "ports": [{"target": 8000, "published": port, "protocol": "tcp", "mode": "host"}],
        "deploy": {"endpoint_mode": "dnsrr"},
    }
    path = workdir / "stack.deployed.yml"
    path.write_text(yaml.safe_dump(stack))
    return path


def _wait_for(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)  # swarm reports state by polling only


def _healthy_replicas(dockerd: Dockerd) -> int:
    ids = dockerd.docker("ps", "-q", "--filter", "name=chat_chat.", "--filter", "health=healthy")
    return len(ids.split())


def _gateway_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def swarm() -> Iterator[Swarm]:
    host = HostState.capture()
    workdir = Path(tempfile.mkdtemp(prefix="sse-chat-swarm-"))
    dockerd = Dockerd(workdir / "docker")
    try:
        timings: dict[str, float] = {}
        began = time.monotonic()
        rootfs = standin_rootfs()
        _prepare_standin(rootfs)
        timings["stand-in rootfs"] = time.monotonic() - began
        dockerd.start()
        arg, base = _base_image_arg()
        stack_text = (ROOT / "stack.yml").read_text()
        redis_image = re.search(r"image:\s*(\S*redis\S*)", stack_text)
        for tag in {base, GATEWAY_IMAGE, redis_image[1] if redis_image else "redis:7"}:
            _import(dockerd, rootfs, tag)
        began = time.monotonic()
        dockerd.docker("build", "--build-arg", f"{arg}={base}", "-t", CHAT_IMAGE, str(ROOT))
        timings["image build"] = time.monotonic() - began
        # From here on, nothing in a container may reach beyond this machine.
        run("iptables", "-I", "DOCKER-USER", "-m", "conntrack", "--ctstate", "NEW",
            "!", "-d", "127.0.0.0/8", "-i", "docker_gwbridge", "!", "-o", "docker_gwbridge",
            "-j", "DROP", check=False)  # fmt: skip
        dockerd.docker("swarm", "init", "--advertise-addr", "127.0.0.1",
                       "--listen-addr", "127.0.0.1:2377")  # fmt: skip
        secret = subprocess.run(
            ["docker", "secret", "create", "redis_password", "-"],
            input="swarm-test-secret",
            text=True,
            env=dockerd.env,
            capture_output=True,
            check=True,
        )
        assert secret.returncode == 0
        port = free_port()
        stack = _stack_for_this_machine(dockerd, workdir, port)
        began = time.monotonic()
        dockerd.docker("stack", "deploy", "-c", str(stack), "chat")
        url = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _healthy_replicas(dockerd) == REPLICAS, "3 healthy replicas")
        _wait_for(lambda: _gateway_ready(url), "the gateway to reach a ready replica")
        timings["deploy to 3 healthy"] = time.monotonic() - began
        yield Swarm(dockerd, url, timings)
    finally:
        dockerd.docker("stack", "rm", "chat", check=False)
        dockerd.docker("swarm", "leave", "--force", check=False)
        dockerd.stop()
        host.restore()
        shutil.rmtree(workdir, ignore_errors=True)
        assert host.differences() == [], "the host's network was not restored"


def _missing(clients: list[EventSourceClient], wanted: set[str]) -> str:
    """Which accepted messages each client still lacks, and how its connections went."""
    lines = []
    for client in clients:
        missing = sorted(wanted - {message["id"] for message in client.messages})
        lines.append(
            f"{client.name}: missing {len(missing)} {missing[:5]}; streams {client.streams},"
            f" endings {dict(client.endings)}, now on {client.replica}"
        )
    return "clients did not get every accepted message:\n" + "\n".join(lines)


async def test_chat_survives_a_rolling_update_and_a_killed_task(swarm: Swarm) -> None:
    clients = [EventSourceClient(f"c{n}", swarm.url) for n in range(4)]
    accepted: list[dict[str, Any]] = []
    refused: list[str] = []
    async with (
        httpx.AsyncClient(base_url=swarm.url, timeout=5) as poster,
        trio.open_nursery() as nursery,
    ):
        for client in clients:
            nursery.start_soon(client.run)
        with trio.fail_after(TIMEOUT):  # a fresh client gets what is posted after it joined
            for client in clients:
                await client.connected.wait()

        async def post_until(count: int) -> None:
            while len(accepted) < count:
                text = f"m{len(accepted) + len(refused)}"
                try:
                    response = await poster.post("/messages", json={"user": "swarm", "text": text})
                except httpx.TransportError:
                    refused.append(text)
                    continue
                if response.status_code == 201:
                    accepted.append(response.json())
                else:
                    refused.append(text)
                await trio.sleep(0.02)

        with trio.fail_after(300):
            await post_until(20)
            update_began = trio.current_time()
            update = await trio.to_thread.run_sync(
                lambda: subprocess.Popen(
                    ["docker", "service", "update", "--force", "chat_chat"],
                    env=swarm.dockerd.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            while update.poll() is None:
                await post_until(len(accepted) + 5)
            assert update.returncode == 0
            swarm.timings["rolling update"] = trio.current_time() - update_began
            victim = swarm.chat_containers()[0]
            killed_at = trio.current_time()
            await trio.to_thread.run_sync(swarm.dockerd.docker, "kill", victim)
            await post_until(len(accepted) + 40)
            await trio.to_thread.run_sync(
                _wait_for, lambda: _healthy_replicas(swarm.dockerd) == REPLICAS, "a replacement"
            )
            swarm.timings["killed task replaced"] = trio.current_time() - killed_at
            wanted = {message["id"] for message in accepted}
            # A client whose replica was killed hears nothing more from it (its network
            # namespace is gone, no reset arrives): it reconnects after its read timeout.
            try:
                await wait_until(lambda: all(c.has_all(wanted) for c in clients), seconds=60)
            except trio.TooSlowError:
                raise AssertionError(_missing(clients, wanted)) from None
        nursery.cancel_scope.cancel()

    accepted_ids = {message["id"] for message in accepted}
    for client in clients:
        ids = [message["id"] for message in client.messages]
        assert len(ids) == len(set(ids)), "a message arrived twice"
        assert [m for m in client.messages if m["id"] in accepted_ids] == accepted
    replicas_seen = set().union(*(client.streams for client in clients))
    print(
        f"\nswarm: {len(accepted)} posts accepted, {len(refused)} refused; each of"
        f" {len(clients)} clients got all, once and in order, across"
        f" {len(replicas_seen)} replica containers and {sum(len(c.streams) - 1 for c in clients)}"
        " reconnects; "
        + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in swarm.timings.items())
    )
