"""The Redis backplane: one Redis, Sentinel, or a Redis Cluster with sharded pub/sub.

- `target`: where Redis is (URLs) and the coredis clients for it;
- `keys`: the names of a room's keys and channel (hash-tagged on a cluster);
- `scripts`: the Lua scripts and how messages are stored;
- `backplane`: `RedisBackplane`, the Backplane on top of them (messages, history, presence);
- `session`, `links`, `shards`: the pub/sub sessions that follow rooms (one, or one per shard);
- `presence`: who is online, on every replica.
"""

from .backplane import COMMAND_TIMEOUT, RedisBackplane
from .session import HEALTH_INTERVAL, LIVENESS_TIMEOUT
from .target import RedisTarget, parse_redis_url

__all__ = [
    "COMMAND_TIMEOUT",
    "HEALTH_INTERVAL",
    "LIVENESS_TIMEOUT",
    "RedisBackplane",
    "RedisTarget",
    "parse_redis_url",
]
