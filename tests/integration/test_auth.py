"""Who may read and post: JWTs through every token place, public and private rooms."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sse_chat.tokens import issue_token

from .conftest import StartReplica
from .redis_server import RedisServer
from .support import TIMEOUT, open_raw, open_stream

SECRET = b"a shared secret of reasonable length"


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "jwt_key"
    path.write_bytes(SECRET + b"\n")
    return str(path)


def token(
    user: str = "ana", rooms: list[str] | None = None, ttl: float = 600, **claims: Any
) -> str:
    return issue_token(SECRET, user, rooms or [], ttl, **claims)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def _post(
    client: httpx.AsyncClient,
    headers: dict[str, str] | None = None,
    body: dict[str, str] | None = None,
    room: str = "lobby",
) -> httpx.Response:
    body = body if body is not None else {"user": "ana", "text": "hello"}
    return await client.post(f"/rooms/{room}/messages", json=body, headers=headers)


def _refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["message"]
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def _bad_tokens() -> dict[str, str]:
    now = int(time.time())
    return {
        "expired": token(ttl=-120),
        "badly signed": jwt.encode(
            {"sub": "ana", "exp": now + 600}, b"another key, also long enough for HS256", "HS256"
        ),
        "alg none": jwt.encode({"sub": "ana", "exp": now + 600}, None, algorithm="none"),
        "no exp": jwt.encode({"sub": "ana"}, SECRET, "HS256"),
        "garbage": "not.a.token",
    }


async def test_with_auth_post_every_post_needs_a_valid_token_and_posts_as_its_sub(
    start_replica: StartReplica, key_file: str
) -> None:
    replica = await start_replica(auth="post", jwt_key_file=key_file)
    async with replica.client() as client:
        anonymous = await _post(client)
        refused = {name: await _post(client, bearer(bad)) for name, bad in _bad_tokens().items()}
        not_bearer = await _post(client, {"Authorization": "Basic YW5hOnB3"})
        as_sub = await _post(client, bearer(token()), {"text": "no user field"})
        as_other = await _post(client, bearer(token()), {"user": "bo", "text": "pretending"})
        history = (await client.get("/rooms/lobby/messages")).json()["messages"]
        async with open_stream(client) as stream:  # reading stays open with auth=post
            assert stream.response.status_code == 200
    _refused(anonymous, 401, "unauthorized")
    _refused(not_bearer, 401, "unauthorized")
    for response in refused.values():
        _refused(response, 401, "unauthorized")
    assert "expired" in refused["expired"].json()["message"]
    assert as_sub.status_code == 201 and as_sub.json()["user"] == "ana"
    _refused(as_other, 403, "user_mismatch")
    assert [message["text"] for message in history] == ["no user field"]


async def test_with_auth_all_streams_history_and_presence_need_a_token_in_any_place(
    start_replica: StartReplica, key_file: str
) -> None:
    replica = await start_replica(auth="all", jwt_key_file=key_file)
    good = token()
    async with replica.client() as client:
        for path in ("/rooms/lobby/messages", "/rooms/lobby/presence"):
            _refused(await client.get(path), 401, "unauthorized")
            assert (await client.get(path, headers=bearer(good))).status_code == 200
        # A stream without a token is refused with the status: retrying cannot help.
        _refused(await client.get("/events"), 401, "unauthorized")
        _refused(await client.get("/events", headers=bearer(_bad_tokens()["expired"])), 401,
                 "unauthorized")  # fmt: skip
        # ?access_token= is for streams only.
        _refused(await client.get(f"/rooms/lobby/messages?access_token={good}"), 401,
                 "unauthorized")  # fmt: skip
        async with open_stream(client, headers=bearer(good)):
            pass
        async with open_stream(client, f"/events?access_token={good}"):
            pass
        session = await client.post("/session", headers=bearer(good))
        assert session.status_code == 204
        cookie = session.headers["set-cookie"]
        for part in ("sse_chat_token=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="):
            assert part in cookie, cookie
        assert "Secure" not in cookie  # plain HTTP here
        async with open_stream(client):  # the cookie is carried by the client now
            pass
        assert (
            await client.post("/rooms/lobby/messages", json={"text": "by cookie"})
        ).status_code == 201
        closed = await client.delete("/session")
        assert closed.status_code == 204 and "Max-Age=0" in closed.headers["set-cookie"]
        client.cookies.clear()
        _refused(await client.get("/events"), 401, "unauthorized")


async def test_private_rooms_need_a_token_that_grants_them_and_public_ones_ignore_bad_tokens(
    start_replica: StartReplica, key_file: str
) -> None:
    replica = await start_replica(private_rooms="team-*,ops", jwt_key_file=key_file)
    member = token(rooms=["team-*"])
    async with replica.client() as client:
        _refused(await client.get("/rooms/team-a/events"), 401, "unauthorized")
        _refused(await client.get("/rooms/team-a/messages", headers=bearer(token())), 403,
                 "forbidden_room")  # fmt: skip
        _refused(await _post(client, bearer(token()), room="ops"), 403, "forbidden_room")
        _refused(await _post(client, bearer(member), room="ops"), 403, "forbidden_room")
        async with open_stream(client, "/rooms/team-a/events", headers=bearer(member)) as stream:
            posted = await _post(client, bearer(member), room="team-a")
            assert posted.status_code == 201
            (event,) = await stream.messages(1)
            assert json.loads(event.data)["id"] == posted.json()["id"]
        # An expired cookie must not lock a browser out of public rooms.
        client.cookies.set("sse_chat_token", _bad_tokens()["expired"])
        async with open_stream(client, "/rooms/lobby/events"):
            pass
        assert (await _post(client, bearer("garbage"))).status_code == 201


async def test_a_stream_ends_when_its_token_expires(
    start_replica: StartReplica, key_file: str
) -> None:
    replica = await start_replica(auth="all", jwt_key_file=key_file)
    short = token(ttl=2)
    async with replica.client() as client, open_stream(client, headers=bearer(short)) as stream:
        started = trio.current_time()
        rest = await stream.rest()
    assert rest[-1].event == "unavailable"
    assert json.loads(rest[-1].data)["error"] == "token_expired"
    assert 0.9 < trio.current_time() - started < TIMEOUT


async def test_an_rs256_token_is_verified_with_a_public_key_and_keys_can_rotate(
    start_replica: StartReplica, key_file: str, tmp_path: Path
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "public.pem"
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    replica = await start_replica(
        auth="post", jwt_key_file=f"{public},{key_file}", jwt_algorithms="RS256,HS256",
        jwt_audience="chat", jwt_issuer="idp",
    )  # fmt: skip
    claims = {"sub": "ana", "exp": int(time.time()) + 600, "aud": "chat", "iss": "idp"}
    rs256 = jwt.encode(claims, private, algorithm="RS256")
    hs256 = jwt.encode(claims, SECRET, algorithm="HS256")
    wrong_audience = jwt.encode({**claims, "aud": "other"}, private, algorithm="RS256")
    no_issuer = jwt.encode({k: v for k, v in claims.items() if k != "iss"}, SECRET, "HS256")
    async with replica.client() as client:
        assert (await _post(client, bearer(rs256))).status_code == 201
        assert (await _post(client, bearer(hs256))).status_code == 201
        _refused(await _post(client, bearer(wrong_audience)), 401, "unauthorized")
        _refused(await _post(client, bearer(no_issuer)), 401, "unauthorized")


async def test_a_first_stream_request_below_quart_is_authorized_the_same_way(
    start_replica: StartReplica, key_file: str
) -> None:
    """Raw first requests are served by the intake: it must refuse exactly as Quart does."""
    replica = await start_replica(private_rooms="team-*", jwt_key_file=key_file)

    async def first_request(target: str, headers: str = "") -> bytes:
        async with await open_raw(replica) as conn:
            await conn.send_all(f"GET {target} HTTP/1.1\r\nHost: c\r\n{headers}\r\n".encode())
            data = b""
            with trio.fail_after(TIMEOUT):
                while b"\r\n\r\n" not in data:
                    data += await conn.receive_some(65536)
            return data

    assert (await first_request("/rooms/team-a/events")).startswith(b"HTTP/1.1 401")
    no_grant = f"Authorization: Bearer {token()}\r\n"
    assert (await first_request("/rooms/team-a/events", no_grant)).startswith(b"HTTP/1.1 403")
    member = token(rooms=["team-a"])
    granted = await first_request(f"/rooms/team-a/events?access_token={member}")
    assert granted.startswith(b"HTTP/1.1 200")
    cookie = f"Cookie: sse_chat_token={member}\r\n"
    assert (await first_request("/rooms/team-a/events", cookie)).startswith(b"HTTP/1.1 200")


async def test_tokens_work_across_two_replicas_on_redis(
    start_replica: StartReplica, redis: RedisServer, key_file: str
) -> None:
    settings = {"redis_url": redis.url, "private_rooms": "team-*", "jwt_key_file": key_file}
    one, two = await start_replica(**settings), await start_replica(**settings)
    member = bearer(token(rooms=["team-*"]))
    async with one.client() as a, two.client() as b:
        async with open_stream(b, "/rooms/team-x/events", headers=member) as stream:
            posted = await _post(a, member, room="team-x")
            (event,) = await stream.messages(1)
        _refused(await b.get("/rooms/team-x/messages"), 401, "unauthorized")
    assert json.loads(event.data)["id"] == posted.json()["id"]
