"""Prometheus metrics of one replica, in a registry of its own (several apps share a process
in tests, and each must count only itself)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .gcpauses import GC_PAUSES

if TYPE_CHECKING:
    from .backplane import Backplane

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every metric `/metrics` exposes."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.streams_open = Gauge(
            "sse_chat_streams_open", "Open event streams on this replica", registry=registry
        )
        self.messages_posted = Counter(
            "sse_chat_messages_posted", "Messages stored through this replica", registry=registry
        )
        self.messages_delivered = Counter(
            "sse_chat_messages_delivered",
            "Messages written to streams (one per stream)",
            registry=registry,
        )
        self.slow_clients_cut = Counter(
            "sse_chat_slow_clients_cut",
            "Streams ended because their client fell behind",
            registry=registry,
        )
        self.fanout_seconds = Histogram(
            "sse_chat_fanout_seconds",
            "From a message reaching the replica's fan-out to its hand-off to the connections"
            " (per message for streams written directly, per batch for queued ones)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        self.streams_refused = Counter(
            "sse_chat_streams_refused",
            "Stream requests answered with `event: unavailable` and a retry (cap, draining)",
            ["reason"],
            registry=registry,
        )
        self.http_requests = Counter(
            "sse_chat_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.backplane_connected = Gauge(
            "sse_chat_backplane_connected", "1 while the backplane is connected", registry=registry
        )
        self.backplane_reconnects = Gauge(
            "sse_chat_backplane_reconnects",
            "Times the backplane connection was lost after being up",
            registry=registry,
        )

        GC_PAUSES.install()
        Gauge(
            "sse_chat_gc_pause_seconds_max",
            "Longest pause of the cyclic garbage collector since the process started",
            registry=registry,
        ).set_function(lambda: GC_PAUSES.longest)
        Gauge(
            "sse_chat_gc_collections",
            "Collections of the cyclic garbage collector since the process started",
            registry=registry,
        ).set_function(lambda: GC_PAUSES.count)

    def watch_backplane(self, backplane: Backplane) -> None:
        """Read the backplane's state at each scrape."""
        self.backplane_connected.set_function(lambda: float(backplane.connected))
        self.backplane_reconnects.set_function(lambda: float(backplane.reconnects))
        self.registry.register(_UnreachableShards(backplane))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class _UnreachableShards(Collector):
    """`sse_chat_backplane_shard_unreachable{shard}`: 1 for each Redis Cluster shard (primary
    address) this replica cannot reach right now; absent when all are reachable."""

    def __init__(self, backplane: Backplane) -> None:
        self._backplane = backplane

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for shard in self._backplane.unreachable():
            family.add_metric([shard], 1.0)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "sse_chat_backplane_shard_unreachable",
            "1 for each Redis Cluster shard this replica cannot reach",
            labels=["shard"],
        )
