"""The authorization policy, below the I/O line: tokens in, grant or refusal out."""

from __future__ import annotations

import time

import jwt
import pytest

from sse_chat.access import Access, Credentials
from sse_chat.errors import ApiError
from sse_chat.tokens import TokenVerifier, VerificationKey, issue_token, room_matches

SECRET = b"k" * 32
VERIFIER = TokenVerifier([VerificationKey(secret=SECRET)], ["HS256"])


def bearer(token: str) -> Credentials:
    return Credentials(authorization=f"Bearer {token}")


@pytest.mark.parametrize(
    ("pattern", "room", "matches"),
    [("team-*", "team-a", True), ("team-*", "team", False), ("ops", "ops", True),
     ("ops", "ops2", False), ("*", "anything", True)],
)  # fmt: skip
def test_room_patterns_match_exact_names_or_prefixes(
    pattern: str, room: str, matches: bool
) -> None:
    assert room_matches(pattern, room) is matches


def test_open_policy_needs_no_token_and_ignores_a_bad_one() -> None:
    access = Access("off", [], VERIFIER)
    assert access.authorize(["lobby"], "post", bearer("garbage")) is None
    assert access.authorize(["lobby"], "read", Credentials()) is None


def test_post_policy_guards_posts_only() -> None:
    access = Access("post", [], VERIFIER)
    assert access.authorize(["lobby"], "read", Credentials()) is None
    with pytest.raises(ApiError) as refused:
        access.authorize(["lobby"], "post", Credentials())
    assert refused.value.status == 401 and refused.value.headers["WWW-Authenticate"] == "Bearer"
    grant = access.authorize(["lobby"], "post", bearer(issue_token(SECRET, "ana", [], 60)))
    assert grant is not None and grant.user == "ana"


def test_a_private_room_needs_a_granting_token_whatever_the_policy() -> None:
    access = Access("off", ["team-*"], VERIFIER)
    with pytest.raises(ApiError) as missing:
        access.authorize(["team-a"], "read", Credentials())
    assert missing.value.status == 401
    with pytest.raises(ApiError) as ungranted:
        access.authorize(["lobby", "team-a"], "read", bearer(issue_token(SECRET, "ana", [], 60)))
    assert (ungranted.value.status, ungranted.value.code) == (403, "forbidden_room")
    member = bearer(issue_token(SECRET, "ana", ["team-*"], 60))
    assert access.authorize(["lobby", "team-a"], "read", member) is not None


def test_none_algorithm_and_expired_tokens_are_refused() -> None:
    access = Access("all", [], VERIFIER)
    none = jwt.encode({"sub": "ana", "exp": int(time.time()) + 60}, None, algorithm="none")
    for token in (none, issue_token(SECRET, "ana", [], -120)):
        with pytest.raises(ApiError) as refused:
            access.authorize(["lobby"], "read", bearer(token))
        assert refused.value.status == 401


def test_the_token_is_taken_from_the_header_then_the_query_then_the_cookie() -> None:
    assert Credentials("Bearer h", "sse_chat_token=c", "q").token() == "h"
    assert Credentials(None, "sse_chat_token=c", "q").token() == "q"
    assert Credentials(None, "other=1; sse_chat_token=c").token() == "c"
    assert Credentials("Basic x").token() == ""  # present, not a Bearer token: refused
    assert Credentials(None, "broken\x00cookie").token() is None
