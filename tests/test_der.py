"""`certificate_outline`: the tbsCertificate's fields exactly as the certificate encodes them;
`name_text`: the RFC 4514 text cryptography writes for a name, or None."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_dane_match import INTERMEDIATE, LEAF, ROOT, Issued

from scanner.core.der import DerError, certificate_outline, name_text


@pytest.mark.parametrize("issued", [LEAF, INTERMEDIATE, ROOT], ids=["leaf", "intermediate", "root"])
def test_outline_fields_are_the_certificate_s_own_encodings(issued: Issued) -> None:
    outline = certificate_outline(issued.der)
    certificate = issued.certificate
    assert outline.issuer == certificate.issuer.public_bytes()
    assert outline.subject == certificate.subject.public_bytes()
    assert outline.spki == issued.spki


def test_a_self_issued_certificate_names_itself_twice() -> None:
    outline = certificate_outline(ROOT.der)
    assert outline.issuer == outline.subject
    assert certificate_outline(LEAF.der).issuer != certificate_outline(LEAF.der).subject


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", b"\x02\x01\x00", LEAF.der[:40], LEAF.der[:-300], b"\x30\x80" + LEAF.der[2:]],
    ids=["empty", "tag-only", "no-sequence", "cut-in-tbs", "cut-short", "indefinite"],
)
def test_bytes_that_are_no_certificate_are_refused(data: bytes) -> None:
    with pytest.raises(DerError):
        certificate_outline(data)


# ---------------------------------------------------------------- names as shown

KEY = ec.generate_private_key(ec.SECP256R1())
NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)

KNOWN = [
    NameOID.COMMON_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.COUNTRY_NAME,
    NameOID.STATE_OR_PROVINCE_NAME,
    NameOID.LOCALITY_NAME,
    NameOID.STREET_ADDRESS,
    NameOID.DOMAIN_COMPONENT,
    NameOID.USER_ID,
]
OTHER = [NameOID.EMAIL_ADDRESS, NameOID.SERIAL_NUMBER, NameOID.TITLE]
STRING_TYPES = [
    _ASN1Type.UTF8String,
    _ASN1Type.PrintableString,
    _ASN1Type.IA5String,
    _ASN1Type.BMPString,
    _ASN1Type.T61String,
]
SPECIALS = ' ,+"\\<>;#=\x00'


def certificate(subject: x509.Name) -> bytes:
    """A self-signed certificate for `subject`, as DER."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(KEY.public_key())
        .serial_number(1)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_BEFORE + timedelta(days=90))
    )
    return builder.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def cryptography_text(der: bytes) -> str | None:
    """What cryptography shows of the subject: its RFC 4514 text, None when it refuses."""
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return None


# The characters a PrintableString may hold (X.680 §41.4); the other types take any.
PRINTABLE = string.ascii_letters + string.digits + " '()+,-./:=?"
# The lengths cryptography allows, in UTF-8 octets (RFC 5280's upper bounds).
LENGTHS = {NameOID.COUNTRY_NAME: (2, 2), NameOID.COMMON_NAME: (1, 64)}


def values(kind: _ASN1Type, lengths: tuple[int, int] | None) -> st.SearchStrategy[str]:
    """Values an attribute of `kind` and `lengths` can hold: short ones of the escaping's
    edges, and longer ones of any characters; only ever what cryptography would take (a
    value it refuses costs the draws and tests nothing)."""
    fits = PRINTABLE if kind == _ASN1Type.PrintableString else None
    specials = [c for c in SPECIALS if fits is None or c in fits]
    least, most = lengths or (0, 12)
    fewest = -(-least // 4)  # characters: four octets at most each
    made = st.one_of(
        st.text(alphabet=st.sampled_from([*specials, "a"]), min_size=fewest, max_size=min(3, most)),
        st.text(
            alphabet=st.one_of(
                st.sampled_from(specials),
                st.characters(codec="utf-8") if fits is None else st.sampled_from(fits),
            ),
            min_size=fewest,
            max_size=min(12, most),
        ),
    )
    if lengths is None:
        return made
    return made.filter(lambda value: least <= len(value.encode()) <= most)


VALUES = {
    (kind, lengths): values(kind, lengths)
    for kind in STRING_TYPES
    for lengths in [None, *LENGTHS.values()]
}
OIDS_AND_TYPES = st.sampled_from([(oid, kind) for oid in KNOWN + OTHER for kind in STRING_TYPES])


@st.composite
def attributes(draw: st.DrawFn) -> tuple[ObjectIdentifier, str, _ASN1Type]:
    oid, kind = draw(OIDS_AND_TYPES)
    return oid, draw(VALUES[kind, LENGTHS.get(oid)]), kind


# Attributes of one RDN differ in type or value (cryptography refuses a repeated one).
rdn_attributes = st.lists(attributes(), min_size=1, max_size=2, unique_by=lambda a: (a[0], a[1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(rdn_attributes, max_size=4))
def test_name_text_is_cryptography_s_text_or_none(
    rdns: list[list[tuple[ObjectIdentifier, str, _ASN1Type]]],
) -> None:
    try:
        name = x509.Name(
            [
                x509.RelativeDistinguishedName(
                    [x509.NameAttribute(oid, value, _type=kind) for oid, value, kind in rdn]
                )
                for rdn in rdns
            ]
        )
        der = certificate(name)
    except ValueError:  # a value its type cannot hold, a repeated attribute in one RDN
        assume(False)
        return
    text = name_text(certificate_outline(der).subject)
    assert text is None or text == cryptography_text(der)


def simple_name(*attributes: tuple[ObjectIdentifier, str, _ASN1Type]) -> bytes:
    der = certificate(
        x509.Name([x509.NameAttribute(oid, value, _type=kind) for oid, value, kind in attributes]),
    )
    return certificate_outline(der).subject


@pytest.mark.parametrize(
    ("attributes", "text"),
    [
        ([(NameOID.COMMON_NAME, "mx.example.net", _ASN1Type.UTF8String)], "CN=mx.example.net"),
        (
            [
                (NameOID.COUNTRY_NAME, "US", _ASN1Type.PrintableString),
                (NameOID.ORGANIZATION_NAME, "Let's Encrypt", _ASN1Type.PrintableString),
                (NameOID.COMMON_NAME, "R11", _ASN1Type.PrintableString),
            ],
            "CN=R11,O=Let's Encrypt,C=US",
        ),
        (
            [
                (NameOID.DOMAIN_COMPONENT, "net", _ASN1Type.IA5String),
                (NameOID.DOMAIN_COMPONENT, "example", _ASN1Type.IA5String),
            ],
            "DC=example,DC=net",
        ),
        (
            [(NameOID.ORGANIZATION_NAME, ' #a,b+c"d\\e<f>g;h ', _ASN1Type.UTF8String)],
            'O=\\ #a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\ ',
        ),
        ([(NameOID.LOCALITY_NAME, "Zürich", _ASN1Type.UTF8String)], "L=Zürich"),
        ([(NameOID.ORGANIZATIONAL_UNIT_NAME, " ", _ASN1Type.UTF8String)], "OU=\\ "),
        ([(NameOID.ORGANIZATIONAL_UNIT_NAME, "", _ASN1Type.UTF8String)], "OU="),
    ],
    ids=["cn", "ca-like", "dc", "escapes", "utf-8", "one-space", "empty"],
)
def test_common_names_are_read_without_cryptography(
    attributes: list[tuple[ObjectIdentifier, str, _ASN1Type]], text: str
) -> None:
    subject = simple_name(*attributes)
    assert name_text(subject) == text


@pytest.mark.parametrize(
    "attributes",
    [
        [(NameOID.EMAIL_ADDRESS, "postmaster@example.net", _ASN1Type.IA5String)],
        [(NameOID.COMMON_NAME, "mx.example.net", _ASN1Type.BMPString)],
        [(NameOID.COMMON_NAME, "mx.example.net", _ASN1Type.T61String)],
    ],
    ids=["other-type", "bmp-string", "teletex-string"],
)
def test_other_names_are_left_to_cryptography(
    attributes: list[tuple[ObjectIdentifier, str, _ASN1Type]],
) -> None:
    assert name_text(simple_name(*attributes)) is None


def test_a_multi_valued_rdn_is_left_to_cryptography() -> None:
    rdn = x509.RelativeDistinguishedName(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.net"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
        ]
    )
    der = certificate(x509.Name([rdn]))
    assert name_text(certificate_outline(der).subject) is None
    assert cryptography_text(der) is not None


def test_encodings_cryptography_would_refuse_are_left_to_it() -> None:
    plain = simple_name((NameOID.COMMON_NAME, "mx", _ASN1Type.PrintableString))
    assert name_text(plain) == "CN=mx"
    # The same name with a length in long form (BER, not DER), and one with '@' in a
    # PrintableString, which X.680 §41.4 does not allow.
    long_form = b"\x30\x81" + bytes([len(plain) - 2]) + plain[2:]
    at_sign = plain.replace(b"\x13\x02mx", b"\x13\x02m@")
    assert name_text(long_form) is None
    assert name_text(at_sign) is None
    assert name_text(plain + b"\x00") is None
