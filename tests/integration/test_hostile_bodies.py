"""A JSON-bomb corpus (and a form with 10,000 fields) posted to a real replica.

Each body is built to be refused under any reading of it: the bomb sits where `user` or `text`
must be a string, or makes the body not JSON at all. Every answer is a 4xx with a JSON
`{error, message}` body (never a 500: a parser that recurses until RecursionError would give
one), nothing is stored, and the replica goes on serving.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .support import post

BODY_LIMIT = 16 * 1024  # the default max_body_bytes
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
ANY_4XX = frozenset(range(400, 500))
MALFORMED = frozenset({400})  # not a JSON object: refused before any field is looked at
NOT_A_STRING = frozenset({400, 422})  # malformed for a strict parser, else an invalid field


def _nested(depth: int, opener: bytes, closer: bytes, core: bytes = b"0") -> bytes:
    return opener * depth + core + closer * depth


def _in_text(value: bytes) -> bytes:
    return b'{"user":"a","text":' + value + b"}"


def _beside_valid_fields(value: bytes) -> bytes:
    """A body that would be a valid message if `value`, in a field nobody reads, were JSON."""
    return b'{"user":"a","text":"hi","extra":' + value + b"}"


DIGITS = b"9" * 15_000

# (case id, content type, body, the statuses it may get)
CORPUS: list[tuple[str, str, bytes, frozenset[int]]] = [
    # Deep nesting: a recursive parser would hit Python's recursion limit (a 500).
    ("5,000 nested arrays in text", JSON, _in_text(_nested(5000, b"[", b"]")), MALFORMED),
    ("5,000 nested arrays beside valid fields", JSON,
     _beside_valid_fields(_nested(5000, b"[", b"]")), MALFORMED),
    ("16,000 unclosed brackets", JSON, b"[" * 16_000, MALFORMED),
    ("3,000 nested objects in text", JSON, _in_text(_nested(3000, b'{"":', b"}")), MALFORMED),
    ("4,000 levels of arrays and objects", JSON,
     _in_text(_nested(2000, b'[{"":', b"}]")), MALFORMED),
    ("1,025 nested arrays (just past orjson's limit)", JSON,
     _in_text(_nested(1025, b"[", b"]")), MALFORMED),
    # Parsed by a bounded parser, then too deep for anything that repr()s or walks it.
    ("1,000 nested arrays in text", JSON, _in_text(_nested(1000, b"[", b"]")), NOT_A_STRING),
    ("1,000 nested arrays as user", JSON,
     b'{"text":"hi","user":' + _nested(1000, b"[", b"]") + b"}", NOT_A_STRING),
    # Wide: as many values as fit under the body limit.
    ("8,000 numbers in text", JSON, _in_text(b"[" + b"0," * 7999 + b"0]"), NOT_A_STRING),
    ("5,000 empty arrays in text", JSON, _in_text(b"[" + b"[]," * 4999 + b"[]]"), NOT_A_STRING),
    ("8,000 numbers as the body", JSON, b"[" + b"0," * 7999 + b"0]", MALFORMED),
    ("1,500 keys in text", JSON,
     _in_text(b"{" + b",".join(b'"k%d":0' % i for i in range(1500)) + b"}"), NOT_A_STRING),
    ("1,500 keys and no text", JSON,
     b'{"user":"a",' + b",".join(b'"k%d":0' % i for i in range(1500)) + b"}", ANY_4XX),
    ("5,000 strings of escapes", JSON, _in_text(b'"' + b"\\u0000" * 2500 + b'"'), ANY_4XX),
    # Huge numbers: beyond a double, and more digits than Python converts to an int.
    ("1e400 as text", JSON, _in_text(b"1e400"), NOT_A_STRING),
    ("-1e400 as text", JSON, _in_text(b"-1e400"), NOT_A_STRING),
    ("1e-400 as text", JSON, _in_text(b"1e-400"), NOT_A_STRING),
    ("15,000 digits as text", JSON, _in_text(DIGITS), NOT_A_STRING),
    ("15,000 decimals as text", JSON, _in_text(b"0." + DIGITS), NOT_A_STRING),
    ("1e400 beside valid fields", JSON, _beside_valid_fields(b"1e400"), MALFORMED),
    ("15,000 digits beside valid fields", JSON, _beside_valid_fields(DIGITS), MALFORMED),
    # Duplicate keys: 1,500 of them, and every copy invalid whichever one a parser keeps.
    ("1,500 duplicate texts", JSON, b'{"user":"a",' + b'"text":0,' * 1499 + b'"text":1}',
     NOT_A_STRING),
    ("1,500 duplicate blank users", JSON, b"{" + b'"user":"",' * 1500 + b'"text":"hi"}', ANY_4XX),
    # Not JSON, though some parsers take them.
    ("NaN as text", JSON, _in_text(b"NaN"), MALFORMED),
    ("Infinity as text", JSON, _in_text(b"Infinity"), MALFORMED),
    ("-Infinity as text", JSON, _in_text(b"-Infinity"), MALFORMED),
    ("NaN beside valid fields", JSON, _beside_valid_fields(b"NaN"), MALFORMED),
    ("Infinity beside valid fields", JSON, _beside_valid_fields(b"Infinity"), MALFORMED),
    ("a byte-order mark", JSON, b'\xef\xbb\xbf{"user":"a","text":"hi"}', MALFORMED),
    ("two documents", JSON, b'{"user":"a","text":"hi"}{"user":"b","text":"hi"}', MALFORMED),
    ("trailing NUL", JSON, b'{"user":"a","text":"hi"}\x00', MALFORMED),
    ("a 0-byte body", JSON, b"", MALFORMED),
    ("only whitespace", JSON, b" \r\n\t ", MALFORMED),
    # Invalid UTF-8, and UTF-16 surrogates that encode no character.
    ("invalid UTF-8 bytes", JSON, _in_text(b'"\xff\xfe"'), MALFORMED),
    ("overlong UTF-8", JSON, _in_text(b'"\xc0\xaf"'), MALFORMED),
    ("an encoded surrogate", JSON, _in_text(b'"\xed\xa0\x80"'), MALFORMED),
    ("truncated UTF-8", JSON, _in_text(b'"\xe2\x82"'), MALFORMED),
    ("a lone high surrogate in text", JSON, _in_text(b'"\\ud800"'), MALFORMED),
    ("a lone low surrogate in user", JSON, b'{"user":"\\udc00","text":"hi"}', MALFORMED),
    ("reversed surrogates in text", JSON, _in_text(b'"\\udc00\\ud800"'), MALFORMED),
    ("a lone surrogate in a key", JSON, b'{"\\ud800":1,"user":"a","text":"hi"}', MALFORMED),
    # Forms: 10,000 fields, over and under the body limit.
    ("10,000 form fields", FORM, b"&".join([b"k"] * 10_000), frozenset({413})),
    ("10,000 form fields under the limit", FORM, b"user=a&text=b" + b"&" * 9_999, MALFORMED),
    ("8,000 named form fields", FORM, b"user=a&text=b&" + b"&".join([b"k"] * 8_000), MALFORMED),
]  # fmt: skip

PATHS = {"/messages": "lobby", "/rooms/x/messages": "x"}


def test_the_corpus_is_what_it_says() -> None:
    for case, _, body, allowed in CORPUS:
        if allowed != {413}:
            assert len(body) <= BODY_LIMIT, case  # else it would only test the size check
        else:
            assert len(body) > BODY_LIMIT, case


async def _stored(client: httpx.AsyncClient) -> dict[str, list[dict[str, Any]]]:
    stored = {}
    for room in PATHS.values():
        response = await client.get(f"/rooms/{room}/messages", params={"limit": 1000})
        assert response.status_code == 200, response.text
        stored[room] = response.json()["messages"]
    return stored


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    ("content_type", "body", "allowed"),
    [case[1:] for case in CORPUS],
    ids=[case[0] for case in CORPUS],
)
async def test_a_hostile_body_is_refused_with_a_json_4xx_and_stores_nothing(
    client: httpx.AsyncClient,
    path: str,
    content_type: str,
    body: bytes,
    allowed: frozenset[int],
) -> None:
    response = await client.post(path, content=body, headers={"Content-Type": content_type})
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json", response.text[:300]
    refusal = response.json()
    assert isinstance(refusal["error"], str) and isinstance(refusal["message"], str)
    assert len(refusal["message"]) < 1000  # it names the problem; it does not echo the body
    assert await _stored(client) == {room: [] for room in PATHS.values()}
    await post(client, "still serving", room=PATHS[path])


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_duplicated_field_is_refused_or_read_as_the_browser_reads_it(
    client: httpx.AsyncClient, path: str
) -> None:
    # RFC 8259 leaves duplicate names to the parser; the page's JSON.parse keeps the last one.
    # Whatever the replica does, what it answers is what it stored, and it stores one at most.
    body = b'{"user":"ana","text":"first","text":"second","user":"bo"}'
    response = await client.post(path, content=body, headers={"Content-Type": JSON})
    stored = (await _stored(client))[PATHS[path]]
    if response.status_code == 201:
        assert [(m["user"], m["text"]) for m in stored] == [("bo", "second")]
        assert stored[0] == response.json()
    else:
        assert 400 <= response.status_code < 500 and stored == [], response.text
