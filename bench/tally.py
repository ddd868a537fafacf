"""What the subscribers received, counted per connection (pure: no I/O).

Only the parts of SSE the benchmark needs: a chat frame is `id: <ms>-<seq>`, `event: message`,
`data: <json>` whose `text` is `b <sequence> <send time in ns>` (see `message_text`). Chunked
transfer-encoding lines are left in the bytes: servers write whole frames, and the pattern skips
everything between frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FRAME = re.compile(rb'id: (\d+)-(\d+)\r?\nevent: message\r?\ndata: [^\n]*?"text": ?"b (\d+) (\d+)"')
READY = b"event: ready"


def message_text(sequence: int, sent_ns: int) -> str:
    """The text of benchmark message `sequence`, sent at `sent_ns` (the load generator's clock)."""
    return f"b {sequence} {sent_ns}"


@dataclass(slots=True)
class Totals:
    """Counts over every subscriber."""

    latencies_ns: list[int] = field(default_factory=list)
    deliveries: int = 0
    duplicates: int = 0
    order_violations: int = 0
    first_ns: int = 0
    last_ns: int = 0


@dataclass(slots=True)
class Subscriber:
    """One stream's progress: unparsed tail, last id, which sequences it has seen."""

    messages: int
    tail: bytes = b""
    ready: bool = False
    last_id: tuple[int, int] = (0, 0)
    seen: bytearray = field(init=False)

    def __post_init__(self) -> None:
        self.seen = bytearray(self.messages)

    def feed(self, data: bytes, now_ns: int, totals: Totals) -> None:
        """Count the complete frames in `tail + data`; keep the incomplete rest."""
        buffer = self.tail + data if self.tail else data
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self.tail = buffer
            return
        self.tail = buffer[cut + 2 :]
        frames = buffer[:cut]
        if not self.ready and READY in frames:
            self.ready = True
        seen = self.seen
        for ms, seq, sequence, sent in FRAME.findall(frames):
            index = int(sequence)
            totals.latencies_ns.append(now_ns - int(sent))
            totals.deliveries += 1
            if not totals.first_ns:
                totals.first_ns = now_ns
            totals.last_ns = now_ns
            if index >= len(seen):
                continue
            if seen[index]:
                totals.duplicates += 1
                continue
            seen[index] = 1
            message_id = (int(ms), int(seq))
            if message_id <= self.last_id:
                totals.order_violations += 1
            self.last_id = message_id

    def received(self) -> int:
        """How many distinct benchmark messages this stream got."""
        return sum(self.seen)


def percentile(sorted_values: list[int], fraction: float) -> int:
    """The nearest-rank percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]
