"""The load generator: N SSE subscribers and a paced poster on one epoll loop; JSON on stdout.

Standard library only. A plain epoll loop over non-blocking sockets costs a few microseconds per
read; an async framework's per-await overhead would make the generator, not the server, the
bottleneck at 100k deliveries/s. The posts are made on the same loop, so send and receive times
come from one monotonic clock.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import socket
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from procfs import cpu_seconds, rss_kib
from tally import Subscriber, Totals, message_text, percentile

OPEN_BATCH = 100  # below hypercorn's default listen backlog, so no SYN is dropped


@dataclass(slots=True)
class Post:
    """One POST in flight, on its own `Connection: close` socket."""

    sock: socket.socket
    started_ns: int
    response: bytes = b""


def raise_fd_limit() -> None:
    """Let this process hold as many sockets as the hard limit allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1":
        raise SystemExit("the benchmark only talks to 127.0.0.1")
    return parts.hostname, parts.port or 80


def connect(addr: tuple[str, int], request: bytes) -> socket.socket:
    """A connected socket that has sent `request`, now non-blocking."""
    sock = socket.create_connection(addr, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(request)
    sock.setblocking(False)
    return sock


class LoadGenerator:
    """Owns the sockets, the epoll object and the counts of one run."""

    def __init__(self, urls: list[str], room: str, messages: int, pids: list[int]) -> None:
        self.addrs = [address(url) for url in urls]
        self.room = room
        self.messages = messages
        self.pids = pids
        self.epoll = select.epoll()
        self.subscribers: dict[int, tuple[socket.socket, Subscriber]] = {}
        self.dropped: list[Subscriber] = []  # closed mid-run; what they got still counts
        self.header_pending: dict[int, bytes] = {}
        self.posts: dict[int, Post] = {}
        self.totals = Totals()
        self.connection_errors = 0
        self.posts_ok = 0
        self.posts_failed = 0
        self.post_latencies_ns: list[int] = []
        self.closing = False

    def open_subscribers(self, count: int, timeout: float) -> None:
        """Open `count` streams in batches, each batch ready before the next starts."""
        deadline = time.monotonic() + timeout
        for start in range(0, count, OPEN_BATCH):
            for index in range(start, min(count, start + OPEN_BATCH)):
                host, port = addr = self.addrs[index % len(self.addrs)]
                request = (
                    f"GET /rooms/{self.room}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    "Accept: text/event-stream\r\n\r\n"
                ).encode()
                try:
                    sock = connect(addr, request)
                except OSError:
                    self.connection_errors += 1
                    continue
                self.subscribers[sock.fileno()] = (sock, Subscriber(self.messages))
                self.header_pending[sock.fileno()] = b""
                self.epoll.register(sock.fileno(), select.EPOLLIN)
            while self.ready_count() < len(self.subscribers) and time.monotonic() < deadline:
                self.pump(0.05)

    def ready_count(self) -> int:
        return sum(1 for _, sub in self.subscribers.values() if sub.ready)

    def post(self, sequence: int) -> None:
        """POST benchmark message `sequence`, round-robin over the servers."""
        host, port = addr = self.addrs[sequence % len(self.addrs)]
        sent_ns = time.perf_counter_ns()
        body = json.dumps({"user": "bench", "text": message_text(sequence, sent_ns)}).encode()
        request = (
            f"POST /rooms/{self.room}/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode() + body
        try:
            sock = connect(addr, request)
        except OSError:
            self.posts_failed += 1
            return
        self.posts[sock.fileno()] = Post(sock, sent_ns)
        self.epoll.register(sock.fileno(), select.EPOLLIN)

    def pump(self, timeout: float) -> None:
        """Wait up to `timeout` seconds and handle whatever became readable."""
        events = self.epoll.poll(timeout, 4096)
        now = time.perf_counter_ns()
        for fd, _ in events:
            entry = self.subscribers.get(fd)
            if entry is not None:
                self.read_stream(fd, entry[0], entry[1], now)
            elif fd in self.posts:
                self.read_post(fd, now)

    def read_stream(self, fd: int, sock: socket.socket, sub: Subscriber, now: int) -> None:
        try:
            data = sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop_stream(fd, sock)
            return
        pending = self.header_pending.get(fd)
        if pending is not None:
            data = pending + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.header_pending[fd] = data
                return
            del self.header_pending[fd]
            if not data.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                self.drop_stream(fd, sock)
                return
            data = data[end + 4 :]
        sub.feed(data, now, self.totals)

    def drop_stream(self, fd: int, sock: socket.socket) -> None:
        if not self.closing:
            self.connection_errors += 1
        self.epoll.unregister(fd)
        sock.close()
        self.dropped.append(self.subscribers.pop(fd)[1])
        self.header_pending.pop(fd, None)

    def read_post(self, fd: int, now: int) -> None:
        post = self.posts[fd]
        try:
            data = post.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            post.response += data
            if not response_complete(post.response):
                return
        self.epoll.unregister(fd)
        post.sock.close()
        del self.posts[fd]
        if post.response.startswith(b"HTTP/1.1 201"):
            self.posts_ok += 1
            self.post_latencies_ns.append(now - post.started_ns)
        else:
            self.posts_failed += 1

    def send(self, rate: float, drain_timeout: float) -> tuple[float, float]:
        """POST every message at `rate`/s, then wait for deliveries; (CPU s of servers, wall s)."""
        cpu0 = sum(cpu_seconds(pid) for pid in self.pids)
        start = time.perf_counter()
        for sequence in range(self.messages):
            due = start + sequence / rate
            while (now := time.perf_counter()) < due:
                self.pump(due - now)
            self.post(sequence)
        expected = len(self.subscribers)
        deadline = time.perf_counter() + drain_timeout
        while time.perf_counter() < deadline:
            if not self.posts and self.totals.deliveries >= expected * self.posts_ok:
                break
            self.pump(0.05)
        wall = time.perf_counter() - start
        return sum(cpu_seconds(pid) for pid in self.pids) - cpu0, wall

    def close(self) -> None:
        self.closing = True
        for fd, (sock, _) in list(self.subscribers.items()):
            self.epoll.unregister(fd)
            sock.close()
        self.epoll.close()


def response_complete(response: bytes) -> bool:
    """Whether `response` holds its headers and the whole `Content-Length` body.

    hypercorn keeps the connection open after answering `Connection: close`, so EOF cannot be
    the only end.
    """
    end = response.find(b"\r\n\r\n")
    if end < 0:
        return False
    for line in response[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(response) - end - 4 >= int(value)
    return False


def server_rss_kib(pids: list[int]) -> int:
    return sum(rss_kib(pid) for pid in pids)


def run(args: argparse.Namespace) -> dict[str, object]:
    """One benchmark run, as a JSON-ready dict."""
    raise_fd_limit()
    gen = LoadGenerator(args.url, args.room, args.messages, args.pid)
    rss_before = server_rss_kib(args.pid)
    gen.open_subscribers(args.subscribers, args.open_timeout)
    settle_until = time.monotonic() + args.settle
    while time.monotonic() < settle_until:
        gen.pump(0.1)
    ready = gen.ready_count()
    rss_idle = server_rss_kib(args.pid)
    result: dict[str, object] = {
        "subscribers": args.subscribers,
        "ready": ready,
        "rss_before_kib": rss_before,
        "rss_idle_kib": rss_idle,
        "kib_per_idle_connection": (rss_idle - rss_before) / max(1, ready),
    }
    if args.messages:
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu, wall = gen.send(args.rate, args.drain_timeout)
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        totals = gen.totals
        everyone = [sub for _, sub in gen.subscribers.values()] + gen.dropped
        received = sum(sub.received() for sub in everyone if sub.ready)
        latencies = sorted(totals.latencies_ns)
        span = max(1, totals.last_ns - totals.first_ns) / 1e9 if totals.deliveries > 1 else 1
        loadgen_cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
        posts = sorted(gen.post_latencies_ns)
        result |= {
            "messages": args.messages,
            "posts_ok": gen.posts_ok,
            "posts_failed": gen.posts_failed,
            "deliveries": totals.deliveries,
            "deliveries_per_s": totals.deliveries / span,
            "lost": ready * gen.posts_ok - received,
            "duplicates": totals.duplicates,
            "order_violations": totals.order_violations,
            "latency_ms": {
                name: percentile(latencies, q) / 1e6
                for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
            },
            "post_ms": {"p50": percentile(posts, 0.5) / 1e6, "p99": percentile(posts, 0.99) / 1e6},
            "server_cpu_percent": 100 * server_cpu / wall,
            "loadgen_cpu_percent": 100 * loadgen_cpu / wall,
            "rss_after_kib": server_rss_kib(args.pid),
        }
    result["connection_errors"] = gen.connection_errors
    result["not_ready"] = args.subscribers - ready
    gen.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", action="append", required=True, help="server base URL (repeat)")
    parser.add_argument("--room", default="bench")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=0, help="0: hold idle connections only")
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second")
    parser.add_argument("--pid", type=int, action="append", default=[], help="server pid (repeat)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before sending")
    parser.add_argument("--open-timeout", type=float, default=60.0)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    json.dump(run(parser.parse_args()), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
