"""The RFC 8460 report object (§4.4) and the report file name (§5.1)."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from builders import (
    OPTIONS,
    SCANNED,
    WINDOW,
    assess,
    bad_mx2,
    certificate,
    domain_facts,
    expired_mx2,
    failed_fetch,
    good_hosts,
    host,
    probe,
    untestable,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.core.tlsrpt import build_report, rfc3339_utc
from scanner.models import DomainFacts, MxHostFacts, MxSource, ProbeOutcome, ResultType
from scanner.report_files import report_filename

# RFC 8460 §4.4: the only keys a report may carry, per object.
REPORT_KEYS = {"organization-name", "date-range", "contact-info", "report-id", "policies"}
DATE_RANGE_KEYS = {"start-datetime", "end-datetime"}
POLICY_ENTRY_KEYS = {"policy", "summary", "failure-details"}
POLICY_KEYS = {"policy-type", "policy-string", "policy-domain", "mx-host"}
SUMMARY_KEYS = {"total-successful-session-count", "total-failure-session-count"}
DETAIL_KEYS = {
    "result-type",
    "sending-mta-ip",
    "receiving-mx-hostname",
    "receiving-mx-helo",
    "receiving-ip",
    "failed-session-count",
    "additional-information",
    "failure-reason-code",
}


def report_of(facts: DomainFacts) -> dict[str, object]:
    return build_report(
        facts,
        assess(facts),
        options=OPTIONS,
        window=WINDOW,
        report_id="20261128T040000Z.example.com",
    )


def policy_entry(report: dict[str, object]) -> dict[str, object]:
    policies = report["policies"]
    assert isinstance(policies, list)
    assert len(policies) == 1
    entry = policies[0]
    assert isinstance(entry, dict)
    return entry


def details_of(report: dict[str, object]) -> list[dict[str, object]]:
    details = policy_entry(report)["failure-details"]
    assert isinstance(details, list)
    return details


def assert_rfc8460_shape(report: dict[str, object]) -> None:
    """Keys spelled exactly, arrays always arrays, counts integers, timestamps in UTC with Z."""
    assert set(report) == REPORT_KEYS
    date_range = report["date-range"]
    assert isinstance(date_range, dict)
    assert set(date_range) == DATE_RANGE_KEYS
    assert all(isinstance(v, str) and v.endswith("Z") for v in date_range.values())
    entry = policy_entry(report)
    assert set(entry) <= POLICY_ENTRY_KEYS
    policy = entry["policy"]
    assert isinstance(policy, dict)
    assert set(policy) <= POLICY_KEYS
    assert {"policy-type", "policy-domain"} <= set(policy)
    for key in ("policy-string", "mx-host"):
        assert key not in policy or isinstance(policy[key], list)
    summary = entry["summary"]
    assert isinstance(summary, dict)
    assert set(summary) == SUMMARY_KEYS
    assert all(type(v) is int and v >= 0 for v in summary.values())
    for detail in details_of(report):
        assert set(detail) <= DETAIL_KEYS
        assert {"result-type", "failed-session-count"} <= set(detail)
        count = detail["failed-session-count"]
        assert type(count) is int
        assert count >= 1
        for key in ("sending-mta-ip", "receiving-ip"):
            if key in detail:
                ip = detail[key]
                assert isinstance(ip, str)
                assert ipaddress.ip_address(ip).compressed == ip
    json.dumps(report, allow_nan=False)  # I-JSON (RFC 7493): serialisable as is


def summary_of(report: dict[str, object]) -> tuple[object, object]:
    summary = policy_entry(report)["summary"]
    assert isinstance(summary, dict)
    return summary["total-successful-session-count"], summary["total-failure-session-count"]


# ---------------------------------------------------------------- shape and counts

SHAPE_CASES = [
    ("all-good", domain_facts(), (2, 0), []),
    ("bad-backup", domain_facts(good_hosts()[0], expired_mx2()), (1, 1),
     [("certificate-expired", "127.0.1.5", "X509_V_ERR_CERT_HAS_EXPIRED")]),
    ("no-starttls", domain_facts(good_hosts()[0], bad_mx2()), (1, 1),
     [("starttls-not-supported", "127.0.1.5", "starttls-missing")]),
    ("untestable-counts-in-neither", domain_facts(good_hosts()[0], host("mx2.example.com", untestable("mx2.example.com", "127.0.1.5", "timeout:connect"))), (1, 0), []),
    ("policy-only-counts-in-neither", domain_facts(*good_hosts(), host("standby.example.com", probe("standby.example.com", "127.0.1.9", certificate=certificate("standby.example.com", name_matches=False)), preference=None, source=MxSource.POLICY)), (2, 0), []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "counts", "details"),
    [c[1:] for c in SHAPE_CASES],
    ids=[c[0] for c in SHAPE_CASES],
)
def test_report_shape_and_counts(
    facts: DomainFacts, counts: tuple[int, int], details: list[tuple[str, str, str]]
) -> None:
    report = report_of(facts)
    assert_rfc8460_shape(report)
    assert summary_of(report) == counts
    found = [
        (d["result-type"], d.get("receiving-ip"), d.get("failure-reason-code"))
        for d in details_of(report)
    ]
    assert found == details


def test_report_header() -> None:
    report = report_of(domain_facts())
    assert report["organization-name"] == "Example Scanner"
    assert report["contact-info"] == "reports@scanner.example"
    assert report["report-id"] == "20261128T040000Z.example.com"
    assert report["date-range"] == {
        "start-datetime": "2026-11-28T04:00:00Z",
        "end-datetime": "2026-11-28T04:00:42Z",
    }


def test_sts_policy_object() -> None:
    policy = policy_entry(report_of(domain_facts()))["policy"]
    assert policy == {
        "policy-type": "sts",
        "policy-string": [
            "version: STSv1",
            "mode: testing",
            "mx: mx1.example.com",
            "mx: mx2.example.com",
            "max_age: 604800",
        ],
        "policy-domain": "example.com",
        "mx-host": ["mx1.example.com", "mx2.example.com"],
    }


def test_no_policy_found_object() -> None:
    report = report_of(domain_facts(record=None))
    assert_rfc8460_shape(report)
    assert policy_entry(report)["policy"] == {
        "policy-type": "no-policy-found",
        "policy-domain": "example.com",
    }
    assert details_of(report) == []


def test_one_session_in_several_failure_details() -> None:
    bad = probe(
        "mx2.example.com",
        "127.0.1.5",
        plaintext_injection=12,
        certificate=certificate("mx2.example.com", name_matches=False),
    )
    report = report_of(domain_facts(good_hosts()[0], host("mx2.example.com", bad)))
    assert summary_of(report) == (1, 1)
    assert [(d["result-type"], d["failure-reason-code"]) for d in details_of(report)] == [
        ("validation-failure", "plaintext-injection"),
        ("certificate-host-mismatch", "X509_V_ERR_HOSTNAME_MISMATCH"),
    ]
    assert all(d["failed-session-count"] == 1 for d in details_of(report))
    assert all(d["sending-mta-ip"] == "127.0.0.1" for d in details_of(report))
    assert all(d["receiving-mx-hostname"] == "mx2.example.com" for d in details_of(report))


@pytest.mark.parametrize(
    ("result_type", "text", "policy_string"),
    [
        (ResultType.STS_POLICY_FETCH_ERROR, None, None),
        (ResultType.STS_WEBPKI_INVALID, None, None),
        (
            ResultType.STS_POLICY_INVALID,
            "version: STSv1\r\nmode: strict\r\nmx: mx1.example.com\r\nmax_age: 86400\r\n",
            ["version: STSv1", "mode: strict", "mx: mx1.example.com", "max_age: 86400"],
        ),
    ],
    ids=["fetch-error", "webpki-invalid", "policy-invalid"],
)
def test_policy_level_failure(
    result_type: ResultType, text: str | None, policy_string: list[str] | None
) -> None:
    facts = domain_facts(fetch=failed_fetch(result_type, "what went wrong", text))
    report = report_of(facts)
    assert_rfc8460_shape(report)
    policy = policy_entry(report)["policy"]
    assert isinstance(policy, dict)
    assert policy["policy-type"] == "sts"
    assert policy.get("policy-string") == policy_string
    assert "mx-host" not in policy
    first = details_of(report)[0]
    assert first == {
        "result-type": result_type.value,
        "failed-session-count": 2,
        "failure-reason-code": "what went wrong",
    }
    # Sessions under a failed policy are failures, never successes.
    assert summary_of(report) == (0, 2)


def test_policy_level_failure_counts_at_least_one_session() -> None:
    only_untestable = host("mx1.example.com", untestable("mx1.example.com", "127.0.1.1", "timeout:connect"))  # fmt: skip
    facts = domain_facts(
        only_untestable, fetch=failed_fetch(ResultType.STS_POLICY_FETCH_ERROR, "timeout")
    )
    report = report_of(facts)
    # The summary agrees with the policy entry: one failed session (the fetch), no success.
    assert summary_of(report) == (0, 1)
    assert details_of(report)[0]["failed-session-count"] == 1


def test_ipv6_in_rfc5952_form() -> None:
    bad = probe(
        "mx2.example.com",
        "0:0:0:0:0:0:0:1",
        local_ip="0000:0000:0000:0000:0000:0000:0000:0001",
        starttls_reply=454,
        tls=None,
        certificate=None,
    )
    report = report_of(domain_facts(good_hosts()[0], host("mx2.example.com", bad)))
    (detail,) = details_of(report)
    assert (detail["sending-mta-ip"], detail["receiving-ip"]) == ("::1", "::1")


def test_unknown_local_address_is_left_out() -> None:
    bad = probe("mx2.example.com", "127.0.1.5", local_ip=None, starttls_reply=454, tls=None, certificate=None)  # fmt: skip
    report = report_of(domain_facts(good_hosts()[0], host("mx2.example.com", bad)))
    (detail,) = details_of(report)
    assert "sending-mta-ip" not in detail
    assert_rfc8460_shape(report)


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 11, 28, 4, 0, 0, 999999, tzinfo=UTC), "2026-11-28T04:00:00Z"),
        (datetime(2026, 11, 28, 5, 0, tzinfo=timezone(timedelta(hours=1))), "2026-11-28T04:00:00Z"),
        (datetime(2026, 11, 28, 4, 0), "2026-11-28T04:00:00Z"),
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05Z"),  # four digits
    ],
    ids=["utc", "offset-converted", "naive-is-utc", "year-999"],
)
def test_rfc3339_utc(moment: datetime, text: str) -> None:
    assert rfc3339_utc(moment) == text


@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC)))
def test_rfc3339_utc_is_strftime_s_for_four_digit_years(moment: datetime) -> None:
    assert rfc3339_utc(moment) == moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- counts agree with sessions

outcome_kinds = st.sampled_from(["good", "expired", "missing", "untestable", "mismatch"])


def outcome_of(kind: str, name: str, ip: str) -> ProbeOutcome:
    if kind == "untestable":
        return untestable(name, ip, "connect-refused")
    if kind == "missing":
        return probe(name, ip, starttls_advertised=False, starttls_reply=502, tls=None, certificate=None)  # fmt: skip
    if kind == "expired":
        return probe(name, ip, certificate=certificate(name, trusted=False, verify_error="X509_V_ERR_CERT_HAS_EXPIRED", not_after=SCANNED - timedelta(days=1)))  # fmt: skip
    if kind == "mismatch":
        return probe(name, ip, certificate=certificate(name, name_matches=False, san=("*.example.net",)))  # fmt: skip
    return probe(name, ip)


@settings(max_examples=100, deadline=None)
@given(kinds=st.lists(st.tuples(outcome_kinds, outcome_kinds), min_size=1, max_size=3))
def test_counts_agree_with_sessions(kinds: list[tuple[str, str]]) -> None:
    hosts: list[MxHostFacts] = []
    for index, (first, second) in enumerate(kinds, start=1):
        name = f"mx{index}.example.com"
        hosts.append(
            host(
                name,
                outcome_of(first, name, f"127.0.{index}.1"),
                outcome_of(second, name, f"::{index}"),
            )
        )
    facts = domain_facts(*hosts, record=None)
    verdict = assess(facts)
    report = build_report(facts, verdict, options=OPTIONS, window=WINDOW, report_id="r")
    assert_rfc8460_shape(report)
    all_kinds = [k for pair in kinds for k in pair]
    successes, failures = summary_of(report)
    assert successes == all_kinds.count("good")
    assert failures == len(all_kinds) - all_kinds.count("good") - all_kinds.count("untestable")
    per_session = sum(len(a.failures) for _, a in verdict.dns_addresses())
    assert sum(int(str(d["failed-session-count"])) for d in details_of(report)) == per_session


# ---------------------------------------------------------------- RFC 8460 §5.1 file name

BEGIN = datetime.fromtimestamp(1470013207, tz=UTC)
END = datetime.fromtimestamp(1470186007, tz=UTC)


@pytest.mark.parametrize(
    ("gzip", "unique_id", "expected"),
    [
        (True, "001", "mail.sndr.example.com!example.net!1470013207!1470186007!001.json.gz"),
        (False, None, "mail.sndr.example.com!example.net!1470013207!1470186007.json"),
    ],
    ids=["rfc-example", "plain-without-id"],
)
def test_report_filename(gzip: bool, unique_id: str | None, expected: str) -> None:
    name = report_filename(
        "mail.sndr.example.com", "example.net", BEGIN, END, gzip=gzip, unique_id=unique_id
    )
    assert name == expected


@pytest.mark.parametrize(
    ("submitter", "unique_id"),
    [("mail.sndr.example.com", "0-1"), ("mail.sndr.example.com", ""), ("a!b", None)],
    ids=["id-with-hyphen", "empty-id", "bang-in-name"],
)
def test_report_filename_rejects_bad_parts(submitter: str, unique_id: str | None) -> None:
    with pytest.raises(ValueError, match=r"unique-id|file name part"):
        report_filename(submitter, "example.net", BEGIN, END, gzip=True, unique_id=unique_id)


def _misspelt_detail(report: dict[str, object]) -> None:
    details_of(report)[0]["failure-error-code"] = "X509_V_ERR_CERT_HAS_EXPIRED"


def _mx_host_as_string(report: dict[str, object]) -> None:
    policy = policy_entry(report)["policy"]
    assert isinstance(policy, dict)
    policy["mx-host"] = "mx1.example.com"


def _local_time(report: dict[str, object]) -> None:
    report["date-range"] = {"start-datetime": "2026-11-28T04:00:00", "end-datetime": "x"}


def _ipv6_uncompressed(report: dict[str, object]) -> None:
    details_of(report)[0]["receiving-ip"] = "0:0:0:0:0:0:0:1"


@pytest.mark.parametrize(
    "corrupt",
    [_misspelt_detail, _mx_host_as_string, _local_time, _ipv6_uncompressed],
    ids=["failure-error-code", "mx-host-string", "no-z", "ipv6-uncompressed"],
)
def test_shape_check_rejects_deviations(corrupt: object) -> None:
    """The failing twins of `assert_rfc8460_shape`: known real-world deviations."""
    report = report_of(domain_facts(good_hosts()[0], expired_mx2()))
    assert_rfc8460_shape(report)
    assert callable(corrupt)
    corrupt(report)
    with pytest.raises(AssertionError):
        assert_rfc8460_shape(report)
