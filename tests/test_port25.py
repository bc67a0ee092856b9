"""A blocked outbound port 25: the decision on recorded outcomes, and the scan that stops on it.

The decision (`scanner.core.egress`) is tested on recorded probe outcomes; the run's
watch (`scanner.port25`) in-process against the lab, whose "networks" are loopback
/24s when `Thresholds(loopback=True)` counts them: MX hosts that refuse port 25 in
several /24s, a canary that refuses or accepts, a policy host whose HTTPS works.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.core.egress import (
    CANARY_ROUNDS,
    ConnectRate,
    ConnectTally,
    ControlEvidence,
    Decision,
    Egress,
    EgressSettings,
    ProbeResult,
    TargetResult,
    Thresholds,
    ask_canaries,
    blocked_words,
    canary_rate,
    compare_rates,
    connect_of,
    decide,
    network_of,
    tally,
    throttled_words,
)
from scanner.files import InputReader
from scanner.lab import Lab, open_lab, parse_world
from scanner.models import AddressStatus, Interruption, InterruptionKind, Phase, ProbeOutcome
from scanner.port25 import Port25Watch
from scanner.run import scan_one
from scanner.scan import Scanner
from tests.test_scan_pipeline import make_scanner

# ---------------------------------------------------------------- recorded outcomes


def _failed(ip: str, kind: InterruptionKind = InterruptionKind.TIMEOUT) -> ProbeOutcome:
    errno = "ECONNRESET" if kind is InterruptionKind.CONNECT_FAILED else None
    return ProbeOutcome(
        "mx.example",
        ip,
        AddressStatus.NOT_TESTABLE,
        interruption=Interruption(kind, Phase.CONNECT, errno=errno),
    )


def _greeting_timeout(ip: str) -> ProbeOutcome:
    """A tarpit: the handshake completed, the greeting never came."""
    return ProbeOutcome(
        "mx.example",
        ip,
        AddressStatus.NOT_TESTABLE,
        interruption=Interruption(InterruptionKind.TIMEOUT, Phase.GREETING),
        local_ip="192.0.2.2",
    )


def _tested(ip: str) -> ProbeOutcome:
    return ProbeOutcome("mx.example", ip, AddressStatus.TESTED, local_ip="192.0.2.2")


BLOCKED_CANARIES = ControlEvidence(
    canaries=(TargetResult("canary.example", 25, ProbeResult.NO_HANDSHAKE, "timeout"),),
    controls=(TargetResult("web.example", 443, ProbeResult.CONNECTED),),
)
FIVE_NETWORKS = [f"198.51.{n}.7" for n in range(5)]


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (_failed("198.51.100.1"), "no-handshake"),
        (_failed("198.51.100.1", InterruptionKind.CONNECT_REFUSED), "no-handshake"),
        (_failed("198.51.100.1", InterruptionKind.CONNECT_FAILED), "no-handshake"),
        (_greeting_timeout("198.51.100.1"), "connected"),
        (_tested("198.51.100.1"), "connected"),
        (
            ProbeOutcome(
                "mx.example",
                "198.51.100.1",
                AddressStatus.NOT_TESTABLE,
                interruption=Interruption(InterruptionKind.ADDRESS_NOT_ALLOWED),
            ),
            None,
        ),
    ],
    ids=["timeout", "refused", "reset", "tarpit", "tested", "guard"],
)
def test_only_connect_phase_failures_count_as_no_handshake(
    outcome: ProbeOutcome, expected: str | None
) -> None:
    how = connect_of(outcome)
    assert (how.value if how is not None else None) == expected


def test_networks_are_slash_24_and_slash_48_and_loopback_failures_do_not_count() -> None:
    assert network_of("198.51.100.77") == "198.51.100.0/24"
    assert network_of("2001:db8:1:2::25") == "2001:db8:1::/48"
    assert network_of("127.0.3.1") is None
    assert network_of("127.0.3.1", loopback=True) == "127.0.3.0/24"
    counted = tally([_failed("127.0.3.1"), _failed("198.51.100.1")])
    assert counted.failed == {"198.51.100.0/24"}
    # A handshake on loopback counts: only a lab reaches it.
    assert tally([_tested("127.0.3.1")]).connected == {"127.0.3.0/24"}


def test_failures_across_enough_networks_with_failing_canaries_are_a_block() -> None:
    state = tally([_failed(ip) for ip in FIVE_NETWORKS])
    thresholds = Thresholds(networks=5)
    assert ask_canaries(state, thresholds, held=5, ended=False)
    assert decide(state, None, thresholds, ended=False).egress is Egress.PENDING
    decision = decide(state, BLOCKED_CANARIES, thresholds, ended=False)
    assert decision.egress is Egress.BLOCKED
    words = "\n".join(blocked_words(decision))
    assert "appears to block outbound TCP port 25" in words
    assert "canary.example port 25: no TCP handshake (timeout)" in words
    assert "What to do" in words


def test_four_networks_of_five_do_not_yet_ask_the_canaries() -> None:
    state = tally([_failed(ip) for ip in FIVE_NETWORKS[:4]])
    assert not ask_canaries(state, Thresholds(networks=5), held=4, ended=False)
    assert ask_canaries(state, Thresholds(networks=5), held=4, ended=True)
    assert ask_canaries(state, Thresholds(networks=5, hold=4), held=4, ended=False)


def test_dead_hosts_with_a_working_canary_are_no_block() -> None:
    state = tally([_failed(ip) for ip in FIVE_NETWORKS])
    working = dataclasses.replace(
        BLOCKED_CANARIES,
        canaries=(
            *BLOCKED_CANARIES.canaries,
            TargetResult("other.example", 25, ProbeResult.CONNECTED),
        ),
    )
    assert decide(state, working, Thresholds(), ended=True).egress is Egress.OPEN


def test_a_network_that_reaches_nothing_is_no_port_25_block() -> None:
    state = tally([_failed(ip) for ip in FIVE_NETWORKS])
    nothing = dataclasses.replace(
        BLOCKED_CANARIES,
        controls=(TargetResult("web.example", 443, ProbeResult.NO_HANDSHAKE, "timeout"),),
    )
    assert decide(state, nothing, Thresholds(), ended=True).egress is Egress.OPEN
    # The scan's own HTTPS connections are the other port too.
    with_https = tally([_failed(ip) for ip in FIVE_NETWORKS], other_port=1)
    assert decide(with_https, nothing, Thresholds(), ended=True).egress is Egress.BLOCKED


def test_tarpits_everywhere_are_no_block() -> None:
    state = tally([_greeting_timeout(ip) for ip in FIVE_NETWORKS])
    assert not ask_canaries(state, Thresholds(), held=5, ended=True)
    assert decide(state, BLOCKED_CANARIES, Thresholds(), ended=True).egress is Egress.OPEN


_ips = st.builds(
    lambda a, b: f"198.{a}.{b}.9", st.integers(0, 255), st.integers(0, 255)
) | st.builds(lambda a: f"2001:db8:{a:x}::25", st.integers(0, 0xFFFF))
_outcomes = st.lists(
    st.one_of(
        _ips.map(_failed),
        _ips.map(lambda ip: _failed(ip, InterruptionKind.CONNECT_REFUSED)),
        _ips.map(_greeting_timeout),
        _ips.map(_tested),
    ),
    max_size=30,
)


@given(_outcomes, st.booleans(), st.integers(1, 8))
def test_one_handshake_anywhere_means_open(
    outcomes: list[ProbeOutcome], ended: bool, networks: int
) -> None:
    """Throttling shows as partial failure: a single completed handshake is never a block."""
    state = tally(outcomes)
    thresholds = Thresholds(networks=networks)
    decision = decide(state, BLOCKED_CANARIES, thresholds, ended=ended)
    if state.connected:
        assert decision.egress is Egress.OPEN
        assert not ask_canaries(state, thresholds, held=len(outcomes), ended=ended)
    else:
        assert decision.egress is (Egress.BLOCKED if state.failed else Egress.OPEN)


@given(st.lists(st.lists(_ips.map(_failed), max_size=6), max_size=6))
def test_tallies_add_up_in_any_order(domains: list[list[ProbeOutcome]]) -> None:
    """Workers send one tally per domain: the parent's sum is the tally of all outcomes."""
    total = ConnectTally()
    for outcomes in reversed(domains):
        total = total.plus(tally(outcomes))
    assert total == tally([o for outcomes in domains for o in outcomes])


# ---------------------------------------------------------------- the scan, in the lab

_DEAD = 5


def _world() -> str:
    """Five domains whose MX refuse port 25, each in its own /24; one has a policy host;
    a canary that refuses and one that accepts."""
    parts = [
        '[[servers]]\nhostnames = ["canary-dead.example"]\naddress = "127.0.40.1"\n'
        'behaviour = "closed"\n',
        '[[servers]]\nhostnames = ["canary-good.example"]\naddress = "127.0.41.1"\n',
    ]
    for n in range(_DEAD):
        parts.append(
            f'[domains."dead{n}.example"]\n'
            f'dns."@" = {{ mx = ["10 mx.dead{n}.example"] }}\n'
            f'servers = [{{ hostname = "mx.dead{n}.example", address = "127.0.{30 + n}.1", '
            'behaviour = "closed" }]\n'
            "expect = { enforce_ready = false }\n"
        )
    parts.append(
        'dns."_mta-sts" = { txt = ["v=STSv1; id=1"] }\n'
        'policy.address = "127.0.39.1"\n'
        'policy.body = "version: STSv1\\nmode: testing\\nmx: mx.dead4.example\\nmax_age: 86400\\n"\n'
    )
    return "\n".join(parts)


@pytest.fixture
async def dead_lab(tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(parse_world(_world()), workdir=tmp_path / "lab") as lab:
        yield lab


def _scanner(lab: Lab, canary: str, *, loopback: bool = True, control: bool = True) -> Scanner:
    """Canary `canary`; the control is the policy host's HTTPS port."""
    egress = EgressSettings(
        thresholds=Thresholds(networks=4, loopback=loopback),
        canaries=((canary, lab.smtp_port),),
        controls=(("127.0.39.1", lab.https_port),) if control else (),
    )
    return make_scanner(lab, egress=egress)


async def _run(scanner: Scanner, count: int = _DEAD) -> list[dict[str, object]]:
    written: list[dict[str, object]] = []

    async def source() -> AsyncIterator[str]:
        for n in range(count):
            yield f"dead{n}.example"

    await scanner.run(InputReader().stream(source()), lambda text: written.append(json.loads(text)))
    return written


async def test_a_blocked_port_25_stops_the_scan_and_writes_no_line(dead_lab: Lab) -> None:
    scanner = _scanner(dead_lab, "127.0.40.1")
    assert await _run(scanner) == []
    assert scanner.egress.egress is Egress.BLOCKED
    assert len(scanner.egress.tally.failed) >= 4
    assert scanner.egress.evidence is not None
    assert scanner.egress.evidence.control_connected
    assert dead_lab.smtp_connections("127.0.41.1") == 0


async def test_without_another_port_that_works_it_is_no_block(dead_lab: Lab) -> None:
    """Canary and MX hosts fail, nothing shows the network works: written, not blamed on port 25."""
    scanner = _scanner(dead_lab, "127.0.40.1", control=False)
    lines = await _run(scanner, count=_DEAD - 1)  # not the domain with a policy host
    assert len(lines) == _DEAD - 1
    assert scanner.egress.egress is Egress.OPEN
    assert scanner.egress.evidence is not None  # asked, and the canary failed too
    assert not scanner.egress.evidence.canary_connected


async def test_dead_hosts_with_a_working_canary_are_written(dead_lab: Lab) -> None:
    scanner = _scanner(dead_lab, "127.0.41.1")
    lines = await _run(scanner)
    assert sorted(str(line["domain"]) for line in lines) == [
        f"dead{n}.example" for n in range(_DEAD)
    ]
    assert all(line["enforce_ready"] is False for line in lines)
    assert scanner.egress.egress is Egress.OPEN
    assert dead_lab.smtp_connections("127.0.41.1") == 1  # the canary was asked, once


async def test_a_lab_never_asks_the_canaries(dead_lab: Lab) -> None:
    """Without counting loopback failures (the default), dead lab hosts decide nothing."""
    scanner = _scanner(dead_lab, "127.0.41.1", loopback=False)
    assert len(await _run(scanner)) == _DEAD
    assert scanner.egress.egress is Egress.OPEN
    assert dead_lab.smtp_connections("127.0.41.1") == 0


@pytest.mark.parametrize(
    ("canary", "expected"), [("127.0.40.1", Egress.BLOCKED), ("127.0.41.1", Egress.OPEN)]
)
async def test_check_asks_the_canaries_when_its_one_domain_fails_at_connect(
    dead_lab: Lab, canary: str, expected: Egress
) -> None:
    scanner = _scanner(dead_lab, canary)
    result = await scan_one(scanner, "dead0.example")
    assert result is not None
    assert scanner.egress.egress is expected


# ---------------------------------------------------------------- the watch on recorded tallies


async def _no_canaries() -> ControlEvidence:
    raise AssertionError("the canaries were asked")


async def test_results_without_port_25_attempts_are_held_no_longer_than_the_hold() -> None:
    """Domains with no MX say nothing of port 25: held, then written at the bound."""
    written: list[int] = []
    watch = Port25Watch(Thresholds(hold=3), _no_canaries, written.append, lambda _: None)
    for n in range(2):
        await watch.add(n, ConnectTally())
    assert written == []
    await watch.add(2, ConnectTally())
    assert written == [0, 1, 2]
    await watch.add(3, tally([_failed(ip) for ip in FIVE_NETWORKS]))
    assert written == [0, 1, 2, 3]  # decided: failures later are the domains' own


async def test_one_handshake_releases_every_held_result_in_order() -> None:
    written: list[int] = []
    watch = Port25Watch(Thresholds(networks=9), _no_canaries, written.append, lambda _: None)
    await watch.add(0, tally([_failed(FIVE_NETWORKS[0])]))
    await watch.add(1, tally([_failed(FIVE_NETWORKS[1])]))
    assert written == []
    await watch.add(2, tally([_greeting_timeout(FIVE_NETWORKS[2])]))
    assert written == [0, 1, 2]
    assert (await watch.finish()).egress is Egress.OPEN


# ---------------------------------------------------------------- throttling: rates compared


def _canaries(*results: ProbeResult) -> ControlEvidence:
    return ControlEvidence(
        canaries=tuple(TargetResult(f"canary{n}.example", 25, r) for n, r in enumerate(results))
    )


OK, NO, UNRESOLVED = ProbeResult.CONNECTED, ProbeResult.NO_HANDSHAKE, ProbeResult.UNRESOLVED


@pytest.mark.parametrize(
    ("domains", "rounds", "throttled"),
    [
        (ConnectRate(10, 90), [_canaries(OK, OK, OK, OK)] * 3, False),  # dead hosts
        (ConnectRate(10, 90), [_canaries(OK, NO, OK, NO)] * 3, True),  # both fail in part
        (ConnectRate(10, 90), [_canaries(NO, NO, NO, NO)] * 3, True),
        (ConnectRate(10, 90), [_canaries(OK, OK, OK, NO)] + [_canaries(OK, OK, OK, OK)] * 2, False),
        (ConnectRate(90, 10), [_canaries(OK, NO, OK, NO)] * 3, False),  # the domains connect
        (ConnectRate(3, 30), [_canaries(OK, NO, OK, NO)] * 3, False),  # too few attempts
        (ConnectRate(10, 90), [_canaries(UNRESOLVED)] * 3, False),  # nothing to compare with
    ],
    ids=[
        "dead-hosts",
        "throttled",
        "canaries-all-failing",
        "one-canary-miss",
        "domains-fine",
        "few-attempts",
        "no-canary",
    ],
)
def test_rates_compared(
    domains: ConnectRate, rounds: list[ControlEvidence], throttled: bool
) -> None:
    assert compare_rates(domains, canary_rate(rounds), Thresholds()).throttled is throttled


_rates = st.builds(ConnectRate, st.integers(0, 500), st.integers(0, 500))


@given(_rates, _rates, st.integers(1, 100), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_throttled_only_when_both_fail_in_part(
    domains: ConnectRate, canaries: ConnectRate, least: int, rate: float, canary: float
) -> None:
    """Never the domains' fault alone, never declared on a handful of attempts, and more
    canary failures never make it less throttled."""
    thresholds = Thresholds(throttle_attempts=least, throttle_rate=rate, canary_rate=canary)
    verdict = compare_rates(domains, canaries, thresholds).throttled
    if verdict:
        assert domains.attempts >= least
        assert domains.share < rate
        assert canaries.attempts
        assert canaries.share < canary
    if canaries.failed == 0:
        assert not verdict  # working canaries: the domains are at fault
    worse = ConnectRate(canaries.connected, canaries.failed + 1)
    assert compare_rates(domains, worse, thresholds).throttled >= verdict


def _domain(n: int, *, connected: bool) -> ConnectTally:
    ip = f"198.51.{n % 250}.{n // 250 + 1}"
    return tally([_tested(ip) if connected else _failed(ip)])


async def _finished_watch(
    evidence: ControlEvidence, connected: int, failed: int
) -> tuple[Decision, int]:
    asked: list[int] = []

    async def consult() -> ControlEvidence:
        asked.append(1)
        return evidence

    watch: Port25Watch[int] = Port25Watch(Thresholds(), consult, lambda _: None, lambda _: None)
    for n in range(connected + failed):
        await watch.add(n, _domain(n, connected=n < connected))
    decision = await watch.finish()
    return decision, len(asked)


async def test_a_throttled_host_is_said_after_the_run() -> None:
    """Most domains fail at connect after the first handshakes; so do half the canaries."""
    decision, asked = await _finished_watch(_canaries(OK, NO), connected=10, failed=50)
    assert decision.egress is Egress.OPEN
    rates = decision.rates
    assert rates is not None
    assert rates.throttled
    assert asked == CANARY_ROUNDS
    assert (rates.domains, rates.canaries) == (ConnectRate(10, 50), ConnectRate(3, 3))
    assert "10 of 60 (17%)" in throttled_words(rates)
    assert "3 of 6 (50%) to the canaries" in throttled_words(rates)


async def test_dead_hosts_with_working_canaries_are_the_domains_fault() -> None:
    decision, _ = await _finished_watch(_canaries(OK, OK), connected=10, failed=50)
    assert decision.rates is not None
    assert not decision.rates.throttled


async def test_a_scan_whose_connects_mostly_work_asks_nothing_more() -> None:
    decision, asked = await _finished_watch(_canaries(NO, NO), connected=50, failed=10)
    assert decision.rates is None
    assert asked == 0
