"""The intake's pure parts: telling a stream request from the rest, reading its head, and the
head of the answer."""

from __future__ import annotations

import h11
import pytest

from sse_chat.config import Settings
from sse_chat.intake import (
    MAX_HEAD,
    NEED_MORE,
    NOT_A_STREAM,
    parse_stream_head,
    response_head,
    stream_head_length,
)
from sse_chat.replica import Replica

HEAD = (
    b"GET /rooms/lobby/events HTTP/1.1\r\nHost: chat.example\r\nAccept: text/event-stream\r\n\r\n"
)


@pytest.mark.parametrize("prefix", [b"", b"G", b"GE", b"GET", b"GET ", b"GET /"])
def test_a_prefix_of_a_get_may_still_become_a_stream_request(prefix: bytes) -> None:
    assert stream_head_length(prefix) == NEED_MORE


@pytest.mark.parametrize("cut", [10, 30, len(HEAD) - 1])
def test_a_stream_request_without_its_blank_line_yet_needs_more(cut: int) -> None:
    assert stream_head_length(HEAD[:cut]) == NEED_MORE


@pytest.mark.parametrize(
    "data",
    [
        b"P",
        b"POST /rooms/lobby/messages HTTP/1.1\r\n\r\n",
        b"POST /events HTTP/1.1\r\n\r\n",
        b"HEAD /events HTTP/1.1\r\n\r\n",
        b"GET /rooms/lobby/messages HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n\r\n",
        b"GET /events/ HTTP/1.1\r\n\r\n",
        b"GET /rooms/lobby/events/ HTTP/1.1\r\n\r\n",
        b"GET /rooms/lobby/x/events HTTP/1.1\r\n\r\n",
        b"GET /events\r\n\r\n",  # HTTP/0.9 style: no version
        b"get /events HTTP/1.1\r\n\r\n",
    ],
)
def test_anything_but_a_get_of_a_stream_route_is_not_a_stream(data: bytes) -> None:
    assert stream_head_length(data) == NOT_A_STREAM


@pytest.mark.parametrize(
    "head",
    [
        HEAD,
        b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /events?user=ann&lastEventId=1-0 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /rooms/lobby/events HTTP/1.1\nHost: a\n\n",  # bare LF
    ],
)
def test_the_length_of_a_stream_head_is_exact_whatever_follows_it(head: bytes) -> None:
    assert stream_head_length(head) == len(head)
    assert stream_head_length(head + b"extra bytes") == len(head)


def test_a_bare_lf_head_ends_at_its_own_blank_line_whatever_follows() -> None:
    head = b"GET /events HTTP/1.1\nHost: a\n\n"
    assert stream_head_length(head + b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n") == len(head)


def test_a_head_without_its_end_within_16_kib_is_not_a_stream() -> None:
    start = b"GET /events HTTP/1.1\r\nHost: a\r\nX-Pad: "
    assert stream_head_length(start + b"a" * (MAX_HEAD - len(start) - 1)) == NEED_MORE
    assert stream_head_length(start + b"a" * (MAX_HEAD - len(start))) == NOT_A_STREAM
    assert stream_head_length(start + b"a" * 20_000) == NOT_A_STREAM


def test_a_request_line_longer_than_16_kib_is_not_a_stream() -> None:
    assert stream_head_length(b"GET /events?x=" + b"a" * MAX_HEAD) == NOT_A_STREAM


def test_a_complete_head_longer_than_16_kib_is_not_a_stream() -> None:
    head = b"GET /events HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
    assert stream_head_length(head) == NOT_A_STREAM


def test_parse_gives_the_route_and_room_of_a_room_stream() -> None:
    parsed = parse_stream_head(HEAD)
    assert parsed is not None
    route, room, query, _ = parsed
    assert (route, room, query) == ("/rooms/<room>/events", "lobby", {})


def test_parse_gives_no_path_room_for_the_events_route() -> None:
    parsed = parse_stream_head(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
    assert parsed is not None
    assert parsed[:2] == ("/events", None)  # `lobby`, or the rooms of `?rooms=`


def test_parse_percent_decodes_the_room() -> None:
    parsed = parse_stream_head(b"GET /rooms/caf%C3%A9%20x/events HTTP/1.1\r\nHost: a\r\n\r\n")
    assert parsed is not None
    assert parsed[1] == "café x"  # the rules (`stream_request`) judge it afterwards


def test_parse_keeps_the_first_value_of_each_query_parameter_blank_ones_included() -> None:
    parsed = parse_stream_head(
        b"GET /events?user=ann&user=bob&lastEventId=&name=Zo%C3%AB+K HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert parsed is not None
    assert parsed[2] == {"user": "ann", "lastEventId": "", "name": "Zoë K"}


def test_parse_gives_lower_case_header_names_and_their_first_values() -> None:
    parsed = parse_stream_head(
        b"GET /events HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 1-0\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\nOrigin: https://x.example\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert parsed is not None
    assert parsed[3] == {
        "host": "a",
        "last-event-id": "1-0",
        "x-forwarded-for": "10.0.0.1",
        "origin": "https://x.example",
        "content-length": "0",
    }


def test_parse_reads_a_bare_lf_head() -> None:
    parsed = parse_stream_head(b"GET /rooms/dev/events HTTP/1.1\nHost: a\n\n")
    assert parsed is not None
    assert parsed[:2] == ("/rooms/<room>/events", "dev")


@pytest.mark.parametrize(
    "head",
    [
        b"GET /events HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET /events HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        b"GET /events HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /events HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /events HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        b"GET /events HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /events HTTP/1.1\r\nHost: a\r\n",  # incomplete
        b"GET /events/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /messages HTTP/1.1\r\nHost: a\r\n\r\n",
        b"garbage\r\n\r\n",
    ],
)
def test_parse_leaves_anything_else_to_hypercorn(head: bytes) -> None:
    assert parse_stream_head(head) is None


@pytest.mark.parametrize(
    "head",
    [
        b"HEAD /events HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /events HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_parse_leaves_other_methods_to_hypercorn(head: bytes) -> None:
    assert parse_stream_head(head) is None


def answer(head: bytes) -> h11.Response:
    """`head` read by an HTTP/1.1 client that asked for a stream."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/events", headers=[("Host", "a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(head)
    response = client.next_event()
    assert isinstance(response, h11.Response)
    assert client.next_event() is h11.NEED_DATA  # the head ends where the chunks begin
    return response


def headers_of(response: h11.Response) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in response.headers}


def test_the_response_head_opens_a_chunked_event_stream_that_closes_its_connection() -> None:
    replica = Replica(Settings(replica_id="r7"))
    head = response_head(replica, None)
    assert head.startswith(b"HTTP/1.1 200 ")
    response = answer(head)
    assert (response.status_code, response.http_version) == (200, b"1.1")
    headers = headers_of(response)
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["connection"] == "close"
    assert headers["x-replica"] == "r7"
    assert headers["vary"] == "Origin"
    assert "date" in headers


def test_the_response_head_carries_the_security_headers() -> None:
    headers = headers_of(answer(response_head(Replica(Settings(replica_id="r1")), None)))
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [("https://chat.example", True), ("https://evil.example", False), (None, False)],
)
def test_the_response_head_allows_only_a_configured_origin(
    origin: str | None, allowed: bool
) -> None:
    replica = Replica(Settings(replica_id="r1", cors_origins="https://chat.example"))
    headers = headers_of(answer(response_head(replica, origin)))
    assert headers.get("access-control-allow-origin") == (origin if allowed else None)
    assert "access-control-allow-credentials" not in headers


def test_the_response_head_allows_credentials_only_when_configured() -> None:
    settings = Settings(
        replica_id="r1", cors_origins="https://chat.example", cors_allow_credentials=True
    )
    headers = headers_of(answer(response_head(Replica(settings), "https://chat.example")))
    assert headers["access-control-allow-origin"] == "https://chat.example"
    assert headers["access-control-allow-credentials"] == "true"
