"""Caps on open streams: per replica and per client address."""

from __future__ import annotations

from collections import Counter


class StreamSlots:
    """Counts open streams; a slot is checked and taken in one step (`take`)."""

    def __init__(self, per_replica: int, per_client: int) -> None:
        self.per_replica = per_replica
        self.per_client = per_client
        self._open: Counter[str] = Counter()
        self._total = 0

    def take(self, client: str) -> str | None:
        """Count one more stream of `client`; or, at a cap, take nothing and say which
        (`replica_full` or `client_full`). Never waits, so requests arriving together cannot
        all pass the check before any of them counts."""
        if self._total >= self.per_replica:
            return "replica_full"
        if self._open[client] >= self.per_client:
            return "client_full"
        self._open[client] += 1
        self._total += 1
        return None

    def give_back(self, client: str) -> None:
        """Release a slot that `take` gave `client`."""
        self._total -= 1
        self._open[client] -= 1
        if not self._open[client]:
            del self._open[client]

    @property
    def total(self) -> int:
        """Slots held now."""
        return self._total
