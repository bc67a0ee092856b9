"""The sans-IO DNS layer: query bytes, RFC 5452 matching, limits, TCP framing, outcomes."""

from __future__ import annotations

import os
import string
import struct
import warnings
from collections.abc import Callable, Iterator

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.core.dns_wire import (
    EDNS_PAYLOAD,
    MAX_CNAME_LINKS,
    MAX_NEGATIVE_TTL,
    MAX_RECORDS,
    MAX_RESPONSE_BYTES,
    NEED_DATA,
    TRUNCATED,
    Exchange,
    ExtendedError,
    Mismatch,
    Outcome,
    Query,
    RecordData,
    Refusal,
    Response,
    TcpFramer,
    build_query,
    interpret,
    make_query_message,
    mx_record,
    parse_response,
    random_query_id,
    reply_shape,
    tlsa_record,
    txt_text,
)
from scanner.models import DnsStatus, MxRecord, TlsaRecord

SERVER = ("127.0.0.1", 53)
OTHER_PORT = ("127.0.0.1", 54)
OTHER_HOST = ("127.0.0.2", 53)


def query_for(name: str = "mx.example.test", rdtype: str = "A", *, cd: bool = False) -> Query:
    return build_query(
        dns.name.from_text(name), dns.rdatatype.from_text(rdtype), checking_disabled=cd
    )


def wire_name(text: str) -> bytes:
    """A name in the wire form `Outcome.name` holds."""
    wire = dns.name.from_text(text).to_wire()
    assert wire is not None
    return wire


def ids(*values: int) -> Iterator[int]:
    yield from values


def exchange_with_id(query: Query, query_id: int = 0x1234) -> tuple[Exchange, bytes]:
    new_ids = ids(query_id)
    exchange = Exchange(query, new_id=lambda: next(new_ids))
    return exchange, exchange.datagram_for(SERVER)


def reply_to(
    datagram: bytes,
    *answer: dns.rrset.RRset,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    authority: tuple[dns.rrset.RRset, ...] = (),
    ad: bool = False,
    tc: bool = False,
    ede: tuple[int, str | None] | None = None,
) -> bytes:
    request = dns.message.from_wire(datagram)
    response = dns.message.make_response(request)
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


SOA = "ns.example.test. hostmaster.example.test. 1 3600 600 86400 60"


# ---------------------------------------------------------------- queries


@given(
    st.lists(
        # [A-Za-z0-9_-]{1,20}, as one string rather than a regex's draw for each character
        st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=20),
        min_size=0,
        max_size=5,
    ),
    st.sampled_from(["A", "AAAA", "MX", "TXT", "TLSA", "SOA", "CNAME"]),
    st.booleans(),
)
def test_query_bytes_are_dnspythons(labels: list[str], rdtype: str, cd: bool) -> None:
    """The template-built query is byte for byte the message dnspython makes."""
    name = dns.name.from_text(".".join(labels) + ".")
    kind = dns.rdatatype.from_text(rdtype)
    query = build_query(name, kind, checking_disabled=cd)
    assert query.wire == make_query_message(name, kind, checking_disabled=cd).to_wire()


def test_query_flags_and_edns() -> None:
    message = dns.message.from_wire(query_for(cd=True).with_id(7))
    assert message.id == 7
    assert message.flags & dns.flags.RD
    assert message.flags & dns.flags.AD  # RFC 6840 §5.7
    assert message.flags & dns.flags.CD
    assert message.edns == 0
    assert message.payload == EDNS_PAYLOAD
    assert message.ednsflags & dns.flags.DO
    assert not dns.message.from_wire(query_for().wire).flags & dns.flags.CD


def test_query_ids_are_spread_and_a_forked_child_draws_its_own() -> None:
    ids = [random_query_id() for _ in range(2000)]  # not a whole number of reads: some left
    assert all(0 <= query_id <= 0xFFFF for query_id in ids)
    assert len(set(ids)) > 1850  # 2,000 draws of 16 bits: about 30 repeats
    reader, writer = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of fork() in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: the IDs it would use next, to the parent
        os.write(writer, struct.pack("!8H", *(random_query_id() for _ in range(8))))
        os._exit(0)
    os.close(writer)
    child = struct.unpack("!8H", os.read(reader, 16))
    os.close(reader)
    os.waitpid(pid, 0)
    parent = tuple(random_query_id() for _ in range(8))
    assert child != parent


def test_each_try_gets_a_fresh_id() -> None:
    new_ids = ids(5, 5, 9)
    exchange = Exchange(query_for(), new_id=lambda: next(new_ids))
    first = exchange.datagram_for(SERVER)
    second = exchange.datagram_for(SERVER)
    assert struct.unpack("!H", first[:2]) == (5,)
    assert struct.unpack("!H", second[:2]) == (9,)  # 5 is still out: drawn again


# ---------------------------------------------------------------- matching (RFC 5452)


def _swap_id(wire: bytes) -> bytes:
    return struct.pack("!H", struct.unpack("!H", wire[:2])[0] ^ 1) + wire[2:]


def _other_question(datagram: bytes) -> bytes:
    other = dns.message.make_query(
        "other.example.test", "A", id=struct.unpack("!H", datagram[:2])[0]
    )
    return dns.message.make_response(other).to_wire()


def _other_type(datagram: bytes) -> bytes:
    other = dns.message.make_query(
        "mx.example.test", "AAAA", id=struct.unpack("!H", datagram[:2])[0]
    )
    return dns.message.make_response(other).to_wire()


def _with_flags(wire: bytes, set_bits: int = 0, clear_bits: int = 0) -> bytes:
    (flags,) = struct.unpack("!H", wire[2:4])
    return wire[:2] + struct.pack("!H", (flags | set_bits) & ~clear_bits) + wire[4:]


@pytest.mark.parametrize(
    ("forge", "source", "mismatch"),
    [
        pytest.param(lambda d: d[:11], SERVER, Mismatch.SHORT, id="short"),
        pytest.param(lambda d: _swap_id(reply_to(d)), SERVER, Mismatch.UNKNOWN_ID, id="id"),
        pytest.param(lambda d: reply_to(d), OTHER_PORT, Mismatch.WRONG_SOURCE, id="port"),
        pytest.param(lambda d: reply_to(d), OTHER_HOST, Mismatch.WRONG_SOURCE, id="address"),
        pytest.param(lambda d: d, SERVER, Mismatch.NOT_A_RESPONSE, id="query-echoed"),
        pytest.param(
            lambda d: _with_flags(reply_to(d), set_bits=0x2000),
            SERVER,
            Mismatch.WRONG_OPCODE,
            id="opcode",
        ),
        pytest.param(_other_question, SERVER, Mismatch.WRONG_QUESTION, id="name"),
        pytest.param(_other_type, SERVER, Mismatch.WRONG_QUESTION, id="type"),
    ],
)
def test_mismatches_are_ignored(
    forge: Callable[[bytes], bytes], source: tuple[str, int], mismatch: Mismatch
) -> None:
    exchange, datagram = exchange_with_id(query_for())
    assert exchange.accept(forge(datagram), source) is mismatch
    # ...and the real reply is still accepted afterwards
    reply = exchange.accept(reply_to(datagram, rrset("mx.example.test.", "A", "192.0.2.1")), SERVER)
    assert isinstance(reply, Response)


def test_question_matches_case_insensitively() -> None:
    exchange, datagram = exchange_with_id(query_for("MX.Example.TEST"))
    request = dns.message.from_wire(datagram)
    response = dns.message.make_response(request)
    response.question = [
        dns.rrset.RRset(dns.name.from_text("mx.EXAMPLE.test"), dns.rdataclass.IN, dns.rdatatype.A)
    ]
    assert isinstance(exchange.accept(response.to_wire(), SERVER), Response)


def test_an_id_is_answered_once() -> None:
    exchange, datagram = exchange_with_id(query_for())
    reply = reply_to(datagram)
    assert isinstance(exchange.accept(reply, SERVER), Response)
    assert exchange.accept(reply, SERVER) is Mismatch.UNKNOWN_ID


def test_a_late_reply_to_an_earlier_try_counts() -> None:
    new_ids = ids(1, 2)
    exchange = Exchange(query_for(), new_id=lambda: next(new_ids))
    first = exchange.datagram_for(SERVER)
    exchange.datagram_for(OTHER_HOST)
    assert isinstance(exchange.accept(reply_to(first), SERVER), Response)


@pytest.mark.parametrize(
    ("rcode", "accepted"),
    [
        pytest.param(dns.rcode.SERVFAIL, True, id="servfail"),
        pytest.param(dns.rcode.REFUSED, True, id="refused"),
        pytest.param(dns.rcode.FORMERR, True, id="formerr"),
        pytest.param(dns.rcode.NOERROR, False, id="noerror"),
        pytest.param(dns.rcode.NXDOMAIN, False, id="nxdomain"),
    ],
)
def test_error_replies_may_leave_the_question_out(rcode: dns.rcode.Rcode, accepted: bool) -> None:
    exchange, _ = exchange_with_id(query_for())
    header = struct.pack("!6H", 0x1234, 0x8000 | int(rcode), 0, 0, 0, 0)
    result = exchange.accept(header, SERVER)
    assert isinstance(result, Response) is accepted
    if not accepted:
        assert result is Mismatch.WRONG_QUESTION


# ---------------------------------------------------------------- limits


def test_truncated_reply_asks_for_tcp() -> None:
    exchange, datagram = exchange_with_id(query_for())
    assert exchange.accept(reply_to(datagram, tc=True), SERVER) is TRUNCATED


def test_truncated_reply_over_tcp_is_refused() -> None:
    exchange, datagram = exchange_with_id(query_for())
    result = exchange.accept(reply_to(datagram, tc=True), SERVER, stream=True)
    assert isinstance(result, Refusal)


def _big_txt_reply(datagram: bytes, size: int) -> bytes:
    strings = " ".join(f'"{"x" * 250}"' for _ in range(size // 251))
    return reply_to(datagram, rrset("mx.example.test.", "TXT", strings))


@pytest.mark.parametrize(
    ("size", "refused"),
    [
        pytest.param(MAX_RESPONSE_BYTES - 400, False, id="under"),
        pytest.param(MAX_RESPONSE_BYTES + 400, True, id="over"),
    ],
)
def test_size_limit(size: int, refused: bool) -> None:
    exchange, datagram = exchange_with_id(query_for(rdtype="TXT"))
    wire = _big_txt_reply(datagram, size)
    assert (len(wire) > MAX_RESPONSE_BYTES) is refused
    result = exchange.accept(wire, SERVER)
    assert isinstance(result, Refusal) is refused
    if refused:
        assert isinstance(result, Refusal)
        assert str(MAX_RESPONSE_BYTES) in result.detail


@pytest.mark.parametrize(
    ("count", "refused"),
    [
        pytest.param(MAX_RECORDS, False, id="at-limit"),
        pytest.param(MAX_RECORDS + 1, True, id="over"),
    ],
)
def test_record_count_limit(count: int, refused: bool) -> None:
    """Answer, authority and additional together; the reply's OPT record counts too."""
    exchange, datagram = exchange_with_id(query_for())
    addresses = [f"10.0.{i // 250}.{i % 250}" for i in range(count - 1)]
    wire = reply_to(datagram, rrset("mx.example.test.", "A", *addresses))
    result = exchange.accept(wire, SERVER)
    assert isinstance(result, Refusal) is refused


@given(st.binary(max_size=700))
@settings(max_examples=400)
def test_any_bytes_are_a_reply_value_never_a_crash(junk: bytes) -> None:
    """Through the matcher and straight into the parser: a value every time."""
    exchange, _ = exchange_with_id(query_for())
    matched = exchange.accept(junk, SERVER)
    assert isinstance(matched, Mismatch | Refusal | Response) or matched is TRUNCATED
    result = parse_response(junk)
    assert isinstance(result, Response | Refusal)
    if isinstance(result, Response):
        assert isinstance(interpret(query_for(), result), Outcome)


@given(
    st.binary(max_size=900), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)
)
@settings(max_examples=600)
def test_matched_junk_is_refused_or_read_never_a_crash(
    tail: bytes, flags: int, ancount: int, arcount: int
) -> None:
    """Bytes that pass the matching (our ID, QR, our question) and then anything at all."""
    query = query_for()
    exchange, datagram = exchange_with_id(query)
    flags = (flags | 0x8000) & ~0x7800
    header = struct.pack("!6H", 0x1234, flags, 1, ancount % 300, 0, arcount % 4)
    wire = header + datagram[12 : 12 + len(query.question_name) + 4] + tail
    result = exchange.accept(wire, SERVER)
    assert isinstance(result, Refusal | Response) or result is TRUNCATED
    if isinstance(result, Response):
        outcome = interpret(query, result)
        assert isinstance(outcome.status, DnsStatus)


@given(st.data())
@settings(max_examples=200)
def test_mutated_replies_never_crash(data: st.DataObject) -> None:
    """Real replies (answers, CNAMEs, SOA, EDE) with bytes flipped, cut or inserted."""
    query = query_for("www.example.test", "A")
    _, datagram = exchange_with_id(query)
    base = reply_to(
        datagram,
        rrset("www.example.test.", "CNAME", "web.example.test."),
        rrset("web.example.test.", "A", "192.0.2.1", "192.0.2.2"),
        authority=(rrset("example.test.", "SOA", SOA),),
        ede=(6, "signature expired"),
    )
    wire = bytearray(base)
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(12, len(wire) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            wire[position] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del wire[position:]
            if len(wire) <= 12:
                break
        else:
            wire[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    result = parse_response(bytes(wire))
    assert isinstance(result, Response | Refusal)
    if isinstance(result, Response):
        assert isinstance(interpret(query, result), Outcome)


# ---------------------------------------------------------------- TCP framing


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000], ids=lambda n: f"chunk-{n}")
def test_framer_does_not_care_how_bytes_are_split(chunk: int) -> None:
    messages = [b"first message", b"", b"x" * 300]
    stream = b"".join(struct.pack("!H", len(m)) + m for m in messages)
    framer = TcpFramer()
    found: list[bytes] = []
    for start in range(0, len(stream), chunk):
        framer.receive_data(stream[start : start + chunk])
        while (message := framer.next_message()) is not NEED_DATA:
            assert isinstance(message, bytes)
            found.append(message)
    assert found == messages


@pytest.mark.parametrize(
    ("length", "refused"),
    [
        pytest.param(MAX_RESPONSE_BYTES, False, id="at-limit"),
        pytest.param(MAX_RESPONSE_BYTES + 1, True, id="over"),
    ],
)
def test_framer_refuses_an_oversize_length_from_the_prefix(length: int, refused: bool) -> None:
    framer = TcpFramer()
    framer.receive_data(struct.pack("!H", length))
    result = framer.next_message()
    assert isinstance(result, Refusal) is refused
    if not refused:
        assert result is NEED_DATA
        assert framer.wanted() == length


# ---------------------------------------------------------------- outcomes


def outcome_of(query: Query, wire_of: Callable[[bytes], bytes]) -> Outcome:
    exchange, datagram = exchange_with_id(query)
    response = exchange.accept(wire_of(datagram), SERVER)
    assert isinstance(response, Response)
    return interpret(query, response)


def test_answer_with_a_cname_chain_inside() -> None:
    query = query_for("www.example.test")
    outcome = outcome_of(
        query,
        lambda d: reply_to(
            d,
            rrset("www.example.test.", "CNAME", "web.example.test.", ttl=50),
            rrset("web.example.test.", "CNAME", "host.example.test.", ttl=600),
            rrset("host.example.test.", "A", "192.0.2.1", ttl=300),
            ad=True,
        ),
    )
    assert outcome.status is DnsStatus.ANSWER
    assert outcome.name == wire_name("host.example.test")
    assert len(outcome.links) == 2
    assert outcome.ttl == 50  # the smallest TTL of the chain
    assert outcome.authenticated
    assert not outcome.follow


def test_chain_left_open_is_followed() -> None:
    """An authoritative-style reply: the CNAME, no data for its target, no SOA."""
    query = query_for("www.example.test")
    outcome = outcome_of(
        query, lambda d: reply_to(d, rrset("www.example.test.", "CNAME", "elsewhere.test."))
    )
    assert outcome.follow
    assert outcome.name == wire_name("elsewhere.test")


def test_chain_to_a_nodata_target_is_not_followed() -> None:
    query = query_for("www.example.test")
    outcome = outcome_of(
        query,
        lambda d: reply_to(
            d,
            rrset("www.example.test.", "CNAME", "elsewhere.test."),
            authority=(rrset("elsewhere.test.", "SOA", SOA),),
        ),
    )
    assert outcome.status is DnsStatus.NODATA
    assert not outcome.follow


@pytest.mark.parametrize(
    ("length", "status"),
    [
        pytest.param(MAX_CNAME_LINKS, DnsStatus.ANSWER, id="at-limit"),
        pytest.param(MAX_CNAME_LINKS + 1, DnsStatus.ERROR, id="over"),
    ],
)
def test_chain_length_is_bounded(length: int, status: DnsStatus) -> None:
    names = [f"n{i}.example.test." for i in range(length + 1)]
    links = [rrset(names[i], "CNAME", names[i + 1]) for i in range(length)]
    query = query_for("n0.example.test")
    outcome = outcome_of(query, lambda d: reply_to(d, *links, rrset(names[-1], "A", "192.0.2.1")))
    assert outcome.status is status


def test_a_looping_chain_is_an_error() -> None:
    query = query_for("a.example.test")
    outcome = outcome_of(
        query,
        lambda d: reply_to(
            d,
            rrset("a.example.test.", "CNAME", "b.example.test."),
            rrset("b.example.test.", "CNAME", "a.example.test."),
        ),
    )
    assert outcome.status is DnsStatus.ERROR


@pytest.mark.parametrize(
    ("rcode", "soa_ttl", "ttl"),
    [
        pytest.param(dns.rcode.NXDOMAIN, 300, 60, id="nxdomain-soa-minimum"),
        pytest.param(dns.rcode.NXDOMAIN, 30, 30, id="nxdomain-soa-ttl"),
        pytest.param(dns.rcode.NOERROR, 300, 60, id="nodata"),
        pytest.param(dns.rcode.NXDOMAIN, None, 0, id="nxdomain-without-soa"),
    ],
)
def test_negative_ttl_per_rfc2308(rcode: dns.rcode.Rcode, soa_ttl: int | None, ttl: int) -> None:
    authority = () if soa_ttl is None else (rrset("example.test.", "SOA", SOA, ttl=soa_ttl),)
    outcome = outcome_of(query_for(), lambda d: reply_to(d, rcode=rcode, authority=authority))
    assert outcome.ttl == ttl


def test_negative_ttl_is_capped() -> None:
    soa = "ns.example.test. hostmaster.example.test. 1 3600 600 86400 864000"
    authority = (rrset("example.test.", "SOA", soa, ttl=864000),)
    outcome = outcome_of(
        query_for(), lambda d: reply_to(d, rcode=dns.rcode.NXDOMAIN, authority=authority)
    )
    assert outcome.ttl == MAX_NEGATIVE_TTL


def test_records_of_other_owners_are_not_taken() -> None:
    outcome = outcome_of(
        query_for("mx.example.test"), lambda d: reply_to(d, rrset("evil.test.", "A", "192.0.2.66"))
    )
    assert outcome.status is DnsStatus.NODATA
    assert outcome.records == ()


@pytest.mark.parametrize(
    ("code", "text", "bogus", "words"),
    [
        pytest.param(6, "no valid RRSIG", True, "6 DNSSEC Bogus: no valid RRSIG", id="bogus"),
        pytest.param(7, None, True, "7 Signature Expired", id="expired"),
        pytest.param(22, "timeout", False, "22 No Reachable Authority: timeout", id="unreachable"),
        pytest.param(1, None, False, "1 Unsupported DNSKEY Algorithm", id="insecure-algorithm"),
        pytest.param(4000, None, False, "4000 Unassigned", id="unknown"),
    ],
)
def test_extended_errors(code: int, text: str | None, bogus: bool, words: str) -> None:
    exchange, datagram = exchange_with_id(query_for())
    response = exchange.accept(
        reply_to(datagram, rcode=dns.rcode.SERVFAIL, ede=(code, text)), SERVER
    )
    assert isinstance(response, Response)
    assert response.extended_error == ExtendedError(code, text or "")
    assert response.extended_error.dnssec_failure is bogus
    assert str(response.extended_error) == words


def test_ad_bit_is_read() -> None:
    for ad in (True, False):
        exchange, datagram = exchange_with_id(query_for())
        response = exchange.accept(reply_to(datagram, ad=ad), SERVER)
        assert isinstance(response, Response)
        assert response.authenticated is ad


# ---------------------------------------------------------------- records


def _rdata(rdtype: str, text: str) -> RecordData:
    """One record made by dnspython, as the reply parser reads it off the wire."""
    _, datagram = exchange_with_id(query_for("x.example.test", rdtype))
    response = parse_response(reply_to(datagram, rrset("x.example.test.", rdtype, text)))
    assert isinstance(response, Response)
    (record,) = response.answer
    return record.data


def test_record_readers() -> None:
    assert txt_text(_rdata("TXT", '"v=STSv1; " "id=1"')) == "v=STSv1; id=1"
    assert txt_text(_rdata("TXT", r'"caf\195\169 \255"')) == "café \\xff"
    assert mx_record(_rdata("MX", "10 MX1.Example.TEST.")) == MxRecord(10, "mx1.example.test")
    assert mx_record(_rdata("MX", "0 .")) == MxRecord(0, ".")
    digest = "ab" * 32
    assert tlsa_record(_rdata("TLSA", f"3 1 1 {digest}")) == TlsaRecord(
        3, 1, 1, bytes.fromhex(digest)
    )
    assert tlsa_record(_rdata("TLSA", "2 0 0 0123abcd")) == TlsaRecord(
        2, 0, 0, bytes.fromhex("0123abcd")
    )


@given(
    st.lists(st.text("abcdefghij", min_size=1, max_size=200), max_size=8),
    st.sampled_from([None, 512, 1232, 4096]),
    st.booleans(),
)
@settings(max_examples=200)
def test_a_replys_shape_is_what_dnspython_reads(
    texts: list[str], payload: int | None, truncated: bool
) -> None:
    """Size, TC and the OPT record's payload, as dnspython reads the same bytes."""
    query = dns.message.make_query("large.example.", "TXT", use_edns=payload is not None)
    response = dns.message.make_response(query)
    if payload is not None:
        response.use_edns(0, 0, payload)
    if truncated:
        response.flags |= dns.flags.TC
    if texts:
        response.answer.append(rrset("large.example.", "TXT", *(f'"{t}"' for t in texts)))
    wire = response.to_wire()
    shape = reply_shape(wire)
    assert not isinstance(shape, Refusal)
    read = dns.message.from_wire(wire)
    assert shape.size == len(wire)
    assert shape.truncated is bool(read.flags & dns.flags.TC)
    assert shape.edns_payload == (read.payload if read.edns >= 0 else None)


@given(st.binary(max_size=700))
def test_any_bytes_have_a_shape_or_a_refusal(junk: bytes) -> None:
    shape = reply_shape(junk)
    assert isinstance(shape, Refusal) or shape.size == len(junk)
