"""Client addresses behind proxies, and rate-limit windows (pure)."""

from __future__ import annotations

import pytest

from sse_chat.ratelimit import Window, client_address, parse_networks

PROXIES = parse_networks("10.0.0.0/8, 127.0.0.1")


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("198.51.100.7", None, "198.51.100.7"),  # direct
        ("198.51.100.7", "203.0.113.1", "198.51.100.7"),  # forged by an untrusted client
        ("10.0.0.2", "203.0.113.1", "203.0.113.1"),  # through our proxy
        ("10.0.0.2", "203.0.113.9, 203.0.113.1, 10.0.0.3", "203.0.113.1"),  # nearest untrusted
        ("10.0.0.2", "10.0.0.4", "10.0.0.4"),  # only proxies: the farthest one
        ("10.0.0.2", "not-an-ip", "not-an-ip"),
    ],
)
def test_the_client_is_the_nearest_hop_that_is_not_a_trusted_proxy(
    remote: str, forwarded: str | None, expected: str
) -> None:
    assert client_address(remote, forwarded, PROXIES) == expected


def test_bad_proxy_lists_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/8, nonsense")


def test_a_window_says_which_it_is_and_how_long_it_lasts() -> None:
    assert Window.at(125.5, 60) == Window(index=2, retry_after=55)
    assert Window.at(179.9, 60).retry_after == 1  # never 0: a client must wait
