"""Caps on open streams: per replica and per client address."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class StreamSlots:
    """Counts open streams; says whether one more may open."""

    def __init__(self, per_replica: int, per_client: int) -> None:
        self.per_replica = per_replica
        self.per_client = per_client
        self._open: Counter[str] = Counter()
        self._total = 0

    def replica_full(self) -> bool:
        """True when this replica holds as many streams as it may."""
        return self._total >= self.per_replica

    def client_full(self, client: str) -> bool:
        """True when this client holds as many streams here as it may."""
        return self._open[client] >= self.per_client

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """Count one stream of `client` for the duration of the block."""
        self._open[client] += 1
        self._total += 1
        try:
            yield
        finally:
            self._total -= 1
            self._open[client] -= 1
            if not self._open[client]:
                del self._open[client]
