"""Property-based fuzzing of the endpoints against real replica processes.

Whatever arrives, a replica answers below 500; a refusal is a 4xx with a JSON error body and
stores nothing; an acceptance stores exactly one message. A stream request is answered alike
whether the intake or Quart serves it. A token of any shape, in any place, opens only what it
grants. Schemathesis checks every answer against /openapi.json, with and without a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_chat.sse import SSEDecoder

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


@contextmanager
def _replica_process(**env: str) -> Iterator[httpx.Client]:
    """A replica process (embedded backplane, no rate limit, `env` added) and a client of it."""
    port = free_port()
    env = {
        **os.environ,
        "SSE_CHAT_POST_RATE_LIMIT": "0",
        "SSE_CHAT_KEEPALIVE_SECONDS": "0.2",
        **env,
    }
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


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """An open replica, as by default: no token needed anywhere."""
    with _replica_process() as client:
        yield client


SECRET = b"the fuzzing replica's shared secret, 32 bytes or more"
PRIVATE = "team-*"


@pytest.fixture(scope="module")
def private_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A replica that needs a token for every POST and keeps `team-*` rooms private."""
    key_file = tmp_path_factory.mktemp("fuzz-key") / "jwt.key"
    key_file.write_bytes(SECRET)
    env = {
        "SSE_CHAT_AUTH": "post",
        "SSE_CHAT_PRIVATE_ROOMS": PRIVATE,
        "SSE_CHAT_JWT_KEY_FILE": str(key_file),
    }
    with _replica_process(**env) as client:
        yield client


# 120 cases per property in CI (about a minute in all); FUZZ_EXAMPLES=2000 for a deep run.
SETTINGS = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")),
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


IDEMPOTENCY_KEYS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


@SETTINGS
@given(key=IDEMPOTENCY_KEYS, text=st.text(min_size=1, max_size=20), other=st.booleans())
def test_any_idempotency_key_stores_a_message_at_most_once(
    client: httpx.Client, key: str, text: str, other: bool
) -> None:
    """Twice the same key: once stored (or refused clearly), never a 5xx, never twice; with
    another text the second is a 422 that stores nothing."""
    # A key of its own per case; a header value cannot end in a space (HTTP strips it), and
    # httpx refuses to send one that does.
    key = f"{uuid.uuid4().hex}{key}".rstrip() if key else key
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    before = _stored(client)
    first = client.post("/rooms/fuzz/messages", json={"user": "f", "text": text}, headers=headers)
    second_text = text + "!" if other else text
    second = client.post(
        "/rooms/fuzz/messages", json={"user": "f", "text": second_text}, headers=headers
    )
    for response in (first, second):
        _assert_refusal_shape(response)
    if first.status_code == 201:
        if other:
            assert second.status_code == 422, second.text
            assert second.json()["error"] == "idempotency_key_reused"
        else:
            assert second.status_code == 201 and second.json() == first.json()
        assert _stored(client) == before + 1
    else:
        assert first.json()["error"] in ("invalid_idempotency_key", "invalid_message")
        assert _stored(client) == before


STREAM_STATUSES = {200, 400, 404, 422}  # a 4xx only where retrying cannot help


def _assert_stream_answer(stream: httpx.Response, statuses: set[int]) -> None:
    """A stream request's answer: a JSON refusal, or a `text/event-stream` that opens with
    `ready` or sends the client away (a `retry:` and `unavailable`) and ends."""
    assert stream.status_code in statuses, stream.status_code
    if stream.status_code != 200:
        stream.read()
        _assert_refusal_shape(stream)
        return
    assert stream.headers["content-type"] == "text/event-stream"
    decoder = SSEDecoder()
    for line in stream.iter_lines():
        event = decoder.feed(line)
        if event is not None and event.event is not None:
            assert event.event in ("ready", "unavailable"), event
            return
    raise AssertionError("the stream ended before its first event")


def _open_stream_both_ways(
    client: httpx.Client,
    path: str,
    statuses: set[int],
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Open a stream as a connection's first request (the intake serves it) and as a later
    one (Quart serves it): both must answer alike. The first answer, closed."""
    answers = []
    for later in (False, True):
        with httpx.Client(base_url=client.base_url, timeout=10) as connection:
            if later:
                connection.get("/healthz")
            with connection.stream("GET", path, params=params, headers=headers) as stream:
                _assert_stream_answer(stream, statuses)
            answers.append(stream)
    assert answers[0].status_code == answers[1].status_code, (path, answers)
    return answers[0]


@SETTINGS
@given(
    room=ROOMS,
    limit=st.text(max_size=8) | st.integers().map(str),
    last_event_id=st.text(max_size=30),
    # what h11 sends: printable ASCII, no surrounding spaces
    header_id=st.none()
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)).map(str.strip),
    rooms=st.none() | st.lists(ROOMS, max_size=3).map(",".join),
)
def test_any_history_or_stream_request_is_answered_below_500(
    client: httpx.Client,
    room: str,
    limit: str,
    last_event_id: str,
    header_id: str | None,
    rooms: str | None,
) -> None:
    path = f"/rooms/{quote(room, safe='')}"
    _assert_refusal_shape(client.get(f"{path}/messages", params={"limit": limit}))
    _assert_refusal_shape(client.get(f"{path}/presence"))
    headers = {"Last-Event-ID": header_id} if header_id is not None else {}
    params = {"lastEventId": last_event_id}
    _open_stream_both_ways(client, f"{path}/events", STREAM_STATUSES, params, headers)
    if rooms is not None:  # several rooms on one connection
        _open_stream_both_ways(client, "/events", STREAM_STATUSES, {"rooms": rooms})


NOW = st.builds(lambda: int(time.time()))
TIMES = (
    NOW.map(lambda now: now + 3600)  # an hour ahead
    | NOW.map(lambda now: now - 3600)  # an hour ago
    | st.integers()
    | st.just(10**400)  # beyond a double
    | st.floats(allow_nan=False)  # infinity too (PyJWT's JSON reads `Infinity`)
    | st.text(max_size=8)
    | JSON_VALUES
)
ROOM_PATTERNS = st.lists(st.sampled_from(["team-*", "team-a", "lobby"]), max_size=3)
USERS = st.sampled_from(["ana", "bo"])
# Each claim: (what a real token carries, None to leave it out; anything a client may send)
CLAIMS: dict[str, tuple[st.SearchStrategy[Any] | None, st.SearchStrategy[Any]]] = {
    "sub": (USERS, USERS | JSON_VALUES),
    "exp": (NOW.map(lambda now: now + 3600), TIMES),
    "nbf": (None, TIMES),
    "iat": (NOW, TIMES),
    "rooms": (
        ROOM_PATTERNS,
        ROOM_PATTERNS.map(",".join) | st.lists(st.text(max_size=8)) | JSON_VALUES,
    ),
    "aud": (None, st.text(max_size=5) | JSON_VALUES),
    "iss": (None, st.text(max_size=5) | JSON_VALUES),
}


def _sign(claims: dict[str, Any], key: bytes, algorithm: str) -> str:
    """A JWT as anyone may make one: PyJWT's encoder refuses some claims a client can send."""

    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = json.dumps({"alg": algorithm, "typ": "JWT"}).encode()
    signed = part(header) + b"." + part(json.dumps(claims).encode())  # NaN, 1e400 and all
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}.get(algorithm)
    signature = hmac.digest(key, signed, digest) if digest else b""
    return (signed + b"." + part(signature)).decode()


@st.composite
def jwts(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A token and the claims it carries: mostly a real token's, each sometimes missing or
    anything at all; signed with the replica's key, another key, HS512 or `alg: none`."""
    claims: dict[str, Any] = {}
    for name, (usual, anything) in CLAIMS.items():
        kind = draw(st.sampled_from(["usual", "usual", "usual", "anything", "absent"]))
        if kind == "anything":
            claims[name] = draw(anything)
        elif kind == "usual" and usual is not None:
            claims[name] = draw(usual)
    signer = draw(st.sampled_from(["secret", "secret", "secret", "other", "none", "HS512"]))
    key = b"another key of at least 32 bytes, not ours" if signer == "other" else SECRET
    algorithm = signer if signer in ("none", "HS512") else "HS256"
    return _sign(claims, key, algorithm), claims


VISIBLE_ASCII = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


NOT_JWTS = st.text(VISIBLE_ASCII, min_size=1, max_size=80).map(
    lambda text: (text, dict[str, Any]())
)
TOKENS: st.SearchStrategy[tuple[str, dict[str, Any]]] = jwts() | NOT_JWTS
PLACES = st.sampled_from(["none", "bearer", "cookie", "query", "basic", "bearer and cookie"])
PRIVATE_ROOMS = ("team-a", "team-b")
WATCHED = ("lobby", "fuzz", *PRIVATE_ROOMS)


def _auditor_token() -> str:
    """A valid token that may read every watched room."""
    claims = {"sub": "auditor", "exp": int(time.time()) + 3600, "rooms": [PRIVATE]}
    return _sign(claims, SECRET, "HS256")


def _stored_in_watched_rooms(client: httpx.Client) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {_auditor_token()}"}
    stored: list[dict[str, Any]] = []
    for room in WATCHED:
        response = client.get(f"/rooms/{room}/messages", params={"limit": 1000}, headers=headers)
        assert response.status_code == 200, response.text
        stored += response.json()["messages"]
    return stored


def _grants(rooms_claim: object, room: str) -> bool:
    """Whether a `rooms` claim opens `room`: a list (or a comma-separated string) of names and
    `prefix-*` patterns."""
    if isinstance(rooms_claim, str):
        rooms_claim = rooms_claim.split(",")
    if not isinstance(rooms_claim, list):
        return False
    patterns = [p.strip() for p in rooms_claim if isinstance(p, str)]
    return any(p == room or (p.endswith("*") and room.startswith(p[:-1])) for p in patterns)


def _with_token(token: str, place: str) -> tuple[dict[str, str], dict[str, str]]:
    """The headers and query parameters that carry `token` in `place`."""
    headers, params = {}, {}
    if "bearer" in place:
        headers["Authorization"] = f"Bearer {token}"
    if "cookie" in place:
        headers["Cookie"] = f"sse_chat_token={token}"
    if place == "basic":
        headers["Authorization"] = f"Basic {token}"
    if place == "query":
        params["access_token"] = token
    return headers, params


@SETTINGS
@given(
    token_and_claims=TOKENS,
    place=PLACES,
    action=st.sampled_from(["post", "history", "presence", "stream", "session"]),
    room=st.sampled_from(WATCHED),
    user=st.none() | USERS,
)
def test_any_token_anywhere_is_answered_below_500_and_grants_only_what_it_says(
    private_client: httpx.Client,
    token_and_claims: tuple[str, dict[str, Any]],
    place: str,
    action: str,
    room: str,
    user: str | None,
) -> None:
    client = private_client
    token, claims = token_and_claims
    headers, params = _with_token(token, place)
    client.cookies.clear()  # only the cookie this example sends
    private = room in PRIVATE_ROOMS and action != "session"
    path = f"/rooms/{room}"
    before = _stored_in_watched_rooms(client) if action == "post" else []
    if action == "stream":
        statuses = STREAM_STATUSES | {401, 403}
        response = _open_stream_both_ways(client, f"{path}/events", statuses, params, headers)
    else:
        fields = {"text": "fuzzed"} | ({"user": user} if user else {})
        method, url, body = {
            "post": ("POST", f"{path}/messages", fields),
            "history": ("GET", f"{path}/messages", None),
            "presence": ("GET", f"{path}/presence", None),
            "session": ("POST", "/session", None),
        }[action]
        response = client.request(method, url, params=params, headers=headers, json=body)
        _assert_refusal_shape(response)
    status = response.status_code
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    needs_token = action in ("post", "session") or private
    carried = place in ("bearer", "cookie", "bearer and cookie") or (
        place == "query" and action == "stream"
    )
    if needs_token and not carried:
        assert status == 401, status
    if not needs_token:  # a token is looked at only where one is needed
        assert status not in (401, 403)
    if needs_token and status < 300:  # the token was valid: it grants what it says, no more
        assert isinstance(claims.get("sub"), str) and claims["sub"]
        assert not private or _grants(claims.get("rooms"), room), claims
    if action == "post":
        after = _stored_in_watched_rooms(client)
        if status == 201:
            new = [message for message in after if message not in before]
            assert [(m["user"], m["room"]) for m in new] == [(claims["sub"], room)]
        else:
            assert after == before
    if action == "session" and status == 204:
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie


def _schemathesis(base_url: str, report_dir: Path, *headers: str) -> dict[str, Any]:
    """Run schemathesis against a replica's OpenAPI document; its JSON and HAR reports."""
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")), "run", f"{base_url}/openapi.json",
            "--exclude-path-regex", "events",  # streams never end; the tests above fuzz them
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "--max-examples", "40",
            "--request-timeout", "20",
            *(option for header in headers for option in ("--header", header)),
            "--report", "json,har",
            "--report-json-path", str(report_dir / "run.json"),
            "--report-har-path", str(report_dir / "requests.har"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    report: dict[str, Any] = json.loads((report_dir / "run.json").read_text())
    report["har"] = json.loads((report_dir / "requests.har").read_text())
    return report


def _requests_per_operation(har: dict[str, Any], document: dict[str, Any]) -> Counter[str]:
    """How many requests schemathesis sent to each documented operation (`undocumented`:
    methods the document does not list, which it tries too)."""
    templates = [
        (re.compile(re.sub(r"\{[^}]+\}", "[^/]*", path.replace(".", r"\."))), path)
        for path in document["paths"]
    ]
    counts: Counter[str] = Counter()
    for entry in har["log"]["entries"]:
        method, url = entry["request"]["method"], httpx.URL(entry["request"]["url"])
        path = next((t for pattern, t in templates if pattern.fullmatch(url.path)), url.path)
        documented = method.lower() in document["paths"].get(path, {})
        counts[f"{method} {path}" if documented else "undocumented"] += 1
    return counts


@pytest.mark.parametrize("replica", ["open", "private"])
def test_schemathesis_finds_no_5xx_and_no_answer_off_the_openapi_document(
    replica: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # The private replica is fuzzed with a valid token, so the paths behind it are reached.
    client: httpx.Client = request.getfixturevalue(
        "client" if replica == "open" else "private_client"
    )
    token = f"Authorization: Bearer {_auditor_token()}"
    report = _schemathesis(
        str(client.base_url), tmp_path, *([token] if replica == "private" else [])
    )
    counts = report["test_cases"]
    per_operation = _requests_per_operation(report["har"], client.get("/openapi.json").json())
    listed = ", ".join(f"{name} {count}" for name, count in sorted(per_operation.items()))
    print(f"\nschemathesis ({replica}): {counts['generated']} requests, "
          f"{counts['with_failures']} failing: {listed}")  # fmt: skip
    assert counts["generated"] >= 100
    assert all(
        per_operation[f"POST {path}"] >= 40 for path in ("/messages", "/rooms/{room}/messages")
    ), per_operation


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
