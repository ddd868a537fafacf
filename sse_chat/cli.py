"""`sse-chat serve|post|tail`."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import warnings
from collections.abc import Sequence
from contextlib import aclosing
from functools import partial

import trio

from .client import PostRefused, follow_room, post_message
from .config import ConfigError, Settings, raise_open_file_limit
from .logs import configure_logging
from .messages import DEFAULT_ROOM
from .server import serve

DEFAULT_URL = "http://127.0.0.1:8000"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sse-chat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run a replica (env: SSE_CHAT_*)")
    run.add_argument("--host", help="bind address (SSE_CHAT_HOST, default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (SSE_CHAT_PORT, default 8000)")
    run.add_argument("--replica-id", help="replica id (SSE_CHAT_REPLICA_ID, default host name)")
    run.add_argument(
        "--history-size", type=int, help="messages kept per room (SSE_CHAT_HISTORY_SIZE)"
    )
    run.add_argument(
        "--keepalive-seconds",
        type=float,
        help="seconds between keepalive comments (SSE_CHAT_KEEPALIVE_SECONDS, default 15)",
    )

    post = commands.add_parser("post", help="post a message")
    post.add_argument("text")
    post.add_argument("--user", default=os.environ.get("USER") or "cli")
    post.add_argument("--room", default=DEFAULT_ROOM)
    post.add_argument("--url", default=DEFAULT_URL)
    post.add_argument(
        "--token",
        default=os.environ.get("SSE_CHAT_TOKEN"),
        help="bearer token, when the server requires one (env SSE_CHAT_TOKEN)",
    )

    tail = commands.add_parser("tail", help="print a room's messages as they arrive")
    tail.add_argument("--room", default=DEFAULT_ROOM)
    tail.add_argument("--url", default=DEFAULT_URL)
    tail.add_argument("--last-event-id", help="start after this message id")
    tail.add_argument("--json", action="store_true", help="print each message as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sse-chat` command."""
    args = _parser().parse_args(argv)
    # While Redis is unreachable, coredis leaves each failed connection's anyio memory streams
    # to the garbage collector, which warns once per stream; they are reclaimed, not leaked.
    warnings.filterwarnings(
        "ignore", message="Unclosed <MemoryObject(Send|Receive)Stream", category=ResourceWarning
    )
    try:
        if args.command == "serve":
            raise_open_file_limit()  # before the settings: the stream cap follows it
            settings = Settings.from_env(os.environ).updated(
                {
                    "host": args.host,
                    "port": args.port,
                    "replica_id": args.replica_id,
                    "history_size": args.history_size,
                    "keepalive_seconds": args.keepalive_seconds,
                }
            )
            configure_logging(settings.replica_id)
            # What start-up built (modules, classes, the app's code) lives as long as the
            # process: keep it out of every later collection, whose pause then grows with the
            # open streams only.
            gc.collect()
            gc.freeze()
            trio.run(serve, settings)
        elif args.command == "post":
            message = trio.run(post_message, args.url, args.room, args.user, args.text, args.token)
            print(message["id"])
        else:
            trio.run(partial(_tail, args.url, args.room, args.last_event_id, args.json))
    except (ConfigError, PostRefused) as error:
        print(f"sse-chat: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


async def _tail(url: str, room: str, last_event_id: str | None, as_json: bool) -> None:
    async with aclosing(follow_room(url, room, last_event_id)) as messages:
        async for message in messages:
            if as_json:
                print(json.dumps(message, ensure_ascii=False), flush=True)
            else:
                print(f"{message['ts']} {message['user']}: {message['text']}", flush=True)
