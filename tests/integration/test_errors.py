"""Every refusal of the contract: its status, its JSON body, and that nothing was stored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import StartReplica

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

REFUSED_POSTS: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    # (test id, path, headers, body, status, error code)
    ("room name", "/rooms/-bad/messages", JSON, b'{"user":"a","text":"b"}', 404, "invalid_room"),
    ("room too long", f"/rooms/{'a' * 65}/messages", JSON, b'{"user":"a","text":"b"}', 404,
     "invalid_room"),
    ("malformed json", "/messages", JSON, b'{"user": "a", "text": ', 400, "malformed_json"),
    ("json array", "/messages", JSON, b'["a", "b"]', 400, "malformed_json"),
    ("empty body", "/messages", JSON, b"", 400, "malformed_json"),
    ("invalid utf-8", "/messages", JSON, b'{"user":"a","text":"\xff"}', 400, "malformed_body"),
    ("form invalid utf-8", "/messages", FORM, b"user=a&text=%ff", 400, "malformed_body"),
    ("too large", "/messages", JSON, b'{"user":"a","text":"' + b"x" * 17000 + b'"}', 413,
     "payload_too_large"),
    ("text/plain", "/messages", {"Content-Type": "text/plain"}, b"hi", 415,
     "unsupported_media_type"),
    ("no content type", "/messages", {}, b'{"user":"a","text":"b"}', 415,
     "unsupported_media_type"),
    ("multipart", "/messages", {"Content-Type": "multipart/form-data; boundary=x"}, b"--x--", 415,
     "unsupported_media_type"),
    ("missing user", "/messages", JSON, b'{"text":"b"}', 422, "invalid_message"),
    ("blank user", "/messages", FORM, b"user=+&text=hi", 422, "invalid_message"),
    ("user too long", "/messages", JSON, b'{"user":"' + b"u" * 41 + b'","text":"b"}', 422,
     "invalid_message"),
    ("user with newline", "/messages", JSON, b'{"user":"a\\nb","text":"b"}', 422,
     "invalid_message"),
    ("numeric text", "/messages", JSON, b'{"user":"a","text":5}', 422, "invalid_message"),
    ("empty text", "/messages", FORM, b"user=a&text=", 422, "invalid_message"),
    ("text too long", "/messages", JSON, b'{"user":"a","text":"' + b"t" * 4001 + b'"}', 422,
     "invalid_message"),
    ("control character", "/messages", JSON, b'{"user":"a","text":"bell\\u0007"}', 422,
     "invalid_message"),
    ("lone surrogate", "/messages", JSON, b'{"user":"a","text":"\\ud800"}', 400,
     "malformed_json"),
]  # fmt: skip


async def _history(client: httpx.AsyncClient, room: str = "lobby") -> list[dict[str, Any]]:
    response = await client.get(f"/rooms/{room}/messages", params={"limit": 1000})
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "code"),
    [case[1:] for case in REFUSED_POSTS],
    ids=[case[0] for case in REFUSED_POSTS],
)
async def test_a_refused_post_gets_a_json_error_and_stores_nothing(
    client: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
) -> None:
    before = await _history(client)
    response = await client.post(path, headers=headers, content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["error"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert await _history(client) == before


async def test_a_refused_post_names_the_invalid_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/messages", json={"user": "ana", "text": "x" * 4001})
    assert response.json()["field"] == "text"
    assert "4000" in response.json()["message"]


async def test_text_limit_is_configurable(start_replica: StartReplica) -> None:
    replica = await start_replica(max_text_length=10)
    async with replica.client() as client:
        fits = await client.post("/messages", json={"user": "a", "text": "x" * 10})
        too_long = await client.post("/messages", json={"user": "a", "text": "x" * 11})
    assert (fits.status_code, too_long.status_code) == (201, 422)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("GET", "/no/such/route", {}, 404, "not_found"),
        ("GET", "/rooms/bad.name/events", {}, 404, "invalid_room"),
        ("GET", "/rooms/bad.name/messages", {}, 404, "invalid_room"),
        ("GET", "/events", {"Last-Event-ID": "yesterday"}, 400, "invalid_last_event_id"),
        ("GET", "/events?lastEventId=1-2-3", {}, 400, "invalid_last_event_id"),
        ("GET", "/rooms/lobby/messages?limit=0", {}, 422, "invalid_limit"),
        ("GET", "/rooms/lobby/messages?limit=many", {}, 422, "invalid_limit"),
        ("GET", "/rooms/lobby/messages?limit=1001", {}, 422, "invalid_limit"),
        ("DELETE", "/messages", {}, 405, "method_not_allowed"),
        ("PUT", "/rooms/lobby/events", {}, 405, "method_not_allowed"),
    ],
)
async def test_a_refused_request_gets_a_json_error(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    response = await client.request(method, path, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == code
    assert response.json()["message"]


async def test_method_not_allowed_says_which_methods_are(client: httpx.AsyncClient) -> None:
    response = await client.delete("/messages")
    assert "POST" in response.headers["allow"]


async def test_a_chunked_body_over_the_limit_is_refused(client: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"user":"a","text":"'
        for _ in range(20):
            yield b"x" * 1024
        yield b'"}'

    before = await _history(client)
    response = await client.post("/messages", headers=JSON, content=chunks())
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert await _history(client) == before
