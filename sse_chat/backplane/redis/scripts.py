"""The Lua scripts the backplane runs in Redis, how messages are stored in them, and which
errors mean "Redis cannot be reached right now"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from string import Template

import anyio
import coredis.exceptions

from ...messages import Message

# KEYS: stream, channel, trimmed-id key[, idempotency key]. ARGV: history size, message body
# (JSON without id)[, fingerprint, idempotency seconds]. Checks the idempotency key, appends,
# publishes, as one step. Records the newest id that trimming drops, so a resume from before it
# can report a gap (Redis 7.0's max-deleted-entry-id does not count trimmed entries).
_APPEND_LUA = Template("""
if #KEYS == 4 then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    local at = string.find(seen, ' ', 1, true)
    if string.sub(seen, 1, at - 1) ~= ARGV[3] then return {'conflict'} end
    return {'replay', string.sub(seen, at + 1)}
  end
end
local size = tonumber(ARGV[1])
local length = redis.call('XLEN', KEYS[1])
if length >= size then
  local dropped = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', length - size + 1)
  redis.call('SET', KEYS[3], dropped[#dropped][1])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', size, '*', 'm', ARGV[2])
redis.call('$publish', KEYS[2], id .. ' ' .. ARGV[2])
if #KEYS == 4 then
  redis.call('SET', KEYS[4], ARGV[3] .. ' ' .. id .. ' ' .. ARGV[2], 'EX', ARGV[4])
end
return {'new', id}
""")


def append_lua(publish: str) -> str:
    """The append script, publishing with `publish` (PUBLISH, or SPUBLISH on a cluster)."""
    return _APPEND_LUA.substitute(publish=publish)


# KEYS: stream, trimmed-id key. ARGV: exclusive start id. One consistent read for a resume.
SINCE_LUA = """
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local oldest = false
if #first > 0 then oldest = first[1][1] end
return {redis.call('GET', KEYS[2]) or false, oldest, entries}
"""

# KEYS: counter. ARGV: ttl seconds. A counter that expires on its own.
COUNT_HIT_LUA = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""

# Errors that mean "Redis cannot be reached or answered badly right now". coredis raises
# anyio's when it writes to a connection that is closing under it.
REDIS_ERRORS = (
    coredis.exceptions.RedisError,
    OSError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
)


def encode_body(room: str, user: str, text: str, ts: str, replica: str) -> str:
    fields = {"room": room, "user": user, "text": text, "ts": ts, "replica": replica}
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def decode(raw_id: str | bytes, body: str | bytes) -> Message:
    return Message.from_dict({"id": text(raw_id), **json.loads(body)})


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def pairs(flat: list[str]) -> Iterator[tuple[str, str]]:
    return zip(flat[::2], flat[1::2], strict=True)


def describe(error: BaseException) -> str:
    """An error's message, or its type's name when it has none."""
    return str(error) or type(error).__name__


def first_error(group: BaseExceptionGroup[BaseException]) -> str:
    for error in _leaves(group):
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return "unknown error"


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error
