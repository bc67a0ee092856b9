"""`--resolver IP[:PORT]` parsing."""

from __future__ import annotations

import pytest

from scanner.net.resolver import Nameserver, parse_nameserver


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", Nameserver("127.0.0.1", 53)),
        ("127.0.0.1:5353", Nameserver("127.0.0.1", 5353)),
        ("::1", Nameserver("::1", 53)),
        ("[::1]:5353", Nameserver("::1", 5353)),
    ],
)
def test_valid_resolver(text: str, expected: Nameserver) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    "text", ["dns.example", "127.0.0.1:0", "127.0.0.1:99999", "[::1", "[::1]x", "1.2.3.4:ab"]
)
def test_invalid_resolver(text: str) -> None:
    with pytest.raises(ValueError, match="invalid resolver"):
        parse_nameserver(text)
