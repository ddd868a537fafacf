"""A replica's Redis session: busy is not dead, dead is noticed, rooms are followed exactly while
they have clients, and nothing is delivered twice or out of order through any of it.

These drive `RedisBackplane` directly (no HTTP) against real redis-server processes; some go
through `Proxy`, a TCP proxy the test can cut or make hold back a command.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from sse_chat.backplane import BackplaneUnavailable, OutcomeUnknown, subscribed
from sse_chat.backplane.redis import (
    HEALTH_INTERVAL,
    LIVENESS_TIMEOUT,
    RedisBackplane,
    parse_redis_url,
)
from sse_chat.hub import Hub, Subscriber
from sse_chat.messages import Draft, Message

from .conftest import StartRedis
from .redis_proxy import Proxy
from .redis_server import RedisServer
from .support import TIMEOUT, wait_until

StartBackplane = Callable[..., Awaitable[tuple[RedisBackplane, Hub]]]


@pytest.fixture
async def start_backplane(nursery: trio.Nursery) -> AsyncIterator[StartBackplane]:
    """Runs RedisBackplanes, each with its own hub, until the test ends; each is connected."""
    count = 0

    async def start(url: str, history_size: int = 100) -> tuple[RedisBackplane, Hub]:
        nonlocal count
        count += 1
        hub = Hub(1 << 20)
        backplane = RedisBackplane(hub, f"b{count}", history_size, parse_redis_url(url))
        await nursery.start(backplane.run)
        with trio.fail_after(TIMEOUT):
            await backplane.wait_connected()
        return backplane, hub

    yield start


async def receive(
    subscriber: Subscriber, count: int, notices: list[bytes] | None = None
) -> list[Message]:
    """The subscriber's next `count` messages (fails after TIMEOUT); events queued for it
    (a `gap`) go to `notices`."""
    received: list[Message] = []
    with trio.fail_after(TIMEOUT):
        while len(received) < count:
            received += await subscriber.receive_batch()
            subscriber.take_presence()  # a view waiting would end every wait at once
            notice = subscriber.take_notice()
            if notice is not None and notices is not None:
                notices.append(notice)
    return received


async def post(backplane: RedisBackplane, room: str, *texts: str) -> list[Message]:
    return [await backplane.append(Draft(room, "ann", text)) for text in texts]


async def subscribers_of(redis: RedisServer, room: str) -> int:
    """PUBSUB NUMSUB of a room's channel: how many connections are subscribed to it."""
    result = await trio.run_process(
        ["redis-cli", "-p", str(redis.port), "PUBSUB", "NUMSUB", f"sse-chat:room:{room}"],
        capture_stdout=True,
    )
    return int(result.stdout.split()[1])


async def no_subscribers_left(redis: RedisServer, room: str) -> None:
    """Wait until no connection is subscribed to the room's channel."""
    with trio.fail_after(TIMEOUT):
        while await subscribers_of(redis, room):  # noqa: ASYNC110 - Redis has no event for it
            await trio.sleep(0.05)


async def disconnected(backplane: RedisBackplane, seconds: float = TIMEOUT) -> float:
    """Wait until the backplane has lost its session; how long that took."""
    started = trio.current_time()
    await wait_until(lambda: not backplane.connected, interval=0.01, seconds=seconds)
    return trio.current_time() - started


# -- busy is not dead ------------------------------------------------------------------------


async def test_a_replica_whose_event_loop_stalls_keeps_its_session_and_loses_nothing(
    start_redis: StartRedis, start_backplane: StartBackplane
) -> None:
    redis = await start_redis()
    replica, hub = await start_backplane(redis.url)
    poster, _ = await start_backplane(redis.url)
    posted: list[Message] = []
    refused: list[str] = []
    stop = trio.Event()

    async def post_steadily() -> None:
        for n in range(100_000):
            if stop.is_set():
                return
            try:
                posted.append(await poster.append(Draft("busy", "ann", f"m{n}")))
            except BackplaneUnavailable:
                refused.append(f"m{n}")
            await trio.sleep(0.01)

    async def come_and_go() -> None:
        """Presence changes keep the session's own commands in flight when the loop stalls."""
        users = [f"user{n}" for n in range(20)]
        while True:
            for user in users:
                replica.mark_present("busy", user)
                await trio.sleep(0.001)
            for user in users:
                replica.mark_absent("busy", user)
                await trio.sleep(0.001)

    async with subscribed(replica, hub, "busy") as subscriber:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(post_steadily)
            nursery.start_soon(come_and_go)
            for _ in range(3):
                await trio.sleep(0.7)
                time.sleep(3)  # noqa: ASYNC251 - on purpose: the event loop is blocked
            await trio.sleep(HEALTH_INTERVAL + 1)  # a wrongly lost ping would show by now
            stop.set()
            await wait_until(lambda: stop.is_set() and len(posted) + len(refused) > 0)
            nursery.cancel_scope.cancel()
        received = await receive(subscriber, len(posted))
    assert (replica.reconnects, poster.reconnects) == (0, 0)
    assert replica.connected and poster.connected
    assert refused == []  # a POST that Redis answered is not failed for our own slowness
    assert received == posted and len(posted) > 100
    print(f"\n3 stalls of 3 s: {len(posted)} posts, all delivered once in order, no reconnect")


async def test_a_silent_redis_is_noticed_within_the_liveness_bound_and_caught_up_after(
    start_redis: StartRedis, start_backplane: StartBackplane
) -> None:
    redis = await start_redis()
    assert redis.process is not None
    replica, hub = await start_backplane(redis.url)
    poster, _ = await start_backplane(redis.url)
    async with subscribed(replica, hub, "quiet") as subscriber:
        before = await post(poster, "quiet", "before")
        redis.process.send_signal(signal.SIGSTOP)  # alive, connected, and silent
        try:
            with pytest.raises(BackplaneUnavailable):
                await post(poster, "quiet", "sent while stopped")  # stored once it resumes
            noticed_after = await disconnected(replica, seconds=LIVENESS_TIMEOUT + 5)
        finally:
            redis.process.send_signal(signal.SIGCONT)
        with trio.fail_after(TIMEOUT):
            await replica.wait_connected()
            await poster.wait_connected()
        after = await post(poster, "quiet", "after")
        stored = await replica.recent("quiet", 10)
        received = await receive(subscriber, len(stored))
    # A ping is sent every HEALTH_INTERVAL; the one in flight at the stop goes unanswered.
    assert noticed_after >= LIVENESS_TIMEOUT - HEALTH_INTERVAL - 0.5
    assert noticed_after <= LIVENESS_TIMEOUT + HEALTH_INTERVAL + 0.5
    print(f"\nSIGSTOP noticed after {noticed_after:.2f} s")
    assert replica.reconnects == 1
    assert [m.text for m in stored] == ["before", "sent while stopped", "after"]
    assert received == stored and received[0] == before[0] and received[-1] == after[0]


async def test_a_killed_redis_is_noticed_at_once_and_followed_again_when_it_is_back(
    redis: RedisServer, start_backplane: StartBackplane
) -> None:
    replica, hub = await start_backplane(redis.url)
    async with subscribed(replica, hub, "killed") as subscriber:
        before = await post(replica, "killed", "before")
        await redis.kill()
        noticed_after = await disconnected(replica)
        await redis.start()  # same port, and the AOF brings the history back
        with trio.fail_after(TIMEOUT):
            await replica.wait_connected()
        after = await post(replica, "killed", "after")
        received = await receive(subscriber, 2)
    print(f"\nkilled redis-server noticed after {noticed_after:.3f} s")
    assert noticed_after < 1
    assert replica.reconnects == 1
    assert received == before + after


# -- following rooms -------------------------------------------------------------------------


async def test_a_stream_opened_while_redis_is_unreachable_goes_live_from_where_the_replica_was(
    nursery: trio.Nursery, redis: RedisServer, start_backplane: StartBackplane
) -> None:
    proxy = Proxy(nursery, redis)
    await proxy.start()
    replica, hub = await start_backplane(proxy.url)
    poster, _ = await start_backplane(redis.url)
    async with subscribed(replica, hub, "known") as first:
        seen = await post(poster, "known", "seen")
        assert await receive(first, 1) == seen
        proxy.cut()
        await disconnected(replica)
        # Streams open while it is down: `follow` returns at once, without an error.
        late, fresh = hub.subscriber("known"), hub.subscriber("fresh")
        with trio.fail_after(0.5):
            for subscriber in (late, fresh):
                hub.add(subscriber)
                await replica.follow(subscriber.room)
        position = (replica.last_forwarded("known"), replica.last_forwarded("fresh"))
        missed = await post(poster, "known", "missed 1", "missed 2")
        before_fresh = await post(poster, "fresh", "before the replica was back")
        proxy.restore()
        with trio.fail_after(TIMEOUT):
            await replica.wait_connected()
        live = await post(poster, "known", "live")
        fresh_live = await post(poster, "fresh", "after the replica was back")
        assert await receive(first, 3) == missed + live
        assert await receive(late, 3) == missed + live
        assert await receive(fresh, 1) == fresh_live
        for subscriber in (late, fresh):
            if hub.remove(subscriber):
                replica.unfollow(subscriber.room)
    assert position == (seen[0].id, None)
    assert before_fresh  # posted before the fresh room's baseline: not forwarded


async def test_a_trim_during_an_interruption_is_noticed_as_a_gap(
    nursery: trio.Nursery, redis: RedisServer, start_backplane: StartBackplane
) -> None:
    proxy = Proxy(nursery, redis)
    await proxy.start()
    replica, hub = await start_backplane(proxy.url, history_size=5)
    poster, _ = await start_backplane(redis.url, history_size=5)
    async with subscribed(replica, hub, "trimmed") as subscriber:
        first = await post(poster, "trimmed", "first")
        assert await receive(subscriber, 1) == first
        proxy.cut()
        await disconnected(replica)
        missed = await post(poster, "trimmed", *(f"missed {n}" for n in range(8)))
        assert replica.gaps == 0
        proxy.restore()
        with trio.fail_after(TIMEOUT):
            await replica.wait_connected()
        notices: list[bytes] = []
        received = await receive(subscriber, 5, notices)
    assert replica.gaps == 1
    assert len(notices) == 1 and b"event: gap" in notices[0] and b'"room":"trimmed"' in notices[0]
    assert received == missed[-5:]  # what history kept, in order


async def test_a_subscribe_cut_short_leaves_no_subscription_behind(
    nursery: trio.Nursery, redis: RedisServer, start_backplane: StartBackplane
) -> None:
    proxy = Proxy(nursery, redis)
    await proxy.start()
    replica, hub = await start_backplane(proxy.url)
    subscriber = hub.subscriber("abandoned")
    hub.add(subscriber)
    proxy.hold(b"sse-chat:room:abandoned\r\n")  # the SUBSCRIBE, not the XREVRANGE
    with trio.CancelScope() as opening:  # the client goes away while its stream opens
        async with trio.open_nursery() as following:
            following.start_soon(replica.follow, "abandoned")
            with trio.fail_after(TIMEOUT):
                await proxy.held.wait()
            opening.cancel()
    if hub.remove(subscriber):
        replica.unfollow("abandoned")
    proxy.release()  # the SUBSCRIBE reaches Redis now
    # A later SUBSCRIBE on the same connection is answered after the held one.
    async with subscribed(replica, hub, "probe"):
        pass
    await no_subscribers_left(redis, "abandoned")
    await trio.sleep(0.5)
    assert await subscribers_of(redis, "abandoned") == 0
    assert replica.connected and replica.reconnects == 0


async def test_a_late_subscribe_acknowledgement_still_follows_the_room_and_unfollows_it(
    nursery: trio.Nursery, redis: RedisServer, start_backplane: StartBackplane
) -> None:
    proxy = Proxy(nursery, redis)
    await proxy.start()
    replica, hub = await start_backplane(proxy.url)
    poster, _ = await start_backplane(redis.url)
    proxy.hold(b"sse-chat:room:slow\r\n")

    async def release_later() -> None:
        await proxy.held.wait()
        await trio.sleep(1.5)  # longer than coredis waits for an acknowledgement by default
        proxy.release()

    nursery.start_soon(release_later)
    async with subscribed(replica, hub, "slow") as subscriber:
        during = await subscribers_of(redis, "slow")
        posted = await post(poster, "slow", "through")
        assert await receive(subscriber, 1) == posted
    await no_subscribers_left(redis, "slow")
    assert during == 1 and replica.reconnects == 0


async def test_an_append_whose_connection_breaks_after_it_was_sent_has_an_unknown_outcome(
    nursery: trio.Nursery, redis: RedisServer, start_backplane: StartBackplane
) -> None:
    """Sent, then the connection lost before the answer: Redis may have stored it, so the
    POST must say `outcome_unknown` (retry only with the same key), never `unavailable`."""
    proxy = Proxy(nursery, redis)
    await proxy.start()
    replica, _ = await start_backplane(proxy.url)
    await post(replica, "held", "first")  # the script is loaded: the next append is one EVALSHA
    proxy.hold(b"EVALSHA")
    async with trio.open_nursery() as appending:

        async def append() -> None:
            with pytest.raises(OutcomeUnknown):
                await replica.append(Draft("held", "ann", "in flight"))

        appending.start_soon(append)
        with trio.fail_after(TIMEOUT):
            await proxy.held.wait()
        proxy.cut()
    proxy.release()
