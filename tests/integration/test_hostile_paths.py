"""Room paths that are not room names: a 404 whichever code serves the request.

A stream may be a connection's first request (read by the intake, below Quart) or a later one
(routed by Quart); history and presence are always Quart's. A room name never contains `/`
and is never empty, so such a path is a bad room name (404), not another room.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from .support import TIMEOUT, RunningReplica


async def _status(replica: RunningReplica, path: str, later: bool) -> int:
    """The status of GET `path`, as a connection's first request or as a later one."""
    timeout = httpx.Timeout(TIMEOUT, read=None)
    async with httpx.AsyncClient(base_url=replica.url, timeout=timeout) as client:
        if later:
            await client.get("/healthz")
        async with client.stream("GET", path) as response:
            return response.status_code


@pytest.mark.parametrize("later", [False, True], ids=["first request", "later request"])
@pytest.mark.parametrize("what", ["events", "messages", "presence"])
@pytest.mark.parametrize(
    "room",
    [
        pytest.param("lobby/"),
        pytest.param("/lobby"),
        "a/b",
        "/",
        "lobby%2F",  # sent as %252F: the room name is the text `lobby%2F`
    ],
)
async def test_a_room_with_a_slash_is_not_found_rather_than_another_room(
    replica: RunningReplica, room: str, what: str, later: bool
) -> None:
    assert await _status(replica, f"/rooms/{quote(room, safe='')}/{what}", later) == 404


@pytest.mark.parametrize(
    ("what", "later"),
    [
        pytest.param(what, later, id=f"{what}, {'later' if later else 'first'} request")
        for what in ("events", "messages", "presence")
        for later in (False, True)
    ],
)  # fmt: skip
async def test_an_empty_room_is_not_found_rather_than_the_lobby(
    replica: RunningReplica, what: str, later: bool
) -> None:
    assert await _status(replica, f"/rooms//{what}", later) == 404
