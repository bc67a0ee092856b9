"""The address guard and the --exclude file."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.core.addresses import (
    AddressClass,
    InvalidExclusion,
    classify_address,
    is_address_allowed,
    parse_exclusions,
)

CLASSIFY_CASES = [
    ("8.8.8.8", AddressClass.PUBLIC),
    ("2001:4860:4860::8888", AddressClass.PUBLIC),
    ("127.0.0.1", AddressClass.LOOPBACK),
    ("127.255.255.254", AddressClass.LOOPBACK),
    ("::1", AddressClass.LOOPBACK),
    ("::ffff:127.0.0.1", AddressClass.LOOPBACK),
    ("::ffff:8.8.8.8", AddressClass.PUBLIC),
    ("10.1.2.3", AddressClass.PRIVATE),
    ("172.16.0.1", AddressClass.PRIVATE),
    ("172.32.0.1", AddressClass.PUBLIC),
    ("192.168.1.1", AddressClass.PRIVATE),
    ("100.64.0.1", AddressClass.PRIVATE),
    ("fd00::1", AddressClass.PRIVATE),
    ("::ffff:10.0.0.1", AddressClass.PRIVATE),
    ("64:ff9b::10.0.0.1", AddressClass.PRIVATE),
    ("64:ff9b::8.8.8.8", AddressClass.PUBLIC),
    ("169.254.1.1", AddressClass.LINK_LOCAL),
    ("fe80::1", AddressClass.LINK_LOCAL),
    ("fe80::1%eth0", AddressClass.LINK_LOCAL),
    ("224.0.0.1", AddressClass.MULTICAST),
    ("ff02::1", AddressClass.MULTICAST),
    ("0.0.0.0", AddressClass.UNSPECIFIED),
    ("::", AddressClass.UNSPECIFIED),
    ("0.1.2.3", AddressClass.RESERVED),
    ("192.0.2.1", AddressClass.RESERVED),
    ("198.51.100.7", AddressClass.RESERVED),
    ("203.0.113.9", AddressClass.RESERVED),
    ("198.18.0.1", AddressClass.RESERVED),
    ("240.0.0.1", AddressClass.RESERVED),
    ("255.255.255.255", AddressClass.RESERVED),
    ("2001:db8::1", AddressClass.RESERVED),
    ("::10.0.0.1", AddressClass.RESERVED),  # IPv4-compatible, deprecated
    ("4000::1", AddressClass.RESERVED),  # outside 2000::/3
    # 6to4 (2002::/16) classifies like the IPv4 address it embeds.
    ("2002:808:808::1", AddressClass.PUBLIC),  # 8.8.8.8
    ("2002:7f00:1::1", AddressClass.LOOPBACK),  # 127.0.0.1
    ("2002:c000:201::", AddressClass.RESERVED),  # 192.0.2.1
    ("2002:a01:101::1", AddressClass.PRIVATE),  # 10.1.1.1
    ("2002:a9fe:101::1", AddressClass.LINK_LOCAL),  # 169.254.1.1
    ("2002:e000:1::1", AddressClass.MULTICAST),  # 224.0.0.1
    ("2002::1", AddressClass.UNSPECIFIED),  # 0.0.0.0
    ("2002:7f00:1::1%eth0", AddressClass.LOOPBACK),  # zone ignored
    ("2001:0:4136:e378::1", AddressClass.PUBLIC),  # Teredo stays public
    ("", AddressClass.INVALID),
    ("256.0.0.1", AddressClass.INVALID),
    ("mx.example.com", AddressClass.INVALID),
    ("10.0.0.0/8", AddressClass.INVALID),
    (" 8.8.8.8", AddressClass.INVALID),
]


@pytest.mark.parametrize(
    ("ip", "expected"), CLASSIFY_CASES, ids=[f"{ip or 'empty'}" for ip, _ in CLASSIFY_CASES]
)
def test_classify_address(ip: str, expected: AddressClass) -> None:
    assert classify_address(ip) is expected


ALLOWED_CASES = [
    ("8.8.8.8", False, True),
    ("2001:4860:4860::8888", False, True),
    ("127.0.0.1", False, False),
    ("127.0.0.1", True, True),
    ("127.0.0.2", True, True),
    ("::1", False, False),
    ("::1", True, True),
    ("::ffff:127.0.0.1", False, False),
    ("::ffff:127.0.0.1", True, True),
    ("10.0.0.1", False, False),
    ("10.0.0.1", True, True),
    ("169.254.0.1", False, False),
    ("169.254.0.1", True, True),
    ("224.0.0.1", True, False),
    ("0.0.0.0", True, False),
    ("192.0.2.1", True, False),
    ("not-an-ip", True, False),
    ("2002:808:808::1", False, True),
    ("2002:7f00:1::1", False, False),
    ("2002:7f00:1::1", True, True),
    ("2002:a01:101::1", False, False),
    ("2002:c000:201::", True, False),
]


@pytest.mark.parametrize(
    ("ip", "allow_private", "allowed"),
    ALLOWED_CASES,
    ids=[f"{ip}-{'allow' if allow else 'deny'}" for ip, allow, _ in ALLOWED_CASES],
)
def test_is_address_allowed(ip: str, allow_private: bool, allowed: bool) -> None:
    assert is_address_allowed(ip, allow_private=allow_private) is allowed


# ---------------------------------------------------------------- exclusions

EXCLUDE_FILE = """\
# never scan these
example.org
Bücher.example   # U-labels are fine
10.0.0.0/8
192.0.2.7
2001:db8::/32

"""


@pytest.mark.parametrize(
    ("domain", "excluded"),
    [
        ("example.org", True),
        ("example.com", False),
        ("mx.example.org", True),
        ("notexample.org", False),
        ("EXAMPLE.ORG.", True),
        ("org", False),
        ("xn--bcher-kva.example", True),
        ("mx.bücher.example", True),
        ("bucher.example", False),
    ],
    ids=[
        "itself",
        "other",
        "subdomain",
        "suffix-not-label",
        "case-and-dot",
        "parent",
        "a-label",
        "u-label-subdomain",
        "near-miss",
    ],
)
def test_excludes_domain(domain: str, excluded: bool) -> None:
    assert parse_exclusions(EXCLUDE_FILE.splitlines()).excludes_domain(domain) is excluded


@pytest.mark.parametrize(
    ("ip", "excluded"),
    [
        ("10.2.3.4", True),
        ("11.2.3.4", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("::ffff:10.9.9.9", True),
        ("::ffff:11.9.9.9", False),
        ("2001:db8::25", True),
        ("2001:db9::25", False),
        ("not-an-ip", False),
    ],
    ids=[
        "in-cidr",
        "outside-cidr",
        "single",
        "single-twin",
        "mapped",
        "mapped-twin",
        "ipv6",
        "ipv6-twin",
        "invalid",
    ],
)
def test_excludes_address(ip: str, excluded: bool) -> None:
    assert parse_exclusions(EXCLUDE_FILE.splitlines()).excludes_address(ip) is excluded


# Teredo (RFC 4380 §4): 2001:0:SERVER:flags:~port:~CLIENT.
TEREDO_CLIENT_10 = "2001:0:b00:1:8000:edcb:f5fe:fdfc"  # server 11.0.0.1, client 10.1.2.3
TEREDO_SERVER_10 = "2001:0:a01:203:8000:edcb:f4ff:fffe"  # server 10.1.2.3, client 11.0.0.1
TEREDO_OUTSIDE = "2001:0:b00:1:8000:edcb:f3ff:fffe"  # server 11.0.0.1, client 12.0.0.1


@pytest.mark.parametrize(
    ("ip", "excluded"),
    [
        pytest.param("::ffff:10.1.1.1", True, id="mapped"),
        pytest.param("::ffff:11.1.1.1", False, id="mapped-twin"),
        pytest.param("64:ff9b::10.1.1.1", True, id="nat64"),
        pytest.param("64:ff9b::11.1.1.1", False, id="nat64-twin"),
        pytest.param("2002:a01:101::1", True, id="6to4"),
        pytest.param("2002:b01:101::1", False, id="6to4-twin"),
        pytest.param("2002:a01:101::1%eth0", True, id="6to4-zone"),
        pytest.param("2003:a01:101::1", False, id="not-6to4-twin"),
        pytest.param(TEREDO_CLIENT_10, True, id="teredo-client"),
        pytest.param(TEREDO_OUTSIDE, False, id="teredo-client-twin"),
        pytest.param(TEREDO_SERVER_10, True, id="teredo-server"),
        pytest.param("2001:1:a01:203:8000:edcb:f4ff:fffe", False, id="not-teredo-twin"),
    ],
)
def test_excludes_embedded_ipv4(ip: str, excluded: bool) -> None:
    assert parse_exclusions(["10.0.0.0/8"]).excludes_address(ip) is excluded


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["example.org", "not a domain"], "line 2"),
        (["10.0.0.0/33"], "line 1"),
        (["-bad.example"], "line 1"),
    ],
    ids=["space", "bad-prefix", "bad-label"],
)
def test_parse_exclusions_rejects(lines: list[str], message: str) -> None:
    with pytest.raises(InvalidExclusion, match=message):
        parse_exclusions(lines)


def test_parse_exclusions_empty() -> None:
    exclusions = parse_exclusions(["", "# only a comment", "   "])
    assert not exclusions.excludes_domain("example.com")
    assert not exclusions.excludes_address("10.0.0.1")


# ---------------------------------------------------------------- properties

IPV4 = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)


@given(st.integers(min_value=0, max_value=2**24 - 1))
def test_every_address_in_10_slash_8_is_private(offset: int) -> None:
    address = ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.0.0.0")) + offset)
    assert classify_address(str(address)) is AddressClass.PRIVATE


@given(st.integers(min_value=0, max_value=2**24 - 1))
def test_every_address_in_127_slash_8_is_allowed_only_with_allow_private(offset: int) -> None:
    address = str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("127.0.0.0")) + offset))
    assert classify_address(address) is AddressClass.LOOPBACK
    assert is_address_allowed(address, allow_private=True)
    assert not is_address_allowed(address, allow_private=False)


@given(IPV4)
def test_mapped_addresses_classify_like_ipv4(address: ipaddress.IPv4Address) -> None:
    assert classify_address(f"::ffff:{address}") is classify_address(str(address))


@given(IPV4, st.integers(min_value=0, max_value=2**80 - 1))
def test_6to4_addresses_classify_like_ipv4(address: ipaddress.IPv4Address, suffix: int) -> None:
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80) | suffix)
    assert classify_address(str(sixtofour)) is classify_address(str(address))


@given(IPV4, st.integers(min_value=0, max_value=2**80 - 1))
def test_an_excluded_address_excludes_its_6to4_form(
    address: ipaddress.IPv4Address, suffix: int
) -> None:
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80) | suffix)
    assert parse_exclusions([str(address)]).excludes_address(str(sixtofour))
    other = ipaddress.IPv4Address(int(address) ^ 1)
    assert not parse_exclusions([str(other)]).excludes_address(str(sixtofour))


@given(IPV4)
def test_only_public_is_allowed_without_allow_private(address: ipaddress.IPv4Address) -> None:
    allowed = is_address_allowed(str(address), allow_private=False)
    assert allowed is (classify_address(str(address)) is AddressClass.PUBLIC)


@given(st.text(max_size=45))
def test_classify_never_crashes(text: str) -> None:
    assert classify_address(text) in set(AddressClass)


@given(IPV4, st.integers(min_value=8, max_value=32))
def test_an_excluded_network_excludes_its_addresses(
    address: ipaddress.IPv4Address, prefix: int
) -> None:
    network = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
    exclusions = parse_exclusions([str(network)])
    assert exclusions.excludes_address(str(address))
    assert exclusions.excludes_address(str(network.network_address))
    outside = int(network.broadcast_address) + 1
    if outside < 2**32:
        assert not exclusions.excludes_address(str(ipaddress.IPv4Address(outside)))
