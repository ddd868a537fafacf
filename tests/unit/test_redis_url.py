"""Reading SSE_CHAT_REDIS_URL, and the key names it leads to (pure)."""

from __future__ import annotations

import pytest
from coredis._utils import hash_slot

from sse_chat.backplane.redis import RedisTarget, parse_redis_url
from sse_chat.backplane.redis.keys import KeyScheme


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


def test_a_cluster_url_names_its_startup_nodes() -> None:
    target = parse_redis_url("redis+cluster://app:pw@n1:7000,[::1]:7001", "secret")
    assert target == RedisTarget(
        cluster=(("n1", 7000), ("::1", 7001)), username="app", password="secret"
    )
    assert target.is_cluster and not target.tls


def test_a_rediss_cluster_url_connects_with_tls() -> None:
    target = parse_redis_url("rediss+cluster://n1:7000")
    assert target.tls and target.cluster == (("n1", 7000),)


@pytest.mark.parametrize(
    "url", ["redis+cluster://n1", "redis+cluster://n1:7000/0", "redis+cluster://:7000"]
)
def test_a_cluster_url_that_cannot_be_used_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_redis_url(url)


def test_one_redis_keeps_its_key_names_and_a_cluster_tags_each_room() -> None:
    plain, tagged = KeyScheme("sse-chat"), KeyScheme("sse-chat", sharded=True)
    assert (plain.stream("lobby"), plain.channel("lobby")) == (
        "sse-chat:room:lobby:messages",
        "sse-chat:room:lobby",
    )
    names = [tagged.stream("lobby"), tagged.trimmed("lobby"), tagged.presence("lobby")]
    names += [tagged.idempotency("lobby", "k1"), tagged.channel("lobby")]
    assert {hash_slot(name.encode()) for name in names} == {hash_slot(b"sse-chat:room:lobby")}
    assert tagged.room_of(tagged.channel("a-b_c")) == plain.room_of(plain.channel("a-b_c"))
    assert (plain.publish, tagged.publish) == ("PUBLISH", "SPUBLISH")
