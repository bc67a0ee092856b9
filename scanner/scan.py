"""Bulk orchestration: input streaming, the worker pool, limiters, the probe cache, the writer.

Theory of operation
-------------------
One producer task reads input lines lazily, normalises them, drops duplicates,
resumed and other-shard domains, and sends work items into a bounded channel.
`concurrency` worker tasks take items, scan one domain each and send the
finished JSON line to a second bounded channel. One writer task owns the output
file: it writes each line whole and flushes it, so the file only ever holds
complete lines. Memory is bounded by the channel sizes, the worker count and
the probe cache, not by the length of the input.

The probe cache makes each (MX host, address) cost one SMTP session per run,
whoever asks first: later askers wait on the first one's result. The gate
(`scanner.net.gate`) refuses excluded and private addresses and bounds
simultaneous connections to one address, probes and policy fetches alike.

A domain that raises an unexpected exception gets an error line with a short
traceback summary; a domain that exceeds its overall deadline gets an error
line too. Neither stops the scan.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import traceback
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import trio

from scanner.core.addresses import Exclusions
from scanner.core.assess import assess_domain
from scanner.core.discovery import policy_only_hosts, sts_record_from, tlsrpt_record_from
from scanner.core.inputs import InvalidInput, Shard, domain_digest, parse_input_line
from scanner.core.result import DomainResult, ErrorKind, ScanError
from scanner.models import (
    AddressStatus,
    DomainFacts,
    MxAnswer,
    MxHostFacts,
    MxSource,
    PolicyFetch,
    ProbeOutcome,
    ReportOptions,
    TxtAnswer,
)
from scanner.net.gate import Gate
from scanner.net.policy_fetch import FetchSettings, fetch_policy
from scanner.net.probe import ProbeSettings, probe
from scanner.net.resolver import Resolver
from scanner.net.tls import TlsClient
from scanner.output import dumps_line, result_line

DEFAULT_PROBE_CACHE_SIZE = 4096


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class ScanSettings:
    concurrency: int = 50
    per_ip: int = 4
    probe_cache_size: int = DEFAULT_PROBE_CACHE_SIZE
    domain_timeout: float = 300.0  # overall bound for one domain
    allow_private: bool = False
    exclusions: Exclusions | None = None
    report: ReportOptions = field(default_factory=ReportOptions)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)


class ProgressSink(Protocol):
    def domain_done(self, result: DomainResult) -> None: ...


class ProbeCache:
    """(MX host, address) → the one probe outcome of this run, LRU-bounded.

    Concurrent askers for the same key wait for the first asker's probe.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._done: OrderedDict[tuple[str, str], ProbeOutcome] = OrderedDict()
        self._pending: dict[tuple[str, str], trio.Event] = {}
        self.probes_run = 0
        self.hits = 0

    async def get(
        self, key: tuple[str, str], run: Callable[[], Awaitable[ProbeOutcome]]
    ) -> ProbeOutcome:
        while True:
            if key in self._done:
                self._done.move_to_end(key)
                self.hits += 1
                return self._done[key]
            event = self._pending.get(key)
            if event is None:
                break
            await event.wait()
            if key not in self._done:  # the first asker was cancelled; try ourselves
                continue
        event = trio.Event()
        self._pending[key] = event
        try:
            outcome = await run()
            self.probes_run += 1
            self._done[key] = _without_der(outcome)
            while len(self._done) > self._size:
                self._done.popitem(last=False)
            return outcome
        finally:
            del self._pending[key]
            event.set()


def _without_der(outcome: ProbeOutcome) -> ProbeOutcome:
    """Drop raw DER from a cached outcome; the summaries carry what the output needs."""
    if outcome.tls is None or not outcome.tls.chain_der:
        return outcome
    return dataclasses.replace(outcome, tls=dataclasses.replace(outcome.tls, chain_der=()))


@dataclass(slots=True)
class ScanStats:
    domains: int = 0
    errors: int = 0
    ready: int = 0
    with_indicators: int = 0


class Scanner:
    """Scans domains with injected dependencies; `cli.py` builds the real ones."""

    def __init__(
        self,
        *,
        resolver: Resolver,
        tls: TlsClient,
        settings: ScanSettings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.resolver = resolver
        self.tls = tls
        self.settings = settings
        self.clock = clock
        self.probe_cache = ProbeCache(settings.probe_cache_size)
        self.gate = Gate(
            allow_private=settings.allow_private,
            exclusions=settings.exclusions,
            per_ip=settings.per_ip,
        )
        self.stats = ScanStats()

    # ------------------------------------------------------------ one domain

    async def scan_domain(self, domain: str) -> DomainResult:
        """One domain → its result. Never raises except for cancellation."""
        started = self.clock()
        if self.gate.name_refusal(domain) is not None:
            error = ScanError(ErrorKind.EXCLUDED, "the domain is listed in --exclude")
            return DomainResult.failed(domain, error, started)
        try:
            with trio.move_on_after(self.settings.domain_timeout) as scope:
                return await self._scan_domain(domain, started)
            assert scope.cancelled_caught
            timeout = self.settings.domain_timeout
            error = ScanError(ErrorKind.TIMEOUT, f"the domain's scan exceeded {timeout:g} s")
            return DomainResult.failed(domain, error, started)
        except Exception as exc:
            summary = traceback.format_exception(exc, limit=-3)
            detail = " | ".join(line.strip().replace("\n", " ") for line in summary[-4:])
            error = ScanError(ErrorKind.INTERNAL_ERROR, f"{type(exc).__name__}: {exc} [{detail}]")
            return DomainResult.failed(domain, error, started)

    def invalid_input(self, item: InvalidInput) -> DomainResult:
        error = ScanError(ErrorKind.INVALID_DOMAIN, item.reason)
        return DomainResult.failed(item.text, error, self.clock())

    async def _scan_domain(self, domain: str, started: datetime) -> DomainResult:
        sts_txt, tlsrpt_txt, mx = await _gather3(
            self.resolver.txt(f"_mta-sts.{domain}"),
            self.resolver.txt(f"_smtp._tls.{domain}"),
            self.resolver.mx(domain),
        )
        sts_record, sts_error = sts_record_from(sts_txt)
        tlsrpt_record, tlsrpt_error = tlsrpt_record_from(tlsrpt_txt)

        policy_fetch: PolicyFetch | None = None
        hosts_from_dns = [(record.host, record.preference) for record in mx.records]

        async def fetch() -> None:
            nonlocal policy_fetch
            if sts_record is not None:
                policy_fetch = await fetch_policy(
                    domain,
                    resolver=self.resolver,
                    tls=self.tls,
                    settings=self.settings.fetch,
                    now=self.clock(),
                    gate=self.gate,
                )

        dns_hosts: list[MxHostFacts] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            dns_hosts = await self._hosts(hosts_from_dns, MxSource.DNS)
        policy = policy_fetch.policy if policy_fetch is not None else None
        policy_hosts: list[MxHostFacts] = []
        if policy is not None:
            standby = policy_only_hosts(policy, [host for host, _ in hosts_from_dns])
            policy_hosts = await self._hosts([(host, None) for host in standby], MxSource.POLICY)

        facts = DomainFacts(
            domain=domain,
            scanned_at=started,
            sts_txt=sts_txt,
            sts_record=sts_record,
            sts_record_error=sts_error,
            policy_fetch=policy_fetch,
            tlsrpt_txt=tlsrpt_txt,
            tlsrpt_record=tlsrpt_record,
            tlsrpt_error=tlsrpt_error,
            mx=mx,
            hosts=tuple(dns_hosts + policy_hosts),
        )
        return DomainResult(
            domain=domain,
            scanned_at=started,
            finished_at=self.clock(),
            facts=facts,
            verdict=assess_domain(facts),
        )

    async def _hosts(
        self, hosts: Sequence[tuple[str, int | None]], source: MxSource
    ) -> list[MxHostFacts]:
        results: list[MxHostFacts | None] = [None] * len(hosts)

        async def one(index: int, hostname: str, preference: int | None) -> None:
            results[index] = await self._host(hostname, preference, source)

        async with trio.open_nursery() as nursery:
            for index, (hostname, preference) in enumerate(hosts):
                nursery.start_soon(one, index, hostname, preference)
        return [r for r in results if r is not None]

    async def _host(self, hostname: str, preference: int | None, source: MxSource) -> MxHostFacts:
        a, aaaa = await self.resolver.addresses(hostname)
        # Stable order (IPv4 then IPv6, numerically) so repeated scans diff cleanly.
        ips = list(dict.fromkeys(sorted(a.addresses, key=ipaddress.ip_address)))
        ips += [ip for ip in sorted(set(aaaa.addresses), key=ipaddress.ip_address) if ip not in ips]
        outcomes: list[ProbeOutcome | None] = [None] * len(ips)

        async def one(index: int, ip: str) -> None:
            outcomes[index] = await self.probe_address(hostname, ip)

        async with trio.open_nursery() as nursery:
            for index, ip in enumerate(ips):
                nursery.start_soon(one, index, ip)
        return MxHostFacts(
            hostname=hostname,
            preference=preference,
            source=source,
            addresses=(a, aaaa),
            probes=tuple(o for o in outcomes if o is not None),
        )

    async def probe_address(self, hostname: str, ip: str) -> ProbeOutcome:
        """One probe per (MX host, address) per run, within the address's connection slots."""
        refusal = self.gate.name_refusal(hostname) or self.gate.refusal(ip)
        if refusal is not None:
            return ProbeOutcome(hostname, ip, AddressStatus.NOT_TESTABLE, interruption=refusal)

        async def run_probe() -> ProbeOutcome:
            async with self.gate.slot(ip):
                return await probe(
                    hostname,
                    ip,
                    tls=self.tls,
                    settings=self.settings.probe,
                    now=self.clock(),
                )

        return await self.probe_cache.get((hostname, ip), run_probe)

    # ------------------------------------------------------------ many domains

    async def run(
        self,
        items: AsyncIterator[str | InvalidInput],
        write_line: Callable[[str], None],
        *,
        progress: ProgressSink | None = None,
    ) -> ScanStats:
        """Scan every item and hand each finished line to `write_line`, as it finishes.

        Cancelling the caller's scope stops the scan: in-flight domains are
        dropped, every line already handed over is complete.
        """
        concurrency = max(1, self.settings.concurrency)
        work_send, work_receive = trio.open_memory_channel[str | InvalidInput](concurrency)
        line_send, line_receive = trio.open_memory_channel[DomainResult](concurrency)

        async def producer() -> None:
            async with work_send:
                async for item in items:
                    await work_send.send(item)

        async def worker(
            receive: trio.MemoryReceiveChannel[str | InvalidInput],
            send: trio.MemorySendChannel[DomainResult],
        ) -> None:
            async with receive, send:
                async for item in receive:
                    if isinstance(item, InvalidInput):
                        result = self.invalid_input(item)
                    else:
                        result = await self.scan_domain(item)
                    await send.send(result)

        async def writer() -> None:
            async with line_receive:
                async for result in line_receive:
                    write_line(dumps_line(result_line(result, self.settings.report)))
                    self._count(result)
                    if progress is not None:
                        progress.domain_done(result)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            async with work_receive, line_send:
                nursery.start_soon(producer)
                for _ in range(concurrency):
                    nursery.start_soon(worker, work_receive.clone(), line_send.clone())
        return self.stats

    def _count(self, result: DomainResult) -> None:
        self.stats.domains += 1
        if result.error is not None:
            self.stats.errors += 1
        if result.enforce_ready:
            self.stats.ready += 1
        if result.has_indicators:
            self.stats.with_indicators += 1


async def _gather3(a: Any, b: Any, c: Any) -> tuple[TxtAnswer, TxtAnswer, MxAnswer]:
    results: list[Any] = [None, None, None]

    async def run(index: int, awaitable: Any) -> None:
        results[index] = await awaitable

    async with trio.open_nursery() as nursery:
        for index, awaitable in enumerate((a, b, c)):
            nursery.start_soon(run, index, awaitable)
    return results[0], results[1], results[2]


# ---------------------------------------------------------------- input and output files


class InputReader:
    """Streams input lines into domains: dedupe, resume and shard filters applied.

    The duplicate filter keeps 64-bit digests of the domains seen (about 80
    bytes each), the only state that grows with the input.
    """

    def __init__(
        self,
        *,
        skip: set[str] | None = None,
        shard: Shard | None = None,
    ) -> None:
        self._skip = skip or set()
        self._shard = shard
        self._seen: set[int] = set()
        self.duplicates = 0
        self.skipped = 0

    def accept(self, line: str) -> str | InvalidInput | None:
        item = parse_input_line(line)
        if item is None:
            return None
        key = item.text if isinstance(item, InvalidInput) else item
        digest = domain_digest(key)
        if digest in self._seen:
            self.duplicates += 1
            return None
        self._seen.add(digest)
        if key in self._skip:
            self.skipped += 1
            return None
        if self._shard is not None and not self._shard.takes(key):
            return None
        return item

    async def stream(self, lines: AsyncIterator[str]) -> AsyncIterator[str | InvalidInput]:
        async for line in lines:
            item = self.accept(line)
            if item is not None:
                yield item


# Longer input lines are cut here while reading (they cannot be domain names anyway), so
# one hostile line cannot take the memory of a whole file.
MAX_INPUT_LINE = 1024
READ_SIZE = 1 << 16


async def iterate_lines(sources: Iterable[str], files: Iterable[Path | None]) -> AsyncIterator[str]:
    """Arguments first, then each file (None is stdin), line by line without reading it whole.

    Files are read in binary chunks in a worker thread (one call per chunk, not per
    line), decoded as UTF-8 with undecodable bytes replaced, and every line is cut
    at `MAX_INPUT_LINE` bytes.
    """
    import sys

    for source in sources:
        yield source
    for path in files:
        if path is None:
            async for line in bounded_lines(trio.wrap_file(sys.stdin.buffer)):
                yield line
        else:
            async with await trio.open_file(path, "rb") as handle:
                async for line in bounded_lines(handle):
                    yield line


async def bounded_lines(handle: Any) -> AsyncIterator[str]:
    """Split a binary async file into decoded lines of at most `MAX_INPUT_LINE` bytes."""
    pending = b""
    skipping = False  # inside an overlong line, after its first MAX_INPUT_LINE bytes
    while True:
        chunk: bytes = await handle.read1(READ_SIZE)
        if not chunk:
            break
        pieces = (pending + chunk).split(b"\n")
        pending = pieces.pop()
        for piece in pieces:
            if skipping:
                skipping = False
                continue
            yield _decode_line(piece)
        if len(pending) > MAX_INPUT_LINE:
            if not skipping:
                yield _decode_line(pending)
            pending = b""
            skipping = True
    if pending and not skipping:
        yield _decode_line(pending)


def _decode_line(raw: bytes) -> str:
    return raw[:MAX_INPUT_LINE].decode("utf-8", "replace").removeprefix("\ufeff")


def completed_domains(path: Path) -> set[str]:
    """Domains with a complete line in an existing results file (`--resume`).

    A torn last line (an interrupted write) is cut off so appending stays valid.
    """
    done: set[str] = set()
    if not path.exists():
        return done
    good_length = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break  # a torn final line
            good_length += len(raw)
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("domain"), str):
                done.add(record["domain"])
    if good_length != path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good_length)
    return done
