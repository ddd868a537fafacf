"""Await several Redis calls at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

_T = TypeVar("_T")


async def gather(calls: list[Callable[[], Awaitable[_T]]]) -> list[_T]:
    """Await every call at once (coredis pipelines their commands on one connection)."""
    results: dict[int, _T] = {}

    async def one(index: int, call: Callable[[], Awaitable[_T]]) -> None:
        results[index] = await call()

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(one, index, call)
    return [results[index] for index in range(len(calls))]
