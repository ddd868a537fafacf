"""The chat page in a real browser (Debian's Chromium), against two replicas on one Redis."""

from __future__ import annotations

import re
import signal
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from playwright.sync_api import Route, expect

from .chat import (
    OWN,
    assert_each_once_in_order,
    expect_connected,
    expect_online,
    expect_texts,
    messages,
    pick_name,
    say,
)
from .support import TIMEOUT, OpenPage, Replica


def test_two_people_on_two_replicas_chat_and_see_each_other_online(
    new_page: OpenPage, replicas: list[Replica], room: str
) -> None:
    r1, r2 = replicas
    # ana is in India (UTC+5:30), with a 24-hour clock: her page shows times in her local time.
    ana = new_page(f"{r1.url}/?room={room}", timezone_id="Asia/Kolkata", locale="en-GB")
    bo = new_page(f"{r2.url}/?room={room}")
    pick_name(ana, "ana")
    pick_name(bo, "bo")
    expect_connected(ana, "r1")
    expect_connected(bo, "r2")
    expect_online(ana, ["ana", "bo"])
    expect_online(bo, ["ana", "bo"])
    presence = httpx.get(f"{r1.url}/rooms/{room}/presence", timeout=TIMEOUT).json()
    assert presence == {"room": room, "users": ["ana", "bo"]}

    say(ana, "hi bo, I am on r1")
    expect_texts(bo, ["hi bo, I am on r1"])
    bo.fill("#text", "hi ana, r2 here")
    bo.click("#send")
    expect_texts(ana, ["hi bo, I am on r1", "hi ana, r2 here"])
    expect_texts(bo, ["hi bo, I am on r1", "hi ana, r2 here"])

    # Each sees their own messages marked as theirs, and only those.
    for page, own_index in ((ana, 0), (bo, 1)):
        items = page.locator("#messages li.message")
        expect(items.nth(own_index)).to_have_class(OWN)
        expect(items.nth(1 - own_index)).not_to_have_class(OWN)
        assert_each_once_in_order(page)
    assert [m["user"] for m in messages(ana)] == ["ana", "bo"]
    time = ana.locator("#messages time").first
    sent_at = datetime.fromisoformat(time.get_attribute("datetime") or "")
    local = sent_at.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%H:%M")
    expect(time).to_have_text(local)

    bo.context.close()
    expect_online(ana, ["ana"])


def test_replica_restart_mid_conversation_resumes_with_every_message_once(
    new_page: OpenPage, replicas: list[Replica], room: str, artifacts: Path
) -> None:
    r1, r2 = replicas
    ana = new_page(f"{r1.url}/?room={room}")
    bo = new_page(f"{r2.url}/?room={room}")
    pick_name(ana, "ana")
    pick_name(bo, "bo")
    expect_online(bo, ["ana", "bo"])
    say(ana, "one")
    say(bo, "two")
    expect_texts(ana, ["one", "two"])

    r1.end(signal.SIGTERM)  # drains: ana's stream ends with a short retry, then r1 is gone
    expect(ana.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    expect(ana.locator("#connection")).to_have_text("reconnecting…")
    expect_online(bo, ["bo"])

    say(bo, "three (while r1 is down)")
    r2.post(room, "cy", "four, from a script")
    # ana sends while her replica is down: the page says it is still sending, keeps the text,
    # and keeps trying by itself with the same Idempotency-Key.
    ana.fill("#text", "five, sent while r1 was down")
    ana.press("#text", "Enter")
    expect(ana.locator("#send-status")).to_contain_text("the server cannot be reached")
    expect(ana.locator("#text")).to_have_value("five, sent while r1 was down")
    expect(ana.locator("#send")).to_be_disabled()
    ana.screenshot(path=artifacts / "chat-reconnecting.png")

    r1.start()
    expect_connected(ana, "r1")
    everything = [
        "one",
        "two",
        "three (while r1 is down)",
        "four, from a script",
        "five, sent while r1 was down",
    ]
    expect_texts(ana, everything)  # the retried send got through once r1 was back
    expect_texts(bo, everything)
    expect(ana.locator("#text")).to_have_value("")
    expect(ana.locator("#send-status")).to_have_text("")
    expect(ana.locator("#error")).to_have_text("")
    expect_online(bo, ["ana", "bo"])
    assert_each_once_in_order(ana)
    assert_each_once_in_order(bo)
    assert messages(ana) == messages(bo)


def test_markup_in_names_and_messages_is_shown_as_text_and_runs_nothing(
    new_page: OpenPage, replicas: list[Replica], room: str
) -> None:
    r1, r2 = replicas
    attack = "<img src=x onerror=\"window.__pwned='img'\"><script>window.__pwned='script'</script>"
    name = "<b onclick=x()>eve</b>"
    r2.post(room, name, f"history: {attack}")  # rendered from history
    eve = new_page(f"{r1.url}/?room={room}")
    expect_connected(eve, "r1")
    r2.post(room, name, f"live: {attack}")  # rendered from the stream
    pick_name(eve, name)
    say(eve, f"sent: {attack}")  # rendered from the POST's answer

    texts = [f"history: {attack}", f"live: {attack}", f"sent: {attack}"]
    expect_texts(eve, texts)
    assert [m["user"] for m in messages(eve)] == [name] * 3
    expect_online(eve, [name])
    for tag in ("img", "script", "b"):
        expect(eve.locator(f"#messages {tag}, #online {tag}")).to_have_count(0)
    assert eve.evaluate("window.__pwned") is None


def test_keyboard_alone_picks_a_name_and_sends_with_enter_and_shift_enter(
    new_page: OpenPage, replicas: list[Replica], room: str
) -> None:
    page = new_page(f"{replicas[0].url}/?room={room}")
    expect(page.locator("#user")).to_be_focused()  # no name yet: the page asks for one first
    page.keyboard.type("kim")
    page.keyboard.press("Tab")
    expect(page.locator("#text")).to_be_focused()
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    expect(page.locator("#text")).to_have_value("first line\nsecond line")
    page.keyboard.press("Enter")

    expect(page.locator("#messages li.message")).to_have_count(1)
    assert messages(page)[0]["text"] == "first line\nsecond line"
    expect(page.locator("#text")).to_have_value("")
    expect(page.locator("#text")).to_be_focused()
    page.keyboard.press("Enter")  # nothing to send: nothing is sent
    expect(page.locator("#error")).to_have_text("Type a message first.")
    expect(page.locator("#messages li.message")).to_have_count(1)

    # Focus order, walked backwards from the message box: name, the messages, the rooms.
    order = []
    for _ in range(6):
        page.keyboard.press("Shift+Tab")
        order.append(
            page.evaluate("(e => e.id || e.getAttribute('aria-label'))(document.activeElement)")
        )
    assert order == ["user", "scroller", f"Leave #{room}", f"#{room}", "room-join", "room-input"]

    # The name is remembered: a reload goes straight to the message box.
    page.reload()
    expect(page.locator("#user")).to_have_value("kim")
    expect(page.locator("#text")).to_be_focused()


def test_a_refused_send_says_why_and_keeps_the_text(
    new_page: OpenPage, replicas: list[Replica], room: str
) -> None:
    page = new_page(f"{replicas[0].url}/?room={room}")
    pick_name(page, "lee")
    expect_connected(page, "r1")
    held: list[Route] = []
    page.route(
        f"**/rooms/{room}/messages",
        lambda route: held.append(route) if route.request.method == "POST" else route.continue_(),
    )

    def fail(status: int, body: str, headers: dict[str, str] | None = None) -> None:
        page.fill("#text", "keep me")
        page.press("#text", "Enter")
        expect(page.locator("#send")).to_be_disabled()  # while the request is in flight
        page.press("#text", "Enter")  # a second Enter meanwhile sends nothing more
        expect(page.locator("#send")).to_be_disabled()
        route = held.pop()
        assert held == []
        route.fulfill(
            status=status, body=body, content_type="application/json", headers=headers or {}
        )
        expect(page.locator("#send")).to_be_enabled()
        expect(page.locator("#text")).to_have_value("keep me")

    fail(
        429,
        '{"error":"rate_limited","message":"at most 30 messages per 10 s"}',
        {"Retry-After": "7"},
    )
    expect(page.locator("#error")).to_have_text(
        "Not sent: you are sending too fast (at most 30 messages per 10 s). Try again in 7 s."
    )
    fail(413, '{"error":"too_large","message":"the body is larger than 16384 bytes"}')
    expect(page.locator("#error")).to_have_text("Not sent: the message is too long.")
    fail(422, '{"error":"invalid_message","message":"text: must not be empty","field":"text"}')
    expect(page.locator("#error")).to_contain_text("text: must not be empty")
    expect(page.locator("#text")).to_have_attribute("aria-invalid", "true")

    # A real 422 from the server (the text box's maxlength stops typing, not a script).
    page.unroute(f"**/rooms/{room}/messages")
    page.locator("#text").evaluate("t => { t.value = 'x'.repeat(4001); }")
    page.press("#text", "Enter")
    expect(page.locator("#error")).to_contain_text("Not sent: text")
    expect(page.locator("#text")).to_have_value("x" * 4001)
    expect(page.locator("#messages li.message")).to_have_count(0)

    # A name the server would refuse is caught before sending.
    page.fill("#user", "x\u0007")
    page.fill("#text", "still here")
    page.press("#text", "Enter")
    expect(page.locator("#error")).to_contain_text("Pick a name first")
    expect(page.locator("#text")).to_have_value("still here")

    page.fill("#user", "lee")
    page.press("#text", "Enter")
    expect_texts(page, ["still here"])
    expect(page.locator("#error")).to_have_text("")
    expect(page.locator("#text")).to_have_attribute("aria-invalid", "false")


def test_rooms_come_from_the_url_switch_in_place_and_are_remembered(
    new_page: OpenPage, replicas: list[Replica], room: str
) -> None:
    r1, r2 = replicas
    other = f"{room}-b"
    r2.post(room, "ana", "in the first room")
    r2.post(other, "bo", "in the second room")
    page = new_page(f"{r1.url}/?room={room}")
    expect(page.locator("#room-name")).to_have_text(f"#{room}")
    expect_texts(page, ["in the first room"])
    pick_name(page, "cy")

    page.fill("#room-input", other)
    page.press("#room-input", "Enter")
    expect(page).to_have_url(re.compile(rf"\?room={other}$"))
    expect(page.locator("#room-name")).to_have_text(f"#{other}")
    expect(page).to_have_title(f"#{other} · sse-chat")
    expect_texts(page, ["in the second room"])
    expect_online(page, ["cy"])
    say(page, "hello second room")
    r2.post(room, "ana", "meanwhile in the first room")  # not shown here: unread in the sidebar
    expect_texts(page, ["in the second room", "hello second room"])

    names = page.locator("#room-list .room-label")
    links = page.locator("#room-list a")
    expect(names).to_have_text([f"#{room}", f"#{other}"])  # in the order they were joined
    expect(links.nth(1)).to_have_attribute("aria-current", "page")
    expect(links.first).to_have_accessible_name(f"#{room}, 1 unread message")
    expect(page.locator("#room-list .unread").first).to_have_text("1")
    links.first.click()
    expect(page).to_have_url(re.compile(rf"\?room={room}$"))
    expect_texts(page, ["in the first room", "meanwhile in the first room"])
    expect(links.first).to_have_accessible_name(f"#{room}")  # read: no count
    expect_online(page, ["cy"])  # the same stream, which knows who is in each of its rooms
    page.go_back()
    expect_texts(page, ["in the second room", "hello second room"])

    page.fill("#room-input", "not a room!")
    page.press("#room-input", "Enter")
    expect(page.locator("#error")).to_contain_text("Room names are")
    expect(page.locator("#room-name")).to_have_text(f"#{other}")

    page.goto(f"{r1.url}/")  # a later visit: the name and the rooms are remembered
    expect(page.locator("#room-name")).to_have_text("#lobby")
    expect(page.locator("#user")).to_have_value("cy")
    expect(names).to_have_text([f"#{room}", f"#{other}", "#lobby"])

    page.get_by_role("button", name=f"Leave #{other}").click()  # a room not on screen goes
    expect(names).to_have_text([f"#{room}", "#lobby"])
    expect(page.locator("#room-name")).to_have_text("#lobby")
    page.get_by_role("button", name="Leave #lobby").click()  # leaving the room on screen
    expect(page).to_have_url(re.compile(rf"\?room={room}$"))  # opens the one before it
    expect(names).to_have_text([f"#{room}"])
    expect_texts(page, ["in the first room", "meanwhile in the first room"])


def test_autoscroll_follows_new_messages_but_not_a_reader_who_scrolled_up(
    new_page: OpenPage, replicas: list[Replica], room: str, artifacts: Path
) -> None:
    r1, r2 = replicas
    for n in range(30):
        r2.post(room, "ana", f"message {n}")
    page = new_page(f"{r1.url}/?room={room}", viewport={"width": 800, "height": 500})
    pick_name(page, "bo")
    expect(page.locator("#messages li.message")).to_have_count(30)
    expect_connected(page, "r1")
    at_bottom = "s => s.scrollHeight - s.scrollTop - s.clientHeight < 2"
    scroller = page.locator("#scroller")
    assert scroller.evaluate(at_bottom)

    scroller.evaluate("s => { s.scrollTop = 0; }")
    r2.post(room, "ana", "while you read")
    expect(page.locator("#new-messages")).to_be_visible()
    expect(page.locator("#new-messages")).to_have_text("1 new message ↓")
    expect(page.locator("#messages .divider")).to_have_count(1)
    assert scroller.evaluate("s => s.scrollTop") == 0  # the reader stays where they were
    r2.post(room, "ana", "and another")
    expect(page.locator("#new-messages")).to_have_text("2 new messages ↓")
    assert scroller.evaluate("s => s.scrollTop") == 0
    page.screenshot(path=artifacts / "chat-new-messages.png")

    page.click("#new-messages")
    expect(page.locator("#new-messages")).to_be_hidden()
    assert scroller.evaluate(at_bottom)
    r2.post(room, "ana", "at the bottom, it follows")
    expect(page.locator("#messages li.message")).to_have_count(33)
    assert scroller.evaluate(at_bottom)
    expect(page.locator("#new-messages")).to_be_hidden()

    scroller.evaluate("s => { s.scrollTop = 0; }")
    say(page, "my own message brings me down")
    expect(page.locator("#messages li.message")).to_have_count(34)
    assert scroller.evaluate(at_bottom)


def test_going_offline_and_back_shows_it_and_loses_nothing(
    new_page: OpenPage, replicas: list[Replica], room: str
) -> None:
    r1, r2 = replicas
    page = new_page(f"{r1.url}/?room={room}")
    expect_connected(page, "r1")
    r2.post(room, "ana", "before")
    expect_texts(page, ["before"])
    page.context.set_offline(True)
    expect(page.locator("#connection")).to_have_text("offline")
    r2.post(room, "ana", "while offline")
    page.context.set_offline(False)
    expect_connected(page, "r1")
    expect_texts(page, ["before", "while offline"])
    r2.post(room, "ana", "after")
    expect_texts(page, ["before", "while offline", "after"])
    assert_each_once_in_order(page)


def test_page_is_served_under_the_content_security_policy(
    new_page: OpenPage, replicas: list[Replica], room: str
) -> None:
    page = new_page("about:blank")
    response = page.goto(f"{replicas[0].url}/?room={room}")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    expect_connected(page, "r1")
    # The fixture then checks that the policy blocked nothing the page does.


def test_controls_are_labelled_and_new_messages_are_announced(
    new_page: OpenPage, replicas: list[Replica], room: str
) -> None:
    page = new_page(f"{replicas[0].url}/?room={room}")
    for label in ("Room", "Name", "Message"):
        expect(page.get_by_label(label, exact=True)).to_be_editable()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.get_by_role("button", name="Join")).to_be_enabled()
    log = page.get_by_role("log", name="Messages")
    expect(log).to_have_attribute("aria-live", "polite")
    expect(page.get_by_role("status")).to_have_text("connected")
    expect(page.get_by_role("complementary", name=re.compile("Online"))).to_be_visible()
    rooms = page.get_by_role("navigation", name="Your rooms")
    expect(rooms.get_by_role("list", name="Your rooms").get_by_role("listitem")).to_have_count(1)
    expect(rooms.get_by_role("link", name=f"#{room}")).to_have_attribute("aria-current", "page")
    expect(rooms.get_by_role("button", name=f"Leave #{room}")).to_be_enabled()
    expect(page.locator("#text")).to_have_accessible_description(
        "Enter sends, Shift+Enter adds a new line."
    )


def test_screenshots_light_dark_and_phone(
    new_page: OpenPage, replicas: list[Replica], room: str, artifacts: Path
) -> None:
    r1, r2 = replicas
    r2.post(room, "ana", "Morning! Did the rolling update go through?")
    r2.post(room, "bo", "Yes: three replicas, nothing lost.\nEvery client resumed by itself.")
    r2.post(room, "ana", "<b>markup</b> stays text, as it should")
    backgrounds = {}
    for scheme, viewport, user in (
        ("light", {"width": 1000, "height": 640}, "cy"),
        ("dark", {"width": 1000, "height": 640}, "dee"),
        ("phone-dark", {"width": 390, "height": 760}, "eli"),
        ("phone-light", {"width": 390, "height": 760}, "fay"),
    ):
        page = new_page(
            f"{r1.url}/?room={room}",
            color_scheme="dark" if "dark" in scheme else "light",
            viewport=viewport,
        )
        pick_name(page, user)
        expect_connected(page, "r1")
        if scheme == "light":
            say(page, "Looks good from here, and this line is mine.")
        expect(page.locator("#messages li.message")).to_have_count(4)
        expect(page.locator(f'#online li[data-user="{user}"]')).to_be_visible()
        page.locator("#text").blur()
        page.screenshot(path=artifacts / f"chat-{scheme}.png", full_page=False)
        backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        if scheme.startswith("phone"):  # nothing sticks out sideways on a phone
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"{width}px wide on a {viewport['width']}px screen"
    assert backgrounds["light"] != backgrounds["dark"]
    assert backgrounds["light"] == backgrounds["phone-light"]
