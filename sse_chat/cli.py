"""`sse-chat serve|post|tail|token`."""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from contextlib import aclosing
from functools import partial

import trio

from .client import ClientError, Unreachable, follow_room, post_message
from .config import ConfigError, Settings, raise_open_file_limit
from .logs import configure_logging
from .messages import DEFAULT_ROOM
from .server import serve
from .tokens import issue_token, parse_patterns

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TOKEN_TTL = "1h"


class CommandFailed(Exception):
    """The command cannot do its job; the message says why in one line."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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

    token_help = "bearer token, when the server requires one (env SSE_CHAT_TOKEN)"
    post = commands.add_parser("post", help="post a message")
    post.add_argument("text")
    post.add_argument("--user", default=os.environ.get("USER") or "cli")
    post.add_argument("--room", default=DEFAULT_ROOM)
    post.add_argument("--url", default=DEFAULT_URL)
    post.add_argument("--token", default=os.environ.get("SSE_CHAT_TOKEN"), help=token_help)

    tail = commands.add_parser("tail", help="print a room's messages as they arrive")
    tail.add_argument("--room", default=DEFAULT_ROOM)
    tail.add_argument("--url", default=DEFAULT_URL)
    tail.add_argument("--last-event-id", help="start after this message id")
    tail.add_argument("--json", action="store_true", help="print each message as JSON")
    tail.add_argument("--token", default=os.environ.get("SSE_CHAT_TOKEN"), help=token_help)

    token = commands.add_parser(
        "token", help="print a token (JWT) signed with the HS256 key of SSE_CHAT_JWT_KEY_FILE"
    )
    token.add_argument("--user", required=True, help="the user name (the `sub` claim)")
    token.add_argument(
        "--rooms", default="", help="private rooms it opens, comma-separated: 'team-*,ops'"
    )
    token.add_argument(
        "--ttl",
        default=DEFAULT_TOKEN_TTL,
        help=f"lifetime: 90, 90s, 15m, 1h or 2d (default {DEFAULT_TOKEN_TTL})",
    )
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
            _serve(args)
        elif args.command == "post":
            message = trio.run(post_message, args.url, args.room, args.user, args.text, args.token)
            print(message["id"])
        elif args.command == "tail":
            trio.run(partial(_tail, args.url, args.room, args.last_event_id, args.json, args.token))
        else:
            print(_token(args.user, args.rooms, args.ttl))
    except (ConfigError, ClientError, CommandFailed) as error:
        print(f"sse-chat: {error}", file=sys.stderr)
        return _exit_code(error)
    except KeyboardInterrupt:
        return 130
    return 0


def _exit_code(error: Exception) -> int:
    """1 when the network or the host is in the way; 2 when what was asked cannot be done."""
    if isinstance(error, CommandFailed):
        return error.exit_code
    return 1 if isinstance(error, Unreachable) else 2


def _serve(args: argparse.Namespace) -> None:
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
    # What start-up built (modules, classes, the app's code) lives as long as the process:
    # keep it out of every later collection, whose pause then grows with the open streams only.
    gc.collect()
    gc.freeze()
    listening = False

    async def serve_until_stopped() -> None:
        nonlocal listening
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, settings)
            listening = True

    try:
        trio.run(serve_until_stopped)
    except BaseException as error:
        cause = _sole_exception(error)  # trio's nurseries wrap what their tasks raise
        if isinstance(cause, ConfigError):
            raise cause from None
        # An OSError before the socket listens is the bind failing (port in use, address
        # not ours, a privileged port): the operator's to fix, not a crash to debug.
        if not listening and isinstance(cause, OSError):
            reason = _os_words(cause)
            address = f"{settings.host}:{settings.port}"
            raise CommandFailed(f"cannot listen on {address}: {reason}") from None
        raise


def _sole_exception(error: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one, else `error` itself."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _os_words(error: OSError) -> str:
    """`address already in use` (the system's words, lower-cased as in a sentence)."""
    words = error.strerror or str(error)
    return words[:1].lower() + words[1:]


async def _tail(
    url: str, room: str, last_event_id: str | None, as_json: bool, token: str | None
) -> None:
    async with aclosing(follow_room(url, room, last_event_id, token=token)) as messages:
        async for message in messages:
            if as_json:
                print(json.dumps(message, ensure_ascii=False), flush=True)
            else:
                print(f"{message['ts']} {message['user']}: {message['text']}", flush=True)


_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """`90`, `90s`, `15m`, `1h`, `2d` -> seconds; ValueError for anything else or zero."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a duration like 90, 90s, 15m, 1h or 2d")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def _token(user: str, rooms: str, ttl: str) -> str:
    """A token for `user`, signed with the first shared secret of SSE_CHAT_JWT_KEY_FILE."""
    try:
        ttl_seconds = parse_duration(ttl)
    except ValueError as bad:
        raise CommandFailed(f"--ttl: {bad}", exit_code=2) from None
    if not user.strip():
        raise CommandFailed("--user must not be empty", exit_code=2)
    settings = Settings.from_env(os.environ)
    secret = next((key.secret for key in settings.jwt_keys if key.secret), None)
    if secret is None:
        raise CommandFailed(
            "token needs SSE_CHAT_JWT_KEY_FILE naming a shared secret (HS256)", exit_code=2
        )
    return issue_token(
        secret,
        user,
        parse_patterns(rooms),
        ttl_seconds,
        audience=settings.jwt_audience or None,
        issuer=settings.jwt_issuer or None,
    )
