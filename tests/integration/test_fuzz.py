"""Property-based fuzzing of the endpoints against a real replica process.

Whatever arrives, a replica answers below 500; a refusal is a 4xx with a JSON error body and
stores nothing; an acceptance stores exactly one message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .redis_server import free_port

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
FIELDS = st.dictionaries(
    st.sampled_from(["user", "text", "room", "id"]) | st.text(max_size=6),
    st.text(max_size=60) | JSON_VALUES,
    max_size=4,
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
    ]
)
BODIES = (
    FIELDS.map(lambda fields: json.dumps(fields).encode())
    | FIELDS.map(lambda fields: urlencode({k: str(v) for k, v in fields.items()}).encode())
    | st.binary(max_size=200)
)
ROOMS = st.sampled_from(["lobby", "fuzz", "x" * 64]) | st.text(max_size=70)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """A replica process (embedded backplane, no rate limit) and a client of it."""
    port = free_port()
    env = {**os.environ, "SSE_CHAT_POST_RATE_LIMIT": "0", "SSE_CHAT_KEEPALIVE_SECONDS": "0.2"}
    server = subprocess.Popen(
        [sys.executable, "-m", "sse_chat", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 10
            while True:  # a starting process: polled until it answers
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the replica did not start"
                time.sleep(0.05)
            yield client
    finally:
        server.terminate()
        server.wait(timeout=10)


SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _stored(client: httpx.Client) -> int:
    total = 0
    for room in ("lobby", "fuzz"):
        response = client.get(f"/rooms/{room}/messages", params={"limit": 1000})
        total += len(response.json()["messages"])
    return total


def _assert_refusal_shape(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json", response.text
        body: dict[str, Any] = response.json()
        assert isinstance(body["error"], str) and isinstance(body["message"], str)


@SETTINGS
@given(room=ROOMS, content_type=CONTENT_TYPES, body=BODIES)
def test_any_post_is_answered_below_500_and_refusals_store_nothing(
    client: httpx.Client, room: str, content_type: str, body: bytes
) -> None:
    before = _stored(client)
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(f"/rooms/{quote(room, safe='')}/messages", content=body, headers=headers)
    _assert_refusal_shape(response)
    accepted = response.status_code == 201
    counted = accepted and response.json()["room"] in ("lobby", "fuzz")  # the rooms we watch
    assert _stored(client) == before + (1 if counted else 0)


@SETTINGS
@given(
    room=ROOMS,
    limit=st.text(max_size=8) | st.integers().map(str),
    last_event_id=st.text(max_size=30),
)
def test_any_history_or_stream_request_is_answered_below_500(
    client: httpx.Client, room: str, limit: str, last_event_id: str
) -> None:
    path = f"/rooms/{quote(room, safe='')}"
    _assert_refusal_shape(client.get(f"{path}/messages", params={"limit": limit}))
    _assert_refusal_shape(client.get(f"{path}/presence"))
    with client.stream("GET", f"{path}/events", params={"lastEventId": last_event_id}) as stream:
        if stream.status_code != 200:
            stream.read()
            _assert_refusal_shape(stream)


def test_schemathesis_finds_no_5xx_and_no_answer_off_the_openapi_document(
    client: httpx.Client, tmp_path: Path
) -> None:
    report = tmp_path / "schemathesis.json"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")), "run", f"{client.base_url}/openapi.json",
            "--exclude-path-regex", "events",  # streams never end; the test above fuzzes them
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "--max-examples", "40",
            "--request-timeout", "20",
            "--report", "json", "--report-json-path", str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    counts = json.loads(report.read_text())["test_cases"]
    print(f"\nschemathesis: {counts['generated']} requests, {counts['with_failures']} failing")
    assert counts["generated"] >= 100


def test_refusals_before_the_body_is_read_do_not_stall_the_next_request(
    client: httpx.Client,
) -> None:
    # Answered before their bodies were read, hypercorn would leave a later request on the same
    # kept-alive connection unanswered; each such answer now tells the client not to reuse it.
    statuses = []
    for _ in range(4):
        refused = client.request("DELETE", "/messages", json={"user": "a", "text": "b"})
        unsupported = client.post("/messages", content=b"x")
        statuses += [refused.status_code, unsupported.status_code]
    assert statuses == [405, 415] * 4
