"""Tokens signed with the right key whose times are out of range or not numbers at all.

Whoever holds the key (an identity provider with a bug, a test) can sign any claims. A token
whose `exp`, `nbf` or `iat` cannot be read as a time is refused with a 401 like any other
unusable token, in every place a token may be carried, and the replica goes on serving.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import StartReplica
from .support import RunningReplica

SECRET = b"a shared secret of at least thirty-two bytes, for HS256"


def _sign(claims: dict[str, Any]) -> str:
    """An HS256 JWT of `claims` as written (PyJWT's encoder refuses some of them)."""

    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signed = part(b'{"alg":"HS256","typ":"JWT"}') + b"." + part(json.dumps(claims).encode())
    return (signed + b"." + part(hmac.digest(SECRET, signed, hashlib.sha256))).decode()


@pytest.fixture
async def replica(start_replica: StartReplica, tmp_path: Path) -> RunningReplica:
    """A replica that needs a token for every POST and keeps `team-*` rooms private."""
    key_file = tmp_path / "jwt.key"
    key_file.write_bytes(SECRET)
    return await start_replica(auth="post", private_rooms="team-*", jwt_key_file=str(key_file))


# (id, value): values a signer can write that no clock can compare with
UNREADABLE_TIMES: list[tuple[str, Any]] = [
    ("10**400", 10**400),  # beyond a double
    ("Infinity", float("inf")),  # not JSON, but Python's and PyJWT's reader take it
    ("-Infinity", float("-inf")),
    ("NaN", float("nan")),
    ("a date string", "2030-01-01"),
    ("a list", []),
    ("an object", {}),
    ("null", None),
]
IN_AN_HOUR = int(time.time()) + 3600


async def _each_place(client: httpx.AsyncClient, token: str) -> list[httpx.Response]:
    """A request that needs the token, with it in each place it may be."""
    bearer = {"Authorization": f"Bearer {token}"}
    answers = [
        await client.post("/rooms/team-a/messages", json={"text": "hi"}, headers=bearer),
        await client.post("/session", headers=bearer),
        await client.get("/rooms/team-a/messages", headers={"Cookie": f"sse_chat_token={token}"}),
    ]
    async with client.stream(
        "GET", "/rooms/team-a/events", params={"access_token": token}
    ) as stream:
        if stream.status_code != 200:  # a 200 is a live stream: its head is enough
            await stream.aread()
        answers.append(stream)
    return answers


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        pytest.param(
            claim,
            value,
            id=f"{claim}={name}",
        )
        for claim in ("exp", "nbf", "iat")
        for name, value in UNREADABLE_TIMES
    ],
)
async def test_a_token_whose_time_cannot_be_read_is_refused_with_401_everywhere(
    replica: RunningReplica, claim: str, value: object
) -> None:
    claims = {"sub": "ana", "exp": IN_AN_HOUR, "rooms": ["team-*"], claim: value}
    async with replica.client() as client:
        for answer in await _each_place(client, _sign(claims)):
            assert answer.status_code == 401, (answer.request.url, answer.status_code)
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert answer.json()["error"] == "unauthorized"
        good = _sign({"sub": "ana", "exp": IN_AN_HOUR, "rooms": ["team-*"]})
        posted = await client.post(
            "/rooms/team-a/messages",
            json={"text": "still serving"},
            headers={"Authorization": f"Bearer {good}"},
        )
        assert posted.status_code == 201, posted.text


@pytest.mark.parametrize(
    "exp",
    [
        pytest.param(2**63, id="2**63"),
        pytest.param(1e308, id="1e308"),
        pytest.param(10**300, id="10**300"),
    ],
)
async def test_a_token_valid_for_ages_is_answered_below_500_everywhere(
    replica: RunningReplica, exp: object
) -> None:
    claims = {"sub": "ana", "exp": exp, "rooms": ["team-*"]}
    async with replica.client() as client:
        for answer in await _each_place(client, _sign(claims)):
            assert answer.status_code in (200, 201, 204, 401), (answer.request.url, answer.text)


async def test_a_stream_opened_with_an_unreadable_exp_is_refused_and_the_replica_lives(
    replica: RunningReplica,
) -> None:
    # The first request on a connection: the stream intake reads it, below Quart.
    token = _sign({"sub": "ana", "exp": 10**400, "rooms": ["team-*"]})
    async with replica.client() as client:
        async with client.stream(
            "GET", "/rooms/team-a/events", params={"access_token": token}
        ) as stream:
            assert stream.status_code == 401
        assert (await client.get("/healthz")).status_code == 200
