"""Serve a replica with hypercorn's HTTP handling until told to stop, then drain.

The accept loop is ours (hypercorn's trio worker loop, minus what we do not use) so that each
connection's task knows its socket: a stream then writes its frames there directly (`direct`).
"""

from __future__ import annotations

import errno
import logging
import math
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from .app import ChatApp, create_app
from .config import Settings
from .direct import connection_socket
from .intake import NOT_A_STREAM, PrefixedStream, read_first_request, serve_stream
from .memory import release_free_memory_forever
from .replica import Replica

log = logging.getLogger(__name__)


def listening_socket(settings: Settings) -> socket.socket:
    """The replica's bound TCP socket.

    Made here rather than by hypercorn so that the connections it accepts inherit a send
    timeout (TCP_USER_TIMEOUT): a client that stops reading while data waits for it would
    otherwise hold its connection forever, since hypercorn's writes have no timeout.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            timeout_ms = max(1, round(settings.send_timeout_seconds * 1000))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
        sock.bind((settings.host, settings.port))
    except BaseException:
        sock.close()
        raise
    return sock


def somaxconn() -> int | None:
    """The kernel's cap on listen backlogs, if it can be read."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return None


def hypercorn_config(settings: Settings) -> Config:
    """hypercorn's settings for one replica."""
    config = Config()
    cap = somaxconn()
    config.backlog = min(settings.listen_backlog, cap) if cap else settings.listen_backlog
    config.graceful_timeout = settings.graceful_timeout_seconds
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def wait_for_stop_signal() -> None:
    """Return on the first SIGTERM or SIGINT."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s, draining", signal.Signals(signum).name)
            return


# accept() errors that mean "out of file descriptors or memory right now": wait, don't crash.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_CAPACITY_PAUSE = 0.1  # seconds


# Draining, a replica still answers connections for a moment: those the kernel already queued
# (and clients the load balancer still sends) get the drain retry rather than a reset.
DRAIN_LINGER_MAX = 2.0  # seconds at most
DRAIN_QUIET = 0.5  # ...or until no connection came for this long


class _Acceptor:
    """Starts `handle` on each accepted connection, in `nursery`."""

    def __init__(
        self,
        listener: trio.socket.SocketType,
        nursery: trio.Nursery,
        handle: Callable[[trio.socket.SocketType], Awaitable[None]],
    ) -> None:
        self._listener = listener
        self._nursery = nursery
        self._handle = handle
        self._accepted = trio.Event()  # set (and replaced) on each connection
        self._last_accepted = -math.inf  # trio clock

    async def accept_forever(self) -> None:
        """Each accept is a checkpoint, so a storm of connections cannot starve the replica's
        other tasks; running out of descriptors pauses accepting instead of crashing."""
        while True:
            try:
                sock, _ = await self._listener.accept()
            except OSError as error:
                if error.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("accept failed (%s); pausing %.1f s", error, ACCEPT_CAPACITY_PAUSE)
                await trio.sleep(ACCEPT_CAPACITY_PAUSE)
                continue
            self._nursery.start_soon(self._handle, sock)
            self._accepted.set()
            self._accepted = trio.Event()
            self._last_accepted = trio.current_time()

    async def wait_until_quiet(self, quiet: float, at_most: float) -> None:
        """Return once no connection came for `quiet` seconds, or after `at_most`."""
        with trio.move_on_after(at_most):
            while trio.current_time() - self._last_accepted < quiet:
                accepted = self._accepted
                with trio.move_on_at(self._last_accepted + quiet):
                    await accepted.wait()


async def _serve_connections(
    app: AppWrapper,
    replica: Replica,
    config: Config,
    sock: socket.socket,
    stop: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[str],
) -> None:
    """Accept on `sock` until `stop` returns; then give open connections
    `config.graceful_timeout` to finish. A connection's first request is a stream served by
    the intake, or goes to hypercorn's HTTP handling."""
    state: LifespanState = {}
    lifespan = Lifespan(app, config, state)
    context = WorkerContext(config.max_requests)
    sock.listen(config.backlog)
    listener = trio.socket.from_stdlib_socket(sock)

    async def handle(client: trio.socket.SocketType) -> None:
        try:
            data, head_length = await read_first_request(client, config.keep_alive_timeout)
            if not data:
                client.close()
                return
            if head_length != NOT_A_STREAM and await serve_stream(
                replica, client, data, head_length
            ):
                return
        except Exception:
            # One connection's failure is a bug to log, never the end of the replica.
            log.exception("failed to serve a connection's first request")
            client.close()
            return
        except BaseException:
            client.close()
            raise
        connection_socket.set(client)  # the app's tasks for this connection inherit it
        stream = PrefixedStream(trio.SocketStream(client), data)
        try:
            await TCPServer(app, config, context, ConnectionState(state.copy()), stream)  # type: ignore[arg-type]
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        lifespan_nursery.start_soon(release_free_memory_forever)
        async with trio.open_nursery() as connections:
            await connections.start(replica.keeper.run)
            with listener:
                async with trio.open_nursery() as accepting:
                    acceptor = _Acceptor(listener, connections, handle)
                    accepting.start_soon(acceptor.accept_forever)
                    url = f"http://{repr_socket_addr(sock.family, sock.getsockname())}"
                    task_status.started(url)
                    await stop()
                    linger = min(DRAIN_LINGER_MAX, config.graceful_timeout)
                    await acceptor.wait_until_quiet(DRAIN_QUIET, linger)
                    accepting.cancel_scope.cancel()
            await context.terminated.set()  # idle keep-alive connections close now
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def serve(
    settings: Settings,
    *,
    app: ChatApp | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] = wait_for_stop_signal,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one replica until `shutdown_trigger` returns; report the base URL once listening.

    `app` defaults to `create_app(settings)`.
    """
    app = app or create_app(settings)

    async def drain_then_stop() -> None:
        await shutdown_trigger()
        app.replica.drain()

    async with trio.open_nursery() as nursery:
        config = hypercorn_config(settings)
        url: str = await nursery.start(
            _serve_connections,
            wrap_app(app, config.wsgi_max_body_size, "asgi"),
            app.replica,
            config,
            listening_socket(settings),
            drain_then_stop,
        )
        log.info("replica %s listening on %s", settings.replica_id, url)
        task_status.started(url)
