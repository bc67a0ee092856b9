"""From TXT answers to records, and the standby hosts a policy names."""

from __future__ import annotations

import pytest

from scanner.core.discovery import policy_only_hosts, sts_record_from, tlsrpt_record_from
from scanner.models import DnsStatus, Policy, PolicyMode, TxtAnswer


@pytest.mark.parametrize(
    ("answer", "record_id", "reason_part"),
    [
        (TxtAnswer(DnsStatus.ANSWER, ("v=spf1 -all", "v=STSv1; id=abc")), "abc", None),
        (TxtAnswer(DnsStatus.ANSWER, ("v=spf1 -all",)), None, "no v=STSv1 record"),
        (TxtAnswer(DnsStatus.NXDOMAIN), None, "no _mta-sts TXT record (nxdomain)"),
        (TxtAnswer(DnsStatus.NODATA), None, "no _mta-sts TXT record (nodata)"),
        (TxtAnswer(DnsStatus.TIMEOUT, (), "no answer"), None, "lookup failed (timeout: no answer)"),
    ],
    ids=["one-record", "only-spf", "nxdomain", "nodata", "timeout"],
)
def test_sts_record_from(answer: TxtAnswer, record_id: str | None, reason_part: str | None) -> None:
    record, reason = sts_record_from(answer)
    if record_id is None:
        assert record is None
        assert reason is not None
        assert reason_part in reason
    else:
        assert record is not None
        assert record.id == record_id
        assert reason is None


@pytest.mark.parametrize(
    ("answer", "rua"),
    [
        (
            TxtAnswer(DnsStatus.ANSWER, ("v=TLSRPTv1; rua=mailto:r@example.com",)),
            ("mailto:r@example.com",),
        ),
        (TxtAnswer(DnsStatus.ANSWER, ("v=TLSRPTv1; rua=ftp://x.example",)), None),
        (TxtAnswer(DnsStatus.SERVFAIL, (), "SERVFAIL"), None),
    ],
    ids=["mailto", "bad-scheme", "servfail"],
)
def test_tlsrpt_record_from(answer: TxtAnswer, rua: tuple[str, ...] | None) -> None:
    record, reason = tlsrpt_record_from(answer)
    if rua is None:
        assert record is None
        assert reason
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
