"""Certificates a hostile domain owner can present: summaries and DANE never fail on them.

Each certificate is crafted (tests/hostile.py) the way a server can serve it: OpenSSL
loads and verifies it, `cryptography` refuses it or one of its fields. Every case has
a twin that reads normally.
"""

from __future__ import annotations

import hashlib
from datetime import UTC

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from hostile import NOW, Forge, as_version, generalized_time, with_dates, with_extension_twice
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import crypto

from scanner.core.assess import assess_domain
from scanner.core.dane import check_chain
from scanner.core.der import DerError, san_dns_names
from scanner.core.names import names_shown
from scanner.core.sized_cache import SizedCache
from scanner.models import MAX_SAN_KEPT, CertificateCheck, ChainVerdict, TlsaRecord, TlsSession
from scanner.net.certificates import certificate_dns_names, summarize_certificate
from scanner.net.trust import TrustStore, check_certificate

MX = "mx.hostile.example"
BASIC = ExtensionOID.BASIC_CONSTRAINTS


@pytest.fixture(scope="module")
def forge() -> Forge:
    return Forge()


def trust_of(forge: Forge) -> TrustStore:
    return TrustStore([crypto.load_certificate(crypto.FILETYPE_ASN1, forge.der)])


def session_of(*chain: bytes) -> TlsSession:
    return TlsSession(
        "TLSv1.3", "TLS_AES_128_GCM_SHA256", tuple(map(summarize_certificate, chain)), chain
    )


# ---------------------------------------------------------------- the SAN, capped


def test_a_certificate_of_18000_names_keeps_100_with_the_count(forge: Forge) -> None:
    names = [f"h{i}.hostile.example" for i in range(18_000)] + [MX]
    der = forge.issue(names).leaf
    summary = summarize_certificate(der)
    assert summary.san == tuple(names[:MAX_SAN_KEPT])
    assert (summary.san_count, summary.san_total, summary.san_complete) == (18_001, 18_001, False)
    # The name check still reads every name: the MX host is the last one.
    check = check_certificate(session_of(der), trust_of(forge), MX, NOW)
    assert check.name_matches
    assert check.chain.trusted
    assert not check_certificate(
        session_of(der), trust_of(forge), "other.example", NOW
    ).name_matches


def test_a_certificate_of_few_names_keeps_them_all(forge: Forge) -> None:
    summary = summarize_certificate(forge.issue(["a.example", MX]).leaf)
    assert (summary.san, summary.san_count, summary.san_complete) == (("a.example", MX), None, True)


def test_a_name_longer_than_any_host_name_is_cut(forge: Forge) -> None:
    long = "\x1b" * 4000 + ".example"
    summary = summarize_certificate(forge.issue([long, MX]).leaf)
    assert len(summary.san[0]) == 255
    assert summary.san[0].endswith("…")
    assert summary.san[1] == MX
    assert summary.san_count == 2  # the summary is not every name as presented


def test_the_host_mismatch_detail_names_a_few_and_counts_the_rest(forge: Forge) -> None:
    from builders import domain_facts, host, probe

    der = forge.issue([f"h{i}.hostile.example" for i in range(18_000)]).leaf
    check = check_certificate(session_of(der), trust_of(forge), MX, NOW)
    assert not check.name_matches
    verdict = assess_domain(domain_facts(host(MX, probe(MX, "192.0.2.1", certificate=check))))
    (indicator,) = [i for i in verdict.indicators if i.code.value == "certificate-host-mismatch"]
    assert "h0.hostile.example, h1.hostile.example" in indicator.detail
    assert "and 17,995 more" in indicator.detail
    assert len(indicator.detail) < 400
    assert all(len(blocker.text) < 1000 for blocker in verdict.blockers)


@pytest.mark.parametrize(
    ("names", "total", "shown"),
    [
        ((), None, ""),
        (("a", "b"), None, "a, b"),
        (("a", "b", "c", "d", "e", "f", "g"), None, "a, b, c, d, e and 2 more"),
        (("a", "b"), 18_000, "a, b and 17,998 more"),
    ],
    ids=["none", "few", "more", "counted"],
)
def test_names_shown(names: tuple[str, ...], total: int | None, shown: str) -> None:
    assert names_shown(names, total) == shown


# ---------------------------------------------------------------- dates that do not read


@pytest.mark.parametrize(
    ("field", "encoded"),
    [
        ("not_before", generalized_time("20250101000000.5Z")),  # fractional seconds
        ("not_after", generalized_time("20990101000000+0100")),  # an offset
        ("not_before", generalized_time("00000101000000Z")),  # a year datetime cannot hold
    ],
    ids=["fraction", "offset", "year-0000"],
)
def test_an_unreadable_date_is_absent_never_1970(forge: Forge, field: str, encoded: bytes) -> None:
    rewrite = with_dates(**{field: encoded})
    der = forge.issue([MX], rewrite=rewrite).leaf
    crypto.load_certificate(crypto.FILETYPE_ASN1, der)  # OpenSSL takes it
    summary = summarize_certificate(der)
    assert getattr(summary, field) is None
    other = "not_after" if field == "not_before" else "not_before"
    assert getattr(summary, other) is not None  # its twin date still reads
    assert summary.san == (MX,)


def test_an_unreadable_expiry_is_said_so_not_dated_1970(forge: Forge) -> None:
    from builders import domain_facts, host, probe

    der = forge.issue(
        [MX], rewrite=with_dates(not_after=generalized_time("20200101000000.5Z"))
    ).leaf
    check = CertificateCheck(
        leaf=summarize_certificate(der),
        chain=ChainVerdict(
            trusted=False, verify_error="X509_V_ERR_CERT_HAS_EXPIRED", error_depth=0
        ),
        name_matches=True,
    )
    verdict = assess_domain(domain_facts(host(MX, probe(MX, "192.0.2.1", certificate=check))))
    words = " ".join([i.detail for i in verdict.indicators] + [b.text for b in verdict.blockers])
    assert "1970" not in words
    assert "expired on a date that does not parse" in words


def test_a_version_4_certificate_openssl_verifies_has_its_names(forge: Forge) -> None:
    """cryptography knows X.509 v1 and v3 only; the names come from the octets then."""
    v4 = forge.issue([MX], rewrite=as_version(4)).leaf
    with pytest.raises(x509.InvalidVersion):
        x509.load_der_x509_certificate(v4)
    check = check_certificate(session_of(v4), trust_of(forge), MX, NOW)
    assert check.chain.trusted
    assert check.name_matches  # no false host mismatch
    assert summarize_certificate(v4).san == (MX,)
    assert certificate_dns_names(v4) == (MX,)


# ---------------------------------------------------------------- DANE


def dane_ta(certificate: bytes) -> TlsaRecord:
    return TlsaRecord(2, 0, 1, hashlib.sha256(certificate).digest())


def test_dane_ta_over_a_leaf_dated_0000_says_it_does_not_parse(forge: Forge) -> None:
    leaf = forge.issue([MX], rewrite=with_dates(not_before=generalized_time("00000101000000Z")))
    good = forge.issue([MX])
    at = NOW.replace(tzinfo=UTC)
    check = check_chain(
        [dane_ta(forge.der)], [leaf.leaf, forge.der], mx_host=MX, base_domain=MX, at=at
    )
    assert check.matched is None
    assert "the certificate at depth 0 does not parse (its validity dates)" in check.detail
    twin = check_chain(
        [dane_ta(forge.der)], [good.leaf, forge.der], mx_host=MX, base_domain=MX, at=at
    )
    assert twin.matched is not None
    assert twin.depth == 1


def test_dane_ta_through_an_intermediate_with_basic_constraints_twice(forge: Forge) -> None:
    duplicated = Forge("hostile intermediate", parent=forge, rewrite=with_extension_twice(BASIC))
    single = Forge("hostile intermediate", parent=forge)
    chain = [duplicated.issue([MX]).leaf, duplicated.der, forge.der]
    check = check_chain([dane_ta(forge.der)], chain, mx_host=MX, base_domain=MX, at=NOW)
    assert check.matched is None
    assert "the certificate at depth 1 does not parse (its extensions)" in check.detail
    chain = [single.issue([MX]).leaf, single.der, forge.der]
    twin = check_chain([dane_ta(forge.der)], chain, mx_host=MX, base_domain=MX, at=NOW)
    assert twin.matched is not None, twin.detail
    assert twin.depth == 2


def test_dane_ta_over_a_leaf_whose_san_is_there_twice(forge: Forge) -> None:
    leaf = forge.issue([MX], rewrite=with_extension_twice(ExtensionOID.SUBJECT_ALTERNATIVE_NAME))
    check = check_chain(
        [dane_ta(forge.der)], [leaf.leaf, forge.der], mx_host=MX, base_domain=MX, at=NOW
    )
    assert check.matched is None
    assert "the certificate at depth 0 does not parse (its names)" in check.detail


def test_dane_ta_names_a_few_of_the_leaf_names(forge: Forge) -> None:
    leaf = forge.issue([f"h{i}.hostile.example" for i in range(5000)])
    check = check_chain(
        [dane_ta(forge.der)], [leaf.leaf, forge.der], mx_host=MX, base_domain=MX, at=NOW
    )
    assert check.matched is None
    assert "and 4,995 more" in check.detail
    assert len(check.detail) < 600


# ---------------------------------------------------------------- caches in bytes


def test_the_sized_cache_keeps_within_its_budget() -> None:
    cache: SizedCache[int, str] = SizedCache(1000)
    for key in range(100):
        cache.put(key, "x", 100)
    assert cache.used <= 1000
    assert len(cache) == 10
    assert cache.get(99) == "x"
    assert cache.get(0) is None
    cache.put(-1, "huge", 600)  # more than a quarter of the budget: not kept
    assert cache.get(-1) is None
    assert cache.used <= 1000


def test_summaries_of_large_certificates_are_kept_within_bytes(forge: Forge) -> None:
    from scanner.net import certificates

    certificates._summaries.clear()
    for index in range(40):
        names = [f"n{index}-{i}.hostile.example" for i in range(3000)]
        summarize_certificate(forge.issue(names).leaf)
    assert certificates._summaries.used <= certificates.SUMMARY_CACHE_BYTES
    sizes = [certificates.summary_cost(s) for s, _ in certificates._summaries._entries.values()]
    assert max(sizes) < 20_000  # a hundred names, not three thousand


def test_a_summary_is_found_again_by_digest(forge: Forge) -> None:
    der = forge.issue([MX]).leaf
    assert summarize_certificate(der) is summarize_certificate(bytes(der))


# ---------------------------------------------------------------- the SAN read from the octets


def test_the_octets_give_the_names_cryptography_gives(forge: Forge) -> None:
    names = ["mx.hostile.example", "*.hostile.example", "a" * 63 + ".example"]
    der = forge.issue(names).leaf
    assert san_dns_names(der) == tuple(names)
    with pytest.raises(DerError, match="no subjectAltName"):
        san_dns_names(Forge().der)  # a CA without one


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_reading_the_san_of_any_bytes_raises_der_error_only(data: bytes) -> None:
    try:
        names = san_dns_names(data)
    except DerError:
        return
    assert all(isinstance(name, str) for name in names)
