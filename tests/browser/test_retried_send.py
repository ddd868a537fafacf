"""Sending again by itself: a send that meets a 503 or a lost request is retried with the same
Idempotency-Key and appears once; one that keeps failing keeps its text and says so."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Page, Request, Route, expect

from .chat import assert_each_once_in_order, expect_connected, expect_texts, pick_name
from .support import TIMEOUT, OpenPage, Replica

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def open_chat(new_page: OpenPage, replica: Replica, room: str, name: str) -> Page:
    page = new_page(f"{replica.url}/?room={room}")
    pick_name(page, name)
    expect_connected(page, replica.name)
    return page


def intercept_posts(page: Page, room: str, handle: Callable[[Route, int], None]) -> list[Request]:
    """Route the page's POSTs to `room` through `handle(route, attempt)`; the requests seen."""
    seen: list[Request] = []

    def on_route(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        seen.append(route.request)
        handle(route, len(seen))

    page.route(f"**/rooms/{room}/messages", on_route)
    return seen


def keys_of(requests: list[Request]) -> list[str | None]:
    return [request.headers.get("idempotency-key") for request in requests]


def stored_texts(replica: Replica, room: str) -> list[str]:
    response = httpx.get(f"{replica.url}/rooms/{room}/messages", timeout=TIMEOUT)
    return [message["text"] for message in response.json()["messages"]]


def test_a_send_that_meets_a_503_is_retried_with_the_same_key_and_appears_once(
    new_page: OpenPage, replicas: list[Replica], room: str
) -> None:
    r1 = replicas[0]
    page = open_chat(new_page, r1, room, "gus")

    def busy_once(route: Route, attempt: int) -> None:
        if attempt == 1:
            body = '{"error":"unavailable","message":"the backplane is not connected"}'
            route.fulfill(status=503, body=body, content_type="application/json")
        else:
            route.continue_()

    posts = intercept_posts(page, room, busy_once)
    page.fill("#text", "through a busy moment")
    page.press("#text", "Enter")
    expect_texts(page, ["through a busy moment"])
    expect(page.locator("#text")).to_have_value("")
    expect(page.locator("#error")).to_have_text("")
    keys = keys_of(posts)
    assert len(keys) == 2 and keys[0] == keys[1], keys
    assert keys[0] is not None and UUID.match(keys[0])
    assert stored_texts(r1, room) == ["through a busy moment"]

    page.fill("#text", "the next message")  # a new message gets a new key
    page.press("#text", "Enter")
    expect_texts(page, ["through a busy moment", "the next message"])
    assert len(posts) == 3 and keys_of(posts)[2] not in keys


def test_a_dropped_request_is_retried_showing_that_it_is_sending_and_appears_once(
    new_page: OpenPage, replicas: list[Replica], room: str, artifacts: Path
) -> None:
    r1, r2 = replicas
    page = open_chat(new_page, r1, room, "hal")
    held: list[Route] = []

    def drop_first_hold_second(route: Route, attempt: int) -> None:
        if attempt == 1:
            route.abort("connectionreset")
        else:
            held.append(route)

    posts = intercept_posts(page, room, drop_first_hold_second)
    page.fill("#text", "despite a dropped request")
    page.press("#text", "Enter")
    status = page.locator("#send-status")
    expect(status).to_contain_text("Sending")
    expect(page.locator("#send")).to_be_disabled()
    expect(page.locator("#text")).to_have_value("despite a dropped request")
    expect(status).to_have_text("Sending… (attempt 2)")  # the second attempt is out, held here
    page.screenshot(path=artifacts / "chat-sending-again.png")
    assert len(held) == 1
    held.pop().continue_()

    expect_texts(page, ["despite a dropped request"])
    expect(status).to_have_text("")
    expect(page.locator("#send")).to_be_enabled()
    keys = keys_of(posts)
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0] is not None, keys
    assert stored_texts(r2, room) == ["despite a dropped request"]
    assert_each_once_in_order(page)


def test_a_send_whose_answer_is_lost_is_stored_once(
    new_page: OpenPage, replicas: list[Replica], room: str
) -> None:
    r1, r2 = replicas
    page = open_chat(new_page, r1, room, "ida")

    def lose_first_answer(route: Route, attempt: int) -> None:
        if attempt == 1:
            stored = route.fetch()  # the server stores the message...
            assert stored.status == 201, stored.text()
            route.abort("connectionreset")  # ...and its answer never reaches the page
        else:
            route.continue_()

    posts = intercept_posts(page, room, lose_first_answer)
    page.fill("#text", "stored once, answered twice")
    page.press("#text", "Enter")
    expect(page.locator("#text")).to_have_value("")
    expect_texts(page, ["stored once, answered twice"])
    keys = keys_of(posts)
    assert len(keys) == 2 and keys[0] == keys[1], keys
    assert stored_texts(r2, room) == ["stored once, answered twice"]
    assert_each_once_in_order(page)


def test_a_send_that_keeps_failing_keeps_its_text_and_sending_it_again_reuses_its_key(
    new_page: OpenPage, replicas: list[Replica], room: str, artifacts: Path
) -> None:
    r1 = replicas[0]
    page = open_chat(new_page, r1, room, "jo")
    page.clock.install()  # the backoff's ~30 s pass at once
    failing = True

    def refuse_while_failing(route: Route, attempt: int) -> None:
        if failing:
            route.abort("connectionrefused")
        else:
            route.continue_()

    posts = intercept_posts(page, room, refuse_while_failing)
    page.fill("#text", "never got through")
    page.press("#text", "Enter")
    error = page.locator("#error")
    for _ in range(120):
        if error.text_content():
            break
        page.clock.run_for(1000)
    expect(error).to_have_text(
        "Not sent: the server cannot be reached. Your message is kept; try again."
    )
    expect(page.locator("#text")).to_have_value("never got through")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#send-status")).to_have_text("")
    keys = keys_of(posts)
    assert len(keys) == 8 and len(set(keys)) == 1, keys  # the first try and 7 retries
    page.screenshot(path=artifacts / "chat-send-failed.png")

    failing = False
    page.press("#text", "Enter")  # sent again by hand: the same message, so the same key
    expect_texts(page, ["never got through"])
    expect(error).to_have_text("")
    assert keys_of(posts) == [*keys, keys[0]], keys_of(posts)
    assert stored_texts(r1, room) == ["never got through"]
