"""The Dockerfile and .dockerignore, read statically: hadolint, then what the image promises."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass

import pytest

from .conftest import ROOT, LivenessServer, run, tool

NON_ROOT = re.compile(r"^(?!(root|0)(:|$)).+")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, comments dropped and continuation lines joined."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    logical = "\n".join(lines).replace("\\\n", " ")
    instructions = []
    for line in logical.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each build stage, each list starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (fails on shell form)."""
    argv = json.loads(args)
    assert isinstance(argv, list), args
    assert all(isinstance(arg, str) for arg in argv), args
    return argv


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in stage if instruction.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    return stages(dockerfile)[-1]


def healthcheck_command(final_stage: list[Instruction]) -> list[str]:
    options, _, command = only(final_stage, "HEALTHCHECK").args.partition(" CMD ")
    assert options.startswith("--") and command, "HEALTHCHECK needs options and a CMD"
    return exec_form(command)


def test_hadolint_finds_nothing() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_stage_starts_from_the_base_image_build_arg(dockerfile: list[Instruction]) -> None:
    first = dockerfile[0]
    assert first.keyword == "ARG"
    name, _, default = first.args.partition("=")
    assert default == "python:3.12-slim"
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2, "the build happens in a stage of its own"
    for stage in all_stages:
        assert stage[0].args.split()[0] in {f"${name}", f"${{{name}}}"}


def test_final_stage_takes_only_the_built_venv(final_stage: list[Instruction]) -> None:
    copies = [i.args for i in final_stage if i.keyword in {"COPY", "ADD"}]
    assert copies, "the final stage copies the installed application"
    assert all(args.startswith("--from=") for args in copies), copies


def test_build_installs_the_package_from_pyproject(dockerfile: list[Instruction]) -> None:
    build = stages(dockerfile)[0]
    assert any(re.search(r"pip install\b.* \.$", i.args) for i in build if i.keyword == "RUN")
    copied = " ".join(i.args for i in build if i.keyword == "COPY")
    for needed in ("pyproject.toml", "README.md", "sse_chat", "static"):
        assert needed in copied, f"the build stage does not copy {needed}"


def test_runs_as_a_non_root_user(final_stage: list[Instruction]) -> None:
    users = [i.args for i in final_stage if i.keyword == "USER"]
    assert users and NON_ROOT.match(users[-1]), users
    last_user = max(n for n, i in enumerate(final_stage) if i.keyword == "USER")
    assert all(i.keyword != "RUN" for i in final_stage[last_user:]), "RUN after USER"


def test_serves_on_all_interfaces_of_the_exposed_port(final_stage: list[Instruction]) -> None:
    assert only(final_stage, "EXPOSE").args == "8000"
    env = " ".join(i.args for i in final_stage if i.keyword == "ENV")
    assert "SSE_CHAT_HOST=0.0.0.0" in env.split()
    assert "SSE_CHAT_PORT=8000" in env.split()


def test_the_server_is_pid_1_so_it_gets_sigterm(final_stage: list[Instruction]) -> None:
    command = exec_form(only(final_stage, "ENTRYPOINT").args) + exec_form(
        only(final_stage, "CMD").args
    )
    assert command == ["sse-chat", "serve"]


def test_healthcheck_asks_healthz_with_python_not_curl(final_stage: list[Instruction]) -> None:
    command = healthcheck_command(final_stage)
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    assert "curl" not in command and "wget" not in command


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_follows_the_healthz_status(
    final_stage: list[Instruction], liveness_server: LivenessServer, status: int, healthy: bool
) -> None:
    liveness_server.status = status
    command = [sys.executable, *healthcheck_command(final_stage)[1:]]
    result = run(*command, env={**os.environ, "SSE_CHAT_PORT": str(liveness_server.port)})
    assert (result.returncode == 0) == healthy, result.stderr
    assert liveness_server.paths == ["/healthz"]


def test_healthcheck_command_fails_when_nothing_listens(final_stage: list[Instruction]) -> None:
    command = [sys.executable, *healthcheck_command(final_stage)[1:]]
    assert run(*command, env={**os.environ, "SSE_CHAT_PORT": "1"}).returncode != 0


def test_dockerignore_lets_in_exactly_what_the_build_copies(
    dockerfile: list[Instruction],
) -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "the context is an allowlist: nothing unless named"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for stage in stages(dockerfile):
        for instruction in stage:
            if instruction.keyword == "COPY" and not instruction.args.startswith("--from="):
                copied.update(src.rstrip("/") for src in instruction.args.split()[:-1])
    assert copied == allowed
