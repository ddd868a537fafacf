"""The pure parts of a stream's life: how long a client sent away waits before it returns."""

from __future__ import annotations

from sse_chat.stream import jittered


def test_a_jittered_delay_lies_between_the_delay_and_four_times_it() -> None:
    delays = [jittered(1000) for _ in range(2000)]
    assert all(1000 <= delay <= 4000 for delay in delays)
    assert all(isinstance(delay, int) for delay in delays)


def test_jittered_delays_spread_over_the_whole_range() -> None:
    delays = [jittered(1000) for _ in range(2000)]
    # Uniform over 3,001 values: failing any of these has odds below 1e-25.
    assert min(delays) < 1100 and max(delays) > 3900
    assert len(set(delays)) > 1000
    quarters = [sum(1000 + 750 * q <= d < 1000 + 750 * (q + 1) for d in delays) for q in range(4)]
    assert all(300 < count < 700 for count in quarters)  # about 500 each


def test_no_delay_stays_no_delay() -> None:
    assert jittered(0) == 0
