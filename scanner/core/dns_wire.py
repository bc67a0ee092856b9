"""DNS messages for the scanner's stub resolver: questions out, typed outcomes in. Sans-IO.

Theory of operation
-------------------
Nothing here touches a socket or a clock. `scanner.net.resolver` moves the bytes.

* `build_query(name, rdtype)` makes one question with dnspython's message classes:
  RD, AD (RFC 6840 §5.7: ask for the AD bit), EDNS0 with DO (RFC 3225) and a UDP
  payload of `EDNS_PAYLOAD` octets; CD on request, for the bogus check.
* `Exchange` is one question asked of one or more servers, possibly several times.
  It hands out the bytes of each try with a fresh random ID and remembers which
  server it went to; `accept(wire, source)` then matches a reply the way RFC 5452
  §§4, 9–10 asks (ID, source address and port, QR, opcode, the question) and returns
  a `Mismatch` to ignore (keep waiting), `TRUNCATED` (ask again over TCP), a
  `Refusal` (matched, but over the limits or unparseable) or a parsed `Response`.
* `parse_response(wire)` reads a reply with a parser of its own (RFC 1035 §4.1), not
  dnspython's: it keeps only what `interpret` uses — the RCODE (with the EDNS
  extended bits), AD, an RFC 8914 extended error, and the answer and authority
  records of class IN whose types the resolver asks for (A, AAAA, MX, TXT, CNAME,
  TLSA, SOA, PTR), each as a small typed value (`RecordData`); other records are stepped
  over by their RDLENGTH. Anything malformed is a `Refusal` that says what.
* `reply_shape(wire)` says how big a reply was, whether TC was set and what UDP
  payload its OPT record advertised, for `scanner doctor` (`TransportProbe`).
* `TcpFramer` cuts the two-octet length-prefixed messages of DNS over TCP
  (RFC 1035 §4.2.2) however the bytes are split, refusing a length over the limit
  before reading it.
* `interpret(query, response)` follows the CNAME chain inside one answer and turns
  the response into an `Outcome`: a status, the records at the end of the chain,
  whether the chain must be followed by a further query, how long the outcome may
  be cached (RFC 2308 §5 for negative answers) and what the resolver said about
  DNSSEC (AD, and an RFC 8914 extended error).

Names travel in wire form (`bytes`: length-prefixed labels ending with the root's
zero octet, uncompressed), as the reply spelled them; they compare after
`bytes.lower()`, in ASCII only (RFC 4343). `name_text` gives the text the models hold.

Limits, all checked before the records are read: a reply is at most
`MAX_RESPONSE_BYTES` octets and holds at most `MAX_RECORDS` records (answer,
authority and additional, from the header counts); an EDE text is cut at
`MAX_EDE_TEXT` characters; a chain has at most `MAX_CNAME_LINKS` links. Inside the
parser a name is at most 255 octets, reached through at most `MAX_POINTER_HOPS`
compression pointers that each point strictly backwards.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final, NamedTuple

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from scanner.models import DnsStatus, MxRecord, TlsaRecord

# RFC 6891 §6.2.5 and the DNS Flag Day 2020 value: big enough for signed answers of
# the sizes we ask for, small enough not to fragment.
EDNS_PAYLOAD: Final = 1232
# A reply over this size is refused, over UDP and over TCP. MTA-STS, TLS-RPT, MX,
# A/AAAA and TLSA answers are a few hundred octets even with signatures.
MAX_RESPONSE_BYTES: Final = 16_384
# Records in the answer, authority and additional sections together (header counts).
MAX_RECORDS: Final = 256
# CNAME links followed for one lookup, inside answers and across queries (RFC 1034 §3.6.2).
MAX_CNAME_LINKS: Final = 8
# RFC 8767 §4 caps TTLs at 7 days; a run never needs more than a day.
MAX_POSITIVE_TTL: Final = 86_400
# RFC 2308 §5: "values of one to three hours have been found to work well".
MAX_NEGATIVE_TTL: Final = 3_600
MAX_EDE_TEXT: Final = 200

HEADER_BYTES: Final = 12
_QR: Final = 0x8000
_OPCODE_MASK: Final = 0x7800
_RCODE_MASK: Final = 0x000F
_TC: Final = 0x0200
_AD: Final = 0x0020

Address = tuple[str, int]


# ---------------------------------------------------------------- questions


@dataclass(frozen=True, slots=True)
class Query:
    """One question, ready to be sent with any ID.

    `name` is the QNAME in wire form as sent; `wire` carries ID 0; `question_name` is
    the QNAME lower-cased, and `question_tail` the QTYPE and QCLASS, for matching
    replies (RFC 5452 §9.1) and for finding the records that answer it.
    """

    name: bytes
    rdtype: dns.rdatatype.RdataType
    checking_disabled: bool
    wire: bytes
    question_name: bytes
    question_tail: bytes

    def with_id(self, query_id: int) -> bytes:
        return query_id.to_bytes(2, "big") + self.wire[2:]


def build_query(
    name: dns.name.Name | bytes,
    rdtype: dns.rdatatype.RdataType,
    *,
    checking_disabled: bool = False,
) -> Query:
    """A recursive query with AD and DO set (RFC 6840 §5.7, RFC 3225), CD on request.

    The bytes are those of `dns.message.make_query(name, rdtype, use_edns=0,
    want_dnssec=True, payload=EDNS_PAYLOAD, id=0, flags=...).to_wire()`: dnspython
    builds them once per (type, CD) around the root name, and only the QNAME (the one
    name of a query, never compressed) is put in for each question, which costs a
    fiftieth of building the message (tests/test_dns_wire.py holds the equality).
    `name` is a dnspython name or a name in wire form as this module hands them out
    (`Outcome.name`: absolute, uncompressed, within the RFC 1035 limits). Raises
    `dns.exception.DNSException` for a relative dnspython name.
    """
    header, tail = _query_template(rdtype, checking_disabled)
    if isinstance(name, bytes):
        qname = name
    else:
        wire_name = name.to_wire()
        assert wire_name is not None
        qname = wire_name
    return Query(
        name=qname,
        rdtype=rdtype,
        checking_disabled=checking_disabled,
        wire=header + qname + tail,
        question_name=qname.lower(),
        question_tail=tail[:4],
    )


def make_query_message(
    name: dns.name.Name, rdtype: dns.rdatatype.RdataType, *, checking_disabled: bool = False
) -> dns.message.QueryMessage:
    """The query `build_query` puts on the wire, as a dnspython message."""
    flags = dns.flags.RD | dns.flags.AD
    if checking_disabled:
        flags |= dns.flags.CD
    return dns.message.make_query(
        name, rdtype, use_edns=0, want_dnssec=True, payload=EDNS_PAYLOAD, id=0, flags=flags
    )


@functools.cache
def _query_template(
    rdtype: dns.rdatatype.RdataType, checking_disabled: bool
) -> tuple[bytes, bytes]:
    """The header, and what follows the QNAME (QTYPE, QCLASS, the OPT record), of a query."""
    wire = make_query_message(dns.name.root, rdtype, checking_disabled=checking_disabled).to_wire()
    root_end = _question_name_end(wire)
    return wire[:HEADER_BYTES], wire[root_end:]


def _question_name_end(wire: bytes) -> int:
    """Offset just past the uncompressed QNAME that starts right after the header."""
    offset = HEADER_BYTES
    while wire[offset]:
        offset += wire[offset] + 1
    return offset + 1


# IDs taken from the kernel's CSPRNG per read: one system call for many queries.
_IDS_PER_READ: Final = 256
_unused_ids: list[int] = []


def random_query_id() -> int:
    """RFC 5452 §9.2: IDs from a cryptographically strong source (`os.urandom`, in batches)."""
    if not _unused_ids:
        _unused_ids.extend(memoryview(os.urandom(2 * _IDS_PER_READ)).cast("H"))
    return _unused_ids.pop()


# A forked child must not use the IDs its parent will use too.
os.register_at_fork(after_in_child=_unused_ids.clear)


# ---------------------------------------------------------------- replies


class Mismatch(StrEnum):
    """Why a datagram is not the reply to our question: ignore it and keep waiting (RFC 5452 §9.1)."""

    SHORT = "shorter than a DNS header"
    UNKNOWN_ID = "an ID we have no question out for"
    WRONG_SOURCE = "from another address or port than the question went to"
    NOT_A_RESPONSE = "QR bit clear"
    WRONG_OPCODE = "opcode is not QUERY"
    WRONG_QUESTION = "another question"


class _Truncated(Enum):
    TRUNCATED = "truncated"


# RFC 1035 §4.1.1 TC: the reply did not fit; ask again over TCP (RFC 7766 §5).
TRUNCATED: Final = _Truncated.TRUNCATED


@dataclass(frozen=True, slots=True)
class Refusal:
    """A reply that matched our question but that we will not use (over a limit, unparseable)."""

    detail: str


@dataclass(frozen=True, slots=True)
class ExtendedError:
    """An RFC 8914 extended DNS error (EDNS option 15): INFO-CODE and EXTRA-TEXT."""

    code: int
    text: str = ""

    @property
    def name(self) -> str:
        return EDE_NAMES.get(self.code, "Unassigned")

    @property
    def dnssec_failure(self) -> bool:
        """The resolver says DNSSEC validation failed (the answer is bogus)."""
        return self.code in EDE_BOGUS

    def __str__(self) -> str:
        words = f"{self.code} {self.name}"
        return f"{words}: {self.text}" if self.text else words


# RFC 8914 §4 and the IANA "Extended DNS Error Codes" registry.
EDE_NAMES: Final[dict[int, str]] = {
    0: "Other Error",
    1: "Unsupported DNSKEY Algorithm",
    2: "Unsupported DS Digest Type",
    3: "Stale Answer",
    4: "Forged Answer",
    5: "DNSSEC Indeterminate",
    6: "DNSSEC Bogus",
    7: "Signature Expired",
    8: "Signature Not Yet Valid",
    9: "DNSKEY Missing",
    10: "RRSIGs Missing",
    11: "No Zone Key Bit Set",
    12: "NSEC Missing",
    13: "Cached Error",
    14: "Not Ready",
    15: "Blocked",
    16: "Censored",
    17: "Filtered",
    18: "Prohibited",
    19: "Stale NXDOMAIN Answer",
    20: "Not Authoritative",
    21: "Not Supported",
    22: "No Reachable Authority",
    23: "Network Error",
    24: "Invalid Data",
    25: "Signature Expired before Valid",
    26: "Too Early",
    27: "Unsupported NSEC3 Iterations Value",
    28: "Unable to Conform to Policy",
    29: "Synthesized",
    30: "Invalid Query Type",
}

# The codes that say validation failed: the data is bogus (RFC 4035 §5.5). Codes 1, 2
# and 27 say the resolver treated the zone as insecure instead; the rest are not DNSSEC.
EDE_BOGUS: Final = frozenset({5, 6, 7, 8, 9, 10, 11, 12, 25})


@dataclass(frozen=True, slots=True)
class TxtData:
    """A TXT record's character-strings (RFC 1035 §3.3.14), as on the wire."""

    strings: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CnameData:
    """A CNAME record's target (RFC 1035 §3.3.1), in wire form, with the case it came in."""

    target: bytes


@dataclass(frozen=True, slots=True)
class PtrData:
    """A PTR record's name (RFC 1035 §3.3.12), as `name_text` gives it."""

    name: str


@dataclass(frozen=True, slots=True)
class SoaData:
    """Of an SOA record (RFC 1035 §3.3.13), the one field RFC 2308 §5 needs: MINIMUM."""

    minimum: int


# One record's RDATA as the parser keeps it: the address text of an A or AAAA record,
# `MxRecord` (exchange as `name_text` gives it), `TxtData`, `CnameData`, `TlsaRecord`
# (RFC 6698 §2.1), `SoaData`, `PtrData`.
RecordData = str | MxRecord | TxtData | CnameData | TlsaRecord | SoaData | PtrData


class ResourceRecord(NamedTuple):
    """One record of class IN of a type the parser reads (RFC 1035 §4.1.3).

    `owner` is lower-cased wire form (RFC 4343: names compare in ASCII lower case);
    `ttl` is already 0 when the top bit was set (RFC 2181 §8).
    """

    owner: bytes
    rdtype: int
    ttl: int
    data: RecordData


@dataclass(frozen=True, slots=True)
class Response:
    """A matched, parsed reply within the limits: what `interpret` reads of it.

    `rcode` includes the upper eight bits from the OPT record (RFC 6891 §6.1.3).
    `answer` and `authority` hold, in wire order, the records of class IN of the
    types the parser reads (see `RecordData`); others are not kept.
    """

    rcode: int
    authenticated: bool  # AD (RFC 4035 §3.2.3)
    extended_error: ExtendedError | None
    answer: tuple[ResourceRecord, ...] = ()
    authority: tuple[ResourceRecord, ...] = ()


Reply = Mismatch | _Truncated | Refusal | Response

# RFC 5452 §9.1 wants the question echoed; some servers leave it out of an error reply
# (RFC 1035 §4.1.1 FORMERR, NOTIMP, REFUSED; SERVFAIL). Accepting those costs nothing:
# a forger who knows the ID and the port also knows the question.
_ERRORS_WITHOUT_QUESTION: Final = frozenset(
    {dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED}
)


class Exchange:
    """One question asked of one or more servers, once or several times (RFC 5452).

    Every try gets a fresh random ID that no other try of this exchange has out.
    A reply is accepted for any try still out, so a slow reply to an earlier try
    is as good as the reply to the latest; each ID is answered once.
    """

    __slots__ = ("_new_id", "_out", "query")

    def __init__(self, query: Query, new_id: Callable[[], int] = random_query_id) -> None:
        self.query = query
        self._new_id = new_id
        self._out: dict[int, Address] = {}

    def datagram_for(self, server: Address) -> bytes:
        """The bytes of one UDP try to `server`."""
        return self.query.with_id(self._register(server))

    def stream_message_for(self, server: Address) -> bytes:
        """The bytes of one TCP try to `server`, with the RFC 1035 §4.2.2 length prefix."""
        wire = self.query.with_id(self._register(server))
        return struct.pack("!H", len(wire)) + wire

    def _register(self, server: Address) -> int:
        while True:
            query_id = self._new_id()
            if query_id not in self._out:
                self._out[query_id] = server
                return query_id

    def accept(self, wire: bytes, source: Address, *, stream: bool = False) -> Reply:
        """Match `wire`, received from `source`, against the tries out, then check and parse it.

        `wire` may be longer than `MAX_RESPONSE_BYTES` (read with a buffer one octet
        larger, to tell): it is then refused, after matching. `stream` says it came over
        TCP, where TC is not expected.
        """
        if len(wire) < HEADER_BYTES:
            return Mismatch.SHORT
        query_id, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", wire)
        server = self._out.get(query_id)
        if server is None:
            return Mismatch.UNKNOWN_ID
        if server != source:
            return Mismatch.WRONG_SOURCE
        if not flags & _QR:
            return Mismatch.NOT_A_RESPONSE
        if flags & _OPCODE_MASK:
            return Mismatch.WRONG_OPCODE
        if not self._question_matches(wire, qdcount, flags & _RCODE_MASK):
            return Mismatch.WRONG_QUESTION
        del self._out[query_id]  # answered: a second reply with this ID is ignored
        # The question matched byte for byte: the records start right after it.
        start = HEADER_BYTES + (
            len(self.query.question_name) + _QUESTION_TAIL_BYTES if qdcount else 0
        )
        return _check_and_parse(wire, flags, ancount + nscount + arcount, start, stream=stream)

    def _question_matches(self, wire: bytes, qdcount: int, rcode: int) -> bool:
        if qdcount == 0:
            return rcode in _ERRORS_WITHOUT_QUESTION
        if qdcount != 1:
            return False
        query = self.query
        end = HEADER_BYTES + len(query.question_name)
        # RFC 4343: names compare case-insensitively, in ASCII only (bytes.lower()).
        return (
            wire[HEADER_BYTES:end].lower() == query.question_name
            and wire[end : end + 4] == query.question_tail
        )


def _check_and_parse(wire: bytes, flags: int, records: int, start: int, *, stream: bool) -> Reply:
    if len(wire) > MAX_RESPONSE_BYTES:
        return Refusal(f"reply over the {MAX_RESPONSE_BYTES}-octet limit")
    if flags & _TC:
        if stream:
            return Refusal("truncated reply over TCP")
        return TRUNCATED
    if records > MAX_RECORDS:
        return Refusal(f"reply with {records} records, over the limit of {MAX_RECORDS}")
    return _parse(wire, start)


def parse_response(wire: bytes) -> Response | Refusal:
    """Read a reply (RFC 1035 §4.1); anything malformed is a `Refusal` that says what.

    Every name, record and option must lie within the message and the message must
    end with its last record; every RDATA the parser reads must be exactly as long as
    its RDLENGTH says (RFC 1035 §3.2.1). Not checked here: `MAX_RESPONSE_BYTES` and
    `MAX_RECORDS` (`Exchange.accept` does, first) — the work is bounded by the length
    of `wire` all the same.
    """
    return _parse(wire, 0)


class _Malformed(Exception):
    """Inside the parser: the reply breaks the wire format or a bound; says which, briefly."""


# The parts of RFC 1035 §4.1 read with struct: header; TYPE, CLASS, TTL, RDLENGTH of a
# record (§4.1.3); OPTION-CODE, OPTION-LENGTH of an EDNS option (RFC 6891 §6.1.2).
_HEADER: Final = struct.Struct("!6H")
_RECORD: Final = struct.Struct("!HHIH")
_OPTION: Final = struct.Struct("!HH")
_IPV6_GROUPS: Final = struct.Struct("!8H")
_RECORD_BYTES: Final = 10
_QUESTION_TAIL_BYTES: Final = 4
_OPT: Final = int(dns.rdatatype.OPT)
_CNAME: Final = int(dns.rdatatype.CNAME)
_SOA: Final = int(dns.rdatatype.SOA)
_CLASS_IN: Final = 1
_EDE_OPTION: Final = 15  # RFC 8914 §2
_ROOT: Final = b"\x00"
# RFC 1035 §2.3.4: a name is at most 255 octets in wire form, a label at most 63. A
# length octet of 0xC0 and over starts a compression pointer (§4.1.4); 0x40–0xBF are
# the label types 01 and 10, reserved there (RFC 6891 §5 retired the extended ones).
MAX_NAME_BYTES: Final = 255
_POINTER: Final = 0xC0
_LABEL_LIMIT: Final = 0x40
# Pointers followed for one name, like dnspython's MAX_COMPRESSION_POINTER_CHAIN: a
# compressor points once, at the longest suffix it has already written.
MAX_POINTER_HOPS: Final = 16
# RFC 2181 §8: a TTL with the top bit set is taken as zero.
_TTL_MAX: Final = 0x7FFFFFFF


def _parse(wire: bytes, start: int) -> Response | Refusal:
    """`parse_response`, with the question already matched when `start` is past it."""
    try:
        return _read_message(wire, start)
    except _Malformed as exc:
        return Refusal(f"unparseable reply ({exc})")


def _read_message(wire: bytes, start: int) -> Response:
    """Header, question (skipped: from `start` if already matched, else read when
    `start` is 0), answer, authority, additional (RFC 1035 §4.1), nothing after."""
    end = len(wire)
    if end < HEADER_BYTES:
        raise _Malformed("shorter than a DNS header")
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    offset = start
    if not offset:
        offset = HEADER_BYTES
        for _ in range(qdcount):
            offset = _read_name(wire, offset, end)[1] + _QUESTION_TAIL_BYTES
            if offset > end:
                raise _Malformed("question runs past the end")
    answer: list[ResourceRecord] = []
    authority: list[ResourceRecord] = []
    offset = _read_section(wire, offset, end, ancount, answer)
    offset = _read_section(wire, offset, end, nscount, authority)
    offset, opt_ttl, extended_error = _read_additional(wire, offset, end, arcount)
    if offset != end:
        raise _Malformed(f"trailing octets after the last record ({end - offset})")
    return Response(
        # RFC 6891 §6.1.3: EXTENDED-RCODE, the top octet of the OPT TTL, is the upper
        # eight bits of the 12-bit RCODE.
        rcode=(flags & _RCODE_MASK) | ((opt_ttl >> 20) & 0xFF0),
        authenticated=bool(flags & _AD),
        extended_error=extended_error,
        answer=tuple(answer),
        authority=tuple(authority),
    )


def _record_header(wire: bytes, offset: int, end: int) -> tuple[int, int, int, int, int]:
    """TYPE, CLASS, TTL, and where the RDATA starts and ends (RFC 1035 §4.1.3).

    `offset` is just past the owner name; the RDATA must end within the message.
    """
    rdata = offset + _RECORD_BYTES
    if rdata > end:
        raise _Malformed("record runs past the end")
    rdtype, rdclass, ttl, rdlength = _RECORD.unpack_from(wire, offset)
    rdata_end = rdata + rdlength
    if rdata_end > end:
        raise _Malformed(f"RDATA of type {rdtype} runs past the end")
    return rdtype, rdclass, ttl, rdata, rdata_end


def _read_section(
    wire: bytes, offset: int, end: int, count: int, into: list[ResourceRecord]
) -> int:
    """The answer or authority section (RFC 1035 §4.1.3), its records added to `into`.

    Only the records of class IN whose type `_DECODERS` reads are kept; the others
    are stepped over. An OPT record belongs in the additional section only (RFC 6891
    §6.1.1).
    """
    for _ in range(count):
        owner, offset = _read_name(wire, offset, end)
        rdtype, rdclass, ttl, rdata, offset = _record_header(wire, offset, end)
        if rdtype == _OPT:
            raise _Malformed("OPT record outside the additional section")
        if rdclass == _CLASS_IN:
            decode = _DECODERS.get(rdtype)
            if decode is not None:
                data = decode(wire, rdata, offset)
                into.append(
                    ResourceRecord(owner.lower(), rdtype, ttl if ttl <= _TTL_MAX else 0, data)
                )
    return offset


def _read_additional(
    wire: bytes, offset: int, end: int, count: int
) -> tuple[int, int, ExtendedError | None]:
    """The additional section, of which only the OPT record (RFC 6891 §6.1) is read.

    Returns the offset past the section, the OPT TTL (for the extended RCODE; 0
    without OPT) and the extended error chosen among its options.
    """
    opt_ttl = 0
    extended_error: ExtendedError | None = None
    seen_opt = False
    for _ in range(count):
        owner, offset = _read_name(wire, offset, end)
        rdtype, _, ttl, rdata, offset = _record_header(wire, offset, end)
        if rdtype != _OPT:
            continue
        # RFC 6891 §6.1.1: one OPT record, owned by the root.
        if seen_opt:
            raise _Malformed("a second OPT record")
        if owner != _ROOT:
            raise _Malformed("OPT record not owned by the root")
        seen_opt = True
        opt_ttl = ttl
        extended_error = _read_options(wire, rdata, offset)
    return offset, opt_ttl, extended_error


def _read_options(wire: bytes, offset: int, end: int) -> ExtendedError | None:
    """The first EDE of the OPT RDATA that says DNSSEC failed, else the first EDE.

    RFC 6891 §6.1.2 options, RFC 8914 §2 EDE; other options are stepped over.
    """
    chosen: ExtendedError | None = None
    while offset < end:
        if offset + 4 > end:
            raise _Malformed("EDNS option runs past the OPT record")
        code, length = _OPTION.unpack_from(wire, offset)
        offset += 4
        stop = offset + length
        if stop > end:
            raise _Malformed("EDNS option runs past the OPT record")
        if code == _EDE_OPTION:
            error = _extended_error(wire, offset, stop)
            if chosen is None or (error.dnssec_failure and not chosen.dnssec_failure):
                chosen = error
        offset = stop
    return chosen


def _extended_error(wire: bytes, offset: int, end: int) -> ExtendedError:
    """RFC 8914 §2: INFO-CODE, then EXTRA-TEXT in UTF-8, cut at `MAX_EDE_TEXT`.

    A final NUL is dropped, as dnspython did. Octets that are not UTF-8 are kept as
    backslash escapes instead of refusing the reply (dnspython refused it): the code
    is what counts, the text is only shown (as untrusted text).
    """
    if end - offset < 2:
        raise _Malformed("EDE option shorter than its INFO-CODE")
    raw = wire[offset + 2 : end]
    if raw[-1:] == b"\x00":
        raw = raw[:-1]
    text = raw.decode("utf-8", errors="backslashreplace")[:MAX_EDE_TEXT]
    return ExtendedError((wire[offset] << 8) | wire[offset + 1], text)


# ------------------------------------------------- the shape of a reply (RFC 6891)


@dataclass(frozen=True, slots=True)
class ReplyShape:
    """How a UDP reply arrived, for `scanner doctor`'s check of the resolver's EDNS.

    `size` in octets; `truncated`: TC was set; `edns_payload`: the UDP payload size the
    replier advertised in its OPT record (RFC 6891 §6.2.3), None when the reply had no
    OPT record (the resolver, or something on the path, drops EDNS).
    """

    size: int
    truncated: bool
    edns_payload: int | None


def reply_shape(wire: bytes) -> ReplyShape | Refusal:
    """The `ReplyShape` of a whole reply; a `Refusal` when it cannot be read that far."""
    try:
        if len(wire) < HEADER_BYTES:
            raise _Malformed("shorter than a DNS header")
        _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
        end = len(wire)
        offset = HEADER_BYTES
        for _ in range(qdcount):
            offset = _read_name(wire, offset, end)[1] + _QUESTION_TAIL_BYTES
        payload: int | None = None
        for index in range(ancount + nscount + arcount):
            offset = _read_name(wire, offset, end)[1]
            rdtype, rdclass, _, _, offset = _record_header(wire, offset, end)
            if rdtype == _OPT and index >= ancount + nscount:
                payload = rdclass  # the OPT record's CLASS is the payload size
    except _Malformed as exc:
        return Refusal(f"unparseable reply ({exc})")
    return ReplyShape(len(wire), bool(flags & _TC), payload)


@dataclass(frozen=True, slots=True)
class TransportProbe:
    """One nameserver asked one question with a large answer, over UDP and over TCP.

    `udp`: the shape of the UDP reply (None: no reply came, `udp_detail` says why);
    `tcp_detail`: None when a reply came over TCP, else what went wrong; `tcp_size`:
    the size of that reply (the whole answer), None without one.
    """

    server: str
    udp: ReplyShape | None
    udp_detail: str = ""
    tcp_detail: str | None = None
    tcp_size: int | None = None


# ------------------------------------------------- names (RFC 1035 §§3.1, 4.1.4)


def _read_name(wire: bytes, offset: int, end: int) -> tuple[bytes, int]:
    """The name at `offset`, uncompressed, and the offset just past it where it stands.

    Its first labels must lie before `end` (the end of the message, or of the RDATA it
    is in). A compression pointer must point before the start of the labels it ends
    (strictly backwards: no loop), and the labels it points to must end before that
    start (no overlap), as dnspython checks; at most `MAX_POINTER_HOPS` pointers; at
    most `MAX_NAME_BYTES` octets in all; no label types 01 and 10 (RFC 6891 §5).
    """
    pieces: list[bytes] = []  # the labels before each pointer followed
    size = 0  # octets in `pieces`
    segment = position = offset  # the labels being read start at `segment`
    limit = end
    after = 0  # just past the first pointer: where the name ends in the message
    while True:
        if position >= limit:
            raise _Malformed("name runs past its end")
        length = wire[position]
        if length < _LABEL_LIMIT:
            if not length:
                break
            position += length + 1
            if size + position - segment >= MAX_NAME_BYTES:
                raise _Malformed(f"name over {MAX_NAME_BYTES} octets")
            continue
        if length < _POINTER:
            raise _Malformed(f"label type 0x{length:02x}")
        if position + 1 >= limit:
            raise _Malformed("name runs past its end")
        target = ((length & 0x3F) << 8) | wire[position + 1]
        if target >= segment:
            raise _Malformed("compression pointer not backwards")
        if len(pieces) == MAX_POINTER_HOPS:
            raise _Malformed("too many compression pointers")
        if not after:
            after = position + 2
        pieces.append(wire[segment:position])
        size += position - segment
        limit = segment
        segment = position = target
    position += 1
    if not pieces:
        return wire[segment:position], position
    pieces.append(wire[segment:position])
    return b"".join(pieces), after


def name_wire(text: str) -> bytes:
    """The wire form of a name given as text, like dnspython's `from_text(text).to_wire()`.

    The common case (ASCII, no escapes, every label 1 to 63 octets, the whole at most
    255) is made here; anything else goes to dnspython, which raises its
    `DNSException` for a name that cannot be one.
    """
    if text.isascii() and "\\" not in text and text not in ("", ".", "@"):
        labels = (text[:-1] if text.endswith(".") else text).encode("ascii").split(b".")
        if all(0 < len(label) < _LABEL_LIMIT for label in labels):
            wire = b"".join(bytes((len(label),)) + label for label in labels) + _ROOT
            if len(wire) <= MAX_NAME_BYTES:
                return wire
    absolute = dns.name.from_text(text).to_wire()
    assert absolute is not None  # from_text makes absolute names
    return absolute


# Octets dnspython writes as they are in a label's text; the others are escaped.
_SPECIAL: Final = b'"().;\\@$'
_PLAIN: Final = bytes(c for c in range(0x21, 0x7F) if c not in _SPECIAL)


@functools.lru_cache(maxsize=4096)
def name_text(name: bytes) -> str:
    """A name as the models hold it: A-labels, lower case, no trailing dot ("." for the root).

    The same text as dnspython's `name.to_text(omit_final_dot=True).lower()`, escapes
    included. Cached: a bulk run meets the same MX hosts over and over.
    """
    return _text(name).lower()


def _text(name: bytes) -> str:
    """dnspython's `to_text(omit_final_dot=True)` of a name in wire form, case kept."""
    if name == _ROOT:
        return "."
    labels: list[str] = []
    position = 0
    while length := name[position]:
        label = name[position + 1 : position + 1 + length]
        labels.append(_escaped(label) if label.translate(None, _PLAIN) else label.decode("ascii"))
        position += length + 1
    return ".".join(labels)


def _escaped(label: bytes) -> str:
    """dnspython's `_escapify`: a backslash before `"().;\\@$`, `\\DDD` for other octets.

    `\\DDD` (decimal) is for an octet outside 0x21–0x7E, so that no label's text
    holds a dot, a space, a control character or anything not ASCII.
    """
    return "".join(
        "\\" + chr(octet)
        if octet in _SPECIAL
        else chr(octet)
        if 0x20 < octet < 0x7F
        else f"\\{octet:03d}"
        for octet in label
    )


# ------------------------------------------------- RDATA (RFC 1035 §3.3, RFC 3596, RFC 6698)


def _a(wire: bytes, start: int, end: int) -> str:
    """RFC 1035 §3.4.1: four octets, as dotted decimal."""
    if end - start != 4:
        raise _Malformed(f"A RDATA of {end - start} octets")
    return f"{wire[start]}.{wire[start + 1]}.{wire[start + 2]}.{wire[start + 3]}"


def _aaaa(wire: bytes, start: int, end: int) -> str:
    """RFC 3596 §2.2: sixteen octets, as `_ipv6_text` writes them."""
    if end - start != 16:
        raise _Malformed(f"AAAA RDATA of {end - start} octets")
    return _ipv6_text(wire[start:end])


def _ipv6_text(packed: bytes) -> str:
    """The text dnspython gives an AAAA address (`dns.ipv6.inet_ntoa`), as the models did.

    RFC 5952 §4: lower-case hex without leading zeros, the first longest run of two or
    more zero groups as "::"; but, unlike `ipaddress`, an address with 96 zero bits or
    the IPv4-mapped prefix ends in dotted decimal (`::192.0.2.1`, `::ffff:192.0.2.1`).
    """
    groups = _IPV6_GROUPS.unpack(packed)
    best_start = best_length = 0
    run_start = -1
    for index, group in enumerate((*groups, 1)):  # the 1 ends a final run of zeros
        if not group:
            if run_start < 0:
                run_start = index
        elif run_start >= 0:
            if index - run_start > best_length:
                best_start, best_length = run_start, index - run_start
            run_start = -1
    if best_length < 2:
        return ":".join(f"{group:x}" for group in groups)
    if best_start == 0 and (best_length == 6 or (best_length == 5 and groups[5] == 0xFFFF)):
        prefix = "::" if best_length == 6 else "::ffff:"
        return f"{prefix}{packed[12]}.{packed[13]}.{packed[14]}.{packed[15]}"
    head = ":".join(f"{group:x}" for group in groups[:best_start])
    tail = ":".join(f"{group:x}" for group in groups[best_start + best_length :])
    return f"{head}::{tail}"


def _mx(wire: bytes, start: int, end: int) -> MxRecord:
    """RFC 1035 §3.3.9: PREFERENCE, then EXCHANGE (maybe compressed), ending the RDATA."""
    if end - start < 3:
        raise _Malformed(f"MX RDATA of {end - start} octets")
    exchange, after = _read_name(wire, start + 2, end)
    if after != end:
        raise _Malformed("MX RDATA longer than its exchange")
    return MxRecord((wire[start] << 8) | wire[start + 1], name_text(exchange))


def _txt(wire: bytes, start: int, end: int) -> TxtData:
    """RFC 1035 §3.3.14: one or more <character-string>s that fill the RDATA."""
    if start == end:
        raise _Malformed("TXT RDATA empty")
    strings: list[bytes] = []
    while start < end:
        stop = start + 1 + wire[start]
        if stop > end:
            raise _Malformed("TXT string runs past its RDATA")
        strings.append(wire[start + 1 : stop])
        start = stop
    return TxtData(tuple(strings))


def _cname(wire: bytes, start: int, end: int) -> CnameData:
    """RFC 1035 §3.3.1: one name (maybe compressed), the whole RDATA."""
    target, after = _read_name(wire, start, end)
    if after != end:
        raise _Malformed("CNAME RDATA longer than its name")
    return CnameData(target)


def _ptr(wire: bytes, start: int, end: int) -> PtrData:
    """RFC 1035 §3.3.12: one name (maybe compressed), the whole RDATA."""
    name, after = _read_name(wire, start, end)
    if after != end:
        raise _Malformed("PTR RDATA longer than its name")
    return PtrData(name_text(name))


def _tlsa(wire: bytes, start: int, end: int) -> TlsaRecord:
    """RFC 6698 §2.1: usage, selector, matching type, then the association data.

    Data of another length than its matching type's digest is kept, not refused:
    `scanner.core.dane` finds such a record unusable, as it does other odd ones.
    """
    if end - start < 3:
        raise _Malformed(f"TLSA RDATA of {end - start} octets")
    return TlsaRecord(wire[start], wire[start + 1], wire[start + 2], wire[start + 3 : end])


def _soa(wire: bytes, start: int, end: int) -> SoaData:
    """RFC 1035 §3.3.13: MNAME, RNAME (maybe compressed), five 32-bit fields, MINIMUM last."""
    _, offset = _read_name(wire, start, end)
    _, offset = _read_name(wire, offset, end)
    if end - offset != 20:
        raise _Malformed("SOA RDATA not two names and 20 octets")
    return SoaData(int.from_bytes(wire[end - 4 : end], "big"))


_DECODERS: Final[dict[int, Callable[[bytes, int, int], RecordData]]] = {
    int(dns.rdatatype.A): _a,
    int(dns.rdatatype.AAAA): _aaaa,
    int(dns.rdatatype.MX): _mx,
    int(dns.rdatatype.TXT): _txt,
    _CNAME: _cname,
    int(dns.rdatatype.TLSA): _tlsa,
    _SOA: _soa,
    int(dns.rdatatype.PTR): _ptr,
}


class _NeedData(Enum):
    NEED_DATA = "need-data"


NEED_DATA: Final = _NeedData.NEED_DATA


class TcpFramer:
    """DNS over TCP framing (RFC 1035 §4.2.2): a two-octet length, then the message.

    Feed bytes as they come with `receive_data`; `next_message()` returns a whole
    message, `NEED_DATA`, or a `Refusal` when the announced length is over
    `MAX_RESPONSE_BYTES` (decided from the prefix alone, nothing more is buffered).
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_message(self) -> bytes | _NeedData | Refusal:
        if len(self._buffer) < 2:
            return NEED_DATA
        length = int.from_bytes(self._buffer[:2], "big")
        if length > MAX_RESPONSE_BYTES:
            return Refusal(f"reply over the {MAX_RESPONSE_BYTES}-octet limit")
        if len(self._buffer) < 2 + length:
            return NEED_DATA
        message = bytes(self._buffer[2 : 2 + length])
        del self._buffer[: 2 + length]
        return message

    def wanted(self) -> int:
        """How many more octets the next message needs (at least 1)."""
        if len(self._buffer) < 2:
            return 2 - len(self._buffer)
        length = int.from_bytes(self._buffer[:2], "big")
        return max(2 + length - len(self._buffer), 1)


# ---------------------------------------------------------------- outcomes

# The response code decides the status of a reply that is not an answer (RFC 1035
# §4.1.1, RFC 6895 §2.3); NOERROR is an answer or NODATA (RFC 2308 §2.2).
RCODE_STATUS: Final[dict[int, tuple[DnsStatus, str]]] = {
    dns.rcode.NXDOMAIN: (DnsStatus.NXDOMAIN, "name does not exist"),
    dns.rcode.SERVFAIL: (DnsStatus.SERVFAIL, "no nameserver gave an answer (SERVFAIL)"),
    dns.rcode.REFUSED: (DnsStatus.REFUSED, "every nameserver refused the query"),
    dns.rcode.FORMERR: (DnsStatus.ERROR, "the nameserver could not read the query (FORMERR)"),
    dns.rcode.NOTIMP: (DnsStatus.ERROR, "the nameserver does not implement the query (NOTIMP)"),
    dns.rcode.YXDOMAIN: (DnsStatus.ERROR, "name too long after DNAME substitution (YXDOMAIN)"),
}


def status_of_rcode(rcode: int) -> tuple[DnsStatus, str]:
    """The status and words for a reply that carries no answer, from its RCODE."""
    if rcode == dns.rcode.NOERROR:
        return DnsStatus.NODATA, "no records of this type"
    found = RCODE_STATUS.get(rcode)
    if found is not None:
        return found
    return (
        DnsStatus.ERROR,
        f"unexpected response code {dns.rcode.to_text(dns.rcode.Rcode.make(rcode))}",
    )


# The response codes that end an exchange with this server: anything else (SERVFAIL,
# REFUSED, FORMERR, NOTIMP, ...) makes the resolver ask the next one (RFC 1035 §7.3).
FINAL_RCODES: Final = frozenset({dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reply says about one question, after the CNAME links inside it.

    `name` is where the chain stands (wire form, as the reply or the query spelled
    it): the owner of `records`, or the name found not to exist or to have no data.
    `links` are the CNAME targets passed, in order. `follow` means the reply ended at a
    CNAME without saying what its target holds: ask again at `name`. `ttl` is how long
    the outcome may be cached (0: not at all).
    """

    status: DnsStatus
    records: tuple[RecordData, ...]
    links: tuple[bytes, ...]
    name: bytes
    follow: bool
    ttl: int
    authenticated: bool
    extended_error: ExtendedError | None
    detail: str = ""


def interpret(query: Query, response: Response) -> Outcome:
    """RFC 1034 §3.6.2 and §4.3.2: follow CNAMEs from the QNAME through the answer section.

    The RCODE of a chain applies to its last name (RFC 6604 §2). A NOERROR reply whose
    chain ends at a CNAME target with neither data nor an SOA (an authoritative server
    that did not chase the chain) is to be followed with a further query. A negative
    answer may be cached for min(SOA TTL, SOA MINIMUM) (RFC 2308 §5), never without an
    SOA; a positive one for the smallest TTL of the RRsets used.
    """
    answer = response.answer
    rdtype = int(query.rdtype)
    name = query.name
    key = query.question_name  # `name` lower-cased, as the owners are
    keys = [key]
    links: list[bytes] = []
    ttl = MAX_POSITIVE_TTL
    while True:
        found = _rrset(answer, key, rdtype)
        if found is not None:
            records, rrset_ttl = found
            return Outcome(
                status=DnsStatus.ANSWER,
                records=records,
                links=tuple(links),
                name=name,
                follow=False,
                ttl=_clamp_ttl(min(ttl, rrset_ttl), MAX_POSITIVE_TTL),
                authenticated=response.authenticated,
                extended_error=response.extended_error,
            )
        cname = _rrset(answer, key, _CNAME)
        if cname is None or rdtype == _CNAME:
            break
        (link,), cname_ttl = cname
        assert isinstance(link, CnameData)
        target = link.target
        key = target.lower()
        if len(links) >= MAX_CNAME_LINKS or key in keys:
            return _failure(response, DnsStatus.ERROR, "CNAME chain too long or looping")
        links.append(target)
        keys.append(key)
        ttl = min(ttl, cname_ttl)
        name = target
    return _negative(response, name, tuple(links), ttl)


def _negative(response: Response, name: bytes, links: tuple[bytes, ...], ttl: int) -> Outcome:
    """The outcome of a reply without the records asked for, its chain ending at `name`."""
    status, detail = status_of_rcode(response.rcode)
    soa = _soa_of(response.authority)
    negative_ttl = 0
    if soa is not None and status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA):
        minimum, soa_ttl = soa
        negative_ttl = _clamp_ttl(min(ttl, soa_ttl, minimum), MAX_NEGATIVE_TTL)
    follow = status is DnsStatus.NODATA and bool(links) and soa is None
    if links and status is DnsStatus.NXDOMAIN:
        detail = f"{detail} (CNAME target {_text(name)})"
    return Outcome(
        status=status,
        records=(),
        links=links,
        name=name,
        follow=follow,
        ttl=negative_ttl,
        authenticated=response.authenticated,
        extended_error=response.extended_error,
        detail=detail,
    )


def _failure(response: Response, status: DnsStatus, detail: str) -> Outcome:
    return Outcome(
        status=status,
        records=(),
        links=(),
        name=_ROOT,
        follow=False,
        ttl=0,
        authenticated=False,
        extended_error=response.extended_error,
        detail=detail,
    )


# RFC 2181 §10.1: an RRset of these types holds one record; dnspython keeps the last.
_SINGLETONS: Final = frozenset({_CNAME, _SOA})


def _rrset(
    section: tuple[ResourceRecord, ...], owner: bytes, rdtype: int
) -> tuple[tuple[RecordData, ...], int] | None:
    """The RRset of `owner` (lower-cased) and `rdtype` in `section`, and its TTL.

    As dnspython merges a section's records into RRsets (RFC 2181 §5): the records in
    wire order without repeats (only the last for CNAME and SOA), the smallest TTL of
    them all (RFC 2181 §5.2). None when there is no such record.
    """
    records: list[RecordData] = []
    ttl = -1
    for record in section:
        if record.rdtype == rdtype and record.owner == owner:
            if ttl < 0 or record.ttl < ttl:
                ttl = record.ttl
            if rdtype in _SINGLETONS:
                records = [record.data]
            elif record.data not in records:
                records.append(record.data)
    return (tuple(records), ttl) if records else None


def _soa_of(section: tuple[ResourceRecord, ...]) -> tuple[int, int] | None:
    """MINIMUM and TTL of the first SOA RRset of the authority section (RFC 2308 §3)."""
    for record in section:
        if record.rdtype == _SOA:
            found = _rrset(section, record.owner, _SOA)
            assert found is not None
            (soa,), ttl = found
            assert isinstance(soa, SoaData)
            return soa.minimum, ttl
    return None


def _clamp_ttl(ttl: int, ceiling: int) -> int:
    # RFC 2181 §8: a TTL with the top bit set is taken as zero.
    if ttl < 0 or ttl > _TTL_MAX:
        return 0
    return min(ttl, ceiling)


# ---------------------------------------------------------------- records
# What the resolver makes of `Outcome.records` for the type it asked.


def txt_text(record: RecordData) -> str:
    """RFC 8461 §3.1 / RFC 8460 §3: a TXT record's character-strings joined with no separator."""
    assert isinstance(record, TxtData)
    return b"".join(record.strings).decode("utf-8", errors="backslashreplace")


def mx_record(record: RecordData) -> MxRecord:
    """Preference and exchange, the exchange lower-cased without the trailing dot ("." stays)."""
    assert isinstance(record, MxRecord)
    return record


def address_text(record: RecordData) -> str:
    """An A or AAAA address as text (see `_ipv6_text`)."""
    assert isinstance(record, str)
    return record


def tlsa_record(record: RecordData) -> TlsaRecord:
    """RFC 6698 §2.1: certificate usage, selector, matching type, association data."""
    assert isinstance(record, TlsaRecord)
    return record
