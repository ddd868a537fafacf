"""The reconnect storm of a rolling update: thousands of streams move at once, and none is lost.

Three replicas share one Redis behind HAProxy with 1,500 streams each, all held by one Node
process that behaves as 4,500 browsers' EventSource (`storm_client.mjs`). A poster posts at a
steady rate all along. Each replica in turn is SIGTERMed (its streams all reconnect within a
second, to the two others) and restarted, then one is SIGKILLed and restarted. In the end every
stream is connected again, no stream request was answered anything but 200, every message whose
POST got 201 reached every stream once and in order, and no replica's Redis session dropped.

All streams follow one room: every message then goes to every stream, and every replica has
them all (the worst fan-out and the largest replays), and "every accepted message reached every
stream" needs no bookkeeping of who follows what.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from sse_chat.client import read_events

from ..integration.support import TIMEOUT
from .conftest import Cluster, open_cluster
from .processes import Balancing, ReplicaProcess, replica_env
from .storm import (
    PacedPoster,
    StormClient,
    backplane_losses,
    cpu_seconds,
    haproxy_health,
    open_file_limit,
    replica_metrics,
)

STREAMS_PER_REPLICA = 1500
ROOM = "storm"
POSTS_PER_SECOND = 10  # 45,000 deliveries a second on 2 shared cores
STEP = 10  # messages accepted after each change: traffic flows through every state
# Seconds for the whole scenario: it passes in about 70; a broken cluster fails each wait below
# in turn (open 60, connected 45, delivered 60) and still gets its summary printed.
DEADLINE = 300
FILE_LIMIT = 20_000


@pytest.fixture
def file_limit() -> Iterator[int]:
    with open_file_limit(FILE_LIMIT) as limit:
        yield limit


@pytest.fixture
async def storm_cluster(
    nursery: trio.Nursery, tmp_path: Path, file_limit: int
) -> AsyncIterator[Cluster]:
    """The cluster, sized for the storm."""
    settings = {
        # Every stream comes from 127.0.0.1 through HAProxy, and a replica may hold them all.
        "SSE_CHAT_MAX_STREAMS_PER_CLIENT": str(10 * STREAMS_PER_REPLICA),
        # A stream resumes from history: keep all of this test's messages there (no `gap`).
        "SSE_CHAT_HISTORY_SIZE": "10000",
    }
    balancing = Balancing(
        # Each stream is a client connection (and a server one); room for the POSTs too.
        maxconn=min(9000, (file_limit - 1000) // 2),
        # As lenient as swarm's health check (3 s, 3 retries): a replica busy with a storm is
        # slow, not gone. With the strict default, HAProxy takes every replica out at times and
        # answers stream requests 503 itself, which says nothing about the replicas' answers.
        check_timeout_ms=2000,
        fall=3,
    )
    async with open_cluster(nursery, tmp_path, settings, balancing) as cluster:
        yield cluster


def _status_line(status: dict[str, Any]) -> str:
    return (
        f"ready {status['ready']}/{status['streams']} {status['replicas']},"
        f" states {status['states']}, connects {status['connects']},"
        f" answers {status['statuses']}"
    )


@dataclass
class Observed:
    """What the storm test saw: the client's answers, and what the replicas said of themselves."""

    began: float = field(default_factory=trio.current_time)
    steps: list[str] = field(default_factory=list)  # what each change did, in turn
    exit_codes: dict[str, int] = field(default_factory=dict)  # "r1 TERM": 0, "r2 KILL": -9
    reconnects: dict[str, list[float]] = field(default_factory=dict)  # read before each stop
    losses: dict[str, Counter[str]] = field(default_factory=dict)  # from the replicas' logs
    cpu: dict[str, float] = field(default_factory=dict)  # seconds, a replica's runs added up
    opened: dict[str, Any] = field(default_factory=dict)
    connected: dict[str, Any] = field(default_factory=dict)
    counted: dict[str, float] = field(default_factory=dict)  # the replicas' open streams
    delivered: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    health: dict[str, object] = field(default_factory=dict)
    unanswered: list[str] = field(default_factory=list)  # /metrics reads that failed

    def step(self, what: str) -> None:
        self.steps.append(f"{trio.current_time() - self.began:5.1f}s {what}")

    async def note_replica(self, replica: ReplicaProcess, when: str) -> None:
        """Before a replica goes (and at the end): its backplane's reconnects, log, CPU time."""
        name = replica.replica_id
        self.losses.setdefault(name, Counter()).update(backplane_losses(replica))
        self.cpu[name] = self.cpu.get(name, 0) + cpu_seconds(replica)
        self.reconnects.setdefault(name, [])
        try:
            metrics = await replica_metrics(replica)
        except httpx.HTTPError as error:  # a replica too busy to answer is a finding too
            self.unanswered.append(f"{name} {when}: {type(error).__name__} {error}")
            return
        self.reconnects[name].append(metrics["sse_chat_backplane_reconnects"])

    def summary(self, streams: int, poster: PacedPoster) -> str:
        final = self.report or self.connected or self.opened
        delivered = self.delivered
        posted = len(poster.accepted) + len(poster.refused)
        refusals = dict(Counter(poster.refused.values()))
        return "\n  ".join(
            [
                f"\nstorm: {streams} streams; posted {posted}, accepted {len(poster.accepted)},"
                f" refused {refusals}",
                *self.steps,
                f"stream answers {final.get('statuses')},"
                f" connection errors {final.get('connectionErrors')},"
                f" endings {final.get('endings')}, events {final.get('events')},"
                f" refusal retries {final.get('refusalRetries')},"
                f" ready not live {final.get('readyNotLive')}",
                f"delivered to every stream: {delivered.get('ok')}"
                f" ({delivered.get('streamsLacking')} lacking some; when the poster stopped,"
                f" {delivered.get('lackingAtStart')} did, for {delivered.get('waitedS')} s),"
                f" faults {self.report.get('counts')}, unknown {self.report.get('unknownCount')},"
                f" replicas' open streams {self.counted}",
                f"haproxy took out of service {self.health}",
                f"backplane reconnects {self.reconnects}, replicas' logs {self.losses},"
                f" unanswered /metrics {self.unanswered}",
                f"CPU seconds { ({k: round(v, 1) for k, v in self.cpu.items()}) },"
                f" client {final.get('cpuSeconds')} ({final.get('rssMiB')} MiB);"
                f" {trio.current_time() - self.began:.1f}s in all",
            ]
        )


async def test_every_stream_survives_a_rolling_update_and_a_crash_under_4500_streams(
    nursery: trio.Nursery, storm_cluster: Cluster
) -> None:
    cluster = storm_cluster
    streams = STREAMS_PER_REPLICA * len(cluster.replicas)
    client = StormClient(nursery, cluster.url, ROOM, streams)
    poster = PacedPoster(cluster.url, ROOM, POSTS_PER_SECOND)
    seen = Observed()

    async def held_by() -> dict[str, int]:
        replicas: dict[str, int] = (await client.ask("status"))["replicas"]
        return replicas

    async def stop_and_restart(replica: ReplicaProcess, how: str) -> None:
        """TERM (a rolling update's stop) or KILL (a crash) the replica, start it again, and
        post STEP more messages through the cluster it rejoined."""
        await seen.note_replica(replica, f"before {how}")
        held = (await held_by()).get(replica.replica_id, 0)
        poster.phase = f"{replica.replica_id} {how}"
        sent = trio.current_time()
        stop = replica.terminate if how == "TERM" else replica.kill
        seen.exit_codes[f"{replica.replica_id} {how}"] = await stop()
        took = trio.current_time() - sent
        seen.losses[replica.replica_id].update(backplane_losses(replica))
        poster.phase = f"{replica.replica_id} restart"
        await cluster.restart(replica)
        poster.phase = "steady"
        await poster.accepted_count_reaches(len(poster.accepted) + STEP)
        status = await client.ask("status")
        seen.step(
            f"{replica.replica_id} {how} with {held} streams (exited in {took:.2f}s),"
            f" back: {_status_line(status)}"
        )

    async def replicas_count_every_stream() -> None:
        """Until the replicas' own gauges add up to every stream (or TIMEOUT passes)."""
        with trio.move_on_after(TIMEOUT):
            while True:
                for replica in cluster.replicas:
                    try:
                        metrics = await replica_metrics(replica)
                    except httpx.HTTPError:
                        continue  # too busy to answer now: asked again below
                    seen.counted[replica.replica_id] = metrics["sse_chat_streams_open"]
                if sum(seen.counted.values()) == streams:
                    return
                await trio.sleep(0.2)  # nothing signals a gauge's change: poll it

    try:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as scenario:
                await client.start()
                seen.opened = await client.ask("open", timeout_s=60)
                seen.step("opened")
                assert seen.opened["ok"], f"not every stream opened: {_status_line(seen.opened)}"
                scenario.start_soon(poster.run)
                await poster.accepted_count_reaches(STEP)
                # Every stream has a Last-Event-ID before anything stops.
                first = await client.ask("await_ids", ids=poster.accepted_ids, timeout_s=30)
                assert first["ok"], f"the first messages did not reach every stream: {first}"

                for replica in cluster.replicas:  # the rolling update, one replica at a time
                    await stop_and_restart(replica, "TERM")
                # The crash hits the replica serving the most streams.
                holding = await held_by()
                victim = max(cluster.replicas, key=lambda r: holding.get(r.replica_id, 0))
                await stop_and_restart(victim, "KILL")

                seen.connected = await client.ask("await_ready", timeout_s=45)
                seen.step(f"streams connected: {_status_line(seen.connected)}")
                await replicas_count_every_stream()
                seen.step("replicas counted their streams")
                poster.stop.set()
                await poster.stopped.wait()
                seen.step("poster stopped")
                ids = poster.accepted_ids
                seen.delivered = await client.ask("await_ids", ids=ids, timeout_s=60)
                refused = list(poster.refused)
                seen.report = await client.ask("report", ids=ids, refused_texts=refused)
                seen.step("delivery checked")
                for replica in cluster.replicas:
                    await seen.note_replica(replica, "at the end")
                seen.health = await haproxy_health(cluster.haproxy)
                seen.cpu.update(
                    haproxy=cpu_seconds(cluster.haproxy), redis=cpu_seconds(cluster.redis)
                )
                scenario.cancel_scope.cancel()
    except BaseException:
        print(cluster.logs())  # shown by pytest with the failure
        print(client.log_tail())
        raise
    finally:
        with trio.CancelScope(shield=True):
            await client.kill_if_running()
        print(seen.summary(streams, poster))

    report, delivered = seen.report, seen.delivered
    expected_exits = {f"{r.replica_id} TERM": 0 for r in cluster.replicas}
    assert seen.exit_codes == {**expected_exits, f"{victim.replica_id} KILL": -9}
    # Every stream request was answered 200 with an event stream (a killed replica's
    # connections break: those are endings, and connection errors, not answers).
    assert set(report["statuses"]) == {"200"}, f"stream answers: {report['statuses']}"
    assert not report["endings"].get("stalled"), f"streams went silent: {report['endings']}"
    assert seen.connected["ok"], f"not all streams connected: {_status_line(seen.connected)}"
    assert sum(seen.counted.values()) == streams, f"replicas' open streams: {seen.counted}"
    assert not poster.unexpected_refusals(), poster.unexpected_refusals()
    assert len(poster.accepted) >= STEP * (len(cluster.replicas) + 2)
    assert delivered["ok"], (
        f"{delivered['streamsLacking']} streams lack accepted messages, e.g."
        f" {json.dumps(delivered['examples'])}"
    )
    assert not any(report["counts"].values()), (
        f"delivery faults {report['counts']}: {json.dumps(report['faults'])}"
    )
    assert not report["unknownCount"], f"messages never posted: {report['unknown']}"
    assert all(count == 0 for counts in seen.reconnects.values() for count in counts), (
        f"backplane reconnects (each replica, before each stop and at the end): {seen.reconnects}"
    )
    assert not any(seen.losses.values()), f"replicas' logs: {seen.losses}"
    assert not seen.unanswered, f"replicas that did not answer /metrics: {seen.unanswered}"


async def test_a_full_replica_answers_the_streams_beyond_its_cap_with_unavailable(
    nursery: trio.Nursery,
) -> None:
    """10 streams at once to a replica capped at 5: 5 open, 5 are told to come back later."""
    env = replica_env("") | {"SSE_CHAT_MAX_STREAMS": "5"}  # the embedded backplane
    replica = ReplicaProcess(nursery, "capped", env)
    answers: list[dict[str, Any]] = []
    settled: list[dict[str, Any]] = []  # answers that opened (ready) or ended
    all_in = trio.Event()

    def settle(answer: dict[str, Any]) -> None:
        settled.append(answer)
        if len(settled) == len(answers) == 10:
            all_in.set()

    async def stream(client: httpx.AsyncClient) -> None:
        answer: dict[str, Any] = {"events": [], "retry": None, "ended": False}
        answers.append(answer)
        try:
            await follow(client, answer)
        except httpx.TransportError as error:
            answer["error"] = repr(error)
            settle(answer)

    async def follow(client: httpx.AsyncClient, answer: dict[str, Any]) -> None:
        async with client.stream("GET", f"/rooms/{ROOM}/events") as response:
            answer["status"] = response.status_code
            answer["type"] = response.headers.get("Content-Type", "")
            if response.status_code != 200:
                await response.aread()
                answer["body"] = response.text
                answer["ended"] = True
                settle(answer)
                return
            async with aclosing(read_events(response)) as events:
                async for event in events:
                    if event.retry is not None:
                        answer["retry"] = event.retry
                    if event.event:
                        answer["events"].append(event.event)
                    if event.event == "ready":
                        settle(answer)
                        await all_in.wait()  # hold the slot until every answer is in
                        return
            answer["ended"] = True
            settle(answer)

    try:
        await replica.start()
        timeout = httpx.Timeout(TIMEOUT)
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=replica.url, timeout=timeout, limits=limits) as c:
            # A refused stream that never ends is named below, not as a timeout.
            with trio.move_on_after(TIMEOUT):
                async with trio.open_nursery() as requests:
                    for _ in range(10):
                        requests.start_soon(stream, c)
    finally:
        with trio.CancelScope(shield=True):
            await replica.kill_if_running()

    summary = "\n".join(
        f"{a.get('status')} {a.get('type')} events {a['events']} retry {a['retry']}"
        f" ended {a['ended']} {a.get('body') or ''} {a.get('error') or ''}"
        for a in answers
    )
    print(f"\ncapped replica, 10 streams at once:\n{summary}")
    summary += f"\n{replica.log_tail()}"
    assert all(a.get("status") == 200 for a in answers), summary
    assert all(a["type"].startswith("text/event-stream") for a in answers), summary
    opened = [a for a in answers if "ready" in a["events"]]
    refused = [a for a in answers if "ready" not in a["events"]]
    assert len(opened) == 5, summary
    assert all(a["events"][:1] == ["unavailable"] and a["ended"] for a in refused), summary
    assert all(a["retry"] is not None and a["retry"] >= 1000 for a in refused), summary
