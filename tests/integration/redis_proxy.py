"""A TCP proxy in front of a redis-server, to make Redis unreachable for one replica only."""

from __future__ import annotations

import trio

from .redis_server import RedisServer


class Proxy:
    """A TCP proxy to a redis-server that a test can cut (and refuse new connections through),
    or make hold back the first command that contains some bytes until `release()`."""

    def __init__(self, nursery: trio.Nursery, target: RedisServer) -> None:
        self.nursery = nursery
        self.target = target
        self.port = 0
        self.refusing = False
        self.hold_pattern: bytes | None = None
        self.held = trio.Event()  # set when the command to hold arrived
        self._released = trio.Event()
        self._connections: set[trio.CancelScope] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        self.nursery.start_soon(trio.serve_listeners, self._serve, listeners)

    def cut(self) -> None:
        """Close every connection through the proxy and refuse new ones (Redis unreachable)."""
        self.refusing = True
        for connection in self._connections:
            connection.cancel()

    def restore(self) -> None:
        self.refusing = False

    def hold(self, pattern: bytes) -> None:
        self.hold_pattern, self.held, self._released = pattern, trio.Event(), trio.Event()

    def release(self) -> None:
        self.hold_pattern = None
        self._released.set()

    async def _serve(self, downstream: trio.SocketStream) -> None:
        async with downstream:
            if self.refusing:
                return
            with trio.CancelScope() as connection:
                self._connections.add(connection)
                try:
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.target.port)
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pipe, downstream, upstream, connection, True)
                        nursery.start_soon(self._pipe, upstream, downstream, connection, False)
                finally:
                    self._connections.discard(connection)

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream,
                    connection: trio.CancelScope, to_redis: bool) -> None:  # fmt: skip
        try:
            async for data in source:
                if to_redis and self.hold_pattern is not None and self.hold_pattern in data:
                    self.held.set()
                    await self._released.wait()
                await sink.send_all(data)
        except trio.BrokenResourceError:
            pass
        connection.cancel()  # one side closed: close both
