"""The `sse-chat` command as a user runs it: a real process, SIGTERM, and README's curl lines."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from .support import TIMEOUT, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
SSE_CHAT = [sys.executable, "-m", "sse_chat"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def server_process() -> AsyncIterator[tuple[str, trio.Process]]:
    """`sse-chat serve` on a free port, as a child process."""
    port = _free_port()
    env = {**os.environ, "SSE_CHAT_REPLICA_ID": "cli-replica", "SSE_CHAT_KEEPALIVE_SECONDS": "1"}
    process = await trio.lowlevel.open_process(
        [*SSE_CHAT, "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_until_ready(url)
        yield url, process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_serve_post_and_tail_work_together_and_sigterm_ends_it_cleanly(
    server_process: tuple[str, trio.Process],
) -> None:
    url, server = server_process
    posted = await trio.run_process(
        [*SSE_CHAT, "post", "--url", url, "--room", "cli", "--user", "ana", "hi there"],
        capture_stdout=True,
    )
    message_id = posted.stdout.decode().strip()
    # From the start of history, so tail cannot miss the message whenever it connects.
    tail = await trio.lowlevel.open_process(
        [*SSE_CHAT, "tail", "--url", url, "--room", "cli", "--json", "--last-event-id", "0-0"],
        stdout=subprocess.PIPE,
    )
    assert tail.stdout is not None
    try:
        lines = b""
        with trio.fail_after(TIMEOUT):
            while b"\n" not in lines:
                lines += await tail.stdout.receive_some()
        printed = json.loads(lines.split(b"\n")[0])
        assert (printed["id"], printed["user"], printed["text"]) == (message_id, "ana", "hi there")
    finally:
        tail.kill()
        await tail.wait()

    server.send_signal(signal.SIGTERM)
    with trio.fail_after(TIMEOUT):
        assert await server.wait() == 0


async def test_post_prints_the_refusal_and_fails(server_process: tuple[str, trio.Process]) -> None:
    url, _ = server_process
    result = await trio.run_process(
        [*SSE_CHAT, "post", "--url", url, "--user", "ana", ""],
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert b"422" in result.stderr and b"text" in result.stderr


async def test_serve_refuses_a_bad_setting_with_a_clear_message() -> None:
    result = await trio.run_process(
        [*SSE_CHAT, "serve"],
        env={**os.environ, "SSE_CHAT_PORT": "eighty"},
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert b"SSE_CHAT_PORT" in result.stderr


def _readme_curl_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it with curl", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("curl ")]


async def test_the_curl_examples_in_the_readme_work_verbatim(
    server_process: tuple[str, trio.Process],
) -> None:
    url, _ = server_process
    lines = _readme_curl_lines()
    assert len(lines) >= 6
    outputs = {}
    for line in lines:
        argv = [arg.replace("http://127.0.0.1:8000", url) for arg in shlex.split(line)]
        streaming = "-N" in argv
        if streaming:  # a stream never ends: read it for a moment, as a person would
            argv[1:1] = ["--max-time", "1.5"]
        result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        output = outputs[line] = result.stdout.decode()
        if streaming:
            assert result.returncode == 28, line  # curl's code for "stopped by --max-time"
            assert "event: ready" in output, line
        else:
            assert result.returncode == 0, line
            assert "error" not in json.loads(output), line
    resumed = next(output for line, output in outputs.items() if "Last-Event-ID" in line)
    replayed = re.findall(r"^data: (.*)$", resumed, flags=re.MULTILINE)
    assert any(json.loads(data).get("text") == "hi from JSON" for data in replayed)


async def test_logs_are_json_lines_naming_the_replica_and_never_message_text() -> None:
    port = _free_port()
    env = {**os.environ, "SSE_CHAT_REPLICA_ID": "logged"}
    process = await trio.lowlevel.open_process(
        [*SSE_CHAT, "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_until_ready(url)
        async with httpx.AsyncClient(base_url=url) as client:
            posted = await client.post("/messages", json={"user": "ana", "text": "s3cret words"})
        assert posted.status_code == 201
        process.send_signal(signal.SIGTERM)
        output = b""
        with trio.fail_after(TIMEOUT):
            while chunk := await process.stderr.receive_some():
                output += chunk
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    entries = [json.loads(line) for line in output.decode().splitlines()]
    assert entries and all(entry["replica"] == "logged" for entry in entries)
    assert {"ts", "level", "logger", "message"} <= set(entries[0])
    assert any("SIGTERM" in entry["message"] for entry in entries)
    assert "s3cret" not in output.decode()
