"""The scanner's one DNS client: dnspython's async resolver running on trio.

Every lookup of a run (MX, A, AAAA, TXT, the policy host's address) goes
through one `Resolver`, so the fixture lab, the policy fetch and the probes
see the same answers. Results are typed values (`TxtAnswer`, `MxAnswer`,
`AddressAnswer`) whose `status` tells NXDOMAIN, NODATA, SERVFAIL, REFUSED,
timeout and other errors apart; no lookup raises for an expected failure.

Each lookup runs under a trio deadline (dnspython's own lifetime bounds its
retries, the trio deadline bounds everything, including a stalled TCP
fallback) and under a capacity limiter that bounds lookups in flight. A
TTL-aware, bounded LRU cache is shared by the whole run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import trio

from scanner.models import AddressAnswer, DnsStatus, MxAnswer, MxRecord, TxtAnswer

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Nameserver:
    ip: str
    port: int = 53


def parse_nameserver(text: str) -> Nameserver:
    """Parse `IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 address (`--resolver`)."""
    import ipaddress

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


def _status_of(exc: BaseException) -> tuple[DnsStatus, str]:
    """Map dnspython's exceptions to our statuses, once, here."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return DnsStatus.NXDOMAIN, "name does not exist"
    if isinstance(exc, dns.resolver.NoAnswer):
        return DnsStatus.NODATA, "no records of this type"
    if isinstance(exc, dns.resolver.LifetimeTimeout):
        return DnsStatus.TIMEOUT, "no answer before the deadline"
    if isinstance(exc, dns.resolver.NoNameservers):
        errors = exc.kwargs.get("errors") or []
        rcodes = {
            answer.rcode()
            for (*_, answer) in errors
            if isinstance(answer, dns.message.Message)
        }
        if rcodes == {dns.rcode.REFUSED}:
            return DnsStatus.REFUSED, "every nameserver refused the query"
        return DnsStatus.SERVFAIL, "no nameserver gave an answer (SERVFAIL)"
    if isinstance(exc, dns.resolver.YXDOMAIN):
        return DnsStatus.ERROR, "name too long after DNAME substitution"
    if isinstance(exc, dns.exception.DNSException):
        return DnsStatus.ERROR, f"{type(exc).__name__}: {exc}"
    raise exc


class Resolver:
    """Typed DNS lookups for one run. Build once with `Resolver.create`."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        *,
        timeout: float,
        max_in_flight: int,
    ) -> None:
        self._resolver = resolver
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(max_in_flight)
        self.lookups = 0  # queries sent past the cache-less front door; for statistics

    @classmethod
    def create(
        cls,
        nameservers: Sequence[Nameserver] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> Resolver:
        """Nameservers from the arguments, else from the system's resolv.conf."""
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(ns.ip, ns.port) for ns in nameservers
            ]
        else:
            resolver = dns.asyncresolver.Resolver(configure=True)
        resolver.lifetime = timeout
        # Several tries within the lifetime: a lost UDP datagram costs one try, not the lookup.
        resolver.timeout = max(min(timeout / 3, 2.0), 0.3)
        resolver.cache = dns.resolver.LRUCache(cache_size)
        return cls(resolver, timeout=timeout, max_in_flight=max_in_flight)

    async def _query(
        self, name: str, rdtype: dns.rdatatype.RdataType
    ) -> tuple[dns.resolver.Answer | None, DnsStatus, str]:
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            return None, DnsStatus.ERROR, f"invalid name {name!r}: {exc}"
        async with self._limiter:
            self.lookups += 1
            with trio.move_on_after(self._timeout):
                try:
                    answer = await self._resolver.resolve(qname, rdtype, search=False)
                except dns.exception.DNSException as exc:
                    status, detail = _status_of(exc)
                    return None, status, detail
                return answer, DnsStatus.ANSWER, ""
        return None, DnsStatus.TIMEOUT, "no answer before the deadline"

    async def txt(self, name: str) -> TxtAnswer:
        """TXT records at `name`, each record's strings joined with no separator."""
        answer, status, detail = await self._query(name, dns.rdatatype.TXT)
        if answer is None:
            return TxtAnswer(status, (), detail)
        records = tuple(
            b"".join(rdata.strings).decode("utf-8", errors="backslashreplace")
            for rdata in answer
        )
        return TxtAnswer(DnsStatus.ANSWER, records)

    async def _addresses_of_type(
        self, name: str, rdtype: dns.rdatatype.RdataType
    ) -> AddressAnswer:
        answer, status, detail = await self._query(name, rdtype)
        if answer is None:
            return AddressAnswer(status, (), detail)
        return AddressAnswer(DnsStatus.ANSWER, tuple(rdata.address for rdata in answer))

    async def addresses(self, name: str) -> tuple[AddressAnswer, AddressAnswer]:
        """The A answer and the AAAA answer for `name` (looked up concurrently)."""
        results: dict[str, AddressAnswer] = {}

        async def lookup(key: str, rdtype: dns.rdatatype.RdataType) -> None:
            results[key] = await self._addresses_of_type(name, rdtype)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lookup, "A", dns.rdatatype.A)
            nursery.start_soon(lookup, "AAAA", dns.rdatatype.AAAA)
        return results["A"], results["AAAA"]

    async def mx(self, domain: str) -> MxAnswer:
        """MX records of `domain`, sorted by preference.

        RFC 7505: a single `0 .` record is a null MX (the domain takes no mail).
        RFC 5321 §5.1: with no MX records but an address record, the domain
        itself is the implicit MX, preference 0.
        """
        answer, status, detail = await self._query(domain, dns.rdatatype.MX)
        if answer is not None:
            records = sorted(
                (
                    MxRecord(
                        rdata.preference,
                        rdata.exchange.to_text(omit_final_dot=True).lower(),
                    )
                    for rdata in answer
                ),
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
                )
            return MxAnswer(DnsStatus.ANSWER, tuple(records))
        if status is DnsStatus.NODATA:
            a, aaaa = await self.addresses(domain)
            if a.addresses or aaaa.addresses:
                return MxAnswer(
                    DnsStatus.NODATA,
                    (MxRecord(0, domain),),
                    implicit=True,
                    detail="no MX records; the domain's own address is the implicit MX",
                )
        return MxAnswer(status, (), detail=detail)
