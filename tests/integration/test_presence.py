"""Who is online: per room, across replicas, and without ghosts when a replica dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import trio

from .conftest import StartReplica
from .redis_server import RedisServer, free_port
from .support import EventStream, open_stream, wait_until_ready


async def _next_presence(stream: EventStream) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((await stream.next_named("presence")).data)
    return data


async def _presence_where(stream: EventStream, users: list[str]) -> dict[str, Any]:
    """The first presence event listing exactly `users` (earlier views may still arrive)."""
    while (presence := await _next_presence(stream))["users"] != users:
        pass
    return presence


async def test_a_stream_with_a_user_marks_them_online_until_their_last_stream_closes(
    client: httpx.AsyncClient,
) -> None:
    async with open_stream(client, "/rooms/den/events?user=ana") as ana:
        assert ana.presence == {"room": "den", "users": ["ana"]}
        async with open_stream(client, "/rooms/den/events?user=bo") as bo:
            assert bo.presence["users"] == ["ana", "bo"]
            assert await _next_presence(ana) == {
                "room": "den",
                "users": ["ana", "bo"],
                "joined": "bo",
            }
            async with open_stream(client, "/rooms/den/events?user=ana"):  # a second tab
                listed = (await client.get("/rooms/den/presence")).json()
            after_tab = (await client.get("/rooms/den/presence")).json()  # ana is still here
        assert await _next_presence(ana) == {"room": "den", "users": ["ana"], "left": "bo"}
        elsewhere = (await client.get("/rooms/other/presence")).json()
    assert listed == after_tab == {"room": "den", "users": ["ana", "bo"]}
    assert elsewhere == {"room": "other", "users": []}


async def test_an_invalid_user_name_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/rooms/den/events", params={"user": "x" * 41})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_user"


async def test_users_on_different_replicas_see_each_other_online(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    first, second = [await start_replica(redis_url=redis.url) for _ in "ab"]
    async with first.client() as a, second.client() as b:  # noqa: SIM117 - bo leaves first
        async with open_stream(a, "/rooms/den/events?user=ana") as ana:
            async with open_stream(b, "/rooms/den/events?user=bo") as bo:
                joined = await _presence_where(ana, ["ana", "bo"])
                from_first = (await a.get("/rooms/den/presence")).json()
            left = await _presence_where(ana, ["ana"])
    assert bo.presence["users"] == ["ana", "bo"]
    assert joined == {"room": "den", "users": ["ana", "bo"], "joined": "bo"}
    assert from_first["users"] == ["ana", "bo"]
    assert left == {"room": "den", "users": ["ana"], "left": "bo"}


async def test_the_users_of_a_killed_replica_drop_off_after_the_presence_ttl(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    survivor = await start_replica(redis_url=redis.url, presence_ttl_seconds=1)
    port = free_port()
    env = {
        **os.environ,
        "SSE_CHAT_REDIS_URL": redis.url,
        "SSE_CHAT_PRESENCE_TTL_SECONDS": "1",
        "SSE_CHAT_REPLICA_ID": "doomed",
    }
    doomed = await trio.lowlevel.open_process(
        [sys.executable, "-m", "sse_chat", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with (
            survivor.client() as a,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as b,
        ):
            await wait_until_ready(f"http://127.0.0.1:{port}")
            async with open_stream(a, "/rooms/den/events?user=ana") as ana:  # noqa: SIM117
                async with open_stream(b, "/rooms/den/events?user=ghost"):
                    await _presence_where(ana, ["ana", "ghost"])
                    doomed.send_signal(signal.SIGKILL)  # no goodbye from this replica
                    await doomed.wait()
                    # The survivor prunes the expired entry and announces it.
                    gone = await _presence_where(ana, ["ana"])
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
    assert gone["users"] == ["ana"]
