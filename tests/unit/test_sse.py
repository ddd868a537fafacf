from __future__ import annotations

import json

import pytest

from sse_chat.ids import MessageId
from sse_chat.messages import Message
from sse_chat.sse import (
    KEEPALIVE_FRAME,
    ServerSentEvent,
    SSEDecoder,
    gap_frame,
    message_frame,
    opening_frame,
    unavailable_frame,
)

MESSAGE = Message(
    id=MessageId(1700000000000, 4),
    room="lobby",
    user="Zoë",
    text="first line\nsecond line\n\n👋 日本語 \u2028 end",
    ts="2023-11-14T22:13:20.000Z",
    replica="r1",
)


def decode(stream: bytes | str, decoder: SSEDecoder | None = None) -> list[ServerSentEvent]:
    """Split a stream into lines the way the event-stream format does (CRLF, LF or CR)."""
    decoder = decoder or SSEDecoder()
    text = stream.decode() if isinstance(stream, bytes) else stream
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert lines.pop() == "", "a stream under test must end with a line ending"
    return [event for line in lines if (event := decoder.feed(line)) is not None]


def test_message_frame_has_id_event_and_one_data_line() -> None:
    assert message_frame(MESSAGE) == (
        f"id: 1700000000000-4\nevent: message\ndata: {MESSAGE.json}\n\n".encode()
    )


def test_message_frame_is_utf8_and_has_no_raw_newline_inside_the_data() -> None:
    frame = message_frame(MESSAGE)
    assert frame.count(b"\n") == 4
    assert "👋 日本語".encode() in frame


def test_message_with_newlines_and_unicode_round_trips_through_a_frame() -> None:
    [event] = decode(message_frame(MESSAGE))
    assert (event.event, event.id) == ("message", "1700000000000-4")
    assert Message.from_json(event.data) == MESSAGE


def test_opening_frame_sets_retry_and_announces_ready_and_live() -> None:
    frame = opening_frame(2500, "r1", "lobby")
    assert frame == (
        b'retry: 2500\nevent: ready\ndata: {"replica":"r1","room":"lobby","live":true}\n\n'
    )
    [event] = decode(frame)
    assert (event.event, event.retry, event.id) == ("ready", 2500, None)
    assert json.loads(event.data) == {"replica": "r1", "room": "lobby", "live": True}


def test_opening_frame_says_not_live_while_the_backplane_is_away() -> None:
    [event] = decode(opening_frame(2500, "r1", "lobby", live=False))
    assert event.event == "ready"
    assert json.loads(event.data) == {"replica": "r1", "room": "lobby", "live": False}


def test_unavailable_frame_sets_retry_then_says_why_without_an_id() -> None:
    decoder = SSEDecoder()
    frame = unavailable_frame("replica_full", "this replica is full; try again", 4000)
    assert frame.startswith(b"retry: 4000\n")
    retry, unavailable = decode(frame, decoder)
    assert retry == ServerSentEvent(event="", retry=4000)
    assert (unavailable.event, unavailable.id) == ("unavailable", None)
    assert json.loads(unavailable.data) == {
        "error": "replica_full",
        "message": "this replica is full; try again",
    }
    assert decoder.last_event_id == ""  # the client resumes from where it was


@pytest.mark.parametrize(("oldest", "oldest_text"), [(MessageId(9, 0), "9-0"), (None, None)])
def test_gap_frame_names_the_requested_and_oldest_retained_ids(
    oldest: MessageId | None, oldest_text: str | None
) -> None:
    frame = gap_frame("dev", MessageId(3, 1), oldest)
    assert not frame.startswith(b"id:")
    [event] = decode(frame)
    assert (event.event, event.id) == ("gap", None)
    data = json.loads(event.data)
    assert (data["room"], data["lastEventId"], data["oldestRetainedId"]) == (
        "dev",
        "3-1",
        oldest_text,
    )
    assert data["message"]


def test_keepalive_frame_is_a_comment() -> None:
    assert KEEPALIVE_FRAME.startswith(b":")
    assert decode(KEEPALIVE_FRAME) == [ServerSentEvent(event="", comment="keepalive")]


def test_comment_does_not_disturb_the_event_being_read() -> None:
    events = decode("event: note\n: between\ndata: x\n\n")
    assert events == [
        ServerSentEvent(event="", comment="between"),
        ServerSentEvent(event="note", data="x"),
    ]


def test_multiple_data_lines_join_with_newlines() -> None:
    assert decode("data: a\ndata:b\ndata\ndata:  c\n\n") == [ServerSentEvent(data="a\nb\n\n c")]


def test_a_single_empty_data_line_dispatches_an_empty_event() -> None:
    assert decode("data\n\n") == [ServerSentEvent(data="")]


def test_event_type_defaults_to_message_and_resets_after_dispatch() -> None:
    events = decode("event: first\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n")
    assert [event.event for event in events] == ["first", "message", "message"]


def test_an_event_without_data_is_not_dispatched_and_its_type_is_forgotten() -> None:
    assert decode("event: lonely\n\ndata: x\n\n") == [ServerSentEvent(data="x")]


def test_unknown_fields_are_ignored() -> None:
    assert decode("foo: bar\ndata: x\nDATA: y\n\n") == [ServerSentEvent(data="x")]


def test_crlf_and_cr_line_endings_decode_like_lf() -> None:
    assert decode("data: a\r\ndata: b\rid: 1-0\r\n\r\n") == [ServerSentEvent(data="a\nb", id="1-0")]


def test_retry_alone_is_reported_without_data() -> None:
    assert decode("retry: 10\n\n") == [ServerSentEvent(event="", retry=10)]


@pytest.mark.parametrize("value", ["", "abc", "1.5", "-1", "12a", " 5", "\u00b2", "\u0661\u0662"])
def test_retry_that_is_not_ascii_digits_is_ignored(value: str) -> None:
    # WHATWG: "If the field value consists of only ASCII digits ... Otherwise, ignore the field."
    assert decode(f"retry: {value}\ndata: x\n\n") == [ServerSentEvent(data="x")]


def test_last_event_id_persists_across_events_until_the_server_changes_it() -> None:
    decoder = SSEDecoder()
    events = decode("id: 1-0\ndata: a\n\ndata: b\n\n", decoder)
    assert [event.id for event in events] == ["1-0", None]
    assert decoder.last_event_id == "1-0"
    decode("id: 2-0\ndata: c\n\n", decoder)
    assert decoder.last_event_id == "2-0"


def test_id_without_data_still_sets_the_last_event_id() -> None:
    decoder = SSEDecoder()
    assert decode("id: 7-0\n\n", decoder) == []
    assert decoder.last_event_id == "7-0"


def test_empty_id_resets_the_last_event_id() -> None:
    decoder = SSEDecoder()
    events = decode("id: 1-0\ndata: a\n\nid\ndata: b\n\n", decoder)
    assert [event.id for event in events] == ["1-0", ""]
    assert decoder.last_event_id == ""


def test_id_containing_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    events = decode("id: 1-0\ndata: a\n\nid: 2\x00-0\ndata: b\n\n", decoder)
    assert [event.id for event in events] == ["1-0", None]
    assert decoder.last_event_id == "1-0"


def test_only_one_space_after_the_colon_is_removed() -> None:
    [event] = decode("id:  x\nevent:  y\ndata:  z\n\n")
    assert (event.id, event.event, event.data) == (" x", " y", " z")
