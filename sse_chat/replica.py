"""One replica's state: its settings, local hub and backplane, and whether it is draining."""

from __future__ import annotations

from .backplane import Backplane, MemoryBackplane
from .config import Settings
from .hub import Hub


class Replica:
    """What the HTTP layer needs to serve one replica."""

    def __init__(self, settings: Settings, backplane: Backplane | None = None) -> None:
        self.settings = settings
        self.hub = Hub(settings.client_buffer)
        self.backplane: Backplane = backplane or MemoryBackplane(
            self.hub, settings.replica_id, settings.history_size
        )
        self.draining = False

    @property
    def ready(self) -> bool:
        """Ready for traffic: the backplane is connected and the replica is not draining."""
        return self.backplane.connected and not self.draining

    def drain(self) -> None:
        """Stop taking streams and end the open ones; their clients resume elsewhere."""
        self.draining = True
        self.hub.close()
