"""One hostile domain in a bulk scan costs its own line at most, and its line stays under 2 MiB.

The hostile domain's 32 MX addresses (4 hosts of 8) each present a certificate of
their own whose SAN holds hundreds of names made of control characters (each written
as six bytes of JSON): on an earlier scanner its line was 53 MB, which a worker could
not send, and the whole scan ended with no line written. The servers are the lab's
SMTP server on loopback, DNS the lab's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from commands import line_validator
from hostile import Forge, Material, serve_certificates
from trio.testing import MockClock

from scanner.core.reasons import reason_text
from scanner.core.result import DomainResult, ErrorKind, ScanError
from scanner.files import InputReader
from scanner.lab import Lab, open_lab, parse_world
from scanner.lab.certificates import default_mint
from scanner.lab.world import CertificateKind
from scanner.models import ReportOptions
from scanner.net.probe import ProbeSettings
from scanner.net.resolver import Nameserver, Resolver
from scanner.net.tls import TlsClient
from scanner.net.trust import TrustStore
from scanner.output import MAX_LINE_BYTES, fit_line, result_line, written_line
from scanner.scan import ProbeCache, Scanner, ScanSettings

HOSTILE = "hostile.example"
GOOD = [f"good{index}.example" for index in range(6)]
HOSTS = [f"mx{index}.{HOSTILE}" for index in range(4)]
ADDRESSES = {host: [f"127.0.9.{8 * i + j + 1}" for j in range(8)] for i, host in enumerate(HOSTS)}
GOOD_ADDRESSES = {domain: f"127.0.8.{index + 1}" for index, domain in enumerate(GOOD)}
# About 90 kB of names per certificate (OpenSSL takes up to 100 kB), none of them the MX host: a host mismatch.
NAMES_PER_CERTIFICATE = 280
NAME = "\x01\x1b[2J" * 60 + ".x"


def world_text() -> str:
    parts = [f'[domains."{HOSTILE}".dns]']
    parts.append('"@" = { mx = [' + ", ".join(f'"10 {h}"' for h in HOSTS) + "] }")
    for host, addresses in ADDRESSES.items():
        parts.append(f'"{host}." = {{ a = {json.dumps(addresses)} }}')
    parts.append(f'[domains."{HOSTILE}".expect]\nenforce_ready = false')
    for domain, address in GOOD_ADDRESSES.items():
        parts.append(f'[domains."{domain}".dns]')
        parts.append(f'"@" = {{ mx = ["10 mx.{domain}"] }}')
        parts.append(f'"mx" = {{ a = ["{address}"] }}')
        parts.append(f'[domains."{domain}".expect]\nenforce_ready = false')
    return "\n".join(parts) + "\n"


@dataclass(frozen=True, slots=True)
class Setting:
    lab: Lab
    smtp_port: int
    ca_files: tuple[Path, ...]


@pytest.fixture(scope="module")
def forge() -> Forge:
    return Forge()


@pytest.fixture(scope="module")
def hostile_chains(forge: Forge) -> dict[str, Material]:
    """A distinct certificate for every hostile address."""
    return {
        address: forge.issue([f"{NAME}{address}-{n}" for n in range(NAMES_PER_CERTIFICATE)])
        for addresses in ADDRESSES.values()
        for address in addresses
    }


@pytest.fixture
async def setting(
    forge: Forge, hostile_chains: dict[str, Material], tmp_path: Path
) -> AsyncIterator[Setting]:
    mint = default_mint()
    contexts = {address: chain.context() for address, chain in hostile_chains.items()}
    for domain, address in GOOD_ADDRESSES.items():
        contexts[address] = mint.context(CertificateKind.GOOD, f"mx.{domain}")
    forge_file = tmp_path / "forge.pem"
    forge_file.write_bytes(forge.pem)
    async with (
        open_lab(parse_world(world_text()), workdir=tmp_path / "lab", mint=mint) as lab,
        serve_certificates(contexts) as port,
    ):
        yield Setting(lab, port, (lab.ca_file, forge_file))


def make_scanner(setting: Setting) -> Scanner:
    host, port = setting.lab.resolver
    return Scanner(
        resolver=Resolver.create([Nameserver(host, port)], timeout=2.0),
        tls=TlsClient.create(TrustStore.from_files(list(setting.ca_files), include_certifi=False)),
        settings=ScanSettings(
            concurrency=4,
            allow_private=True,
            probe=ProbeSettings(smtp_port=setting.smtp_port, step_timeout=5, total_timeout=30),
        ),
    )


async def test_the_hostile_domain_first_every_line_written_none_over_2_mib(
    setting: Setting, loopback_clock: MockClock
) -> None:
    written: list[str] = []

    async def source() -> AsyncIterator[str]:
        for domain in [HOSTILE, *GOOD]:
            yield domain

    await make_scanner(setting).run(InputReader().stream(source()), written.append)
    sizes = {json.loads(text)["domain"]: len(text.encode()) for text in written}
    assert set(sizes) == {HOSTILE, *GOOD}
    assert max(sizes.values()) <= MAX_LINE_BYTES
    lines = {json.loads(text)["domain"]: json.loads(text) for text in written}
    hostile = lines[HOSTILE]
    assert hostile["error"] is None  # scanned, its line cut to fit
    line_validator().validate(hostile)
    addresses = [a for host in hostile["mx"] for a in host["addresses"]]
    assert len(addresses) == 32
    assert all(a["starttls"] == "offered" for a in addresses)
    assert all("certificate-host-mismatch" in a["result_types"] for a in addresses)
    assert all(a["certificate"]["san_count"] == NAMES_PER_CERTIFICATE for a in addresses)
    assert all(len(a["certificate"]["san"]) <= 100 for a in addresses)
    for indicator in hostile["indicators"]:
        assert len(indicator["detail"]) < 2000  # a few names and a count, not 280
    for domain in GOOD:
        line_validator().validate(lines[domain])
        assert lines[domain]["error"] is None
        assert "trimmed" not in lines[domain]
        (address,) = lines[domain]["mx"][0]["addresses"]
        assert address["starttls"] == "offered"
        assert address["result_types"] == []


async def test_the_hostile_domain_first_in_a_worker_scan(setting: Setting, tmp_path: Path) -> None:
    """`scan --input` (worker processes) writes every other line, and the hostile one."""
    source = tmp_path / "domains.txt"
    source.write_text("\n".join([HOSTILE, *GOOD]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    host, port = setting.lab.resolver
    ca_args = [arg for path in setting.ca_files for arg in ("--ca-file", str(path))]
    completed = await trio.run_process(
        [sys.executable, "-m", "scanner", "scan", "--input", str(source), "--workers", "2",
         "--out", str(out), "--no-progress", "--resolver", f"{host}:{port}",
         "--smtp-port", str(setting.smtp_port), "--allow-private", *ca_args],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr.decode()
    written = out.read_bytes().splitlines()
    domains = [json.loads(line)["domain"] for line in written]
    assert sorted(domains) == sorted([HOSTILE, *GOOD])
    assert max(len(line) for line in written) <= MAX_LINE_BYTES


# ---------------------------------------------------------------- the line builder


def test_a_line_that_cannot_be_built_is_that_domains_internal_error() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 12, 1, tzinfo=UTC)
    # A verdict without facts' parts a line needs: building the line raises.
    broken = DomainResult(HOSTILE, at, at, facts=object(), verdict=object())  # type: ignore[arg-type]
    text, result = written_line(broken, ReportOptions())
    line = json.loads(text)
    assert line["domain"] == HOSTILE
    assert line["error"].startswith("internal-error: its line could not be built: AttributeError")
    assert result.error is not None
    assert result.error.kind is ErrorKind.INTERNAL_ERROR
    line_validator().validate(line)
    good = DomainResult.failed(HOSTILE, ScanError(ErrorKind.TIMEOUT, "slow"), at)
    assert written_line(good, ReportOptions()) == (
        json.dumps(result_line(good, ReportOptions()), ensure_ascii=False, separators=(",", ":")),
        good,
    )


def test_fit_line_cuts_the_biggest_lists_and_records_it() -> None:
    line: dict[str, Any] = {
        "domain": HOSTILE,
        "mx": [
            {
                "addresses": [
                    {"transcript": ["x" * 100] * 50, "certificate": {"san": ["\x01" * 200] * 100}}
                ]
                * 4
            }
        ],
        "warnings": [f"warning {n}" for n in range(100)],
        "blockers": ["one"],
    }
    text = fit_line(line, 50_000)
    assert text is not None
    assert len(text.encode()) <= 50_000
    cut = json.loads(text)
    assert cut["blockers"] == ["one"]  # small lists stay whole
    assert len(cut["mx"][0]["addresses"]) == 4  # structure is never cut
    assert 0 < len(cut["mx"][0]["addresses"][0]["certificate"]["san"]) < 100
    paths = {c["path"] for c in cut["trimmed"]["cuts"]}
    assert "mx[0].addresses[0].certificate.san" in paths
    assert cut["trimmed"]["budget"] == 50_000


def test_fit_line_gives_up_when_the_structure_alone_is_too_big() -> None:
    line = {"domain": HOSTILE, "mx": [{"hostname": "h" * 60, "addresses": []}] * 2000}
    assert fit_line(line, 50_000) is None


# ---------------------------------------------------------------- over-limit, never contacted


def busy_world_text() -> str:
    parts = ['[domains."busy.example".dns]']
    parts.append('"@" = { mx = [' + ", ".join(f'"10 mx{i}.busy.example"' for i in range(4)) + "] }")
    for index in range(32):
        parts.append(
            f'[[domains."busy.example".servers]]\nhostname = "mx{index // 8}.busy.example"\n'
            f'address = "127.0.7.{index + 1}"\nbehaviour = "greeting-421"'
        )
    parts.append('[domains."busy.example".expect]\nenforce_ready = false')
    return "\n".join(parts) + "\n"


async def test_a_busy_address_whose_retries_spend_the_budget_keeps_its_421(
    tmp_path: Path, loopback_clock: MockClock
) -> None:
    """32 addresses answering 421, each tried again: 64 attempts spend the domain's budget
    before the retries end. Over-limit means never contacted, so each keeps its 421."""
    async with open_lab(parse_world(busy_world_text()), workdir=tmp_path / "lab") as lab:
        host, port = lab.resolver
        scanner = Scanner(
            resolver=Resolver.create([Nameserver(host, port)], timeout=2.0),
            tls=TlsClient.create(TrustStore.from_files([lab.ca_file], include_certifi=False)),
            settings=ScanSettings(
                allow_private=True,
                probe=ProbeSettings(smtp_port=lab.smtp_port, step_timeout=5, total_timeout=30),
            ),
        )
        result = await scanner.scan_domain("busy.example")
        assert result.verdict is not None
        addresses = [a for mx in result.verdict.mx for a in mx.addresses]
        assert len(addresses) == 32
        reasons = [reason_text(a.interruption) for a in addresses if a.interruption is not None]
        assert len(reasons) == 32
        assert all(reason.startswith("busy:421") for reason in reasons), reasons
        contacted = sum(lab.smtp_connections(f"127.0.7.{i + 1}") for i in range(32))
        assert contacted == 64  # the budget, every attempt made
        notes = [line for a in addresses if a.probe is not None for line in a.probe.transcript]
        # The addresses whose retry the budget refused say so, next to their 421.
        assert any("not tried again: over-limit" in line for line in notes)


# ---------------------------------------------------------------- one domain's DNS timeouts


def dead_dns_world_text(good: int) -> str:
    hosts = [f"mx{i}.dead.example" for i in range(16)]
    parts = ['[domains."dead.example".dns]']
    parts.append('"@" = { mx = [' + ", ".join(f'"10 {h}"' for h in hosts) + "] }")
    parts += [f'"{host}." = {{ timeout = true }}' for host in hosts]
    parts.append('[domains."dead.example".expect]\nenforce_ready = false')
    for index in range(good):
        domain = f"fine{index}.example"
        parts.append(f'[domains."{domain}".dns]\n"@" = {{ mx = ["10 mx.{domain}"] }}')
        parts.append(
            f'[[domains."{domain}".servers]]\nhostname = "mx.{domain}"\naddress = "127.0.6.1"'
        )
        parts.append(f'[domains."{domain}".expect]\nenforce_ready = false')
    return "\n".join(parts) + "\n"


async def test_one_domains_dns_timeouts_do_not_lower_the_scans_concurrency(
    tmp_path: Path, loopback_clock: MockClock
) -> None:
    """A domain whose 16 MX hosts' names are never answered loses about a hundred DNS
    tries, a quarter of a governor window: that is its own trouble, not the scan's load."""
    good = [f"fine{index}.example" for index in range(80)]
    async with open_lab(parse_world(dead_dns_world_text(80)), workdir=tmp_path / "lab") as lab:
        host, port = lab.resolver
        scanner = Scanner(
            resolver=Resolver.create([Nameserver(host, port)], timeout=2.0),
            tls=TlsClient.create(TrustStore.from_files([lab.ca_file], include_certifi=False)),
            settings=ScanSettings(
                concurrency=8,
                allow_private=True,
                probe=ProbeSettings(smtp_port=lab.smtp_port, step_timeout=5, total_timeout=30),
            ),
        )
        written: list[dict[str, Any]] = []

        async def source() -> AsyncIterator[str]:
            for domain in ["dead.example", *good]:
                yield domain

        await scanner.run(
            InputReader().stream(source()), lambda text: written.append(json.loads(text))
        )
        load = scanner.resolver.load
        assert scanner.governor is not None
        assert load.queries >= scanner.governor.WINDOW  # the governor measured
        assert load.timeouts >= 90  # the dead domain's, a window's share over HIGH
        assert scanner.governor.lowered == 0
        assert scanner.governor.limiter.total_tokens == 8
        by_domain = {line["domain"]: line for line in written}
        dead = by_domain["dead.example"]
        assert all(
            "timeout" in (a["reason"] or "") or a["status"] != "tested"
            for mx in dead["mx"]
            for a in mx["addresses"]
        )
        assert all(by_domain[d]["mx"][0]["addresses"][0]["starttls"] == "offered" for d in good)


def test_the_governor_counts_a_few_timeouts_of_each_domain() -> None:
    from collections import Counter

    from scanner.scan import LoadGovernor

    @dataclass
    class Load:
        queries: int = 0
        timeouts: int = 0

    one, spread = LoadGovernor(100), LoadGovernor(100)
    load = Load(queries=400, timeouts=100)
    one.observe(load, Counter({"dead.example": 100}))  # one domain: 8 of 100 count, 2 %
    assert one.lowered == 0
    spread.observe(load, Counter({f"d{i}.example": 2 for i in range(50)}))  # load: 25 %
    assert spread.lowered == 1


# ---------------------------------------------------------------- the parent's end of a worker


async def test_an_oversized_message_costs_its_workers_domains_not_the_run() -> None:
    """A frame over MAX_MESSAGE ended the whole run with a ValueError. Lines are cut
    before they are sent, so it is a bug: that worker is stopped, its domains in
    flight are lost (and said so), and the other workers go on."""
    import socket
    import struct

    from scanner.net.gate import Gate
    from scanner.scan import ProbeCache
    from scanner.workers import MAX_MESSAGE, Channel, ParallelRun, _serve_worker, _Shared, _Worker

    parent_end, worker_end = socket.socketpair()
    channel = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(parent_end)))
    worker_end.sendall(struct.pack(">I", MAX_MESSAGE + 1) + b"\0" * 1024)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    worker = _Worker(0, channel, process, trio.Semaphore(1), in_flight={HOSTILE})
    run = ParallelRun()
    with trio.fail_after(5):
        await _serve_worker(
            worker, _Shared(Gate(allow_private=True), ProbeCache(16)), print, run, None
        )
        await process.wait()
    assert worker.gone
    assert run.lost == [HOSTILE]
    assert process.returncode is not None  # stopped, not left running
    worker_end.close()
    await channel.stream.aclose()


async def test_what_a_hostile_domain_leaves_behind_is_bounded(
    setting: Setting, loopback_clock: MockClock
) -> None:
    """Its 32 certificates of about 90 kB are gone once the domain is scanned: no DER in
    its facts or in the probe cache, a hundred names per summary, the cache small."""
    scanner = make_scanner(setting)
    result = await scanner.scan_domain(HOSTILE)
    assert result.facts is not None
    probes = [probe for host in result.facts.hosts for probe in host.probes]
    assert len(probes) == 32
    assert all(p.tls is not None and p.tls.chain_der == () for p in probes)
    assert all(p.tls is not None and len(p.tls.chain[0].san) <= 100 for p in probes)
    cache = scanner.probe_cache
    assert isinstance(cache, ProbeCache)
    assert 0 < cache.used < 32 * 40_000  # 32 outcomes of a few tens of kB, not 32 DERs and more


async def test_the_probe_cache_is_bounded_by_bytes() -> None:
    from scanner.models import AddressStatus, ProbeOutcome
    from scanner.scan import outcome_cost

    cache = ProbeCache(2048, budget=50_000)
    for index in range(40):
        outcome = ProbeOutcome(
            "mx.example",
            f"192.0.2.{index}",
            AddressStatus.TESTED,
            transcript=("S: " + "x" * 197,) * 100,
        )

        async def run(outcome: ProbeOutcome = outcome) -> ProbeOutcome:
            await trio.lowlevel.checkpoint()
            return outcome

        assert await cache.get(("mx.example", outcome.ip), run) is outcome
    assert outcome_cost(outcome) > 20_000
    assert cache.used <= 50_000
    assert 0 < len(cache._done) < 40  # the oldest went, by bytes, long before 2,048 entries
