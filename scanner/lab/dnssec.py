"""The lab's DNS tree: zones with proper cuts, signed with DNSSEC, answered with proofs.

Theory of operation. A world with `[zones]` is served as a tree rather than as one
flat namespace. `ZoneTree.build` makes a `dns.zone.Zone` for the root (always
signed: its key is the trust anchor a validating resolver is given) and for every
declared zone, puts each world name into the deepest zone holding it, delegates every
zone from its closest declared ancestor (NS at the cut, and DS when the child is
signed, so an unsigned child is a provably insecure delegation), adds the TLSA
records of servers at `_<smtp port>._tcp.<host name>`, and signs children before
parents with `dns.dnssec.sign_zone` (ECDSA P-256 SHA-256, algorithm 13; a KSK
signing the DNSKEY RRset, a ZSK signing the rest; NSEC chains).

`ZoneTree.resolve` answers one question the way an authoritative server of the
right zone would, without referrals (the lab server answers every zone itself):

* the zone is the deepest one holding the name, except that DS at a zone's apex is
  the parent's answer (RFC 4035 §3.1.4.1);
* data: the RRset and, when the query asked for DNSSEC (DO), its RRSIGs;
* a CNAME: the CNAME (signed), then the answer for its target, up to 8 links;
* NODATA: SOA, and in a signed zone the NSEC of the name (or, for an empty
  non-terminal, the NSEC that covers it) with RRSIGs (RFC 4035 §3.1.3.1);
* NXDOMAIN: SOA, the NSEC covering the name and the NSEC covering the wildcard at
  the closest encloser (RFC 4035 §3.1.3.2);
* names marked `servfail` or `timeout` in the world behave as in the flat lab.

Signatures are made when the lab starts, valid from an hour before to 30 days after;
a server with `tlsa_signature = "expired"` gets RRSIGs on its TLSA RRset that expired
ten days before the lab started, beyond any validator's clock skew allowance (unbound
forgives up to a day), so a validator must call them bogus.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dns.dnssec
import dns.dnssectypes
import dns.name
import dns.node
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.transaction
import dns.zone
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scanner.lab.certificates import CertificateMint
from scanner.lab.world import (
    CertificateKind,
    NameRecords,
    SmtpServer,
    TlsaSignature,
    TlsaSource,
    TlsaSpec,
    World,
    ZoneSpec,
    zone_of,
)

TTL = 300
SOA_TEXT = "ns.lab.invalid. hostmaster.lab.invalid. 1 3600 600 86400 300"
LAB_DNS_IP = "127.0.0.1"  # the A record of each zone's name server (never contacted)
MAX_CNAME_CHAIN = 8
ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256
SIGNATURE_LIFETIME = timedelta(days=30)
KSK_FLAGS = 257  # ZONE | SEP (RFC 4034 §2.1.1)
ZSK_FLAGS = 256  # ZONE

ROOT = dns.name.root


@dataclass(slots=True)
class Answer:
    """The content of one reply; `drop` means "never answer"."""

    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    drop: bool = False


@dataclass(frozen=True, slots=True)
class SigningKey:
    private: ec.EllipticCurvePrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY

    @classmethod
    def generate(cls, flags: int) -> SigningKey:
        private = ec.generate_private_key(ec.SECP256R1())
        dnskey = dns.dnssec.make_dnskey(private.public_key(), ALGORITHM, flags=flags)
        return cls(private, dnskey)


@dataclass(slots=True)
class LabZone:
    """One zone of the tree; `keys` is (KSK, ZSK) when signed."""

    apex: dns.name.Name
    signed: bool
    zone: dns.zone.Zone
    keys: tuple[SigningKey, SigningKey] | None = None
    # Sorted NSEC owners with their next names, for denial proofs.
    nsec: list[tuple[dns.name.Name, dns.name.Name]] = field(default_factory=list)
    # Names of the zone (secure ones and empty non-terminals' descendants), for ENT checks.
    names: list[dns.name.Name] = field(default_factory=list)


def _absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(name if name.endswith(".") else f"{name}.")


def _ns_target(apex: dns.name.Name) -> dns.name.Name:
    return dns.name.from_text("ns", origin=apex)


# ---------------------------------------------------------------- TLSA data


TlsaData = Callable[[SmtpServer, str, TlsaSpec], bytes]


def tlsa_data_from(mint: CertificateMint) -> TlsaData:
    """Association data of lab TLSA specs, computed from the certificates the mint serves."""
    stale = _stale_material()

    def data(server: SmtpServer, hostname: str, spec: TlsaSpec) -> bytes:
        if spec.source is None:
            return spec.data
        if spec.source is TlsaSource.STALE:
            der = stale[0] if spec.selector == 0 else stale[1]
        else:
            certificate_der = (
                mint.chain_der(server.certificate, hostname)[0]
                if spec.source is TlsaSource.LEAF
                else mint.issuer_der(server.certificate, hostname)
            )
            der = certificate_der if spec.selector == 0 else _spki(certificate_der)
        return _digest(der, spec.matching_type)

    return data


def _spki(certificate_der: bytes) -> bytes:
    from cryptography import x509

    certificate = x509.load_der_x509_certificate(certificate_der)
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _digest(data: bytes, matching_type: int) -> bytes:
    if matching_type == 1:
        digest = hashes.Hash(hashes.SHA256())
    elif matching_type == 2:
        digest = hashes.Hash(hashes.SHA512())
    else:
        return data
    digest.update(data)
    return digest.finalize()


@functools.cache
def _stale_material() -> tuple[bytes, bytes]:
    """(certificate DER, SPKI DER) of a key no lab server uses: the one before a key change."""
    import trustme

    ca = trustme.CA(organization_name="scanner lab retired key")
    leaf = ca.issue_cert("retired.lab.invalid")
    pem = leaf.cert_chain_pems[0].bytes()
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(pem)
    der = certificate.public_bytes(serialization.Encoding.DER)
    return der, _spki(der)


# ---------------------------------------------------------------- the tree


class ZoneTree:
    """Every zone of a world with `[zones]`, signed, answering with DNSSEC proofs."""

    def __init__(self, zones: dict[dns.name.Name, LabZone], flags: dict[str, NameRecords]) -> None:
        self._zones = zones
        self._flags = flags  # names marked servfail or timeout

    @classmethod
    def build(
        cls,
        world: World,
        *,
        smtp_port: int,
        tlsa_data: TlsaData,
        now: datetime | None = None,
    ) -> ZoneTree:
        """Build and sign the tree of `world`; TLSA at `_<smtp_port>._tcp.<host>`."""
        moment = now or datetime.now(UTC)
        specs = {ZoneSpec(".", True), *world.zones}
        zones: dict[dns.name.Name, LabZone] = {}
        for spec in specs:
            apex = ROOT if spec.name == "." else _absolute(spec.name)
            zone = dns.zone.Zone(apex, relativize=False)
            lab_zone = LabZone(apex, spec.signed, zone)
            if spec.signed:
                lab_zone.keys = (SigningKey.generate(KSK_FLAGS), SigningKey.generate(ZSK_FLAGS))
            zones[apex] = lab_zone
            with zone.writer() as txn:
                txn.add(apex, TTL, dns.rdata.from_text("IN", "SOA", SOA_TEXT))
                txn.add(apex, TTL, dns.rdata.from_text("IN", "NS", _ns_target(apex).to_text()))
                txn.add(_ns_target(apex), TTL, dns.rdata.from_text("IN", "A", LAB_DNS_IP))

        flags: dict[str, NameRecords] = {}
        for name, node in world.records.items():
            if node.servfail or node.timeout:
                flags[name] = node
                continue
            lab_zone = zones[_apex_of(name, world)]
            with lab_zone.zone.writer() as txn:
                for rrset in _rrsets(node):
                    txn.add(rrset)

        expired: set[dns.name.Name] = set()
        for server in world.servers:
            for hostname in server.hostnames:
                if not server.tlsa:
                    continue
                owner = _absolute(f"_{smtp_port}._tcp.{hostname}")
                rdatas = [
                    dns.rdata.from_text(
                        "IN",
                        "TLSA",
                        f"{spec.usage} {spec.selector} {spec.matching_type} "
                        f"{tlsa_data(server, hostname, spec).hex()}",
                    )
                    for spec in server.tlsa
                ]
                lab_zone = zones[_apex_of(hostname, world)]
                with lab_zone.zone.writer() as txn:
                    txn.add(dns.rrset.from_rdata_list(owner, TTL, rdatas))
                if server.tlsa_signature is TlsaSignature.EXPIRED:
                    expired.add(owner)

        # Children first: a parent's DS needs the child's KSK.
        for apex in sorted(zones, key=lambda n: -len(n)):
            lab_zone = zones[apex]
            if apex != ROOT:
                parent = zones[_parent_apex(apex, zones)]
                with parent.zone.writer() as txn:
                    txn.add(apex, TTL, dns.rdata.from_text("IN", "NS", _ns_target(apex).to_text()))
                    if lab_zone.signed:
                        assert lab_zone.keys is not None
                        txn.add(
                            apex, TTL, dns.dnssec.make_ds(apex, lab_zone.keys[0].dnskey, "SHA256")
                        )
            if lab_zone.signed:
                _sign(lab_zone, moment, expired)
            _index(lab_zone)
        return cls(zones, flags)

    # ------------------------------------------------------------ trust anchor

    @property
    def root_dnskey(self) -> dns.rdtypes.ANY.DNSKEY.DNSKEY:
        keys = self._zones[ROOT].keys
        assert keys is not None
        return keys[0].dnskey

    def trust_anchor(self) -> str:
        """The root KSK as a DS record in presentation form, for `trust-anchor:` lines."""
        ds = dns.dnssec.make_ds(ROOT, self.root_dnskey, "SHA256")
        return f". {TTL} IN DS {ds.to_text()}"

    # ------------------------------------------------------------ answering

    def resolve(
        self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, *, dnssec_ok: bool
    ) -> Answer:
        result = Answer()
        name = qname.canonicalize()
        for _ in range(MAX_CNAME_CHAIN + 1):
            flagged = self._flags.get(name.to_text(omit_final_dot=True))
            if flagged is not None:
                if flagged.timeout:
                    return Answer(drop=True)
                return Answer(rcode=dns.rcode.SERVFAIL)
            lab_zone = self._zone_for(name, qtype)
            node = lab_zone.zone.get_node(name)
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME) if node else None
            if cname is not None and qtype != dns.rdatatype.CNAME:
                result.answer += self._with_signatures(lab_zone, name, cname, dnssec_ok)
                name = cname[0].target.canonicalize()
                continue
            found = self._data(node, qtype)
            if found:
                for rdataset in found:
                    result.answer += self._with_signatures(lab_zone, name, rdataset, dnssec_ok)
                return result
            self._deny(lab_zone, name, node, dnssec_ok, result)
            return result
        return Answer(rcode=dns.rcode.SERVFAIL)  # CNAME chain too long (or a loop)

    def _zone_for(self, name: dns.name.Name, qtype: dns.rdatatype.RdataType) -> LabZone:
        """The deepest zone holding `name`; DS at an apex is the parent's (RFC 4035 §3.1.4.1)."""
        candidate = name
        while True:
            lab_zone = self._zones.get(candidate)
            if lab_zone is not None:
                if qtype == dns.rdatatype.DS and candidate == name and name != ROOT:
                    return self._zones[_parent_apex(name, self._zones)]
                return lab_zone
            candidate = candidate.parent()

    @staticmethod
    def _data(
        node: dns.node.Node | None, qtype: dns.rdatatype.RdataType
    ) -> list[dns.rdataset.Rdataset]:
        if node is None:
            return []
        if qtype == dns.rdatatype.ANY:
            return [r for r in node.rdatasets if r.rdtype != dns.rdatatype.RRSIG]
        rdataset = node.get_rdataset(dns.rdataclass.IN, qtype)
        return [rdataset] if rdataset is not None else []

    @staticmethod
    def _with_signatures(
        lab_zone: LabZone, name: dns.name.Name, rdataset: dns.rdataset.Rdataset, dnssec_ok: bool
    ) -> list[dns.rrset.RRset]:
        rrsets = [dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))]
        if dnssec_ok and lab_zone.signed:
            signatures = lab_zone.zone.get_rdataset(
                name, dns.rdatatype.RRSIG, covers=rdataset.rdtype
            )
            if signatures is not None:
                rrsets.append(dns.rrset.from_rdata_list(name, signatures.ttl, list(signatures)))
        return rrsets

    def _deny(
        self,
        lab_zone: LabZone,
        name: dns.name.Name,
        node: dns.node.Node | None,
        dnssec_ok: bool,
        result: Answer,
    ) -> None:
        """NODATA or NXDOMAIN, with SOA and (signed, DO) NSEC proofs (RFC 4035 §3.1.3)."""
        apex = lab_zone.apex
        soa = lab_zone.zone.get_rdataset(apex, dns.rdatatype.SOA)
        assert soa is not None
        result.authority += self._with_signatures(lab_zone, apex, soa, dnssec_ok)
        exists = node is not None or self._is_empty_non_terminal(lab_zone, name)
        if not exists:
            result.rcode = dns.rcode.NXDOMAIN
        if not (dnssec_ok and lab_zone.signed):
            return
        owners: list[dns.name.Name] = []
        if node is not None and node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NSEC):
            owners.append(name)
        else:
            owners.append(self._covering(lab_zone, name))
            if not exists:
                encloser = self._closest_encloser(lab_zone, name)
                owners.append(self._covering(lab_zone, dns.name.from_text("*", origin=encloser)))
        for owner in dict.fromkeys(owners):
            nsec = lab_zone.zone.get_rdataset(owner, dns.rdatatype.NSEC)
            if nsec is not None:
                result.authority += self._with_signatures(lab_zone, owner, nsec, dnssec_ok)

    @staticmethod
    def _is_empty_non_terminal(lab_zone: LabZone, name: dns.name.Name) -> bool:
        return any(other != name and other.is_subdomain(name) for other in lab_zone.names)

    def _closest_encloser(self, lab_zone: LabZone, name: dns.name.Name) -> dns.name.Name:
        candidate = name.parent()
        while candidate != lab_zone.apex and not (
            lab_zone.zone.get_node(candidate) is not None
            or self._is_empty_non_terminal(lab_zone, candidate)
        ):
            candidate = candidate.parent()
        return candidate

    @staticmethod
    def _covering(lab_zone: LabZone, name: dns.name.Name) -> dns.name.Name:
        """The NSEC owner whose span covers `name` (canonical order, RFC 4034 §6.1)."""
        covering = lab_zone.nsec[-1][0]  # the last NSEC wraps around to the apex
        for owner, _ in lab_zone.nsec:
            if owner < name:
                covering = owner
            else:
                break
        return covering


def _apex_of(name: str, world: World) -> dns.name.Name:
    zone = zone_of(name, world.zones)
    return ROOT if zone is None else _absolute(zone.name)


def _parent_apex(apex: dns.name.Name, zones: dict[dns.name.Name, LabZone]) -> dns.name.Name:
    candidate = apex.parent()
    while candidate not in zones:
        candidate = candidate.parent()
    return candidate


def _rrsets(node: NameRecords) -> list[dns.rrset.RRset]:
    owner = _absolute(node.name)
    rrsets: list[dns.rrset.RRset] = []
    if node.a:
        rrsets.append(dns.rrset.from_text_list(owner, TTL, "IN", "A", list(node.a)))
    if node.aaaa:
        rrsets.append(dns.rrset.from_text_list(owner, TTL, "IN", "AAAA", list(node.aaaa)))
    if node.mx:
        texts = [f"{mx.preference} {mx.host.rstrip('.')}." for mx in node.mx]
        rrsets.append(dns.rrset.from_text_list(owner, TTL, "IN", "MX", texts))
    if node.cname is not None:
        rrsets.append(dns.rrset.from_text(owner, TTL, "IN", "CNAME", f"{node.cname}."))
    if node.ptr:
        texts = [f"{name}." for name in node.ptr]
        rrsets.append(dns.rrset.from_text_list(owner, TTL, "IN", "PTR", texts))
    if node.txt:
        rdatas = [
            dns.rdtypes.ANY.TXT.TXT(
                dns.rdataclass.IN, dns.rdatatype.TXT, [s.encode("utf-8") for s in strings]
            )
            for strings in node.txt
        ]
        rrsets.append(dns.rrset.from_rdata_list(owner, TTL, rdatas))
    return rrsets


def _sign(lab_zone: LabZone, now: datetime, expired: set[dns.name.Name]) -> None:
    assert lab_zone.keys is not None
    ksk, zsk = lab_zone.keys
    inception = now - timedelta(hours=1)
    expiration = now + SIGNATURE_LIFETIME

    def signer(txn: dns.transaction.Transaction, rrset: dns.rrset.RRset) -> None:
        keys = [ksk] if rrset.rdtype == dns.rdatatype.DNSKEY else [zsk]
        start, end = inception, expiration
        if rrset.name in expired and rrset.rdtype == dns.rdatatype.TLSA:
            start, end = now - timedelta(days=40), now - timedelta(days=10)
        for key in keys:
            rrsig = dns.dnssec.sign(
                rrset=rrset,
                private_key=key.private,
                dnskey=key.dnskey,
                inception=start,
                expiration=end,
                signer=lab_zone.apex,
                origin=lab_zone.apex,
            )
            txn.add(rrset.name, rrset.ttl, rrsig)

    dns.dnssec.sign_zone(
        lab_zone.zone,
        keys=[(ksk.private, ksk.dnskey), (zsk.private, zsk.dnskey)],
        dnskey_ttl=TTL,
        rrset_signer=signer,
    )


def _index(lab_zone: LabZone) -> None:
    names = sorted(lab_zone.zone.nodes)
    lab_zone.names = names
    chain: list[tuple[dns.name.Name, dns.name.Name]] = []
    for name in names:
        nsec = lab_zone.zone.get_rdataset(name, dns.rdatatype.NSEC)
        if nsec is not None:
            chain.append((name, nsec[0].next))
    lab_zone.nsec = chain


def is_signed_world(world: World) -> bool:
    """Does the world ask for a DNS tree (zones), rather than the flat namespace?"""
    return bool(world.zones)


__all__ = [
    "Answer",
    "CertificateKind",
    "ZoneTree",
    "is_signed_world",
    "tlsa_data_from",
]
