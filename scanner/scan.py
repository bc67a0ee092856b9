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
import traceback
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Final, Protocol, TypeVar

import trio

from scanner.core.addresses import Exclusions
from scanner.core.assess import assess_domain
from scanner.core.caps import Caps, ConnectionBudget, cut_mx, cut_standby, plan_addresses
from scanner.core.dane import attach_check
from scanner.core.discovery import policy_only_hosts, sts_record_from, tlsrpt_record_from
from scanner.core.egress import (
    ConnectTally,
    ControlEvidence,
    Decision,
    Egress,
    EgressSettings,
    attempts_of_facts,
    tally_of_facts,
)
from scanner.core.inputs import (
    InvalidInput,
    RankedInput,
)
from scanner.core.reasons import reason_text
from scanner.core.result import DomainResult, ErrorKind, ScanError
from scanner.evidence import ReceivedSettings, with_received
from scanner.models import (
    AddressAnswer,
    AddressStatus,
    DnsStatus,
    DomainFacts,
    HostDane,
    Interruption,
    InterruptionKind,
    MxAnswer,
    MxHostFacts,
    MxSource,
    OverLimit,
    Phase,
    PolicyFetch,
    ProbeOutcome,
    ReportOptions,
    TxtAnswer,
)
from scanner.net.activity import doing
from scanner.net.canaries import gather_evidence
from scanner.net.certificates import summary_cost
from scanner.net.connect import has_route
from scanner.net.dane_lookup import hosts_dane
from scanner.net.gate import DomainGate, Gate, RunGate
from scanner.net.limits import holding
from scanner.net.policy_fetch import FetchSettings, fetch_policy
from scanner.net.probe import ProbeSettings, no_ipv6_route, probe
from scanner.net.resolver import LOOKUP_OWNER, Resolver
from scanner.net.tls import TlsClient
from scanner.output import MAX_ERROR_TEXT, written_line
from scanner.port25 import Port25Watch, disabled_watch

# The hot set is the shared providers' (MX host, address) pairs, a few hundred even on
# large lists; an outcome without its DER costs about 3.7 kB (4,096 of them held 7.7 MB
# more than 2,048 at 20,000 domains, with the same number of SMTP sessions). A server
# chooses what its outcome holds (transcript, chain summaries): the cache is bounded by
# bytes too (`outcome_cost`).
_T = TypeVar("_T")
_NO_CONNECTS = ConnectTally()

DEFAULT_PROBE_CACHE_SIZE = 2048
DEFAULT_PROBE_CACHE_BYTES = 16 * 1024 * 1024


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
    caps: Caps = field(default_factory=Caps)
    received: ReceivedSettings | None = None  # join received TLS-RPT evidence (`--reports`)
    busy_retries: int = 3  # further sessions after a 421 (or kin), each after a pause
    retry_backoff: float = 2.0  # seconds before the first retry; doubled for each further one
    egress: EgressSettings = field(default_factory=EgressSettings)  # the blocked-port-25 check
    # Is there a local route to this IPv6 address? (`connect.has_route`; injected in tests.)
    ipv6_route: Callable[[str], bool] = has_route


def retry_pause(attempt: int, backoff: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): backoff, 2x, 4x ..."""
    return float(backoff * 2 ** (attempt - 1))


def is_busy(interruption: Interruption | None, *, was_busy: bool) -> bool:
    """Did the server ask to be tried later (RFC 5321 §4.2.1: 421 and other 4xx)?

    A connection reset or close right after connect counts only from an address that
    already answered 421 or 4xx in this run: firewalls reset connections too.
    """
    if interruption is None:
        return False
    if interruption.kind is InterruptionKind.BUSY:
        return True
    if not was_busy:
        return False
    early = interruption.phase in (Phase.CONNECT, Phase.GREETING)
    reset = (
        interruption.kind is InterruptionKind.CONNECT_FAILED and interruption.errno == "ECONNRESET"
    )
    return early and (reset or interruption.kind is InterruptionKind.CLOSED)


class ProgressSink(Protocol):
    def domain_done(self, result: DomainResult) -> None: ...


class ProbeRegistry(Protocol):
    """One probe per (MX host, address) per run: `ProbeCache` here, or the parent's via a worker."""

    probes_run: int
    hits: int

    async def get(
        self, key: tuple[str, str], run: Callable[[], Awaitable[ProbeOutcome]]
    ) -> ProbeOutcome: ...


class ProbeCache:
    """(MX host, address) → the one probe outcome of this run, LRU-bounded.

    Concurrent askers for the same key wait for the first asker's probe.
    """

    def __init__(self, size: int, budget: int = DEFAULT_PROBE_CACHE_BYTES) -> None:
        self._size = size
        self._budget = budget
        self.used = 0  # bytes of the outcomes kept, as `outcome_cost` counts them
        self._done: OrderedDict[tuple[str, str], tuple[ProbeOutcome, int]] = OrderedDict()
        self._pending: dict[tuple[str, str], trio.Event] = {}
        self.probes_run = 0
        self.hits = 0

    async def get(
        self, key: tuple[str, str], run: Callable[[], Awaitable[ProbeOutcome]]
    ) -> ProbeOutcome:
        while True:
            done = self.lookup(key)
            if done is not None:
                return done
            event = self._pending.get(key)
            if event is None:
                break
            await event.wait()
        self.begin(key)
        outcome: ProbeOutcome | None = None
        try:
            outcome = await run()
            return outcome
        finally:
            self.finish(key, outcome)

    # The steps of `get`, for an owner that hands the probe to someone else
    # (`scanner.workers`): `lookup`, else `begin` unless `probing`, then `finish`.

    def lookup(self, key: tuple[str, str]) -> ProbeOutcome | None:
        """The outcome kept for `key` (counted as a hit), or None."""
        done = self._done.get(key)
        if done is None:
            return None
        self._done.move_to_end(key)
        self.hits += 1
        return done[0]

    def probing(self, key: tuple[str, str]) -> bool:
        """Whether someone has begun the probe of `key` and not finished it."""
        return key in self._pending

    def begin(self, key: tuple[str, str]) -> None:
        """Take the probe of `key`: others asking for it wait until `finish`."""
        self._pending[key] = trio.Event()

    def finish(self, key: tuple[str, str], outcome: ProbeOutcome | None) -> None:
        """End the probe of `key` with its outcome (kept), or None: given up, and the
        next of those waiting takes it over."""
        if outcome is not None:
            self.probes_run += 1
            kept = without_der(outcome)
            cost = outcome_cost(kept)
            self._done[key] = (kept, cost)
            self.used += cost
            while len(self._done) > self._size or self.used > self._budget:
                _, (_, dropped) = self._done.popitem(last=False)
                self.used -= dropped
        self._pending.pop(key).set()


def outcome_cost(outcome: ProbeOutcome) -> int:
    """About the bytes an outcome without DER holds: its texts, summaries and objects."""
    texts = [
        *outcome.transcript,
        *outcome.ehlo_keywords,
        *(outcome.ehlo_after_tls or ()),
        outcome.greeting or "",
        outcome.starttls_reply_text or "",
        outcome.handshake_error or "",
        outcome.interruption.detail if outcome.interruption is not None else "",
        outcome.after_tls.detail if outcome.after_tls is not None else "",
        outcome.dane.detail if outcome.dane is not None else "",
    ]
    cost = 1500 + sum(60 + len(text) for text in texts)
    if outcome.tls is not None:
        cost += sum(summary_cost(summary) for summary in outcome.tls.chain)
    return cost


def without_der(outcome: ProbeOutcome) -> ProbeOutcome:
    """Drop raw DER from a cached outcome; the summaries carry what the output needs."""
    if outcome.tls is None or not outcome.tls.chain_der:
        return outcome
    return dataclasses.replace(outcome, tls=dataclasses.replace(outcome.tls, chain_der=()))


class DnsLoad(Protocol):
    """What the governor reads of the resolver's counters."""

    @property
    def queries(self) -> int: ...

    @property
    def timeouts(self) -> int: ...


class LoadGovernor:
    """Domains in flight, lowered when the scan's own load makes DNS tries time out.

    Under full load a resolver (or the path to it) drops queries; the resolver retries
    them, but when tries time out faster than retries can cover, lookups are lost and
    verdicts turn false ("MX lookup failed"). The signal is the share of DNS tries
    without an answer over the last `WINDOW` tries: above `HIGH` the number of domains in
    flight halves (never below `floor`); below `LOW` it grows back by a tenth of the
    ceiling. `lowered` and `lowest` go into the run's summary.

    Load loses tries all over the scan; a domain whose name servers never answer
    loses all of its own. With the timeouts counted per domain (`by_owner`, the
    resolver's `timeouts_by_owner`), at most `PER_DOMAIN` of one domain's count in a
    window, so one domain's DNS cannot lower the concurrency of the whole scan.
    """

    WINDOW: Final = 400  # DNS tries per measurement
    HIGH: Final = 0.05
    LOW: Final = 0.005
    PER_DOMAIN: Final = 8  # timed-out tries of one domain that count in a window

    def __init__(self, ceiling: int, floor: int | None = None) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = max(
            1, min(self.ceiling, floor if floor is not None else max(4, ceiling // 10))
        )
        self.limiter = trio.CapacityLimiter(self.ceiling)
        self.lowered = 0
        self.lowest = self.ceiling
        self._tries = 0
        self._timeouts = 0

    def observe(self, load: DnsLoad, by_owner: MutableMapping[str, int] | None = None) -> None:
        """Read the resolver's counters; `by_owner` (timed-out tries per domain since the
        last window) is taken and emptied at each window."""
        tries = load.queries
        if tries - self._tries < self.WINDOW:
            return
        lost = load.timeouts - self._timeouts
        if by_owner is not None:
            lost -= sum(max(0, count - self.PER_DOMAIN) for count in by_owner.values())
            by_owner.clear()
        share = max(0, lost) / (tries - self._tries)
        self._tries, self._timeouts = tries, load.timeouts
        current = int(self.limiter.total_tokens)
        if share > self.HIGH and current > self.floor:
            current = max(self.floor, current // 2)
            self.lowered += 1
            self.lowest = min(self.lowest, current)
        elif share < self.LOW and current < self.ceiling:
            current = min(self.ceiling, current + max(1, self.ceiling // 10))
        self.limiter.total_tokens = current


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
        gate: RunGate | None = None,
        probe_cache: ProbeRegistry | None = None,
    ) -> None:
        self.resolver = resolver
        self.tls = tls
        self.settings = settings
        self.clock = clock
        self.probe_cache: ProbeRegistry = probe_cache or ProbeCache(settings.probe_cache_size)
        self.gate: RunGate = gate or self.local_gate(settings)
        self.stats = ScanStats()
        self.governor: LoadGovernor | None = None  # set by `run`
        self.egress = Decision(Egress.PENDING)  # port 25 from here: set by `run`

    @staticmethod
    def local_gate(settings: ScanSettings) -> Gate:
        """The gate of a run in one process (or of the parent of worker processes)."""
        return Gate(
            allow_private=settings.allow_private,
            exclusions=settings.exclusions,
            per_ip=settings.per_ip,
            max_names_per_address=settings.caps.max_names_per_address,
        )

    # ------------------------------------------------------------ one domain

    async def scan_domain(self, domain: str) -> DomainResult:
        """One domain → its result. Never raises except for cancellation."""
        owner = LOOKUP_OWNER.set(domain)  # the lookups of this task and its children
        try:
            return await self._scan_domain_within_deadline(domain)
        finally:
            LOOKUP_OWNER.reset(owner)

    async def _scan_domain_within_deadline(self, domain: str) -> DomainResult:
        started = self.clock()
        if self.gate.name_refusal(domain) is not None:
            error = ScanError(ErrorKind.EXCLUDED, "the domain is listed in --exclude")
            return DomainResult.failed(domain, error, started)
        try:
            with trio.move_on_after(self.settings.domain_timeout) as scope:
                result = await self._scan_domain(domain, started)
                if self.settings.received is not None:
                    result = await with_received(self.settings.received, result, self.clock())
                return result
            assert scope.cancelled_caught
            timeout = self.settings.domain_timeout
            error = ScanError(ErrorKind.TIMEOUT, f"the domain's scan exceeded {timeout:g} s")
            return DomainResult.failed(domain, error, started)
        except Exception as exc:
            summary = traceback.format_exception(exc, limit=-3)
            detail = " | ".join(line.strip().replace("\n", " ") for line in summary[-4:])
            words = f"{type(exc).__name__}: {exc} [{detail}]"  # a message may quote a server
            error = ScanError(ErrorKind.INTERNAL_ERROR, words[:MAX_ERROR_TEXT])
            return DomainResult.failed(domain, error, started)

    def invalid_input(self, item: InvalidInput) -> DomainResult:
        error = ScanError(ErrorKind.INVALID_DOMAIN, item.reason)
        return DomainResult.failed(item.text, error, self.clock())

    async def _scan_domain(self, domain: str, started: datetime) -> DomainResult:
        if self.resolver.validating is None:  # once per run: may DNSSEC (DANE) be judged?
            doing("asking the resolver whether it validates DNSSEC")
            await self.resolver.detect_validation()
        doing("looking up the _mta-sts and _smtp._tls records and the MX hosts of {}", domain)
        sts_txt, tlsrpt_txt, mx = await _gather3(
            self.resolver.txt(f"_mta-sts.{domain}"),
            self.resolver.txt(f"_smtp._tls.{domain}"),
            self.resolver.mx(domain),
        )
        sts_record, sts_error = sts_record_from(sts_txt)
        tlsrpt_record, tlsrpt_error = tlsrpt_record_from(tlsrpt_txt)
        caps = self.settings.caps
        gate = DomainGate(self.gate, ConnectionBudget(caps.max_connections))
        mx_records, over_limit = cut_mx(mx.records, caps)

        policy_fetch: PolicyFetch | None = None

        async def fetch() -> None:  # only with a record to fetch for
            nonlocal policy_fetch
            doing("fetching the policy from https://mta-sts.{}/.well-known/mta-sts.txt", domain)
            policy_fetch = await fetch_policy(
                domain,
                resolver=self.resolver,
                tls=self.tls,
                settings=self.settings.fetch,
                now=self.clock(),
                gate=gate,
            )

        async def hosts() -> tuple[list[MxHostFacts], list[OverLimit]]:
            return await self._hosts(
                [(r.host, r.preference) for r in mx_records], MxSource.DNS, gate, caps.max_addresses
            )

        if sts_record is None:  # no policy to fetch: no nursery
            dns_hosts, over = await hosts()
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                dns_hosts, over = await hosts()
        over_limit += over
        policy = policy_fetch.policy if policy_fetch is not None else None
        policy_hosts: list[MxHostFacts] = []
        if policy is not None:
            every_mx = [record.host for record in mx.records]
            standby, over = cut_standby(policy_only_hosts(policy, every_mx), caps)
            over_limit += over
            left = caps.max_addresses - sum(len(h.probes) for h in dns_hosts)
            policy_hosts, over = await self._hosts(
                [(host, None) for host in standby], MxSource.POLICY, gate, left
            )
            over_limit += over

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
            over_limit=tuple(over_limit),
        )
        return DomainResult(
            domain=domain,
            scanned_at=started,
            finished_at=self.clock(),
            facts=facts,
            verdict=assess_domain(facts),
        )

    async def _hosts(
        self,
        hosts: Sequence[tuple[str, int | None]],
        source: MxSource,
        gate: DomainGate,
        max_addresses: int,
    ) -> tuple[list[MxHostFacts], list[OverLimit]]:
        """Resolve every host, plan the addresses within the caps, then probe the plan."""
        answers: list[tuple[AddressAnswer, AddressAnswer]] = [
            (AddressAnswer(DnsStatus.ERROR), AddressAnswer(DnsStatus.ERROR))
        ] * len(hosts)

        async def resolve(index: int, hostname: str) -> None:
            answers[index] = await self.resolver.addresses(hostname)

        await _each(
            [partial(resolve, index, hostname) for index, (hostname, _) in enumerate(hosts)]
        )
        caps = self.settings.caps
        if max_addresses != caps.max_addresses:
            caps = dataclasses.replace(caps, max_addresses=max(0, max_addresses))
        plans, over_limit = plan_addresses(
            [
                (name, a.addresses + aaaa.addresses)
                for (name, _), (a, aaaa) in zip(hosts, answers, strict=True)
            ],
            caps,
        )
        targets = [
            (hostname, ip) for (hostname, _), plan in zip(hosts, plans, strict=True) for ip in plan
        ]
        outcomes: dict[tuple[str, str], ProbeOutcome] = {}
        # RFC 7672 §2.2.2: TLSA per host, before the probes, so each probe's chain is
        # matched while its DER is at hand (the probe cache keeps no DER).
        danes = await hosts_dane(
            self.resolver,
            [(name, answer) for (name, _), answer in zip(hosts, answers, strict=True)],
            port=self.settings.probe.smtp_port,
        )
        dane_of = {name: dane for (name, _), dane in zip(hosts, danes, strict=True)}

        async def one(hostname: str, ip: str) -> None:
            outcomes[(hostname, ip)] = await self.probe_address(
                hostname, ip, gate, dane_of[hostname]
            )

        await _each([partial(one, hostname, ip) for hostname, ip in targets])
        facts: list[MxHostFacts] = []
        for (hostname, preference), (a, aaaa), plan in zip(hosts, answers, plans, strict=True):
            # The answers as used: cut to the plan, in its stable order, so that what lies
            # beyond a cap is neither contacted nor listed (it is counted in over_limit).
            facts.append(
                MxHostFacts(
                    hostname=hostname,
                    preference=preference,
                    source=source,
                    addresses=(
                        _cut_to(a, tuple(ip for ip in plan if ip in a.addresses)),
                        _cut_to(
                            aaaa,
                            tuple(
                                ip for ip in plan if ip in aaaa.addresses and ip not in a.addresses
                            ),
                        ),
                    ),
                    probes=tuple(outcomes[(hostname, ip)] for ip in plan),
                    addresses_cut=len(set(a.addresses + aaaa.addresses)) - len(plan),
                    dane=dane_of[hostname],
                )
            )
        return facts, over_limit

    async def probe_address(
        self, hostname: str, ip: str, gate: DomainGate | None = None, dane: HostDane | None = None
    ) -> ProbeOutcome:
        """One probe per (MX host, address) per run, within the address's connection slots.

        A server that says it is busy (421 or another 4xx greeting, or a reset from an
        address that said so before) is tried again after a pause, at most
        `busy_retries` times, as a sending MTA would; the failed attempts stay in the
        transcript. Every attempt counts against the domain's connection budget.
        """
        gate = gate or DomainGate(self.gate, ConnectionBudget(self.settings.caps.max_connections))
        refusal = (
            self.gate.name_refusal(hostname)
            or self.gate.admit(ip)
            or await self.gate.admit_name(ip, hostname)
        )
        if refusal is None and ":" in ip and not self.settings.ipv6_route(ip):
            refusal = no_ipv6_route()
        if refusal is not None:
            return ProbeOutcome(hostname, ip, AddressStatus.NOT_TESTABLE, interruption=refusal)
        return await self.probe_admitted(hostname, ip, gate, dane)

    async def probe_admitted(
        self, hostname: str, ip: str, gate: DomainGate, dane: HostDane | None
    ) -> ProbeOutcome:
        """The probe of an admitted (MX host, address), once per run through the probe cache.

        A staged scan's discover stage puts the target aside here instead
        (`scanner.stages.discover`).
        """

        async def run_probe() -> ProbeOutcome:
            outcome = await self._probe_with_retries(hostname, ip, gate)
            # The DANE match needs the chain's DER (RFC 7672 §3); nothing after it does.
            return without_der(attach_check(outcome, dane, mx_host=hostname, at=self.clock()))

        return await self.probe_cache.get((hostname, ip), run_probe)

    async def _probe_with_retries(self, hostname: str, ip: str, gate: DomainGate) -> ProbeOutcome:
        notes: list[str] = []
        attempt = 0
        busy_outcome: ProbeOutcome | None = None  # the last session, which was busy
        while True:
            refusal = gate.admit(ip)
            if refusal is not None and busy_outcome is not None:
                # Over-limit means never contacted: the busy answer stands, said so.
                outcome = busy_outcome
                assert outcome.interruption is not None
                notes[-1] = (
                    f"[attempt {attempt}: {reason_text(outcome.interruption)}; "
                    f"not tried again: {reason_text(refusal)}]"
                )
                break
            attempt += 1
            if refusal is not None:
                outcome = ProbeOutcome(
                    hostname, ip, AddressStatus.NOT_TESTABLE, interruption=refusal
                )
                break
            async with gate.slot(ip):
                doing(
                    "probing {} ({}): STARTTLS on port {}",
                    hostname,
                    ip,
                    self.settings.probe.smtp_port,
                )
                outcome = await probe(
                    hostname, ip, tls=self.tls, settings=self.settings.probe, now=self.clock()
                )
            busy = is_busy(outcome.interruption, was_busy=self.gate.was_busy(ip))
            if not busy:
                if outcome.status is AddressStatus.TESTED:
                    self.gate.served(ip)
                break
            self.gate.busy(ip)
            if attempt > self.settings.busy_retries:
                break
            pause = retry_pause(attempt, self.settings.retry_backoff)
            assert outcome.interruption is not None
            busy_outcome = outcome
            notes.append(
                f"[attempt {attempt}: {reason_text(outcome.interruption)}; "
                f"tried again after {pause:g} s]"
            )
            doing(
                "{} ({}) answered {}: trying again in {:g} s (attempt {})",
                hostname,
                ip,
                reason_text(outcome.interruption),
                pause,
                attempt + 1,
            )
            await trio.sleep(pause)
        if attempt == outcome.attempts and not notes:
            return outcome  # one session, nothing to add
        return dataclasses.replace(
            outcome, attempts=attempt, transcript=(*notes, *outcome.transcript)
        )

    # ------------------------------------------------------------ many domains

    async def run(
        self,
        items: AsyncIterator[str | InvalidInput | RankedInput],
        write_line: Callable[[str], None],
        *,
        progress: ProgressSink | None = None,
        line_of: Callable[[DomainResult], tuple[str, DomainResult]] | None = None,
    ) -> ScanStats:
        """Scan every item and hand each finished line to `write_line`, as it finishes.

        `line_of` builds the line of a result (the results line, `output.written_line`,
        unless a staged scan's discover stage writes its own records).
        Cancelling the caller's scope stops the scan: in-flight domains are
        dropped, every line already handed over is complete.
        """
        report = self.settings.report
        build = line_of or (lambda result: written_line(result, report))
        concurrency = max(1, self.settings.concurrency)
        governor = self.governor = LoadGovernor(concurrency)
        work_send, work_receive = trio.open_memory_channel[str | InvalidInput | RankedInput](
            concurrency
        )
        line_send, line_receive = trio.open_memory_channel[DomainResult](concurrency)

        async def producer() -> None:
            async with work_send:
                async for item in items:
                    await work_send.send(item)

        async def worker(
            receive: trio.MemoryReceiveChannel[str | InvalidInput | RankedInput],
            send: trio.MemorySendChannel[DomainResult],
        ) -> None:
            async with receive, send:
                async for item in receive:
                    rank = item.rank if isinstance(item, RankedInput) else None
                    target = item.item if isinstance(item, RankedInput) else item
                    if isinstance(target, InvalidInput):
                        result = self.invalid_input(target)
                    else:
                        async with holding(governor.limiter):
                            result = await self.scan_domain(target)
                    await send.send(dataclasses.replace(result, rank=rank) if rank else result)

        def deliver(written: tuple[str, DomainResult]) -> None:
            line, result = written
            write_line(line)
            self._count(result)
            if progress is not None:
                progress.domain_done(result)

        def blocked(_: Decision) -> None:
            nursery.cancel_scope.cancel()

        watch = self.port25_watch(deliver, blocked)

        async def writer() -> None:
            async with line_receive:
                async for scanned in line_receive:
                    line, result = build(scanned)
                    connects = (
                        self.connects_of(result) if watch.pending else self.attempts_of(result)
                    )
                    await watch.add((line, result), connects)
                    governor.observe(self.resolver.load, self.resolver.load.timeouts_by_owner)
            self.egress = await watch.finish()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            async with work_receive, line_send:
                nursery.start_soon(producer)
                for _ in range(concurrency):
                    nursery.start_soon(worker, work_receive.clone(), line_send.clone())
        return self.stats

    # ------------------------------------------------------------ port 25 from here

    def port25_watch(
        self, release: Callable[[_T], None], on_blocked: Callable[[Decision], None]
    ) -> Port25Watch[_T]:
        """The run's watch on port 25 (`scanner.port25`), or one that holds nothing when off."""
        egress = self.settings.egress
        if not egress.enabled:
            return disabled_watch(release)

        def stop(decision: Decision) -> None:
            self.egress = decision
            on_blocked(decision)

        return Port25Watch(egress.thresholds, self.ask_canaries, release, stop)

    async def ask_canaries(self) -> ControlEvidence:
        """Connect to the canaries (port 25) and the controls (another port)."""
        egress = self.settings.egress
        return await gather_evidence(
            self.resolver, egress.canaries, egress.controls, self.settings.probe.step_timeout
        )

    def connects_of(self, result: DomainResult) -> ConnectTally:
        if result.facts is None:
            return ConnectTally()
        return tally_of_facts(result.facts, loopback=self.settings.egress.thresholds.loopback)

    def attempts_of(self, result: DomainResult) -> ConnectTally:
        """`connects_of` without the networks: the decision is made, the rate goes on."""
        egress = self.settings.egress
        if result.facts is None or not egress.enabled:
            return _NO_CONNECTS
        return ConnectTally(
            rate=attempts_of_facts(result.facts, loopback=egress.thresholds.loopback)
        )

    def _count(self, result: DomainResult) -> None:
        self.stats.domains += 1
        if result.error is not None:
            self.stats.errors += 1
        if result.enforce_ready:
            self.stats.ready += 1
        if result.has_indicators:
            self.stats.with_indicators += 1


async def _each(calls: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run `calls` concurrently; the first in this task (a lone one without a nursery)."""
    if len(calls) == 1:
        await calls[0]()
    elif calls:
        async with trio.open_nursery() as nursery:
            for call in calls[1:]:
                nursery.start_soon(call)
            await calls[0]()


def _cut_to(answer: AddressAnswer, addresses: tuple[str, ...]) -> AddressAnswer:
    """`answer` with only `addresses` (itself when nothing is cut)."""
    if addresses == answer.addresses:
        return answer
    return dataclasses.replace(answer, addresses=addresses)


async def _gather3(
    sts: Awaitable[TxtAnswer], tlsrpt: Awaitable[TxtAnswer], mx: Awaitable[MxAnswer]
) -> tuple[TxtAnswer, TxtAnswer, MxAnswer]:
    """The three lookups every domain starts with, at once."""
    sts_answer = tlsrpt_answer = TxtAnswer(DnsStatus.ERROR)
    mx_answer = MxAnswer(DnsStatus.ERROR)

    async def get_sts() -> None:
        nonlocal sts_answer
        sts_answer = await sts

    async def get_tlsrpt() -> None:
        nonlocal tlsrpt_answer
        tlsrpt_answer = await tlsrpt

    async def get_mx() -> None:
        nonlocal mx_answer
        mx_answer = await mx

    async with trio.open_nursery() as nursery:
        nursery.start_soon(get_sts)
        nursery.start_soon(get_tlsrpt)
        await get_mx()  # in this task: one task fewer to start
    return sts_answer, tlsrpt_answer, mx_answer
