"""Trust store, chain verification, certificate summaries and check_certificate (no network)."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import crypto

from scanner.lab.certificates import issue_via_intermediate
from scanner.models import ChainVerdict, TlsSession
from scanner.net.certificates import summarize_certificate
from scanner.net.trust import (
    _STORES_KEPT,
    NO_CERTIFICATE_ERROR,
    PresentedChain,
    TrustStore,
    check_certificate,
    verify_error_name,
)

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


def der_of_pem(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def chain_der(leaf: trustme.LeafCert) -> list[bytes]:
    """The chain a server configured with trustme presents: leaf, then intermediates."""
    return [der_of_pem(blob.bytes()) for blob in leaf.cert_chain_pems]


def self_signed_der(
    *,
    dns_names: Sequence[str] = ("mx.example.net",),
    serial: int = 0x1234,
    not_before: datetime = NOW - DAY,
    not_after: datetime = NOW + DAY,
    issuer_common_name: str = "self-signed.example.net",
    extra_names: Sequence[x509.GeneralName] = (),
) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-signed.example.net")])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if dns_names or extra_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([*(x509.DNSName(n) for n in dns_names), *extra_names]),
            critical=False,
        )
    certificate = builder.sign(key, hashes.SHA256())
    return certificate.public_bytes(serialization.Encoding.DER)


def with_negative_serial(der: bytes, serial: int) -> bytes:
    """Flip the sign bit of the serial INTEGER in place (the signature no longer matters)."""
    encoded = bytes([2, 8]) + serial.to_bytes(8, "big")
    index = der.index(encoded)
    return der[: index + 2] + bytes([der[index + 2] | 0x80]) + der[index + 3 :]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def trust(ca_file: Path) -> TrustStore:
    return TrustStore.from_files([ca_file])


@pytest.fixture(scope="module")
def certifi_only() -> TrustStore:
    return TrustStore.from_files([])


# ---------------------------------------------------------------- TrustStore construction


def test_certifi_only_store_does_not_trust_the_test_ca(
    ca: trustme.CA, certifi_only: TrustStore, trust: TrustStore
) -> None:
    chain = chain_der(ca.issue_cert("mx.example.net"))
    verdict = certifi_only.verify(chain, NOW)
    assert not verdict.trusted
    assert verdict.verify_error == "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY"
    assert trust.verify(chain, NOW).trusted


def test_store_without_certifi(ca: trustme.CA, ca_file: Path) -> None:
    only_test_ca = TrustStore.from_files([ca_file], include_certifi=False)
    assert only_test_ca.verify(chain_der(ca.issue_cert("mx.example.net")), NOW).trusted
    empty = TrustStore.from_files([], include_certifi=False)
    assert not empty.verify(chain_der(ca.issue_cert("mx.example.net")), NOW).trusted


def test_several_certificates_in_one_file(tmp_path: Path) -> None:
    first, second = trustme.CA(), trustme.CA()
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(first.cert_pem.bytes() + b"\n" + second.cert_pem.bytes())
    store = TrustStore.from_files([bundle], include_certifi=False)
    for authority in (first, second):
        assert store.verify(chain_der(authority.issue_cert("mx.example.net")), NOW).trusted


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"", "no PEM certificate"),
        (b"this is not PEM\n", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a valid PEM"),
    ],
    ids=["missing", "empty", "text", "broken-pem"],
)
def test_bad_ca_files_are_refused(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        TrustStore.from_files([path])


# ---------------------------------------------------------------- verification table

Verifier = Callable[[TrustStore, Sequence[bytes], datetime], ChainVerdict]


def presented_chain_of(chain: Sequence[bytes]) -> PresentedChain:
    """`chain` as a handshake hands it over: the DER and the same certificates parsed."""
    return PresentedChain(
        tuple(chain), tuple(crypto.load_certificate(crypto.FILETYPE_ASN1, der) for der in chain)
    )


def verify_from_der(trust: TrustStore, chain: Sequence[bytes], at: datetime) -> ChainVerdict:
    return trust.verify(chain, at)


def verify_presented(trust: TrustStore, chain: Sequence[bytes], at: datetime) -> ChainVerdict:
    return trust.verify(chain, at, presented=presented_chain_of(chain))


@pytest.fixture(params=[verify_from_der, verify_presented], ids=["der", "presented"])
def verify(request: pytest.FixtureRequest) -> Verifier:
    """Each verification table runs twice: from DER, and from already parsed certificates."""
    verifier: Verifier = request.param
    return verifier


def verify_case(
    ca: trustme.CA, trust: TrustStore, case: str, verify: Verifier
) -> tuple[str | None, datetime]:
    """Build the chain for one named case; return (error name or None, verification time)."""
    unknown = trustme.CA()
    if case == "good":
        chain, at = chain_der(ca.issue_cert("mx.example.net")), NOW
    elif case == "intermediate":
        chain, at = chain_der(ca.create_child_ca().issue_cert("mx.example.net")), NOW
    elif case == "missing-intermediate":
        chain, at = chain_der(ca.create_child_ca().issue_cert("mx.example.net"))[:1], NOW
    elif case == "expired":
        leaf = ca.issue_cert("mx.example.net", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
        chain, at = chain_der(leaf), NOW
    elif case == "expired-at-injected-time":
        chain, at = chain_der(ca.issue_cert("mx.example.net")), datetime(3001, 1, 1, tzinfo=UTC)
    elif case == "not-yet-valid":
        leaf = ca.issue_cert("mx.example.net", not_before=NOW + DAY, not_after=NOW + 10 * DAY)
        chain, at = chain_der(leaf), NOW
    elif case == "not-yet-valid-at-injected-time":
        chain, at = chain_der(ca.issue_cert("mx.example.net")), datetime(1999, 1, 1, tzinfo=UTC)
    elif case == "valid-at-injected-time":
        leaf = ca.issue_cert("mx.example.net", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
        chain, at = chain_der(leaf), NOW - 5 * DAY
    elif case == "valid-in-other-timezone":
        leaf = ca.issue_cert("mx.example.net", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
        chain, at = chain_der(leaf), (NOW - 5 * DAY).astimezone(timezone(timedelta(hours=-11)))
    elif case == "self-signed":
        chain, at = [self_signed_der()], NOW
    elif case == "unknown-ca":
        chain, at = chain_der(unknown.issue_cert("mx.example.net")), NOW
    elif case == "unknown-ca-expired":
        leaf = unknown.issue_cert("mx.example.net", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
        chain, at = chain_der(leaf), NOW
    elif case == "unknown-root-in-chain":
        chain = [
            *chain_der(unknown.issue_cert("mx.example.net")),
            der_of_pem(unknown.cert_pem.bytes()),
        ]
        at = NOW
    elif case == "unrelated-extra-certificate":
        chain = [*chain_der(ca.issue_cert("mx.example.net")), self_signed_der()]
        at = NOW
    else:  # pragma: no cover - table typo
        raise AssertionError(case)
    verdict = verify(trust, chain, at)
    assert verdict.trusted is (verdict.verify_error is None)
    return verdict.verify_error, at


VERIFY_CASES = [
    ("good", None),
    ("intermediate", None),
    ("missing-intermediate", "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY"),
    ("expired", "X509_V_ERR_CERT_HAS_EXPIRED"),
    ("expired-at-injected-time", "X509_V_ERR_CERT_HAS_EXPIRED"),
    ("not-yet-valid", "X509_V_ERR_CERT_NOT_YET_VALID"),
    ("not-yet-valid-at-injected-time", "X509_V_ERR_CERT_NOT_YET_VALID"),
    ("valid-at-injected-time", None),
    ("valid-in-other-timezone", None),
    ("self-signed", "X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT"),
    ("unknown-ca", "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY"),
    # untrusted dominates expired
    ("unknown-ca-expired", "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY"),
    ("unknown-root-in-chain", "X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN"),
    ("unrelated-extra-certificate", None),
]


@pytest.mark.parametrize(("case", "error"), VERIFY_CASES, ids=[case for case, _ in VERIFY_CASES])
def test_verify(
    ca: trustme.CA, trust: TrustStore, case: str, error: str | None, verify: Verifier
) -> None:
    assert verify_case(ca, trust, case, verify)[0] == error


def test_verdict_properties(ca: trustme.CA, trust: TrustStore) -> None:
    expired = trust.verify(
        chain_der(ca.issue_cert("mx.example.net", not_before=NOW - 2 * DAY, not_after=NOW - DAY)),
        NOW,
    )
    assert expired.expired
    assert not expired.not_yet_valid
    early = trust.verify(
        chain_der(ca.issue_cert("mx.example.net")), datetime(1999, 1, 1, tzinfo=UTC)
    )
    assert early.not_yet_valid
    assert not early.expired


def pem_chain_der(chain_pem: bytes) -> list[bytes]:
    return [
        certificate.public_bytes(serialization.Encoding.DER)
        for certificate in x509.load_pem_x509_certificates(chain_pem)
    ]


GOOD_DATES = (NOW - DAY, NOW + 10 * DAY)
PAST_DATES = (NOW - 10 * DAY, NOW - DAY)
FUTURE_DATES = (NOW + DAY, NOW + 10 * DAY)


@pytest.mark.parametrize(
    ("intermediate", "leaf", "error", "depth"),
    [
        pytest.param(
            PAST_DATES, GOOD_DATES, "X509_V_ERR_CERT_HAS_EXPIRED", 1, id="intermediate-expired"
        ),
        pytest.param(
            FUTURE_DATES, GOOD_DATES, "X509_V_ERR_CERT_NOT_YET_VALID", 1, id="intermediate-early"
        ),
        pytest.param(GOOD_DATES, PAST_DATES, "X509_V_ERR_CERT_HAS_EXPIRED", 0, id="leaf-expired"),
        pytest.param(GOOD_DATES, GOOD_DATES, None, None, id="all-valid"),
    ],
)
def test_verify_names_the_failing_depth(
    ca: trustme.CA,
    trust: TrustStore,
    intermediate: tuple[datetime, datetime],
    leaf: tuple[datetime, datetime],
    error: str | None,
    depth: int | None,
    verify: Verifier,
) -> None:
    material = issue_via_intermediate(
        ca, "mx.example.net", intermediate_validity=intermediate, leaf_validity=leaf
    )
    verdict = verify(trust, pem_chain_der(material.chain_pem), NOW)
    assert (verdict.verify_error, verdict.error_depth) == (error, depth)


def test_error_depth_counts_in_the_presented_chain(
    ca: trustme.CA, trust: TrustStore, verify: Verifier
) -> None:
    """An unrelated certificate between leaf and intermediate does not shift the depth."""
    material = issue_via_intermediate(
        ca, "mx.example.net", intermediate_validity=PAST_DATES, leaf_validity=GOOD_DATES
    )
    leaf, intermediate = pem_chain_der(material.chain_pem)
    verdict = verify(trust, [leaf, self_signed_der(), intermediate], NOW)
    assert (verdict.verify_error, verdict.error_depth) == ("X509_V_ERR_CERT_HAS_EXPIRED", 2)


def test_verify_uses_the_presented_certificates(ca: trustme.CA, trust: TrustStore) -> None:
    """With `presented`, its OpenSSL objects are verified and the DER is not parsed again.

    (DER that OpenSSL cannot read next to objects it parsed: no handshake hands
    over such a pair; here it shows which of the two the verdict comes from.)
    """
    leaf = chain_der(ca.issue_cert("mx.example.net"))[0]
    unreadable = [b"not a certificate"]
    parsed = PresentedChain(tuple(unreadable), presented_chain_of([leaf]).certificates)
    assert trust.verify(unreadable, NOW, presented=parsed).trusted
    assert trust.verify(unreadable, NOW).verify_error == NO_CERTIFICATE_ERROR


def test_presented_certificates_must_be_those_of_the_chain(
    ca: trustme.CA, trust: TrustStore
) -> None:
    chain = chain_der(ca.issue_cert("mx.example.net"))
    other = chain_der(ca.issue_cert("mx.example.org"))
    assert trust.verify(chain, NOW, presented=presented_chain_of(chain)).trusted
    with pytest.raises(ValueError, match="not those of chain_der"):
        trust.verify(chain, NOW, presented=presented_chain_of(other))
    with pytest.raises(ValueError, match="not those of chain_der"):
        trust.verify([], NOW, presented=presented_chain_of(chain))
    with pytest.raises(ValueError, match="one OpenSSL certificate per DER"):
        PresentedChain(tuple(chain), ())


@pytest.mark.parametrize(
    "chain",
    [[], [b"not a certificate"], [b"\x30\x03\x02\x01\x01"]],
    ids=["empty", "garbage", "truncated-der"],
)
def test_verify_without_a_usable_leaf(trust: TrustStore, chain: list[bytes]) -> None:
    verdict = trust.verify(chain, NOW)
    assert not verdict.trusted
    assert verdict.verify_error == NO_CERTIFICATE_ERROR


def test_verify_requires_an_aware_time(ca: trustme.CA, trust: TrustStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        trust.verify(chain_der(ca.issue_cert("mx.example.net")), datetime(2030, 1, 1))


def test_one_store_answers_each_second_by_its_own_time(ca: trustme.CA, trust: TrustStore) -> None:
    """The store kept for a second never leaks that second's time into another's verdict."""
    edge = NOW.replace(microsecond=0) + 3 * DAY
    chain = chain_der(ca.issue_cert("mx.example.net", not_before=NOW - DAY, not_after=edge))
    unrelated = chain_der(ca.issue_cert("mx.example.org"))
    times = [edge, edge + timedelta(seconds=1), edge, edge + timedelta(seconds=1, microseconds=5)]
    verdicts = []
    for at in times:
        verdicts.append(trust.verify(chain, at).trusted)
        assert trust.verify(unrelated, at).trusted  # the same second's store, another chain
    assert verdicts == [True, False, True, False]
    # An intermediate seen before is the same anchor path when presented again.
    leaf = ca.create_child_ca().issue_cert("mx.example.com")
    assert trust.verify(chain_der(leaf), NOW).trusted
    assert trust.verify(chain_der(leaf), NOW).trusted
    assert not trust.verify(chain_der(leaf)[:1], NOW).trusted


def test_stores_are_kept_for_interleaved_seconds_and_bounded(trust: TrustStore) -> None:
    """Sessions that began in different seconds finish interleaved: each second's store
    is built once, and only the last few seconds' are kept."""
    first, second = NOW, NOW + timedelta(seconds=1)
    store = trust._store_at(first)
    assert trust._store_at(second) is not store
    assert trust._store_at(first) is store  # not rebuilt after the other second's
    for offset in range(2, 2 + _STORES_KEPT):
        trust._store_at(NOW + timedelta(seconds=offset))
    assert trust._store_at(first) is not store  # the oldest went


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (10, "X509_V_ERR_CERT_HAS_EXPIRED"),
        (9, "X509_V_ERR_CERT_NOT_YET_VALID"),
        (18, "X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT"),
        (19, "X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN"),
        (20, "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY"),
        (21, "X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
        (9999, "X509_V_ERR_UNKNOWN_9999"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "self-signed",
        "self-signed-in-chain",
        "issuer",
        "leaf",
        "unknown",
    ],
)
def test_verify_error_names(code: int, name: str) -> None:
    assert verify_error_name(code) == name


# ---------------------------------------------------------------- summaries


def test_summary_of_a_trustme_leaf(ca: trustme.CA) -> None:
    der = chain_der(ca.issue_cert("mx.example.net", "*.example.org"))[0]
    summary = summarize_certificate(der)
    assert summary.san == ("mx.example.net", "*.example.org")
    assert "O=trustme" in summary.subject
    assert "Testing CA" in summary.issuer
    assert summary.not_before.tzinfo is not None
    assert summary.not_after.tzinfo is not None
    assert summary.not_before < summary.not_after
    assert summary.sha256 == hashlib.sha256(der).hexdigest()


def test_summary_without_san() -> None:
    summary = summarize_certificate(self_signed_der(dns_names=()))
    assert summary.san == ()
    assert summary.subject == "CN=self-signed.example.net"
    assert summary.issuer == summary.subject


def test_summary_keeps_only_dns_names() -> None:
    der = chain_der(
        trustme.CA().issue_cert("mx.example.net", "192.0.2.1", "postmaster@example.net")
    )[0]
    assert summarize_certificate(der).san == ("mx.example.net",)  # IP and email SANs dropped


def test_summary_of_a_negative_serial() -> None:
    serial = 0x7A1B2C3D4E5F6071
    der = with_negative_serial(self_signed_der(serial=serial), serial)
    summary = summarize_certificate(der)  # warnings are errors in this suite
    assert summary.san == ("mx.example.net",)


@pytest.mark.parametrize(
    "der", [b"", b"garbage", b"\x30\x03\x02\x01\x01"], ids=["empty", "garbage", "truncated"]
)
def test_summary_of_unparsable_bytes(der: bytes) -> None:
    summary = summarize_certificate(der)
    assert summary.subject.startswith("<unparsable")
    assert summary.san == ()
    assert summary.not_before is None  # absent, never a placeholder date


def test_summary_of_a_time_only_openssl_reads() -> None:
    """A UTCTime with a NUL in it: cryptography refuses the certificate, OpenSSL loads it
    (a handshake delivers it) but cannot convert the time."""
    der = self_signed_der()
    not_before = der.index(b"\x17\x0d") + 2  # UTCTime, 13 octets: YYMMDDhhmmssZ
    broken = der[:not_before] + b"\x00" + der[not_before + 1 :]
    crypto.load_certificate(crypto.FILETYPE_ASN1, broken)
    summary = summarize_certificate(broken)
    assert summary.subject.startswith("<unparsable")
    assert summary.not_before is None
    assert summary.not_after == summarize_certificate(der).not_after


def test_summary_of_a_date_in_the_year_0000() -> None:
    """GeneralizedTime 0000...: OpenSSL loads it (a handshake delivers it), cryptography
    parses it, and Python's datetime cannot hold it."""
    der = self_signed_der(not_after=datetime(9999, 12, 31, tzinfo=UTC))
    year_9999 = b"\x18\x0f9999"  # GeneralizedTime, 15 octets: YYYYMMDDhhmmssZ
    assert der.count(year_9999) == 1
    year_0 = der.replace(year_9999, b"\x18\x0f0000")
    crypto.load_certificate(crypto.FILETYPE_ASN1, year_0)
    summary = summarize_certificate(year_0)
    assert summary.subject == "CN=self-signed.example.net"
    assert summary.not_after is None
    assert summary.not_before == summarize_certificate(der).not_before


def test_summary_of_an_unsupported_general_name() -> None:
    """An x400Address next to the dNSName: cryptography gives up on the SAN; the dNSName
    is read from the octets, as OpenSSL reads it for a client's name check."""
    email = b"postmaster@example.net"
    der = self_signed_der(extra_names=[x509.RFC822Name(email.decode())])
    index = der.index(email)
    assert der[index - 2] == 0x81  # rfc822Name [1] IMPLICIT IA5String
    retagged = der[: index - 2] + b"\xa3" + der[index - 1 :]  # x400Address [3]
    assert summarize_certificate(der).san == ("mx.example.net",)
    assert summarize_certificate(retagged).san == ("mx.example.net",)
    assert summarize_certificate(retagged).subject == "CN=self-signed.example.net"


def test_summary_of_a_version_2_certificate() -> None:
    """X.509 v2 (RFC 5280 §4.1.2.1 allows it): OpenSSL reads it, cryptography does not."""
    der = self_signed_der()
    version_3 = bytes([0xA0, 0x03, 0x02, 0x01, 0x02])
    version_2 = der.replace(version_3, version_3[:-1] + b"\x01", 1)
    assert version_2 != der
    summary = summarize_certificate(version_2)
    assert summary.subject.startswith("<unparsable")
    assert (summary.not_before, summary.not_after) == (
        summarize_certificate(der).not_before.replace(microsecond=0),
        summarize_certificate(der).not_after.replace(microsecond=0),
    )


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_summary_never_crashes(data: bytes) -> None:
    summary = summarize_certificate(data)
    assert summary.sha256 == hashlib.sha256(data).hexdigest()


def names_read_directly(der: bytes) -> tuple[str, str]:
    """(subject, issuer) as RFC 4514 text, read by cryptography with no cache in between."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        certificate = x509.load_der_x509_certificate(der)
    texts = []
    for read in (lambda: certificate.subject, lambda: certificate.issuer):
        try:
            texts.append(read().rfc4514_string())
        except (ValueError, TypeError) as exc:
            texts.append(f"<unparsable: {exc}>")
    return texts[0], texts[1]


def with_first_value_tag(der: bytes, value: bytes, tag: int) -> bytes:
    """Give the first attribute value `value` (in the issuer, which comes first) the ASN.1 `tag`."""
    index = der.index(value)
    return der[: index - 2] + bytes([tag]) + der[index - 1 :]


INVALID_UTF8 = bytes([0xFF, 0xFE]) * 3
ISSUER_CASES: dict[str, Callable[[trustme.CA], bytes]] = {
    "ca-leaf": lambda ca: chain_der(ca.issue_cert("mx.example.net"))[0],
    "intermediate": lambda ca: chain_der(ca.create_child_ca().issue_cert("mx.example.net"))[1],
    "self-issued": lambda _ca: self_signed_der(),
    "other-issuer": lambda _ca: self_signed_der(issuer_common_name="Issuer CA"),
    "issuer-bmpstring": lambda _ca: with_first_value_tag(
        self_signed_der(issuer_common_name="zzzzzz"), b"zzzzzz", 0x1E
    ),
    "issuer-unparsable": lambda _ca: with_first_value_tag(
        self_signed_der(issuer_common_name="zzzzzz"), b"zzzzzz", 0x02
    ),
    "issuer-bitstring": lambda _ca: with_first_value_tag(
        self_signed_der(issuer_common_name="\x00zzzzz"), b"\x00zzzzz", 0x03
    ),
    "self-issued-unparsable": lambda _ca: self_signed_der(
        issuer_common_name="self-signed.example.net"
    ).replace(b"self-signed.example.net", INVALID_UTF8 + b"x" * 17),
}


@pytest.mark.parametrize("case", list(ISSUER_CASES))
def test_summary_names_are_read_from_each_certificate(ca: trustme.CA, case: str) -> None:
    """Two certificates with the same issuer: the second one's issuer text is the kept one."""
    make = ISSUER_CASES[case]
    for der in (make(ca), make(ca)):
        summary = summarize_certificate(der)
        assert (summary.subject, summary.issuer) == names_read_directly(der)


def test_a_parse_error_names_its_field() -> None:
    """Subject and issuer in the same octets, both unparsable: two messages, not one."""
    der = ISSUER_CASES["self-issued-unparsable"](trustme.CA())
    summary = summarize_certificate(der)
    assert summary.subject.startswith("<unparsable")
    assert summary.issuer.startswith("<unparsable")
    assert summary.subject != summary.issuer


NAMES_BASE = self_signed_der(issuer_common_name="Issuer CA")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 199), st.integers(0, 255))
def test_summary_names_after_any_octet_change(position: int, value: int) -> None:
    """Whatever one octet of the outline or the names becomes, the texts are cryptography's."""
    der = NAMES_BASE[:position] + bytes([value]) + NAMES_BASE[position + 1 :]
    summary = summarize_certificate(der)
    try:
        expected = names_read_directly(der)
    except (ValueError, x509.InvalidVersion):
        assert summary.subject.startswith("<unparsable")
        assert summary.issuer == ""
        return
    assert (summary.subject, summary.issuer) == expected


# ---------------------------------------------------------------- check_certificate


def session_of(chain: Sequence[bytes]) -> TlsSession:
    return TlsSession(
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        chain=tuple(summarize_certificate(der) for der in chain),
        chain_der=tuple(chain),
    )


@pytest.mark.parametrize(
    ("identities", "expected_name", "matches"),
    [
        (("mx.example.net",), "mx.example.net", True),
        (("mx.example.net",), "mx2.example.net", False),
        (("*.example.net",), "mx.example.net", True),
        (("*.example.net",), "a.mx.example.net", False),
        (("*.example.net",), "example.net", False),
        (("mx.xn--bcher-kva.example",), "mx.bücher.example", True),
        (("mx.xn--bcher-kva.example",), "mx.bucher.example", False),
    ],
    ids=[
        "exact",
        "wrong-name",
        "wildcard",
        "wildcard-two-labels",
        "wildcard-parent",
        "idn",
        "idn-twin",
    ],
)
def test_check_certificate_names(
    ca: trustme.CA,
    trust: TrustStore,
    identities: tuple[str, ...],
    expected_name: str,
    matches: bool,
) -> None:
    check = check_certificate(
        session_of(chain_der(ca.issue_cert(*identities))), trust, expected_name, NOW
    )
    assert check.chain.trusted
    assert check.name_matches is matches
    assert check.leaf.san == identities


def test_check_certificate_ignores_the_common_name(trust: TrustStore) -> None:
    der = self_signed_der(dns_names=())  # CN=self-signed.example.net, no SAN
    check = check_certificate(session_of([der]), trust, "self-signed.example.net", NOW)
    assert not check.name_matches
    assert check.chain.verify_error == "X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT"


def test_check_certificate_without_a_certificate(trust: TrustStore) -> None:
    with pytest.raises(ValueError, match="no peer certificate"):
        check_certificate(session_of([]), trust, "mx.example.net", NOW)
