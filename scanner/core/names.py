"""Hostname normalisation and certificate name matching.

Two jobs, both pure:

* `normalize_hostname` turns a user- or DNS-supplied name into the one form the
  scanner compares and prints: A-labels, lower case, no trailing dot.
* `certificate_matches` decides whether a certificate's SAN dNSName entries
  cover a reference hostname, with the rules RFC 8461 §4.2 takes from
  RFC 6125 (and RFC 9525, which obsoletes it): DNS-ID only, no CN fallback,
  a wildcard only as the entire left-most label, matching exactly one label.
"""

from __future__ import annotations

import functools
import ipaddress
import string
from collections.abc import Sequence

import idna

MAX_NAME_LENGTH = 253  # RFC 1035 §2.3.4, without the trailing dot
MAX_LABEL_LENGTH = 63  # RFC 1035 §2.3.4

_LDH = frozenset(string.ascii_lowercase + string.digits + "-")
_LDH_UNDERSCORE = _LDH | {"_"}


_IPV4_CHARACTERS = frozenset("0123456789.")


def is_ip_literal(text: str) -> bool:
    """Whether `ipaddress.ip_address` reads `text` as an IPv4 or IPv6 address.

    Host names, by far the most common case, are told apart without raising an
    exception: text with no colon and a character other than ASCII digits and dots
    is never an address.
    """
    if ":" not in text and not _IPV4_CHARACTERS.issuperset(text):
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class InvalidHostname(ValueError):
    """A name that is not a usable DNS hostname; the message says why."""


def _check_label(label: str, name: str, allowed: frozenset[str]) -> None:
    if not label:
        raise InvalidHostname(f"{name!r}: empty label")
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidHostname(f"{name!r}: label {label[:20]!r}... longer than 63 octets")
    bad = sorted(set(label) - allowed)
    if bad:
        raise InvalidHostname(f"{name!r}: label {label!r} has invalid characters {bad!r}")
    # RFC 952 / RFC 1123 §2.1: a label neither starts nor ends with a hyphen.
    if label.startswith("-") or label.endswith("-"):
        raise InvalidHostname(f"{name!r}: label {label!r} starts or ends with a hyphen")


# RFC 5890 §2.3.2.1 (A-labels), RFC 1123 §2.1 (LDH), RFC 3696 §2 (numeric TLD).
def normalize_hostname(name: str, *, allow_underscore: bool = False) -> str:
    """Return `name` as lower-case A-labels without a trailing dot.

    U-labels are converted with UTS 46 mapping (non-transitional) and IDNA 2008.
    Raises `InvalidHostname` for an empty name or label, a label over 63 octets,
    a name over 253 octets, characters outside letters, digits and hyphen
    (underscore too when `allow_underscore`), a label starting or ending with a
    hyphen, or an all-numeric last label (which also rejects IPv4 literals).
    Idempotent: normalising a normalised name returns it unchanged.
    """
    return _normalized(name, allow_underscore)


# A scan normalises each MX and policy host name several times (SNI, the name check,
# the MX name check); invalid names raise and are not kept.
NORMALIZED_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=NORMALIZED_CACHE_SIZE)
def _normalized(name: str, allow_underscore: bool) -> str:
    """`normalize_hostname`, kept for the names met again (the same names recur per domain)."""
    if not name:
        raise InvalidHostname("empty name")
    if name.isascii():
        ascii_name = name.lower()
    else:
        try:
            ascii_name = idna.encode(name, uts46=True, transitional=False).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidHostname(f"{name!r}: not a valid internationalised name ({exc})") from exc
    if ascii_name.endswith("."):
        ascii_name = ascii_name[:-1]
    if not ascii_name:
        raise InvalidHostname(f"{name!r}: empty name")
    if len(ascii_name) > MAX_NAME_LENGTH:
        raise InvalidHostname(f"{name!r}: longer than {MAX_NAME_LENGTH} octets")
    allowed = _LDH_UNDERSCORE if allow_underscore else _LDH
    labels = ascii_name.split(".")
    for label in labels:
        _check_label(label, name, allowed)
    if labels[-1].isdigit():
        raise InvalidHostname(f"{name!r}: the last label is all digits (an address, not a name)")
    return ascii_name


def is_valid_hostname(name: str, *, allow_underscore: bool = False) -> bool:
    """True when `normalize_hostname(name)` would succeed."""
    try:
        normalize_hostname(name, allow_underscore=allow_underscore)
    except InvalidHostname:
        return False
    return True


# RFC 5280 §4.2.1.6: a dNSName is an IA5String in the "preferred name syntax"
# of RFC 1034 §3.5 (as modified by RFC 1123 §2.1): labels joined by dots, with
# no empty label and so no trailing dot. A malformed entry matches nothing.
# Only the reference name's dot (an absolute DNS name) is dropped, by
# `normalize_hostname`. Go's crypto/x509 agrees (verify.go: validHostnamePattern
# keeps a pattern's trailing dot and fails it, so VerifyHostname falls back to
# matchExactly, and `example.com.` does not match `example.com`).
def presented_identifier_problem(presented: str) -> str | None:
    """Why a SAN dNSName can match no hostname at all, or None when it is usable.

    The text names the entry and the rule, for a mismatch detail. A usable
    entry may still fail to match a given name; see `presented_identifier_matches`.
    """
    if not presented.isascii():
        return (
            f"SAN {presented!r} is not ASCII; a dNSName is an IA5String and an "
            "internationalised name must be written in A-labels (RFC 5280 §4.2.1.6)"
        )
    if presented.endswith(".") and presented.strip("."):
        return (
            f"SAN {presented!r} ends with a dot; dNSNames have none (RFC 5280 §4.2.1.6), "
            "so it matches no name (Go's verifier does not match it either)"
        )
    if any(not label for label in presented.split(".")):
        return f"SAN {presented!r} has an empty label, so it matches no name"
    return None


def _presented_labels(presented: str) -> list[str] | None:
    """Labels of a presented DNS-ID, lower case; None when the identifier is unusable."""
    if presented_identifier_problem(presented) is not None:
        return None
    return presented.lower().split(".")


# RFC 9525 §6.3 / RFC 6125 §6.4.3, narrowed by RFC 8461 §4.2: a wildcard is
# valid only as the entire left-most label, and matches exactly one label.
# Choice: `*` must be followed by at least two labels (`*.example.com`), so
# `*` and `*.com` never match anything; public-suffix wildcards such as
# `*.co.uk` are out of scope here (RFC 9525 §7.1) and flagged elsewhere.
def presented_identifier_matches(reference: str, presented: str) -> bool:
    """Does one presented DNS-ID match a normalised reference hostname?

    `reference` must already be normalised (A-labels, lower case, no dot).
    Partial wildcards (`b*z.example.net`, `xn--*.example`), wildcards in any
    other label and more than one `*` never match.
    """
    labels = _presented_labels(presented)
    if labels is None:
        return False
    reference_labels = reference.split(".")
    if len(labels) != len(reference_labels):
        return False
    if labels[0] == "*":
        rest = labels[1:]
        if len(rest) < 2 or any("*" in label for label in rest):
            return False
        return rest == reference_labels[1:] and bool(reference_labels[0])
    if any("*" in label for label in labels):
        return False
    return labels == reference_labels


def certificate_matches(hostname: str, san_dns_names: Sequence[str]) -> bool:
    """True when some SAN dNSName entry matches `hostname` (RFC 8461 §4.2).

    The caller passes the SAN dNSName entries only; the subject CN is never a
    fallback. Comparison is on A-labels, case-insensitive. A `hostname` that is
    not a valid name (underscores are tolerated) matches nothing.
    """
    try:
        reference = normalize_hostname(hostname, allow_underscore=True)
    except InvalidHostname:
        return False
    return any(presented_identifier_matches(reference, entry) for entry in san_dns_names)


NAMES_SHOWN = 5  # names a sentence about a certificate lists before counting the rest


def names_shown(names: Sequence[str], total: int | None = None) -> str:
    """The first `NAMES_SHOWN` of `names`, comma-separated, and how many more there are.

    `total` is how many names there are in all, when `names` holds only some; "" for
    none. A certificate may name 18,000 hosts: a sentence names a few and counts the rest.
    """
    count = max(len(names), total or 0)
    shown = ", ".join(names[:NAMES_SHOWN])
    rest = count - min(len(names), NAMES_SHOWN)
    return f"{shown} and {rest:,} more" if rest > 0 else shown
