"""Exactly-once posting: a POST retried with its Idempotency-Key is stored once."""

from __future__ import annotations

import httpx
import pytest
import trio

from .conftest import StartReplica
from .redis_server import RedisServer
from .support import RunningReplica


async def _post(
    client: httpx.AsyncClient, key: str | None, text: str = "once", user: str = "ana"
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await client.post(
        "/rooms/dev/messages", json={"user": user, "text": text}, headers=headers
    )


async def _stored(client: httpx.AsyncClient) -> list[str]:
    history = (await client.get("/rooms/dev/messages?limit=100")).json()["messages"]
    return [message["text"] for message in history]


async def _exactly_once(first: RunningReplica, second: RunningReplica) -> None:
    async with first.client() as a, second.client() as b:
        original = await _post(a, "key-1")
        again = await _post(b, "key-1")
        conflict = await _post(b, "key-1", text="something else")
        other_user = await _post(a, "key-1", user="bo")
        another = await _post(a, "key-2", text="twice")
        stored = await _stored(b)
    assert original.status_code == again.status_code == another.status_code == 201
    assert again.json() == original.json()  # the same stored message, the same id
    for refused in (conflict, other_user):
        assert refused.status_code == 422
        assert refused.json()["error"] == "idempotency_key_reused"
    assert stored == ["once", "twice"]


async def test_a_repeated_post_is_stored_once_and_a_reused_key_is_refused(
    replica: RunningReplica,
) -> None:
    await _exactly_once(replica, replica)


async def test_a_repeated_post_is_stored_once_whichever_replica_gets_it(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    await _exactly_once(
        await start_replica(redis_url=redis.url), await start_replica(redis_url=redis.url)
    )


async def test_ten_racing_posts_with_one_key_on_two_replicas_store_one_message(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    replicas = [await start_replica(redis_url=redis.url) for _ in range(2)]
    answers: list[httpx.Response] = []
    async with replicas[0].client() as a, replicas[1].client() as b:

        async def one(client: httpx.AsyncClient) -> None:
            answers.append(await _post(client, "racing-key"))

        async with trio.open_nursery() as nursery:
            for n in range(10):
                nursery.start_soon(one, (a, b)[n % 2])
        stored = await _stored(a)
    assert [answer.status_code for answer in answers] == [201] * 10
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert stored == ["once"]


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there"])
async def test_a_malformed_key_is_refused_and_nothing_is_stored(
    replica: RunningReplica, key: str
) -> None:
    async with replica.client() as client:
        refused = await client.post(
            "/rooms/dev/messages",
            json={"user": "ana", "text": "x"},
            headers={"Idempotency-Key": key},
        )
        stored = await _stored(client)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_idempotency_key"
    assert stored == []


async def test_the_same_key_in_another_room_is_another_message(replica: RunningReplica) -> None:
    async with replica.client() as client:
        here = await _post(client, "k")
        there = await client.post(
            "/rooms/ops/messages",
            json={"user": "ana", "text": "once"},
            headers={"Idempotency-Key": "k"},
        )
    assert here.status_code == there.status_code == 201
    assert here.json()["id"] != there.json()["id"] or here.json()["room"] != there.json()["room"]
