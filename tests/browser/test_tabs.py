"""One stream per browser: the tabs of one profile share a SharedWorker's stream of all their
rooms, and the sidebar counts what is unread in the rooms not on screen. Most tests run on
replicas of their own (m1, m2), so that their /metrics count only the test's streams."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from .chat import (
    assert_each_once_in_order,
    expect_connected,
    expect_texts,
    expect_unread,
    join,
    messages,
    open_from_sidebar,
    pick_name,
)
from .support import TIMEOUT, OpenPage, OpenProfile, Replica

TABS = 10
LIVE_WITHIN_S = 2.0


def expect_streams_open(replicas: list[Replica], count: int) -> None:
    """Wait until the replicas hold `count` streams in all (a closed one takes a moment)."""
    deadline = time.monotonic() + TIMEOUT
    while (seen := sum(replica.streams_open() for replica in replicas)) != count:
        where = ", ".join(f"{replica.name}: {replica.streams_open()}" for replica in replicas)
        assert time.monotonic() < deadline, f"{seen} streams open ({where}), not {count}"
        time.sleep(0.1)


def test_ten_tabs_of_one_browser_share_one_stream_and_each_gets_a_live_message_within_2_s(
    new_profile: OpenProfile, own_replicas: list[Replica], room: str
) -> None:
    m1, m2 = own_replicas
    browser = new_profile()
    tabs = [browser.open(f"{m1.url}/?room={room}") for _ in range(TABS)]  # each loads
    for tab in tabs:
        expect_connected(tab, "m1")
    expect_streams_open(own_replicas, 1)  # the browser's one stream, for all ten tabs

    posted = time.monotonic()
    m2.post(room, "ana", "to every tab at once")
    for n, tab in enumerate(tabs):
        left = posted + LIVE_WITHIN_S - time.monotonic()
        assert left > 0, f"tabs 0-{n - 1} took {LIVE_WITHIN_S} s already"
        text = tab.locator("#messages li.message .text")
        expect(text).to_have_text(["to every tab at once"], timeout=left * 1000)
    waited = time.monotonic() - posted
    print(f"\n{TABS} tabs: the post answered and every tab showed it in {waited:.3f} s")
    expect_streams_open(own_replicas, 1)


def test_without_shared_worker_each_tab_streams_alone_and_still_gets_everything(
    new_profile: OpenProfile, own_replicas: list[Replica], room: str
) -> None:
    m1, m2 = own_replicas
    browser = new_profile()
    browser.context.add_init_script("delete window.SharedWorker;")  # as in browsers without it
    tabs = [browser.open(f"{m1.url}/?room={room}") for _ in range(3)]
    for tab in tabs:
        expect_connected(tab, "m1")
        assert tab.evaluate("typeof SharedWorker") == "undefined"
    expect_streams_open(own_replicas, 3)
    m2.post(room, "ana", "to each tab's own stream")
    for tab in tabs:
        expect_texts(tab, ["to each tab's own stream"])


def test_unread_counts_follow_posts_to_rooms_not_on_screen_in_every_tab(
    new_profile: OpenProfile, own_replicas: list[Replica], room: str
) -> None:
    m1, m2 = own_replicas
    other = f"{room}-b"
    browser = new_profile()
    tabs = [browser.open(f"{m1.url}/?room={room}") for _ in range(4)]
    join(tabs[0], other)  # every tab's sidebar has it now: they share the rooms
    open_from_sidebar(tabs[0], room)
    for tab in tabs:
        expect(tab.locator("#room-list .room-label")).to_have_text([f"#{room}", f"#{other}"])
        expect_connected(tab, "m1")
        expect_unread(tab, other, 0)

    m2.post(other, "ana", "first in the other room")
    for tab in tabs:
        expect_unread(tab, other, 1)
    m2.post(other, "bo", "second in the other room")
    for tab in tabs:
        expect_unread(tab, other, 2)
        expect_unread(tab, room, 0)
        expect_texts(tab, [])  # the room on screen shows none of it
    late = browser.open(f"{m1.url}/?room={room}")  # a tab opened now counts from history
    expect_unread(late, other, 2)
    tabs.append(late)
    expect_streams_open(own_replicas, 1)

    reader = tabs[2]
    open_from_sidebar(reader, other)  # opening it reads it: in every tab
    expect_texts(reader, ["first in the other room", "second in the other room"])
    for tab in tabs:
        expect_unread(tab, other, 0)

    # The reader is away from the first room now; a message there is shown in the other tabs,
    # and so read: it is not counted in the reader's sidebar either.
    m2.post(room, "cy", "in the first room")
    for tab in tabs:
        if tab is not reader:
            expect_texts(tab, ["in the first room"])
    expect_unread(reader, room, 0)
    m2.post(other, "cy", "and one more in the other room")
    expect_texts(
        reader,
        ["first in the other room", "second in the other room", "and one more in the other room"],
    )
    for tab in tabs:
        expect_unread(tab, other, 0)  # on screen in the reader's tab: read


def test_a_replica_restart_is_survived_by_every_tab_with_nothing_lost(
    new_profile: OpenProfile, own_replicas: list[Replica], room: str
) -> None:
    m1, m2 = own_replicas
    other = f"{room}-b"
    browser = new_profile()
    tabs = [browser.open(f"{m1.url}/?room={room}") for _ in range(TABS)]
    join(tabs[0], other)
    open_from_sidebar(tabs[0], room)
    pick_name(tabs[0], "ana")
    m2.post(room, "bo", "one")
    m2.post(room, "bo", "two")
    for tab in tabs:
        expect_connected(tab, "m1")
        expect_texts(tab, ["one", "two"])
    expect_streams_open(own_replicas, 1)

    m1.end(signal.SIGTERM)  # drains: the stream ends with a short retry, then m1 is gone
    for tab in tabs:
        expect(tab.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    m2.post(room, "bo", "three (while m1 is down)")
    m2.post(other, "bo", "in the other room while m1 is down")
    m1.start()
    m2.post(room, "cy", "four (m1 is back)")

    everything = ["one", "two", "three (while m1 is down)", "four (m1 is back)"]
    for tab in tabs:
        expect_connected(tab, "m1")
        expect_texts(tab, everything)
        assert_each_once_in_order(tab)
        expect_unread(tab, other, 1)
    assert all(messages(tab) == messages(tabs[0]) for tab in tabs)
    expect_streams_open(own_replicas, 1)
    m2.post(room, "cy", "five")
    for tab in tabs:
        expect_texts(tab, [*everything, "five"])


def sidebar_page(new_page: OpenPage, url: str, scheme: str, viewport: dict[str, int]) -> Page:
    page = new_page(url, color_scheme="dark" if "dark" in scheme else "light", viewport=viewport)
    pick_name(page, "kim")
    for room in ("design", "releases", "random"):
        join(page, room)
    open_from_sidebar(page, "general")
    return page


def test_screenshots_of_the_sidebar_light_dark_and_phone(
    new_page: OpenPage, replicas: list[Replica], artifacts: Path
) -> None:
    r1, r2 = replicas
    r2.post("general", "ana", "Standup in five minutes.")
    r2.post("general", "bo", "Joining from the train, so audio only.")
    for scheme, viewport in (
        ("light", {"width": 1100, "height": 640}),
        ("dark", {"width": 1100, "height": 640}),
        ("phone-light", {"width": 390, "height": 760}),
        ("phone-dark", {"width": 390, "height": 760}),
    ):
        page = sidebar_page(new_page, f"{r1.url}/?room=general", scheme, viewport)
        for n in range(3):
            r2.post("design", "cy", f"mock-up {n} is up")
        r2.post("releases", "dee", "1.4 is out")
        expect_unread(page, "design", 3)
        expect_unread(page, "releases", 1)
        expect_unread(page, "random", 0)
        expect(page.locator('#online li[data-user="kim"]')).to_be_visible()
        expect_texts(page, ["Standup in five minutes.", "Joining from the train, so audio only."])
        page.locator("#text").blur()
        page.screenshot(path=artifacts / f"sidebar-{scheme}.png")
        if scheme.startswith("phone"):  # nothing sticks out sideways on a phone
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"{width}px wide on a {viewport['width']}px screen"
