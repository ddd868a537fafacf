"""Freed heap memory goes back to the system (glibc: the C library CI runs on)."""

from __future__ import annotations

from pathlib import Path

from sse_chat.memory import release_free_memory


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_free_pages_stranded_between_live_blocks_are_returned() -> None:
    blocks = [bytes(4096) for _ in range(16384)]  # 64 MiB from malloc (too big for pymalloc)
    survivors = blocks[::64]  # one live block every 256 KiB keeps the heap from shrinking
    del blocks
    before = _rss_mib()
    assert release_free_memory()
    assert before - _rss_mib() > 32, "the free pages between live blocks stayed resident"
    del survivors  # alive until here
