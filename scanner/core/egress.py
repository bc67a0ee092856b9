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

Throttling shows as partial failure: `compare_rates` sets the domains' connect success
rate beside the canaries' when the run ended open with the domains' connects failing
markedly (`rates_low`); the host appears throttled only when the canaries fail in part
too ([Throttled port 25](output.md#throttled-port-25)).

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
# Throttling (docs/output.md#throttled-port-25): the domains' connect success rate is
# judged after this many port-25 attempts, and compared with the canaries' when under
# the rate; the canaries count as failing too under theirs.
DEFAULT_THROTTLE_ATTEMPTS = 40
DEFAULT_THROTTLE_RATE = 0.5
DEFAULT_CANARY_RATE = 0.9
CANARY_ROUNDS = 3  # each canary is connected to this many times for its rate

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
    rate: ConnectRate = field(default_factory=lambda: ConnectRate())  # attempts, not networks

    @property
    def empty(self) -> bool:
        return not self.connected and not self.failed and not self.other_port

    def plus(self, other: ConnectTally) -> ConnectTally:
        return ConnectTally(
            self.connected | other.connected,
            self.failed | other.failed,
            self.other_port + other.other_port,
            self.rate.plus(other.rate),
        )


@dataclass(frozen=True, slots=True)
class ConnectRate:
    """Port-25 connect attempts: how many completed a TCP handshake, how many did not."""

    connected: int = 0
    failed: int = 0

    @property
    def attempts(self) -> int:
        return self.connected + self.failed

    @property
    def share(self) -> float:
        """The share that connected (1.0 when nothing was tried: nothing failed)."""
        return self.connected / self.attempts if self.attempts else 1.0

    def plus(self, other: ConnectRate) -> ConnectRate:
        return ConnectRate(self.connected + other.connected, self.failed + other.failed)

    def words(self) -> str:
        return f"{self.connected} of {self.attempts} ({self.share:.0%})"


def tally(
    outcomes: Iterable[ProbeOutcome], *, other_port: int = 0, loopback: bool = False
) -> ConnectTally:
    """The tally of probe outcomes."""
    connected: set[str] = set()
    failed: set[str] = set()
    handshakes = failures = 0
    for outcome in outcomes:
        how = connect_of(outcome)
        if how is None:
            continue
        handshakes += how is Connect.CONNECTED
        # A loopback handshake counts (only a lab reaches loopback: the address guard
        # refuses it otherwise); a loopback failure says nothing of the egress.
        network = network_of(outcome.ip, loopback=loopback or how is Connect.CONNECTED)
        if network is None:
            continue
        if how is Connect.CONNECTED:
            connected.add(network)
        else:
            failed.add(network)
            failures += 1
    return ConnectTally(
        frozenset(connected), frozenset(failed), other_port, ConnectRate(handshakes, failures)
    )


def attempts(outcomes: Iterable[ProbeOutcome], *, loopback: bool = False) -> ConnectRate:
    """The connect attempts among `outcomes`, counted as `tally` counts them (no networks)."""
    connected = failed = 0
    for outcome in outcomes:
        how = connect_of(outcome)
        if how is Connect.CONNECTED:
            connected += 1
        elif how is Connect.NO_HANDSHAKE and network_of(outcome.ip, loopback=loopback):
            failed += 1
    return ConnectRate(connected, failed)


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


def attempts_of_facts(facts: DomainFacts, *, loopback: bool = False) -> ConnectRate:
    """One domain's port-25 connect attempts (`tally_of_facts` without the networks)."""
    return attempts((probe for host in facts.hosts for probe in host.probes), loopback=loopback)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When to ask the canaries (docs/output.md#blocked-port-25)."""

    networks: int = DEFAULT_BLOCK_NETWORKS  # distinct failing networks, none connected
    hold: int = DEFAULT_BLOCK_HOLD  # results held at most while undecided
    loopback: bool = False  # count loopback addresses (a lab of loopback /24s)
    throttle_attempts: int = DEFAULT_THROTTLE_ATTEMPTS  # before the rate is judged
    throttle_rate: float = DEFAULT_THROTTLE_RATE  # the domains' share under which to compare
    canary_rate: float = DEFAULT_CANARY_RATE  # the canaries' share under which they fail too


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
class RateComparison:
    """The domains' port-25 connect rate beside the canaries' (`compare_rates`)."""

    domains: ConnectRate
    canaries: ConnectRate
    throttled: bool


@dataclass(frozen=True, slots=True)
class Decision:
    egress: Egress
    tally: ConnectTally = field(default_factory=ConnectTally)
    evidence: ControlEvidence | None = None
    rates: RateComparison | None = None  # set when the rates were compared


def rates_low(domains: ConnectRate, thresholds: Thresholds) -> bool:
    """The domains' connects fail markedly: time to compare with the canaries."""
    return (
        domains.attempts >= thresholds.throttle_attempts
        and domains.share < thresholds.throttle_rate
    )


def canary_rate(rounds: Iterable[ControlEvidence]) -> ConnectRate:
    """The canaries' connect attempts over some rounds (a name that did not resolve is
    no attempt)."""
    connected = failed = 0
    for evidence in rounds:
        for canary in evidence.canaries:
            connected += canary.result is ProbeResult.CONNECTED
            failed += canary.result is ProbeResult.NO_HANDSHAKE
    return ConnectRate(connected, failed)


def compare_rates(
    domains: ConnectRate, canaries: ConnectRate, thresholds: Thresholds
) -> RateComparison:
    """Throttling shows as partial failure: the domains' rate beside the canaries'.

    When the domains' connects fail markedly (`rates_low`) while the canaries connect
    (at least `canary_rate` of their attempts), the domains are at fault: not
    throttled. When the canaries fail in part too, the scanning host appears
    throttled or rate-limited, and the domains are not to be blamed. With no canary
    attempt (none resolved), nothing is said.
    """
    throttled = (
        rates_low(domains, thresholds)
        and canaries.attempts > 0
        and canaries.share < thresholds.canary_rate
    )
    return RateComparison(domains, canaries, throttled)


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


def throttled_words(rates: RateComparison) -> str:
    """The summary's warning when the scanning host appears throttled."""
    return (
        "warning: outbound port 25 appears throttled or rate-limited from this host: "
        f"{rates.domains.words()} port-25 connects to the domains' MX completed a TCP "
        f"handshake, and {rates.canaries.words()} to the canaries; connect failures in "
        "this file may be the network's, not the domains' (a slower scan, lower "
        "--concurrency, or another host; docs/output.md#throttled-port-25)"
    )
