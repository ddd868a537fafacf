"""What a person does on the chat page and what they see there: the tests' shared vocabulary."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

OWN = re.compile(r"\bown\b")


def messages(page: Page) -> list[dict[str, str]]:
    """The messages on screen, in screen order: id, user and text (exactly as rendered)."""
    result: list[dict[str, str]] = page.locator("#messages li.message").evaluate_all(
        """items => items.map(item => ({
            id: item.dataset.id,
            user: item.querySelector('.user').textContent,
            text: item.querySelector('.text').textContent,
        }))"""
    )
    return result


def expect_texts(page: Page, texts: list[str]) -> None:
    """Wait until exactly these message texts are on screen, in this order."""
    expect(page.locator("#messages li.message .text")).to_have_text(texts)


def expect_online(page: Page, users: list[str]) -> None:
    """Wait until the online list names exactly these users, in this order."""
    expect(page.locator("#online li")).to_have_count(len(users))
    names = page.locator("#online li").evaluate_all("items => items.map(i => i.dataset.user)")
    assert names == users


def pick_name(page: Page, name: str) -> None:
    """Type a name and leave the field, as a person does; the stream then reopens as them."""
    page.fill("#user", name)
    page.press("#user", "Tab")
    expect(page.locator("#text")).to_be_focused()


def say(page: Page, text: str) -> None:
    """Type a message and press Enter."""
    page.fill("#text", text)
    page.press("#text", "Enter")
    expect(page.locator("#text")).to_have_value("")


def expect_connected(page: Page, replica: str) -> None:
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(page.locator("#replica")).to_have_text(replica)


def assert_each_once_in_order(page: Page) -> None:
    ids = [message["id"] for message in messages(page)]
    assert len(ids) == len(set(ids)), f"duplicates: {ids}"
    assert ids == sorted(ids, key=lambda id: tuple(int(part) for part in id.split("-")))


def join(page: Page, room: str) -> None:
    """Join a room with the room form: it opens, and stays in the sidebar."""
    page.fill("#room-input", room)
    page.press("#room-input", "Enter")
    expect(page.locator("#room-name")).to_have_text(f"#{room}")
    expect(page.locator("#messages")).to_have_attribute("aria-busy", "false")  # history is in


def open_from_sidebar(page: Page, room: str) -> None:
    page.locator(f'#room-list li[data-room="{room}"] a').click()
    expect(page.locator("#room-name")).to_have_text(f"#{room}")
    expect(page.locator("#messages")).to_have_attribute("aria-busy", "false")


def expect_unread(page: Page, room: str, count: int) -> None:
    """The sidebar's count for the room: the number shown and what a screen reader hears."""
    entry = page.locator(f'#room-list li[data-room="{room}"]')
    expect(entry).to_have_attribute("data-unread", str(count))
    expect(entry.locator(".unread")).to_have_text(str(count) if count else "")
    words = {0: "", 1: ", 1 unread message"}.get(count, f", {count} unread messages")
    expect(entry.get_by_role("link")).to_have_accessible_name(f"#{room}{words}")
