"""Readings from /proc: a process's RSS, and how busy the machine is."""

from __future__ import annotations

import time


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def busy_and_total() -> tuple[int, int]:
    """Busy and total time of all CPUs so far, in clock ticks (from /proc/stat)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def busy_since(start: tuple[int, int]) -> float:
    """How busy all CPUs were since `start` (a `busy_and_total()` reading), 0..1."""
    busy, total = busy_and_total()
    return (busy - start[0]) / max(1, total - start[1])


def busy_fraction(window: float = 0.5) -> float:
    """How busy all CPUs were over `window` seconds (0..1)."""
    start = busy_and_total()
    time.sleep(window)
    return busy_since(start)


def wait_until_quiet(threshold: float = 0.1, timeout: float = 20.0) -> float:
    """Wait until the machine is less than `threshold` busy (or `timeout`); the last reading."""
    deadline = time.monotonic() + timeout
    busy = busy_fraction()
    while busy > threshold and time.monotonic() < deadline:
        busy = busy_fraction()
    return busy
