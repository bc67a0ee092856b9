"""The lab's authoritative DNS server, over UDP and TCP on one port.

Theory of operation: `Zone` answers (name, type) from the world's records
(RFC 1034 §4.3.2, simplified for a server authoritative for everything):
- a name with data of the type: the records;
- a name holding a CNAME: the CNAME, then the answer for its target, followed
  for up to MAX_CNAME_CHAIN links (RFC 1034 §3.6.2); the rcode is that of the
  last name of the chain;
- a known name without the type, or an empty non-terminal: NODATA (NOERROR,
  empty answer, SOA in authority, RFC 2308 §2.2);
- an unknown name: NXDOMAIN with the SOA (RFC 2308 §2.1);
- a name marked `servfail`: SERVFAIL; a name marked `timeout`: no reply at all.

`Responder` turns query bytes into reply bytes; its `DnsConduct` can make it refuse
TCP, ignore EDNS or truncate above a small buffer, as a poor resolver does. Over UDP a reply larger than
512 bytes, or than the client's EDNS payload size (RFC 6891 §6.2.5), is
replaced by an empty reply with TC set (RFC 1035 §4.2.1), so the client retries
over TCP, where messages carry a two-byte length prefix (RFC 1035 §4.2.2).
Resource records are built on first use, so large worlds load quickly.

A world with `[zones]` is answered by a `scanner.lab.dnssec.ZoneTree` instead: zones
with cuts, DNSSEC signatures and NSEC proofs, RRSIGs and NSEC records given to
queries that set the DO bit (RFC 3225), whose reply then carries DO too.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import trio

from scanner.lab.connections import IDLE_TIMEOUT
from scanner.lab.dnssec import ZoneTree
from scanner.lab.world import NameRecords, World

TTL = 300
MAX_CNAME_CHAIN = 8
UDP_DEFAULT_PAYLOAD = 512
TCP_MAX_MESSAGE = 65535
SOA_TEXT = "ns.lab.invalid. hostmaster.lab.invalid. 1 3600 600 86400 300"


@dataclass(slots=True)
class Resolution:
    """The content of one reply; `drop` means "never answer"."""

    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    drop: bool = False


class Zone:
    """Every name the world defines, answered authoritatively."""

    def __init__(self, world: World, *, tree: ZoneTree | None = None) -> None:
        self.tree = tree  # the signed DNS tree of a world with zones, built by the runner
        self._records: dict[str, NameRecords] = dict(world.records)
        self._rrsets: dict[tuple[str, dns.rdatatype.RdataType], dns.rrset.RRset | None] = {}
        self._existing: set[str] = set()
        for name in self._records:
            labels = name.split(".")
            for start in range(len(labels)):
                self._existing.add(".".join(labels[start:]))
        self._apexes = {d.name for d in world.domains if d.name in self._existing}
        self._existing.add(".")  # the root always exists: NODATA, never NXDOMAIN
        self._soas: dict[str, dns.rrset.RRset] = {}  # by apex; built once each

    def resolve(
        self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, *, dnssec_ok: bool = False
    ) -> Resolution:
        if self.tree is not None:
            tree_answer = self.tree.resolve(qname, qtype, dnssec_ok=dnssec_ok)
            return Resolution(
                tree_answer.rcode, tree_answer.answer, tree_answer.authority, tree_answer.drop
            )
        result = Resolution()
        name = _key(qname)
        for _ in range(MAX_CNAME_CHAIN + 1):
            node = self._records.get(name)
            if node is not None and node.timeout:
                return Resolution(drop=True)
            if node is not None and node.servfail:
                return Resolution(rcode=dns.rcode.SERVFAIL)
            if node is None:
                if name not in self._existing:
                    result.rcode = dns.rcode.NXDOMAIN
                result.authority.append(self._soa(name))
                return result
            if node.cname is not None and qtype != dns.rdatatype.CNAME:
                cname = self._rrset(node, dns.rdatatype.CNAME)
                assert cname is not None
                result.answer.append(cname)
                name = node.cname
                continue
            types = _ALL_TYPES if qtype == dns.rdatatype.ANY else (qtype,)
            found = [rrset for t in types if (rrset := self._rrset(node, t)) is not None]
            if not found:
                result.authority.append(self._soa(name))
            result.answer.extend(found)
            return result
        return Resolution(rcode=dns.rcode.SERVFAIL)  # CNAME chain too long (or a loop)

    def _rrset(self, node: NameRecords, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset | None:
        key = (node.name, rdtype)
        if key not in self._rrsets:
            self._rrsets[key] = _build_rrset(node, rdtype)
        return self._rrsets[key]

    def _soa(self, name: str) -> dns.rrset.RRset:
        """The SOA of the zone `name` is in, for the authority section of a negative answer.

        Every NXDOMAIN and NODATA carries one (half the lab's DNS replies in a bulk
        scan), so each is built once; answers share it, as they share the other rrsets.
        """
        apex = _apex(name, self._apexes)
        soa = self._soas.get(apex)
        if soa is None:
            if len(self._soas) >= MAX_SOAS:  # names outside the world come from anywhere
                self._soas.clear()
            owner = "." if apex == "." else f"{apex}."
            soa = self._soas[apex] = dns.rrset.from_text(owner, TTL, "IN", "SOA", SOA_TEXT)
        return soa


# Distinct SOA owners kept: the world's domains, and names asked for outside it.
MAX_SOAS = 4096


def _apex(name: str, apexes: set[str]) -> str:
    """The world domain `name` is in, else its last two labels; the root for the root.

    (A resolver's probe for DNSSEC validation asks for the root's SOA.)
    """
    if name == ".":
        return "."
    labels = name.split(".")
    for start in range(len(labels)):
        candidate = ".".join(labels[start:])
        if candidate in apexes:
            return candidate
    return ".".join(labels[-2:])


_ALL_TYPES = (
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.MX,
    dns.rdatatype.TXT,
    dns.rdatatype.CNAME,
    dns.rdatatype.PTR,
)


def _key(qname: dns.name.Name) -> str:
    return qname.to_text(omit_final_dot=True).lower()


def _build_rrset(node: NameRecords, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset | None:
    owner = f"{node.name}."
    if rdtype == dns.rdatatype.A and node.a:
        return dns.rrset.from_text_list(owner, TTL, "IN", "A", list(node.a))
    if rdtype == dns.rdatatype.AAAA and node.aaaa:
        return dns.rrset.from_text_list(owner, TTL, "IN", "AAAA", list(node.aaaa))
    if rdtype == dns.rdatatype.MX and node.mx:
        texts = [f"{mx.preference} {mx.host.rstrip('.')}." for mx in node.mx]
        return dns.rrset.from_text_list(owner, TTL, "IN", "MX", texts)
    if rdtype == dns.rdatatype.CNAME and node.cname is not None:
        return dns.rrset.from_text(owner, TTL, "IN", "CNAME", f"{node.cname}.")
    if rdtype == dns.rdatatype.PTR and node.ptr:
        return dns.rrset.from_text_list(owner, TTL, "IN", "PTR", [f"{n}." for n in node.ptr])
    if rdtype == dns.rdatatype.TXT and node.txt:
        rdatas = [
            dns.rdtypes.ANY.TXT.TXT(
                dns.rdataclass.IN, dns.rdatatype.TXT, [s.encode("utf-8") for s in strings]
            )
            for strings in node.txt
        ]
        return dns.rrset.from_rdata_list(owner, TTL, rdatas)
    return None


DNS_HEADER = 12  # RFC 1035 §4.1.1; the ID is its first two octets
MAX_KEPT_REPLIES = 100_000


@dataclass(frozen=True, slots=True)
class DnsConduct:
    """How the lab's DNS server departs from a good resolver (`scanner doctor`'s tests).

    `tcp`: False refuses every TCP connection (nothing listens on the port);
    `edns`: False answers as a server that ignores EDNS (no OPT record in its replies,
    512 bytes at most over UDP, RFC 6891 §7); `udp_payload`: the largest UDP reply it
    sends whatever the client offers, truncating above it (a resolver configured with
    a small buffer).
    """

    tcp: bool = True
    edns: bool = True
    udp_payload: int = TCP_MAX_MESSAGE


class Responder:
    """Query bytes in, reply bytes out (None: no reply)."""

    def __init__(self, zone: Zone, conduct: DnsConduct = DnsConduct()) -> None:
        self.zone = zone
        self.conduct = conduct
        self.queries = {"udp": 0, "tcp": 0}
        # Replies by (transport, query without its ID), without their own ID: the zone
        # never changes, so a question asked again gets the same bytes under its own ID.
        self._replies: dict[tuple[str, bytes], bytes] = {}

    def reply(self, wire: bytes, *, transport: str) -> bytes | None:
        self.queries[transport] = self.queries.get(transport, 0) + 1
        if len(wire) < DNS_HEADER:
            return self._reply(wire, transport)
        key = (transport, wire[2:])
        kept = self._replies.get(key)
        if kept is not None:
            return wire[:2] + kept
        reply = self._reply(wire, transport)
        if reply is not None:
            if len(self._replies) >= MAX_KEPT_REPLIES:
                self._replies.clear()
            self._replies[key] = reply[2:]
        return reply

    def _advertise(self, response: dns.message.Message, *, edns: bool) -> None:
        """The OPT record of a reply: none without EDNS, else the conduct's UDP payload."""
        if not edns:
            response.use_edns(False)
        elif self.conduct.udp_payload < TCP_MAX_MESSAGE:
            response.use_edns(0, 0, max(UDP_DEFAULT_PAYLOAD, self.conduct.udp_payload))

    def _reply(self, wire: bytes, transport: str) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _format_error(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response.to_wire()
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        edns = query.edns >= 0 and self.conduct.edns
        self._advertise(response, edns=edns)
        dnssec_ok = edns and bool(query.ednsflags & dns.flags.DO)
        resolution = self.zone.resolve(question.name, question.rdtype, dnssec_ok=dnssec_ok)
        if resolution.drop:
            return None
        if dnssec_ok:
            response.want_dnssec(True)
        response.set_rcode(resolution.rcode)
        response.answer = resolution.answer
        response.authority = resolution.authority
        limit = TCP_MAX_MESSAGE
        if transport == "udp":
            limit = max(UDP_DEFAULT_PAYLOAD, query.payload) if edns else UDP_DEFAULT_PAYLOAD
            limit = min(limit, max(UDP_DEFAULT_PAYLOAD, self.conduct.udp_payload))
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            self._advertise(truncated, edns=edns)
            return truncated.to_wire()


def _format_error(wire: bytes) -> bytes | None:
    """RFC 1035 §4.1.1: FORMERR echoing the ID, when at least a header arrived."""
    if len(wire) < 12:
        return None
    (query_id, flags) = struct.unpack("!HH", wire[:4])
    reply_flags = 0x8000 | (flags & 0x0100) | int(dns.rcode.FORMERR)
    return struct.pack("!HHHHHH", query_id, reply_flags, 0, 0, 0, 0)


async def serve_udp(
    sock: trio.socket.SocketType, responder: Responder, latency: float = 0.0
) -> None:
    """Answer datagrams on `sock` until cancelled, each `latency` seconds late; closes it on exit."""
    with sock:
        async with trio.open_nursery() as late_replies:
            while True:
                try:
                    data, address = await sock.recvfrom(TCP_MAX_MESSAGE)
                except OSError:
                    continue  # a stray ICMP error reported on the socket; keep serving
                reply = responder.reply(data, transport="udp")
                if reply is not None and latency > 0:
                    late_replies.start_soon(_send_datagram, sock, reply, address, latency)
                elif reply is not None:
                    await _send_datagram(sock, reply, address)


async def _send_datagram(
    sock: trio.socket.SocketType,
    reply: bytes,
    address: tuple[str, int] | tuple[str, int, int, int],
    latency: float = 0.0,
) -> None:
    if latency > 0:
        await trio.sleep(latency)  # replies in flight side by side, as on a slow link
    # A vanished client is not our concern: UDP gives no other signal.
    with contextlib.suppress(OSError):
        await sock.sendto(reply, address)


@dataclass(frozen=True, slots=True)
class TcpHandler:
    """Serves length-prefixed DNS messages on one TCP connection."""

    responder: Responder
    latency: float = 0.0  # seconds before each reply (one query at a time: clients do not pipeline)

    async def __call__(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        try:
            while True:
                message = await _read_message(stream, buffer)
                if message is None:
                    return
                reply = self.responder.reply(message, transport="tcp")
                if reply is not None:
                    if self.latency > 0:
                        await trio.sleep(self.latency)
                    await stream.send_all(struct.pack("!H", len(reply)) + reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def _read_message(stream: trio.SocketStream, buffer: bytearray) -> bytes | None:
    while True:
        if len(buffer) >= 2:
            (length,) = struct.unpack("!H", buffer[:2])
            if len(buffer) >= 2 + length:
                message = bytes(buffer[2 : 2 + length])
                del buffer[: 2 + length]
                return message
        data = b""
        with trio.move_on_after(IDLE_TIMEOUT):
            data = await stream.receive_some(TCP_MAX_MESSAGE)
        if not data:
            return None
        buffer += data
