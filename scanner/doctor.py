"""`scanner doctor`: a preflight of the scanning host before a bulk scan.

Gathers facts with the real parts of a scan (the resolver, the STARTTLS probe, the
TLS client) and hands them to `scanner.core.preflight`, which judges each one:

* port 25 and STARTTLS at the canaries (`--canary`, as for the blocked-port-25
  check): one probe per canary address, as a scan would make it, so a firewall that
  strips or rewrites STARTTLS, a TLS-intercepting proxy (one certificate for every
  canary) and a 554 greeting quoting a block list are seen;
* an IPv6 route (the routing table, asked without sending anything);
* the resolver: a stub for a bulk scan, a validating resolver over the network,
  whether it answers over TCP and whether answers over 512 bytes arrive whole over UDP
  with EDNS (a question with a large answer, `large_answer`, asked both ways), and
  a burst of distinct lookups (names under `burst_zone` that do not exist): how many
  go unanswered, how fast the rest come;
* the clock against the `Date` of a few HTTPS hosts (`--clock-host`);
* the EHLO name against the address the probes left from, forward and reverse;
* the open-file limit against `--concurrency`.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import dns.rdatatype
import h11
import trio
import typer

from scanner.core.preflight import (
    Finding,
    Verdict,
    block_list_finding,
    burst_finding,
    clock_finding,
    descriptor_finding,
    ehlo_finding,
    ipv6_finding,
    port25_finding,
    resolver_edns_finding,
    resolver_finding,
    resolver_tcp_finding,
    starttls_finding,
)
from scanner.models import DnsStatus, ProbeOutcome
from scanner.net.canaries import host_addresses
from scanner.net.connect import connect_tcp, has_route
from scanner.net.probe import ProbeSettings, probe
from scanner.net.resolver import Resolver
from scanner.net.tls import TlsClient, TlsFailure
from scanner.options import NetworkOptions, with_network_options
from scanner.render import output_console
from scanner.run import IPV6_ROUTE_PROBE
from scanner.untrusted import dumps_document, terminal

if TYPE_CHECKING:
    from scanner.options import NetworkOptions

DEFAULT_CLOCK_HOSTS: tuple[tuple[str, int], ...] = (
    ("www.google.com", 443),
    ("www.cloudflare.com", 443),
    ("www.microsoft.com", 443),
)
MAX_HEAD_RESPONSE = 16 * 1024
ADDRESSES_PER_CANARY = 2
BURST_SIZE = 100  # distinct lookups at once: a bulk scan's DNS load in miniature
LARGE_ANSWER = (".", "DNSKEY")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DoctorSettings:
    canaries: tuple[tuple[str, int], ...]
    clock_hosts: tuple[tuple[str, int], ...]
    nameservers: tuple[str, ...]
    ehlo_name: str
    concurrency: int
    timeout: float
    descriptors_per_domain: int = 8
    descriptors_spare: int = 64
    ipv6_route: Callable[[str], bool] = has_route
    clock: Callable[[], datetime] = field(default=_utc_now)
    burst_zone: str = "example.com"  # the burst asks for distinct names under it (NXDOMAIN)
    burst_size: int = BURST_SIZE
    # A question whose answer is over 512 bytes, asked over UDP (the EDNS buffer) and TCP:
    # the root's DNSKEY set with its signatures (DO), about 1.1 kB from any resolver.
    large_answer: tuple[str, str] = LARGE_ANSWER
    descriptor_limit: Callable[[], int] = field(default=lambda: _descriptor_limit())


def _descriptor_limit() -> int:
    """The open-file limit a scan gets: it raises the soft limit to the hard one at start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(soft, 1 << 20) if hard == resource.RLIM_INFINITY else max(soft, hard)


async def _canaries(
    resolver: Resolver, tls: TlsClient, settings: DoctorSettings
) -> tuple[list[ProbeOutcome], list[str]]:
    outcomes: list[ProbeOutcome] = []
    unresolved: list[str] = []

    async def one(host: str, port: int) -> None:
        addresses = await host_addresses(resolver, host)
        if not addresses:
            unresolved.append(host)
            return
        probe_settings = ProbeSettings(
            smtp_port=port,
            ehlo_name=settings.ehlo_name,
            step_timeout=settings.timeout,
            greeting_timeout=settings.timeout,
            total_timeout=settings.timeout * 6,
        )
        for ip in addresses[:ADDRESSES_PER_CANARY]:
            if ":" in ip and not settings.ipv6_route(ip):
                continue
            outcomes.append(
                await probe(host, ip, tls=tls, settings=probe_settings, now=settings.clock())
            )

    async with trio.open_nursery() as nursery:
        for host, port in settings.canaries:
            nursery.start_soon(one, host, port)
    return outcomes, unresolved


async def _date_of(resolver: Resolver, tls: TlsClient, host: str, port: int) -> datetime | None:
    """The `Date` of a HEAD / over HTTPS to `host`, or None (no answer, no date).

    The caller holds the deadline.
    """
    addresses = await host_addresses(resolver, host)
    if not addresses:
        return None
    try:
        tcp = await connect_tcp(addresses[0], port)
    except OSError:
        return None
    try:
        stream = await tls.start(tcp, host)
        if isinstance(stream, TlsFailure):
            return None
        connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_RESPONSE)
        request = h11.Request(
            method="HEAD",
            target="/",
            headers=[("Host", host), ("Connection", "close"), ("User-Agent", "scanner")],
        )
        await stream.send_all(connection.send(request) + (connection.send(h11.EndOfMessage())))
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(MAX_HEAD_RESPONSE)
                if not data:
                    return None
                connection.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                for key, value in event.headers:
                    if key == b"date":
                        at = parsedate_to_datetime(bytes(value).decode("latin-1"))
                        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
                return None
            return None
    except (h11.ProtocolError, ValueError, trio.BrokenResourceError):
        return None
    finally:
        await tcp.aclose()


_ANSWERED = frozenset({DnsStatus.ANSWER, DnsStatus.NXDOMAIN, DnsStatus.NODATA})


async def _burst(resolver: Resolver, settings: DoctorSettings) -> list[float | None]:
    """Seconds to the answer of each of `burst_size` distinct lookups made at once."""
    latencies: list[float | None] = []
    stamp = int(settings.clock().timestamp())

    async def one(index: int) -> None:
        started = trio.current_time()
        answer = await resolver.txt(f"scanner-doctor-{stamp}-{index}.{settings.burst_zone}")
        answered = answer.status in _ANSWERED
        latencies.append(trio.current_time() - started if answered else None)

    async with trio.open_nursery() as nursery:
        for index in range(settings.burst_size):
            nursery.start_soon(one, index)
    return latencies


async def examine(resolver: Resolver, tls: TlsClient, settings: DoctorSettings) -> list[Finding]:
    """Every check of the scanning host, in `Check` order."""
    outcomes, unresolved = await _canaries(resolver, tls, settings)
    validating = await resolver.detect_validation()
    name, rdtype = settings.large_answer
    transports = await resolver.probe_transports(name, dns.rdatatype.from_text(rdtype))
    latencies = await _burst(resolver, settings)
    dates: list[tuple[str, datetime | None]] = []

    async def dated(host: str, port: int) -> None:
        at = None
        with trio.move_on_after(settings.timeout * 3):
            at = await _date_of(resolver, tls, host, port)
        dates.append((host, at))

    async with trio.open_nursery() as nursery:
        for host, port in settings.clock_hosts:
            nursery.start_soon(dated, host, port)
    forward = (
        ()
        if settings.ehlo_name.startswith("[")
        else await host_addresses(resolver, settings.ehlo_name)
    )
    source = next((o.local_ip for o in outcomes if o.local_ip is not None), None)
    reverse = await resolver.names_of(source) if source is not None else ()
    return [
        port25_finding(outcomes, unresolved),
        starttls_finding(outcomes),
        block_list_finding(outcomes),
        ipv6_finding(settings.ipv6_route(IPV6_ROUTE_PROBE)),
        resolver_finding(settings.nameservers, validating, settings.concurrency),
        resolver_tcp_finding(transports),
        resolver_edns_finding(transports),
        burst_finding(latencies),
        clock_finding(settings.clock(), dates),
        ehlo_finding(settings.ehlo_name, forward, source, reverse),
        descriptor_finding(
            settings.descriptor_limit(),
            settings.concurrency,
            settings.descriptors_per_domain,
            settings.descriptors_spare,
        ),
    ]


def findings_json(findings: Sequence[Finding]) -> list[dict[str, str]]:
    return [{"check": f.check.value, "verdict": f.verdict.value, "text": f.text} for f in findings]


def run_doctor(
    network: NetworkOptions, clock_hosts: list[str] | None, results: Path | None, *, json_out: bool
) -> int:
    """`scanner doctor`: examine, print, record in `results`' sidecar; 1 when a problem is found."""
    from scanner.options import _targets, build_scanner
    from scanner.research.metadata import metadata_path, record_doctor
    from scanner.run import DESCRIPTORS_PER_DOMAIN, DESCRIPTORS_SPARE

    if results is not None and not metadata_path(results).is_file():
        raise typer.BadParameter(
            f"{metadata_path(results)} not found: --results names a file a scan wrote",
            param_hint="--results",
        )
    scanner = build_scanner(network)
    settings = DoctorSettings(
        canaries=network.egress.canaries,
        clock_hosts=_targets(clock_hosts, 443, "--clock-host") or DEFAULT_CLOCK_HOSTS,
        nameservers=tuple(ns.ip for ns in network.resolvers) or _system_nameservers(),
        ehlo_name=network.ehlo_name,
        concurrency=network.concurrency,
        timeout=network.timeout,
        descriptors_per_domain=DESCRIPTORS_PER_DOMAIN,
        descriptors_spare=DESCRIPTORS_SPARE,
    )
    findings = trio.run(examine, scanner.resolver, scanner.tls, settings)
    if json_out:
        typer.echo(dumps_document({"findings": findings_json(findings)}))
    else:
        console = output_console()
        for finding in findings:
            colour = _COLOURS[finding.verdict]
            console.print(
                terminal(f"{finding.verdict.value:<8} {finding.check.value:<13} ", None, colour),
                terminal(finding.text, None),
                sep="",
            )
    if results is not None:
        problem = record_doctor(results, findings_json(findings))
        if problem is not None:
            output_console(stderr=True).print(terminal(problem, None, "yellow"))
    return 1 if any(f.verdict is Verdict.PROBLEM for f in findings) else 0


_COLOURS = {
    Verdict.OK: "green",
    Verdict.WARNING: "yellow",
    Verdict.PROBLEM: "red",
    Verdict.UNKNOWN: "yellow",
}


def _system_nameservers() -> tuple[str, ...]:
    from scanner.net.resolver import system_nameservers

    try:
        return tuple(ns.ip for ns in system_nameservers())
    except Exception:
        return ()


def register(app: typer.Typer) -> None:
    """Add `doctor` to `app`."""
    app.command("doctor")(doctor_command)


@with_network_options
def doctor_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    clock_host: Annotated[
        list[str] | None,
        typer.Option(
            "--clock-host",
            help="HOST[:PORT] (443 by default) whose HTTPS Date the clock is compared with; "
            "repeat for several. Default: a few large providers' web hosts.",
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            "--results",
            help="A results file whose .meta.json vantage object gets the findings.",
            dir_okay=False,
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=10_000, help="The bulk scan's concurrency.")
    ] = 100,
    *,
    network: NetworkOptions,
) -> None:
    """Preflight of the scanning host for a bulk scan: exit 0 fit, 1 a problem found."""
    raise typer.Exit(run_doctor(network, clock_host, results, json_out=json_out))
