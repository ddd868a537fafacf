from __future__ import annotations

import pytest

from sse_chat.ids import ZERO_ID, MessageId

MAX_PART = 2**64 - 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-0", MessageId(0, 0)),
        ("1700000000000-3", MessageId(1700000000000, 3)),
        (f"{MAX_PART}-{MAX_PART}", MessageId(MAX_PART, MAX_PART)),
    ],
)
def test_parse_reads_ms_and_seq(text: str, expected: MessageId) -> None:
    assert MessageId.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "1", "1-", "-1", "a-b", "1-2-3", "1--2", "-1-2", "1.5-2", "1-0x2", "1 - 2", "1_0-2"],
)
def test_parse_refuses_text_that_is_not_ms_dash_seq(text: str) -> None:
    with pytest.raises(ValueError, match="not a message id"):
        MessageId.parse(text)


@pytest.mark.parametrize("text", [f"{2**64}-0", f"0-{2**64}", f"{10**19 * 9}-0"])
def test_parse_refuses_parts_beyond_64_bits(text: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        MessageId.parse(text)


def test_parse_refuses_parts_longer_than_twenty_digits() -> None:
    with pytest.raises(ValueError, match="not a message id"):
        MessageId.parse("1" * 21 + "-0")


@pytest.mark.parametrize("text", ["\u0661-\u0662", "\uff11-\uff12", "1-\u00b2"])
def test_parse_refuses_digits_outside_ascii(text: str) -> None:
    # An id is ASCII `<ms>-<seq>`; a non-ASCII digit would not survive a str() round trip.
    with pytest.raises(ValueError):
        MessageId.parse(text)


@pytest.mark.parametrize("text", ["0-0", "5-12", f"{MAX_PART}-{MAX_PART}"])
def test_str_round_trips_through_parse(text: str) -> None:
    assert str(MessageId.parse(text)) == text


def test_ids_order_by_ms_then_seq() -> None:
    ids = [MessageId(2, 0), MessageId(1, 10), MessageId(1, 2), ZERO_ID, MessageId(10, 0)]
    assert sorted(ids) == [
        ZERO_ID,
        MessageId(1, 2),
        MessageId(1, 10),
        MessageId(2, 0),
        MessageId(10, 0),
    ]


def test_ordering_is_numeric_not_textual() -> None:
    assert MessageId.parse("9-0") < MessageId.parse("10-0")
    assert MessageId.parse("1-9") < MessageId.parse("1-10")


def test_successor_at_a_later_time_starts_a_new_millisecond() -> None:
    assert MessageId(100, 7).successor(101) == MessageId(101, 0)


@pytest.mark.parametrize("now_ms", [100, 99, 0])
def test_successor_when_the_clock_stands_still_or_goes_back_increments_seq(now_ms: int) -> None:
    assert MessageId(100, 7).successor(now_ms) == MessageId(100, 8)


def test_successors_strictly_increase_whatever_the_clock_does() -> None:
    current = ZERO_ID
    for now_ms in [5, 5, 3, 9, 1, 9, 10]:
        following = current.successor(now_ms)
        assert following > current
        current = following
    assert current == MessageId(10, 0)
