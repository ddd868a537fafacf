"""Private rooms on the page: the token state, a pasted token, a `#token=` link, a token
without the grant and one that expires, against a replica whose `team-*` rooms are private."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from .chat import assert_each_once_in_order, expect_connected, expect_texts, expect_unread, say
from .conftest import PrivateReplica
from .support import TIMEOUT, OpenPage, OpenProfile


def post_with_token(private: PrivateReplica, room: str, token: str, text: str) -> None:
    """Post as a script with a token would (the token names the user)."""
    response = httpx.post(
        f"{private.url}/rooms/{room}/messages",
        json={"text": text},
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text


def expect_locked(page: Page, state: str, heading: str) -> None:
    """The room is refused: the token panel says why, the status says so, nothing can be sent."""
    expect(page.locator("#token-panel")).to_be_visible()
    expect(page.locator("#token-heading")).to_have_text(heading)
    expect(page.locator("#connection")).to_have_attribute("data-state", state)
    expect(page.locator("#text")).to_be_disabled()
    expect(page.locator("#send")).to_be_disabled()


def expect_unlocked(page: Page) -> None:
    expect(page.locator("#token-panel")).to_be_hidden()
    expect_connected(page, "p1")
    expect(page.locator("#text")).to_be_enabled()


def assert_token_kept_only_in_the_cookie(page: Page, token: str) -> None:
    """The page stores no token: the server's HttpOnly cookie holds it."""
    stored = page.evaluate("JSON.stringify({...localStorage, ...sessionStorage})")
    assert token not in stored
    assert token not in page.url
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    cookie = cookies["sse_chat_token"]
    assert cookie["value"] == token and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # out of the page's scripts' reach


def test_a_private_room_without_a_token_asks_for_one_and_a_pasted_token_opens_it(
    new_page: OpenPage, private_replica: PrivateReplica, room: str, artifacts: Path
) -> None:
    team = f"team-{room}"
    ana = private_replica.token("ana", ["team-*"])
    post_with_token(private_replica, team, ana, "earlier, in the team room")
    page = new_page(f"{private_replica.url}/?room={team}")

    expect_locked(page, "needs-token", f"#{team} needs a token")
    expect(page.locator("#connection")).to_have_text("needs a token")
    expect(page.locator("#scroller")).to_be_hidden()  # nothing of the room is shown
    expect(page.locator("#token-input")).to_be_focused()
    page.screenshot(path=artifacts / "private-needs-token.png")
    phone = new_page(
        f"{private_replica.url}/?room={team}",
        viewport={"width": 390, "height": 760},
        color_scheme="dark",
    )
    expect_locked(phone, "needs-token", f"#{team} needs a token")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out
    phone.screenshot(path=artifacts / "private-needs-token-phone-dark.png")
    phone.close()

    page.fill("#token-input", "not a token")
    page.press("#token-input", "Enter")
    expect(page.locator("#token-error")).to_contain_text("not a token")
    forged = private_replica.token("ana", ["team-*"])[:-4] + "AAAA"
    page.fill("#token-input", forged)
    page.press("#token-input", "Enter")
    expect(page.locator("#token-error")).to_contain_text("That token was refused")
    expect_locked(page, "needs-token", f"#{team} needs a token")

    page.fill("#token-input", ana)
    page.press("#token-input", "Enter")
    expect_unlocked(page)
    expect(page.locator("#token-input")).to_have_value("")
    expect(page.locator("#user")).to_have_value("ana")  # the token's user, so posts match it
    expect_texts(page, ["earlier, in the team room"])
    say(page, "hello team")
    post_with_token(private_replica, team, private_replica.token("bo", [team]), "hi ana")
    expect_texts(page, ["earlier, in the team room", "hello team", "hi ana"])
    assert_each_once_in_order(page)
    assert_token_kept_only_in_the_cookie(page, ana)
    page.screenshot(path=artifacts / "private-open.png")

    page.reload()  # the cookie keeps the room open
    expect_unlocked(page)
    expect_texts(page, ["earlier, in the team room", "hello team", "hi ana"])


def test_a_token_link_opens_the_room_and_leaves_the_address_bar(
    new_page: OpenPage, private_replica: PrivateReplica, room: str
) -> None:
    team = f"team-{room}"
    token = private_replica.token("cy", [team])
    post_with_token(private_replica, team, token, "before the link was opened")
    page = new_page(f"{private_replica.url}/?room={team}#token={token}")
    expect_unlocked(page)
    expect(page).to_have_url(f"{private_replica.url}/?room={team}")
    expect(page.locator("#user")).to_have_value("cy")
    expect_texts(page, ["before the link was opened"])
    say(page, "came in by the link")
    expect_texts(page, ["before the link was opened", "came in by the link"])
    assert_token_kept_only_in_the_cookie(page, token)

    # A link with another room's token, opened in the same tab, changes only the fragment.
    other = f"team-{room}-b"
    post_with_token(private_replica, other, private_replica.token("dee", [other]), "in b")
    page.goto(f"{private_replica.url}/?room={other}")
    expect_locked(page, "forbidden", f"Your token does not open #{other}")
    page.evaluate(f"location.hash = 'token={private_replica.token('cy', ['team-*'])}'")
    expect_unlocked(page)
    expect(page).to_have_url(f"{private_replica.url}/?room={other}")
    expect_texts(page, ["in b"])


def test_a_token_without_the_grant_says_so_and_public_rooms_still_work(
    new_page: OpenPage, private_replica: PrivateReplica, room: str, artifacts: Path
) -> None:
    team = f"team-{room}"
    page = new_page(f"{private_replica.url}/?room={room}")  # a public room first
    expect_connected(page, "p1")
    page.fill("#text", "no token needed here")
    page.fill("#user", "ops-person")
    page.press("#text", "Enter")
    expect_texts(page, ["no token needed here"])

    page.evaluate(f"location.hash = 'token={private_replica.token('ops-person', ['ops'])}'")
    expect(page).to_have_url(re.compile(r"[^#]*$"))
    page.fill("#room-input", team)
    page.press("#room-input", "Enter")
    expect_locked(page, "forbidden", f"Your token does not open #{team}")
    expect(page.locator("#connection")).to_have_text("no access")
    expect(page.locator("#token-reason")).to_contain_text("not for this room")
    page.screenshot(path=artifacts / "private-forbidden.png")

    page.go_back()  # the public room, with the same token cookie, works as before
    expect_unlocked(page)
    expect_texts(page, ["no token needed here"])
    say(page, "still fine here")
    expect_texts(page, ["no token needed here", "still fine here"])


def test_an_expired_token_asks_for_a_new_one_and_nothing_is_missed(
    new_page: OpenPage, private_replica: PrivateReplica, room: str, artifacts: Path
) -> None:
    team = f"team-{room}"
    page = new_page(f"{private_replica.url}/?room={team}")
    expect_locked(page, "needs-token", f"#{team} needs a token")
    page.fill("#token-input", private_replica.token("eli", [team], ttl_seconds=3))
    page.press("#token-input", "Enter")
    expect_unlocked(page)
    say(page, "before it expired")

    # The stream ends at the token's expiry (within 3 s): the page asks for a new token.
    expect_locked(page, "token-expired", "Your token has expired")
    expect(page.locator("#scroller")).to_be_visible()  # what was read stays on screen
    long_lived = private_replica.token("fay", [team])
    post_with_token(private_replica, team, long_lived, "while eli's token was expired")
    page.screenshot(path=artifacts / "private-expired.png")

    page.fill("#token-input", private_replica.token("eli", [team]))
    page.press("#token-input", "Enter")
    expect_unlocked(page)
    expect_texts(page, ["before it expired", "while eli's token was expired"])
    say(page, "renewed")
    expect_texts(page, ["before it expired", "while eli's token was expired", "renewed"])
    assert_each_once_in_order(page)


def test_a_refused_private_room_stops_no_other_room_and_a_token_opens_it_in_every_tab(
    new_profile: OpenProfile, private_replica: PrivateReplica, room: str
) -> None:
    team = f"team-{room}"
    browser = new_profile()  # one browser, two tabs: one stream, from their shared worker
    public = browser.open(f"{private_replica.url}/?room={room}")
    expect_connected(public, "p1")
    private = browser.open(f"{private_replica.url}/?room={team}")
    expect_locked(private, "needs-token", f"#{team} needs a token")
    team_entry = public.locator(f'#room-list li[data-room="{team}"]')
    expect(team_entry).to_have_attribute("data-locked", "")  # the stream left it out
    expect(team_entry.get_by_role("link")).to_have_accessible_name(f"#{team}, locked")

    httpx.post(
        f"{private_replica.url}/rooms/{room}/messages",
        json={"user": "bo", "text": "the public room streams on"},
        timeout=TIMEOUT,
    ).raise_for_status()
    expect_texts(public, ["the public room streams on"])
    expect_unread(private, room, 0)  # on screen in the other tab: read

    private.fill("#token-input", private_replica.token("ana", [team]))
    private.press("#token-input", "Enter")
    expect_unlocked(private)
    expect(team_entry).not_to_have_attribute("data-locked", "")  # in the other tab too
    post_with_token(private_replica, team, private_replica.token("cy", [team]), "for the team")
    expect_texts(private, ["for the team"])
    expect_unread(public, team, 0)  # read in the private tab; and no longer locked
    expect_connected(public, "p1")
