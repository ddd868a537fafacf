"""Time the event loop was free to run: the clock that says whether Redis is slow or we are.

Under a reconnect storm a replica's loop can be busy for seconds (thousands of connections set
up, a GC pass). A deadline on the ordinary clock then expires while Redis's answer sits unread
in the socket, and the replica would take its own slowness for a dead Redis. This clock counts
only the time the loop could run: a ticker sleeps `tick` seconds at a time, and a sleep that
overslept (the loop was blocked or swamped) counts as at most two ticks, however long it took.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

TICK = 0.1  # seconds; a stall is counted as at most 2 x TICK


class LoopClock:
    """Seconds of event-loop run time, and deadlines measured in them; `run` must be running."""

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self.now = 0.0  # run time since `run` started
        self.stalled = 0.0  # seconds the loop could not run, not counted in `now`
        self.longest_stall = 0.0
        self._deadlines: dict[trio.CancelScope, float] = {}

    async def run(self) -> None:
        """Tick until cancelled, cancelling the scopes whose deadline has passed."""
        while True:
            started = trio.current_time()
            await trio.sleep(self.tick)
            elapsed = trio.current_time() - started
            counted = min(elapsed, 2 * self.tick)
            self.now += counted
            if elapsed > counted:
                self.stalled += elapsed - counted
                self.longest_stall = max(self.longest_stall, elapsed - counted)
            if self._deadlines:
                expired = [scope for scope, at in self._deadlines.items() if at <= self.now]
                for scope in expired:
                    del self._deadlines[scope]
                    scope.cancel()

    @contextmanager
    def move_on_after(self, seconds: float) -> Iterator[trio.CancelScope]:
        """Like `trio.move_on_after`, with `seconds` of run time (see `disarm`)."""
        with trio.CancelScope() as scope:
            self._deadlines[scope] = self.now + seconds
            try:
                yield scope
            finally:
                self._deadlines.pop(scope, None)

    def disarm(self, scope: trio.CancelScope) -> None:
        """Take a scope's deadline away: the block goes on for as long as it needs."""
        self._deadlines.pop(scope, None)
