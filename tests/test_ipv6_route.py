"""No IPv6 route from the scanning host: v6 addresses are `scanner-network`, never the domain's fault.

The route is the local routing table's word (`connect.has_route`, or ENETUNREACH at
connect), never a timeout. In the lab the table is injected (`ScanSettings.ipv6_route`)
so that `::1`, which always has a route, stands for an unroutable IPv6 MX address;
tests/test_port25_netns.py asks a namespace's real table.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from scanner.core.assess import assess_domain
from scanner.core.codes import ProblemCode
from scanner.core.reasons import reason_code, reason_text
from scanner.lab import Lab, open_lab, parse_world
from scanner.models import AddressStatus, InterruptionKind, ProbeOutcome
from scanner.net.connect import has_route
from scanner.net.probe import connect_failure, no_ipv6_route
from scanner.research.lines import scan_line
from scanner.research.taxonomy import not_testable, not_testable_from_here
from tests.builders import domain_facts, host
from tests.test_scan_pipeline import make_scanner, scan_all

WORLD = """
[domains."dual.example"]
dns."@" = { mx = ["10 mx.dual.example"] }
servers = [
    { hostname = "mx.dual.example", address = "127.0.50.1" },
    { hostname = "mx.dual.example", address = "::1" },
]
dns."_mta-sts" = { txt = ["v=STSv1; id=1"] }
dns."_smtp._tls" = { txt = ["v=TLSRPTv1; rua=mailto:tlsrpt@dual.example"] }
policy.address = "127.0.51.1"
policy.body = "version: STSv1\\nmode: testing\\nmx: mx.dual.example\\nmax_age: 604800\\n"
expect = { enforce_ready = true }

[domains."v6only.example"]
dns."@" = { mx = ["10 mx.v6only.example"] }
dns."mx" = { aaaa = ["::1"] }
expect = { enforce_ready = false }
"""


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(parse_world(WORLD), workdir=tmp_path / "lab") as served:
        yield served


def _addresses(line: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["ip"]: a for host in line["mx"] for a in host["addresses"]}


def _codes(problems: list[dict[str, Any]]) -> list[str]:
    return [p["code"] for p in problems]


async def test_without_an_ipv6_route_v6_addresses_are_the_scanning_hosts_not_the_domains(
    lab: Lab,
) -> None:
    scanner = make_scanner(lab, ipv6_route=lambda ip: False)
    lines = {
        line["domain"]: line for line in await scan_all(scanner, ["dual.example", "v6only.example"])
    }
    dual = lines["dual.example"]
    v6 = _addresses(dual)["::1"]
    assert v6["status"] == "not-testable"
    assert v6["reason_code"] == "scanner-network:no-ipv6-route"
    assert _addresses(dual)["127.0.50.1"]["status"] == "tested"
    assert dual["enforce_ready"] is True  # not blamed: a warning says it is undetermined
    warning = next(w for w in dual["warnings"] if w["code"] == "not-testable-from-here")
    assert warning["address"] == "::1"
    assert warning["cause"] == "scanner-network:no-ipv6-route"
    assert "readiness is undetermined for this address" in warning["text"]
    assert lab.smtp_connections("::1") == 0  # never contacted

    only = lines["v6only.example"]
    assert _codes(only["blockers"]).count("readiness-undetermined") == 1
    assert "not-testable" not in _codes(only["blockers"])

    # stats counts them apart from the domains' not-testable addresses.
    read = scan_line(dual, 3)
    assert [o.kind for o in not_testable_from_here(read)] == ["scanner-network:no-ipv6-route"]
    assert list(not_testable(read)) == []


async def test_with_a_route_the_same_v6_address_is_tested(lab: Lab) -> None:
    scanner = make_scanner(lab, ipv6_route=lambda ip: True)
    lines = await scan_all(scanner, ["dual.example"])
    assert _addresses(lines[0])["::1"]["status"] == "tested"
    assert "not-testable-from-here" not in _codes(lines[0]["warnings"])


@pytest.mark.parametrize(
    ("ip", "kind", "code"),
    [
        ("2001:db8::25", InterruptionKind.SCANNER_NETWORK, "scanner-network:no-ipv6-route"),
        ("192.0.2.25", InterruptionKind.CONNECT_FAILED, "connect-failed:ENETUNREACH"),
    ],
    ids=["ipv6", "ipv4"],
)
def test_enetunreach_at_connect_is_the_scanning_hosts_network_for_ipv6(
    ip: str, kind: InterruptionKind, code: str
) -> None:
    failure = connect_failure(OSError(errno.ENETUNREACH, "Network is unreachable"), ip)
    assert failure.kind is kind
    assert reason_code(failure) == code
    if kind is InterruptionKind.SCANNER_NETWORK:
        assert reason_text(failure) == "scanner-network: no-ipv6-route"


def test_loopback_always_has_a_route() -> None:
    assert has_route("127.0.0.1")
    assert has_route("::1")


def test_a_verdict_of_only_unroutable_addresses_could_not_scan() -> None:
    outcome = ProbeOutcome(
        "mx.example", "2001:db8::25", AddressStatus.NOT_TESTABLE, interruption=no_ipv6_route()
    )
    verdict = assess_domain(domain_facts(host("mx.example", outcome)))
    assert verdict.could_not_scan
    assert not verdict.enforce_ready
    codes = [b.code for b in verdict.blockers]
    assert ProblemCode.READINESS_UNDETERMINED in codes
    assert ProblemCode.NOT_TESTABLE not in codes
