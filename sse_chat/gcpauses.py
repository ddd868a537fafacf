"""How long the cyclic garbage collector stops the replica (process-wide, pure bookkeeping).

A full collection walks every tracked object, and while it runs nothing else does: no
fan-out, no keepalive, no Redis reply read. The longest pause is exposed in `/metrics`.
"""

from __future__ import annotations

import gc
import time
from typing import Any


class GcPauses:
    """Times every collection through `gc.callbacks`."""

    def __init__(self) -> None:
        self.longest = 0.0  # seconds
        self.total = 0.0
        self.count = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.count += 1
        self.total += pause
        self.longest = max(self.longest, pause)

    def install(self) -> None:
        """Start timing (once per process)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)


GC_PAUSES = GcPauses()
