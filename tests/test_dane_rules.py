"""DANE's rules without a network: where TLSA applies (RFC 7672 §2.2), the session
statuses, the findings, readiness, warnings, the RFC 8460 report and the JSON line.

Table-driven; every passing case has a failing twin.
"""

from __future__ import annotations

import dataclasses

import pytest
from commands import line_validator
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from scanner.core.assess import assess_domain
from scanner.core.dane import (
    classify,
    host_status,
    host_warnings,
    session_dane,
    tlsa_owner,
    tlsa_plan,
    tlsa_search_continues,
)
from scanner.core.result import DomainResult
from scanner.core.tlsrpt import build_report
from scanner.models import (
    AddressAnswer,
    DaneCheck,
    DaneStatus,
    DnssecStatus,
    DnsStatus,
    HostDane,
    IndicatorCode,
    MxAnswer,
    MxRecord,
    ResultType,
    TlsaAnswer,
    TlsaRecord,
)
from scanner.output import result_line
from scanner.render import render_check
from tests.builders import OPTIONS, SCANNED, WINDOW, domain_facts, host, probe

SEC, INS, BOG, UNV = (
    DnssecStatus.SECURE,
    DnssecStatus.INSECURE,
    DnssecStatus.BOGUS,
    DnssecStatus.UNVALIDATED,
)
MX = "mx1.example.com"
EE = TlsaRecord(3, 1, 1, bytes(range(32)))
TA = TlsaRecord(2, 1, 1, bytes(range(1, 33)))
PKIX = TlsaRecord(1, 1, 1, bytes(range(2, 34)))
OWNER = tlsa_owner(25, MX)


def answer(
    dnssec: DnssecStatus, *addresses: str, canonical: str | None = None, chain_secure: bool = True
) -> AddressAnswer:
    status = DnsStatus.ANSWER if addresses else DnsStatus.NODATA
    return AddressAnswer(
        status,
        addresses,
        dnssec=dnssec,
        canonical_name=canonical or MX,
        cname_chain_secure=chain_secure,
    )


# ---------------------------------------------------------------- §2.2.2: where to look


@pytest.mark.parametrize(
    ("answers", "candidates", "status"),
    [
        ((answer(SEC, "192.0.2.1"), answer(SEC)), (MX,), SEC),
        ((answer(INS, "192.0.2.1"), answer(INS)), (), INS),
        ((answer(SEC, "192.0.2.1"), answer(INS, "2001:db8::1")), (), INS),
        ((answer(UNV, "192.0.2.1"), answer(UNV)), (), UNV),
        (
            (
                AddressAnswer(DnsStatus.SERVFAIL, dnssec=BOG),
                AddressAnswer(DnsStatus.SERVFAIL, dnssec=BOG),
            ),
            (),
            BOG,
        ),
        (
            (answer(SEC, "192.0.2.1", canonical="mail.provider.example"), answer(SEC)),
            ("mail.provider.example", MX),
            SEC,
        ),
        ((answer(INS, "192.0.2.1", canonical="mail.provider.example"), answer(INS)), (MX,), INS),
        (
            (
                answer(INS, "192.0.2.1", canonical="mail.provider.example", chain_secure=False),
                answer(INS),
            ),
            (),
            INS,
        ),
    ],
    ids=[
        "secure",
        "insecure",
        "one-family-insecure",
        "unvalidated",
        "bogus",
        "secure-cname-expanded-first",
        "insecure-target-secure-cname",
        "insecure-cname",
    ],
)
def test_tlsa_plan(
    answers: tuple[AddressAnswer, ...], candidates: tuple[str, ...], status: DnssecStatus
) -> None:
    plan = tlsa_plan(MX, answers)
    assert plan.candidates == candidates
    assert plan.address_dnssec is status


def test_tlsa_owner_uses_the_port_in_use() -> None:
    assert tlsa_owner(2525, MX) == "_2525._tcp.mx1.example.com"


@pytest.mark.parametrize(
    ("tlsa", "continues"),
    [
        (TlsaAnswer(DnsStatus.NXDOMAIN, dnssec=SEC), True),
        (TlsaAnswer(DnsStatus.NODATA, dnssec=SEC), True),
        (TlsaAnswer(DnsStatus.ANSWER, (EE,), dnssec=INS), True),
        (TlsaAnswer(DnsStatus.ANSWER, (EE,), dnssec=SEC), False),
        (TlsaAnswer(DnsStatus.ANSWER, (PKIX,), dnssec=SEC), False),
        (TlsaAnswer(DnsStatus.SERVFAIL, dnssec=BOG), False),
        (TlsaAnswer(DnsStatus.TIMEOUT), False),
    ],
    ids=["nxdomain", "nodata", "insecure", "secure", "secure-unusable", "bogus", "timeout"],
)
def test_tlsa_search_continues(tlsa: TlsaAnswer, continues: bool) -> None:
    assert tlsa_search_continues(tlsa) is continues


# ---------------------------------------------------------------- statuses


def dane(tlsa: TlsaAnswer | None, address_dnssec: DnssecStatus = SEC) -> HostDane:
    return HostDane(MX, address_dnssec, OWNER if tlsa else None, tlsa)


SECURE_EE = TlsaAnswer(DnsStatus.ANSWER, (EE,), dnssec=SEC)


@pytest.mark.parametrize(
    ("mx_dnssec", "facts", "status"),
    [
        (SEC, dane(SECURE_EE), None),
        (INS, dane(SECURE_EE), DaneStatus.INSECURE),
        (UNV, dane(SECURE_EE), DaneStatus.UNVALIDATED),
        (SEC, dane(None, INS), DaneStatus.INSECURE),
        (SEC, dane(None, UNV), DaneStatus.UNVALIDATED),
        (SEC, dane(TlsaAnswer(DnsStatus.ANSWER, (EE,), dnssec=INS)), DaneStatus.INSECURE),
        (SEC, dane(TlsaAnswer(DnsStatus.NXDOMAIN, dnssec=SEC)), DaneStatus.NO_TLSA),
        (SEC, dane(TlsaAnswer(DnsStatus.NXDOMAIN, dnssec=INS)), DaneStatus.INSECURE),
        (
            SEC,
            dane(TlsaAnswer(DnsStatus.SERVFAIL, dnssec=BOG, extended_error="7 Signature Expired")),
            DaneStatus.BOGUS,
        ),
        (INS, dane(TlsaAnswer(DnsStatus.SERVFAIL, dnssec=BOG)), DaneStatus.INSECURE),
        (SEC, dane(TlsaAnswer(DnsStatus.TIMEOUT)), DaneStatus.UNVALIDATED),
        (SEC, dane(TlsaAnswer(DnsStatus.ANSWER, (PKIX,), dnssec=SEC)), DaneStatus.UNUSABLE),
        (SEC, dane(TlsaAnswer(DnsStatus.ANSWER, (PKIX, EE), dnssec=SEC)), None),
    ],
    ids=[
        "secure",
        "mx-insecure",
        "mx-unvalidated",
        "host-insecure",
        "host-unvalidated",
        "tlsa-insecure",
        "no-tlsa",
        "insecure-denial",
        "bogus",
        "bogus-under-insecure-mx",
        "timeout",
        "unusable",
        "pkix-beside-usable",
    ],
)
def test_host_status(mx_dnssec: DnssecStatus, facts: HostDane, status: DaneStatus | None) -> None:
    found, words = host_status(mx_dnssec, facts, domain="example.com")
    assert found is status
    assert words


def checked(matched: TlsaRecord | None) -> DaneCheck:
    return DaneCheck(MX, matched, 0 if matched else None, "words")


@pytest.mark.parametrize(
    ("session", "status"),
    [
        (probe(MX, "192.0.2.1", dane=checked(EE)), DaneStatus.PASS),
        (probe(MX, "192.0.2.1", dane=checked(None)), DaneStatus.FAIL),
        (probe(MX, "192.0.2.1", tls=None, certificate=None, starttls_reply=454), DaneStatus.FAIL),
    ],
    ids=["pass", "mismatch", "no-tls"],
)
def test_session_dane(session, status: DaneStatus) -> None:  # type: ignore[no-untyped-def]
    found = session_dane(session, dane(SECURE_EE), mx_dnssec=SEC, domain="example.com")
    assert found is not None
    assert found.status is status


def test_session_dane_is_none_when_not_tested_or_not_looked_into() -> None:
    assert session_dane(probe(MX, "192.0.2.1"), None, mx_dnssec=SEC, domain="example.com") is None


# ---------------------------------------------------------------- warnings


@pytest.mark.parametrize(
    ("records", "rollover_warning"),
    [
        ((EE,), True),
        ((EE, TlsaRecord(3, 1, 1, bytes(range(5, 37)))), False),
        ((EE, TA), False),
        ((TA,), False),
    ],
    ids=["single-3-1-1", "next-key-published", "issuer-published", "ta-only"],
)
def test_rollover_warning(records: tuple[TlsaRecord, ...], rollover_warning: bool) -> None:
    warnings = host_warnings(MX, dane(TlsaAnswer(DnsStatus.ANSWER, records, dnssec=SEC)))
    assert any("key rollover" in w for w in warnings) is rollover_warning


def test_unusable_and_malformed_records_are_warned_about() -> None:
    broken = TlsaRecord(3, 1, 1, b"short")
    warnings = host_warnings(MX, dane(TlsaAnswer(DnsStatus.ANSWER, (PKIX, broken), dnssec=SEC)))
    assert any("PKIX-EE" in w and "§3.1.3" in w for w in warnings)
    assert any("skipped" in w for w in warnings)
    assert any("no TLSA record is usable" in w for w in warnings)
    assert host_warnings(MX, dane(TlsaAnswer(DnsStatus.ANSWER, (EE, TA), dnssec=SEC))) == []


# ---------------------------------------------------------------- a domain


def dane_domain(
    *,
    check: DaneCheck | None = None,
    tlsa: TlsaAnswer = SECURE_EE,
    mx_dnssec: DnssecStatus = SEC,
    **probe_changes: object,
):  # type: ignore[no-untyped-def]
    session = probe(MX, "192.0.2.1", dane=check, **probe_changes)
    hosts = (dataclasses.replace(host(MX, session), dane=dane(tlsa)),)
    mx = MxAnswer(DnsStatus.ANSWER, (MxRecord(10, MX),), dnssec=mx_dnssec)
    return domain_facts(*hosts, mx=mx)


def report_of(facts):  # type: ignore[no-untyped-def]
    return build_report(facts, assess_domain(facts), options=OPTIONS, window=WINDOW, report_id="r")


def test_a_match_passes_and_ready_stays_ready() -> None:
    verdict = assess_domain(dane_domain(check=checked(EE)))
    assert verdict.mx[0].addresses[0].dane.status is DaneStatus.PASS  # type: ignore[union-attr]
    assert verdict.enforce_ready, verdict.blockers


def test_a_mismatch_is_tlsa_invalid_with_its_indicator_and_a_blocker() -> None:
    verdict = assess_domain(dane_domain(check=checked(None)))
    address = verdict.mx[0].addresses[0]
    assert ResultType.TLSA_INVALID in address.result_types
    assert [i.code for i in address.indicators] == [IndicatorCode.DANE_MISMATCH]
    assert not verdict.enforce_ready
    assert any(
        b.code == "dane-mismatch" and "no TLSA record matches" in b.text for b in verdict.blockers
    )


def test_a_mismatch_under_an_insecure_mx_is_no_finding() -> None:
    verdict = assess_domain(dane_domain(check=checked(None), mx_dnssec=INS))
    assert verdict.mx[0].addresses[0].dane.status is DaneStatus.INSECURE  # type: ignore[union-attr]
    assert verdict.enforce_ready


def test_bogus_tlsa_is_dnssec_invalid_and_blocks() -> None:
    bogus = TlsaAnswer(DnsStatus.SERVFAIL, dnssec=BOG, extended_error="7 Signature Expired")
    verdict = assess_domain(dane_domain(tlsa=bogus))
    address = verdict.mx[0].addresses[0]
    assert address.result_types == (ResultType.DNSSEC_INVALID,)
    assert [i.code for i in address.indicators] == [IndicatorCode.DNSSEC_BOGUS]
    assert not verdict.enforce_ready


@pytest.mark.parametrize(
    ("tlsa", "blocks"),
    [
        (TlsaAnswer(DnsStatus.ANSWER, (PKIX,), dnssec=SEC), True),
        (TlsaAnswer(DnsStatus.NXDOMAIN, dnssec=SEC), False),
    ],
    ids=["unusable-only", "no-tlsa"],
)
def test_unusable_records_still_oblige_starttls(tlsa: TlsaAnswer, blocks: bool) -> None:
    facts = dane_domain(tlsa=tlsa, starttls_reply=454, tls=None, certificate=None)
    verdict = assess_domain(facts)
    assert (
        any(
            b.code == "dane-requires-starttls" and "oblige DANE senders to use STARTTLS" in b.text
            for b in verdict.blockers
        )
        is blocks
    )


def test_report_gives_dane_hosts_a_tlsa_policy_and_counts_them_there_only() -> None:
    report = report_of(dane_domain(check=checked(None)))
    policies = report["policies"]
    assert [p["policy"]["policy-type"] for p in policies] == ["sts", "tlsa"]
    sts, tlsa = policies
    assert sts["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 0}
    assert tlsa["policy"] == {
        "policy-type": "tlsa",
        "policy-string": ["3 1 1 " + EE.data.hex().upper()],
        "policy-domain": MX,
        "mx-host": [MX],
    }
    assert tlsa["summary"]["total-failure-session-count"] == 1
    assert [d["result-type"] for d in tlsa["failure-details"]] == ["tlsa-invalid"]
    assert "dane-required" not in str(report)


def test_pkix_failures_do_not_fail_a_dane_session() -> None:
    """DANE-EE ignores names and dates (RFC 7672 §3.1.1): an expired leaf passes under tlsa."""
    facts = dane_domain(check=checked(EE), certificate=None)
    expired = dataclasses.replace(
        facts.hosts[0].probes[0],
        certificate=dataclasses.replace(
            probe(MX, "192.0.2.1").certificate,  # type: ignore[arg-type]
            name_matches=False,
        ),
    )
    facts = dataclasses.replace(
        facts, hosts=(dataclasses.replace(facts.hosts[0], probes=(expired,)),)
    )
    verdict = assess_domain(facts)
    assert ResultType.CERTIFICATE_HOST_MISMATCH in verdict.mx[0].addresses[0].result_types
    tlsa = report_of(facts)["policies"][1]
    assert tlsa["summary"] == {
        "total-successful-session-count": 1,
        "total-failure-session-count": 0,
    }


def test_bogus_host_gets_a_tlsa_policy_without_policy_string() -> None:
    report = report_of(dane_domain(tlsa=TlsaAnswer(DnsStatus.SERVFAIL, dnssec=BOG)))
    tlsa = report["policies"][1]
    assert "policy-string" not in tlsa["policy"]
    assert [d["result-type"] for d in tlsa["failure-details"]] == ["dnssec-invalid"]


@pytest.mark.parametrize(
    "facts",
    [
        dane_domain(check=checked(EE)),
        dane_domain(check=checked(None)),
        dane_domain(tlsa=TlsaAnswer(DnsStatus.SERVFAIL, dnssec=BOG)),
        dane_domain(mx_dnssec=INS),
        domain_facts(),
    ],
    ids=["pass", "fail", "bogus", "insecure", "no-dane"],
)
def test_lines_with_dane_validate_against_the_schema(facts) -> None:  # type: ignore[no-untyped-def]
    result = DomainResult(
        facts.domain, SCANNED, WINDOW[1], facts=facts, verdict=assess_domain(facts)
    )
    line = result_line(result, OPTIONS)
    line_validator().validate(line)
    host_line = line["mx"][0]  # type: ignore[index]
    if facts.hosts[0].dane is None:
        assert host_line["dane"] is None
    else:
        assert host_line["dane"]["base_domain"] == MX
        assert host_line["addresses"][0]["dane"]["status"] in {s.value for s in DaneStatus}


# ---------------------------------------------------------------- robustness and views


@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=200),
)
def test_any_tlsa_record_is_classified_without_raising(
    usage: int, selector: int, matching: int, data: bytes
) -> None:
    sorted_set = classify([TlsaRecord(usage, selector, matching, data)])
    assert len(sorted_set.usable) + len(sorted_set.pkix) + len(sorted_set.skipped) == 1


def test_check_says_once_that_an_unvalidating_resolver_checked_no_dane() -> None:
    unvalidated = HostDane(MX, UNV)
    facts = dataclasses.replace(
        domain_facts(),
        hosts=tuple(dataclasses.replace(h, dane=unvalidated) for h in domain_facts().hosts),
    )
    result = DomainResult(
        facts.domain, SCANNED, WINDOW[1], facts=facts, verdict=assess_domain(facts)
    )
    console = Console(width=200, record=True, color_system=None)
    render_check(console, result)
    text = console.export_text()
    assert text.count("DANE (RFC 7672)") == 1
    assert "not checked: the resolver does not validate DNSSEC" in text


def test_check_shows_hostile_dane_details_inertly() -> None:
    hostile = DaneCheck(MX, None, None, "\x1b[2J[red]boom[/red]\u202e")
    result_facts = dane_domain(check=hostile)
    result = DomainResult(
        result_facts.domain,
        SCANNED,
        WINDOW[1],
        facts=result_facts,
        verdict=assess_domain(result_facts),
    )
    console = Console(width=300, record=True, color_system=None)
    render_check(console, result)
    text = console.export_text()
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "[red]boom[/red]" in text
