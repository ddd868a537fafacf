"""Soak: one sse-chat replica on Redis under steady posting and 1,000 streams with churn.

    .venv/bin/python bench/soak.py --minutes 10

Samples the server's RSS and open file descriptors every 10 s and prints them with the
first-to-last change; every stream checks its own delivery (ids strictly increasing: no
duplicate, no reordering). Traffic stays on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procfs import rss_kib
from servers import redis_server, redis_url, start_sse_chat, stop, wait_ready


class Totals:
    def __init__(self) -> None:
        self.posted = 0
        self.delivered = 0
        self.reopened = 0
        self.order_violations = 0
        self.errors = 0


async def follow(host: str, port: int, totals: Totals, lifetime: float) -> None:
    """One stream for about `lifetime` seconds, checking its ids; then it ends (churn)."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        last = (0, -1)
        buffer = b""
        with trio.move_on_after(lifetime):
            while chunk := await stream.receive_some(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"id: "):
                        ms, seq = line[4:].decode().split("-")
                        current = (int(ms), int(seq))
                        if current <= last:
                            totals.order_violations += 1
                        last = current
                        totals.delivered += 1


async def churning_streams(host: str, port: int, count: int, totals: Totals) -> None:
    async def keep_one() -> None:
        while True:
            try:
                await follow(host, port, totals, random.uniform(5, 60))
            except OSError:
                totals.errors += 1
                await trio.sleep(1)
            totals.reopened += 1

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(keep_one)
            await trio.sleep(0.002)  # ramp up, not a thundering herd


async def post_steadily(host: str, port: int, per_second: float, totals: Totals) -> None:
    body = json.dumps({"user": "soak", "text": "x" * 200}).encode()
    request = (
        f"POST /messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    while True:
        # A new connection whenever the server says it will not take more on this one
        # (hypercorn closes a connection after 1,000 requests).
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            while True:
                await stream.send_all(request)
                answer = b""
                while b"\r\n\r\n" not in answer or not answer.endswith(b"}\n"):
                    answer += await stream.receive_some(65536)
                totals.posted += answer.startswith(b"HTTP/1.1 201")
                await trio.sleep(1 / per_second)
                if b"connection: close" in answer.lower():
                    break


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def soak(minutes: float, streams: int, per_second: float) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logs = Path(tempfile.mkdtemp(prefix="sse-chat-soak-"))
    with redis_server(logs) as redis_port:
        server = start_sse_chat(redis_url(redis_port), "soak", logs)
        try:
            wait_ready(server.process, server.url)
            host, port = server.url.removeprefix("http://").split(":")
            totals = Totals()
            samples: list[tuple[float, float, int]] = []
            began = time.monotonic()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(churning_streams, host, int(port), streams, totals)
                nursery.start_soon(post_steadily, host, int(port), per_second, totals)
                print(f"{'t (s)':>6} {'RSS MiB':>8} {'fds':>6} {'posted':>7} {'delivered':>10}"
                      f" {'reopened':>8} {'errors':>6}")  # fmt: skip
                while time.monotonic() - began < minutes * 60:
                    await trio.sleep(10)
                    elapsed = time.monotonic() - began
                    rss, fds = rss_kib(server.pid) / 1024, open_fds(server.pid)
                    samples.append((elapsed, rss, fds))
                    print(f"{elapsed:6.0f} {rss:8.1f} {fds:6d} {totals.posted:7d}"
                          f" {totals.delivered:10d} {totals.reopened:8d} {totals.errors:6d}",
                          flush=True)  # fmt: skip
                nursery.cancel_scope.cancel()
            # Compare after warm-up (the first minute) with the end.
            warm = next((s for s in samples if s[0] >= 60), samples[0])
            last = samples[-1]
            print(
                f"\nsoak {minutes:g} min, {streams} streams with churn, {per_second:g} posts/s:"
                f" RSS {warm[1]:.1f} -> {last[1]:.1f} MiB, fds {warm[2]} -> {last[2]}"
                f" (from minute 1 to the end); posted {totals.posted}, delivered"
                f" {totals.delivered}, streams reopened {totals.reopened}, order violations"
                f" {totals.order_violations}, connection errors {totals.errors}"
            )
        finally:
            stop(server.process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--posts-per-second", type=float, default=5)
    args = parser.parse_args()
    trio.run(soak, args.minutes, args.streams, args.posts_per_second)


if __name__ == "__main__":
    main()
