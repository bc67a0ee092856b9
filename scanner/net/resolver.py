"""The scanner's one DNS client: a lean stub resolver on trio.

Every lookup of a run (MX, A, AAAA, TXT, TLSA, the policy host's address) goes
through one `Resolver`, so the fixture lab, the policy fetch and the probes see
the same answers. Results are typed values (`TxtAnswer`, `MxAnswer`,
`AddressAnswer`, `TlsaAnswer`) whose `status` tells NXDOMAIN, NODATA, SERVFAIL,
REFUSED, timeout and other errors apart and whose `dnssec` says what the resolver
said about validation; no lookup raises for an expected failure.

Theory of operation
-------------------
Questions and replies are built, matched and parsed by the sans-IO
`scanner.core.dns_wire` (queries from dnspython's message classes, replies by a
parser of its own; not dnspython's resolver); this module only moves bytes, holds
deadlines, caches and counts.

* **Deadlines.** A lookup runs under one deadline (`timeout`). Each try waits
  `per_try` (a third of the timeout, between 0.3 and 2 s), never past the
  lookup's deadline, and the tries go over the nameservers in turn until one
  gives a usable reply or the deadline passes: a lost datagram costs one try,
  never the lookup. A reply to an earlier try still counts. The deadline is
  passed down to each try's cancel scope rather than held by a scope of its own
  (one cancel scope per try, not two).
* **Sockets.** A lookup takes one UDP socket from a pool for its whole life
  (all its tries) and gives it back; no other lookup reads from it meanwhile, so
  no receiver task is needed. Sockets are bound to a port the kernel picks at
  random and retired after `MAX_SOCKET_USES` lookups, so the source port keeps
  changing (RFC 5452 §10); at most `MAX_IDLE_SOCKETS` wait idle per address
  family. The pool belongs to one `trio.run` and is closed when that run ends.
* **Matching.** A datagram counts only if its ID is one this lookup has out, it
  comes from the address and port that try went to, and it echoes the question
  (RFC 5452 §§4, 9.1); anything else is ignored and the wait goes on.
* **Failures.** TC makes the same try go to TCP. SERVFAIL, REFUSED, other error
  codes, a refused (oversize, unparseable) reply or a network error take that
  server out of this lookup and the next one is asked; when none is left, the
  failures decide the status (all REFUSED: `refused`; any SERVFAIL: `servfail`;
  else `error`). At the deadline, with no failure seen, the status is `timeout`.
* **CNAMEs** are followed inside each reply and, when a reply stops at a CNAME
  without an answer or an SOA, by further queries, up to `MAX_CNAME_LINKS`.
* **DNSSEC.** Queries carry EDNS0 with DO and AD (RFC 6840 §5.7). AD in a reply
  makes the answer `secure`; no AD from a resolver that `detect_validation()`
  found validating makes it `insecure`; SERVFAIL with an RFC 8914 extended error
  saying validation failed, or SERVFAIL that goes away when asked again with CD
  set, makes it `bogus` (status `servfail`, no records: bogus data is never
  returned); a resolver that does not validate (or was not checked and gave no
  AD) leaves it `unvalidated`. AD is only as trustworthy as the path to the
  resolver (RFC 4035 §4.9.3): use a resolver on this host or a trusted network.
* **Cache.** Answers and negative answers are cached for their TTL in bounded
  LRUs (RFC 2308 §5: a negative answer for min(SOA TTL, SOA MINIMUM), at most an
  hour, and only with an SOA); failures are not cached. Negative answers have a
  smaller LRU of their own, so a stream of one-off NXDOMAINs never evicts the
  shared answers (provider MX hosts) that a bulk run lives on.
* **Flow control.** A capacity limiter bounds lookups in flight (a cache hit
  takes no slot).
* **Transports.** `probe_transports` (for `scanner doctor`) asks every nameserver
  one question with a large answer over UDP, read as it came (size, TC, OPT), and
  over TCP, outside the cache and the counters.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
from collections import Counter, OrderedDict
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype
import dns.reversename
import trio

from scanner.core.dns_wire import (
    FINAL_RCODES,
    MAX_CNAME_LINKS,
    MAX_POSITIVE_TTL,
    MAX_RESPONSE_BYTES,
    NEED_DATA,
    TRUNCATED,
    Address,
    Exchange,
    ExtendedError,
    Mismatch,
    Outcome,
    PtrData,
    Query,
    RecordData,
    Refusal,
    ReplyShape,
    Response,
    TcpFramer,
    TransportProbe,
    address_text,
    build_query,
    interpret,
    mx_record,
    name_text,
    name_wire,
    reply_shape,
    status_of_rcode,
    tlsa_record,
    txt_text,
)
from scanner.models import (
    AddressAnswer,
    DnssecStatus,
    DnsStatus,
    MxAnswer,
    MxRecord,
    TlsaAnswer,
    TxtAnswer,
)
from scanner.net.limits import holding

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_CACHE_SIZE = 10_000
RESOLV_CONF: Final = Path("/etc/resolv.conf")

# Source port churn (RFC 5452 §10): a pooled socket serves this many lookups, then a
# fresh one with a new random port replaces it.
MAX_SOCKET_USES: Final = 100
MAX_IDLE_SOCKETS: Final = 64
# Negative answers get an LRU of this share of the cache size.
NEGATIVE_CACHE_SHARE: Final = 4


def per_try_timeout(timeout: float) -> float:
    """Several tries inside one lookup's deadline: a third of it, between 0.3 and 2 s."""
    return max(min(timeout / 3, 2.0), 0.3)


# ---------------------------------------------------------------- nameservers


@dataclass(frozen=True, slots=True)
class Nameserver:
    ip: str
    port: int = 53


def parse_nameserver(text: str) -> Nameserver:
    """Parse `IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 address (`--resolver`)."""
    value = text.strip()
    host, port = value, 53
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"invalid resolver {text!r}: missing ']'")
        host = value[1:end]
        rest = value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid resolver {text!r}")
            port = _parse_port(rest[1:], text)
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        port = _parse_port(port_text, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"invalid resolver {text!r}: {host!r} is not an IP address") from None
    return Nameserver(host, port)


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"invalid resolver {whole!r}: bad port {text!r}")
    return int(text)


class NoSystemResolver(dns.exception.DNSException):
    """resolv.conf names no usable nameserver (or cannot be read)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)  # type: ignore[no-untyped-call]  # dnspython is untyped here


def system_nameservers(path: Path = RESOLV_CONF) -> tuple[Nameserver, ...]:
    """The `nameserver` lines of resolv.conf(5), in order; other lines are ignored."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise NoSystemResolver(f"cannot read {path}: {exc.strerror}") from None
    found: list[Nameserver] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                ipaddress.ip_address(words[1])
            except ValueError:
                continue
            found.append(Nameserver(words[1]))
    if not found:
        raise NoSystemResolver(f"no nameserver in {path}")
    return tuple(found)


@dataclass(frozen=True, slots=True)
class _Server:
    """A nameserver as the sockets see it: normalised address, address family."""

    address: Address
    family: int

    @classmethod
    def of(cls, nameserver: Nameserver) -> _Server:
        ip = ipaddress.ip_address(nameserver.ip)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return cls((str(ip), nameserver.port), family)

    def __str__(self) -> str:
        host, port = self.address
        return f"[{host}]:{port}" if self.family == socket.AF_INET6 else f"{host}:{port}"


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class ResolverStats:
    """What the resolver did in a run, for the run summary.

    `lookups` counts every lookup asked (cache hits included); `udp_queries` and
    `tcp_queries` the messages sent; `retries` the tries after the first of a
    question; `timeouts` the tries left without a matching reply; `truncations` the
    TC replies (each followed by a TCP query); `ignored_replies` the datagrams that
    matched no question out (RFC 5452); `refused_replies` the matched replies over
    the limits or unparseable; `network_errors` failed sends and connects;
    `cd_retries` the SERVFAILs asked again with CD. `by_status` and `by_dnssec`
    count the typed answers returned.
    """

    lookups: int = 0
    cache_hits: int = 0
    udp_queries: int = 0
    tcp_queries: int = 0
    retries: int = 0
    timeouts: int = 0
    truncations: int = 0
    ignored_replies: int = 0
    refused_replies: int = 0
    network_errors: int = 0
    cd_retries: int = 0
    by_status: tuple[tuple[DnsStatus, int], ...] = ()
    by_dnssec: tuple[tuple[DnssecStatus, int], ...] = ()

    @property
    def queries(self) -> int:
        return self.udp_queries + self.tcp_queries


# Whom a lookup is for: the scanned domain, set around a domain's scan and inherited by
# the tasks it starts. Timed-out tries are counted per owner too, so the scan's load
# governor can tell a loaded resolver (timeouts spread over many domains) from one
# domain whose name servers do not answer.
LOOKUP_OWNER: ContextVar[str] = ContextVar("lookup_owner", default="")
_MAX_OWNERS: Final = 4096  # owners counted between two reads by the governor


@dataclass(slots=True)
class _Counters:
    lookups: int = 0
    cache_hits: int = 0
    udp_queries: int = 0
    tcp_queries: int = 0
    retries: int = 0
    timeouts: int = 0
    truncations: int = 0
    ignored_replies: int = 0
    refused_replies: int = 0
    network_errors: int = 0
    cd_retries: int = 0
    by_status: Counter[DnsStatus] = field(default_factory=Counter)
    by_dnssec: Counter[DnssecStatus] = field(default_factory=Counter)
    # timed-out tries by `LOOKUP_OWNER`, since the governor last took them
    timeouts_by_owner: Counter[str] = field(default_factory=Counter)

    @property
    def queries(self) -> int:
        return self.udp_queries + self.tcp_queries

    def count_timeout(self) -> None:
        self.timeouts += 1
        if len(self.timeouts_by_owner) >= _MAX_OWNERS:
            self.timeouts_by_owner.clear()
        self.timeouts_by_owner[LOOKUP_OWNER.get()] += 1

    def snapshot(self) -> ResolverStats:
        return ResolverStats(
            lookups=self.lookups,
            cache_hits=self.cache_hits,
            udp_queries=self.udp_queries,
            tcp_queries=self.tcp_queries,
            retries=self.retries,
            timeouts=self.timeouts,
            truncations=self.truncations,
            ignored_replies=self.ignored_replies,
            refused_replies=self.refused_replies,
            network_errors=self.network_errors,
            cd_retries=self.cd_retries,
            by_status=tuple((s, self.by_status[s]) for s in DnsStatus if self.by_status[s]),
            by_dnssec=tuple((s, self.by_dnssec[s]) for s in DnssecStatus if self.by_dnssec[s]),
        )


# ---------------------------------------------------------------- lookups


@dataclass(frozen=True, slots=True)
class _Resolved:
    """One lookup after the whole CNAME chain: what the typed answers are made of.

    `authenticated`: every reply of the chain had AD. `chain_authenticated`: every
    reply that carried a CNAME link had AD (true when there was no link).
    """

    status: DnsStatus
    records: tuple[RecordData, ...] = ()
    detail: str = ""
    canonical: str | None = None
    authenticated: bool = False
    chain_authenticated: bool = False
    bogus: bool = False
    extended_error: ExtendedError | None = None


_TIMED_OUT: Final = _Resolved(DnsStatus.TIMEOUT, detail="no answer before the deadline")


@dataclass(slots=True)
class _Failures:
    """What the servers asked for one question said when they gave no usable answer.

    Kept outside the deadline's scope, so a lookup cut short still tells a SERVFAIL
    it received from a plain timeout.
    """

    seen: list[tuple[DnsStatus, str, ExtendedError | None]] = field(default_factory=list)

    def add(
        self, server: _Server, status: DnsStatus, detail: str, ede: ExtendedError | None
    ) -> None:
        self.seen.append((status, f"{detail} from {server}", ede))

    def explained_without_dnssec(self) -> bool:
        """A SERVFAIL came with an extended error that names a cause other than DNSSEC."""
        return any(ede is not None and not ede.dnssec_failure for _, _, ede in self.seen)

    def summary(self) -> _Resolved:
        if not self.seen:
            return _TIMED_OUT
        for status, _, ede in self.seen:
            if status is DnsStatus.SERVFAIL and ede is not None and ede.dnssec_failure:
                return _Resolved(
                    DnsStatus.SERVFAIL,
                    detail=f"DNSSEC validation failed (SERVFAIL, extended error {ede})",
                    bogus=True,
                    extended_error=ede,
                )
        statuses = {status for status, _, _ in self.seen}
        if statuses == {DnsStatus.REFUSED}:
            return _Resolved(DnsStatus.REFUSED, detail="every nameserver refused the query")
        if DnsStatus.SERVFAIL in statuses:
            ede = next((e for s, _, e in self.seen if s is DnsStatus.SERVFAIL and e), None)
            detail = "no nameserver gave an answer (SERVFAIL)"
            if ede is not None:
                detail += f"; extended error {ede}"
            return _Resolved(DnsStatus.SERVFAIL, detail=detail, extended_error=ede)
        _, detail, ede = self.seen[-1]
        return _Resolved(DnsStatus.ERROR, detail=detail, extended_error=ede)


@dataclass(frozen=True, slots=True)
class _Unreachable:
    """A try that failed in the network (send, connect, a broken TCP stream)."""

    detail: str


_TryResult = Response | Refusal | _Unreachable | None  # None: no matching reply in time


# ---------------------------------------------------------------- cache


_CacheKey = tuple[str, int]


class _AnswerCache:
    """TTL-aware LRUs of resolved lookups, keyed by (lower-cased name, type).

    Answers and negative answers (NXDOMAIN, NODATA) are bounded separately.
    """

    __slots__ = ("_negative", "_negative_size", "_positive", "_positive_size")

    def __init__(self, size: int) -> None:
        self._positive: OrderedDict[_CacheKey, tuple[float, _Resolved]] = OrderedDict()
        self._negative: OrderedDict[_CacheKey, tuple[float, _Resolved]] = OrderedDict()
        self._positive_size = max(size, 0)
        self._negative_size = max(size // NEGATIVE_CACHE_SHARE, 1) if size > 0 else 0

    def __len__(self) -> int:
        return len(self._positive) + len(self._negative)

    def get(self, key: _CacheKey, now: float) -> _Resolved | None:
        for store in (self._positive, self._negative):
            entry = store.get(key)
            if entry is not None:
                expires, resolved = entry
                if expires <= now:
                    del store[key]
                    return None
                store.move_to_end(key)
                return resolved
        return None

    def put(self, key: _CacheKey, resolved: _Resolved, ttl: int, now: float) -> None:
        if ttl <= 0:
            return
        if resolved.status is DnsStatus.ANSWER:
            store, size = self._positive, self._positive_size
        else:
            store, size = self._negative, self._negative_size
        if size <= 0:
            return
        store[key] = (now + ttl, resolved)
        store.move_to_end(key)
        while len(store) > size:
            store.popitem(last=False)


# ---------------------------------------------------------------- sockets


@dataclass(slots=True)
class _UdpSocket:
    """A non-blocking stdlib datagram socket: sent to and read directly, waited on with
    trio's `wait_readable` only when nothing is queued (cheaper than `trio.socket`'s
    wrapper per call, and a lookup makes two or more calls)."""

    sock: socket.socket
    family: int
    uses: int = 0

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class _SocketPool:
    """Idle UDP sockets of one trio run, by address family (see the module docstring)."""

    __slots__ = ("_closed", "_idle", "opened")

    def __init__(self) -> None:
        self._idle: dict[int, list[_UdpSocket]] = {}
        self._closed = False
        self.opened = 0

    def take(self, family: int) -> _UdpSocket:
        """An idle socket chosen at random, or a new one on a kernel-chosen port."""
        idle = self._idle.get(family)
        if idle:
            index = random.randrange(len(idle))
            idle[index], idle[-1] = idle[-1], idle[index]
            return idle.pop()
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        except BaseException:
            sock.close()
            raise
        self.opened += 1
        return _UdpSocket(sock, family)

    def give_back(self, udp: _UdpSocket) -> None:
        udp.uses += 1
        idle = self._idle.setdefault(udp.family, [])
        if self._closed or udp.uses >= MAX_SOCKET_USES or len(idle) >= MAX_IDLE_SOCKETS:
            udp.close()
        else:
            idle.append(udp)

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for udp in idle:
                udp.close()
            idle.clear()


async def _close_at_run_end(pool: _SocketPool) -> None:
    try:
        await trio.sleep_forever()
    finally:
        pool.close()


def _errno_name(exc: OSError) -> str:
    if exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


# ---------------------------------------------------------------- the resolver


class Resolver:
    """Typed DNS lookups for one run. Build once with `Resolver.create`.

    `validating` is None until `detect_validation()` has run, then whether the
    resolver validates DNSSEC. `lookups` counts lookups asked; `stats` is a
    snapshot of every counter.
    """

    def __init__(
        self,
        nameservers: Sequence[Nameserver],
        *,
        timeout: float,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if not nameservers:
            raise ValueError("a resolver needs at least one nameserver")
        self._servers = tuple(_Server.of(nameserver) for nameserver in nameservers)
        self._timeout = timeout
        self._per_try = per_try_timeout(timeout)
        self._limiter = trio.Semaphore(max_in_flight)  # lookups in flight
        self._cache = _AnswerCache(cache_size)
        self._counters = _Counters()
        self._pool_of_run: trio.lowlevel.RunVar[_SocketPool] = trio.lowlevel.RunVar(
            f"dns-socket-pool-{id(self)}"
        )
        self.validating: bool | None = None

    @classmethod
    def create(
        cls,
        nameservers: Sequence[Nameserver] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        cache_size: int = DEFAULT_CACHE_SIZE,
        resolv_conf: Path = RESOLV_CONF,
    ) -> Resolver:
        """Nameservers from the arguments, else from resolv.conf (`NoSystemResolver` if none)."""
        servers = tuple(nameservers) if nameservers else system_nameservers(resolv_conf)
        return cls(servers, timeout=timeout, max_in_flight=max_in_flight, cache_size=cache_size)

    @property
    def lookups(self) -> int:
        return self._counters.lookups

    @property
    def stats(self) -> ResolverStats:
        return self._counters.snapshot()

    @property
    def load(self) -> _Counters:
        """The live counters, read without a copy (the scan's load governor, per line)."""
        return self._counters

    # ------------------------------------------------------------ typed answers

    async def txt(self, name: str) -> TxtAnswer:
        """TXT records at `name`, each record's strings joined with no separator."""
        resolved = await self._lookup(name, dns.rdatatype.TXT)
        return TxtAnswer(
            resolved.status,
            tuple(txt_text(record) for record in resolved.records),
            resolved.detail,
            dnssec=self._dnssec_counted(resolved),
        )

    async def addresses(self, name: str) -> tuple[AddressAnswer, AddressAnswer]:
        """The A answer and the AAAA answer for `name` (looked up concurrently)."""
        now = trio.current_time()
        cached_a = self._cached(name, dns.rdatatype.A, now)
        cached_aaaa = self._cached(name, dns.rdatatype.AAAA, now)
        if cached_a is not None and cached_aaaa is not None:
            # Both answers at hand (shared providers' hosts): no tasks for them, and,
            # as for any cached lookup, no checkpoint.
            self._count_hits(2)
            return self._address_from(cached_a), self._address_from(cached_aaaa)
        results: dict[dns.rdatatype.RdataType, AddressAnswer] = {}

        async def lookup(rdtype: dns.rdatatype.RdataType) -> None:
            results[rdtype] = await self._address_answer(name, rdtype)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lookup, dns.rdatatype.AAAA)
            await lookup(dns.rdatatype.A)  # in this task: one task fewer to start
        return results[dns.rdatatype.A], results[dns.rdatatype.AAAA]

    async def _address_answer(self, name: str, rdtype: dns.rdatatype.RdataType) -> AddressAnswer:
        return self._address_from(await self._lookup(name, rdtype))

    def _address_from(self, resolved: _Resolved) -> AddressAnswer:
        """`cname_chain_secure`: every CNAME link came with AD, in a validated lookup.

        True without links when the lookup was validated (`secure` or `insecure`);
        never for an `unvalidated` or `bogus` one. RFC 7672 §2.2.2 wants it, and a
        `secure` answer, before TLSA is looked up at `canonical_name`.
        """
        dnssec = self._dnssec_counted(resolved)
        return AddressAnswer(
            resolved.status,
            tuple(address_text(record) for record in resolved.records),
            resolved.detail,
            dnssec=dnssec,
            canonical_name=resolved.canonical,
            cname_chain_secure=resolved.chain_authenticated and dnssec in _VALIDATED,
        )

    async def names_of(self, ip: str) -> tuple[str, ...]:
        """The PTR names of `ip` (RFC 1035 §3.5; RFC 3596 §2.5), empty when there are none."""
        owner = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
        resolved = await self._lookup(owner, dns.rdatatype.PTR)
        if resolved.status is not DnsStatus.ANSWER:
            return ()
        return tuple(r.name for r in resolved.records if isinstance(r, PtrData))

    async def mx(self, domain: str) -> MxAnswer:
        """MX records of `domain`, sorted by preference.

        RFC 7505: a single `0 .` record is a null MX (the domain takes no mail).
        RFC 5321 §5.1: with no MX records but an address record, the domain
        itself is the implicit MX, preference 0.
        """
        resolved = await self._lookup(domain, dns.rdatatype.MX)
        dnssec = self._dnssec_counted(resolved)
        if resolved.status is DnsStatus.ANSWER:
            records = sorted(
                (mx_record(record) for record in resolved.records),
                key=lambda record: (record.preference, record.host),
            )
            if any(record.host in ("", ".") for record in records):
                real = tuple(r for r in records if r.host not in ("", "."))
                return MxAnswer(
                    DnsStatus.ANSWER,
                    real,
                    null_mx=True,
                    detail="null MX (RFC 7505): the domain accepts no mail"
                    if not real
                    else "null MX mixed with other MX records",
                    dnssec=dnssec,
                )
            return MxAnswer(DnsStatus.ANSWER, tuple(records), dnssec=dnssec)
        if resolved.status is DnsStatus.NODATA:
            a, aaaa = await self.addresses(domain)
            if a.addresses or aaaa.addresses:
                return MxAnswer(
                    DnsStatus.NODATA,
                    (MxRecord(0, domain),),
                    implicit=True,
                    detail="no MX records; the domain's own address is the implicit MX",
                    dnssec=dnssec,
                )
        return MxAnswer(resolved.status, (), detail=resolved.detail, dnssec=dnssec)

    async def tlsa(self, owner: str) -> TlsaAnswer:
        """TLSA records at `owner` (`_25._tcp.mx.example.com`), RFC 6698 §2 / RFC 7672 §2.2.

        Usable for DANE only when `dnssec` is `secure`; a `bogus` answer has no records.
        `extended_error` is the RFC 8914 error the resolver gave, if any.
        """
        resolved = await self._lookup(owner, dns.rdatatype.TLSA)
        return TlsaAnswer(
            resolved.status,
            tuple(tlsa_record(record) for record in resolved.records),
            resolved.detail,
            dnssec=self._dnssec_counted(resolved),
            extended_error=str(resolved.extended_error) if resolved.extended_error else None,
        )

    def _dnssec_counted(self, resolved: _Resolved) -> DnssecStatus:
        dnssec = self._dnssec_of(resolved)
        self._counters.by_status[resolved.status] += 1
        self._counters.by_dnssec[dnssec] += 1
        return dnssec

    def _dnssec_of(self, resolved: _Resolved) -> DnssecStatus:
        """RFC 4035 §3.2.3 and RFC 6840 §5.7 from the stub's side (see the module docstring)."""
        if resolved.bogus:
            return DnssecStatus.BOGUS
        if self.validating is False or resolved.status not in _VALIDATED_STATUSES:
            return DnssecStatus.UNVALIDATED
        if resolved.authenticated:
            return DnssecStatus.SECURE
        return DnssecStatus.INSECURE if self.validating else DnssecStatus.UNVALIDATED

    # ------------------------------------------------------------ DNSSEC validation

    async def detect_validation(self) -> bool:
        """Does the resolver validate DNSSEC? Ask once per run, before the lookups.

        Method: every nameserver is asked for the root zone's SOA with DO and AD set
        (RFC 6840 §5.7); the root is signed, so a validating resolver answers with AD.
        The resolver counts as validating only when every nameserver did, since tries
        go to all of them in turn. Sets and returns `validating`.

        Limits: it shows that AD is set on a signed answer, not that bogus data is
        refused (that would take a deliberately broken zone on the internet); a
        forwarder that passes on its upstream's AD counts as validating; a
        validator without the root trust anchor counts as not validating (answers
        then say `unvalidated`, the safe side); AD is only as trustworthy as the
        path to the resolver (RFC 4035 §4.9.3); a change of resolver mid-run is not
        seen.
        """
        verdicts: list[bool] = []

        async def ask(server: _Server) -> None:
            verdicts.append(await self._signs_root(server))

        async with trio.open_nursery() as nursery:
            for server in self._servers:
                nursery.start_soon(ask, server)
        self.validating = len(verdicts) == len(self._servers) and all(verdicts)
        return self.validating

    # ------------------------------------------------------------ transports (doctor)

    async def probe_transports(
        self, name: str, rdtype: dns.rdatatype.RdataType
    ) -> tuple[TransportProbe, ...]:
        """Every nameserver asked `name` (whose answer is large) over UDP and over TCP.

        For `scanner doctor`: the UDP reply is read as it came (its size, TC, the OPT
        record's payload), not followed to TCP; the question is sent again after each
        `per_try` until the lookup's timeout. The TCP try is the same question over
        TCP, within one try's time. Nothing is cached or counted as a lookup.
        """
        query = build_query(name_wire(name), rdtype)
        found: dict[_Server, TransportProbe] = {}

        async def one(server: _Server) -> None:
            shape, detail = await self._udp_shape(query, server)
            sizes: list[int] = []
            deadline = trio.current_time() + self._timeout
            tcp = await self._tcp_try(Exchange(query), server, deadline, sizes)
            tcp_size = None
            if isinstance(tcp, Response):
                tcp_detail, tcp_size = None, sizes[-1]
            elif isinstance(tcp, _Unreachable | Refusal):
                tcp_detail = tcp.detail
            else:
                tcp_detail = f"no reply over TCP within {self._per_try:g} s"
            found[server] = TransportProbe(str(server), shape, detail, tcp_detail, tcp_size)

        async with trio.open_nursery() as nursery:
            for server in self._servers:
                nursery.start_soon(one, server)
        return tuple(found[server] for server in self._servers)

    async def _udp_shape(self, query: Query, server: _Server) -> tuple[ReplyShape | None, str]:
        exchange = Exchange(query)
        with trio.socket.socket(server.family, socket.SOCK_DGRAM) as sock:
            with trio.move_on_after(self._timeout):
                while True:
                    try:
                        await sock.sendto(exchange.datagram_for(server.address), server.address)
                    except OSError as exc:
                        return None, f"UDP send failed ({_errno_name(exc)})"
                    with trio.move_on_after(self._per_try):
                        while True:
                            try:
                                wire, source = await sock.recvfrom(MAX_RESPONSE_BYTES + 1)
                            except OSError:
                                continue  # an ICMP error queued on the socket: not a reply
                            if isinstance(exchange.accept(wire, (source[0], source[1])), Mismatch):
                                continue
                            shape = reply_shape(wire)
                            if isinstance(shape, Refusal):
                                return None, shape.detail
                            return shape, ""
        return None, f"no UDP reply within {self._timeout:g} s"

    async def _signs_root(self, server: _Server) -> bool:
        query = build_query(dns.name.root, dns.rdatatype.SOA)
        async with holding(self._limiter):
            deadline = trio.current_time() + self._timeout
            response = await self._exchange(query, (server,), _Failures(), deadline)
        return (
            response is not None and response.rcode == dns.rcode.NOERROR and response.authenticated
        )

    # ------------------------------------------------------------ one lookup

    def _cached(self, name: str, rdtype: dns.rdatatype.RdataType, now: float) -> _Resolved | None:
        """The cached lookup of (name, type), or None; not counted (`_count_hits` does)."""
        return self._cache.get((name.lower().rstrip("."), int(rdtype)), now)

    def _count_hits(self, hits: int) -> None:
        self._counters.lookups += hits
        self._counters.cache_hits += hits

    async def _lookup(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Resolved:
        """The whole lookup of (name, type), from the cache or the nameservers, within its deadline."""
        cached = self._cached(name, rdtype, trio.current_time())
        if cached is not None:
            self._count_hits(1)
            return cached
        self._counters.lookups += 1
        key = (name.lower().rstrip("."), int(rdtype))
        try:
            qname = name_wire(name)
        except dns.exception.DNSException as exc:
            return _Resolved(DnsStatus.ERROR, detail=f"invalid name {name!r}: {exc}")
        async with holding(self._limiter):
            deadline = trio.current_time() + self._timeout
            resolved, ttl = await self._resolve_chain(qname, rdtype, _Failures(), deadline)
        self._cache.put(key, resolved, ttl, trio.current_time())
        return resolved

    async def _resolve_chain(
        self,
        qname: bytes,
        rdtype: dns.rdatatype.RdataType,
        failures: _Failures,
        deadline: float,
    ) -> tuple[_Resolved, int]:
        """Ask, and ask again at the end of a CNAME chain a reply left open (RFC 1034 §3.6.2).

        `qname` is in wire form; every question is asked before `deadline` (trio's
        clock). Returns the resolved lookup and how long it may be cached (0: not at
        all); after the deadline, the failures seen so far.
        """
        name = qname
        seen = {qname.lower()}  # RFC 4343: names compare in ASCII lower case
        links = 0
        authenticated = True
        chain_authenticated = True
        ttl = MAX_POSITIVE_TTL
        while True:
            asked = await self._ask(name, rdtype, failures, deadline)
            if isinstance(asked, _Resolved):
                return asked, 0
            links += len(asked.links)
            if links > MAX_CNAME_LINKS or (asked.follow and asked.name.lower() in seen):
                return _Resolved(DnsStatus.ERROR, detail="CNAME chain too long or looping"), 0
            authenticated = authenticated and asked.authenticated
            if asked.links:
                chain_authenticated = chain_authenticated and asked.authenticated
            ttl = min(ttl, asked.ttl)
            if asked.status not in _VALIDATED_STATUSES:
                return _outcome_failure(asked), 0
            if asked.follow:
                seen.add(asked.name.lower())
                name = asked.name
                continue
            return (
                _Resolved(
                    asked.status,
                    asked.records,
                    asked.detail,
                    canonical=name_text(asked.name),
                    authenticated=authenticated,
                    chain_authenticated=chain_authenticated,
                    extended_error=asked.extended_error,
                ),
                ttl,
            )

    async def _ask(
        self, name: bytes, rdtype: dns.rdatatype.RdataType, failures: _Failures, deadline: float
    ) -> Outcome | _Resolved:
        """One question to the nameservers: its outcome, or the failure when none answered.

        `name` is in wire form. A SERVFAIL not explained by an extended error is asked again with CD set (RFC
        4035 §3.2.2), for one try's time: an answer then means validation failed.
        """
        query = build_query(name, rdtype)
        response = await self._exchange(query, self._servers, failures, deadline)
        if response is not None:
            return interpret(query, response)
        failure = failures.summary()
        if (
            failure.status is DnsStatus.SERVFAIL
            and not failure.bogus
            and self.validating is not False
            and not failures.explained_without_dnssec()
        ):
            self._counters.cd_retries += 1
            unchecked = build_query(name, rdtype, checking_disabled=True)
            within = self._try_deadline(deadline)
            if await self._exchange(unchecked, self._servers, _Failures(), within) is not None:
                return _Resolved(
                    DnsStatus.SERVFAIL,
                    detail="DNSSEC validation failed (SERVFAIL, yet an answer with "
                    "checking disabled)",
                    bogus=True,
                )
        return failure

    # ------------------------------------------------------------ transport

    def _try_deadline(self, deadline: float) -> float:
        """When a try starting now ends: after `per_try`, never past the lookup's `deadline`."""
        return min(trio.current_time() + self._per_try, deadline)

    def _pool(self) -> _SocketPool:
        try:
            return self._pool_of_run.get()
        except LookupError:
            pool = _SocketPool()
            self._pool_of_run.set(pool)
            trio.lowlevel.spawn_system_task(_close_at_run_end, pool, name="dns socket pool")
            return pool

    async def _exchange(
        self, query: Query, servers: Sequence[_Server], failures: _Failures, deadline: float
    ) -> Response | None:
        """Tries over `servers` in turn until one gives a final reply; None when all failed.

        Runs until `deadline` (trio's clock) while a server is left to ask.
        """
        live = list(servers)
        exchange = Exchange(query)
        pool = self._pool()
        held: dict[int, _UdpSocket] = {}
        try:
            attempt = 0
            while live and trio.current_time() < deadline:
                server = live[attempt % len(live)]
                if attempt:
                    self._counters.retries += 1
                attempt += 1
                result = await self._udp_try(pool, held, exchange, server, deadline)
                if result is None:
                    self._counters.count_timeout()
                    continue
                if isinstance(result, _Unreachable):
                    self._counters.network_errors += 1
                    failures.add(server, DnsStatus.ERROR, result.detail, None)
                    live.remove(server)
                elif isinstance(result, Refusal):
                    self._counters.refused_replies += 1
                    failures.add(server, DnsStatus.ERROR, result.detail, None)
                    live.remove(server)
                elif result.rcode not in FINAL_RCODES:
                    status, detail = status_of_rcode(result.rcode)
                    failures.add(server, status, detail, result.extended_error)
                    live.remove(server)
                else:
                    return result
            return None
        finally:
            for udp in held.values():
                pool.give_back(udp)

    async def _udp_try(
        self,
        pool: _SocketPool,
        held: dict[int, _UdpSocket],
        exchange: Exchange,
        server: _Server,
        deadline: float,
    ) -> _TryResult:
        """One datagram to `server`, then wait `per_try` for a reply that matches; TC → TCP.

        None when no reply came within `per_try` or before `deadline`.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        udp = held.get(server.family)
        with trio.CancelScope(deadline=self._try_deadline(deadline)):
            try:
                if udp is None:
                    udp = held[server.family] = pool.take(server.family)
                datagram = exchange.datagram_for(server.address)
                while True:
                    try:
                        udp.sock.sendto(datagram, server.address)
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(udp.sock)
            except OSError as exc:
                return _Unreachable(f"UDP send failed ({_errno_name(exc)})")
            self._counters.udp_queries += 1
            await trio.lowlevel.wait_readable(udp.sock)  # a reply takes a round trip
            while True:
                try:
                    wire, source = udp.sock.recvfrom(MAX_RESPONSE_BYTES + 1)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(udp.sock)
                    continue
                except OSError:
                    # An ICMP error queued on the socket: not a reply; keep waiting.
                    self._counters.ignored_replies += 1
                    continue
                reply = exchange.accept(wire, (source[0], source[1]))
                if isinstance(reply, Mismatch):
                    self._counters.ignored_replies += 1
                    continue
                if reply is TRUNCATED:
                    self._counters.truncations += 1
                    return await self._tcp_try(exchange, server, deadline)
                return reply
        return None

    async def _tcp_try(
        self,
        exchange: Exchange,
        server: _Server,
        deadline: float,
        sizes: list[int] | None = None,
    ) -> _TryResult:
        """The question again over TCP (RFC 7766 §5), within one try's time and `deadline`.

        `sizes`, when given, gets the size of each message read.
        """
        self._counters.tcp_queries += 1
        with trio.CancelScope(deadline=self._try_deadline(deadline)):
            sock = trio.socket.socket(server.family, socket.SOCK_STREAM)
            with sock:
                try:
                    await sock.connect(server.address)
                    await _send_all(sock, exchange.stream_message_for(server.address))
                    framer = TcpFramer()
                    while True:
                        message = framer.next_message()
                        if message is NEED_DATA:
                            data = await sock.recv(min(framer.wanted(), MAX_RESPONSE_BYTES + 2))
                            if not data:
                                return _Unreachable("TCP connection closed before the reply")
                            framer.receive_data(data)
                            continue
                        if isinstance(message, Refusal):
                            return message
                        assert isinstance(message, bytes)
                        if sizes is not None:
                            sizes.append(len(message))
                        reply = exchange.accept(message, server.address, stream=True)
                        if isinstance(reply, Mismatch):
                            self._counters.ignored_replies += 1
                            continue
                        assert isinstance(reply, Response | Refusal)
                        return reply
                except OSError as exc:
                    return _Unreachable(f"TCP to {server} failed ({_errno_name(exc)})")
        return None


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


_VALIDATED_STATUSES: Final = frozenset({DnsStatus.ANSWER, DnsStatus.NXDOMAIN, DnsStatus.NODATA})
_VALIDATED: Final = frozenset({DnssecStatus.SECURE, DnssecStatus.INSECURE})


def _outcome_failure(outcome: Outcome) -> _Resolved:
    return _Resolved(outcome.status, detail=outcome.detail, extended_error=outcome.extended_error)
