"""A private Docker engine for the swarm test, and putting the host back as it was.

dockerd changes the host's network (iptables/nft rules, the FORWARD policy, ip_forward,
docker0/docker_gwbridge bridges) and leaves files behind; `HostState` snapshots what it touches
and restores it exactly, and `Dockerd` keeps all of its own state under one directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOTFS_CACHE = Path("/var/cache/sse-chat-swarm")
# One minimal Debian with everything the stack's images need, tagged once per image name.
# Where dockerd and its containerd leave state whatever their roots are set to.
DOCKER_PATHS = ("/run/docker", "/run/containerd", "/var/lib/docker", "/var/lib/containerd")
STANDIN_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates,redis-server,haproxy"


def run(*argv: str, check: bool = True, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run a command, capturing its output; raise with that output when it fails."""
    result = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
    return result


@dataclass
class HostState:
    """What dockerd changes on the host, as it was before."""

    iptables: str
    nft: str
    ip_forward: str
    links: set[str]
    paths: set[str]  # of DOCKER_PATHS, those that existed

    @classmethod
    def capture(cls) -> HostState:
        return cls(
            iptables=run("iptables-save").stdout,
            nft=run("nft", "list", "ruleset").stdout,
            ip_forward=Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
            links=_links(),
            paths={path for path in DOCKER_PATHS if Path(path).exists()},
        )

    def restore(self) -> None:
        for link in _links() - self.links:
            run("ip", "link", "delete", link, check=False)
        # nft holds the iptables-nft tables too: restoring the ruleset restores both views.
        # (Never flush iptables-legacy tables: on this kernel that creates undeletable ones.)
        run("nft", "flush", "ruleset")
        if self.nft.strip():
            subprocess.run(["nft", "-f", "-"], input=self.nft, text=True, check=True)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(self.ip_forward + "\n")
        for path in DOCKER_PATHS:
            if path not in self.paths:
                shutil.rmtree(path, ignore_errors=True)

    def differences(self) -> list[str]:
        """What is not as captured (empty when the host is back as it was)."""
        now = HostState.capture()
        return [
            name
            for name in ("iptables", "nft", "ip_forward", "links", "paths")
            if getattr(now, name) != getattr(self, name)
        ]


def _links() -> set[str]:
    output = run("ip", "-o", "link").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in output.splitlines()}


class Dockerd:
    """dockerd with its own data, exec root and socket; `stop()` removes every trace."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0"}

    def docker(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        return run("docker", *args, check=check, env=self.env, timeout=timeout).stdout

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "dockerd.log", "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                "dockerd",
                "-H", f"unix://{self.socket}",
                "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "dockerd.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"},
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while run("docker", "info", check=False, env=self.env).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / "dockerd.log").read_text()[-3000:])
            time.sleep(0.2)  # dockerd has no readiness event but its API answering

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # containerd-shims and the like that outlived the daemon
        run("pkill", "-f", str(self.root), check=False)
        for mount in reversed(_mounts_under(self.root)):
            run("umount", "-l", mount, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    mounts = Path("/proc/mounts").read_text().splitlines()
    return sorted(line.split()[1] for line in mounts if line.split()[1].startswith(str(root)))


def standin_rootfs() -> Path:
    """A minimal Debian (cached across runs) standing in for the registry's base images."""
    rootfs = ROOTFS_CACHE / "rootfs"
    if not rootfs.is_dir():
        ROOTFS_CACHE.mkdir(parents=True, exist_ok=True)
        building = ROOTFS_CACHE / "rootfs.tmp"
        shutil.rmtree(building, ignore_errors=True)
        run(
            "debootstrap", "--variant=minbase", f"--include={STANDIN_PACKAGES}",
            "bookworm", str(building), "http://deb.debian.org/debian",
            timeout=900,
        )  # fmt: skip
        building.rename(rootfs)
    return rootfs
