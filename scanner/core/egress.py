"""Does the network the scan runs on block outbound TCP port 25? Decided from recorded outcomes.

Theory of operation
-------------------
Most cloud machines and home or office networks drop outbound port 25. Seen from
the scanner, every MX then times out at connect, and without this module every
domain would be written "not ready". The decision is made from facts only:

* the **connect tally**: each port-25 connection attempt of the scan, by the network
  of its address (a /24 for IPv4, a /48 for IPv6), as either *connected* (the TCP
  handshake completed, whatever came after: a slow or missing greeting is a tarpit
  or postscreen, not a block) or *no handshake* (timeout, refusal, reset, unreachable
  during connect). Anything else (the address guard, `--exclude`, a missing IPv6
  route) is not counted. A failure at a loopback address is not counted either: no
  network lies between the scanner and it, so it says nothing about the egress (a
  handshake there counts: only a lab, with `--allow-private`, reaches loopback).
* the **canaries**: SMTP hosts known to accept port 25 (by default the MX hosts of
  a few large providers, `--canary HOST[:PORT]` to name others), connected to once
  when the tally calls for it;
* the **control**: TCP to another port (the policy hosts' HTTPS, or the controls'
  port 443) works.

`decide` says `OPEN` as soon as any port-25 handshake completed (a domain's MX or
a canary): throttling shows as partial failure, never as none. It says `BLOCKED`
only when no port-25 handshake completed at all, the failures span at least
`networks` distinct networks (or the input ended), the canaries failed too or could
not be reached, and another port worked. Dead hosts with working canaries are
`OPEN`; a network that reaches nothing at all is not "port 25 blocked" (`OPEN`: the
scan's lines say what happened).

Pure: imports nothing of trio, sockets or the scanner's I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from scanner.core.codes import PolicyCode
from scanner.models import AddressStatus, DomainFacts, InterruptionKind, Phase, ProbeOutcome

# Default thresholds (docs/output.md#blocked-port-25).
DEFAULT_BLOCK_NETWORKS = 4  # distinct /24 or /48 networks, all failing at connect
DEFAULT_BLOCK_HOLD = 2000  # lines held at most before the canaries are asked anyway

# The MX hosts of large providers, which accept port 25 from anywhere.
DEFAULT_CANARIES: tuple[tuple[str, int], ...] = (
    ("gmail-smtp-in.l.google.com", 25),
    ("outlook-com.olc.protection.outlook.com", 25),
    ("mta5.am0.yahoodns.net", 25),
    ("mx01.mail.icloud.com", 25),
)
# Hosts whose HTTPS port is the control: TCP to another port than 25 works.
DEFAULT_CONTROLS: tuple[tuple[str, int], ...] = (
    ("www.google.com", 443),
    ("www.microsoft.com", 443),
    ("www.yahoo.com", 443),
)


class Connect(StrEnum):
    """How one port-25 connection attempt went, as far as the network is concerned."""

    CONNECTED = "connected"  # the TCP handshake completed
    NO_HANDSHAKE = "no-handshake"  # timeout, refusal, reset or unreachable at connect


class Egress(StrEnum):
    """The decision: pending, open, or blocked."""

    PENDING = "pending"
    OPEN = "open"
    BLOCKED = "blocked"


# Connect-phase failures: no TCP handshake.
_NO_HANDSHAKE_KINDS = frozenset(
    {InterruptionKind.TIMEOUT, InterruptionKind.CONNECT_REFUSED, InterruptionKind.CONNECT_FAILED}
)


def connect_of(outcome: ProbeOutcome) -> Connect | None:
    """`CONNECTED`, `NO_HANDSHAKE`, or None when the attempt says nothing about egress."""
    if outcome.local_ip is not None or outcome.status is AddressStatus.TESTED:
        return Connect.CONNECTED
    interruption = outcome.interruption
    if interruption is None:
        return None
    if interruption.phase is Phase.CONNECT and interruption.kind in _NO_HANDSHAKE_KINDS:
        return Connect.NO_HANDSHAKE
    if interruption.phase is not None and interruption.phase is not Phase.CONNECT:
        return Connect.CONNECTED  # it got past connect: the handshake completed
    return None


def network_of(ip: str, *, loopback: bool = False) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) of `ip`; None for no address, and for loopback
    unless `loopback` (a lab whose "networks" are loopback /24s)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.is_loopback and not loopback:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@dataclass(frozen=True, slots=True)
class ConnectTally:
    """Port-25 connect outcomes by network: what a result (or a worker's summary) carries.

    `connected` and `failed` are the networks where a handshake completed, and where
    an attempt did not; `other_port` counts TCP connections to other ports that
    completed (the policy fetch's).
    """

    connected: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()
    other_port: int = 0

    @property
    def empty(self) -> bool:
        return not self.connected and not self.failed and not self.other_port

    def plus(self, other: ConnectTally) -> ConnectTally:
        return ConnectTally(
            self.connected | other.connected,
            self.failed | other.failed,
            self.other_port + other.other_port,
        )


def tally(
    outcomes: Iterable[ProbeOutcome], *, other_port: int = 0, loopback: bool = False
) -> ConnectTally:
    """The tally of probe outcomes."""
    connected: set[str] = set()
    failed: set[str] = set()
    for outcome in outcomes:
        how = connect_of(outcome)
        if how is None:
            continue
        # A loopback handshake counts (only a lab reaches loopback: the address guard
        # refuses it otherwise); a loopback failure says nothing of the egress.
        network = network_of(outcome.ip, loopback=loopback or how is Connect.CONNECTED)
        if network is None:
            continue
        (connected if how is Connect.CONNECTED else failed).add(network)
    return ConnectTally(frozenset(connected), frozenset(failed), other_port)


# A policy fetch that failed with one of these may not have completed a TCP handshake.
_FETCH_BEFORE_HANDSHAKE = frozenset(
    {PolicyCode.NOT_CONTACTED, PolicyCode.DNS, PolicyCode.CONNECT, PolicyCode.HTTP_TIMEOUT}
)


def tally_of_facts(facts: DomainFacts, *, loopback: bool = False) -> ConnectTally:
    """One domain's tally: its probes, and its policy fetch as the other port."""
    fetch = facts.policy_fetch
    other_port = 0
    if fetch is not None and fetch.ip is not None and network_of(fetch.ip, loopback=loopback):
        failure = fetch.failure
        if failure is None or failure.code not in _FETCH_BEFORE_HANDSHAKE:
            other_port = 1
    outcomes = (probe for host in facts.hosts for probe in host.probes)
    return tally(outcomes, other_port=other_port, loopback=loopback)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When to ask the canaries (docs/output.md#blocked-port-25)."""

    networks: int = DEFAULT_BLOCK_NETWORKS  # distinct failing networks, none connected
    hold: int = DEFAULT_BLOCK_HOLD  # results held at most while undecided
    loopback: bool = False  # count loopback addresses (a lab of loopback /24s)


@dataclass(frozen=True, slots=True)
class EgressSettings:
    """The blocked-port-25 check of a run: thresholds, canaries (port 25), controls."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    canaries: tuple[tuple[str, int], ...] = DEFAULT_CANARIES
    controls: tuple[tuple[str, int], ...] = DEFAULT_CONTROLS
    enabled: bool = True


class ProbeResult(StrEnum):
    """One canary or control target."""

    CONNECTED = "connected"
    NO_HANDSHAKE = "no-handshake"
    UNRESOLVED = "unresolved"  # its name did not resolve


@dataclass(frozen=True, slots=True)
class TargetResult:
    host: str
    port: int
    result: ProbeResult
    detail: str = ""  # the errno name or "timeout"


@dataclass(frozen=True, slots=True)
class ControlEvidence:
    """What the canaries (port 25) and the controls (another port) showed."""

    canaries: tuple[TargetResult, ...] = ()
    controls: tuple[TargetResult, ...] = ()

    @property
    def canary_connected(self) -> bool:
        return any(c.result is ProbeResult.CONNECTED for c in self.canaries)

    @property
    def control_connected(self) -> bool:
        return any(c.result is ProbeResult.CONNECTED for c in self.controls)


def ask_canaries(state: ConnectTally, thresholds: Thresholds, *, held: int, ended: bool) -> bool:
    """Time to ask the canaries: no port-25 handshake yet, and enough failures (or the end)."""
    if state.connected or not state.failed:
        return False
    return ended or len(state.failed) >= thresholds.networks or held >= thresholds.hold


@dataclass(frozen=True, slots=True)
class Decision:
    egress: Egress
    tally: ConnectTally = field(default_factory=ConnectTally)
    evidence: ControlEvidence | None = None


def decide(
    state: ConnectTally, evidence: ControlEvidence | None, thresholds: Thresholds, *, ended: bool
) -> Decision:
    """The decision from the tally so far and, once asked, the canaries and controls."""
    if state.connected:
        return Decision(Egress.OPEN, state, evidence)
    if evidence is None:
        if not state.failed and ended:
            return Decision(Egress.OPEN, state)  # nothing tried port 25: nothing to say
        return Decision(Egress.PENDING, state)  # the canaries are still to be asked
    if evidence.canary_connected:
        return Decision(Egress.OPEN, state, evidence)  # dead hosts, working port 25
    other_port_works = state.other_port > 0 or evidence.control_connected
    if state.failed and other_port_works:
        return Decision(Egress.BLOCKED, state, evidence)
    return Decision(Egress.OPEN, state, evidence)


def _target(result: TargetResult) -> str:
    what = {
        ProbeResult.CONNECTED: "connected",
        ProbeResult.NO_HANDSHAKE: f"no TCP handshake ({result.detail or 'failed'})",
        ProbeResult.UNRESOLVED: "its name did not resolve",
    }[result.result]
    return f"{result.host} port {result.port}: {what}"


def blocked_words(decision: Decision) -> list[str]:
    """The plain message of a blocked port 25: what it means, what was tried, what to do."""
    state = decision.tally
    evidence = decision.evidence or ControlEvidence()
    lines = [
        "The network this scan runs on appears to block outbound TCP port 25 (SMTP): "
        "from here every MX host looks unreachable, whatever the domain does.",
        f"Tried: port 25 at MX addresses in {len(state.failed)} distinct networks "
        f"({', '.join(sorted(state.failed)[:5])}{', ...' if len(state.failed) > 5 else ''}): "
        "no TCP handshake completed.",
    ]
    lines += [f"Canary: {_target(c)}" for c in evidence.canaries]
    if state.other_port:
        lines.append(
            f"Other ports work: {state.other_port} HTTPS connections of the scan completed."
        )
    lines += [f"Control: {_target(c)}" for c in evidence.controls]
    lines.append(
        "What to do: run the scan from a host whose provider allows outbound port 25 "
        "(many cloud providers open it on request), or through a network that does; "
        "`scanner doctor` checks a host before a bulk scan. If only these canaries are "
        "unreachable from here, name others with --canary HOST[:PORT]."
    )
    return lines
