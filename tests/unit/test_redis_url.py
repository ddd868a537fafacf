"""Reading SSE_CHAT_REDIS_URL (pure)."""

from __future__ import annotations

import pytest

from sse_chat.backplane.redis import RedisTarget, parse_redis_url


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://:pw@redis:6380", "unix:///run/redis.sock"]
)
def test_plain_urls_go_to_coredis_as_they_are(url: str) -> None:
    assert parse_redis_url(url) == RedisTarget(url=url)


def test_a_password_file_overrides_the_url() -> None:
    assert parse_redis_url("redis://:old@r:6379", "new").password == "new"


def test_a_sentinel_url_names_the_sentinels_and_the_service() -> None:
    target = parse_redis_url("redis+sentinel://app:p%40ss@s1:26379,s2:26380/chat/2")
    assert target == RedisTarget(
        sentinels=(("s1", 26379), ("s2", 26380)),
        service="chat",
        username="app",
        password="p@ss",
        db=2,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://redis:6379",
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1/chat",
        "redis+sentinel://s1:26379/chat/zero",
    ],
)
def test_a_url_that_cannot_be_used_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_redis_url(url)
