"""DANE end to end: the signed DANE world, a real validating resolver (unbound), the scanner.

The lab serves fixtures/world-dane.toml as a signed tree; unbound, started here on a
127.0.53.x port with the lab's trust anchor, validates in front of it; the scanner is
pointed at unbound. Every domain's DANE verdict must be the one the world expects, the
lines must validate against the schema, and the report must give each DANE host a
`tlsa` policy. Skipped (marker `dnssec`) when unbound is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from commands import line_validator
from rich.console import Console
from unbound_lab import NEEDS_UNBOUND, validated_dane_lab

from scanner.core.result import DomainResult
from scanner.lab import Lab, World
from scanner.lab.expectations import mismatches
from scanner.models import DaneStatus
from scanner.options import build_scanner, network_options
from scanner.output import result_line
from scanner.render import render_check
from scanner.scan import Scanner

pytestmark = NEEDS_UNBOUND


@dataclass(frozen=True)
class DaneLab:
    lab: Lab
    world: World
    resolver: tuple[str, int]

    def scanner(self) -> Scanner:
        options = network_options(
            resolver=[f"{self.resolver[0]}:{self.resolver[1]}"],
            smtp_port=self.lab.smtp_port,
            https_port=self.lab.https_port,
            ca_file=[self.lab.ca_file],
            allow_private=True,
            timeout=5.0,
            ehlo_name="scanner.lab.example",
        )
        return build_scanner(options)


@pytest.fixture
async def dane_lab(tmp_path: Path) -> AsyncIterator[DaneLab]:
    async with validated_dane_lab(tmp_path) as served:
        yield DaneLab(served.lab, served.world, served.unbound)


async def test_every_dane_domain_gets_its_expected_verdict(dane_lab: DaneLab) -> None:
    scanner = dane_lab.scanner()
    validator = line_validator()
    problems: dict[str, list[str]] = {}
    for domain in dane_lab.world.domains:
        assert domain.expect is not None
        result = await scanner.scan_domain(domain.name)
        found = mismatches(result, domain.expect)
        if found:
            problems[domain.name] = found
        validator.validate(result_line(result, scanner.settings.report))
    assert scanner.resolver.validating is True
    assert problems == {}


async def _scan(dane_lab: DaneLab, *domains: str) -> list[DomainResult]:
    scanner = dane_lab.scanner()
    return [await scanner.scan_domain(domain) for domain in domains]


async def test_tlsa_owner_carries_the_smtp_port_and_the_cname_target(dane_lab: DaneLab) -> None:
    (result,) = await _scan(dane_lab, "dane-cname.example")
    assert result.verdict is not None
    host = result.verdict.mx[0]
    assert host.dane is not None
    assert host.dane.facts.base_domain == "mail.provider.example"
    assert host.dane.facts.owner == f"_{dane_lab.lab.smtp_port}._tcp.mail.provider.example"


async def test_one_probe_serves_a_secure_and_an_insecure_customer(dane_lab: DaneLab) -> None:
    """The probe cache keeps the DANE match (not the DER): both customers see it."""
    signed, unsigned = await _scan(dane_lab, "customer-signed.example", "customer-unsigned.example")
    assert dane_lab.lab.smtp_connections("127.0.11.8") == 1
    for result, status in ((signed, DaneStatus.PASS), (unsigned, DaneStatus.INSECURE)):
        assert result.verdict is not None
        address = result.verdict.mx[0].addresses[0]
        assert address.dane is not None
        assert address.dane.status is status
    assert unsigned.verdict is not None
    assert "RFC 7672 §2.2.1" in unsigned.verdict.mx[0].addresses[0].dane.detail  # type: ignore[union-attr]


async def test_report_has_a_tlsa_policy_per_dane_host(dane_lab: DaneLab) -> None:
    scanner = dane_lab.scanner()
    stale = await scanner.scan_domain("dane-stale.example")
    bogus = await scanner.scan_domain("dane-bogus.example")
    unsigned = await scanner.scan_domain("dane-unsigned.example")
    report = result_line(stale, scanner.settings.report)["report"]
    assert isinstance(report, dict)
    sts, tlsa = report["policies"]
    assert sts["policy"]["policy-type"] == "no-policy-found"
    assert tlsa["policy"]["policy-type"] == "tlsa"
    assert tlsa["policy"]["mx-host"] == ["mx.dane-stale.example"]
    assert tlsa["policy"]["policy-string"][0].startswith("3 1 1 ")
    assert [d["result-type"] for d in tlsa["failure-details"]] == ["tlsa-invalid"]
    bogus_report = result_line(bogus, scanner.settings.report)["report"]
    assert isinstance(bogus_report, dict)
    assert [d["result-type"] for d in bogus_report["policies"][1]["failure-details"]] == [
        "dnssec-invalid"
    ]
    unsigned_report = result_line(unsigned, scanner.settings.report)["report"]
    assert isinstance(unsigned_report, dict)
    assert len(unsigned_report["policies"]) == 1  # insecure: not applied, no tlsa policy


async def test_check_shows_a_dane_section(dane_lab: DaneLab) -> None:
    (result,) = await _scan(dane_lab, "dane-stale.example")
    console = Console(width=200, record=True, color_system=None)
    render_check(console, result)
    text = console.export_text()
    assert "DANE (RFC 7672)" in text
    assert "mx.dane-stale.example" in text
    assert "127.0.11.3 fail: no TLSA record matches" in text
