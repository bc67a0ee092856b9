"""The lab's signed DNS tree (scanner.lab.dnssec) and the world format's zones and TLSA.

No resolver here: the tree's answers are checked with dnspython's own DNSSEC code
(signatures against the zone keys, DS against the child's KSK), and the NSEC proofs
by their spans.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dns.dnssec
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from scanner.lab import WorldError, parse_world
from scanner.lab.certificates import default_mint
from scanner.lab.dnssec import ROOT, ZoneTree, tlsa_data_from
from scanner.lab.world import TlsaSignature, TlsaSource

PORT = 2525
WORLD = """
[zones."example"]
[zones."signed.example"]
[zones."plain.example"]
signed = false

[domains."signed.example"]
dns."@" = { mx = ["10 mx.signed.example"] }
dns."alias" = { cname = "mx.signed.example" }
servers = [{ hostname = "mx.signed.example", address = "127.0.1.1", tlsa = ["3 1 1 leaf", "2 0 1 issuer"] }]

[domains."plain.example"]
dns."@" = { mx = ["10 mx.plain.example"] }
servers = [{ hostname = "mx.plain.example", address = "127.0.1.2", tlsa = ["3 1 1 leaf"], tlsa_signature = "expired" }]
"""


@pytest.fixture(scope="module")
def tree() -> ZoneTree:
    return ZoneTree.build(
        parse_world(WORLD), smtp_port=PORT, tlsa_data=tlsa_data_from(default_mint())
    )


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def rrsets(answer: list[dns.rrset.RRset], rdtype: dns.rdatatype.RdataType) -> list[dns.rrset.RRset]:
    return [r for r in answer if r.rdtype == rdtype]


def keys_of(tree: ZoneTree, apex: str) -> dict[dns.name.Name, dns.rrset.RRset]:
    found = tree.resolve(name(apex), dns.rdatatype.DNSKEY, dnssec_ok=True)
    dnskeys = rrsets(found.answer, dns.rdatatype.DNSKEY)
    assert dnskeys, f"no DNSKEY at {apex}"
    return {name(apex): dnskeys[0]}


def validate(
    tree: ZoneTree, apex: str, answer: list[dns.rrset.RRset], rdtype: dns.rdatatype.RdataType
) -> None:
    data = rrsets(answer, rdtype)[0]
    signatures = next(r for r in answer if r.rdtype == dns.rdatatype.RRSIG and r.covers == rdtype)
    dns.dnssec.validate(data, signatures, keys_of(tree, apex))


def test_data_is_signed_by_its_zone(tree: ZoneTree) -> None:
    found = tree.resolve(name("mx.signed.example"), dns.rdatatype.A, dnssec_ok=True)
    validate(tree, "signed.example.", found.answer, dns.rdatatype.A)
    plain = tree.resolve(name("mx.signed.example"), dns.rdatatype.A, dnssec_ok=False)
    assert not rrsets(plain.answer, dns.rdatatype.RRSIG)


def test_ds_at_the_parent_matches_the_child_ksk(tree: ZoneTree) -> None:
    ds = tree.resolve(name("signed.example"), dns.rdatatype.DS, dnssec_ok=True)
    validate(tree, "example.", ds.answer, dns.rdatatype.DS)
    child_keys = keys_of(tree, "signed.example.")[name("signed.example.")]
    ksk = next(k for k in child_keys if k.flags == 257)
    assert rrsets(ds.answer, dns.rdatatype.DS)[0][0] == dns.dnssec.make_ds(
        name("signed.example."), ksk, "SHA256"
    )
    root_ds = tree.resolve(name("example"), dns.rdatatype.DS, dnssec_ok=True)
    validate(tree, ".", root_ds.answer, dns.rdatatype.DS)


def test_an_unsigned_child_is_a_proven_insecure_delegation(tree: ZoneTree) -> None:
    found = tree.resolve(name("plain.example"), dns.rdatatype.DS, dnssec_ok=True)
    assert found.rcode == dns.rcode.NOERROR
    assert not found.answer
    nsec = rrsets(found.authority, dns.rdatatype.NSEC)[0]
    assert nsec.name == name("plain.example.")
    types = nsec[0].to_text().split()[1:]  # RFC 4035 §5.2: NS, and neither DS nor SOA
    assert "NS" in types
    assert "DS" not in types
    assert "SOA" not in types
    validate(tree, "example.", found.authority, dns.rdatatype.NSEC)
    data = tree.resolve(name("mx.plain.example"), dns.rdatatype.A, dnssec_ok=True)
    assert rrsets(data.answer, dns.rdatatype.A)
    assert not rrsets(data.answer, dns.rdatatype.RRSIG)


def test_nodata_and_nxdomain_carry_nsec_proofs(tree: ZoneTree) -> None:
    nodata = tree.resolve(name("mx.signed.example"), dns.rdatatype.AAAA, dnssec_ok=True)
    assert nodata.rcode == dns.rcode.NOERROR
    assert rrsets(nodata.authority, dns.rdatatype.NSEC)[0].name == name("mx.signed.example.")
    missing = name("nothing.signed.example.")
    nxdomain = tree.resolve(missing, dns.rdatatype.A, dnssec_ok=True)
    assert nxdomain.rcode == dns.rcode.NXDOMAIN
    spans = [(n.name, n[0].next) for n in rrsets(nxdomain.authority, dns.rdatatype.NSEC)]
    assert any(
        owner < missing and (missing < nxt or nxt == name("signed.example."))
        for owner, nxt in spans
    )
    validate(tree, "signed.example.", nxdomain.authority, dns.rdatatype.NSEC)


def test_tlsa_sits_at_the_lab_port_and_can_be_signed_expired(tree: ZoneTree) -> None:
    good = tree.resolve(name(f"_{PORT}._tcp.mx.signed.example"), dns.rdatatype.TLSA, dnssec_ok=True)
    records = rrsets(good.answer, dns.rdatatype.TLSA)[0]
    assert sorted((r.usage, r.selector, r.mtype) for r in records) == [(2, 0, 1), (3, 1, 1)]
    validate(tree, "signed.example.", good.answer, dns.rdatatype.TLSA)
    expired = tree.resolve(
        name(f"_{PORT}._tcp.mx.plain.example"), dns.rdatatype.TLSA, dnssec_ok=True
    )
    assert rrsets(expired.answer, dns.rdatatype.TLSA)  # an unsigned zone: no signature at all


def test_expired_tlsa_signatures_do_not_validate() -> None:
    world = parse_world(
        WORLD.replace(
            'tlsa = ["3 1 1 leaf", "2 0 1 issuer"]',
            'tlsa = ["3 1 1 leaf"], tlsa_signature = "expired"',
        )
    )
    tree = ZoneTree.build(world, smtp_port=PORT, tlsa_data=tlsa_data_from(default_mint()))
    found = tree.resolve(
        name(f"_{PORT}._tcp.mx.signed.example"), dns.rdatatype.TLSA, dnssec_ok=True
    )
    signature = next(r for r in found.answer if r.rdtype == dns.rdatatype.RRSIG)[0]
    assert signature.expiration < datetime.now(UTC).timestamp() - 86400
    with pytest.raises(dns.dnssec.ValidationFailure):
        validate(tree, "signed.example.", found.answer, dns.rdatatype.TLSA)


def test_cname_answers_follow_into_the_target(tree: ZoneTree) -> None:
    found = tree.resolve(name("alias.signed.example"), dns.rdatatype.A, dnssec_ok=True)
    assert [r.rdtype for r in found.answer if r.rdtype != dns.rdatatype.RRSIG] == [
        dns.rdatatype.CNAME,
        dns.rdatatype.A,
    ]


def test_trust_anchor_is_the_root_ksk(tree: ZoneTree) -> None:
    anchor = tree.trust_anchor()
    assert anchor.startswith(". 300 IN DS ")
    assert str(dns.dnssec.make_ds(ROOT, tree.root_dnskey, "SHA256")) in anchor


# ---------------------------------------------------------------- the world format


def test_tlsa_specs_parse() -> None:
    world = parse_world(WORLD)
    server = world.server("127.0.1.1")
    assert server is not None
    assert [(s.usage, s.selector, s.matching_type, s.source) for s in server.tlsa] == [
        (3, 1, 1, TlsaSource.LEAF),
        (2, 0, 1, TlsaSource.ISSUER),
    ]
    assert world.server("127.0.1.2").tlsa_signature is TlsaSignature.EXPIRED  # type: ignore[union-attr]
    assert {z.name: z.signed for z in world.zones} == {
        "example": True,
        "signed.example": True,
        "plain.example": False,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            WORLD.replace(
                '[zones."example"]\n[zones."signed.example"]\n[zones."plain.example"]\nsigned = false\n',
                "",
            ),
            r"tlsa needs \[zones\]",
        ),
        (WORLD.replace('dns."alias"', 'dns."outside.test."'), "lies in no zone"),
        (
            WORLD.replace('"3 1 1 leaf", "2 0 1 issuer"', '"3 1 leaf"'),
            "USAGE SELECTOR MATCHING-TYPE DATA",
        ),
        (WORLD.replace('"3 1 1 leaf", "2 0 1 issuer"', '"3 1 1 nonsense"'), "neither hex nor"),
        (WORLD.replace('"3 1 1 leaf", "2 0 1 issuer"', '"300 1 1 leaf"'), "one octet"),
        (
            WORLD.replace('tlsa_signature = "expired"', 'tlsa_signature = "late"'),
            "unknown value 'late'",
        ),
        (WORLD.replace("signed = false", 'signed = "no"'), "expected true or false"),
    ],
    ids=[
        "tlsa-without-zones",
        "name-outside-zones",
        "three-fields",
        "bad-data",
        "big-field",
        "bad-signature",
        "bad-signed",
    ],
)
def test_world_errors(text: str, message: str) -> None:
    with pytest.raises(WorldError, match=message):
        parse_world(text)
