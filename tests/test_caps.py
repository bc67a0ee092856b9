"""Per-domain caps and per-address politeness, in the pure planner and against the lab.

A domain owner must not be able to aim the scanner at anyone: whatever a domain
publishes, the lab's per-address connection counters stay within the documented caps.
And a shared host that limits simultaneous connections (421, as Postfix's anvil
answers) must be retried, not written down as "not testable".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock

from scanner.core.caps import Caps, ConnectionBudget, cut_mx, cut_standby, plan_addresses
from scanner.core.result import DomainResult
from scanner.files import InputReader
from scanner.lab import Lab, open_lab, parse_world
from scanner.models import AddressStatus, MxRecord
from scanner.net.gate import DomainGate, Gate
from scanner.options import build_scanner, network_options
from scanner.output import dumps_line, result_line
from scanner.scan import Scanner

# ---------------------------------------------------------------- the planner (pure)


def test_mx_hosts_are_ordered_then_cut() -> None:
    records = [MxRecord(20, "b.example"), MxRecord(10, "z.example"), MxRecord(20, "a.example")]
    kept, over = cut_mx(records, Caps(max_mx_hosts=2))
    assert [r.host for r in kept] == ["z.example", "a.example"]
    (cut,) = over
    assert (cut.cap, cut.limit, cut.skipped, cut.examples) == (
        "--max-mx-hosts",
        2,
        1,
        ("b.example",),
    )


def test_under_the_cap_nothing_is_cut() -> None:
    kept, over = cut_mx([MxRecord(10, "a.example")], Caps(max_mx_hosts=1))
    assert (len(kept), over) == (1, [])


def test_addresses_are_cut_per_host_then_per_domain() -> None:
    hosts = [
        ("mx1.example", ["127.0.0.9", "127.0.0.1", "::1", "127.0.0.2"]),
        ("mx2.example", ["127.0.1.1", "127.0.1.2"]),
    ]
    plans, over = plan_addresses(hosts, Caps(max_addresses_per_host=3, max_addresses=4))
    assert plans == [["127.0.0.1", "127.0.0.2", "127.0.0.9"], ["127.0.1.1"]]
    assert [(o.cap, o.skipped) for o in over] == [
        ("--max-addresses-per-host", 1),
        ("--max-addresses", 1),
    ]
    assert over[0].examples == ("mx1.example ::1",)


def test_standby_hosts_are_cut_by_name() -> None:
    kept, over = cut_standby(["c.example", "a.example", "b.example"], Caps(max_standby_hosts=2))
    assert kept == ["a.example", "b.example"]
    assert over[0].examples == ("c.example",)


@given(
    hosts=st.lists(
        st.tuples(
            st.sampled_from(["a.example", "b.example", "c.example"]),
            st.lists(st.ip_addresses().map(str), max_size=12),
        ),
        max_size=6,
    ),
    per_host=st.integers(1, 5),
    per_domain=st.integers(0, 12),
)
def test_plans_never_exceed_the_caps_and_count_every_cut(
    hosts: list[tuple[str, list[str]]], per_host: int, per_domain: int
) -> None:
    caps = Caps(max_addresses_per_host=per_host, max_addresses=per_domain)
    plans, over = plan_addresses(hosts, caps)
    assert all(len(plan) <= per_host for plan in plans)
    assert sum(len(plan) for plan in plans) <= per_domain
    distinct = sum(len(set(addresses)) for _, addresses in hosts)
    assert sum(len(plan) for plan in plans) + sum(o.skipped for o in over) == distinct
    again, _ = plan_addresses([(h, list(reversed(a))) for h, a in hosts], caps)
    assert again == plans  # the order of the DNS answer does not matter


def test_the_budget_counts_attempts() -> None:
    gate = DomainGate(Gate(allow_private=True), ConnectionBudget(2))
    assert gate.admit("127.0.0.1") is None
    assert gate.admit("127.0.0.1") is None
    refusal = gate.admit("127.0.0.2")
    assert refusal is not None
    assert refusal.detail.startswith("--max-connections-per-domain 2")


# ---------------------------------------------------------------- the adaptive limit


def test_busy_halves_and_service_raises_the_limit() -> None:
    gate = Gate(allow_private=True, per_ip=8)
    assert gate.limit("127.0.0.1") == 8
    gate.busy("127.0.0.1")
    gate.busy("127.0.0.1")
    assert gate.limit("127.0.0.1") == 2
    gate.busy("127.0.0.1")
    gate.busy("127.0.0.1")
    assert gate.limit("127.0.0.1") == 1  # never below one
    for _ in range(20):
        gate.served("127.0.0.1")
    assert gate.limit("127.0.0.1") == 8  # never above --per-ip
    assert gate.was_busy("127.0.0.1")
    assert not gate.was_busy("127.0.0.2")


async def test_slots_follow_the_lowered_limit() -> None:
    gate = Gate(allow_private=True, per_ip=4)
    gate.busy("127.0.0.1")  # limit 2
    inside = peak = 0

    async def hold() -> None:
        nonlocal inside, peak
        async with gate.slot("127.0.0.1"):
            inside += 1
            peak = max(peak, inside)
            await trio.sleep(0.01)
            inside -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(hold)
    assert peak == 2


async def test_names_per_address_are_capped_for_the_whole_scan() -> None:
    gate = Gate(allow_private=True, max_names_per_address=2)
    assert await gate.admit_name("127.0.0.1", "a.example") is None
    assert await gate.admit_name("127.0.0.1", "b.example") is None
    assert await gate.admit_name("127.0.0.1", "a.example") is None  # a name seen before is fine
    refusal = await gate.admit_name("127.0.0.1", "c.example")
    assert refusal is not None
    assert "--max-probes-per-address 2" in refusal.detail
    assert await gate.admit_name("127.0.0.2", "c.example") is None


# ---------------------------------------------------------------- hostile domains in the lab


def _server(host: str, address: str, **keys: object) -> str:
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())
    return f'[[servers]]\nhostname = "{host}"\naddress = "{address}"\n{extra}\n'


def _policy(domain: str, address: str, mx: list[str]) -> str:
    """The policy host of `domain`; its dns table must hold the `_mta-sts` record."""
    body = (
        "version: STSv1\\nmode: testing\\n"
        + "".join(f"mx: {m}\\n" for m in mx)
        + "max_age: 86400\\n"
    )
    return f'[domains."{domain}".policy]\naddress = "{address}"\nbody = "{body}"\n'


STS_RECORD = '"_mta-sts" = { txt = ["v=STSv1; id=1"] }\n'


def hostile_world() -> str:
    """120 MX hosts; a host with 200 addresses; a policy naming 500 standby hosts."""
    parts = []
    many_mx = [f"mx{n:03d}.many-mx.example" for n in range(120)]
    for n, host in enumerate(many_mx):
        parts.append(_server(host, f"127.6.{n // 250}.{n % 250 + 1}"))
    parts.append(
        '[domains."many-mx.example".dns]\n"@" = { mx = ['
        + ", ".join(f'"10 {h}"' for h in many_mx)
        + "] }\n"
    )
    wide = [f"127.7.{n // 250}.{n % 250 + 1}" for n in range(200)]
    for address in wide:
        parts.append(_server("mx.wide.example", address))
    parts.append('[domains."wide.example".dns]\n"@" = { mx = ["10 mx.wide.example"] }\n')
    standby = [f"standby{n:03d}.standby.example" for n in range(500)]
    for n, host in enumerate(standby[:20]):  # the first names (in sorted order) have servers
        parts.append(_server(host, f"127.8.0.{n + 2}"))
    parts.append(_server("mx.standby.example", "127.8.0.1"))
    parts.append(
        '[domains."standby.example".dns]\n"@" = { mx = ["10 mx.standby.example"] }\n' + STS_RECORD
    )
    parts.append(_policy("standby.example", "127.8.1.1", ["mx.standby.example", *standby]))
    return "".join(parts)


@pytest.fixture(scope="module")
def hostile_text() -> str:
    return hostile_world()


@pytest.fixture
async def hostile_lab(hostile_text: str, tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(parse_world(hostile_text, source="hostile"), tmp_path / "lab") as lab:
        yield lab


def lab_scanner(lab: Lab, **options: object) -> Scanner:
    return build_scanner(
        network_options(
            resolver=[f"{lab.resolver[0]}:{lab.resolver[1]}"],
            ca_file=[lab.ca_file],
            allow_private=True,
            timeout=2.0,
            smtp_port=lab.smtp_port,
            https_port=lab.https_port,
            **options,  # type: ignore[arg-type]
        )
    )


# One JSON line stays within this, whatever a domain publishes (docs/output.md#caps).
LINE_BOUND = 2 * 1024 * 1024


def line_size(result: DomainResult, scanner: Scanner) -> int:
    return len(dumps_line(result_line(result, scanner.settings.report)).encode())


async def test_a_domain_with_120_mx_hosts_reaches_16(hostile_lab: Lab) -> None:
    scanner = lab_scanner(hostile_lab)
    result = await scanner.scan_domain("many-mx.example")
    assert result.verdict is not None
    assert result.facts is not None
    contacted = [n for n in range(120) if hostile_lab.smtp_connections(f"127.6.0.{n + 1}")]
    assert contacted == list(range(16))  # the first 16 by preference and name, once each
    assert all(hostile_lab.smtp_connections(f"127.6.0.{n + 1}") == 1 for n in contacted)
    (over,) = result.facts.over_limit
    assert (over.cap, over.skipped) == ("--max-mx-hosts", 104)
    assert not result.verdict.enforce_ready
    assert any(
        b.code == "over-limit"
        and b.cause == "--max-mx-hosts"
        and b.text.startswith("over-limit: 104 MX hosts beyond --max-mx-hosts 16")
        for b in result.verdict.blockers
    )
    assert any("raise --max-mx-hosts" in w.text for w in result.verdict.warnings)
    assert line_size(result, scanner) < LINE_BOUND


async def test_a_host_with_200_addresses_gets_8_connections(hostile_lab: Lab) -> None:
    scanner = lab_scanner(hostile_lab)
    result = await scanner.scan_domain("wide.example")
    assert result.verdict is not None
    assert result.facts is not None
    counts = [hostile_lab.smtp_connections(f"127.7.{n // 250}.{n % 250 + 1}") for n in range(200)]
    assert sum(counts) == 8
    assert counts[:8] == [1] * 8  # the 8 lowest addresses
    (host,) = result.verdict.mx
    assert len(host.addresses) == 8  # what lies beyond is counted, not listed
    assert [(o.cap, o.skipped) for o in result.facts.over_limit] == [
        ("--max-addresses-per-host", 192)
    ]
    assert not result.verdict.enforce_ready


async def test_a_policy_naming_500_standby_hosts_reaches_8(hostile_lab: Lab) -> None:
    scanner = lab_scanner(hostile_lab)
    result = await scanner.scan_domain("standby.example")
    assert result.verdict is not None
    assert result.facts is not None
    counts = [hostile_lab.smtp_connections(f"127.8.0.{n + 2}") for n in range(20)]
    assert counts == [1] * 8 + [0] * 12
    assert [(o.cap, o.skipped) for o in result.facts.over_limit] == [("--max-standby-hosts", 492)]
    # standby hosts never block: the domain is ready on its one real MX
    assert result.verdict.enforce_ready, result.verdict.blockers
    assert any(
        w.code == "over-limit" and "--max-standby-hosts 8" in w.text
        for w in result.verdict.warnings
    )
    assert line_size(result, scanner) < LINE_BOUND


async def test_lower_caps_are_obeyed_too(hostile_lab: Lab) -> None:
    scanner = lab_scanner(hostile_lab, max_mx_hosts=3, max_addresses=2)
    result = await scanner.scan_domain("many-mx.example")
    assert result.facts is not None
    assert sum(hostile_lab.smtp_connections(f"127.6.0.{n + 1}") for n in range(120)) == 2
    caps = {o.cap: o.skipped for o in result.facts.over_limit}
    assert caps == {"--max-mx-hosts": 117, "--max-addresses": 1}


# ---------------------------------------------------------------- many names on one address


def shared_world(domains: int, limit: int | None) -> str:
    keys = {"connection_limit": limit} if limit is not None else {}
    parts = []
    for n in range(domains):
        parts.append(_server(f"mx.d{n:03d}.example", "127.9.0.1", **keys))
        parts.append(
            f'[domains."d{n:03d}.example".dns]\n"@" = {{ mx = ["10 mx.d{n:03d}.example"] }}\n'
        )
    return "".join(parts)


async def scan_many(scanner: Scanner, domains: list[str]) -> list[DomainResult]:
    results: list[DomainResult] = []

    class Collect:
        def domain_done(self, result: DomainResult) -> None:
            results.append(result)

    async def items() -> AsyncIterator[str]:
        for domain in domains:
            yield domain

    await scanner.run(InputReader().stream(items()), lambda _: None, progress=Collect())
    return results


async def test_many_names_on_one_address_are_capped(tmp_path: Path) -> None:
    world = parse_world(shared_world(100, None), source="shared")
    async with open_lab(world, tmp_path / "lab") as lab:
        scanner = lab_scanner(lab, max_probes_per_address=20, concurrency=25)
        results = await scan_many(scanner, [d.name for d in world.domains])
    assert lab.smtp_connections("127.9.0.1") == 20
    addresses = [a for r in results if r.verdict for h in r.verdict.mx for a in h.addresses]
    tested = [a for a in addresses if a.status is AddressStatus.TESTED]
    capped = [a for a in addresses if a.interruption is not None]
    assert (len(tested), len(capped)) == (20, 80)
    assert all(
        "--max-probes-per-address 20" in (a.interruption.detail if a.interruption else "")
        for a in capped
    )


async def test_a_shared_host_with_a_connection_limit_is_retried_not_written_off(
    tmp_path: Path, loopback_clock: MockClock
) -> None:
    """Like Postfix with smtpd_client_connection_count_limit = 2, shared by 12 domains.

    On virtual time: the retries wait out the scanner's own backoff, which a loaded
    machine can neither stretch nor shrink against the lab's sessions.
    """
    world = parse_world(shared_world(12, 2), source="shared-limit")
    async with open_lab(world, tmp_path / "lab") as lab:
        scanner = lab_scanner(lab, per_ip=4, concurrency=12)
        results = await scan_many(scanner, [d.name for d in world.domains])
    addresses = [a for r in results if r.verdict for h in r.verdict.mx for a in h.addresses]
    assert len(addresses) == 12
    assert all(a.status is AddressStatus.TESTED for a in addresses), [
        a.interruption for a in addresses
    ]
    attempts = [a.probe.attempts for a in addresses if a.probe is not None]
    assert max(attempts) > 1  # some met the limit and were tried again
    retried = [a.probe for a in addresses if a.probe is not None and a.probe.attempts > 1]
    assert all(p.transcript[0].startswith("[attempt 1: busy:421 4.7.0") for p in retried)
    assert scanner.gate.busy_signals >= 1
