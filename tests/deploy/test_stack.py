"""stack.yml, read statically: the docker client, the compose-spec schema, then what it wires."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from sse_chat.config import Settings

from ..integration.redis_server import free_port
from .conftest import ROOT, LivenessServer, run, tool

STACK = ROOT / "stack.yml"
SECRETS = "/run/secrets/"


def docker_stack_config(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`docker stack config`: the stack as `docker stack deploy` reads it (needs no engine)."""
    docker = shutil.which("docker")
    assert docker, "the docker client is not installed (tests/run installs docker.io)"
    return run(docker, "stack", "config", "-c", str(STACK), env=env)


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """The stack as deployed: interpolated, in long form."""
    rendered = docker_stack_config()
    assert rendered.returncode == 0, rendered.stderr
    loaded: dict[str, Any] = yaml.safe_load(rendered.stdout)
    return loaded


@pytest.fixture(scope="module")
def chat(stack: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = stack["services"]["chat"]
    return service


@pytest.fixture(scope="module")
def redis(stack: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = stack["services"]["redis"]
    return service


def seconds(duration: str) -> float:
    """A compose duration (`1m30s`, `500ms`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(n) * units[u] for n, u in parts)


def secret_paths(service: dict[str, Any]) -> set[str]:
    return {SECRETS + entry.get("target", entry["source"]) for entry in service["secrets"]}


def test_docker_stack_config_accepts_the_stack() -> None:
    result = docker_stack_config()
    assert result.returncode == 0, result.stderr


def test_the_compose_spec_schema_accepts_the_stack() -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(STACK))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_chat_image_can_be_chosen_at_deploy_time(chat: dict[str, Any]) -> None:
    assert chat["image"] == "sse-chat:latest"
    rendered = docker_stack_config({**os.environ, "SSE_CHAT_IMAGE": "sse-chat:1.2.3"})
    assert yaml.safe_load(rendered.stdout)["services"]["chat"]["image"] == "sse-chat:1.2.3"


def test_chat_runs_three_replicas_updated_one_at_a_time_start_first(
    chat: dict[str, Any],
) -> None:
    deploy = chat["deploy"]
    assert deploy["replicas"] == 3
    update = deploy["update_config"]
    assert (update["parallelism"], update["order"], update["failure_action"]) == (
        1,
        "start-first",
        "rollback",
    )
    rollback = deploy["rollback_config"]
    assert (rollback["parallelism"], rollback["order"]) == (1, "start-first")
    assert deploy["restart_policy"]["condition"] == "any"
    assert {"cpus", "memory"} <= deploy["resources"]["limits"].keys()


def test_chat_health_is_liveness_at_healthz_without_curl(chat: dict[str, Any]) -> None:
    test = chat["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert "/healthz" in test[3] and "/readyz" not in test[3]


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_chat_healthcheck_command_follows_the_healthz_status(
    chat: dict[str, Any], liveness_server: LivenessServer, status: int, healthy: bool
) -> None:
    liveness_server.status = status
    command = [sys.executable, *chat["healthcheck"]["test"][2:]]
    result = run(*command, env={**os.environ, "SSE_CHAT_PORT": str(liveness_server.port)})
    assert (result.returncode == 0) == healthy, result.stderr
    assert liveness_server.paths == ["/healthz"]


def test_chat_is_given_longer_to_stop_than_it_takes_to_drain(chat: dict[str, Any]) -> None:
    graceful = chat["environment"].get(
        "SSE_CHAT_GRACEFUL_TIMEOUT_SECONDS", Settings().graceful_timeout_seconds
    )
    assert seconds(chat["stop_grace_period"]) >= float(graceful) + 5


def test_chat_reaches_redis_with_the_password_from_the_secret(
    stack: dict[str, Any], chat: dict[str, Any], redis: dict[str, Any]
) -> None:
    environment = chat["environment"]
    url = urlsplit(environment["SSE_CHAT_REDIS_URL"])
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)
    assert url.password is None, "the password comes from the secret only"
    password_file = environment["SSE_CHAT_REDIS_PASSWORD_FILE"]
    assert password_file in secret_paths(chat)
    assert password_file in secret_paths(redis)
    assert password_file in redis["command"][-1], "redis takes its password from the secret"
    for entry in chat["secrets"]:
        declared = stack["secrets"][entry["source"]]
        assert declared.get("external") or declared.get("file")


def test_chat_is_published_on_the_routing_mesh_and_redis_is_not(
    stack: dict[str, Any], chat: dict[str, Any], redis: dict[str, Any]
) -> None:
    assert {(p["target"], p["published"], p["mode"]) for p in chat["ports"]} == {
        (8000, 8000, "ingress")
    }
    assert "ports" not in redis
    shared = chat["networks"].keys() & redis["networks"].keys()
    assert shared and all(stack["networks"][name]["driver"] == "overlay" for name in shared)


def test_redis_keeps_an_append_only_file_on_a_named_volume(
    stack: dict[str, Any], redis: dict[str, Any]
) -> None:
    command = redis["command"][-1]
    assert "--appendonly yes" in command
    data_dir = re.search(r"--dir (\S+)", command)
    assert data_dir, "redis names its data directory"
    (volume,) = (v for v in redis["volumes"] if v["target"] == data_dir[1])
    assert volume["type"] == "volume" and volume["source"] in stack["volumes"]
    assert redis["deploy"]["update_config"]["order"] == "stop-first"


def test_redis_runs_as_a_non_root_user(redis: dict[str, Any]) -> None:
    assert redis["user"] not in {"root", "0"} and not redis["user"].startswith("0:")


class StackRedis:
    """redis-server run by the stack's own command and health check, with local paths."""

    def __init__(self, redis: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.password = "s3cret-from-the-secret"
        secret = workdir / "redis_password"
        secret.write_text(self.password + "\n")
        (workdir / "data").mkdir()
        self.data = workdir / "data"

        def local(text: str) -> str:
            text = text.replace(SECRETS + "redis_password", str(secret))
            return text.replace("--dir /data", f"--dir {self.data} --port {self.port}")

        self.command = [local(arg) for arg in redis["command"]]
        self.healthcheck = local(redis["healthcheck"]["test"][1]).replace(
            "redis-cli", f"redis-cli -p {self.port}"
        )

    def healthy(self) -> bool:
        return run("sh", "-c", self.healthcheck).returncode == 0


@pytest.fixture
def stack_redis(redis: dict[str, Any], tmp_path: Path) -> Iterator[StackRedis]:
    server = StackRedis(redis, tmp_path)
    assert not server.healthy()
    process = subprocess.Popen(server.command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not server.healthy():
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server never became healthy"
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_redis_command_requires_the_password_from_the_secret(stack_redis: StackRedis) -> None:
    cli = ["redis-cli", "-p", str(stack_redis.port)]
    assert "NOAUTH" in run(*cli, "ping").stdout
    assert run(*cli, "--no-auth-warning", "-a", stack_redis.password, "ping").stdout == "PONG\n"
    assert (stack_redis.data / "appendonlydir").is_dir()
