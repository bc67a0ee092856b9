"""What the HTTPS receiver decides about one POSTed report, without sockets.

Theory of operation: `scanner tlsrpt serve` (`serve.py`) moves bytes with trio and
h11; every decision lives here, as pure functions of typed values, so that each
can be tested from a table:

1. `source_address`: who is asking (the peer, or the last `X-Forwarded-For`
   hop when the peer is a trusted reverse proxy), and `source_key`: the
   address as limits count it (an IPv6 address by its /64);
2. `SourceSlots.take`: may that source open one more connection, and
   `TokenBuckets.take`: may it send a report now (a token bucket per source);
3. `check_head`: is the request line and header acceptable before any body is
   read (method, media type, declared length);
4. `accept_body`: does the body give a report (bounded gunzip, the RFC 8460 §4
   parser) for policy domains this receiver serves.

Each refusal is a `Reply` with the HTTP status and a reason for the sender.
RFC 8460 §5.4 (HTTPS delivery): a POST whose body is the report, with media
type `application/tlsrpt+json` (§6.4) or `application/tlsrpt+gzip` (§6.5); a
2xx tells the sender the report is delivered, so a 2xx is given only once it
is stored (by the caller).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from scanner.received.limits import DEFAULT_LIMITS, ReceivedLimits
from scanner.received.report import (
    ParsedReport,
    PayloadError,
    RejectedReport,
    inflate_payload,
    normalise_domain,
    parse_report_json,
)
from scanner.untrusted import visible


class MediaType(StrEnum):
    """RFC 8460 §6.4, §6.5."""

    JSON = "application/tlsrpt+json"
    GZIP = "application/tlsrpt+gzip"


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status and a one-line reason (ours, values quoted with `visible`)."""

    status: int
    reason: str
    retry_after: int | None = None  # seconds, for 429 and 503
    allow: str | None = None  # for 405


@dataclass(frozen=True, slots=True)
class Head:
    """The request line and the headers that matter, as received (names lower case)."""

    method: str
    target: str
    content_type: str | None
    content_length: int | None  # None: chunked or absent


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in headers if key.lower() == name]


def read_head(method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> Head | Reply:
    """A `Head` from h11's request fields (h11 has checked the syntax)."""
    lengths = _header(headers, b"content-length")
    length: int | None = None
    if lengths:
        try:
            length = int(lengths[0])
        except ValueError:
            return Reply(400, "Content-Length is not a number")
    types = _header(headers, b"content-type")
    return Head(
        method=method.decode("latin-1"),
        target=target.decode("latin-1"),
        content_type=types[0] if types else None,
        content_length=length,
    )


def media_type(content_type: str | None) -> MediaType | None:
    """The RFC 8460 media type named by a Content-Type value (parameters ignored), or None."""
    if content_type is None:
        return None
    essence = content_type.partition(";")[0].strip().lower()
    try:
        return MediaType(essence)
    except ValueError:
        return None


# RFC 8460 §5.4: the report is POSTed; §6.4, §6.5: its two media types.
def check_head(head: Head, limits: ReceivedLimits = DEFAULT_LIMITS) -> MediaType | Reply:
    """The media type of an acceptable request, or the refusal, before its body is read."""
    if head.method != "POST":
        return Reply(
            405,
            f"only POST is accepted here (RFC 8460 §5.4), not {visible(head.method, 20)}",
            allow="POST",
        )
    kind = media_type(head.content_type)
    if kind is None:
        shown = "none" if head.content_type is None else repr(visible(head.content_type, 80))
        return Reply(
            415,
            f"Content-Type must be {MediaType.GZIP.value} or {MediaType.JSON.value} "
            f"(RFC 8460 §5.4), not {shown}",
        )
    if head.content_length is not None and head.content_length > limits.max_compressed_bytes:
        return Reply(413, too_large_reason(head.content_length, limits))
    return kind


def too_large_reason(size: int | None, limits: ReceivedLimits) -> str:
    told = f"{size} bytes" if size is not None else "more"
    return f"the report is {told}; this receiver takes at most {limits.max_compressed_bytes} bytes"


@dataclass(frozen=True, slots=True)
class Accepted:
    """A body that is a report for served policy domains, to be stored."""

    parsed: ParsedReport
    media_type: MediaType


def accept_body(
    kind: MediaType,
    body: bytes,
    allowed_domains: frozenset[str],
    limits: ReceivedLimits = DEFAULT_LIMITS,
) -> Accepted | Reply:
    """Inflate (bounded), parse and check the policy domains of a report body.

    `application/tlsrpt+gzip` must be gzip; `+json` is taken as is (a gzip body
    sent as `+json` is refused as not JSON). Every policy domain of the report
    must be in `allowed_domains` (normalised names), else 403 naming the others.
    """
    if not body:
        return Reply(400, "the request has no body; POST the report itself")
    if kind is MediaType.GZIP:
        if not body.startswith(b"\x1f\x8b"):
            return Reply(400, f"the body is not gzip, as {MediaType.GZIP.value} says")
        inflated = inflate_payload(body, limits)
        if isinstance(inflated, PayloadError):
            return Reply(413 if inflated.too_large else 400, inflated.reason)
        text = inflated
    else:
        if len(body) > limits.max_compressed_bytes:
            return Reply(413, too_large_reason(len(body), limits))
        if len(body) > limits.max_decompressed_bytes:  # the JSON text itself, as delivered
            return Reply(
                413,
                f"the report is {len(body)} bytes of JSON; this receiver reads at most "
                f"{limits.max_decompressed_bytes}",
            )
        text = body
    outcome = parse_report_json(text, limits)
    if isinstance(outcome, RejectedReport):
        return Reply(400, "not an RFC 8460 report: " + visible(outcome.summary, 600))
    foreign = sorted(
        {entry.policy.policy_domain for entry in outcome.report.policies} - allowed_domains
    )
    if foreign:
        named = ", ".join(visible(name, 80) for name in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        return Reply(
            403, f"this receiver takes reports only for its own domains, not {named}{more}"
        )
    return Accepted(outcome, kind)


def allowed_domains(names: Iterable[str]) -> frozenset[str]:
    """The allowlist as normalised policy domains (lower case, no trailing dot)."""
    return frozenset(normalise_domain(name) for name in names)


# ---------------------------------------------------------------- who is asking

IPV6_SOURCE_PREFIX: Final = (
    64  # one site's hosts share a /64 (RFC 4291 §2.5.4), and so do its limits
)


def source_key(address: str) -> str:
    """What the per-source limits count: an IPv4 address, or an IPv6 address's /64
    (an IPv4-mapped IPv6 address is its IPv4 address); text that is no address, as it is."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_SOURCE_PREFIX), strict=False))
    return str(parsed)


class SourceSlots:
    """Connections in flight per source key, at most `per_source` each (the table holds
    only the keys with a connection, so it is bounded by the connections themselves)."""

    def __init__(self, per_source: int) -> None:
        if per_source < 1:
            raise ValueError("per_source must be at least 1")
        self.per_source = per_source
        self._counts: dict[str, int] = {}

    def take(self, key: str) -> bool:
        """One slot for `key`, or False when it has `per_source` already."""
        count = self._counts.get(key, 0)
        if count >= self.per_source:
            return False
        self._counts[key] = count + 1
        return True

    def give_back(self, key: str) -> None:
        count = self._counts[key] - 1
        if count:
            self._counts[key] = count
        else:
            del self._counts[key]

    def held(self, key: str) -> int:
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        return len(self._counts)


def source_address(
    peer: str, headers: Sequence[tuple[bytes, bytes]], trusted_proxies: frozenset[str]
) -> str:
    """The address to rate-limit: the peer, or, when the peer is a trusted proxy, the
    last hop of `X-Forwarded-For` that the proxy appended (the only one it vouches for)."""
    if peer not in trusted_proxies:
        return peer
    forwarded = _header(headers, b"x-forwarded-for")
    if not forwarded:
        return peer
    last = forwarded[-1].split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer


class TokenBuckets:
    """A token bucket per source: `burst` requests at once, refilled at `rate` per second.

    At most `max_sources` buckets are kept; beyond that, the least recently used
    one is forgotten (its source starts again with a full bucket: a flood of
    spoofed-looking sources cannot grow the table, only reset some buckets).
    Times are the caller's monotonic seconds (`trio.current_time()`).
    """

    def __init__(self, rate: float, burst: int, max_sources: int = 10_000) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be > 0, burst and max_sources at least 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time

    def take(self, source: str, now: float) -> float:
        """0.0 and one token taken when `source` may go on; else the seconds until it may."""
        tokens, then = self._buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - then) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
