"""Posting and receiving over a real server: order, fan-out, resume, keepalive, headers."""

from __future__ import annotations

import json
import re

import httpx
import trio

from .conftest import StartReplica
from .support import RunningReplica, open_stream, post


async def test_posted_messages_arrive_on_the_stream_in_order(client: httpx.AsyncClient) -> None:
    async with open_stream(client) as stream:
        posted = [await post(client, f"message {n}") for n in range(20)]
        received = await stream.messages(20)
    assert [json.loads(event.data) for event in received] == posted
    assert [event.id for event in received] == [message["id"] for message in posted]
    ids = [tuple(map(int, message["id"].split("-"))) for message in posted]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_a_form_post_and_a_json_post_are_stored_alike(client: httpx.AsyncClient) -> None:
    form = await client.post("/messages", data={"user": "ana", "text": "from a form"})
    as_json = await client.post("/rooms/lobby/messages", json={"user": "bo", "text": "json"})
    assert form.status_code == as_json.status_code == 201
    stored = form.json()
    assert set(stored) == {"id", "room", "user", "text", "ts", "replica"}
    assert (stored["room"], stored["user"], stored["text"]) == ("lobby", "ana", "from a form")
    assert stored["replica"] == "r1"
    assert stored["ts"].endswith("Z")


async def test_every_client_of_a_room_receives_every_message_and_no_other_room(
    client: httpx.AsyncClient,
) -> None:
    async with (
        open_stream(client, "/rooms/dev/events") as first,
        open_stream(client, "/rooms/dev/events") as second,
    ):
        await post(client, "elsewhere", room="other")
        posted = [await post(client, f"to dev {n}", room="dev") for n in range(5)]
        for stream in (first, second):
            assert [json.loads(e.data) for e in await stream.messages(5)] == posted


async def test_reconnect_with_last_event_id_replays_exactly_the_missed_messages(
    client: httpx.AsyncClient,
) -> None:
    async with open_stream(client) as stream:
        seen = [await post(client, f"before {n}") for n in range(3)]
        last_seen = (await stream.messages(3))[-1].id
    missed = [await post(client, f"while away {n}") for n in range(5)]

    async with open_stream(client, headers={"Last-Event-ID": last_seen}) as stream:
        replayed = await stream.messages(5)
        live = await post(client, "live again")
        after = await stream.next_named("message")
    assert last_seen == seen[-1]["id"]
    assert [json.loads(event.data) for event in replayed] == missed
    assert json.loads(after.data) == live


async def test_last_event_id_query_parameter_resumes_a_first_connection(
    client: httpx.AsyncClient,
) -> None:
    first = await post(client, "one")
    rest = [await post(client, "two"), await post(client, "three")]
    async with open_stream(client, f"/events?lastEventId={first['id']}") as stream:
        assert [json.loads(event.data) for event in await stream.messages(2)] == rest


async def test_resuming_from_before_the_retained_history_is_announced_then_replayed(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(history_size=3)
    async with replica.client() as client:
        posted = [await post(client, f"n{n}") for n in range(6)]
        async with open_stream(client, headers={"Last-Event-ID": posted[0]["id"]}) as stream:
            gap = await stream.next_event()
            replayed = await stream.messages(3)
    assert gap.event == "gap"
    assert json.loads(gap.data)["lastEventId"] == posted[0]["id"]
    assert json.loads(gap.data)["oldestRetainedId"] == posted[3]["id"]
    assert [json.loads(event.data) for event in replayed] == posted[3:]


async def test_resuming_within_history_announces_no_gap(start_replica: StartReplica) -> None:
    replica = await start_replica(history_size=3)
    async with replica.client() as client:
        posted = [await post(client, f"n{n}") for n in range(4)]
        async with open_stream(client, headers={"Last-Event-ID": posted[1]["id"]}) as stream:
            events = [await stream.next_event() for _ in range(2)]
    assert [event.event for event in events] == ["message", "message"]


async def test_stream_opens_with_retry_and_ready_and_sends_sse_headers(
    replica: RunningReplica, client: httpx.AsyncClient
) -> None:
    async with client.stream("GET", "/rooms/dev/events") as response:
        lines = response.aiter_lines()
        head = [await anext(lines) for _ in range(4)]
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-replica"] == "r1"
    assert head[0] == f"retry: {replica.settings.retry_ms}"
    assert head[1:3] == ["event: ready", 'data: {"replica":"r1","room":"dev","live":true}']


async def test_an_idle_stream_gets_keepalive_comments(start_replica: StartReplica) -> None:
    replica = await start_replica(keepalive_seconds=0.1)
    async with replica.client() as client, open_stream(client) as stream:
        comments = [await stream.next_event() for _ in range(2)]
        message = await post(client, "still alive")
        assert json.loads((await stream.next_named("message")).data) == message
    assert [event.comment for event in comments] == ["keepalive", "keepalive"]


async def test_a_stream_outlives_quarts_response_timeout(start_replica: StartReplica) -> None:
    from sse_chat.app import create_app
    from sse_chat.config import Settings

    app = create_app(Settings(replica_id="r1"))
    app.config["RESPONSE_TIMEOUT"] = 0.2  # what would cut a stream that kept the default
    replica = await start_replica(app=app)
    async with replica.client() as client, open_stream(client) as stream:
        await trio.sleep(0.5)  # the duration is the point: longer than the timeout above
        message = await post(client, "after the timeout")
        assert json.loads((await stream.next_named("message")).data) == message


async def test_history_lists_recent_messages_oldest_first(client: httpx.AsyncClient) -> None:
    posted = [await post(client, f"h{n}", room="hist") for n in range(5)]
    everything = await client.get("/rooms/hist/messages")
    last_two = await client.get("/rooms/hist/messages", params={"limit": 2})
    empty = await client.get("/rooms/never-used/messages")
    assert everything.json() == {"room": "hist", "messages": posted}
    assert last_two.json()["messages"] == posted[-2:]
    assert empty.json() == {"room": "never-used", "messages": []}


async def test_health_and_readiness_answer_ok(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    ready = await client.get("/readyz")
    assert (health.status_code, ready.status_code) == (200, 200)
    assert ready.json() == {"status": "ready", "replica": "r1"}


async def test_every_response_names_its_replica(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/"),
        ("GET", "/static/main.js"),
        ("GET", "/healthz"),
        ("GET", "/no/such/route"),
        ("POST", "/messages"),
        ("DELETE", "/messages"),
    ]:
        response = await client.request(method, path)
        assert response.headers["x-replica"] == "r1", (method, path)


async def test_the_chat_page_and_its_assets_are_served(client: httpx.AsyncClient) -> None:
    """The page, and every script it loads (modules it imports, workers it starts)."""
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/main.js">' in page.text
    scripts: dict[str, str] = {}
    waiting = ["main.js"]
    while waiting:
        name = waiting.pop()
        if name in scripts:
            continue
        script = await client.get(f"/static/{name}")
        assert script.status_code == 200, name
        assert "javascript" in script.headers["content-type"], name
        scripts[name] = script.text
        waiting += re.findall(r"""["'](?:\./|/static/)([\w-]+\.js)["']""", script.text)
    assert len(scripts) > 1
    assert any("EventSource" in text for text in scripts.values())  # the stream is opened


async def test_the_page_forbids_inline_script_and_type_sniffing(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "server" not in page.headers


async def test_the_openapi_document_carries_the_limits_validation_enforces(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica(max_text_length=123, history_size=77)
    async with replica.client() as client:
        document = (await client.get("/openapi.json")).json()
    post = document["paths"]["/rooms/{room}/messages"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    limit = document["paths"]["/rooms/{room}/messages"]["get"]["parameters"][0]["schema"]
    assert document["openapi"].startswith("3.")
    assert body["properties"]["text"]["maxLength"] == 123
    assert body["properties"]["user"]["maxLength"] == 40
    assert limit["maximum"] == 77
    assert {"201", "400", "413", "415", "422", "429", "503"} <= set(post["responses"])


async def test_the_api_reference_page_is_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    script = await client.get("/static/api.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/api.js">' in page.text
    assert "/openapi.json" in script.text
