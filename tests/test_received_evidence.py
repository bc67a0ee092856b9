"""Readiness evidence from received reports, and the summaries behind `tlsrpt summary` and `sources`."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from test_received_builders import POLICY_DOMAIN, clean_report, report_dict

from scanner.received.authenticity import NOT_EMAIL, Authenticity, AuthMethod, AuthStatus
from scanner.received.evidence import normalise_destination, received_evidence
from scanner.received.output import domain_summary_json, sources_document
from scanner.received.records import ReceivedReports, StoredReport
from scanner.received.report import ParsedReport, parse_report_value
from scanner.received.summary import summarise_domains, summarise_sources

NOW = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
PASS = Authenticity(AuthStatus.PASS, AuthMethod.DKIM, "ok", "reporter.example")
RUA = ("mailto:tlsrpt@company-y.example",)


def stored(
    report: dict[str, Any],
    *,
    verified: bool = True,
    destinations: frozenset[str] = frozenset(RUA),
    conflicts: int = 0,
) -> StoredReport:
    outcome = parse_report_value(report)
    assert isinstance(outcome, ParsedReport)
    signer = signer_of(outcome.report.organization_name)
    return StoredReport(
        report=outcome.report,
        content_hash=outcome.content_hash,
        authenticity=Authenticity(AuthStatus.PASS, AuthMethod.DKIM, "ok", signer)
        if verified
        else NOT_EMAIL,
        submitter=signer,
        origin="test",
        imported_at=NOW,
        destinations=destinations,
        notes=outcome.notes,
        conflicting_copies=conflicts,
    )


def signer_of(organization: str) -> str:
    """Each organization of these tests signs with its own domain."""
    return "".join(c if c.isalnum() else "-" for c in organization.lower()) + ".example"


def detail(
    result_type: str,
    count: int,
    mx: str | None = "mx1.company-y.example",
    ip: str | None = "192.0.2.7",
) -> dict[str, Any]:
    entry: dict[str, Any] = {"result-type": result_type, "failed-session-count": count}
    if mx:
        entry["receiving-mx-hostname"] = mx
    if ip:
        entry["sending-mta-ip"] = ip
    return entry


def failing(
    org: str, rid: str, day: str, successful: int, failures: list[dict[str, Any]]
) -> dict[str, Any]:
    return report_dict(
        organization=org,
        report_id=rid,
        day=day,
        successful=successful,
        failed=sum(d["failed-session-count"] for d in failures),
        details=failures,
    )


def evidence(reports: list[StoredReport], **kwargs: Any) -> Any:
    return received_evidence(reports, POLICY_DOMAIN, NOW, **kwargs)


def test_clean_reports_are_ready() -> None:
    reports = [
        stored(clean_report(organization=org, report_id=org, day="2026-04-10", successful=5000))
        for org in ("Google", "Microsoft")
    ]
    result = evidence(reports, rua=RUA)
    assert result.ready
    assert result.blockers == ()
    assert result.warnings == ()
    assert (
        result.reports,
        result.successful_sessions,
        result.failed_sessions,
        result.failure_rate,
    ) == (2, 10000, 0, 0.0)
    assert [o.organization for o in result.organizations] == [
        'google.example ("Google")',
        'microsoft.example ("Microsoft")',
    ]


def test_one_large_reporter_above_the_rate_blocks() -> None:
    reports = [
        stored(failing("Big Mail", "b1", "2026-04-10", 9_000, [detail("certificate-expired", 20)])),
        stored(
            clean_report(organization="Other", report_id="o1", day="2026-04-10", successful=100_000)
        ),
    ]
    result = evidence(reports)
    (problem,) = result.blockers
    assert problem.code == "reported-failure-rate"
    blocker = problem.text
    assert blocker.startswith(
        'TLS-RPT: big-mail.example ("Big Mail") reported 20 failed of 9020 sessions'
    )
    assert "certificate-expired 20" in blocker
    assert "receiving MX mx1.company-y.example" in blocker
    assert result.failure_rate == pytest.approx(
        20 / 109_020
    )  # pooled: below 0.1%, no second blocker


def test_a_small_reporter_alone_does_not_block_but_is_named() -> None:
    reports = [
        stored(
            failing(
                "Tiny",
                "t1",
                "2026-04-10",
                10,
                [detail("starttls-not-supported", 5, mx="mx2.company-y.example")],
            )
        ),
        stored(
            clean_report(organization="Big", report_id="b1", day="2026-04-10", successful=100_000)
        ),
    ]
    result = evidence(reports)
    assert result.ready
    (problem,) = result.warnings
    assert problem.code == "reported-failures"
    warning = problem.text
    assert "5 failed of 100015 sessions" in warning
    assert 'tiny.example ("Tiny") (5)' in warning
    assert "mx2.company-y.example" in warning


def test_failures_spread_thin_block_through_the_pooled_rate() -> None:
    reports = [
        stored(
            failing(
                f"Org{n}",
                f"r{n}",
                "2026-04-10",
                50,
                [detail("validation-failure", 1, mx=f"mx{n}.company-y.example")],
            )
        )
        for n in range(5)
    ]
    result = evidence(reports)  # each org has 51 sessions: below min_sessions
    (problem,) = result.blockers
    assert problem.code == "reported-failure-rate"
    blocker = problem.text
    assert "5 failed of 255 sessions" in blocker
    assert "all reporters together" in blocker
    assert 'org0.example ("Org0") (1), org1.example ("Org1") (1)' in blocker
    assert "mx0.company-y.example" in blocker


def test_rates_at_the_threshold_do_not_block() -> None:
    reports = [stored(failing("Org", "r", "2026-04-10", 999, [detail("validation-failure", 1)]))]
    assert evidence(reports).ready  # exactly 0.1%
    reports = [stored(failing("Org", "r", "2026-04-10", 998, [detail("validation-failure", 1)]))]
    assert not evidence(reports).ready  # just above: the twin


@pytest.mark.parametrize(
    ("days", "blocks"), [(["2026-04-10"], False), (["2026-04-10", "2026-04-12"], True)]
)
def test_policy_failures_on_two_days_block(days: list[str], blocks: bool) -> None:
    reports = [
        stored(
            failing(
                "Google",
                f"g{day}",
                day,
                1_000_000,
                [detail("sts-policy-fetch-error", 1, mx=None, ip=None)],
            )
        )
        for day in days
    ]
    result = evidence(reports)
    assert result.policy_failure_days == tuple(date.fromisoformat(day) for day in days)
    sentences = result.blockers if blocks else result.warnings
    assert any(
        s.code == "reported-policy-failures"
        and f"MTA-STS policy failures for company-y.example reported on {len(days)} day" in s.text
        and f"sts-policy-fetch-error {len(days)}" in s.text
        and 'reporters google.example ("Google")' in s.text
        for s in sentences
    )
    assert result.ready is not blocks


def test_webpki_failures_count_as_policy_failures() -> None:
    reports = [
        stored(
            failing("Google", f"g{day}", day, 1_000_000, [detail("sts-webpki-invalid", 1, mx=None)])
        )
        for day in ("2026-04-09", "2026-04-10")
    ]
    assert any("sts-webpki-invalid" in blocker.text for blocker in evidence(reports).blockers)


def test_reports_outside_the_window_do_not_count() -> None:
    old = stored(failing("Org", "old", "2026-03-01", 10, [detail("certificate-expired", 10)]))
    edge = stored(
        failing("Org", "edge", "2026-04-01", 10, [detail("certificate-expired", 10)])
    )  # ends 04-01 23:59:59 ≥ 04-01 12:00
    assert evidence([old]).reports == 0
    assert evidence([edge]).reports == 1
    assert evidence([edge], report_days=7).reports == 0


def test_unverified_reports_count_only_when_asked() -> None:
    reports = [
        stored(
            failing("Org", "r", "2026-04-10", 100, [detail("certificate-expired", 10)]),
            verified=False,
        )
    ]
    left_out = evidence(reports)
    assert left_out.ready
    assert left_out.unverified_reports == 1
    assert any(
        w.code == "reports-unverified"
        and "1 report for company-y.example in the last 14 days not DKIM-verified" in w.text
        for w in left_out.warnings
    )
    counted = evidence(reports, include_unverified=True)
    assert not counted.ready
    assert counted.unverified_reports == 0


def test_rua_received_here_but_no_report_warns() -> None:
    old = stored(clean_report(report_id="old", day="2026-01-01"))
    result = received_evidence(
        ReceivedReports(POLICY_DOMAIN, (old,), frozenset(RUA)),
        POLICY_DOMAIN,
        NOW,
        rua=["MAILTO:TLSRPT@Company-Y.example"],
    )
    assert any(
        "no report for company-y.example arrived in the last 14 days, though its rua names mailto:tlsrpt@company-y.example"
        in w.text
        for w in result.warnings
    )
    elsewhere = received_evidence(
        ReceivedReports(POLICY_DOMAIN, (), frozenset(RUA)),
        POLICY_DOMAIN,
        NOW,
        rua=["https://reports.example/tlsrpt"],
    )
    assert any(
        w.code == "reports-destination" and "receives none of the rua destinations" in w.text
        for w in elsewhere.warnings
    )
    quiet = received_evidence(
        ReceivedReports(POLICY_DOMAIN, (), frozenset(RUA)), POLICY_DOMAIN, NOW
    )
    assert not any(
        "rua" in w.text for w in quiet.warnings
    )  # without rua, nothing to say about destinations


def test_too_little_traffic_is_said() -> None:
    result = evidence([stored(clean_report(day="2026-04-10", successful=20))])
    assert any(
        w.code == "reports-few-sessions" and "only 20 sessions" in w.text for w in result.warnings
    )
    assert any(w.code == "reports-none" and "no sessions" in w.text for w in evidence([]).warnings)


def test_conflicting_copies_are_warned_about() -> None:
    result = evidence([stored(clean_report(day="2026-04-10", successful=5000), conflicts=1)])
    assert any(
        w.code == "reports-conflicting" and "conflicting copies" in w.text for w in result.warnings
    )


def test_stranger_text_in_sentences_has_no_control_characters() -> None:
    reports = [
        stored(
            failing(
                "\x1b[31mEvil\u202e",
                "r",
                "2026-04-10",
                100,
                [detail("x\x07", 50, mx="mx\x1b.example")],
            )
        )
    ]
    result = evidence(reports)
    text = " ".join(problem.text for problem in result.blockers + result.warnings)
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "\x07" not in text
    assert "\\x1b[31mEvil\\u202e" in text


def test_destination_normalisation() -> None:
    assert (
        normalise_destination(" MAILTO:Reports@Example.COM?subject=x ")
        == "mailto:reports@example.com"
    )
    assert normalise_destination("HTTPS://Reports.Example/Path") == "https://reports.example/Path"


# ---------------------------------------------------------------- summaries


def test_domain_summary_numbers() -> None:
    reports = [
        stored(report_dict(organization="Google", report_id="g1", day="2026-04-10")),
        stored(
            failing(
                "Microsoft",
                "m1",
                "2026-04-11",
                700,
                [
                    detail("certificate-expired", 7),
                    detail("sts-policy-fetch-error", 2, mx=None, ip=None),
                ],
            )
        ),
        stored(
            clean_report(
                organization="Google", report_id="x", domain="other.example", day="2026-04-10"
            )
        ),
    ]
    (summary,) = summarise_domains(reports, "company-y.example")
    document = domain_summary_json(summary)
    assert {
        key: document[key]
        for key in ("policy_domain", "reports", "successful_sessions", "failed_sessions")
    } == {
        "policy_domain": "company-y.example",
        "reports": 2,
        "successful_sessions": 6026,
        "failed_sessions": 312,
    }
    assert document["failures_by_result_type"] == {
        "starttls-not-supported": 200,
        "certificate-expired": 107,
        "validation-failure": 3,
        "sts-policy-fetch-error": 2,
    }
    assert document["organizations"] == [
        {
            "organization": 'google.example ("Google")',
            "reports": 1,
            "successful_sessions": 5326,
            "failed_sessions": 303,
            "failure_rate": 303 / 5629,
        },
        {
            "organization": 'microsoft.example ("Microsoft")',
            "reports": 1,
            "successful_sessions": 700,
            "failed_sessions": 9,
            "failure_rate": 9 / 709,
        },
    ]
    assert [day["day"] for day in document["days"]] == ["2026-04-10", "2026-04-11"]
    assert document["policy_types"] == {
        "sts": {"successful_sessions": 6026, "failed_sessions": 312, "failure_rate": 312 / 6338}
    }
    assert document["failures_by_receiving_mx"][0] == {
        "receiving_mx_hostname": "mx2.mail.company-y.example",
        "receiving_ip": "203.0.113.56",
        "failed_sessions": 200,
        "failures_by_result_type": {"starttls-not-supported": 200},
    }
    assert {
        "result_type": "validation-failure",
        "failure_reason_code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
        "failed_sessions": 3,
    } in document["failures_by_reason_code"]
    assert len(summarise_domains(reports)) == 2


def test_summary_counts_disagreements() -> None:
    report = report_dict()
    report["policies"][0]["summary"]["total-failure-session-count"] = 1
    (summary,) = summarise_domains([stored(report)])
    assert summary.summary_disagreements == 1
    assert summary.sessions.failed == 1


def test_sources_per_organization_and_sending_ip() -> None:
    reports = [
        stored(report_dict(organization="Google", report_id="g1", day="2026-04-10")),
        stored(report_dict(organization="Google", report_id="g2", day="2026-04-11")),
        stored(
            failing(
                "Microsoft",
                "m1",
                "2026-04-11",
                700,
                [
                    detail("certificate-expired", 7, ip="198.51.100.62"),
                    detail("sts-policy-invalid", 2, ip=None),
                ],
            )
        ),
    ]
    sources = summarise_sources(reports)
    google, microsoft = sources.organizations
    assert (google.organization, google.reports, google.sessions.total, google.sessions.failed) == (
        'google.example ("Google")',
        2,
        11258,
        606,
    )
    assert google.first_report == datetime(2026, 4, 10, tzinfo=UTC)
    assert google.last_report == datetime(2026, 4, 11, 23, 59, 59, tzinfo=UTC)
    assert microsoft.submitters == ("microsoft.example",)
    by_ip = {item.sending_mta_ip: item for item in sources.sending_ips}
    assert by_ip["198.51.100.62"].failed_sessions == 6 + 7
    assert by_ip["198.51.100.62"].organizations == (
        'google.example ("Google")',
        'microsoft.example ("Microsoft")',
    )
    assert sources.failures_without_sending_ip == 2
    document = sources_document(sources, database="db", domain=None, verified_only=False)
    assert "only in failure-details" in str(document["sending_ip_note"])
    assert document["organizations"][0]["first_report"] == "2026-04-10T00:00:00Z"  # type: ignore[index]
