"""Serve a replica with hypercorn's trio worker until told to stop, then drain."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from .app import ChatApp, create_app
from .config import Settings

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


def hypercorn_config(settings: Settings, sock: socket.socket) -> Config:
    """hypercorn's settings for one replica listening on `sock` (hypercorn then owns it)."""
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
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
        binds: list[str] = await nursery.start(
            partial(
                hypercorn_serve,
                app,
                hypercorn_config(settings, listening_socket(settings)),
                shutdown_trigger=drain_then_stop,
            )
        )
        log.info("replica %s listening on %s", settings.replica_id, binds[0])
        task_status.started(binds[0])
