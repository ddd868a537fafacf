"""Several rooms on one stream: `GET /events?rooms=a,b,c`, resumed exactly with cursors."""

from __future__ import annotations

import json
import random
import string
from contextlib import aclosing
from typing import Any

import httpx
import pytest

from sse_chat.client import read_events
from sse_chat.ids import MessageId

from .conftest import StartReplica
from .redis_server import RedisServer
from .support import EventStream, RunningReplica, open_stream, post


async def _messages(stream: EventStream, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The next `count` messages as (event id, message)."""
    return [(event.id or "", json.loads(event.data)) for event in await stream.messages(count)]


async def _post_each(client: httpx.AsyncClient, rooms: list[str], tag: str) -> list[dict[str, Any]]:
    return [await post(client, f"{tag} in {room}", room=room) for room in rooms]


async def test_one_stream_carries_every_listed_room_with_cursor_ids(
    replica: RunningReplica,
) -> None:
    async with replica.client() as client:
        async with client.stream("GET", "/events?rooms=lobby,dev,team-a&user=ana") as response:
            assert response.status_code == 200
        async with open_stream(client, "/events?rooms=lobby,dev,team-a") as stream:
            posted = await _post_each(client, ["dev", "team-a", "lobby"], "m")
            received = await _messages(stream, 3)
    assert [message for _, message in received] == posted
    ids = [event_id for event_id, _ in received]
    assert len(set(ids)) == 3 and all(event_id and "-" not in event_id[:0] for event_id in ids)
    for event_id in ids:  # opaque but URL-safe, and small: at most ~12 bytes a room
        assert set(event_id) <= set(string.ascii_letters + string.digits + "-_")
        assert len(event_id) <= (1 + 3 * 12) * 4 // 3 + 1


async def test_ready_names_the_rooms_and_presence_comes_for_each(replica: RunningReplica) -> None:
    path = "/events?rooms=lobby,dev&user=ana"
    async with (
        replica.client() as client,
        client.stream("GET", path) as response,
        aclosing(read_events(response)) as stream,
    ):
        events = [await anext(stream) for _ in range(3)]
    ready = json.loads(events[0].data)
    assert events[0].event == "ready"
    assert ready == {
        "replica": replica.settings.replica_id,
        "rooms": ["lobby", "dev"],
        "live": True,
    }
    rooms = [json.loads(event.data)["room"] for event in events[1:] if event.event == "presence"]
    assert sorted(rooms) == ["dev", "lobby"]


async def _resume_exactly(first: RunningReplica, second: RunningReplica) -> None:
    rooms = ["lobby", "dev", "ops"]
    query = "/events?rooms=" + ",".join(rooms)
    async with first.client() as a, second.client() as b:
        async with open_stream(a, query) as stream:
            seen = await _post_each(a, rooms, "before")
            received = await _messages(stream, 3)
            cursor = received[-1][0]
        missed = await _post_each(a, rooms, "missed 1") + await _post_each(a, rooms, "missed 2")
        async with open_stream(b, query, headers={"Last-Event-ID": cursor}) as resumed:
            replayed = await _messages(resumed, 6)
            live = await post(b, "live", room="dev")
            (after,) = await _messages(resumed, 1)
    assert [m for _, m in received] == seen
    for room in rooms:  # each room's missed messages once, in that room's order
        got = [m for _, m in replayed if m["room"] == room]
        assert got == [m for m in missed if m["room"] == room]
    assert after[1] == live


async def test_a_reconnect_with_the_cursor_gets_exactly_what_it_missed_in_each_room(
    replica: RunningReplica,
) -> None:
    await _resume_exactly(replica, replica)


async def test_a_cursor_resumes_on_another_replica_on_redis(
    start_replica: StartReplica, redis: RedisServer
) -> None:
    one = await start_replica(redis_url=redis.url)
    two = await start_replica(redis_url=redis.url)
    await _resume_exactly(one, two)


async def test_a_cursor_is_valid_with_another_room_list(replica: RunningReplica) -> None:
    async with replica.client() as client:
        async with open_stream(client, "/events?rooms=a,b") as stream:
            await _post_each(client, ["a", "b"], "seen")
            cursor = (await _messages(stream, 2))[-1][0]
        missed = await _post_each(client, ["a", "b", "c"], "missed")
        # c is new on this stream: it starts live; b is not listed: ignored.
        path = f"/events?rooms=c,a&lastEventId={cursor}"
        async with open_stream(client, path) as resumed:
            (replayed,) = await _messages(resumed, 1)
            live = await post(client, "live in c", room="c")
            (after,) = await _messages(resumed, 1)
    assert replayed[1] == missed[0]  # a's missed message; c's earlier one is not replayed
    assert after[1] == live


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("rooms=", 422, "invalid_rooms"),
        ("rooms=a,,b", 422, "invalid_rooms"),
        ("rooms=a,b,a", 422, "invalid_rooms"),
        ("rooms=" + ",".join(f"r{n}" for n in range(51)), 422, "invalid_rooms"),
        ("rooms=a,bad.name", 404, "invalid_room"),
        ("rooms=a&lastEventId=not-a-cursor!", 400, "invalid_last_event_id"),
        ("rooms=a&lastEventId=AQ", 400, "invalid_last_event_id"),
    ],
)
async def test_a_bad_room_list_or_cursor_is_refused_clearly(
    replica: RunningReplica, query: str, status: int, code: str
) -> None:
    async with replica.client() as client:
        response = await client.get(f"/events?{query}")
    assert response.status_code == status, response.text
    assert response.json()["error"] == code


async def test_cursor_fuzzing_never_gives_a_server_error(replica: RunningReplica) -> None:
    alphabet = string.ascii_letters + string.digits + "-_=+/%"
    rng = random.Random(11)
    statuses = set()
    async with replica.client() as client:
        for _ in range(300):
            cursor = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
            headers = {"Last-Event-ID": cursor}
            async with client.stream("GET", "/events?rooms=a,b", headers=headers) as response:
                statuses.add(response.status_code)
    assert statuses <= {200, 400}, statuses


async def test_a_single_room_stream_keeps_plain_message_ids(replica: RunningReplica) -> None:
    async with replica.client() as client, open_stream(client, "/rooms/dev/events") as stream:
        message = await post(client, "plain", room="dev")
        (event,) = await stream.messages(1)
    assert event.id == message["id"]
    MessageId.parse(event.id)


async def test_a_private_room_in_the_list_needs_its_grant(
    start_replica: StartReplica, tmp_path: Any
) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    replica = await start_replica(private_rooms="team-*", jwt_key_file=str(key))
    async with replica.client() as client:
        refused = await client.get("/events?rooms=lobby,team-a")
    assert refused.status_code == 401
