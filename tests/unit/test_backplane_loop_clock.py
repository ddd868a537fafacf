"""LoopClock: run time counts only what the event loop could run; a stall is at most 2 ticks.

A `MockClock` jump stands for a stalled loop: trio's time moves on while nothing runs.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from sse_chat.backplane.loop_clock import LoopClock


async def test_run_time_follows_the_clock_while_the_loop_is_free(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = LoopClock(tick=0.1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        await trio.sleep(5.05)
        nursery.cancel_scope.cancel()
    assert clock.now == pytest.approx(5.0, abs=0.01)
    assert clock.stalled == 0


async def test_a_stall_counts_as_at_most_two_ticks_and_is_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = LoopClock(tick=0.1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        await trio.sleep(1.05)
        autojump_clock.jump(3)  # the loop is blocked for 3 s
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert 2.0 <= clock.now <= 2.25
    assert clock.stalled == pytest.approx(clock.longest_stall) == pytest.approx(2.9, abs=0.06)


async def test_a_deadline_counts_run_time_not_stalls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = LoopClock(tick=0.1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        await trio.sleep(0.25)
        with clock.move_on_after(1) as deadline:
            autojump_clock.jump(10)
            await trio.sleep(0.5)
            survived_the_stall = True
            await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert survived_the_stall and deadline.cancelled_caught
    assert clock.now == pytest.approx(1.2, abs=0.11)
    assert clock.stalled > 9


async def test_a_disarmed_deadline_never_expires(autojump_clock: trio.testing.MockClock) -> None:
    clock = LoopClock(tick=0.1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        with clock.move_on_after(1) as deadline:
            clock.disarm(deadline)
            await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert not deadline.cancelled_caught
