"""Judgement of facts (docs/output.md#vocabularies): STARTTLS status, result types, indicators, readiness.

The facts come from the builders in `tests/builders.py`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from builders import (
    REASONS,
    SCANNED,
    assess,
    bad_mx2,
    certificate,
    domain_facts,
    expired_mx2,
    failed_fetch,
    fetched,
    good_hosts,
    host,
    no_hosts,
    policy,
    probe,
    texts,
    untestable,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.core.assess import (
    EHLO_NAME_HINT,
    PARTIAL_GREETING_HINT,
    AddressVerdict,
    DomainVerdict,
    indicators_for,
    not_testable_hint,
    session_failures,
    session_findings,
    starttls_status,
)
from scanner.core.codes import RecordCode
from scanner.core.smtp import PARTIAL_GREETING_NOTE
from scanner.models import (
    AddressAnswer,
    AddressStatus,
    CertificateSummary,
    DnsStatus,
    DomainFacts,
    IndicatorCode,
    Interruption,
    InterruptionKind,
    MxAnswer,
    MxHostFacts,
    MxSource,
    Phase,
    PolicyMode,
    ProbeOutcome,
    RecordError,
    ResultType,
    SessionFailure,
    StartTlsStatus,
    TlsSession,
)


def only_address(verdict: DomainVerdict, ip: str) -> AddressVerdict:
    (found,) = [a for h in verdict.mx for a in h.addresses if a.ip == ip]
    return found


# ---------------------------------------------------------------- STARTTLS status

H, IP = "mx1.example.com", "127.0.1.1"

STATUS_CASES = [
    ("offered", probe(H, IP), StartTlsStatus.OFFERED),
    ("refused-454", probe(H, IP, starttls_reply=454, tls=None, certificate=None), StartTlsStatus.REFUSED),
    ("refused-no-reply", probe(H, IP, starttls_reply=None, tls=None, certificate=None), StartTlsStatus.REFUSED),
    ("missing", probe(H, IP, starttls_advertised=False, starttls_reply=502, tls=None, certificate=None), StartTlsStatus.MISSING),
    ("helo-only", probe(H, IP, helo_only=True, starttls_advertised=False, ehlo_keywords=(), starttls_reply=503, tls=None, certificate=None), StartTlsStatus.MISSING),
    ("stripped", probe(H, IP, starttls_advertised=False), StartTlsStatus.STRIPPED),
    ("garbled", probe(H, IP, starttls_advertised=False, masked_keyword="XXXXXXXA", starttls_reply=500, tls=None, certificate=None), StartTlsStatus.GARBLED),
    ("garbled-but-accepted", probe(H, IP, starttls_advertised=False, masked_keyword="XXXXXXXA"), StartTlsStatus.GARBLED),
    ("not-testable", untestable(H, IP, "timeout:greeting"), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("outcome", "expected"), [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES]
)
def test_starttls_status(outcome: ProbeOutcome, expected: StartTlsStatus | None) -> None:
    assert starttls_status(outcome) is expected


# ---------------------------------------------------------------- result types per session (docs/output.md#result-types)

VF = ResultType.VALIDATION_FAILURE
NS = ResultType.STARTTLS_NOT_SUPPORTED
IN_POLICY = policy()

MI = IndicatorCode
EXPIRED_CERT = certificate(
    H,
    trusted=False,
    verify_error="X509_V_ERR_CERT_HAS_EXPIRED",
    not_after=SCANNED - timedelta(days=3),
)
Expected = set[tuple[ResultType, str | None, IndicatorCode]]

# One row per kind of session: the findings it must give, each as
# (result type, failure-reason-code, indicator).
FINDING_CASES: dict[str, tuple[ProbeOutcome, bool | None, Expected]] = {
    "clean": (probe(H, IP), True, set()),
    "clean-no-policy": (probe(H, IP), None, set()),
    "missing": (probe(H, IP, starttls_advertised=False, starttls_reply=502, tls=None, certificate=None), True, {(NS, "starttls-missing", MI.STARTTLS_MISSING)}),
    "stripped": (probe(H, IP, starttls_advertised=False), True, {(NS, "starttls-stripped", MI.STARTTLS_STRIPPED)}),
    "garbled": (probe(H, IP, starttls_advertised=False, masked_keyword="XXXXXXXA", starttls_reply=500, tls=None, certificate=None), True, {(NS, "starttls-garbled", MI.STARTTLS_GARBLED)}),
    "refused": (probe(H, IP, starttls_reply=454, tls=None, certificate=None), True, {(NS, "starttls-refused", MI.STARTTLS_REFUSED)}),
    "helo-only": (probe(H, IP, helo_only=True, starttls_advertised=False, starttls_reply=503, tls=None, certificate=None), True, {(NS, "helo-only", MI.HELO_ONLY)}),
    "handshake-failed": (probe(H, IP, handshake_error="tlsv1 alert protocol version", tls=None, certificate=None), True, {(VF, "tls-handshake-failed", MI.TLS_HANDSHAKE_FAILED)}),
    "tls-1.1": (probe(H, IP, tls=TlsSession("TLSv1.1", "ECDHE-RSA-AES128-SHA", ())), True, {(VF, "tls-version-below-1.2", MI.WEAK_TLS_VERSION)}),
    "tls-1.2-is-fine": (probe(H, IP, tls=TlsSession("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", ())), True, set()),
    "plaintext-injection": (probe(H, IP, plaintext_injection=29), True, {(VF, "plaintext-injection", MI.PLAINTEXT_INJECTION)}),
    "mx-not-in-policy": (probe(H, IP), False, {(VF, "mx-not-in-policy", MI.MX_NOT_IN_POLICY)}),
    "expired": (probe(H, IP, certificate=EXPIRED_CERT), True, {(ResultType.CERTIFICATE_EXPIRED, "X509_V_ERR_CERT_HAS_EXPIRED", MI.CERTIFICATE_EXPIRED)}),
    "self-signed-and-expired": (probe(H, IP, certificate=certificate(H, trusted=False, verify_error="X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT", not_after=SCANNED - timedelta(days=3))), True, {(ResultType.CERTIFICATE_EXPIRED, "X509_V_ERR_CERT_HAS_EXPIRED", MI.CERTIFICATE_EXPIRED), (ResultType.CERTIFICATE_NOT_TRUSTED, "X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT", MI.CERTIFICATE_NOT_TRUSTED)}),
    "untrusted": (probe(H, IP, certificate=certificate(H, trusted=False, verify_error="X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY")), True, {(ResultType.CERTIFICATE_NOT_TRUSTED, "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY", MI.CERTIFICATE_NOT_TRUSTED)}),
    "not-yet-valid": (probe(H, IP, certificate=certificate(H, trusted=False, verify_error="X509_V_ERR_CERT_NOT_YET_VALID", not_before=SCANNED + timedelta(days=2))), True, {(ResultType.CERTIFICATE_NOT_TRUSTED, "X509_V_ERR_CERT_NOT_YET_VALID", MI.CERTIFICATE_NOT_TRUSTED)}),
    "host-mismatch": (probe(H, IP, certificate=certificate(H, name_matches=False, san=("other.example.net",))), True, {(ResultType.CERTIFICATE_HOST_MISMATCH, "X509_V_ERR_HOSTNAME_MISMATCH", MI.CERTIFICATE_HOST_MISMATCH)}),
    "several": (probe(H, IP, plaintext_injection=5, certificate=certificate(H, name_matches=False)), False, {(VF, "plaintext-injection", MI.PLAINTEXT_INJECTION), (VF, "mx-not-in-policy", MI.MX_NOT_IN_POLICY), (ResultType.CERTIFICATE_HOST_MISMATCH, "X509_V_ERR_HOSTNAME_MISMATCH", MI.CERTIFICATE_HOST_MISMATCH)}),
    "not-testable": (untestable(H, IP, "connect-refused"), False, set()),
    "not-testable-timeout": (untestable(H, IP, "timeout:connect"), True, set()),
}  # fmt: skip


@pytest.mark.parametrize(
    ("outcome", "in_policy", "expected"), FINDING_CASES.values(), ids=FINDING_CASES.keys()
)
def test_session_findings(
    outcome: ProbeOutcome, in_policy: bool | None, expected: Expected
) -> None:
    pol = IN_POLICY if in_policy is not None else None
    found = session_findings(outcome, mx=H, policy=pol, in_policy=in_policy, at=SCANNED)
    assert {(f.result_type, f.reason_code, f.indicator) for f in found} == expected
    assert len(found) == len(expected)
    assert all(f.detail for f in found)


@pytest.mark.parametrize(
    ("outcome", "in_policy", "expected"), FINDING_CASES.values(), ids=FINDING_CASES.keys()
)
def test_report_and_indicator_views_come_from_the_findings(
    outcome: ProbeOutcome, in_policy: bool | None, expected: Expected
) -> None:
    pol = IN_POLICY if in_policy is not None else None
    findings = session_findings(outcome, mx=H, policy=pol, in_policy=in_policy, at=SCANNED)
    failures = session_failures(outcome, policy=pol, in_policy=in_policy, at=SCANNED)
    indicators = indicators_for(outcome, mx=H, policy=pol, in_policy=in_policy, at=SCANNED)
    assert failures == tuple(SessionFailure(f.result_type, f.reason_code) for f in findings)
    assert [(i.code, i.detail) for i in indicators] == [(f.indicator, f.detail) for f in findings]
    assert {(f.result_type, f.reason_code) for f in failures} == {(r, c) for r, c, _ in expected}
    assert all(i.mx == H and i.ip == IP for i in indicators)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(PolicyMode.TESTING, True), (PolicyMode.ENFORCE, True), (PolicyMode.NONE, False)],
    ids=["testing", "enforce", "none"],
)
def test_mx_not_in_policy_needs_an_active_policy(mode: PolicyMode, expected: bool) -> None:
    found = session_failures(probe(H, IP), policy=policy(mode=mode), in_policy=False)
    assert (SessionFailure(VF, "mx-not-in-policy") in found) is expected


def test_indicator_details_name_the_evidence() -> None:
    def detail(case: str) -> str:
        outcome = FINDING_CASES[case][0]
        return indicators_for(outcome, mx=H, policy=None, in_policy=None)[0].detail

    assert "XXXXXXXA" in detail("garbled")
    assert "454" in detail("refused")
    assert detail("expired") == "certificate expired on 2026-11-25"


def test_ipv6_addresses_are_rfc5952() -> None:
    facts = domain_facts(host("mx1.example.com", probe("mx1.example.com", "0:0:0:0:0:0:0:1")))
    verdict = assess(facts)
    assert [a.ip for a in verdict.mx[0].addresses] == ["::1"]


# ---------------------------------------------------------------- domain-wide indicator


@pytest.mark.parametrize(
    ("second", "inconsistent"),
    [
        (good_hosts()[1], False),
        (bad_mx2(), True),
        (
            host("mx2.example.com", untestable("mx2.example.com", "127.0.1.5", "timeout:connect")),
            False,
        ),
    ],
    ids=["all-valid", "one-without-tls", "untestable-does-not-count"],
)
def test_tls_inconsistent(second: MxHostFacts, inconsistent: bool) -> None:
    verdict = assess(domain_facts(good_hosts()[0], second))
    codes = [i.code for i in verdict.indicators]
    assert (IndicatorCode.TLS_INCONSISTENT in codes) is inconsistent
    if inconsistent:
        (indicator,) = [i for i in verdict.indicators if i.code is IndicatorCode.TLS_INCONSISTENT]
        assert "mx2.example.com (127.0.1.5)" in indicator.detail


# ---------------------------------------------------------------- enforce readiness


READINESS_CASES: list[tuple[str, DomainFacts, bool, list[tuple[str, str]]]] = [
    ("all-good-testing", domain_facts(), True, []),
    ("all-good-enforce", domain_facts(fetch=fetched(policy(mode=PolicyMode.ENFORCE))), True, []),
    ("bad-backup-mx", domain_facts(good_hosts()[0], expired_mx2()), False,
     [("certificate-expired", "mx2.example.com (127.0.1.5): certificate expired on 2026-01-01")]),
    ("backup-mx-without-starttls", domain_facts(good_hosts()[0], bad_mx2()), False,
     [("starttls-missing", "mx2.example.com (127.0.1.5): STARTTLS is not offered and the command is refused (502)")]),
    ("mx-covered-by-wildcard", domain_facts(fetch=fetched(policy("*.example.com"))), True, []),
    ("mx-outside-policy", domain_facts(fetch=fetched(policy("mx1.example.com"))), False,
     [("mx-not-in-policy", "mx2.example.com is not covered by the policy's mx patterns (mx1.example.com)")]),
    ("no-policy", domain_facts(record=None), False,
     [("no-sts-record", "no usable _mta-sts record at _mta-sts.example.com: no v=STSv1 record")]),
    ("two-records", domain_facts(record=None, record_error=RecordError(RecordCode.SEVERAL_RECORDS, "2 v=STSv1 records; exactly one is required")), False,
     [("no-sts-record", "no usable _mta-sts record at _mta-sts.example.com: 2 v=STSv1 records; exactly one is required")]),
    ("policy-fetch-error", domain_facts(fetch=failed_fetch(ResultType.STS_POLICY_FETCH_ERROR, "http-404 from mta-sts.example.com")), False,
     [("sts-policy-fetch-error", "policy fetch failed: http-404 from mta-sts.example.com")]),
    ("policy-invalid", domain_facts(fetch=failed_fetch(ResultType.STS_POLICY_INVALID, "missing required field(s): mode", "version: STSv1\nmx: mx1.example.com\nmax_age: 86400\n")), False,
     [("sts-policy-invalid", "policy is invalid: missing required field(s): mode")]),
    ("policy-webpki", domain_facts(fetch=failed_fetch(ResultType.STS_WEBPKI_INVALID, "X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT")), False,
     [("sts-webpki-invalid", "certificate of mta-sts.example.com is not valid: X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT")]),
    ("untestable-mx", domain_facts(host("mx1.example.com", probe("mx1.example.com", "127.0.1.1"), untestable("mx1.example.com", "::1", "timeout:greeting")), good_hosts()[1]), False,
     [("not-testable", "mx1.example.com (::1) could not be tested: timeout:greeting")]),
    ("mode-none", domain_facts(fetch=fetched(policy(mode=PolicyMode.NONE))), False,
     [("mode-none", "mode is none: the policy is switched off; publish mode testing or enforce")]),
    ("null-mx", no_hosts(domain_facts(mx=MxAnswer(DnsStatus.ANSWER, null_mx=True))), False,
     [("null-mx", "null MX (RFC 7505): the domain accepts no mail, so there is nothing to enforce")]),
    ("mx-servfail", no_hosts(domain_facts(mx=MxAnswer(DnsStatus.SERVFAIL, detail="127.0.0.53"))), False,
     [("mx-lookup-failed", "MX lookup failed (servfail: 127.0.0.53): scan again")]),
    ("policy-only-host-never-blocks", domain_facts(*good_hosts(), host("standby.example.com", untestable("standby.example.com", "127.0.1.9", "connect-refused"), preference=None, source=MxSource.POLICY), fetch=fetched(policy("mx1.example.com", "mx2.example.com", "standby.example.com"))), True, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "ready", "blockers"),
    [c[1:] for c in READINESS_CASES],
    ids=[c[0] for c in READINESS_CASES],
)
def test_enforce_readiness(
    facts: DomainFacts, ready: bool, blockers: list[tuple[str, str]]
) -> None:
    verdict = assess(facts)
    assert verdict.enforce_ready is ready
    assert [(blocker.code, blocker.text) for blocker in verdict.blockers] == blockers


def test_in_policy_per_mx() -> None:
    verdict = assess(domain_facts(fetch=fetched(policy("mx1.example.com"))))
    assert [(h.hostname, h.in_policy) for h in verdict.mx] == [
        ("mx1.example.com", True),
        ("mx2.example.com", False),
    ]
    mx2 = only_address(verdict, "127.0.1.2")
    assert mx2.result_types == (ResultType.VALIDATION_FAILURE,)
    no_policy = assess(domain_facts(record=None))
    assert [h.in_policy for h in no_policy.mx] == [None, None]


def test_untestable_address_has_no_result_type() -> None:
    (facts,) = [c[1] for c in READINESS_CASES if c[0] == "untestable-mx"]
    address = only_address(assess(facts), "::1")
    assert (address.status, address.interruption, address.starttls, address.failures) == (
        AddressStatus.NOT_TESTABLE,
        REASONS["timeout:greeting"],
        None,
        (),
    )


def test_answered_address_without_probe_is_not_probed() -> None:
    mx1 = dataclasses.replace(
        good_hosts()[0],
        addresses=(AddressAnswer(DnsStatus.ANSWER, ("127.0.1.1", "127.0.1.3")), AddressAnswer(DnsStatus.NODATA)),
    )  # fmt: skip
    verdict = assess(domain_facts(mx1, good_hosts()[1]))
    assert only_address(verdict, "127.0.1.3").interruption == REASONS["not-probed"]
    assert "mx1.example.com (127.0.1.3) could not be tested: not-probed" in texts(verdict.blockers)


@pytest.mark.parametrize(
    ("aaaa", "blocks"),
    [
        (AddressAnswer(DnsStatus.NODATA), False),
        (AddressAnswer(DnsStatus.TIMEOUT, detail="5 s"), True),
    ],
    ids=["aaaa-nodata", "aaaa-timeout"],
)
def test_failed_address_lookup_blocks(aaaa: AddressAnswer, blocks: bool) -> None:
    mx1 = dataclasses.replace(good_hosts()[0], addresses=(good_hosts()[0].addresses[0], aaaa))
    verdict = assess(domain_facts(mx1, good_hosts()[1]))
    assert verdict.enforce_ready is (not blocks)
    assert (
        any("address lookup failed (timeout: 5 s)" in b for b in texts(verdict.blockers)) is blocks
    )


# ---------------------------------------------------------------- warnings


def test_warnings_of_a_ready_domain() -> None:
    soon = certificate("mx1.example.com", not_after=SCANNED + timedelta(days=5))
    mx1 = host("mx1.example.com", probe("mx1.example.com", "127.0.1.1", certificate=soon))
    standby = host(
        "standby.example.com",
        probe("standby.example.com", "127.0.1.9", certificate=certificate("standby.example.com", name_matches=False)),
        preference=None,
        source=MxSource.POLICY,
    )  # fmt: skip
    pol = policy(
        "mx1.example.com", "mx2.example.com", "standby.example.com", "*.com", max_age=86400
    )
    verdict = assess(domain_facts(mx1, good_hosts()[1], standby, fetch=fetched(pol), tlsrpt=None))
    assert verdict.enforce_ready
    text = "\n".join(texts(verdict.warnings))
    assert "no TLS-RPT record at _smtp._tls.example.com" in text
    assert "max_age 86400 is under one week" in text
    assert (
        "mx1.example.com (127.0.1.1): certificate expires on 2026-12-03, 5 days after the scan"
        in text
    )
    assert "'*.com' is a wildcard under a public suffix" in text
    assert "policy-only host standby.example.com (127.0.1.9): certificate names" in text
    # mx: patterns matching no MX host; the standby is not an MX record, so it is listed too
    assert "mx pattern 'standby.example.com' matches none of the domain's MX hosts" in text


def test_clean_domain_has_no_warnings() -> None:
    assert assess(domain_facts()).warnings == ()


# Session warnings: no RFC 8460 result type, never a blocker, always naming MX and address.
EHLO_FAILED = "mx1.example.com (127.0.1.1): EHLO after TLS failed ({}): TLS completes, but no mail can be delivered over it"  # fmt: skip
STARTTLS_AGAIN = "mx1.example.com (127.0.1.1): STARTTLS is still advertised after TLS (RFC 3207 §4.2 forbids it)"  # fmt: skip
MASKED = "mx1.example.com (127.0.1.1): SMTP banner masked by a middlebox (Cisco PIX/ASA MailGuard signature)"  # fmt: skip
MAILGUARD = "****************************2***0*0****"

SESSION_WARNING_CASES = [
    ("ehlo-timeout", {"after_tls": "timeout:ehlo-after-tls"}, [EHLO_FAILED.format("timeout:ehlo-after-tls")]),
    ("ehlo-closed", {"after_tls": "closed:ehlo-after-tls"}, [EHLO_FAILED.format("closed:ehlo-after-tls")]),
    ("ehlo-rejected", {"after_tls": "ehlo-after-tls rejected: 554 5.7.0 no"}, [EHLO_FAILED.format("ehlo-after-tls rejected: 554 5.7.0 no")]),
    ("ehlo-garbled", {"after_tls": "protocol-error:ehlo-after-tls: bad"}, [EHLO_FAILED.format("protocol-error:ehlo-after-tls: bad")]),
    ("quit-timeout", {"after_tls": "timeout:quit"}, []),
    ("quit-closed", {"after_tls": "closed:quit"}, []),
    ("quit-garbled", {"after_tls": "protocol-error:quit: bad"}, []),
    ("starttls-after-tls", {"starttls_after_tls": True}, [STARTTLS_AGAIN]),
    ("no-starttls-after-tls", {"starttls_after_tls": False}, []),
    ("masked-banner", {"greeting": MAILGUARD}, [MASKED]),
    ("some-stars-in-banner", {"greeting": "mx1.example.com ******** ESMTP Postfix"}, []),
    ("everything", {"greeting": MAILGUARD, "starttls_after_tls": True, "after_tls": "timeout:ehlo-after-tls"},
     [EHLO_FAILED.format("timeout:ehlo-after-tls"), STARTTLS_AGAIN, MASKED]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "expected"),
    [c[1:] for c in SESSION_WARNING_CASES],
    ids=[c[0] for c in SESSION_WARNING_CASES],
)
def test_session_warnings(changes: dict[str, object], expected: list[str]) -> None:
    mx1 = host("mx1.example.com", probe("mx1.example.com", "127.0.1.1", **changes))
    verdict = assess(domain_facts(mx1, good_hosts()[1]))
    assert verdict.enforce_ready
    assert list(texts(verdict.warnings)) == expected
    address = only_address(verdict, "127.0.1.1")
    assert (address.failures, address.indicators) == ((), ())


def test_session_warnings_of_a_policy_only_host() -> None:
    standby = host(
        "standby.example.com",
        probe("standby.example.com", "127.0.1.9", greeting=MAILGUARD, after_tls="closed:ehlo-after-tls"),
        preference=None,
        source=MxSource.POLICY,
    )  # fmt: skip
    pol = policy("mx1.example.com", "mx2.example.com", "standby.example.com")
    verdict = assess(domain_facts(*good_hosts(), standby, fetch=fetched(pol)))
    assert verdict.enforce_ready
    where = "policy-only host standby.example.com (127.0.1.9)"
    assert list(texts(verdict.warnings)) == [
        f"{where}: EHLO after TLS failed (closed:ehlo-after-tls): TLS completes, "
        "but no mail can be delivered over it",
        f"{where}: SMTP banner masked by a middlebox (Cisco PIX/ASA MailGuard signature)",
        "mx pattern 'standby.example.com' matches none of the domain's MX hosts",
    ]


def test_masked_banner_of_an_untestable_address_is_a_warning_too() -> None:
    refused = dataclasses.replace(untestable(H, IP, "busy:421 ****"), greeting=MAILGUARD)
    verdict = assess(domain_facts(host(H, refused), good_hosts()[1]))
    assert not verdict.enforce_ready
    assert list(texts(verdict.warnings)) == [MASKED]


# ---------------------------------------------------------------- properties

ips = st.sampled_from(["127.0.1.1", "127.0.1.2", "::1", "0:0::2"])
certs = st.builds(
    certificate,
    st.just(H),
    trusted=st.booleans(),
    verify_error=st.sampled_from(
        [None, "X509_V_ERR_CERT_HAS_EXPIRED", "X509_V_ERR_CERT_NOT_YET_VALID",
         "X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT", "X509_V_ERR_HOSTNAME_MISMATCH"]
    ),
    error_depth=st.sampled_from([None, 0, 1, 2]),
    name_matches=st.booleans(),
    not_after=st.sampled_from([SCANNED - timedelta(days=1), SCANNED + timedelta(days=3), SCANNED + timedelta(days=90)]),
)  # fmt: skip
outcomes = st.one_of(
    st.builds(untestable, st.just(H), ips, st.sampled_from(["connect-refused", "timeout:ehlo"])),
    st.builds(
        probe,
        st.just(H),
        ips,
        helo_only=st.booleans(),
        starttls_advertised=st.booleans(),
        masked_keyword=st.sampled_from([None, "XXXXXXXA"]),
        starttls_reply=st.sampled_from([None, 220, 454, 502]),
        starttls_reply_text=st.sampled_from([None, "connection closed"]),
        plaintext_injection=st.sampled_from([0, 0, 17]),
        handshake_error=st.sampled_from([None, "alert handshake failure"]),
        after_tls=st.sampled_from([None, "timeout:ehlo-after-tls", "timeout:quit"]),
        starttls_after_tls=st.booleans(),
        tls=st.sampled_from([None, TlsSession("TLSv1.3", "X", ()), TlsSession("TLSv1", "Y", ())]),
        certificate=st.one_of(st.none(), certs),
    ),
)


# The indicator each RFC 8460 failure must come with (certificate-not-trusted carries
# the verifier's error as its reason code, so it is keyed by result type alone).
INDICATOR_OF: dict[tuple[ResultType, str | None], IndicatorCode] = {
    (NS, "starttls-missing"): MI.STARTTLS_MISSING,
    (NS, "starttls-stripped"): MI.STARTTLS_STRIPPED,
    (NS, "starttls-garbled"): MI.STARTTLS_GARBLED,
    (NS, "starttls-refused"): MI.STARTTLS_REFUSED,
    (NS, "helo-only"): MI.HELO_ONLY,
    (VF, "tls-handshake-failed"): MI.TLS_HANDSHAKE_FAILED,
    (VF, "tls-version-below-1.2"): MI.WEAK_TLS_VERSION,
    (VF, "plaintext-injection"): MI.PLAINTEXT_INJECTION,
    (VF, "mx-not-in-policy"): MI.MX_NOT_IN_POLICY,
    (ResultType.CERTIFICATE_EXPIRED, "X509_V_ERR_CERT_HAS_EXPIRED"): MI.CERTIFICATE_EXPIRED,
    (
        ResultType.CERTIFICATE_HOST_MISMATCH,
        "X509_V_ERR_HOSTNAME_MISMATCH",
    ): MI.CERTIFICATE_HOST_MISMATCH,
    (ResultType.CERTIFICATE_NOT_TRUSTED, None): MI.CERTIFICATE_NOT_TRUSTED,
}


@settings(max_examples=150, deadline=None)
@given(outcome=outcomes, in_policy=st.sampled_from([None, True, False]))
def test_every_finding_pairs_its_result_type_with_the_right_indicator(
    outcome: ProbeOutcome, in_policy: bool | None
) -> None:
    pol = None if in_policy is None else IN_POLICY
    found = session_findings(outcome, mx=H, policy=pol, in_policy=in_policy, at=SCANNED)
    for finding in found:
        key = (finding.result_type, finding.reason_code)
        if finding.result_type is ResultType.CERTIFICATE_NOT_TRUSTED:
            assert finding.reason_code is not None
            assert finding.reason_code.startswith("X509_V_ERR_")
            key = (finding.result_type, None)
        assert INDICATOR_OF[key] is finding.indicator
    assert len({(f.result_type, f.reason_code) for f in found}) == len(found)
    if outcome.status is AddressStatus.NOT_TESTABLE:
        assert found == ()
    if starttls_status(outcome) is StartTlsStatus.OFFERED and outcome.tls is not None:
        assert all(f.result_type is not NS for f in found)


@settings(max_examples=100, deadline=None)
@given(first=st.lists(outcomes, min_size=1, max_size=3), second=st.lists(outcomes, max_size=2))
def test_ready_exactly_when_every_session_passes(
    first: list[ProbeOutcome], second: list[ProbeOutcome]
) -> None:
    def unique(outcomes: list[ProbeOutcome], name: str) -> tuple[ProbeOutcome, ...]:
        by_ip = {
            ipaddress.ip_address(o.ip): dataclasses.replace(o, hostname=name) for o in outcomes
        }
        return tuple(by_ip.values())

    hosts = [host("mx1.example.com", *unique(first, "mx1.example.com"))]
    if second:
        hosts.append(host("mx2.example.com", *unique(second, "mx2.example.com"), preference=20))
    verdict = assess(domain_facts(*hosts))
    every_passed = all(a.passed for _, a in verdict.dns_addresses())
    assert verdict.enforce_ready is every_passed
    # a DNS session that did not pass is named in a blocker, by host and address
    for mx, address in verdict.dns_addresses():
        if not address.passed:
            assert any(
                b.startswith(f"{mx.hostname} ({address.ip})") for b in texts(verdict.blockers)
            )


# ---------------------------------------------------------------- masks beside STARTTLS, no reply, chain depth

MASK_CASES = [
    # Cisco masks other extensions alike: STARTTLS itself is still offered.
    ("other-extension-masked", probe(H, IP, masked_keyword="XXXXXXXB"), StartTlsStatus.OFFERED),
    ("other-extension-masked-refused", probe(H, IP, masked_keyword="XXXXXXXB", starttls_reply=454, tls=None, certificate=None), StartTlsStatus.REFUSED),
    ("starttls-masked", probe(H, IP, starttls_advertised=False, masked_keyword="XXXXXXXA", starttls_reply=500, tls=None, certificate=None), StartTlsStatus.GARBLED),
]  # fmt: skip


@pytest.mark.parametrize(
    ("outcome", "expected"), [c[1:] for c in MASK_CASES], ids=[c[0] for c in MASK_CASES]
)
def test_mask_is_garbled_only_without_starttls(
    outcome: ProbeOutcome, expected: StartTlsStatus
) -> None:
    assert starttls_status(outcome) is expected
    codes = {i.code for i in indicators_for(outcome, mx=H, policy=None, in_policy=None)}
    assert (IndicatorCode.STARTTLS_GARBLED in codes) is (expected is StartTlsStatus.GARBLED)


NO_REPLY = {"starttls_reply": None, "tls": None, "certificate": None}
NO_REPLY_CASES = [
    ("closed-advertised", {"starttls_reply_text": "connection closed"}, StartTlsStatus.REFUSED, IndicatorCode.STARTTLS_REFUSED, "no reply (connection closed)"),
    ("malformed-advertised", {"starttls_reply_text": "protocol-error: reply line does not start with a reply code: 'hi'"}, StartTlsStatus.REFUSED, IndicatorCode.STARTTLS_REFUSED, "no reply (protocol-error: reply line does not start"),
    ("closed-not-advertised", {"starttls_advertised": False, "starttls_reply_text": "connection closed"}, StartTlsStatus.MISSING, IndicatorCode.STARTTLS_MISSING, "no reply (connection closed)"),
    # The twin: the command did get a reply.
    ("refused-454", {"starttls_reply": 454, "starttls_reply_text": "4.7.0 later"}, StartTlsStatus.REFUSED, IndicatorCode.STARTTLS_REFUSED, "454 4.7.0 later"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "status", "code", "words"),
    [c[1:] for c in NO_REPLY_CASES],
    ids=[c[0] for c in NO_REPLY_CASES],
)
def test_starttls_without_a_reply_is_not_supported(
    changes: dict[str, object], status: StartTlsStatus, code: IndicatorCode, words: str
) -> None:
    """docs/output.md#starttls-statuses: STARTTLS answered by anything but 220 (a close too) is refused or missing."""
    outcome = probe(H, IP, **{**NO_REPLY, **changes})
    assert starttls_status(outcome) is status
    failures = session_failures(outcome, policy=None, in_policy=None, at=SCANNED)
    assert [f.result_type for f in failures] == [NS]
    (indicator,) = indicators_for(outcome, mx=H, policy=None, in_policy=None, at=SCANNED)
    assert indicator.code is code
    assert words in indicator.detail


INTERMEDIATE = CertificateSummary(
    subject="CN=Example Intermediate",
    san=(),
    issuer="CN=Example Root",
    not_before=SCANNED - timedelta(days=400),
    not_after=datetime(2026, 10, 1, tzinfo=UTC),
    sha256="cd" * 32,
)


def chain_probe(verify_error: str, depth: int | None, **cert: object) -> ProbeOutcome:
    check = certificate(H, trusted=False, verify_error=verify_error, error_depth=depth, **cert)  # type: ignore[arg-type]
    tls = TlsSession("TLSv1.3", "TLS_AES_256_GCM_SHA384", (check.leaf, INTERMEDIATE))
    return probe(H, IP, tls=tls, certificate=check)


EXPIRED = "X509_V_ERR_CERT_HAS_EXPIRED"
EARLY = "X509_V_ERR_CERT_NOT_YET_VALID"
LEAF_GONE = {"not_after": SCANNED - timedelta(days=3)}
DEPTH_CASES = [
    ("intermediate-expired", chain_probe(EXPIRED, 1), ResultType.CERTIFICATE_NOT_TRUSTED, IndicatorCode.CERTIFICATE_NOT_TRUSTED,
     "certificate not trusted: intermediate certificate at depth 1 expired on 2026-10-01 (X509_V_ERR_CERT_HAS_EXPIRED)"),
    ("intermediate-not-yet-valid", chain_probe(EARLY, 1), ResultType.CERTIFICATE_NOT_TRUSTED, IndicatorCode.CERTIFICATE_NOT_TRUSTED,
     f"certificate not trusted: intermediate certificate at depth 1 is not valid before {(SCANNED - timedelta(days=400)).date()} (X509_V_ERR_CERT_NOT_YET_VALID)"),
    ("anchor-expired", chain_probe(EXPIRED, 2), ResultType.CERTIFICATE_NOT_TRUSTED, IndicatorCode.CERTIFICATE_NOT_TRUSTED,
     "certificate not trusted: CA certificate at depth 2 expired (X509_V_ERR_CERT_HAS_EXPIRED)"),
    # The twins: the leaf itself expired (depth 0, or a verdict without depth).
    ("leaf-expired", chain_probe(EXPIRED, 0, **LEAF_GONE), ResultType.CERTIFICATE_EXPIRED, IndicatorCode.CERTIFICATE_EXPIRED,
     "certificate expired on 2026-11-25"),
    ("leaf-expired-no-depth", chain_probe(EXPIRED, None, **LEAF_GONE), ResultType.CERTIFICATE_EXPIRED, IndicatorCode.CERTIFICATE_EXPIRED,
     "certificate expired on 2026-11-25"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("outcome", "result_type", "code", "detail"),
    [c[1:] for c in DEPTH_CASES],
    ids=[c[0] for c in DEPTH_CASES],
)
def test_date_errors_above_the_leaf_are_not_leaf_expiry(
    outcome: ProbeOutcome, result_type: ResultType, code: IndicatorCode, detail: str
) -> None:
    error = outcome.certificate.chain.verify_error if outcome.certificate else None
    failures = session_failures(outcome, policy=None, in_policy=None, at=SCANNED)
    assert [(f.result_type, f.reason_code) for f in failures] == [(result_type, error)]
    (indicator,) = indicators_for(outcome, mx=H, policy=None, in_policy=None, at=SCANNED)
    assert (indicator.code, indicator.detail) == (code, detail)
    verdict = assess(domain_facts(host(H, outcome)))
    assert f"{H} ({IP}): {detail}" in texts(verdict.blockers)


# ---------------------------------------------------------------- hints for not-testable reasons


GREETING_CUT = Interruption(InterruptionKind.TIMEOUT, Phase.GREETING, PARTIAL_GREETING_NOTE)
HINT_CASES = [
    ("partial-greeting", GREETING_CUT, "timeout:greeting (partial 220- received)", PARTIAL_GREETING_HINT),
    ("ehlo-name-refused", REASONS["ehlo-rejected:450 4.7.1 Helo command rejected"],
     "ehlo-rejected:450 4.7.1 Helo command rejected", EHLO_NAME_HINT),
    # The twins: a silent server, a greeting refused, an EHLO that timed out: nothing the
    # scan's options can change.
    ("silent-greeting", REASONS["timeout:greeting"], "timeout:greeting", None),
    ("greeting-554", REASONS["rejected:554 5.3.2 no SMTP service here"], "rejected:554 5.3.2 no SMTP service here", None),
    ("ehlo-timeout", REASONS["timeout:ehlo"], "timeout:ehlo", None),
    ("partial-ehlo", Interruption(InterruptionKind.TIMEOUT, Phase.EHLO, PARTIAL_GREETING_NOTE), "timeout:ehlo (partial 220- received)", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("interruption", "reason", "hint"),
    [c[1:] for c in HINT_CASES],
    ids=[c[0] for c in HINT_CASES],
)
def test_not_testable_blocker_hints(
    interruption: Interruption, reason: str, hint: str | None
) -> None:
    """A reason the scan itself can overcome tells the operator how, after the reason."""
    untested = ProbeOutcome(
        hostname="mx2.example.com",
        ip="127.0.1.2",
        status=AddressStatus.NOT_TESTABLE,
        interruption=interruption,
    )
    verdict = assess(
        domain_facts(good_hosts()[0], host("mx2.example.com", untested, preference=20))
    )
    assert not_testable_hint(interruption) == hint
    words = f"mx2.example.com (127.0.1.2) could not be tested: {reason}"
    assert list(texts(verdict.blockers)) == [words if hint is None else f"{words}; {hint}"]


def test_many_warnings_of_one_kind_are_merged_into_one_that_counts_them() -> None:
    patterns = tuple(f"unused{n}.example.com" for n in range(2000))
    verdict = assess(
        domain_facts(fetch=fetched(policy("mx1.example.com", "mx2.example.com", *patterns)))
    )
    unused = [w for w in verdict.warnings if w.code == "unused-mx-pattern"]
    assert len(unused) == 1
    assert unused[0].text.endswith("; and 1997 more of this kind")
    assert "'unused0.example.com'" in unused[0].text
    assert len(unused[0].text) < 500
    # Three stay as they are.
    few = assess(
        domain_facts(fetch=fetched(policy("mx1.example.com", "mx2.example.com", *patterns[:3])))
    )
    assert len([w for w in few.warnings if w.code == "unused-mx-pattern"]) == 3
