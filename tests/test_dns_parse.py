"""The reply parser of `scanner.core.dns_wire` against dnspython's, and against hostile bytes.

`oracle_parse` and `oracle_interpret` are the dnspython-based `parse_response` and
`interpret` the module had before it read replies itself (dnspython's
`dns.message.from_wire`, its RRsets and Rdata). The property tests build replies with
dnspython and want the same outcome from both; the fuzz tests want a value, never an
exception, and never a refusal where dnspython read the reply.

Where the parser differs from dnspython on purpose (each has a test below): it keeps
an EDE whose text is not UTF-8 (escaped), keeps TLSA records whose data does not fit
their matching type (the DANE rules call them unusable), and reads neither records of
other classes than IN, nor the RDATA of types it does not use, nor TSIG.
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.ipv6
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TLSA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.core.dns_wire import (
    MAX_CNAME_LINKS,
    MAX_EDE_TEXT,
    MAX_NAME_BYTES,
    MAX_NEGATIVE_TTL,
    MAX_POINTER_HOPS,
    MAX_POSITIVE_TTL,
    CnameData,
    Exchange,
    ExtendedError,
    Query,
    RecordData,
    Refusal,
    Response,
    TxtData,
    address_text,
    build_query,
    interpret,
    mx_record,
    name_text,
    name_wire,
    parse_response,
    status_of_rcode,
    tlsa_record,
    txt_text,
)
from scanner.models import DnsStatus, MxRecord, TlsaRecord

IN = dns.rdataclass.IN
SERVER = ("127.0.0.1", 53)
QUERY_ID = 0x1234

# ---------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class OracleResponse:
    message: dns.message.Message
    rcode: int
    authenticated: bool
    extended_error: ExtendedError | None


@dataclass(frozen=True)
class OracleOutcome:
    status: DnsStatus
    records: tuple[dns.rdata.Rdata, ...]
    links: tuple[dns.name.Name, ...]
    name: dns.name.Name
    follow: bool
    ttl: int
    authenticated: bool
    extended_error: ExtendedError | None
    detail: str = ""


def oracle_parse(wire: bytes) -> OracleResponse | None:
    """The former `parse_response`: dnspython's parser; None where it refused the reply."""
    try:
        message = dns.message.from_wire(wire)
    except Exception:
        return None
    return OracleResponse(
        message=message,
        rcode=message.rcode(),
        authenticated=bool(message.flags & dns.flags.AD),
        extended_error=_oracle_extended_error(message.options),
    )


def _oracle_extended_error(options: Iterable[dns.edns.Option]) -> ExtendedError | None:
    found: list[ExtendedError] = []
    for option in options:
        if isinstance(option, dns.edns.EDEOption):
            text = (option.text or "")[:MAX_EDE_TEXT]
            found.append(ExtendedError(int(option.code), text))
    for error in found:
        if error.dnssec_failure:
            return error
    return found[0] if found else None


def oracle_interpret(
    qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, response: OracleResponse
) -> OracleOutcome:
    """The former `interpret`, over dnspython's RRsets."""
    message = response.message
    name = qname
    links: list[dns.name.Name] = []
    ttl = MAX_POSITIVE_TTL
    while True:
        rrset = _oracle_find(message.answer, name, rdtype)
        if rrset is not None:
            return OracleOutcome(
                status=DnsStatus.ANSWER,
                records=tuple(rrset),
                links=tuple(links),
                name=name,
                follow=False,
                ttl=_oracle_clamp(min(ttl, rrset.ttl), MAX_POSITIVE_TTL),
                authenticated=response.authenticated,
                extended_error=response.extended_error,
            )
        cname = _oracle_find(message.answer, name, dns.rdatatype.CNAME)
        if cname is None or rdtype == dns.rdatatype.CNAME:
            break
        link = cname[0]
        assert isinstance(link, dns.rdtypes.ANY.CNAME.CNAME)
        target = link.target
        if len(links) >= MAX_CNAME_LINKS or target in links or target == qname:
            return OracleOutcome(
                status=DnsStatus.ERROR,
                records=(),
                links=(),
                name=dns.name.root,
                follow=False,
                ttl=0,
                authenticated=False,
                extended_error=response.extended_error,
                detail="CNAME chain too long or looping",
            )
        links.append(target)
        ttl = min(ttl, cname.ttl)
        name = target
    status, detail = status_of_rcode(response.rcode)
    soa = _oracle_find_type(message.authority, dns.rdatatype.SOA)
    negative_ttl = 0
    if soa is not None and status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA):
        start = soa[0]
        assert isinstance(start, dns.rdtypes.ANY.SOA.SOA)
        negative_ttl = _oracle_clamp(min(ttl, soa.ttl, start.minimum), MAX_NEGATIVE_TTL)
    follow = status is DnsStatus.NODATA and bool(links) and soa is None
    if links and status is DnsStatus.NXDOMAIN:
        detail = f"{detail} (CNAME target {name.to_text(omit_final_dot=True)})"
    return OracleOutcome(
        status=status,
        records=(),
        links=tuple(links),
        name=name,
        follow=follow,
        ttl=negative_ttl,
        authenticated=response.authenticated,
        extended_error=response.extended_error,
        detail=detail,
    )


def _oracle_find(
    section: list[dns.rrset.RRset], name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    for rrset in section:
        if rrset.rdtype == rdtype and rrset.rdclass == IN and rrset.name == name:
            return rrset if len(rrset) else None
    return None


def _oracle_find_type(
    section: list[dns.rrset.RRset], rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    for rrset in section:
        if rrset.rdtype == rdtype and rrset.rdclass == IN and len(rrset):
            return rrset
    return None


def _oracle_clamp(ttl: int, ceiling: int) -> int:
    if ttl < 0 or ttl > 0x7FFFFFFF:
        return 0
    return min(ttl, ceiling)


# ---------------------------------------------------------------- both, comparable


Seen = tuple[object, ...]


def _oracle_record(rdata: dns.rdata.Rdata) -> object:
    """A record as the former helpers (`txt_text`, `mx_record`, ...) read dnspython's Rdata."""
    if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
        return str(rdata.address)
    if isinstance(rdata, dns.rdtypes.ANY.MX.MX):
        return MxRecord(rdata.preference, rdata.exchange.to_text(omit_final_dot=True).lower())
    if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
        return ("txt", rdata.strings, b"".join(rdata.strings).decode(errors="backslashreplace"))
    if isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA):
        return TlsaRecord(rdata.usage, rdata.selector, rdata.mtype, bytes(rdata.cert))
    if isinstance(rdata, dns.rdtypes.ANY.CNAME.CNAME):
        return ("cname", rdata.target.to_text())
    assert isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
    return ("soa", rdata.minimum)


def dns_name(wire: bytes) -> dns.name.Name:
    """A name in wire form as dnspython reads it: this checks the form too."""
    name, used = dns.name.from_wire(wire, 0)
    assert used == len(wire)
    return name


def _record(data: RecordData) -> object:
    """A record as the new helpers read the parser's values."""
    if isinstance(data, str):
        return address_text(data)
    if isinstance(data, MxRecord):
        return mx_record(data)
    if isinstance(data, TxtData):
        return ("txt", data.strings, txt_text(data))
    if isinstance(data, TlsaRecord):
        return tlsa_record(data)
    if isinstance(data, CnameData):
        return ("cname", dns_name(data.target).to_text())
    return ("soa", data.minimum)


def seen_by_oracle(
    qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, wire: bytes
) -> Seen | None:
    response = oracle_parse(wire)
    if response is None:
        return None
    outcome = oracle_interpret(qname, rdtype, response)
    return (
        response.rcode,
        response.authenticated,
        response.extended_error,
        outcome.status,
        tuple(_oracle_record(rdata) for rdata in outcome.records),
        tuple(link.to_text() for link in outcome.links),
        outcome.name.to_text(),
        outcome.follow,
        outcome.ttl,
        outcome.authenticated,
        outcome.extended_error,
        outcome.detail,
    )


def seen_by_parser(query: Query, wire: bytes) -> Seen | None:
    response = parse_response(wire)
    assert isinstance(response, Response | Refusal)
    if isinstance(response, Refusal):
        assert response.detail.startswith("unparseable reply (")
        return None
    outcome = interpret(query, response)
    return (
        response.rcode,
        response.authenticated,
        response.extended_error,
        outcome.status,
        tuple(_record(data) for data in outcome.records),
        tuple(dns_name(link).to_text() for link in outcome.links),
        dns_name(outcome.name).to_text(),
        outcome.follow,
        outcome.ttl,
        outcome.authenticated,
        outcome.extended_error,
        outcome.detail,
    )


# ---------------------------------------------------------------- replies made by dnspython

# Labels that repeat, so that dnspython compresses, in both cases (RFC 4343).
LABELS = [
    b"www",
    b"WWW",
    b"mx",
    b"Mail",
    b"mail",
    b"example",
    b"EXAMPLE",
    b"test",
    b"b-c",
    b"_mta-sts",
    b"_25",
    b"_tcp",
    b"xn--bcher-kva",
]
SUFFIXES = [
    dns.name.from_text("example.test."),
    dns.name.from_text("Example.TEST."),
    dns.name.from_text("provider.test."),
    dns.name.root,
]
QTYPES = [
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.MX,
    dns.rdatatype.TXT,
    dns.rdatatype.TLSA,
    dns.rdatatype.CNAME,
    dns.rdatatype.SOA,
]
RCODES = [
    dns.rcode.NOERROR,
    dns.rcode.NOERROR,
    dns.rcode.NXDOMAIN,
    dns.rcode.SERVFAIL,
    dns.rcode.REFUSED,
    dns.rcode.FORMERR,
    dns.rcode.NOTIMP,
    dns.rcode.YXDOMAIN,
]
# Only with an OPT record to carry the upper bits (RFC 6891 §6.1.3).
EXTENDED_RCODES = [dns.rcode.BADVERS, dns.rcode.Rcode.make(0x3F1)]

labels = st.one_of(
    st.sampled_from(LABELS),
    st.binary(min_size=1, max_size=10),  # odd octets: dnspython's escapes
    st.binary(min_size=40, max_size=63),
)
names = st.builds(
    lambda first, suffix: dns.name.Name([*first, *suffix.labels]),
    st.lists(labels, max_size=3),
    st.sampled_from(SUFFIXES),
)
SMALL_TTLS = st.integers(0, 200_000)
ANY_TTLS = st.integers(0, 2**32 - 1)


def draw_ttl(draw: st.DrawFn) -> int:
    """A TTL, small or any 32 bits, even odds: `st.one_of` of the two, in fewer draws."""
    return draw(SMALL_TTLS if draw(st.booleans()) else ANY_TTLS)


IPV6_GROUPS = (0, 0, 0, 1, 0xFFFF, 0x2001, 0xDB8)
# Eight groups of IPV6_GROUPS, one octet drawn for each: one draw, not sixteen.
ipv6_groups = st.binary(min_size=8, max_size=8).map(
    lambda octets: [IPV6_GROUPS[octet % len(IPV6_GROUPS)] for octet in octets]
)
ipv6_addresses = st.one_of(
    st.binary(min_size=16, max_size=16), ipv6_groups.map(lambda g: struct.pack("!8H", *g))
)


# What a reply is made of is drawn as plain values (octets, integers, indexes into the
# pool of names), with strategies built once for each record type and pool size, and
# `replies` makes dnspython's records of them: each value Hypothesis draws costs it far
# more than the Python that makes a record, so a record is as few draws as cover it.
# The pool of names is `size` names and the root, last; an index is into all of them.

TLSA_LENGTHS = {1: 32, 2: 64}  # SHA-256, SHA-512; any length for the others
TLSA_DATA = st.one_of(
    [
        st.tuples(
            st.just(mtype),
            st.binary(min_size=TLSA_LENGTHS.get(mtype, 0), max_size=TLSA_LENGTHS.get(mtype, 40)),
        )
        for mtype in (0, 1, 2, 3, 255)
    ]
)
# The matching type and its data, then the usage and the selector, any octets.
tlsa_fields = st.tuples(TLSA_DATA, st.binary(min_size=2, max_size=2))

txt_strings = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.text(max_size=20).map(str.encode),  # at most 80 octets, as a string may hold
    ),
    min_size=1,
    max_size=3,
)

# Types whose records are a name and nothing else: an RRset of them is one to three
# indexes into the pool, drawn as one to three octets (each modulo the pool's length).
NAME_TYPES = (dns.rdatatype.CNAME, dns.rdatatype.NS)


@functools.cache
def values_of(rdtype: dns.rdatatype.RdataType, size: int) -> st.SearchStrategy[Sequence[object]]:
    """The values of one to three records of `rdtype`, as `rdata` makes them."""
    if rdtype in NAME_TYPES:
        return st.binary(min_size=1, max_size=3)
    pooled = st.integers(0, size)
    value: st.SearchStrategy[object]
    if rdtype == dns.rdatatype.A:
        value = st.binary(min_size=4, max_size=4)
    elif rdtype == dns.rdatatype.AAAA:
        value = ipv6_addresses
    elif rdtype == dns.rdatatype.MX:
        value = st.tuples(st.integers(0, 65535), pooled)
    elif rdtype == dns.rdatatype.TXT:
        value = txt_strings
    elif rdtype == dns.rdatatype.TLSA:
        value = tlsa_fields
    else:
        assert rdtype == dns.rdatatype.SOA
        # The MNAME and RNAME; the serial, refresh, retry and expire (any, and unread) as
        # one draw; the minimum (which the negative TTL comes from), small ones more often.
        value = st.tuples(
            pooled, pooled, st.binary(min_size=16, max_size=16), st.integers(0, 2**32 - 1)
        )
    return st.lists(value, min_size=1, max_size=3)


def rdata(
    rdtype: dns.rdatatype.RdataType, value: Any, names: Sequence[dns.name.Name]
) -> dns.rdata.Rdata:
    """A record of `rdtype` made of a value `values_of` drew, its names of `names`."""
    if rdtype == dns.rdatatype.A:
        return dns.rdtypes.IN.A.A(IN, rdtype, value)
    if rdtype == dns.rdatatype.AAAA:
        return dns.rdtypes.IN.AAAA.AAAA(IN, rdtype, value)
    if rdtype == dns.rdatatype.MX:
        preference, exchange = value
        return dns.rdtypes.ANY.MX.MX(IN, rdtype, preference, names[exchange])
    if rdtype == dns.rdatatype.TXT:
        return dns.rdtypes.ANY.TXT.TXT(IN, rdtype, value)
    if rdtype == dns.rdatatype.TLSA:
        (mtype, data), usage_selector = value
        return dns.rdtypes.ANY.TLSA.TLSA(IN, rdtype, *usage_selector, mtype, data)
    if rdtype == dns.rdatatype.CNAME:
        return dns.rdtypes.ANY.CNAME.CNAME(IN, rdtype, names[value % len(names)])
    if rdtype == dns.rdatatype.NS:
        return dns.rdtypes.ANY.NS.NS(IN, rdtype, names[value % len(names)])
    assert rdtype == dns.rdatatype.SOA
    mname, rname, times, minimum = value
    return dns.rdtypes.ANY.SOA.SOA(
        IN, rdtype, names[mname], names[rname], *struct.unpack("!4I", times), minimum
    )


def draw_rrset(
    draw: st.DrawFn,
    owner: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    names: Sequence[dns.name.Name],
) -> dns.rrset.RRset:
    """An RRset of one to three records, its names of the pool `names`, and a TTL: one for
    all the records, as dnspython writes them (the smallest it was given), so a TTL for
    each would make no other replies."""
    made = dns.rrset.RRset(owner, IN, rdtype)
    values = draw(values_of(rdtype, len(names) - 1))
    ttl = draw_ttl(draw)
    for value in values:
        made.add(rdata(rdtype, value, names), ttl)
    return made


@functools.cache
def owned_types(
    rdtypes: tuple[dns.rdatatype.RdataType, ...], size: int
) -> st.SearchStrategy[list[tuple[dns.rdatatype.RdataType, int]]]:
    """Up to three RRsets' types (of `rdtypes`) and owners (indexes into the pool)."""
    return st.lists(st.sampled_from(list(itertools.product(rdtypes, range(size)))), max_size=3)


def chaos_txt(owner: dns.name.Name) -> dns.rrset.RRset:
    """A record of class CH: neither parser uses it."""
    return dns.rrset.from_text_list(owner, 60, "CH", "TXT", ['"version"'])


edns_options = st.lists(
    st.one_of(
        st.builds(
            lambda code, text: dns.edns.EDEOption(dns.edns.EDECode.make(code), text),
            st.one_of(st.integers(0, 30), st.integers(0, 65535)),
            st.one_of(st.none(), st.text(max_size=250)),
        ),
        st.builds(lambda data: dns.edns.GenericOption(65001, data), st.binary(max_size=20)),
        st.builds(lambda data: dns.edns.GenericOption(dns.edns.NSID, data), st.binary(max_size=8)),
    ),
    max_size=4,
)


ANY_TYPES = (*QTYPES, dns.rdatatype.NS)
AUTHORITY_TYPES = (dns.rdatatype.SOA, dns.rdatatype.SOA, dns.rdatatype.NS)
# With EDNS or without, even odds; then any RCODE it can carry (the upper bits only in
# an OPT record, RFC 6891 §6.1.3), each as likely as the others.
EXTENDED_OR_NOT = [
    *((False, rcode) for rcode in RCODES * len(RCODES + EXTENDED_RCODES)),
    *((True, rcode) for rcode in (RCODES + EXTENDED_RCODES) * len(RCODES)),
]
# The question's type, EDNS and the RCODE, then whether the reply is authenticated (AD),
# answers the end of the CNAME chain, carries a record of class CH, and repeats an RRset:
# independent choices, drawn as one.
HEADER_CHOICES = st.sampled_from(
    list(itertools.product(QTYPES, EXTENDED_OR_NOT, *[(False, True)] * 4))
)
CHAIN_LENGTHS = st.integers(0, MAX_CNAME_LINKS + 1)
name_parts = st.tuples(st.lists(labels, max_size=3), st.sampled_from(SUFFIXES))


@dataclass(frozen=True)
class Made:
    """A reply made by dnspython to `query`, and the question as dnspython names it."""

    query: Query
    qname: dns.name.Name
    wire: bytes


@st.composite
def replies(draw: st.DrawFn) -> Made:
    """A reply with a random CNAME chain from the QNAME, random RRsets (repeated owners and
    types, so that records merge), SOA or NS in authority, any RCODE, AD, EDNS with EDE."""
    pool = [
        dns.name.Name([*first, *suffix.labels])
        for first, suffix in draw(st.lists(name_parts, min_size=1, max_size=5))
    ]
    size = len(pool)
    pooled = [*pool, dns.name.root]
    qname = pool[draw(st.integers(0, size - 1))]
    rdtype, (with_edns, rcode), authenticated, answered, chaos, repeated = draw(HEADER_CHOICES)
    query = build_query(qname, rdtype)
    response = dns.message.make_response(dns.message.from_wire(query.with_id(QUERY_ID)))
    response.use_edns(0 if with_edns else None, 0, 1232, options=draw(edns_options))
    response.set_rcode(rcode)
    if authenticated:
        response.flags |= dns.flags.AD
    answer: list[dns.rrset.RRset] = []
    owner = qname
    for _ in range(draw(CHAIN_LENGTHS)):
        link = draw_rrset(draw, owner, dns.rdatatype.CNAME, pooled)
        answer.append(link)
        target = link[0]
        assert isinstance(target, dns.rdtypes.ANY.CNAME.CNAME)
        owner = target.target
    if answered:
        answer.append(draw_rrset(draw, owner, rdtype, pooled))
    for t, at in draw(owned_types(ANY_TYPES, size)):
        answer.append(draw_rrset(draw, pool[at], t, pooled))
    if chaos:
        answer.append(chaos_txt(owner))
    if answer and repeated:  # the same RRset again, another TTL: merged
        again = answer[draw(st.integers(0, len(answer) - 1))].copy()
        again.ttl = draw_ttl(draw)
        answer.insert(draw(st.integers(0, len(answer))), again)
    response.answer = draw(st.permutations(answer))
    response.authority = [
        draw_rrset(draw, pool[at], t, pooled) for t, at in draw(owned_types(AUTHORITY_TYPES, size))
    ]
    return Made(query, qname, response.to_wire(max_size=65535, want_shuffle=False))


# ---------------------------------------------------------------- same as dnspython

SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(replies())
@SLOW
def test_outcome_is_dnspythons(made: Made) -> None:
    """Every reply dnspython writes reads back to the outcome the former parser gave."""
    expected = seen_by_oracle(made.qname, made.query.rdtype, made.wire)
    assert expected is not None
    assert seen_by_parser(made.query, made.wire) == expected


@given(replies())
@SLOW
def test_matched_reply_reads_as_a_standalone_one(made: Made) -> None:
    """`Exchange.accept` starts after the question it matched: the same `Response`."""
    new_ids = iter([QUERY_ID])
    exchange = Exchange(made.query, new_id=lambda: next(new_ids))
    exchange.datagram_for(SERVER)
    accepted = exchange.accept(made.wire, SERVER)
    if isinstance(accepted, Refusal):  # over MAX_RECORDS or MAX_RESPONSE_BYTES
        assert "limit" in accepted.detail
        return
    assert accepted == parse_response(made.wire)


@given(st.binary(min_size=16, max_size=16))
def test_ipv6_text_is_dnspythons(packed: bytes) -> None:
    check_ipv6(packed)


@given(ipv6_groups)
def test_ipv6_text_with_runs_of_zeros_is_dnspythons(groups: list[int]) -> None:
    check_ipv6(struct.pack("!8H", *groups))


@pytest.mark.parametrize(
    "text",
    [
        "::",
        "::1",
        "1::",
        "2001:db8::1",
        "2001:db8:0:1:1:1:1:1",  # one zero group stays
        "1:0:0:2:0:0:3:4",  # the first of two longest runs
        "1:0:0:2:0:0:0:4",
        "::ffff:192.0.2.1",  # IPv4-mapped
        "::192.0.2.1",  # IPv4-compatible
        "::1:192.0.2.1",
        "64:ff9b::192.0.2.1",
    ],
)
def test_ipv6_text_cases(text: str) -> None:
    check_ipv6(dns.ipv6.inet_aton(text))


def check_ipv6(packed: bytes) -> None:
    name = dns.name.from_text("v6.example.test")
    query = build_query(name, dns.rdatatype.AAAA)
    response = dns.message.make_response(dns.message.from_wire(query.with_id(1)))
    response.answer = [
        dns.rrset.from_rdata(name, 60, dns.rdtypes.IN.AAAA.AAAA(IN, dns.rdatatype.AAAA, packed))
    ]
    parsed = parse_response(response.to_wire())
    assert isinstance(parsed, Response)
    assert parsed.answer[0].data == dns.ipv6.inet_ntoa(packed)


@given(names)
def test_name_text_is_dnspythons(name: dns.name.Name) -> None:
    """`name_text` escapes as dnspython does (`\\.`, `\\032`, `\\255`), lower-cased."""
    wire = name.to_wire()
    assert wire is not None
    assert name_text(wire) == name.to_text(omit_final_dot=True).lower()


def dnspython_wire(text: str) -> bytes | str:
    """dnspython's wire form of `text`, or the name of the error it raises."""
    try:
        wire = dns.name.from_text(text).to_wire()
    except dns.exception.DNSException as exc:
        return type(exc).__name__
    assert wire is not None
    return wire


def our_wire(text: str) -> bytes | str:
    try:
        return name_wire(text)
    except dns.exception.DNSException as exc:
        return type(exc).__name__


@given(
    st.one_of(
        st.text(max_size=300),
        st.text(alphabet="ab-_.0\\", max_size=80),
        st.lists(st.text(alphabet="xyz", min_size=0, max_size=70), max_size=6).map(".".join),
        names.map(lambda name: name.to_text()),
    )
)
def test_name_wire_is_dnspythons(text: str) -> None:
    assert our_wire(text) == dnspython_wire(text)


@pytest.mark.parametrize(
    "text",
    ["mx.example.com", "mx.example.com.", "", ".", "@", "a..b", ".a", "a" * 63 + ".b",
     "a" * 64 + ".b", ".".join(["a" * 63] * 4), ".".join(["a" * 62] * 4), "a\\.b.c",
     "bücher.example", "_mta-sts.example", "-x.example", "a b.example"],
)  # fmt: skip
def test_name_wire_examples_are_dnspythons(text: str) -> None:
    assert our_wire(text) == dnspython_wire(text)


def test_name_text_examples() -> None:
    def wire(*labels: bytes) -> bytes:
        return b"".join(bytes([len(label)]) + label for label in (*labels, b""))

    assert name_text(b"\x00") == "."
    assert name_text(wire(b"MX1", b"Example", b"TEST")) == "mx1.example.test"
    assert name_text(wire(b"a.b", b"c d", b"\xff@$", b'"();\\')) == (
        r"a\.b.c\032d.\255\@\$.\"\(\)\;\\"
    )


# ---------------------------------------------------------------- hostile bytes


MUTATIONS = st.sampled_from([1, 1, 1, 2, 4])
ACTIONS = st.sampled_from(["flip", "flip", "flip", "cut", "insert", "pointer"])
BITS = st.integers(0, 7)
INSERTS = st.binary(min_size=1, max_size=4)


def _mutate(wire: bytes, data: st.DataObject) -> bytes:
    """Bytes flipped, cut, inserted, or compression pointers written anywhere past the ID
    and flags (the counts included)."""
    mutated = bytearray(wire)
    for _ in range(data.draw(MUTATIONS)):
        if len(mutated) <= 5:
            break
        position = data.draw(st.integers(4, len(mutated) - 1))
        action = data.draw(ACTIONS)
        if action == "flip":
            mutated[position] ^= 1 << data.draw(BITS)
        elif action == "cut":
            del mutated[position:]
        elif action == "insert":
            mutated[position:position] = data.draw(INSERTS)
        else:  # backwards, onto itself, or forwards
            target = data.draw(st.integers(0, len(mutated) + 4))
            mutated[position : position + 2] = bytes([0xC0 | (target >> 8), target & 0xFF])
    return bytes(mutated)


@given(replies(), st.data())
@SLOW
def test_mutated_replies_are_read_as_dnspython_reads_them_or_refused(
    made: Made, data: st.DataObject
) -> None:
    """Never an exception; never a refusal where dnspython read the reply; and where both
    read it, the same outcome. (Where dnspython refused and the parser did not, see the
    module docstring.)"""
    wire = _mutate(made.wire, data)
    found = seen_by_parser(made.query, wire)
    expected = seen_by_oracle(made.qname, made.query.rdtype, wire)
    if found is None:
        assert expected is None
    elif expected is not None:
        assert found == expected


A_QUERY = build_query(dns.name.from_text("a.example"), dns.rdatatype.A)


@given(
    st.integers(0, 0xFFFF),
    st.lists(st.integers(0, 3), min_size=4, max_size=4),
    st.binary(max_size=300),
)
@settings(max_examples=500)
def test_random_records_never_raise(flags: int, counts: list[int], body: bytes) -> None:
    """A header with a few records announced, then anything: a value every time."""
    wire = struct.pack("!6H", 1, flags, *counts) + body
    result = parse_response(wire)
    assert isinstance(result, Response | Refusal)
    if isinstance(result, Response):
        outcome = interpret(A_QUERY, result)
        assert isinstance(outcome.status, DnsStatus)


def test_every_cut_of_a_reply_is_refused() -> None:
    made = _mx_reply()
    for end in range(len(made)):
        result = parse_response(made[:end])
        assert isinstance(result, Refusal), end


# ---------------------------------------------------------------- by hand

QNAME = b"\x02mx\x07example\x04test\x00"
QUESTION = QNAME + struct.pack("!HH", 1, 1)
AT_QNAME = b"\xc0\x0c"  # a pointer to the QNAME, right after the header
AT_EXAMPLE = b"\xc0\x0f"  # to example.test, inside the QNAME
FIRST_RECORD = 12 + len(QUESTION)
OPT_DO = 0x8000


def record(owner: bytes, rdtype: int, rdata: bytes, *, ttl: int = 300, rdclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rdtype, rdclass, ttl, len(rdata)) + rdata


def opt(*options: tuple[int, bytes], ext_rcode: int = 0, owner: bytes = b"\x00") -> bytes:
    rdata = b"".join(struct.pack("!HH", code, len(data)) + data for code, data in options)
    return record(owner, 41, rdata, ttl=(ext_rcode << 24) | OPT_DO, rdclass=1232)


def message(
    *answer: bytes,
    authority: Sequence[bytes] = (),
    additional: Sequence[bytes] = (),
    rcode: int = 0,
    question: bytes = QUESTION,
) -> bytes:
    header = struct.pack(
        "!6H", QUERY_ID, 0x8180 | rcode, 1, len(answer), len(authority), len(additional)
    )
    return header + question + b"".join((*answer, *authority, *additional))


def _mx_reply() -> bytes:
    return message(
        record(AT_QNAME, 15, b"\x00\x0a\x03mx1" + AT_EXAMPLE),
        record(AT_QNAME, 15, b"\x00\x14\x03MX2" + AT_EXAMPLE),
        authority=[],
        additional=[opt((15, b"\x00\x03stale"))],
    )


def refusal(wire: bytes) -> str:
    result = parse_response(wire)
    assert isinstance(result, Refusal), result
    assert oracle_parse(wire) is None  # dnspython refuses it too
    return result.detail


def answer_of(wire: bytes) -> Response:
    result = parse_response(wire)
    assert isinstance(result, Response), result
    return result


def test_a_hand_made_reply_reads() -> None:
    response = answer_of(_mx_reply())
    assert [r.data for r in response.answer] == [
        MxRecord(10, "mx1.example.test"),
        MxRecord(20, "mx2.example.test"),
    ]
    assert response.extended_error == ExtendedError(3, "stale")
    assert response.answer[0].owner == QNAME


@pytest.mark.parametrize(
    ("owner", "reason"),
    [
        pytest.param(b"\xc0" + bytes([FIRST_RECORD + 2]), "not backwards", id="forward"),
        pytest.param(b"\xc0" + bytes([FIRST_RECORD]), "not backwards", id="onto-itself"),
        pytest.param(b"\x01a\xc0" + bytes([FIRST_RECORD]), "not backwards", id="onto-its-start"),
        pytest.param(b"\x40" + b"a" * 64 + b"\x00", "label type 0x40", id="label-64"),
        pytest.param(b"\x80\x00", "label type 0x80", id="label-type-10"),
        pytest.param(b"\x3fab", "past its end", id="label-past-the-end"),
    ],
)
def test_bad_owner_names_are_refused(owner: bytes, reason: str) -> None:
    assert reason in refusal(message(owner + b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04abcd"))


def test_pointers_at_each_other_are_refused() -> None:
    """A (1st record) points forward to B (2nd), B back to A: refused at the first."""
    second = FIRST_RECORD + 2 + 10 + 4
    first = record(b"\xc0" + bytes([second]), 1, b"abcd")
    wire = message(first, record(b"\xc0" + bytes([FIRST_RECORD]), 1, b"abcd"))
    assert "not backwards" in refusal(wire)


def _long_name(*lengths: int) -> bytes:
    return b"".join(bytes([n]) + b"x" * n for n in lengths) + b"\x00"


@pytest.mark.parametrize(
    ("lengths", "refused"),
    [
        pytest.param((63, 63, 63, 61), False, id="255-octets"),
        pytest.param((63, 63, 63, 62), True, id="256-octets"),
    ],
)
def test_names_over_255_octets_are_refused(lengths: tuple[int, ...], refused: bool) -> None:
    owner = _long_name(*lengths)
    assert len(owner) == MAX_NAME_BYTES + refused
    wire = message(record(owner, 1, b"abcd"))
    if refused:
        assert "over 255 octets" in refusal(wire)
    else:
        assert answer_of(wire).answer[0].owner == owner


def test_a_name_over_255_octets_by_compression_is_refused() -> None:
    """Each piece is short; the name they make is not: 2 × 64 + 134 octets."""
    qname = _long_name(63, 63, 4)
    question = qname + b"\x00\x01\x00\x01"
    wire = message(record(_long_name(63, 63)[:-1] + AT_QNAME, 1, b"abcd"), question=question)
    assert "over 255 octets" in refusal(wire)


def _pointer_chain(hops: int) -> bytes:
    """A record whose RDATA (an unread type) is a ladder of pointers, each to the one
    before, the first to the QNAME; then an A record owned by a pointer to the rung
    that makes `hops` pointers in all."""
    ladder_start = FIRST_RECORD + 2 + 10
    rungs = [AT_QNAME] + [
        struct.pack("!H", 0xC000 | (ladder_start + 2 * (i - 1))) for i in range(1, hops)
    ]
    ladder = record(AT_QNAME, 0xFF00, b"".join(rungs))
    top = struct.pack("!H", 0xC000 | (ladder_start + 2 * (hops - 2)))
    return message(ladder, record(top, 1, b"abcd"))


def test_pointer_hops_are_bounded() -> None:
    assert answer_of(_pointer_chain(MAX_POINTER_HOPS)).answer[0].owner == QNAME
    assert "too many compression pointers" in refusal(_pointer_chain(MAX_POINTER_HOPS + 1))


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        pytest.param(
            [record(AT_QNAME, 1, b"abcd")[:-2]], "RDATA of type 1 runs past the end", id="rdlength"
        ),
        pytest.param([record(AT_QNAME, 1, b"abcde")], "A RDATA of 5 octets", id="a-5"),
        pytest.param([record(AT_QNAME, 1, b"abc")], "A RDATA of 3 octets", id="a-3"),
        pytest.param([record(AT_QNAME, 28, b"a" * 15)], "AAAA RDATA of 15 octets", id="aaaa-15"),
        pytest.param(
            [record(AT_QNAME, 15, b"\x00\x0a\x03mx1"), record(AT_QNAME, 1, b"\x00abc")],
            "past its end",
            id="mx-name-past-its-rdata",
        ),
        pytest.param(
            [record(AT_QNAME, 15, b"\x00\x0a" + AT_QNAME + b"\x00")],
            "MX RDATA longer",
            id="mx-extra-octet",
        ),
        pytest.param([record(AT_QNAME, 15, b"\x00\x0a")], "MX RDATA of 2 octets", id="mx-short"),
        pytest.param(
            [record(AT_QNAME, 5, AT_QNAME + b"\x00")], "CNAME RDATA longer", id="cname-extra"
        ),
        pytest.param([record(AT_QNAME, 16, b"")], "TXT RDATA empty", id="txt-empty"),
        pytest.param([record(AT_QNAME, 16, b"\x05abc")], "TXT string", id="txt-past"),
        pytest.param([record(AT_QNAME, 52, b"\x03\x01")], "TLSA RDATA of 2", id="tlsa-short"),
        pytest.param(
            [record(AT_QNAME, 6, AT_QNAME + AT_QNAME + b"\x00" * 19)], "SOA RDATA", id="soa-short"
        ),
        pytest.param([opt()], "OPT record outside", id="opt-in-answer"),
    ],
)
def test_malformed_rdata_is_refused(records: list[bytes], reason: str) -> None:
    assert reason in refusal(message(*records))


def test_trailing_octets_are_refused() -> None:
    assert "after the last record" in refusal(_mx_reply() + b"\x00")


@pytest.mark.parametrize(
    ("additional", "reason"),
    [
        pytest.param([opt(), opt()], "a second OPT record", id="two-opt"),
        pytest.param([opt(owner=AT_QNAME)], "not owned by the root", id="opt-owner"),
        pytest.param([opt((15, b"\x00"))], "EDE option shorter", id="ede-short"),
        pytest.param(
            [opt()[:-2] + b"\x00\x04" + b"\x00\x0f\x00\x05"],
            "EDNS option runs past",
            id="option-past",
        ),
    ],
)
def test_malformed_opt_is_refused(additional: list[bytes], reason: str) -> None:
    assert reason in refusal(message(additional=additional))


@pytest.mark.parametrize(
    ("ext_rcode", "rcode", "expected"),
    [
        pytest.param(0, dns.rcode.NXDOMAIN, dns.rcode.NXDOMAIN, id="none"),
        pytest.param(1, 0, dns.rcode.BADVERS, id="badvers"),
        pytest.param(0xFF, 0xF, 0xFFF, id="all-bits"),
    ],
)
def test_extended_rcode_from_opt(ext_rcode: int, rcode: int, expected: int) -> None:
    """RFC 6891 §6.1.3: the OPT TTL's top octet is the RCODE's upper eight bits."""
    wire = message(additional=[opt(ext_rcode=ext_rcode)], rcode=rcode)
    response = answer_of(wire)
    assert response.rcode == expected
    expected_response = oracle_parse(wire)
    assert expected_response is not None
    assert expected_response.rcode == expected
    outcome = interpret(build_query(dns_name(QNAME), dns.rdatatype.A), response)
    assert outcome.status is status_of_rcode(expected)[0]


def test_extended_errors_choose_the_dnssec_failure() -> None:
    """RFC 8914 §2, as before: the first EDE that says DNSSEC failed, else the first."""
    wire = message(
        additional=[
            opt((15, b"\x00\x16first"), (65001, b"x"), (15, b"\x00\x06bogus"), (15, b"\x00\x07"))
        ]
    )
    assert answer_of(wire).extended_error == ExtendedError(6, "bogus")
    wire = message(additional=[opt((15, b"\x00\x16first"), (15, b"\x00\x03second"))])
    assert answer_of(wire).extended_error == ExtendedError(22, "first")


def test_extended_error_text_is_cut_and_its_nul_dropped() -> None:
    long_text = b"\x00\x16" + b"x" * (MAX_EDE_TEXT + 50) + b"\x00"
    error = answer_of(message(additional=[opt((15, long_text))])).extended_error
    assert error == ExtendedError(22, "x" * MAX_EDE_TEXT)
    error = answer_of(message(additional=[opt((15, b"\x00\x06text\x00"))])).extended_error
    assert error == ExtendedError(6, "text")


def test_extended_error_text_not_utf8_is_kept_escaped() -> None:
    """dnspython refused the whole reply; the code matters more than the text (a DNSSEC
    failure stays one), so the parser escapes what is not UTF-8 instead."""
    wire = message(rcode=dns.rcode.SERVFAIL, additional=[opt((15, b"\x00\x06bad \xff\xfe"))])
    assert oracle_parse(wire) is None
    error = answer_of(wire).extended_error
    assert error == ExtendedError(6, "bad \\xff\\xfe")
    assert error.dnssec_failure


def test_tlsa_data_that_does_not_fit_its_matching_type_is_kept() -> None:
    """dnspython 2.9 refused the whole reply; the DANE rules call the record unusable."""
    wire = message(record(AT_QNAME, 52, b"\x03\x01\x01" + b"\xab" * 31))
    assert oracle_parse(wire) is None
    (found,) = answer_of(wire).answer
    assert found.data == TlsaRecord(3, 1, 1, b"\xab" * 31)


def test_other_classes_and_types_are_stepped_over() -> None:
    wire = message(
        record(AT_QNAME, 16, b"\x07version", rdclass=3),  # CH
        record(AT_QNAME, 46, b"\xff" * 7),  # an RRSIG we do not read
        record(AT_QNAME, 1, b"\xc0\x00\x02\x01"),
    )
    response = answer_of(wire)
    assert [r.data for r in response.answer] == ["192.0.2.1"]
    assert response.answer[0].rdtype == 1


def test_records_merge_as_dnspython_merges_them() -> None:
    """RFC 2181 §5: one RRset per owner and type, the smallest TTL, no repeats; of a CNAME
    RRset with two records (not allowed, RFC 2181 §10.1) the last counts, as in dnspython."""
    upper = b"\x02MX\x07EXAMPLE\x04TEST\x00"
    wire = message(
        record(AT_QNAME, 1, b"\xc0\x00\x02\x01", ttl=500),
        record(upper, 1, b"\xc0\x00\x02\x02", ttl=400),
        record(AT_QNAME, 1, b"\xc0\x00\x02\x01", ttl=100),
    )
    query = build_query(dns_name(QNAME), dns.rdatatype.A)
    outcome = interpret(query, answer_of(wire))
    assert outcome.records == ("192.0.2.1", "192.0.2.2")
    assert outcome.ttl == 100
    assert seen_by_parser(query, wire) == seen_by_oracle(dns_name(QNAME), query.rdtype, wire)
    wire = message(
        record(AT_QNAME, 5, b"\x05first\x04test\x00"),
        record(AT_QNAME, 5, b"\x04last\x04test\x00"),
    )
    outcome = interpret(query, answer_of(wire))
    assert outcome.follow
    assert name_text(outcome.name) == "last.test"
    assert seen_by_parser(query, wire) == seen_by_oracle(dns_name(QNAME), query.rdtype, wire)


def test_a_question_left_out_or_doubled_is_read() -> None:
    header = struct.pack("!6H", 1, 0x8182, 0, 0, 0, 0)
    assert answer_of(header).rcode == dns.rcode.SERVFAIL
    doubled = struct.pack("!6H", 1, 0x8180, 2, 0, 0, 0) + QUESTION + AT_QNAME + QUESTION[-4:]
    assert answer_of(doubled).answer == ()
    assert "question runs past" in refusal(doubled[:-1])
