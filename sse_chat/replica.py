"""One replica's state: its settings, local hub and backplane, and whether it is draining."""

from __future__ import annotations

from .access import Access
from .backplane import Backplane, MemoryBackplane
from .backplane.redis import RedisBackplane, parse_redis_url
from .config import ConfigError, Settings
from .hub import Hub
from .keeper import StreamKeeper
from .metrics import Metrics
from .openapi import openapi_document
from .slots import StreamSlots


class Replica:
    """What the HTTP layer needs to serve one replica."""

    def __init__(self, settings: Settings, backplane: Backplane | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.hub = Hub(settings.client_buffer_bytes, self.metrics)
        self.keeper = StreamKeeper(settings.keepalive_seconds, settings.retry_ms)
        self.backplane: Backplane = backplane or self._default_backplane()
        self.draining = False
        self.access = Access.from_settings(settings)
        self.openapi = openapi_document(settings)
        self.stream_slots = StreamSlots(settings.max_streams, settings.max_streams_per_client)
        self.metrics.watch_backplane(self.backplane)

    def _default_backplane(self) -> Backplane:
        settings = self.settings
        if not settings.redis_url:
            return MemoryBackplane(
                self.hub,
                settings.replica_id,
                settings.history_size,
                idempotency_seconds=settings.idempotency_seconds,
            )
        try:
            target = parse_redis_url(settings.redis_url, settings.redis_password)
        except ValueError as bad:
            raise ConfigError(f"SSE_CHAT_REDIS_URL: {bad}") from None
        return RedisBackplane(
            self.hub,
            settings.replica_id,
            settings.history_size,
            target,
            settings.redis_prefix,
            settings.presence_ttl_seconds,
            settings.idempotency_seconds,
            settings.redis_min_replicas,
            settings.redis_wait_ms,
        )

    @property
    def ready(self) -> bool:
        """Ready for traffic: the backplane is connected and the replica is not draining."""
        return self.backplane.connected and not self.draining

    def drain(self) -> None:
        """Stop taking streams and end the open ones; their clients resume elsewhere."""
        self.draining = True
        self.hub.close()
        self.keeper.stop()
