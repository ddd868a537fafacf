"""Optional posting auth: a shared token, or signed per-user tokens that bind the name."""

from __future__ import annotations

from pathlib import Path

import httpx

from sse_chat.auth import sign_user

from .conftest import StartReplica

MESSAGE = {"user": "ana", "text": "hello"}


async def _post(client: httpx.AsyncClient, token: str | None, body: dict[str, str] = MESSAGE):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await client.post("/messages", json=body, headers=headers)


async def test_with_a_shared_token_only_its_holders_may_post(start_replica: StartReplica) -> None:
    replica = await start_replica(post_token="let-me-in")
    async with replica.client() as client:
        anonymous = await _post(client, None)
        wrong = await _post(client, "guess")
        right = await _post(client, "let-me-in")
        history = (await client.get("/rooms/lobby/messages")).json()["messages"]
    for refused in (anonymous, wrong):
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        assert refused.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 201
    assert [message["text"] for message in history] == ["hello"]


async def test_a_signed_token_posts_only_as_its_own_user(
    start_replica: StartReplica, tmp_path: Path
) -> None:
    key = tmp_path / "signing_key"
    key.write_bytes(b"k3y\n")
    replica = await start_replica(signing_key_file=str(key))
    token = sign_user(b"k3y", "ana")
    async with replica.client() as client:
        as_ana = await _post(client, token)
        as_bo = await _post(client, token, {"user": "bo", "text": "pretending"})
        forged = await _post(client, sign_user(b"other key", "ana"))
    assert as_ana.status_code == 201 and as_ana.json()["user"] == "ana"
    assert as_bo.status_code == 403 and as_bo.json()["error"] == "user_mismatch"
    assert forged.status_code == 401


async def test_streams_and_history_stay_open_to_all(start_replica: StartReplica) -> None:
    replica = await start_replica(post_token="let-me-in")
    async with replica.client() as client:
        history = await client.get("/rooms/lobby/messages")
    assert history.status_code == 200
