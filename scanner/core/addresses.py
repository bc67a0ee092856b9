"""The address guard: which IP addresses the scanner may contact.

`classify_address` sorts an address into one `AddressClass` from explicit
tables (not `ipaddress.is_private`, whose answers changed between Python patch
releases). `is_address_allowed` applies docs/architecture.md#safety: public addresses are always
allowed; loopback, private and link-local only with `--allow-private`;
multicast, unspecified, reserved and invalid never.

`parse_exclusions` reads the `--exclude FILE` lines into an `Exclusions` value.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from scanner.core.names import InvalidHostname, normalize_hostname

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressClass(StrEnum):
    PUBLIC = "public"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link-local"
    MULTICAST = "multicast"
    RESERVED = "reserved"
    UNSPECIFIED = "unspecified"
    INVALID = "invalid"


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Checked in this order; the first table holding the address decides.
# RFC 6890 (special-purpose registries), RFC 1918, RFC 6598, RFC 4193, RFC 4291.
_IPV4_TABLE: tuple[tuple[AddressClass, tuple[IPNetwork, ...]], ...] = (
    (AddressClass.UNSPECIFIED, _nets("0.0.0.0/32")),
    (AddressClass.LOOPBACK, _nets("127.0.0.0/8")),
    (AddressClass.LINK_LOCAL, _nets("169.254.0.0/16")),
    (AddressClass.MULTICAST, _nets("224.0.0.0/4")),
    (AddressClass.PRIVATE, _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")),
    (
        AddressClass.RESERVED,
        _nets(
            "0.0.0.0/8",  # "this network" (RFC 1122 §3.2.1.3)
            "192.0.0.0/24",  # IETF protocol assignments (RFC 6890)
            "192.0.2.0/24",  # TEST-NET-1 (RFC 5737)
            "198.51.100.0/24",  # TEST-NET-2
            "203.0.113.0/24",  # TEST-NET-3
            "198.18.0.0/15",  # benchmarking (RFC 2544)
            "240.0.0.0/4",  # reserved, including 255.255.255.255
        ),
    ),
)

_IPV6_TABLE: tuple[tuple[AddressClass, tuple[IPNetwork, ...]], ...] = (
    (AddressClass.UNSPECIFIED, _nets("::/128")),
    (AddressClass.LOOPBACK, _nets("::1/128")),
    (AddressClass.LINK_LOCAL, _nets("fe80::/10")),
    (AddressClass.MULTICAST, _nets("ff00::/8")),
    (AddressClass.PRIVATE, _nets("fc00::/7", "fec0::/10")),  # ULA; deprecated site-local
    (
        AddressClass.RESERVED,
        _nets(
            "2001:db8::/32",  # documentation (RFC 3849)
            "3fff::/20",  # documentation (RFC 9637)
            "100::/64",  # discard-only (RFC 6666)
            "2001:2::/48",  # benchmarking (RFC 5180)
            "2001:10::/28",  # ORCHID (RFC 4843)
            "2001:20::/28",  # ORCHIDv2 (RFC 7343)
        ),
    ),
)

_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")  # RFC 4291 §2.4
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1


def parse_address(ip: str) -> IPAddress | None:
    """The address `ip` denotes (an IPv6 zone suffix is accepted), or None."""
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # IPv4-mapped (RFC 4291 §2.5.5.2), NAT64 well-known prefix (RFC 6052 §2.1)
    # and 6to4 (RFC 3056 §2, 2002:V4ADDR::/48): each reaches the IPv4 host it
    # embeds, so it is judged as that host.
    plain = ipaddress.IPv6Address(int(address))  # drop any zone for the lookup
    if plain.ipv4_mapped is not None:
        return plain.ipv4_mapped
    if plain in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF)
    if plain.sixtofour is not None:
        return plain.sixtofour
    return None


def _teredo_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    # RFC 4380 §4: a Teredo address (2001::/32) names its server and, obfuscated,
    # its client's mapped IPv4 address.
    teredo = ipaddress.IPv6Address(int(address)).teredo
    return () if teredo is None else teredo


# An address is asked about at every connection to it, and shared providers' addresses
# come back domain after domain: each text is classified once, in a cache of bounded
# entries. A text too long to be a plain address is classified each time.
CLASSIFY_CACHE_SIZE = 8192
_CACHED_TEXT_MAX = 64  # characters; an IPv6 address with a long zone is not kept


def classify_address(ip: str) -> AddressClass:
    """Classify one textual IPv4 or IPv6 address.

    IPv4-mapped (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4
    (`2002:AABB:CCDD::/48`) addresses classify like the IPv4 address they
    embed, so `2002:7f00:1::1` is loopback. IPv6 outside 2000::/3 that no
    table names (e.g. IPv4-compatible `::a.b.c.d`) is reserved. Teredo
    (2001::/32) is public: it is reached through a public relay. Anything that
    does not parse is `invalid`.
    """
    if len(ip) > _CACHED_TEXT_MAX:
        return _classify(ip)
    return _classify_cached(ip)


def _classify(ip: str) -> AddressClass:
    address = parse_address(ip)
    if address is None:
        return AddressClass.INVALID
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return classify_address(str(embedded))
        plain = ipaddress.IPv6Address(int(address))
        for address_class, networks in _IPV6_TABLE:
            if any(plain in network for network in networks):
                return address_class
        if plain not in _IPV6_GLOBAL_UNICAST:
            return AddressClass.RESERVED
        return AddressClass.PUBLIC
    for address_class, networks in _IPV4_TABLE:
        if any(address in network for network in networks):
            return address_class
    return AddressClass.PUBLIC


_classify_cached = functools.lru_cache(maxsize=CLASSIFY_CACHE_SIZE)(_classify)


_ALLOWED_WITH_PRIVATE = frozenset(
    {AddressClass.PUBLIC, AddressClass.LOOPBACK, AddressClass.PRIVATE, AddressClass.LINK_LOCAL}
)


# docs/architecture.md#safety: refuse loopback, private, link-local, multicast and reserved
# targets unless --allow-private; multicast, unspecified (0.0.0.0 reaches the
# local host on some systems), reserved and invalid are refused even then.
def is_address_allowed(ip: str, *, allow_private: bool) -> bool:
    """May the scanner connect to `ip`?"""
    address_class = classify_address(ip)
    if address_class is AddressClass.PUBLIC:
        return True
    return allow_private and address_class in _ALLOWED_WITH_PRIVATE


class InvalidExclusion(ValueError):
    """A line of an exclusion file that is neither a domain nor an address/CIDR."""


@dataclass(frozen=True, slots=True)
class Exclusions:
    """Domains (each with its subdomains) and networks never contacted (`--exclude`)."""

    domains: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    def excludes_domain(self, domain: str) -> bool:
        """True when `domain` or one of its parent domains is listed.

        A name that does not normalise is compared lower-cased as given.
        """
        try:
            name = normalize_hostname(domain, allow_underscore=True)
        except InvalidHostname:
            name = domain.lower().rstrip(".")
        labels = name.split(".")
        return any(".".join(labels[i:]) in self.domains for i in range(len(labels)))

    def excludes_address(self, ip: str) -> bool:
        """True when `ip`, or an IPv4 address it embeds, is in a listed network.

        Embedded addresses: IPv4-mapped, NAT64, 6to4, and both the server and
        the client address of a Teredo address.
        """
        address = parse_address(ip)
        if address is None:
            return False
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            candidates[0] = ipaddress.IPv6Address(int(address))
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                candidates.append(embedded)
            candidates.extend(_teredo_ipv4(address))
        return any(candidate in network for candidate in candidates for network in self.networks)


def parse_exclusions(lines: Iterable[str]) -> Exclusions:
    """Parse `--exclude` file lines.

    One entry per line; `#` starts a comment; blank lines are skipped. An entry
    is an IP address, a CIDR network (host bits are ignored: `10.1.2.3/8` means
    10.0.0.0/8) or a domain name (U-labels allowed), which also covers its
    subdomains. Raises `InvalidExclusion` naming the line number otherwise.
    """
    domains: set[str] = set()
    networks: list[IPNetwork] = []
    for number, raw in enumerate(lines, start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        try:
            domains.add(normalize_hostname(entry, allow_underscore=True))
        except InvalidHostname as exc:
            raise InvalidExclusion(
                f"line {number}: {entry!r} is neither an address, a network nor a domain ({exc})"
            ) from exc
    return Exclusions(domains=frozenset(domains), networks=tuple(networks))
