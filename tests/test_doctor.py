"""`scanner doctor` in the lab: each condition where it holds, and where it does not.

The canaries are lab SMTP servers (good, STARTTLS rewritten to XXXXXXXA, a 554
greeting quoting a block list, nothing listening), the clock host is a lab policy
host whose `Date` comes from a clock the test sets, the EHLO name resolves in the
lab DNS. The routing table and the open-file limit are injected.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from trio.testing import MockClock

from scanner.core.dns_wire import ReplyShape, TransportProbe
from scanner.core.preflight import (
    Check,
    Verdict,
    burst_finding,
    resolver_edns_finding,
    resolver_finding,
    resolver_tcp_finding,
)
from scanner.doctor import DoctorSettings, examine, findings_json
from scanner.lab import Lab, open_lab, parse_world
from scanner.lab.dns_server import DnsConduct
from scanner.net.resolver import Nameserver, Resolver
from scanner.net.tls import TlsClient
from scanner.net.trust import TrustStore
from scanner.research.metadata import record_doctor

WORLD = """
[[servers]]
hostnames = ["canary1.example"]
address = "127.0.60.1"

[[servers]]
hostnames = ["canary2.example"]
address = "127.0.60.2"

[[servers]]
hostnames = ["masked.example"]
address = "127.0.61.1"
behaviour = "starttls-masked"

[[servers]]
hostnames = ["listed.example"]
address = "127.0.62.1"
behaviour = "greeting-554"
greeting = "5.7.1 Service unavailable; client host [203.0.113.9] blocked using zen.spamhaus.org"

[[servers]]
hostnames = ["dead.example"]
address = "127.0.63.1"
behaviour = "closed"

[dns]
"alias.example" = { a = ["127.0.60.1"] }
"scanner-good.example" = { a = ["127.0.0.1"] }
"scanner-elsewhere.example" = { a = ["127.0.0.9"] }
"scanner-no-ptr.example" = { a = ["127.0.0.1"] }
"1.0.0.127.in-addr.arpa" = { ptr = ["scanner-good.example"] }
"large.example" = { txt = ["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"] }

[domains."clock.example"]
dns."@" = { mx = ["10 canary1.example"] }
dns."_mta-sts" = { txt = ["v=STSv1; id=1"] }
policy.address = "127.0.64.1"
policy.body = "version: STSv1\\nmode: testing\\nmx: canary1.example\\nmax_age: 86400\\n"
expect = { enforce_ready = false }
"""

OFFSET = [timedelta(0)]  # the lab's HTTPS clock, ahead of the real time by this much


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    world = parse_world(WORLD)
    clock = lambda: datetime.now(UTC) + OFFSET[0]  # noqa: E731
    async with open_lab(world, workdir=tmp_path / "lab", http_clock=clock) as served:
        OFFSET[0] = timedelta(0)
        yield served


def _settings(lab: Lab, *canaries: str, **changes: object) -> DoctorSettings:
    values: dict[str, object] = {
        "canaries": tuple((name, lab.smtp_port) for name in canaries),
        "clock_hosts": (("mta-sts.clock.example", lab.https_port),),
        "nameservers": ("127.0.0.1",),
        "ehlo_name": "scanner-good.example",
        "concurrency": 100,
        "timeout": 1.0,
        "ipv6_route": lambda ip: True,
        "descriptor_limit": lambda: 1 << 20,
        "burst_zone": "clock.example",
        "large_answer": ("large.example", "TXT"),
    }
    values.update(changes)
    return DoctorSettings(**values)  # type: ignore[arg-type]


async def _verdicts(lab: Lab, settings: DoctorSettings) -> dict[Check, tuple[Verdict, str]]:
    host, port = lab.resolver
    resolver = Resolver.create([Nameserver(host, port)], timeout=1.0)
    tls = TlsClient.create(TrustStore.from_files([lab.ca_file]))
    return {f.check: (f.verdict, f.text) for f in await examine(resolver, tls, settings)}


async def test_a_fit_host_passes_every_check(lab: Lab) -> None:
    found = await _verdicts(lab, _settings(lab, "canary1.example", "canary2.example"))
    assert {check: verdict for check, (verdict, _) in found.items()} == {
        Check.PORT25: Verdict.OK,
        Check.STARTTLS: Verdict.OK,
        Check.BLOCK_LIST: Verdict.OK,
        Check.IPV6: Verdict.OK,
        Check.RESOLVER: Verdict.OK,
        Check.RESOLVER_TCP: Verdict.OK,
        Check.RESOLVER_EDNS: Verdict.OK,
        Check.RESOLVER_LOAD: Verdict.OK,
        Check.CLOCK: Verdict.OK,
        Check.EHLO_NAME: Verdict.OK,
        Check.DESCRIPTORS: Verdict.OK,
    }


async def test_a_blocked_port_25_is_a_problem(lab: Lab) -> None:
    found = await _verdicts(lab, _settings(lab, "dead.example"))
    verdict, text = found[Check.PORT25]
    assert verdict is Verdict.PROBLEM
    assert "appears blocked" in text


async def test_starttls_rewritten_on_the_way_is_a_problem(lab: Lab) -> None:
    verdict, text = (await _verdicts(lab, _settings(lab, "masked.example")))[Check.STARTTLS]
    assert verdict is Verdict.PROBLEM
    assert "rewritten to XXXXXXXA" in text


async def test_one_certificate_for_every_canary_is_a_problem(lab: Lab) -> None:
    """Two canary names on one server show one certificate, as behind an intercepting proxy."""
    settings = _settings(lab, "canary1.example", "alias.example")
    verdict, text = (await _verdicts(lab, settings))[Check.STARTTLS]
    assert verdict is Verdict.PROBLEM
    assert "same certificate" in text


async def test_a_554_quoting_a_block_list_names_it(lab: Lab) -> None:
    found = await _verdicts(lab, _settings(lab, "listed.example", "canary1.example"))
    verdict, text = found[Check.BLOCK_LIST]
    assert verdict is Verdict.PROBLEM
    assert "the reply names spamhaus" in text
    assert found[Check.PORT25][0] is Verdict.OK


async def test_a_clock_ten_minutes_off_is_a_problem(lab: Lab) -> None:
    OFFSET[0] = timedelta(minutes=10)
    verdict, text = (await _verdicts(lab, _settings(lab, "canary1.example")))[Check.CLOCK]
    assert verdict is Verdict.PROBLEM
    assert "behind the HTTPS Date" in text
    OFFSET[0] = timedelta(minutes=4)
    assert (await _verdicts(lab, _settings(lab, "canary1.example")))[Check.CLOCK][0] is Verdict.OK


async def test_host_conditions(lab: Lab) -> None:
    settings = _settings(
        lab,
        "canary1.example",
        ehlo_name="scanner-elsewhere.example",
        ipv6_route=lambda ip: False,
        descriptor_limit=lambda: 256,
    )
    found = await _verdicts(lab, settings)
    assert found[Check.EHLO_NAME][0] is Verdict.WARNING
    assert "not forward-confirmed" in found[Check.EHLO_NAME][1]
    assert found[Check.IPV6][0] is Verdict.WARNING
    no_ptr = await _verdicts(
        lab, _settings(lab, "canary1.example", ehlo_name="scanner-no-ptr.example")
    )
    verdict, text = no_ptr[Check.EHLO_NAME]
    assert verdict is Verdict.WARNING
    assert "the reverse DNS of 127.0.0.1 (scanner-good.example) does not name" in text
    assert "scanner-network:no-ipv6-route" in found[Check.IPV6][1]
    assert found[Check.DESCRIPTORS][0] is Verdict.WARNING


async def test_a_slow_resolver_under_a_burst_is_a_warning(
    tmp_path: Path, loopback_clock: MockClock
) -> None:
    """The lab's DNS answers 300 ms late: a bulk scan's lookups would crawl."""
    async with open_lab(parse_world(WORLD), workdir=tmp_path / "slow", latency=0.3) as slow:
        settings = _settings(slow, "canary1.example", burst_size=20)
        verdict, text = (await _verdicts(slow, settings))[Check.RESOLVER_LOAD]
    assert verdict is Verdict.WARNING
    assert "20 lookups at once: 0% unanswered" in text


async def test_the_resolvers_transports_in_a_good_lab(lab: Lab) -> None:
    found = await _verdicts(lab, _settings(lab, "canary1.example"))
    assert "answers over TCP" in found[Check.RESOLVER_TCP][1]
    verdict, text = found[Check.RESOLVER_EDNS]
    assert verdict is Verdict.OK
    assert "arrive whole over UDP with EDNS" in text


@pytest.mark.parametrize(
    ("conduct", "tcp", "edns", "says"),
    [
        (DnsConduct(tcp=False), Verdict.WARNING, Verdict.OK, "does not answer over TCP"),
        (DnsConduct(edns=False), Verdict.OK, Verdict.WARNING, "drops EDNS"),
        (DnsConduct(udp_payload=512), Verdict.OK, Verdict.WARNING, "truncated a 9"),
        (DnsConduct(tcp=False, edns=False), Verdict.PROBLEM, Verdict.WARNING, "unreadable"),
    ],
    ids=["no-tcp", "no-edns", "small-buffer", "no-edns-no-tcp"],
)
async def test_a_poor_resolver_is_reported(
    tmp_path: Path, conduct: DnsConduct, tcp: Verdict, edns: Verdict, says: str
) -> None:
    """The lab's DNS server refuses TCP, ignores EDNS, or truncates above 512 bytes."""
    async with open_lab(parse_world(WORLD), workdir=tmp_path / "lab", dns_conduct=conduct) as poor:
        found = await _verdicts(poor, _settings(poor, "canary1.example", burst_size=5))
    assert (found[Check.RESOLVER_TCP][0], found[Check.RESOLVER_EDNS][0]) == (tcp, edns)
    assert says in found[Check.RESOLVER_TCP][1] + found[Check.RESOLVER_EDNS][1]
    assert found[Check.RESOLVER][0] is Verdict.OK  # small answers still come


_GOOD = ReplyShape(1100, truncated=False, edns_payload=1232)


@pytest.mark.parametrize(
    ("probes", "tcp", "edns"),
    [
        ([], Verdict.UNKNOWN, Verdict.UNKNOWN),
        ([TransportProbe("192.0.2.53:53", _GOOD)], Verdict.OK, Verdict.OK),
        (
            [TransportProbe("192.0.2.53:53", ReplyShape(300, False, 1232))],
            Verdict.OK,
            Verdict.UNKNOWN,
        ),
        (
            [TransportProbe("192.0.2.53:53", None, "no UDP reply within 5 s")],
            Verdict.OK,
            Verdict.WARNING,
        ),
        (
            [TransportProbe("192.0.2.53:53", _GOOD, tcp_detail="TCP failed (ECONNREFUSED)")],
            Verdict.WARNING,
            Verdict.OK,
        ),
        (
            [
                TransportProbe("192.0.2.53:53", _GOOD),
                TransportProbe("192.0.2.54:53", ReplyShape(40, True, 512), tcp_detail="closed"),
            ],
            Verdict.PROBLEM,
            Verdict.WARNING,
        ),
        (
            [TransportProbe("192.0.2.53:53", ReplyShape(60, True, 1232), tcp_size=1500)],
            Verdict.OK,
            Verdict.OK,
        ),
        (
            [TransportProbe("192.0.2.53:53", ReplyShape(60, True, 512), tcp_size=900)],
            Verdict.OK,
            Verdict.WARNING,
        ),
    ],
    ids=[
        "none",
        "good",
        "small-answer",
        "udp-lost",
        "no-tcp",
        "one-of-two-unreadable",
        "over-the-buffer",
        "needlessly-truncated",
    ],
)
def test_transport_findings(probes: list[TransportProbe], tcp: Verdict, edns: Verdict) -> None:
    assert resolver_tcp_finding(probes).verdict is tcp
    assert resolver_edns_finding(probes).verdict is edns


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        ([0.01] * 99 + [None], Verdict.OK),
        ([0.01] * 97 + [None] * 3, Verdict.WARNING),
        ([None] * 5, Verdict.WARNING),
        ([0.3] * 10, Verdict.WARNING),
    ],
    ids=["one-lost", "three-lost", "all-lost", "slow"],
)
def test_burst_findings(latencies: list[float | None], expected: Verdict) -> None:
    assert burst_finding(latencies).verdict is expected


@pytest.mark.parametrize(
    ("nameservers", "validating", "concurrency", "expected"),
    [
        (("127.0.0.53",), False, 100, Verdict.WARNING),
        (("127.0.0.53",), False, 5, Verdict.OK),
        (("127.0.0.1",), True, 100, Verdict.OK),
        (("192.0.2.53",), True, 100, Verdict.WARNING),
        (("192.0.2.53",), False, 100, Verdict.OK),
    ],
    ids=["stub-bulk", "stub-small", "local-validator", "remote-validator", "remote-plain"],
)
def test_resolver_findings(
    nameservers: tuple[str, ...], validating: bool, concurrency: int, expected: Verdict
) -> None:
    assert resolver_finding(nameservers, validating, concurrency).verdict is expected


def test_findings_go_into_the_sidecars_vantage_object(tmp_path: Path) -> None:
    results = tmp_path / "scan.jsonl"
    sidecar = tmp_path / "scan.jsonl.meta.json"
    assert record_doctor(results, []) is not None  # no sidecar: said, not created
    sidecar.write_text(json.dumps({"vantage": {"name": None}}), encoding="utf-8")
    finding = {"check": "port25", "verdict": "ok", "text": "fine"}
    assert record_doctor(results, [finding]) is None
    written = json.loads(sidecar.read_text(encoding="utf-8"))
    assert written["vantage"]["doctor"]["findings"] == [finding]
    assert findings_json([]) == []
