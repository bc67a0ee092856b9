"""DANE matching over DER (scanner.core.dane): usable records, DANE-EE, DANE-TA, the SPKI.

Every passing case has a failing twin. Chains are minted here with `cryptography`
(a root, an intermediate, leaves), so each certificate is wrong in exactly one way.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from scanner.core.dane import (
    DerError,
    check_chain,
    classify,
    record_problem,
    spki_der,
    tlsa_text,
)
from scanner.models import TlsaRecord

NOW = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MX = "mx.example.com"
BASE = "mail.provider.example"

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: Key

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def spki(self) -> bytes:
        return self.certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    common_name: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    names: tuple[str, ...] = (),
    valid: tuple[datetime, datetime] = (NOW - 30 * DAY, NOW + 60 * DAY),
    key: Key | None = None,
) -> Issued:
    """A certificate for `common_name`, self-signed without `issuer`."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.certificate.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


ROOT = issue("lab root", ca=True)
INTERMEDIATE = issue("lab intermediate", issuer=ROOT, ca=True)
LEAF = issue(MX, issuer=INTERMEDIATE, names=(MX,))
CHAIN = (LEAF.der, INTERMEDIATE.der)


def record(usage: int, selector: int, matching: int, data: bytes) -> TlsaRecord:
    digest = {0: lambda d: d, 1: lambda d: hashlib.sha256(d).digest(),
              2: lambda d: hashlib.sha512(d).digest()}[matching](data)  # fmt: skip
    return TlsaRecord(usage, selector, matching, digest)


def check(records: list[TlsaRecord], chain: tuple[bytes, ...] = CHAIN, base: str = MX):
    return check_chain(records, chain, mx_host=MX, base_domain=base, at=NOW)


# ---------------------------------------------------------------- SubjectPublicKeyInfo


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048)],
    ids=["ec-p384", "rsa-2048"],
)
def test_spki_is_the_certificate_s_own_bytes(key: Key) -> None:
    issued = issue("spki.example", key=key)
    assert spki_der(issued.der) == issued.spki
    assert spki_der(issued.der) in issued.der


@given(st.binary(max_size=300))
def test_spki_of_garbage_is_a_der_error_or_bytes(data: bytes) -> None:
    with contextlib.suppress(DerError):
        spki_der(data)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(1, id="1"),
        pytest.param(10, id="10"),
        pytest.param(100, id="100"),
        # the certificate is made at run time: its length, and so the id, varies
        pytest.param(len(LEAF.der) - 1, id="all-but-the-last-byte"),
    ],
)
def test_spki_of_a_truncated_certificate_is_a_der_error(cut: int) -> None:
    with pytest.raises(DerError):
        spki_der(LEAF.der[:cut])


# ---------------------------------------------------------------- usable records


@pytest.mark.parametrize(
    ("tlsa", "problem"),
    [
        (record(3, 1, 1, LEAF.spki), None),
        (record(2, 0, 2, INTERMEDIATE.der), None),
        (record(3, 0, 0, LEAF.der), None),
        (record(2, 1, 0, INTERMEDIATE.spki), None),
        (TlsaRecord(4, 1, 1, bytes(32)), "unknown certificate usage 4"),
        (TlsaRecord(3, 2, 1, bytes(32)), "unknown selector 2"),
        (TlsaRecord(3, 1, 3, bytes(32)), "unknown matching type 3"),
        (TlsaRecord(3, 1, 1, bytes(31)), "31 bytes of digest, not 32"),
        (TlsaRecord(3, 1, 2, bytes(32)), "32 bytes of digest, not 64"),
        (TlsaRecord(3, 0, 0, b"not a certificate"), "the full data is no certificate"),
        (TlsaRecord(3, 1, 0, b"not a key"), "the full data is no public key"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_record_problem(tlsa: TlsaRecord, problem: str | None) -> None:
    found = record_problem(tlsa)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(problem)


def test_classify_sorts_usable_pkix_and_skipped_in_order() -> None:
    good, pkix_ee, pkix_ta, bad = (
        record(3, 1, 1, LEAF.spki),
        record(1, 1, 1, LEAF.spki),
        record(0, 0, 1, ROOT.der),
        TlsaRecord(3, 1, 1, b"short"),
    )
    sorted_set = classify([pkix_ee, good, bad, pkix_ta])
    assert sorted_set.usable == (good,)
    assert sorted_set.pkix == (pkix_ee, pkix_ta)
    assert [r for r, _ in sorted_set.skipped] == [bad]


def test_tlsa_text_is_the_rfc8460_policy_string_form() -> None:
    assert tlsa_text(TlsaRecord(3, 1, 1, bytes.fromhex("ab01"))) == "3 1 1 AB01"


# ---------------------------------------------------------------- DANE-EE (RFC 7672 §3.1.1)


@pytest.mark.parametrize(
    ("selector", "matching"),
    [(1, 1), (0, 1), (1, 2), (0, 2), (1, 0), (0, 0)],
    ids=lambda v: str(v),
)
def test_dane_ee_matches_the_leaf_and_not_another_key(selector: int, matching: int) -> None:
    data = LEAF.spki if selector == 1 else LEAF.der
    passed = check([record(3, selector, matching, data)])
    assert passed.matched is not None
    assert passed.depth == 0
    other = issue(MX, issuer=INTERMEDIATE, names=(MX,))
    other_data = other.spki if selector == 1 else other.der
    failed = check([record(3, selector, matching, other_data)])
    assert failed.matched is None
    assert "does not match" in failed.detail


def test_dane_ee_ignores_names_and_dates() -> None:
    """§3.1.1: an expired, wrongly named, self-signed leaf still matches 3 1 1."""
    stale = issue(
        "wrong-name.invalid", names=("wrong-name.invalid",), valid=(NOW - 90 * DAY, NOW - 30 * DAY)
    )
    assert check([record(3, 1, 1, stale.spki)], chain=(stale.der,)).matched is not None
    assert check([record(2, 1, 1, stale.spki)], chain=(stale.der,)).matched is None


def test_dane_ee_never_matches_an_issuer() -> None:
    assert check([record(3, 1, 1, INTERMEDIATE.spki)]).matched is None


# ---------------------------------------------------------------- DANE-TA (§3.1.2, §3.2.2)


@pytest.mark.parametrize(("selector", "matching"), [(1, 1), (0, 1), (0, 2), (1, 0)], ids=str)
def test_dane_ta_on_the_intermediate(selector: int, matching: int) -> None:
    data = INTERMEDIATE.spki if selector == 1 else INTERMEDIATE.der
    result = check([record(2, selector, matching, data)])
    assert result.matched is not None
    assert result.depth == 1


def test_dane_ta_never_matches_the_leaf() -> None:
    """OpenSSL (so Postfix) matches DANE-TA only above the leaf."""
    result = check([record(2, 1, 1, LEAF.spki)])
    assert result.matched is None
    assert "no certificate above the leaf" in result.detail


def test_dane_ta_on_the_root_sent_in_the_chain() -> None:
    chain = (LEAF.der, INTERMEDIATE.der, ROOT.der)
    assert check([record(2, 0, 1, ROOT.der)], chain=chain).depth == 2
    assert check([record(2, 0, 1, ROOT.der)], chain=CHAIN).matched is None  # root not sent


def test_dane_ta_bare_key_above_the_chain() -> None:
    """`2 1 0` of a key the server does not send: it must have signed the top certificate."""
    assert check([record(2, 1, 0, ROOT.spki)]).depth == 2
    stranger = issue("stranger", ca=True)
    assert check([record(2, 1, 0, stranger.spki)]).matched is None


@pytest.mark.parametrize(
    ("leaf", "base", "why"),
    [
        (issue(MX, issuer=INTERMEDIATE, names=("other.example",)), MX, "match neither"),
        (
            issue(MX, issuer=INTERMEDIATE, names=(MX,), valid=(NOW - 60 * DAY, NOW - DAY)),
            MX,
            "expired",
        ),
        (
            issue(MX, issuer=INTERMEDIATE, names=(MX,), valid=(NOW + DAY, NOW + 60 * DAY)),
            MX,
            "not valid before",
        ),
        (issue(MX, issuer=ROOT, names=(MX,)), MX, "does not verify"),
        (issue(MX, issuer=INTERMEDIATE, names=(BASE,)), BASE, None),
        (issue(MX, issuer=INTERMEDIATE, names=("*.example.com",)), MX, None),
        (issue(MX, issuer=INTERMEDIATE, names=("*.com",)), MX, "match neither"),
    ],
    ids=[
        "wrong-name",
        "expired-leaf",
        "future-leaf",
        "wrong-issuer",
        "base-domain-name",
        "wildcard",
        "too-wide-wildcard",
    ],
)
def test_dane_ta_checks_the_chain_below_the_anchor(
    leaf: Issued, base: str, why: str | None
) -> None:
    result = check(
        [record(2, 1, 1, INTERMEDIATE.spki)], chain=(leaf.der, INTERMEDIATE.der), base=base
    )
    if why is None:
        assert result.matched is not None
    else:
        assert result.matched is None
        assert why in result.detail


def test_dane_ta_certificate_anchor_must_be_in_date_but_a_key_anchor_need_not() -> None:
    old = issue("old intermediate", issuer=ROOT, ca=True, valid=(NOW - 90 * DAY, NOW - DAY))
    leaf = issue(MX, issuer=old, names=(MX,))
    chain = (leaf.der, old.der)
    assert check([record(2, 0, 1, old.der)], chain=chain).matched is None
    assert check([record(2, 1, 1, old.spki)], chain=chain).matched is not None


def test_dane_ta_needs_ca_certificates_between_anchor_and_leaf() -> None:
    not_ca = issue("not a ca", issuer=INTERMEDIATE, ca=False)
    leaf = issue(MX, issuer=not_ca, names=(MX,))
    chain = (leaf.der, not_ca.der, INTERMEDIATE.der)
    result = check([record(2, 1, 1, INTERMEDIATE.spki)], chain=chain)
    assert result.matched is None
    assert "no CA certificate" in result.detail
    good = issue("a ca", issuer=INTERMEDIATE, ca=True)
    leaf = issue(MX, issuer=good, names=(MX,))
    assert (
        check(
            [record(2, 1, 1, INTERMEDIATE.spki)], chain=(leaf.der, good.der, INTERMEDIATE.der)
        ).depth
        == 2
    )


def test_rsa_chain() -> None:
    root = issue("rsa root", ca=True, key=rsa.generate_private_key(65537, 2048))
    leaf = issue(MX, issuer=root, names=(MX,))
    assert check([record(2, 1, 1, root.spki)], chain=(leaf.der, root.der)).depth == 1
    assert check([record(2, 1, 1, root.spki)], chain=(leaf.der, INTERMEDIATE.der)).matched is None


def test_first_matching_record_wins_and_misses_are_explained() -> None:
    miss = record(3, 1, 1, ROOT.spki)
    hit = record(2, 1, 1, INTERMEDIATE.spki)
    result = check([miss, hit])
    assert result.matched == hit
    failed = check([miss])
    assert failed.matched is None
    assert failed.detail.startswith("3 1 1 ")


def test_an_empty_chain_matches_nothing() -> None:
    assert check([record(3, 1, 1, LEAF.spki)], chain=()).matched is None


def test_a_version_2_leaf_is_matched_by_its_bytes_without_a_crash() -> None:
    """X.509 v2 (RFC 5280 §4.1.2.1): cryptography refuses to parse it; DANE-EE 3 0 1 needs no parse."""
    version_3 = bytes([0xA0, 0x03, 0x02, 0x01, 0x02])
    version_2 = LEAF.der.replace(version_3, version_3[:-1] + b"\x01", 1)
    assert version_2 != LEAF.der
    passed = check([record(3, 0, 1, version_2)], chain=(version_2, INTERMEDIATE.der))
    assert passed.matched is not None
    failed = check([record(3, 0, 1, LEAF.der)], chain=(version_2, INTERMEDIATE.der))
    assert failed.matched is None
