"""Message ids: `<ms>-<seq>`, ordered like Redis stream ids."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID_PATTERN = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_PART = 2**64 - 1


@dataclass(frozen=True, order=True, slots=True)
class MessageId:
    """A position in a room's history; later messages have greater ids."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> MessageId:
        """Read `<ms>-<seq>`; raise ValueError on anything else."""
        match = _ID_PATTERN.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"not a message id: {text!r} (expected <ms>-<seq>)")
        ms, seq = int(match[1]), int(match[2])
        if ms > _MAX_PART or seq > _MAX_PART:
            raise ValueError(f"message id out of range: {text!r}")
        return cls(ms, seq)

    def successor(self, now_ms: int) -> MessageId:
        """The next id at wall-clock `now_ms`; never goes back even if the clock does."""
        if now_ms > self.ms:
            return MessageId(now_ms, 0)
        return MessageId(self.ms, self.seq + 1)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


ZERO_ID = MessageId(0, 0)
