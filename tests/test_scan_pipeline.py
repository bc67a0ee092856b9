"""The scan pipeline in-process against the lab: isolation of failures, exclusions, the address guard."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from commands import line_validator
from trio.testing import MockClock

from scanner.core.addresses import parse_exclusions
from scanner.core.inputs import InvalidInput
from scanner.core.result import DomainResult
from scanner.files import InputReader, UnknownSchemaVersion, completed_domains
from scanner.lab import Lab
from scanner.net.policy_fetch import FetchSettings
from scanner.net.probe import ProbeSettings
from scanner.net.resolver import Nameserver, Resolver
from scanner.net.tls import TlsClient
from scanner.net.trust import TrustStore
from scanner.scan import Scanner, ScanSettings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def make_scanner(lab: Lab, *, cls: type[Scanner] = Scanner, **overrides: Any) -> Scanner:
    host, port = lab.resolver
    allow_private = overrides.pop("allow_private", True)
    settings = ScanSettings(
        concurrency=8,
        allow_private=allow_private,
        probe=ProbeSettings(smtp_port=lab.smtp_port, step_timeout=0.5, total_timeout=4),
        fetch=FetchSettings(https_port=lab.https_port, timeout=0.5),
    )
    settings = dataclasses.replace(settings, **overrides)
    return cls(
        resolver=Resolver.create([Nameserver(host, port)], timeout=1.0),
        tls=TlsClient.create(TrustStore.from_files([lab.ca_file])),
        settings=settings,
    )


async def scan_all(scanner: Scanner, lines: list[str]) -> list[dict[str, Any]]:
    import json

    written: list[dict[str, Any]] = []

    async def source() -> AsyncIterator[str]:
        for line in lines:
            yield line

    await scanner.run(InputReader().stream(source()), lambda text: written.append(json.loads(text)))
    return written


class ExplodingScanner(Scanner):
    async def _scan_domain(self, domain: str, started: Any) -> DomainResult:
        if domain == "hosted1.example":
            raise RuntimeError("boom in one domain")
        return await super()._scan_domain(domain, started)


async def test_an_exception_in_one_domain_becomes_its_error_line(
    loopback_clock: MockClock, bulk_lab: Lab
) -> None:

    lines = await scan_all(
        make_scanner(bulk_lab, cls=ExplodingScanner),
        ["hosted0.example", "hosted1.example", "hosted2.example"],
    )
    by_domain = {line["domain"]: line for line in lines}
    assert set(by_domain) == {"hosted0.example", "hosted1.example", "hosted2.example"}
    error = by_domain["hosted1.example"]["error"]
    assert error.startswith("internal-error: RuntimeError: boom in one domain")
    assert "_scan_domain" in error  # the traceback is summarised
    assert by_domain["hosted0.example"]["error"] is None
    assert by_domain["hosted2.example"]["error"] is None
    validator = line_validator()
    for line in lines:
        validator.validate(line)


class HangingScanner(Scanner):
    async def _scan_domain(self, domain: str, started: Any) -> DomainResult:
        if domain == "hosted1.example":
            await trio.sleep_forever()
        return await super()._scan_domain(domain, started)


async def test_a_hanging_domain_times_out_without_stalling_the_others(
    loopback_clock: MockClock, bulk_lab: Lab
) -> None:
    scanner = make_scanner(bulk_lab, cls=HangingScanner, domain_timeout=1.0)
    lines = await scan_all(scanner, ["hosted0.example", "hosted1.example", "hosted2.example"])
    by_domain = {line["domain"]: line for line in lines}
    assert by_domain["hosted1.example"]["error"].startswith("timeout:")
    assert by_domain["hosted0.example"]["error"] is None


async def test_excluded_domains_and_addresses_are_never_contacted(
    loopback_clock: MockClock, bulk_lab: Lab
) -> None:
    exclusions = parse_exclusions(["# never", "hosted0.example", "127.0.3.2/32"])
    lines = await scan_all(
        make_scanner(bulk_lab, exclusions=exclusions), ["hosted0.example", "hosted1.example"]
    )
    by_domain = {line["domain"]: line for line in lines}
    assert by_domain["hosted0.example"]["error"].startswith("excluded")
    addresses = {a["ip"]: a for mx in by_domain["hosted1.example"]["mx"] for a in mx["addresses"]}
    assert addresses["127.0.3.2"]["status"] == "not-testable"
    assert addresses["127.0.3.2"]["reason"] == "excluded"
    assert addresses["127.0.3.1"]["status"] == "tested"
    assert bulk_lab.smtp_connections("127.0.3.2") == 0


async def test_private_targets_are_refused_without_allow_private(
    loopback_clock: MockClock, bulk_lab: Lab
) -> None:
    lines = await scan_all(make_scanner(bulk_lab, allow_private=False), ["hosted0.example"])
    addresses = [a for mx in lines[0]["mx"] for a in mx["addresses"]]
    assert [a["reason"] for a in addresses] == ["address-not-allowed", "address-not-allowed"]
    assert bulk_lab.smtp_connections("127.0.3.1") == 0
    assert lines[0]["enforce_ready"] is False


async def test_invalid_input_never_reaches_the_network(
    loopback_clock: MockClock, bulk_lab: Lab
) -> None:
    scanner = make_scanner(bulk_lab)
    lines = await scan_all(scanner, ["bad..name", "# comment", ""])
    assert len(lines) == 1
    assert lines[0]["error"].startswith("invalid-domain")
    assert scanner.resolver.lookups == 0


def test_input_reader_reports_invalid_lines_as_values() -> None:
    assert isinstance(InputReader().accept("bad..name"), InvalidInput)


async def test_exclusions_cover_policy_hosts_too(loopback_clock: MockClock, demo_lab: Lab) -> None:
    policy_ip = "127.0.2.1"  # mta-sts.testing-ready.example in the demo world
    exclusions = parse_exclusions([f"{policy_ip}/32"])
    lines = await scan_all(make_scanner(demo_lab, exclusions=exclusions), ["testing-ready.example"])
    error = lines[0]["mta_sts"]["error"]
    assert error["result_type"] == "sts-policy-fetch-error"
    assert "--exclude" in error["detail"]
    assert demo_lab.https_connections(policy_ip) == 0
    assert lines[0]["enforce_ready"] is False


async def test_policy_fetch_reaches_an_allowed_policy_host(
    loopback_clock: MockClock, demo_lab: Lab
) -> None:
    lines = await scan_all(make_scanner(demo_lab), ["testing-ready.example"])
    assert lines[0]["mta_sts"]["error"] is None
    assert demo_lab.https_connections("127.0.2.1") == 1
    assert lines[0]["enforce_ready"] is True


async def test_excluded_mx_and_policy_host_names_are_never_contacted(
    loopback_clock: MockClock, demo_lab: Lab
) -> None:
    exclusions = parse_exclusions(["mx2.backup-bad.example", "mta-sts.backup-bad.example"])
    lines = await scan_all(make_scanner(demo_lab, exclusions=exclusions), ["backup-bad.example"])
    line = lines[0]
    addresses = {a["ip"]: a for mx in line["mx"] for a in mx["addresses"]}
    assert addresses["127.0.1.4"]["reason"] == "excluded"  # mx2.backup-bad.example
    assert addresses["127.0.1.3"]["status"] == "tested"
    assert demo_lab.smtp_connections("127.0.1.4") == 0
    assert "--exclude" in line["mta_sts"]["error"]["detail"]


def test_resume_refuses_a_file_of_an_unknown_schema_version(tmp_path: Path) -> None:
    results = tmp_path / "old.jsonl"
    results.write_text(
        '{"schema_version": 3, "domain": "a.example"}\n{"schema_version": 3, "domain": "b.example"}\n',
        encoding="utf-8",
    )
    assert completed_domains(results) == {"a.example", "b.example"}  # the version it writes
    results.write_text('{"schema_version": 2, "domain": "b.example"}\n', encoding="utf-8")
    # A version stats and diff read, but not one to append version 3 lines to.
    with pytest.raises(UnknownSchemaVersion, match=r"schema_version 2.*writes version 3"):
        completed_domains(results)
    results.write_text('{"schema_version": 99, "domain": "c.example"}\n', encoding="utf-8")
    with pytest.raises(UnknownSchemaVersion, match="schema_version 99"):
        completed_domains(results)
