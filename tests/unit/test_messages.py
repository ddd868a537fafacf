from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sse_chat.ids import MessageId
from sse_chat.messages import (
    Draft,
    InvalidMessage,
    Limits,
    Message,
    format_ts,
    is_valid_room,
    parse_draft,
)

LIMITS = Limits()


def refusal(fields: Mapping[str, object], limits: Limits = LIMITS) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as refused:
        parse_draft("lobby", fields, limits)
    return refused.value


def test_valid_fields_become_a_draft_of_the_room() -> None:
    assert parse_draft("lobby", {"user": "ann", "text": "hi"}, LIMITS) == Draft(
        room="lobby", user="ann", text="hi"
    )


def test_user_is_stripped_and_text_is_kept_as_written() -> None:
    draft = parse_draft("lobby", {"user": "  ann\t", "text": "  hi  "}, LIMITS)
    assert (draft.user, draft.text) == ("ann", "  hi  ")


@pytest.mark.parametrize("user", ["a", "a" * 40, " " + "a" * 40 + " "])
def test_user_of_1_to_40_characters_after_strip_is_accepted(user: str) -> None:
    assert parse_draft("lobby", {"user": user, "text": "hi"}, LIMITS).user == user.strip()


@pytest.mark.parametrize("user", ["", "   ", "a" * 41])
def test_user_outside_1_to_40_characters_after_strip_is_refused(user: str) -> None:
    assert refusal({"user": user, "text": "hi"}).field == "user"


@pytest.mark.parametrize("length", [1, 4000])
def test_text_of_1_to_4000_characters_is_accepted(length: int) -> None:
    assert parse_draft("lobby", {"user": "ann", "text": "x" * length}, LIMITS).text == "x" * length


@pytest.mark.parametrize("text", ["", "x" * 4001])
def test_text_outside_1_to_4000_characters_is_refused(text: str) -> None:
    assert refusal({"user": "ann", "text": text}).field == "text"


def test_limits_come_from_the_limits_argument() -> None:
    limits = Limits(max_user=3, max_text=5)
    assert refusal({"user": "anne", "text": "hi"}, limits).field == "user"
    assert refusal({"user": "ann", "text": "hello!"}, limits).field == "text"
    assert parse_draft("lobby", {"user": "ann", "text": "hello"}, limits).text == "hello"


@pytest.mark.parametrize("text", [" ", "\n", "\t \n", "\r\n", "\u3000"])
def test_whitespace_only_text_is_refused(text: str) -> None:
    assert refusal({"user": "ann", "text": text}).field == "text"


@pytest.mark.parametrize(
    "character", ["\x00", "\x07", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9f"]
)
def test_text_with_control_character_is_refused(character: str) -> None:
    refused = refusal({"user": "ann", "text": f"a{character}b"})
    assert refused.field == "text"
    assert f"U+{ord(character):04X}" in refused.reason


@pytest.mark.parametrize("character", ["\n", "\t"])
def test_text_may_contain_newline_and_tab(character: str) -> None:
    text = f"a{character}b"
    assert parse_draft("lobby", {"user": "ann", "text": text}, LIMITS).text == text


@pytest.mark.parametrize("character", ["\x00", "\n", "\t", "\r", "\x1b", "\x7f", "\x9f"])
def test_user_with_control_character_inside_is_refused(character: str) -> None:
    assert refusal({"user": f"a{character}b", "text": "hi"}).field == "user"


@pytest.mark.parametrize(
    ("text", "expected"), [("a\r\nb", "a\nb"), ("a\rb", "a\nb"), ("a\r\n", "a\n")]
)
def test_carriage_returns_in_text_become_newlines(text: str, expected: str) -> None:
    assert parse_draft("lobby", {"user": "ann", "text": text}, LIMITS).text == expected


def test_text_length_is_measured_after_newline_normalisation() -> None:
    text = "a\r\n" * 2000  # 6000 characters as sent, 4000 once normalised
    assert len(parse_draft("lobby", {"user": "ann", "text": text}, LIMITS).text) == 4000


@pytest.mark.parametrize("field", ["user", "text"])
@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff"])
def test_lone_surrogates_are_refused(field: str, surrogate: str) -> None:
    fields = {"user": "ann", "text": "hi", field: f"a{surrogate}b"}
    assert refusal(fields).field == field


def test_non_ascii_text_and_user_are_accepted() -> None:
    draft = parse_draft("lobby", {"user": "Zoë", "text": "héllo 👋 日本"}, LIMITS)
    assert (draft.user, draft.text) == ("Zoë", "héllo 👋 日本")


@pytest.mark.parametrize("field", ["user", "text"])
def test_missing_field_is_required(field: str) -> None:
    fields = {"user": "ann", "text": "hi"}
    del fields[field]
    refused = refusal(fields)
    assert (refused.field, refused.reason) == (field, "is required")


@pytest.mark.parametrize("field", ["user", "text"])
@pytest.mark.parametrize("value", [42, 1.5, True, ["hi"], {"a": "b"}, b"hi"])
def test_non_string_field_is_refused(field: str, value: object) -> None:
    refused = refusal({"user": "ann", "text": "hi", field: value})
    assert (refused.field, refused.reason) == (field, "must be a string")


def test_invalid_message_is_a_value_error_naming_the_field() -> None:
    refused = refusal({"user": "ann"})
    assert isinstance(refused, ValueError)
    assert str(refused) == "text: is required"


@pytest.mark.parametrize("room", ["a", "0", "lobby", "Room_1", "a-b", "a" * 64, "A_-9"])
def test_room_names_that_match_the_pattern_are_valid(room: str) -> None:
    assert is_valid_room(room)


@pytest.mark.parametrize(
    "room", ["", "a" * 65, "-a", "_a", "a b", "a/b", "a.b", "café", "a\n", "\na", "lobby!"]
)
def test_room_names_outside_the_pattern_are_invalid(room: str) -> None:
    assert not is_valid_room(room)


def make_message(text: str = "hi") -> Message:
    return Message(
        id=MessageId(1700000000000, 2),
        room="lobby",
        user="Zoë",
        text=text,
        ts="2023-11-14T22:13:20.000Z",
        replica="r1",
    )


def test_message_json_is_one_line_even_when_the_text_has_newlines() -> None:
    message = make_message("line one\nline two\r\n\u2028end")
    assert "\n" not in message.json
    assert "\r" not in message.json
    assert json.loads(message.json)["text"] == message.text


def test_message_json_carries_every_field_with_a_string_id() -> None:
    assert json.loads(make_message().json) == {
        "id": "1700000000000-2",
        "room": "lobby",
        "user": "Zoë",
        "text": "hi",
        "ts": "2023-11-14T22:13:20.000Z",
        "replica": "r1",
    }


def test_message_round_trips_through_json_text_and_bytes() -> None:
    message = make_message("multi\nline ✓")
    assert Message.from_json(message.json) == message
    assert Message.from_json(message.json.encode()) == message


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '"a string"',
        "null",
        '{"id": "1-0", "room": "lobby", "user": "ann", "text": "hi", "ts": "t"}',
        '{"id": 1, "room": "lobby", "user": "ann", "text": "hi", "ts": "t", "replica": "r"}',
        '{"id": "1-0", "room": null, "user": "ann", "text": "hi", "ts": "t", "replica": "r"}',
        '{"id": "one", "room": "lobby", "user": "ann", "text": "hi", "ts": "t", "replica": "r"}',
    ],
)
def test_from_json_refuses_what_is_not_a_message(text: str) -> None:
    with pytest.raises(ValueError):
        Message.from_json(text)


def test_from_json_names_the_missing_field() -> None:
    with pytest.raises(ValueError, match="replica"):
        Message.from_json('{"id": "1-0", "room": "r", "user": "u", "text": "t", "ts": "t"}')


def test_from_draft_stamps_id_time_and_replica() -> None:
    now = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    message = Message.from_draft(Draft("lobby", "ann", "hi"), MessageId(5, 1), "r2", now)
    assert message == Message(
        MessageId(5, 1), "lobby", "ann", "hi", "2024-02-29T23:59:59.999Z", "r2"
    )


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "2024-01-02T03:04:05.678Z"),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05.000Z"),
        (
            datetime(2024, 1, 2, 1, 0, 0, 5000, tzinfo=timezone(timedelta(hours=2))),
            "2024-01-01T23:00:00.005Z",
        ),
    ],
)
def test_format_ts_is_iso_8601_utc_with_milliseconds_and_z(now: datetime, expected: str) -> None:
    assert format_ts(now) == expected
