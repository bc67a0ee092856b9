"""The resolver against DNS servers each test scripts, over real UDP and TCP on 127.0.0.x.

A `ScriptedServer` hands every query it receives to the test's script, which says
what to send back: replies, forgeries from another port or address, nothing, or
something late. Time is virtual (`loopback_clock`), so deadlines are exact.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio
from trio.testing import MockClock

from scanner.core.dns_wire import MAX_RESPONSE_BYTES
from scanner.lab.listeners import bind_dns
from scanner.models import DnssecStatus, DnsStatus, TlsaRecord
from scanner.net.resolver import MAX_SOCKET_USES, Nameserver, Resolver, per_try_timeout

TIMEOUT = 1.0
PER_TRY = per_try_timeout(TIMEOUT)
SOA = "ns.example.test. hostmaster.example.test. 1 3600 600 86400 60"


@dataclass(frozen=True, slots=True)
class Send:
    """One datagram (or TCP message) to send back.

    `from_port`: from another port of the server's address; `from_host`: from another
    address; `delay`: after this many (virtual) seconds.
    """

    wire: bytes
    from_port: bool = False
    from_host: bool = False
    delay: float = 0.0


Script = Callable[[dns.message.Message, str], Sequence[Send]]


@dataclass
class ScriptedServer:
    script: Script
    host: str
    port: int = 0
    queries: list[tuple[str, dns.message.Message]] = field(default_factory=list)
    sources: list[tuple[str, int]] = field(default_factory=list)

    def asked(self, transport: str | None = None) -> list[dns.message.Message]:
        return [m for t, m in self.queries if transport is None or t == transport]

    @property
    def nameserver(self) -> Nameserver:
        return Nameserver(self.host, self.port)


@asynccontextmanager
async def scripted(script: Script, host: str = "127.0.0.1") -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(script, host)
    bound = bind_dns(host)  # the lab's helper: UDP and TCP on one free port
    server.port = bound.port
    udp = trio.socket.from_stdlib_socket(bound.udp)
    tcp = trio.socket.from_stdlib_socket(bound.tcp)
    other_port = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_host = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp, tcp, other_port, other_host:
        await other_port.bind((host, 0))
        await other_host.bind(("127.0.0.2" if host != "127.0.0.2" else "127.0.0.3", 0))

        async def send_later(send: Send, client: tuple[str, int]) -> None:
            await trio.sleep(send.delay)
            sock = other_port if send.from_port else other_host if send.from_host else udp
            await sock.sendto(send.wire, client)

        async def serve_udp(nursery: trio.Nursery) -> None:
            while True:
                wire, client = await udp.recvfrom(65535)
                query = dns.message.from_wire(wire)
                server.queries.append(("udp", query))
                server.sources.append(client)
                for send in server.script(query, "udp"):
                    nursery.start_soon(send_later, send, client)

        async def serve_tcp(stream: trio.SocketStream) -> None:
            async with stream:
                prefix = await stream.receive_some(2)
                while len(prefix) < 2:
                    prefix += await stream.receive_some(2 - len(prefix))
                (length,) = struct.unpack("!H", prefix)
                wire = b""
                while len(wire) < length:
                    wire += await stream.receive_some(length - len(wire))
                query = dns.message.from_wire(wire)
                server.queries.append(("tcp", query))
                for send in server.script(query, "tcp"):
                    await trio.sleep(send.delay)
                    await stream.send_all(struct.pack("!H", len(send.wire)) + send.wire)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_udp, nursery)
            nursery.start_soon(trio.serve_listeners, serve_tcp, [trio.SocketListener(tcp)])
            yield server
            nursery.cancel_scope.cancel()


def respond(
    query: dns.message.Message,
    *answer: dns.rrset.RRset,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    authority: Sequence[dns.rrset.RRset] = (),
    ad: bool = False,
    tc: bool = False,
    ede: tuple[int, str | None] | None = None,
) -> bytes:
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    response.answer = list(answer)
    response.authority = list(authority)
    if ad:
        response.flags |= dns.flags.AD
    if tc:
        response.flags |= dns.flags.TC
    if ede is not None:
        response.use_edns(
            0, 0, 1232, options=[dns.edns.EDEOption(dns.edns.EDECode.make(ede[0]), ede[1])]
        )
    return response.to_wire(max_size=65535)


def rrset(name: str, rdtype: str, *texts: str, ttl: int = 300) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, ttl, "IN", rdtype, list(texts))


def qname(query: dns.message.Message) -> str:
    return query.question[0].name.to_text(omit_final_dot=True).lower()


def qtype(query: dns.message.Message) -> str:
    return dns.rdatatype.to_text(query.question[0].rdtype)


def is_root_soa(query: dns.message.Message) -> bool:
    return query.question[0].name == dns.name.root and query.question[0].rdtype == dns.rdatatype.SOA


def resolver_for(*servers: ScriptedServer, timeout: float = TIMEOUT) -> Resolver:
    return Resolver.create([server.nameserver for server in servers], timeout=timeout)


def txt_answer(query: dns.message.Message, *, ad: bool = False) -> bytes:
    return respond(query, rrset(f"{qname(query)}.", "TXT", '"v=STSv1; id=1"'), ad=ad)


# ---------------------------------------------------------------- RFC 5452 matching


def _wrong_id(query: dns.message.Message) -> Send:
    wire = txt_answer(query)
    return Send(struct.pack("!H", query.id ^ 0x5A5A) + wire[2:])


def _wrong_question(query: dns.message.Message) -> Send:
    other = dns.message.make_query("forged.example.test", "TXT", id=query.id)
    return Send(respond(other, rrset("forged.example.test.", "TXT", '"v=STSv1; id=forged"')))


def _wrong_type(query: dns.message.Message) -> Send:
    other = dns.message.make_query(query.question[0].name, "A", id=query.id)
    return Send(respond(other, rrset(f"{qname(query)}.", "A", "192.0.2.66")))


FORGERIES: dict[str, Callable[[dns.message.Message], Send]] = {
    "wrong-id": _wrong_id,
    "wrong-question": _wrong_question,
    "wrong-type": _wrong_type,
    "wrong-port": lambda q: Send(txt_answer(q), from_port=True),
    "wrong-address": lambda q: Send(txt_answer(q), from_host=True),
    "query-echoed": lambda q: Send(q.to_wire()),
}


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
async def test_mismatched_replies_are_ignored_and_the_answer_taken(
    forgery: Callable[[dns.message.Message], Send], loopback_clock: MockClock
) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        return [forgery(query), Send(txt_answer(query), delay=0.01)]

    async with scripted(script) as server:
        resolver = resolver_for(server)
        answer = await resolver.txt("_mta-sts.example.test")
    assert answer.status is DnsStatus.ANSWER
    assert answer.records == ("v=STSv1; id=1",)
    assert resolver.stats.ignored_replies == 1
    assert resolver.stats.retries == 0


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
async def test_mismatched_replies_alone_are_a_timeout(
    forgery: Callable[[dns.message.Message], Send], loopback_clock: MockClock
) -> None:
    async with scripted(lambda query, transport: [forgery(query)]) as server:
        resolver = resolver_for(server)
        started = trio.current_time()
        answer = await resolver.txt("_mta-sts.example.test")
    assert answer.status is DnsStatus.TIMEOUT
    assert trio.current_time() - started == pytest.approx(TIMEOUT)
    assert resolver.stats.ignored_replies >= 3  # one per try, every try ignored


async def test_query_ids_are_random_and_ports_change(loopback_clock: MockClock) -> None:
    async with scripted(lambda query, transport: [Send(txt_answer(query))]) as server:
        resolver = resolver_for(server)
        for index in range(MAX_SOCKET_USES + 20):
            await resolver.txt(f"n{index}.example.test")
    ids = {query.id for query in server.asked()}
    ports = {port for _, port in server.sources}
    assert len(ids) > 90  # 120 draws of 16 bits: a repeat or two at most
    assert 2 <= len(ports) <= 3  # one socket at a time, retired after MAX_SOCKET_USES lookups


# ---------------------------------------------------------------- tries and transports


async def test_a_lost_datagram_costs_one_try(loopback_clock: MockClock) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        return [] if len(server.asked()) == 1 else [Send(txt_answer(query))]

    async with scripted(script) as server:
        resolver = resolver_for(server)
        started = trio.current_time()
        answer = await resolver.txt("_mta-sts.example.test")
    assert answer.status is DnsStatus.ANSWER
    assert trio.current_time() - started == pytest.approx(PER_TRY)
    assert resolver.stats.retries == 1
    assert resolver.stats.timeouts == 1
    first, second = server.asked()
    assert first.id != second.id


async def test_lost_datagrams_until_the_deadline_are_a_timeout(loopback_clock: MockClock) -> None:
    async with scripted(lambda query, transport: []) as server:
        resolver = resolver_for(server)
        started = trio.current_time()
        answer = await resolver.txt("_mta-sts.example.test")
    assert answer.status is DnsStatus.TIMEOUT
    assert answer.detail == "no answer before the deadline"
    assert trio.current_time() - started == pytest.approx(TIMEOUT)
    assert len(server.asked()) >= 3


async def test_the_last_try_ends_at_the_lookups_deadline(loopback_clock: MockClock) -> None:
    """0.5 s: tries of 0.3 s, the second cut to the 0.2 s the lookup has left."""
    async with scripted(lambda query, transport: []) as server:
        resolver = resolver_for(server, timeout=0.5)
        started = trio.current_time()
        answer = await resolver.txt("_mta-sts.example.test")
    assert answer.status is DnsStatus.TIMEOUT
    assert trio.current_time() - started == pytest.approx(0.5)
    assert len(server.asked()) == 2
    assert resolver.stats.timeouts == 2  # the cut try timed out too


async def test_a_late_reply_to_an_earlier_try_is_taken(loopback_clock: MockClock) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        if len(server.asked()) == 1:
            return [Send(txt_answer(query), delay=PER_TRY * 1.5)]
        return []

    async with scripted(script) as server:
        resolver = resolver_for(server)
        started = trio.current_time()
        answer = await resolver.txt("_mta-sts.example.test")
    assert answer.status is DnsStatus.ANSWER
    assert trio.current_time() - started == pytest.approx(PER_TRY * 1.5)


def big_txt(query: dns.message.Message, size: int) -> bytes:
    strings = " ".join(f'"{"x" * 250}"' for _ in range(size // 252))
    return respond(query, rrset(f"{qname(query)}.", "TXT", strings))


async def test_truncated_reply_is_asked_again_over_tcp(loopback_clock: MockClock) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        if transport == "udp":
            return [Send(respond(query, tc=True))]
        return [Send(big_txt(query, 4000))]

    async with scripted(script) as server:
        resolver = resolver_for(server)
        answer = await resolver.txt("big.example.test")
    assert answer.status is DnsStatus.ANSWER
    assert len(answer.records[0]) > 3000
    assert [transport for transport, _ in server.queries] == ["udp", "tcp"]
    assert resolver.stats.truncations == 1
    assert resolver.stats.tcp_queries == 1


async def test_tcp_closed_without_a_reply_is_an_error(loopback_clock: MockClock) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        return [Send(respond(query, tc=True))] if transport == "udp" else []

    async with scripted(script) as server:
        resolver = resolver_for(server)
        answer = await resolver.txt("big.example.test")
    assert answer.status is DnsStatus.ERROR
    assert "TCP connection closed" in answer.detail


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(
    ("size", "status"),
    [
        pytest.param(MAX_RESPONSE_BYTES - 500, DnsStatus.ANSWER, id="under-limit"),
        pytest.param(MAX_RESPONSE_BYTES + 500, DnsStatus.ERROR, id="over-limit"),
    ],
)
async def test_oversize_reply_is_refused(
    transport: str, size: int, status: DnsStatus, loopback_clock: MockClock
) -> None:
    def script(query: dns.message.Message, asked_over: str) -> list[Send]:
        if transport == "tcp" and asked_over == "udp":
            return [Send(respond(query, tc=True))]
        return [Send(big_txt(query, size))]

    async with scripted(script) as server:
        resolver = resolver_for(server)
        answer = await resolver.txt("big.example.test")
    assert answer.status is status
    if status is DnsStatus.ERROR:
        assert f"{MAX_RESPONSE_BYTES}-octet limit" in answer.detail
        assert resolver.stats.refused_replies == 1


async def test_unparseable_reply_is_an_error(loopback_clock: MockClock) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        return [Send(txt_answer(query)[:-3])]  # the record cut short

    async with scripted(script) as server:
        answer = await resolver_for(server).txt("_mta-sts.example.test")
    assert answer.status is DnsStatus.ERROR
    assert "unparseable reply" in answer.detail


# ---------------------------------------------------------------- several nameservers


@pytest.mark.parametrize(
    ("first", "status", "waited"),
    [
        pytest.param("refused", DnsStatus.ANSWER, 0.0, id="refused-then-answer"),
        pytest.param("servfail", DnsStatus.ANSWER, 0.0, id="servfail-then-answer"),
        pytest.param("silent", DnsStatus.ANSWER, PER_TRY, id="silent-then-answer"),
    ],
)
async def test_nameservers_are_asked_in_turn(
    first: str, status: DnsStatus, waited: float, loopback_clock: MockClock
) -> None:
    def failing(query: dns.message.Message, transport: str) -> list[Send]:
        if first == "silent":
            return []
        rcode = dns.rcode.REFUSED if first == "refused" else dns.rcode.SERVFAIL
        return [Send(respond(query, rcode=rcode))]

    async with (
        scripted(failing, "127.0.0.1") as one,
        scripted(lambda q, t: [Send(txt_answer(q))], "127.0.0.3") as two,
    ):
        resolver = Resolver.create([one.nameserver, two.nameserver], timeout=TIMEOUT)
        resolver.validating = False  # no CD retry
        started = trio.current_time()
        answer = await resolver.txt("_mta-sts.example.test")
    assert answer.status is status
    assert trio.current_time() - started == pytest.approx(waited)


async def test_every_nameserver_refusing_is_refused(loopback_clock: MockClock) -> None:
    def refuse(query: dns.message.Message, transport: str) -> list[Send]:
        return [Send(respond(query, rcode=dns.rcode.REFUSED))]

    async with scripted(refuse, "127.0.0.1") as one, scripted(refuse, "127.0.0.3") as two:
        answer = await Resolver.create([one.nameserver, two.nameserver], timeout=TIMEOUT).txt(
            "x.test"
        )
    assert answer.status is DnsStatus.REFUSED
    assert answer.detail == "every nameserver refused the query"


# ---------------------------------------------------------------- DNSSEC


def validating_script(*, root_ad: bool, answer_ad: bool) -> Script:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        if is_root_soa(query):
            soa = rrset(
                ".", "SOA", "a.root-servers.net. nstld.verisign-grs.com. 1 1800 900 604800 86400"
            )
            return [Send(respond(query, soa, ad=root_ad))]
        return [Send(txt_answer(query, ad=answer_ad))]

    return script


@pytest.mark.parametrize(
    ("root_ad", "answer_ad", "validating", "dnssec"),
    [
        pytest.param(True, True, True, DnssecStatus.SECURE, id="validating-ad"),
        pytest.param(True, False, True, DnssecStatus.INSECURE, id="validating-no-ad"),
        pytest.param(False, True, False, DnssecStatus.UNVALIDATED, id="not-validating-ad"),
        pytest.param(False, False, False, DnssecStatus.UNVALIDATED, id="not-validating"),
    ],
)
async def test_ad_bit_and_validation(
    root_ad: bool,
    answer_ad: bool,
    validating: bool,
    dnssec: DnssecStatus,
    loopback_clock: MockClock,
) -> None:
    async with scripted(validating_script(root_ad=root_ad, answer_ad=answer_ad)) as server:
        resolver = resolver_for(server)
        assert await resolver.detect_validation() is validating
        assert resolver.validating is validating
        answer = await resolver.txt("_mta-sts.example.test")
    assert answer.dnssec is dnssec
    root_query = server.asked()[0]
    assert root_query.flags & dns.flags.AD
    assert root_query.ednsflags & dns.flags.DO


@pytest.mark.parametrize(
    ("answer_ad", "dnssec"),
    [
        pytest.param(True, DnssecStatus.SECURE, id="ad"),
        pytest.param(False, DnssecStatus.UNVALIDATED, id="no-ad"),
    ],
)
async def test_without_detection_ad_is_still_read(
    answer_ad: bool, dnssec: DnssecStatus, loopback_clock: MockClock
) -> None:
    async with scripted(validating_script(root_ad=True, answer_ad=answer_ad)) as server:
        answer = await resolver_for(server).txt("_mta-sts.example.test")
    assert answer.dnssec is dnssec


async def test_validation_needs_every_nameserver(loopback_clock: MockClock) -> None:
    async with (
        scripted(validating_script(root_ad=True, answer_ad=True), "127.0.0.1") as one,
        scripted(validating_script(root_ad=False, answer_ad=False), "127.0.0.3") as two,
    ):
        resolver = Resolver.create([one.nameserver, two.nameserver], timeout=TIMEOUT)
        assert await resolver.detect_validation() is False


async def test_a_silent_nameserver_is_not_validating(loopback_clock: MockClock) -> None:
    async with scripted(lambda query, transport: []) as server:
        resolver = resolver_for(server)
        started = trio.current_time()
        assert await resolver.detect_validation() is False
    assert trio.current_time() - started == pytest.approx(TIMEOUT)


def servfail_script(
    *, ede: tuple[int, str | None] | None = None, cd_answers: bool = False
) -> Script:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        if is_root_soa(query):
            return [Send(respond(query, rrset(".", "SOA", SOA), ad=True))]
        if query.flags & dns.flags.CD and cd_answers:
            digest = "ab" * 32
            return [
                Send(respond(query, rrset(f"{qname(query)}.", qtype(query), f"3 1 1 {digest}")))
            ]
        return [Send(respond(query, rcode=dns.rcode.SERVFAIL, ede=ede))]

    return script


@pytest.mark.parametrize(
    ("ede", "words"),
    [
        pytest.param(
            (6, "RRSIG does not verify"), "6 DNSSEC Bogus: RRSIG does not verify", id="bogus"
        ),
        pytest.param((7, None), "7 Signature Expired", id="signature-expired"),
        pytest.param((10, "no RRSIG"), "10 RRSIGs Missing: no RRSIG", id="rrsigs-missing"),
    ],
)
async def test_extended_error_makes_an_answer_bogus(
    ede: tuple[int, str | None], words: str, loopback_clock: MockClock
) -> None:
    async with scripted(servfail_script(ede=ede)) as server:
        resolver = resolver_for(server)
        await resolver.detect_validation()
        answer = await resolver.tlsa("_25._tcp.mx.example.test")
    assert answer.status is DnsStatus.SERVFAIL
    assert answer.dnssec is DnssecStatus.BOGUS
    assert answer.extended_error == words
    assert answer.records == ()
    assert words in answer.detail
    assert resolver.stats.cd_retries == 0  # the extended error said it all


async def test_extended_error_about_something_else_is_no_bogus(loopback_clock: MockClock) -> None:
    async with scripted(
        servfail_script(ede=(22, "all servers timed out"), cd_answers=True)
    ) as server:
        resolver = resolver_for(server)
        await resolver.detect_validation()
        answer = await resolver.tlsa("_25._tcp.mx.example.test")
    assert answer.status is DnsStatus.SERVFAIL
    assert answer.dnssec is DnssecStatus.UNVALIDATED
    assert answer.extended_error == "22 No Reachable Authority: all servers timed out"
    assert resolver.stats.cd_retries == 0
    assert not any(query.flags & dns.flags.CD for query in server.asked())


@pytest.mark.parametrize(
    ("cd_answers", "dnssec"),
    [
        pytest.param(True, DnssecStatus.BOGUS, id="answer-with-cd"),
        pytest.param(False, DnssecStatus.UNVALIDATED, id="servfail-with-cd-too"),
    ],
)
async def test_servfail_that_goes_away_with_cd_is_bogus(
    cd_answers: bool, dnssec: DnssecStatus, loopback_clock: MockClock
) -> None:
    async with scripted(servfail_script(cd_answers=cd_answers)) as server:
        resolver = resolver_for(server)
        await resolver.detect_validation()
        started = trio.current_time()
        answer = await resolver.tlsa("_25._tcp.mx.example.test")
    assert answer.status is DnsStatus.SERVFAIL
    assert answer.dnssec is dnssec
    assert answer.records == ()  # bogus data is never handed out
    assert resolver.stats.cd_retries == 1
    assert trio.current_time() - started == 0
    assert [bool(q.flags & dns.flags.CD) for q in server.asked()[1:]] == [False, True]


async def test_no_cd_retry_when_the_resolver_does_not_validate(loopback_clock: MockClock) -> None:
    async with scripted(servfail_script(cd_answers=True)) as server:
        resolver = resolver_for(server)
        resolver.validating = False
        answer = await resolver.tlsa("_25._tcp.mx.example.test")
    assert answer.status is DnsStatus.SERVFAIL
    assert answer.dnssec is DnssecStatus.UNVALIDATED
    assert resolver.stats.cd_retries == 0


async def test_tlsa_records(loopback_clock: MockClock) -> None:
    digest = "0123456789abcdef" * 4

    def script(query: dns.message.Message, transport: str) -> list[Send]:
        if is_root_soa(query):
            return [Send(respond(query, rrset(".", "SOA", SOA), ad=True))]
        return [
            Send(
                respond(
                    query,
                    rrset(f"{qname(query)}.", "TLSA", f"3 1 1 {digest}", "2 0 1 " + "ff" * 32),
                    ad=True,
                )
            )
        ]

    async with scripted(script) as server:
        resolver = resolver_for(server)
        await resolver.detect_validation()
        answer = await resolver.tlsa("_25._tcp.mx.example.test")
    assert answer.status is DnsStatus.ANSWER
    assert answer.dnssec is DnssecStatus.SECURE
    assert answer.extended_error is None
    assert sorted(answer.records, key=lambda r: r.usage) == [
        TlsaRecord(2, 0, 1, b"\xff" * 32),
        TlsaRecord(3, 1, 1, bytes.fromhex(digest)),
    ]


# ---------------------------------------------------------------- CNAME chains


def chain_script(*, cname_ad: bool, target_ad: bool) -> Script:
    """An authoritative-style server: the CNAME alone, then the target on its own query."""

    def script(query: dns.message.Message, transport: str) -> list[Send]:
        if is_root_soa(query):
            return [Send(respond(query, rrset(".", "SOA", SOA), ad=True))]
        if qname(query) == "www.example.test":
            return [
                Send(
                    respond(
                        query,
                        rrset("www.example.test.", "CNAME", "Host.Provider.test."),
                        ad=cname_ad,
                    )
                )
            ]
        if qtype(query) == "A":
            return [
                Send(respond(query, rrset("host.provider.test.", "A", "192.0.2.7"), ad=target_ad))
            ]
        authority = [rrset("provider.test.", "SOA", SOA)]
        return [Send(respond(query, authority=authority, ad=target_ad))]

    return script


@pytest.mark.parametrize(
    ("cname_ad", "target_ad", "chain_secure", "dnssec"),
    [
        pytest.param(True, True, True, DnssecStatus.SECURE, id="all-secure"),
        pytest.param(False, True, False, DnssecStatus.INSECURE, id="insecure-cname"),
        pytest.param(True, False, True, DnssecStatus.INSECURE, id="insecure-target"),
    ],
)
async def test_cname_chain_followed_by_a_further_query(
    cname_ad: bool,
    target_ad: bool,
    chain_secure: bool,
    dnssec: DnssecStatus,
    loopback_clock: MockClock,
) -> None:
    async with scripted(chain_script(cname_ad=cname_ad, target_ad=target_ad)) as server:
        resolver = resolver_for(server)
        await resolver.detect_validation()
        a, aaaa = await resolver.addresses("www.example.test")
    assert a.status is DnsStatus.ANSWER
    assert a.addresses == ("192.0.2.7",)
    assert a.canonical_name == "host.provider.test"
    assert a.cname_chain_secure is chain_secure
    assert a.dnssec is dnssec
    assert aaaa.status is DnsStatus.NODATA
    assert aaaa.canonical_name == "host.provider.test"


async def test_no_cname_is_its_own_canonical_name(loopback_clock: MockClock) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        return [Send(respond(query, rrset(f"{qname(query)}.", "A", "192.0.2.8")))]

    async with scripted(script) as server:
        a, _ = await resolver_for(server).addresses("MX.Example.Test.")
    assert a.canonical_name == "mx.example.test"
    assert a.cname_chain_secure is False  # nothing was validated


async def test_cname_loop_across_queries_is_an_error(loopback_clock: MockClock) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        target = "b.example.test." if qname(query) == "a.example.test" else "a.example.test."
        return [Send(respond(query, rrset(f"{qname(query)}.", "CNAME", target)))]

    async with scripted(script) as server:
        answer = await resolver_for(server).txt("a.example.test")
    assert answer.status is DnsStatus.ERROR
    assert "CNAME" in answer.detail
    assert len(server.asked()) == 2


# ---------------------------------------------------------------- cache


@pytest.mark.parametrize(
    ("with_soa", "cached_for"),
    [pytest.param(True, 60, id="soa-minimum"), pytest.param(False, 0, id="no-soa-no-caching")],
)
async def test_negative_answers_are_cached_per_rfc2308(
    with_soa: bool, cached_for: int, loopback_clock: MockClock
) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        authority = [rrset("example.test.", "SOA", SOA, ttl=300)] if with_soa else []
        return [Send(respond(query, rcode=dns.rcode.NXDOMAIN, authority=authority))]

    async with scripted(script) as server:
        resolver = resolver_for(server)
        assert (await resolver.txt("_smtp._tls.example.test")).status is DnsStatus.NXDOMAIN
        await trio.sleep(59)
        assert (await resolver.txt("_smtp._tls.example.test")).status is DnsStatus.NXDOMAIN
        asked_within = len(server.asked())
        await trio.sleep(2)
        await resolver.txt("_smtp._tls.example.test")
    assert asked_within == (1 if cached_for else 2)
    assert len(server.asked()) == asked_within + 1  # expired (or never cached): asked again


async def test_failures_are_not_cached(loopback_clock: MockClock) -> None:
    async with scripted(lambda q, t: [Send(respond(q, rcode=dns.rcode.SERVFAIL))]) as server:
        resolver = resolver_for(server)
        resolver.validating = False
        await resolver.txt("x.example.test")
        await resolver.txt("x.example.test")
    assert len(server.asked()) == 2


async def test_answers_are_cached_for_their_ttl(loopback_clock: MockClock) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        address = "192.0.2.9" if qtype(query) == "A" else "2001:db8::9"
        return [Send(respond(query, rrset(f"{qname(query)}.", qtype(query), address, ttl=30)))]

    async with scripted(script) as server:
        resolver = resolver_for(server)
        await resolver.addresses("mx.example.test")
        await resolver.addresses("MX.example.test.")  # same name, other spelling
        assert len(server.asked("udp")) == 2  # A and AAAA, once
        await trio.sleep(31)
        await resolver.addresses("mx.example.test")
    assert len(server.asked("udp")) == 4
    assert resolver.stats.cache_hits == 2
    assert resolver.stats.lookups == 6


async def test_an_address_lookup_with_one_answer_cached_asks_only_for_the_other(
    loopback_clock: MockClock,
) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        if qtype(query) == "AAAA":
            return [Send(respond(query, rcode=dns.rcode.SERVFAIL))]  # failures are not cached
        return [Send(respond(query, rrset(f"{qname(query)}.", "A", "192.0.2.9", ttl=30)))]

    async with scripted(script) as server:
        resolver = resolver_for(server)
        resolver.validating = False
        first = await resolver.addresses("mx.example.test")
        second = await resolver.addresses("mx.example.test")
    assert first == second
    assert first[0].addresses == ("192.0.2.9",)
    assert first[1].status is DnsStatus.SERVFAIL
    assert [qtype(query) for query in server.asked("udp")].count("A") == 1
    assert resolver.stats.cache_hits == 1
    assert resolver.stats.lookups == 4


async def test_stats_count_answers_by_status(loopback_clock: MockClock) -> None:
    def script(query: dns.message.Message, transport: str) -> list[Send]:
        if qname(query).startswith("no"):
            return [
                Send(
                    respond(query, rcode=dns.rcode.NXDOMAIN, authority=[rrset("test.", "SOA", SOA)])
                )
            ]
        return [Send(txt_answer(query))]

    async with scripted(script) as server:
        resolver = resolver_for(server)
        await resolver.txt("yes.test")
        await resolver.txt("no.test")
        await resolver.txt("no.test")
    stats = resolver.stats
    assert dict(stats.by_status) == {DnsStatus.ANSWER: 1, DnsStatus.NXDOMAIN: 2}
    assert dict(stats.by_dnssec) == {DnssecStatus.UNVALIDATED: 3}
    assert stats.queries == stats.udp_queries == 2
