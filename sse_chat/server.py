"""Serve a replica with hypercorn's trio worker until told to stop, then drain."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from .app import ChatApp, create_app
from .config import Settings

log = logging.getLogger(__name__)


def hypercorn_config(settings: Settings) -> Config:
    """hypercorn's settings for one replica."""
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
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
                hypercorn_serve, app, hypercorn_config(settings), shutdown_trigger=drain_then_stop
            )
        )
        log.info("replica %s listening on %s", settings.replica_id, binds[0])
        task_status.started(binds[0])
