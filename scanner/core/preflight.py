"""`scanner doctor`: what the scanning host can see, judged from recorded facts.

Each function takes what the shell (`scanner/doctor.py`) observed and returns one
`Finding`: a stable check name, a verdict, and the words (what it means, what to
do). Pure: imports nothing of trio, sockets or the scanner's I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from scanner.core.dns_wire import EDNS_PAYLOAD, TransportProbe
from scanner.models import AddressStatus, InterruptionKind, ProbeOutcome

CLASSIC_UDP_LIMIT = 512  # octets: a DNS message over UDP without EDNS (RFC 1035 §4.2.1)
CLOCK_SKEW_LIMIT = 300.0  # seconds: above it, certificate dates are unreliable
BULK_CONCURRENCY = 50  # a scan this wide is a bulk scan: a stub resolver falls over
STUB_RESOLVERS = frozenset({"127.0.0.53", "127.0.0.54"})  # systemd-resolved's stubs

# Block lists whose names 554 greetings quote (the scanning address is listed).
_BLOCK_LISTS = re.compile(
    r"\b(spamhaus|spamcop|barracuda(?:central)?|sorbs|uceprotect|psbl|abuseat|cbl|"
    r"mailspike|surriel|invaluement|dnsbl|rbl|blocklist|blacklist|block list)\b",
    re.IGNORECASE,
)


class Verdict(StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"  # a bulk scan from here would blame domains for the host's network
    UNKNOWN = "unknown"


class Check(StrEnum):
    """The checks of `scanner doctor`, in the order they are shown."""

    PORT25 = "port25"
    STARTTLS = "starttls"
    BLOCK_LIST = "block-list"
    IPV6 = "ipv6"
    RESOLVER = "resolver"
    RESOLVER_TCP = "resolver-tcp"
    RESOLVER_EDNS = "resolver-edns"
    RESOLVER_LOAD = "resolver-load"
    CLOCK = "clock"
    EHLO_NAME = "ehlo-name"
    DESCRIPTORS = "descriptors"


@dataclass(frozen=True, slots=True)
class Finding:
    check: Check
    verdict: Verdict
    text: str


# ---------------------------------------------------------------- canaries


def port25_finding(outcomes: Sequence[ProbeOutcome], unresolved: Sequence[str]) -> Finding:
    """Did any canary complete a TCP handshake on port 25?"""
    connected = [o for o in outcomes if o.local_ip is not None]
    tried = ", ".join(f"{o.hostname} ({o.ip})" for o in outcomes) or "none"
    if connected:
        return Finding(
            Check.PORT25,
            Verdict.OK,
            f"outbound port 25 works: {len(connected)} of {len(outcomes)} canary "
            "addresses completed a TCP handshake",
        )
    if not outcomes:
        names = ", ".join(unresolved) or "none"
        return Finding(
            Check.PORT25, Verdict.UNKNOWN, f"no canary address to try (unresolved: {names})"
        )
    return Finding(
        Check.PORT25,
        Verdict.PROBLEM,
        f"outbound port 25 appears blocked: no canary completed a TCP handshake ({tried}); "
        "scan from a host whose provider allows outbound port 25",
    )


def _certificate_key(outcome: ProbeOutcome) -> str | None:
    tls = outcome.tls
    if tls is None or tls.leaf is None:
        return None
    return tls.leaf.sha256


def starttls_finding(outcomes: Sequence[ProbeOutcome]) -> Finding:
    """STARTTLS at the canaries: stripped, rewritten, or one certificate for all."""
    greeted = [o for o in outcomes if o.greeting is not None and o.interruption is None]
    greeted += [o for o in outcomes if o.status is AddressStatus.TESTED and o not in greeted]
    if not greeted:
        return Finding(Check.STARTTLS, Verdict.UNKNOWN, "no canary could be asked for STARTTLS")
    masked = [o for o in greeted if o.masked_keyword is not None]
    missing = [o for o in greeted if not o.starttls_advertised and o.masked_keyword is None]
    if masked or missing:
        seen = ", ".join(
            f"{o.hostname}: {'rewritten to ' + o.masked_keyword if o.masked_keyword else 'absent'}"
            for o in masked + missing
        )
        return Finding(
            Check.STARTTLS,
            Verdict.PROBLEM,
            f"STARTTLS is stripped or rewritten on the way ({seen}): a firewall or proxy "
            "intercepts SMTP here, and every domain would look downgraded",
        )
    keys = {_certificate_key(o) for o in greeted}
    names = {o.hostname for o in greeted}
    if len(greeted) > 1 and len(names) > 1 and len(keys) == 1 and None not in keys:
        return Finding(
            Check.STARTTLS,
            Verdict.PROBLEM,
            "every canary showed the same certificate: a TLS-intercepting proxy sits on the "
            "path, and every domain's certificate would look wrong",
        )
    return Finding(
        Check.STARTTLS,
        Verdict.OK,
        f"STARTTLS offered by {len(greeted)} canary addresses, each with its own certificate",
    )


def block_list_finding(outcomes: Sequence[ProbeOutcome]) -> Finding:
    """A 554 (or other 5xx) greeting at a canary: the scanning address is listed."""
    for outcome in outcomes:
        interruption = outcome.interruption
        if interruption is None or interruption.kind is not InterruptionKind.REJECTED:
            continue
        listed = _BLOCK_LISTS.search(interruption.detail)
        which = f" (the reply names {listed.group(1)})" if listed else ""
        return Finding(
            Check.BLOCK_LIST,
            Verdict.PROBLEM,
            f"{outcome.hostname} refused the session: {interruption.detail!r}{which}; the "
            "scanning address is likely on a block list, and servers would refuse it too",
        )
    return Finding(Check.BLOCK_LIST, Verdict.OK, "no canary refused the scanning address")


# ---------------------------------------------------------------- the host


def ipv6_finding(route: bool) -> Finding:
    if route:
        return Finding(Check.IPV6, Verdict.OK, "the routing table has an IPv6 route")
    return Finding(
        Check.IPV6,
        Verdict.WARNING,
        "no IPv6 route: IPv6 MX addresses will be not-testable "
        "(scanner-network:no-ipv6-route) and their readiness undetermined",
    )


def resolver_finding(
    nameservers: Sequence[str], validating: bool | None, concurrency: int
) -> Finding:
    """The resolver: a stub for a bulk scan, and whether its AD bit can be trusted."""
    stubs = [ip for ip in nameservers if ip in STUB_RESOLVERS]
    if stubs and concurrency >= BULK_CONCURRENCY:
        return Finding(
            Check.RESOLVER,
            Verdict.WARNING,
            f"the resolver is the system's stub ({', '.join(stubs)}), which falls over at a "
            f"few hundred queries a second: for --concurrency {concurrency} run a local "
            "recursive resolver (unbound) and name it with --resolver",
        )
    remote = [
        ip for ip in nameservers if not ipaddress.ip_address(ip.partition("%")[0]).is_loopback
    ]
    if validating and remote:
        return Finding(
            Check.RESOLVER,
            Verdict.WARNING,
            f"a validating resolver reached over the network ({', '.join(remote)}): its AD "
            "bit can be forged on the way; run the validator on this host for DANE",
        )
    word = "validates DNSSEC" if validating else "does not validate DNSSEC (DANE unvalidated)"
    return Finding(Check.RESOLVER, Verdict.OK, f"resolver {', '.join(nameservers)} {word}")


_RESOLVER_FIX = "run a local recursive resolver (unbound) and name it with --resolver"


def resolver_tcp_finding(probes: Sequence[TransportProbe]) -> Finding:
    """Does every nameserver answer over TCP (RFC 7766), where a truncated reply goes?

    A problem when a nameserver also truncated the test answer over UDP (or gave no UDP
    reply): answers of that size cannot be read from here at all.
    """
    if not probes:
        return Finding(Check.RESOLVER_TCP, Verdict.UNKNOWN, "no nameserver was asked")
    failed = [p for p in probes if p.tcp_detail is not None]
    if not failed:
        servers = ", ".join(p.server for p in probes)
        return Finding(
            Check.RESOLVER_TCP,
            Verdict.OK,
            f"resolver {servers} answers over TCP (where truncated answers are asked again)",
        )
    cut = [p.server for p in failed if p.udp is None or p.udp.truncated]
    seen = "; ".join(f"{p.server}: {p.tcp_detail}" for p in failed)
    text = (
        f"the resolver does not answer over TCP ({seen}): answers too large for UDP "
        "(truncated replies) will fail, and domains with large MX, TXT or TLSA answers "
        f"would look broken; allow TCP port 53 to it, or {_RESOLVER_FIX}"
    )
    if cut:
        text += f" (the test answer came truncated over UDP from {', '.join(cut)}: unreadable)"
    return Finding(Check.RESOLVER_TCP, Verdict.PROBLEM if cut else Verdict.WARNING, text)


def _edns_trouble(probe: TransportProbe) -> str | None:
    udp = probe.udp
    if udp is None:
        return (
            f"{probe.server} gave no UDP reply to a question with a large answer "
            f"({probe.udp_detail}): large datagrams or their fragments are lost on the way"
        )
    if udp.edns_payload is None:
        return (
            f"{probe.server} drops EDNS (no OPT record in its reply): answers over "
            f"{CLASSIC_UDP_LIMIT} bytes come truncated and go to TCP, and DNSSEC's DO bit is lost"
        )
    whole = probe.tcp_size
    if udp.truncated and (whole is None or whole <= EDNS_PAYLOAD):
        size = f"a {whole}-byte answer" if whole is not None else "the answer"
        return (
            f"{probe.server} truncated {size} over UDP although the scanner offers an EDNS "
            f"buffer of {EDNS_PAYLOAD} bytes (it advertises {udp.edns_payload}): every large "
            "answer costs a TCP round trip"
        )
    return None


def _whole_size(probe: TransportProbe) -> int:
    """The answer's size: the UDP reply's, or over TCP when UDP was rightly truncated."""
    assert probe.udp is not None
    return (probe.tcp_size or 0) if probe.udp.truncated else probe.udp.size


def resolver_edns_finding(probes: Sequence[TransportProbe]) -> Finding:
    """The EDNS buffer (RFC 6891 §6.2.5): do answers over 512 bytes arrive whole over UDP?"""
    if not probes:
        return Finding(Check.RESOLVER_EDNS, Verdict.UNKNOWN, "no nameserver was asked")
    troubles = [t for t in map(_edns_trouble, probes) if t is not None]
    if troubles:
        return Finding(
            Check.RESOLVER_EDNS,
            Verdict.WARNING,
            "; ".join(troubles) + f"; a bulk scan slows down and loses lookups: {_RESOLVER_FIX}",
        )
    # Here every probe has a UDP reply, whole, or truncated for an answer over the buffer.
    small = [(p.server, _whole_size(p)) for p in probes if _whole_size(p) <= CLASSIC_UDP_LIMIT]
    if small:
        server, size = small[0]
        return Finding(
            Check.RESOLVER_EDNS,
            Verdict.UNKNOWN,
            f"the test answer from {server} was only {size} bytes (not over "
            f"{CLASSIC_UDP_LIMIT}): the EDNS buffer was not exercised",
        )
    sizes = ", ".join(
        f"{p.server}: {_whole_size(p)} bytes"
        + (" (over the buffer: truncated, then over TCP)" if p.udp and p.udp.truncated else "")
        for p in probes
    )
    return Finding(
        Check.RESOLVER_EDNS,
        Verdict.OK,
        f"answers over {CLASSIC_UDP_LIMIT} bytes arrive whole over UDP with EDNS, up to the "
        f"scanner's {EDNS_PAYLOAD}-byte buffer ({sizes})",
    )


BURST_LOSS_LIMIT = 0.01  # share of lookups unanswered in the burst
BURST_LATENCY_LIMIT = 0.25  # seconds: the median answer time above which a bulk scan crawls


def burst_finding(latencies: Sequence[float | None]) -> Finding:
    """A short burst of distinct lookups: how many got no answer, how fast the rest came.

    `latencies` holds one entry per lookup: seconds to its answer, None for none
    (a timeout or a server failure).
    """
    if not latencies:
        return Finding(Check.RESOLVER_LOAD, Verdict.UNKNOWN, "no lookup was made")
    answered = sorted(t for t in latencies if t is not None)
    unanswered = len(latencies) - len(answered)
    lost = unanswered / len(latencies)
    median = answered[len(answered) // 2] if answered else None
    shown = f"{median * 1000:.0f} ms" if median is not None else "none"
    words = f"{len(latencies)} lookups at once: {lost:.0%} unanswered, median answer {shown}"
    if (
        unanswered > BURST_LOSS_LIMIT * len(latencies)
        or median is None
        or median > BURST_LATENCY_LIMIT
    ):
        return Finding(
            Check.RESOLVER_LOAD,
            Verdict.WARNING,
            f"{words}: the resolver struggles under load; lookups that fail would read as "
            "the domains' DNS failing (run a local recursive resolver, or lower --concurrency)",
        )
    return Finding(Check.RESOLVER_LOAD, Verdict.OK, words)


def clock_finding(
    local: datetime, remote: Sequence[tuple[str, datetime | None]], limit: float = CLOCK_SKEW_LIMIT
) -> Finding:
    """The local clock against HTTPS `Date` headers (RFC 9110 §6.6.1)."""
    dated = [(host, at) for host, at in remote if at is not None]
    if not dated:
        return Finding(Check.CLOCK, Verdict.UNKNOWN, "no clock host answered with a Date")
    skews = sorted((local - at).total_seconds() for _, at in dated)
    skew = skews[len(skews) // 2]  # the median: one wrong server does not decide
    if abs(skew) > limit:
        direction = "ahead of" if skew > 0 else "behind"
        return Finding(
            Check.CLOCK,
            Verdict.PROBLEM,
            f"the local clock is {abs(skew):.0f} s {direction} the HTTPS Date of "
            f"{len(dated)} hosts: certificate dates are unreliable; set the clock (NTP)",
        )
    return Finding(
        Check.CLOCK, Verdict.OK, f"the local clock is within {abs(skew):.0f} s of HTTPS Date"
    )


def ehlo_finding(
    name: str, forward: Sequence[str], source: str | None, reverse: Sequence[str] = ()
) -> Finding:
    """Forward-confirmed reverse DNS: the EHLO name resolves to the address the scanner
    connects from (`forward`), and that address's PTR names it (`reverse`)."""
    if name.startswith("[") or name.endswith(".invalid"):
        return Finding(
            Check.EHLO_NAME,
            Verdict.WARNING,
            f"EHLO name {name} does not resolve: servers checking it refuse the scanner; "
            "set --ehlo-name to a name whose A/AAAA is this host",
        )
    if not forward:
        return Finding(
            Check.EHLO_NAME,
            Verdict.WARNING,
            f"EHLO name {name} has no address: servers checking it refuse the scanner",
        )
    if source is None:
        return Finding(
            Check.EHLO_NAME,
            Verdict.UNKNOWN,
            f"EHLO name {name} resolves to {', '.join(forward)}; the address the scanner "
            "connects from is unknown (no canary answered)",
        )
    if source not in forward:
        return Finding(
            Check.EHLO_NAME,
            Verdict.WARNING,
            f"EHLO name {name} resolves to {', '.join(forward)}, not to the address the "
            f"scanner connects from ({source}): not forward-confirmed",
        )
    if name.lower() not in {n.lower() for n in reverse}:
        seen = ", ".join(reverse) or "no PTR record"
        return Finding(
            Check.EHLO_NAME,
            Verdict.WARNING,
            f"the reverse DNS of {source} ({seen}) does not name {name}: servers that want "
            "forward-confirmed reverse DNS refuse the scanner; set the PTR to the EHLO name",
        )
    return Finding(
        Check.EHLO_NAME,
        Verdict.OK,
        f"EHLO name {name} is forward-confirmed reverse DNS of {source}",
    )


def descriptor_finding(soft_limit: int, concurrency: int, per_domain: int, spare: int) -> Finding:
    needed = concurrency * per_domain + spare
    if needed > soft_limit:
        return Finding(
            Check.DESCRIPTORS,
            Verdict.WARNING,
            f"--concurrency {concurrency} may need {needed} open files, the limit is "
            f"{soft_limit}: raise it (ulimit -n) or lower --concurrency",
        )
    return Finding(
        Check.DESCRIPTORS,
        Verdict.OK,
        f"open-file limit {soft_limit} covers --concurrency {concurrency} (about {needed})",
    )
