"""From TXT answers to records, and the standby hosts a policy names."""

from __future__ import annotations

import pytest

from scanner.core.discovery import policy_only_hosts, sts_record_from, tlsrpt_record_from
from scanner.models import DnsStatus, Policy, PolicyMode, TxtAnswer


@pytest.mark.parametrize(
    ("answer", "record_id", "code", "reason_part"),
    [
        (TxtAnswer(DnsStatus.ANSWER, ("v=spf1 -all", "v=STSv1; id=abc")), "abc", None, None),
        (TxtAnswer(DnsStatus.ANSWER, ("v=spf1 -all",)), None, "no-record", "no v=STSv1 record"),
        (TxtAnswer(DnsStatus.ANSWER, ("v=stsv1; id=abc",)), None, "near-miss", "case-sensitive"),
        (TxtAnswer(DnsStatus.ANSWER, ("v=STSv1; id=a", "v=STSv1; id=b")), None, "several-records", "2 v=STSv1 records"),
        (TxtAnswer(DnsStatus.ANSWER, ("v=STSv1; id=a-b",)), None, "invalid-id", "is invalid: id"),
        (TxtAnswer(DnsStatus.ANSWER, ("v=STSv1; ID=a",)), None, "missing-id", "has no id field"),
        (TxtAnswer(DnsStatus.NXDOMAIN), None, "no-record", "no _mta-sts TXT record (nxdomain)"),
        (TxtAnswer(DnsStatus.NODATA), None, "no-record", "no _mta-sts TXT record (nodata)"),
        (TxtAnswer(DnsStatus.TIMEOUT, (), "no answer"), None, "lookup-failed", "lookup failed (timeout: no answer)"),
    ],
    ids=["one-record", "only-spf", "near-miss", "several", "invalid-id", "missing-id", "nxdomain", "nodata", "timeout"],
)  # fmt: skip
def test_sts_record_from(
    answer: TxtAnswer, record_id: str | None, code: str | None, reason_part: str | None
) -> None:
    record, reason = sts_record_from(answer)
    if record_id is None:
        assert record is None
        assert reason is not None
        assert reason.code == code
        assert reason_part in reason.detail
    else:
        assert record is not None
        assert record.id == record_id
        assert reason is None


@pytest.mark.parametrize(
    ("answer", "rua", "code"),
    [
        (
            TxtAnswer(DnsStatus.ANSWER, ("v=TLSRPTv1; rua=mailto:r@example.com",)),
            ("mailto:r@example.com",),
            None,
        ),
        (TxtAnswer(DnsStatus.ANSWER, ("v=TLSRPTv1; rua=ftp://x.example",)), None, "invalid-record"),
        (TxtAnswer(DnsStatus.ANSWER, ("v=TLSRPTv1; ruA=mailto:r@x.example",)), None, "missing-rua"),
        (TxtAnswer(DnsStatus.SERVFAIL, (), "SERVFAIL"), None, "lookup-failed"),
    ],
    ids=["mailto", "bad-scheme", "missing-rua", "servfail"],
)
def test_tlsrpt_record_from(
    answer: TxtAnswer, rua: tuple[str, ...] | None, code: str | None
) -> None:
    record, reason = tlsrpt_record_from(answer)
    if rua is None:
        assert record is None
        assert reason is not None
        assert reason.code == code
        assert reason.detail
    else:
        assert record is not None
        assert record.rua == rua
        assert reason is None


def policy(*mx: str) -> Policy:
    return Policy("STSv1", PolicyMode.TESTING, 604800, mx, ())


@pytest.mark.parametrize(
    ("patterns", "mx_hosts", "standby"),
    [
        (("mx1.example.com", "backup.example.net"), ["mx1.example.com"], ["backup.example.net"]),
        (("mx1.example.com",), ["MX1.example.com."], []),
        (("*.example.com", "mx1.example.com"), [], ["mx1.example.com"]),
        (("b.example.com", "B.example.com"), [], ["b.example.com"]),
    ],
    ids=["standby", "already-an-mx", "wildcards-skipped", "deduplicated"],
)
def test_policy_only_hosts(
    patterns: tuple[str, ...], mx_hosts: list[str], standby: list[str]
) -> None:
    assert policy_only_hosts(policy(*patterns), mx_hosts) == standby
