"""The names of a room's keys and channel in Redis, and how a message is published.

On one Redis (or Sentinel's primary) the names are `<prefix>:room:<room>:...`, as they always
were, so a rolling update of a running deployment finds every room where it left it. On a
Redis Cluster the room part is a hash tag, `{<prefix>:room:<room>}`, so a room's stream, trim
marker, presence, idempotency records and channel share one slot (the append script stays one
atomic step), and messages travel by sharded pub/sub on that slot's shard only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyScheme:
    """Key and channel names for one deployment; `sharded` on a Redis Cluster."""

    prefix: str
    sharded: bool = False

    @property
    def publish(self) -> str:
        """The command that publishes on a room's channel."""
        return "SPUBLISH" if self.sharded else "PUBLISH"

    def channel(self, room: str) -> str:
        """The room's pub/sub channel (and the stem of its keys)."""
        name = f"{self.prefix}:room:{room}"
        return f"{{{name}}}" if self.sharded else name

    def room_of(self, channel: str) -> str:
        return channel.strip("{}").rpartition(":room:")[2]

    def stream(self, room: str) -> str:
        return f"{self.channel(room)}:messages"

    def trimmed(self, room: str) -> str:
        return f"{self.channel(room)}:trimmed"

    def presence(self, room: str) -> str:
        return f"{self.channel(room)}:presence"

    def idempotency(self, room: str, key: str) -> str:
        return f"{self.channel(room)}:idempotency:{key}"

    def counter(self, name: str) -> str:
        return f"{self.prefix}:count:{name}"

    def control(self, replica: str, shard: int = 0) -> str:
        """A replica's own channel, for pinging itself (on a cluster: one per shard; `shard`
        picks a name whose slot that shard owns)."""
        name = f"{self.prefix}:replica:{replica}"
        return f"{{{name}:{shard}}}" if self.sharded else name
