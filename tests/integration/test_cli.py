"""The `sse-chat` command as a user runs it: a real process, SIGTERM, README's curl lines,
one-line failures, and the tokens it signs."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import httpx
import jwt
import pytest
import trio

from sse_chat.cli import parse_duration

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


def _assert_one_line_failure(result: subprocess.CompletedProcess[bytes]) -> str:
    """A failure a person can read: non-zero, and one `sse-chat: ...` line, no traceback."""
    stderr = result.stderr.decode()
    assert result.returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sse-chat: "), stderr
    return lines[0]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening (so nothing else takes it): connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


@pytest.mark.parametrize(
    "command", [["post", "hello"], ["tail"], ["tail", "--last-event-id", "0-0"]]
)
async def test_post_and_tail_say_in_one_line_that_the_server_cannot_be_reached(
    closed_port: int, command: list[str]
) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    with trio.fail_after(TIMEOUT):  # tail reports it at once rather than retrying forever
        result = await trio.run_process(
            [*SSE_CHAT, *command, "--url", url], capture_stderr=True, check=False
        )
    line = _assert_one_line_failure(result)
    assert line == f"sse-chat: cannot reach {url}: connection refused"


async def test_post_names_a_host_that_does_not_resolve() -> None:
    url = "http://no-such-host.invalid:8000"
    result = await trio.run_process(
        [*SSE_CHAT, "post", "--url", url, "hello"], capture_stderr=True, check=False
    )
    assert _assert_one_line_failure(result).startswith(f"sse-chat: cannot reach {url}: ")


async def test_post_refuses_a_url_without_a_scheme_in_one_line() -> None:
    result = await trio.run_process(
        [*SSE_CHAT, "post", "--url", "127.0.0.1:8000", "hello"], capture_stderr=True, check=False
    )
    assert result.returncode == 2
    assert "is not a URL" in _assert_one_line_failure(result)


async def test_tail_of_a_room_the_server_refuses_prints_the_refusal_in_one_line(
    server_process: tuple[str, trio.Process],
) -> None:
    url, _ = server_process
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [*SSE_CHAT, "tail", "--url", url, "--room", "no room!"],
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    line = _assert_one_line_failure(result)
    assert line.startswith("sse-chat: 404: ") and '"error"' in line


async def test_serve_on_a_port_in_use_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            result = await trio.run_process(
                [*SSE_CHAT, "serve", "--host", "127.0.0.1", "--port", str(port)],
                capture_stderr=True,
                check=False,
            )
    line = _assert_one_line_failure(result)
    assert line == f"sse-chat: cannot listen on 127.0.0.1:{port}: address already in use"


async def test_serve_on_an_address_not_of_this_host_says_so_in_one_line() -> None:
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never a local address.
    result = await trio.run_process(
        [*SSE_CHAT, "serve", "--host", "192.0.2.1", "--port", str(_free_port())],
        capture_stderr=True,
        check=False,
    )
    line = _assert_one_line_failure(result)
    assert line.startswith("sse-chat: cannot listen on 192.0.2.1:")


class ScriptedServer:
    """An HTTP server that answers each POST as its script says: a status, or "drop" (read
    the request, close without an answer, as when an answer is lost); it keeps the requests."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = script
        self.requests: list[dict[str, str]] = []  # each request's headers, lower-cased names
        self.url = ""

    async def serve(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(partial(trio.serve_tcp, self._answer, 0, host="127.0.0.1"))
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"

    async def _answer(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some()
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")[1:]
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            while len(body) < int(headers.get("content-length", "0")):
                body += await stream.receive_some()
            self.requests.append(headers)
            action = self.script.pop(0)
            if action == "drop":
                return
            answer = (
                b'{"id":"1-0","room":"lobby","user":"ana","text":"hi","ts":"t","replica":"s"}'
                if action == 201
                else b'{"error":"scripted","message":"as the script says"}'
            )
            await stream.send_all(
                b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nRetry-After: 0\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (int(action), len(answer), answer)
            )


async def _post_through(
    server: ScriptedServer, nursery: trio.Nursery
) -> subprocess.CompletedProcess[bytes]:
    await server.serve(nursery)
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [*SSE_CHAT, "post", "--url", server.url, "--user", "ana", "hi"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@pytest.mark.parametrize(
    "script",
    [["drop", 201], [503, 503, 201], [502, "drop", 504, 201]],
    ids=["answer lost", "busy twice", "gateway errors and a lost answer"],
)
async def test_post_retries_a_lost_answer_or_a_busy_server_with_one_idempotency_key(
    nursery: trio.Nursery, script: list[int | str]
) -> None:
    server = ScriptedServer(list(script))
    result = await _post_through(server, nursery)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "1-0"
    keys = [request["idempotency-key"] for request in server.requests]
    assert len(keys) == len(script) and len(set(keys)) == 1 and 1 <= len(keys[0]) <= 255


@pytest.mark.parametrize("status", [400, 401, 403, 413, 422, 429, 500])
async def test_post_does_not_retry_an_answer_that_retrying_cannot_change(
    nursery: trio.Nursery, status: int
) -> None:
    server = ScriptedServer([status, 201])
    result = await _post_through(server, nursery)
    assert result.returncode == 2
    assert _assert_one_line_failure(result).startswith(f"sse-chat: {status}: ")
    assert len(server.requests) == 1


async def test_two_posts_of_the_same_text_are_two_messages(nursery: trio.Nursery) -> None:
    server = ScriptedServer([201, 201])
    await server.serve(nursery)
    for _ in range(2):
        await trio.run_process([*SSE_CHAT, "post", "--url", server.url, "hi"], capture_stdout=True)
    first, second = (request["idempotency-key"] for request in server.requests)
    assert first != second


SECRET = b"a shared secret of at least thirty-two bytes, for HS256"


@pytest.fixture
def key_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an operator whose SSE_CHAT_JWT_KEY_FILE names a shared secret."""
    key_file = tmp_path / "jwt.key"
    key_file.write_bytes(SECRET + b"\n")  # as `echo ... > file` writes it
    return {**os.environ, "SSE_CHAT_JWT_KEY_FILE": str(key_file)}


@pytest.fixture
def public_pem(tmp_path: Path) -> Path:
    """A key file holding a PEM public key (which verifies tokens but cannot sign them)."""
    path = tmp_path / "public.pem"
    path.write_text("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n")
    return path


async def _token_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [*SSE_CHAT, "token", *args], env=env, capture_stdout=True, capture_stderr=True, check=False
    )


async def test_token_prints_a_jwt_for_the_user_and_rooms_signed_with_the_configured_key(
    key_env: dict[str, str],
) -> None:
    before = int(time.time())
    result = await _token_command(key_env, "--user", "ana", "--rooms", "team-*, lobby")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    token = result.stdout.decode().strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ana"
    assert claims["rooms"] == ["team-*", "lobby"]
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 3600  # the default lifetime: one hour
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


async def test_token_lasts_as_long_as_asked_and_carries_the_audience_and_issuer(
    key_env: dict[str, str],
) -> None:
    env = {**key_env, "SSE_CHAT_JWT_AUDIENCE": "chat", "SSE_CHAT_JWT_ISSUER": "ops"}
    result = await _token_command(env, "--user", "bo", "--ttl", "15m")
    assert result.returncode == 0, result.stderr.decode()
    claims = jwt.decode(
        result.stdout.strip(), SECRET, algorithms=["HS256"], audience="chat", issuer="ops"
    )
    assert claims["sub"] == "bo" and "rooms" not in claims
    assert claims["exp"] - claims["iat"] == 15 * 60


async def test_a_printed_token_posts_and_tails_a_private_room_through_the_cli(
    key_env: dict[str, str],
) -> None:
    env = {**key_env, "SSE_CHAT_AUTH": "post", "SSE_CHAT_PRIVATE_ROOMS": "team-*"}
    port = _free_port()
    server = await trio.lowlevel.open_process(
        [*SSE_CHAT, "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_until_ready(url)
        issued = await _token_command(key_env, "--user", "ana", "--rooms", "team-*")
        token = issued.stdout.decode().strip()
        post = [*SSE_CHAT, "post", "--url", url, "--room", "team-a", "--user", "ana", "hi team"]
        refused = await trio.run_process(post, capture_stderr=True, check=False)
        assert _assert_one_line_failure(refused).startswith("sse-chat: 401: ")
        posted = await trio.run_process([*post, "--token", token], capture_stdout=True)
        tail = [*SSE_CHAT, "tail", "--url", url, "--room", "team-a", "--json"]
        refused = await trio.run_process(tail, capture_stderr=True, check=False)
        assert _assert_one_line_failure(refused).startswith("sse-chat: 401: ")
        reader = await trio.lowlevel.open_process(
            [*tail, "--last-event-id", "0-0"],
            env={**env, "SSE_CHAT_TOKEN": token},
            stdout=subprocess.PIPE,
        )
        assert reader.stdout is not None
        try:
            lines = b""
            with trio.fail_after(TIMEOUT):
                while b"\n" not in lines:
                    lines += await reader.stdout.receive_some()
        finally:
            reader.kill()
            await reader.wait()
        printed = json.loads(lines.split(b"\n")[0])
        assert (printed["id"], printed["text"]) == (posted.stdout.decode().strip(), "hi team")
    finally:
        server.kill()
        await server.wait()


async def test_token_is_signed_with_the_first_shared_secret_of_several_key_files(
    key_env: dict[str, str], public_pem: Path
) -> None:
    env = {**key_env, "SSE_CHAT_JWT_KEY_FILE": f"{public_pem},{key_env['SSE_CHAT_JWT_KEY_FILE']}"}
    result = await _token_command(env, "--user", "ana")
    assert result.returncode == 0, result.stderr.decode()
    assert jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])["sub"] == "ana"


async def test_token_without_a_shared_secret_says_what_it_needs(public_pem: Path) -> None:
    unset = {k: v for k, v in os.environ.items() if k != "SSE_CHAT_JWT_KEY_FILE"}
    for env in (unset, {**unset, "SSE_CHAT_JWT_KEY_FILE": str(public_pem)}):
        result = await _token_command(env, "--user", "ana")
        assert result.returncode == 2
        assert result.stdout == b""
        assert _assert_one_line_failure(result) == (
            "sse-chat: token needs SSE_CHAT_JWT_KEY_FILE naming a shared secret (HS256)"
        )


@pytest.mark.parametrize("ttl", ["", "1w", "-5m", "0", "0h", "1.5h", "h", "1 h", "1h2"])
async def test_token_with_a_bad_ttl_fails_in_one_line(key_env: dict[str, str], ttl: str) -> None:
    result = await _token_command(key_env, "--user", "ana", f"--ttl={ttl}")
    assert result.returncode == 2
    assert result.stdout == b""
    assert _assert_one_line_failure(result).startswith("sse-chat: --ttl: ")


async def test_token_refuses_a_secret_too_short_for_hs256_in_one_line(tmp_path: Path) -> None:
    key_file = tmp_path / "short.key"
    await trio.Path(key_file).write_bytes(b"short")
    env = {**os.environ, "SSE_CHAT_JWT_KEY_FILE": str(key_file)}
    result = await _token_command(env, "--user", "ana")
    assert result.returncode == 2
    assert result.stdout == b""
    assert _assert_one_line_failure(result).startswith("sse-chat: SSE_CHAT_JWT_KEY_FILE: ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172_800), (" 1h ", 3600)],
)
def test_a_ttl_is_seconds_or_a_number_with_a_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
