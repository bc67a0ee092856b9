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
* `TcpFramer` cuts the two-octet length-prefixed messages of DNS over TCP
  (RFC 1035 §4.2.2) however the bytes are split, refusing a length over the limit
  before reading it.
* `interpret(query, response)` follows the CNAME chain inside one answer and turns
  the response into an `Outcome`: a status, the records at the end of the chain,
  whether the chain must be followed by a further query, how long the outcome may
  be cached (RFC 2308 §5 for negative answers) and what the resolver said about
  DNSSEC (AD, and an RFC 8914 extended error).

Limits, all checked before dnspython parses anything: a reply is at most
`MAX_RESPONSE_BYTES` octets and holds at most `MAX_RECORDS` records (answer,
authority and additional, from the header counts); an EDE text is cut at
`MAX_EDE_TEXT` characters; a chain has at most `MAX_CNAME_LINKS` links.
"""

from __future__ import annotations

import functools
import secrets
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TLSA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

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

    `wire` carries ID 0; `question_name` is the QNAME as sent, lower-cased, and
    `question_tail` the QTYPE and QCLASS, for matching replies (RFC 5452 §9.1).
    """

    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    checking_disabled: bool
    wire: bytes
    question_name: bytes
    question_tail: bytes

    def with_id(self, query_id: int) -> bytes:
        return query_id.to_bytes(2, "big") + self.wire[2:]


def build_query(
    name: dns.name.Name, rdtype: dns.rdatatype.RdataType, *, checking_disabled: bool = False
) -> Query:
    """A recursive query with AD and DO set (RFC 6840 §5.7, RFC 3225), CD on request.

    The bytes are those of `dns.message.make_query(name, rdtype, use_edns=0,
    want_dnssec=True, payload=EDNS_PAYLOAD, id=0, flags=...).to_wire()`: dnspython
    builds them once per (type, CD) around the root name, and only the QNAME (the one
    name of a query, never compressed) is put in for each question, which costs a
    fiftieth of building the message (tests/test_dns_wire.py holds the equality).
    Raises `dns.exception.DNSException` for a relative name.
    """
    header, tail = _query_template(rdtype, checking_disabled)
    qname = name.to_wire()
    assert qname is not None
    wire = header + qname + tail
    return Query(
        name=name,
        rdtype=rdtype,
        checking_disabled=checking_disabled,
        wire=wire,
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


def random_query_id() -> int:
    """RFC 5452 §9.2: IDs from a cryptographically strong source."""
    return secrets.randbits(16)


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
class Response:
    """A matched, parsed reply within the limits."""

    message: dns.message.Message
    rcode: int
    authenticated: bool  # AD (RFC 4035 §3.2.3)
    extended_error: ExtendedError | None


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
        return _check_and_parse(wire, flags, ancount + nscount + arcount, stream=stream)

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


def _check_and_parse(wire: bytes, flags: int, records: int, *, stream: bool) -> Reply:
    if len(wire) > MAX_RESPONSE_BYTES:
        return Refusal(f"reply over the {MAX_RESPONSE_BYTES}-octet limit")
    if flags & _TC:
        if stream:
            return Refusal("truncated reply over TCP")
        return TRUNCATED
    if records > MAX_RECORDS:
        return Refusal(f"reply with {records} records, over the limit of {MAX_RECORDS}")
    return parse_response(wire)


# What dnspython's wire parser may raise on hostile bytes: a table, so that an
# unexpected exception stays a bug instead of becoming a status.
_PARSE_ERRORS: Final = (dns.exception.DNSException, ValueError, IndexError, struct.error)


def parse_response(wire: bytes) -> Response | Refusal:
    """dnspython's parser, its exceptions mapped to a `Refusal` that keeps the reason."""
    try:
        message = dns.message.from_wire(wire)
    except _PARSE_ERRORS as exc:
        return Refusal(f"unparseable reply ({type(exc).__name__}: {exc})"[:300])
    return Response(
        message=message,
        rcode=message.rcode(),
        authenticated=bool(message.flags & dns.flags.AD),
        extended_error=_extended_error(message.options),
    )


def _extended_error(options: Iterable[dns.edns.Option]) -> ExtendedError | None:
    """The first DNSSEC failure among the EDE options, else the first EDE (RFC 8914 §2)."""
    found: list[ExtendedError] = []
    for option in options:
        if isinstance(option, dns.edns.EDEOption):
            text = (option.text or "")[:MAX_EDE_TEXT]
            found.append(ExtendedError(int(option.code), text))
    for error in found:
        if error.dnssec_failure:
            return error
    return found[0] if found else None


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

    `name` is where the chain stands: the owner of `records`, or the name found not to
    exist or to have no data. `follow` means the reply ended at a CNAME without saying
    what its target holds: ask again at `name`. `ttl` is how long the outcome may be
    cached (0: not at all).
    """

    status: DnsStatus
    records: tuple[dns.rdata.Rdata, ...]
    links: tuple[dns.name.Name, ...]
    name: dns.name.Name
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
    message = response.message
    name = query.name
    links: list[dns.name.Name] = []
    ttl = MAX_POSITIVE_TTL
    while True:
        rrset = _find(message.answer, name, query.rdtype)
        if rrset is not None:
            return Outcome(
                status=DnsStatus.ANSWER,
                records=tuple(rrset),
                links=tuple(links),
                name=name,
                follow=False,
                ttl=_clamp_ttl(min(ttl, rrset.ttl), MAX_POSITIVE_TTL),
                authenticated=response.authenticated,
                extended_error=response.extended_error,
            )
        cname = _find(message.answer, name, dns.rdatatype.CNAME)
        if cname is None or query.rdtype == dns.rdatatype.CNAME:
            break
        link = cname[0]
        assert isinstance(link, dns.rdtypes.ANY.CNAME.CNAME)
        target = link.target
        if len(links) >= MAX_CNAME_LINKS or target in links or target == query.name:
            return _failure(response, DnsStatus.ERROR, "CNAME chain too long or looping")
        links.append(target)
        ttl = min(ttl, cname.ttl)
        name = target
    status, detail = status_of_rcode(response.rcode)
    soa = _find_type(message.authority, dns.rdatatype.SOA)
    negative_ttl = 0
    if soa is not None and status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA):
        start = soa[0]
        assert isinstance(start, dns.rdtypes.ANY.SOA.SOA)
        negative_ttl = _clamp_ttl(min(ttl, soa.ttl, start.minimum), MAX_NEGATIVE_TTL)
    follow = status is DnsStatus.NODATA and bool(links) and soa is None
    if links and status is DnsStatus.NXDOMAIN:
        detail = f"{detail} (CNAME target {name.to_text(omit_final_dot=True)})"
    return Outcome(
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


def _failure(response: Response, status: DnsStatus, detail: str) -> Outcome:
    return Outcome(
        status=status,
        records=(),
        links=(),
        name=dns.name.root,
        follow=False,
        ttl=0,
        authenticated=False,
        extended_error=response.extended_error,
        detail=detail,
    )


def _find(
    section: list[dns.rrset.RRset], name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    for rrset in section:
        if rrset.rdtype == rdtype and rrset.rdclass == dns.rdataclass.IN and rrset.name == name:
            return rrset if len(rrset) else None
    return None


def _find_type(
    section: list[dns.rrset.RRset], rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    for rrset in section:
        if rrset.rdtype == rdtype and rrset.rdclass == dns.rdataclass.IN and len(rrset):
            return rrset
    return None


def _clamp_ttl(ttl: int, ceiling: int) -> int:
    # RFC 2181 §8: a TTL with the top bit set is taken as zero.
    if ttl < 0 or ttl > 0x7FFFFFFF:
        return 0
    return min(ttl, ceiling)


# ---------------------------------------------------------------- records


def txt_text(rdata: dns.rdata.Rdata) -> str:
    """RFC 8461 §3.1 / RFC 8460 §3: a TXT record's character-strings joined with no separator."""
    assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
    return b"".join(rdata.strings).decode("utf-8", errors="backslashreplace")


def mx_record(rdata: dns.rdata.Rdata) -> MxRecord:
    """Preference and exchange, the exchange lower-cased without the trailing dot ("." stays)."""
    assert isinstance(rdata, dns.rdtypes.ANY.MX.MX)
    return MxRecord(rdata.preference, rdata.exchange.to_text(omit_final_dot=True).lower())


def address_text(rdata: dns.rdata.Rdata) -> str:
    assert isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA)
    return str(rdata.address)


def tlsa_record(rdata: dns.rdata.Rdata) -> TlsaRecord:
    """RFC 6698 §2.1: certificate usage, selector, matching type, association data."""
    assert isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA)
    return TlsaRecord(rdata.usage, rdata.selector, rdata.mtype, bytes(rdata.cert))


def name_text(name: dns.name.Name) -> str:
    """A name as the models hold it: A-labels, lower case, no trailing dot."""
    return name.to_text(omit_final_dot=True).lower()
