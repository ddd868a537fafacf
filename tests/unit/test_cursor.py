"""Cursors of multi-room streams: compact, URL-safe, keyed by room, strict to decode."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_chat.cursor import Cursor, decode
from sse_chat.ids import MessageId
from sse_chat.messages import Message

ROOMS = ("lobby", "dev", "team-a")


def message(room: str, ms: int, seq: int = 0) -> Message:
    return Message(MessageId(ms, seq), room, "ana", "hi", "2026-12-01T00:00:00.000Z", "r1")


def cursor_after(*messages: Message) -> str:
    cursor = Cursor({})
    for each in messages:
        cursor.frame(each)
    return cursor.text().decode()


def test_a_cursor_resumes_each_room_where_the_client_was() -> None:
    text = cursor_after(message("lobby", 1796000000000, 3), message("dev", 1796000000100))
    assert decode(text, ROOMS) == {
        "lobby": MessageId(1796000000000, 3),
        "dev": MessageId(1796000000100, 0),
    }


def test_rooms_not_listed_are_ignored_and_new_ones_start_live() -> None:
    text = cursor_after(message("lobby", 5), message("dev", 6))
    assert decode(text, ("dev", "ops")) == {"dev": MessageId(6, 0)}


def test_a_cursor_is_url_safe_and_about_eleven_bytes_a_room() -> None:
    rooms = [f"room-{n}" for n in range(50)]
    text = cursor_after(*(message(room, 1796000000000 + n, 2) for n, room in enumerate(rooms)))
    assert set(text) <= set(string.ascii_letters + string.digits + "-_")
    assert len(text) * 3 / 4 <= 1 + 12 * 50


def test_a_frame_carries_the_cursor_after_its_message_as_its_id() -> None:
    cursor = Cursor({})
    frame = cursor.frame(message("dev", 42, 1)).decode()
    event_id = frame.splitlines()[0].removeprefix("id: ")
    assert decode(event_id, ROOMS) == {"dev": MessageId(42, 1)}
    assert "event: message" in frame and '"room":"dev"' in frame


@pytest.mark.parametrize("text", ["", "AQ", "AA", "!!!", "AQID", "1796000000000-0", "AQ" + "A" * 7])
def test_what_is_not_a_cursor_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        decode(text, ROOMS)


@given(st.text(max_size=80))
def test_decoding_any_text_either_works_or_raises_value_error(text: str) -> None:
    try:
        positions = decode(text, ROOMS)
    except ValueError:
        return
    assert set(positions) <= set(ROOMS)
