"""Posting through Redis faults as a careful client does, and what clients must have received.

A `RetryingPoster` gives each message its own `Idempotency-Key` and retries a refused POST with
that key until it is accepted, so every message ends with one 201; `assert_each_once_in_order`
checks a client got every 201'd message once, in id order, and nothing else but messages
whose outcome a refusal left unknown.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from sse_chat.ids import MessageId

from .support import TIMEOUT, wait_until

RETRY_PAUSE = 0.05  # seconds before a refused POST is retried (Retry-After, but brief)


@dataclass(frozen=True)
class Attempt:
    """One POST: when it started and how it ended (a status, or a transport error's name)."""

    text: str
    started: float
    status: int | str
    error: str = ""  # the JSON error code of a refusal
    message: str = ""  # and its message, or the transport error's


class RetryingPoster:
    """Posts numbered messages to one room through the replicas in turn until told to stop;
    a refused POST is retried with the same Idempotency-Key until it gets a 201."""

    def __init__(
        self,
        clients: list[httpx.AsyncClient],
        room: str,
        limit: int = 2000,
        pause: float = 0.005,
        give_up_after: float = 3 * TIMEOUT,
    ) -> None:
        self.clients = clients
        self.room = room
        self.limit = limit  # bounded: a fault test never posts forever
        self.pause = pause  # between messages: a steady rate, not a flood
        self.give_up_after = give_up_after  # seconds one message may take to be accepted
        self.accepted: list[dict[str, Any]] = []  # 201 bodies, in the order they came
        self.attempts: list[Attempt] = []
        self.stop = trio.Event()
        self.stopped = trio.Event()  # no POST is in flight any more
        self._turn = 0
        self._keys = secrets.token_hex(4)

    @property
    def uncertain(self) -> set[str]:
        """Texts of messages that some POST was refused for: stored or not, it could not say."""
        return {attempt.text for attempt in self.attempts if attempt.status != 201}

    def attempts_between(self, start: float, end: float) -> list[Attempt]:
        return [attempt for attempt in self.attempts if start <= attempt.started <= end]

    async def accepted_count_reaches(self, count: int, seconds: float = TIMEOUT) -> None:
        await wait_until(lambda: len(self.accepted) >= count, seconds=seconds)

    async def run(self) -> None:
        try:
            for n in range(self.limit):
                if self.stop.is_set():
                    return
                await self._post_until_accepted(f"{self.room} m{n}", f"{self._keys}-{n}")
                await trio.sleep(self.pause)
        finally:
            self.stopped.set()

    async def _post_until_accepted(self, text: str, key: str) -> None:
        path = f"/rooms/{self.room}/messages"
        with trio.fail_after(self.give_up_after):
            while True:
                client = self.clients[self._turn % len(self.clients)]
                self._turn += 1
                started = trio.current_time()
                try:
                    response = await client.post(
                        path,
                        json={"user": "poster", "text": text},
                        headers={"Idempotency-Key": key},
                    )
                except httpx.TransportError as error:
                    failed = Attempt(text, started, type(error).__name__, message=str(error))
                    self.attempts.append(failed)
                    await trio.sleep(RETRY_PAUSE)
                    continue
                if response.status_code == 201:
                    self.attempts.append(Attempt(text, started, 201))
                    self.accepted.append(response.json())
                    return
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"]
                refusal = response.json()
                # outcome_unknown: stored, maybe, but not confirmed (late, or too few replicas)
                assert refusal["error"] in ("unavailable", "outcome_unknown"), response.text
                self.attempts.append(
                    Attempt(text, started, 503, refusal["error"], refusal["message"])
                )
                await trio.sleep(RETRY_PAUSE)


def assert_each_once_in_order(received: list[dict[str, Any]], poster: RetryingPoster) -> None:
    """`received` (one client's messages of the poster's room) holds every 201'd message once,
    in id order; anything else is a message whose POST was refused (its outcome unknown)."""
    ids = [MessageId.parse(message["id"]) for message in received]
    assert ids == sorted(set(ids)), "a message came twice or out of id order"
    accepted_ids = {message["id"] for message in poster.accepted}
    assert len(accepted_ids) == len(poster.accepted), "two 201s carried the same id"
    got = [message for message in received if message["id"] in accepted_ids]
    missing = [message for message in poster.accepted if message not in got]
    assert not missing, f"{len(missing)} acknowledged messages never arrived: {missing[:3]}"
    assert got == poster.accepted
    extras = {message["text"] for message in received if message["id"] not in accepted_ids}
    assert extras <= poster.uncertain, extras - poster.uncertain
