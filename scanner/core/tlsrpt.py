"""The RFC 8460 report object of one domain (RFC 8460 §4.4); file names are `scanner.report_files`.

This is a JSON edge: `build_report` returns plain dicts and lists with the exact RFC 8460
§4.4 keys and nothing else (strict parsers reject unknown keys). The scan stands in for
a day of sending: one probe of one (MX host, address) is one session, and `date-range`
is the scan window rather than a full UTC day (RFC 8460 §4.1 SHOULD).

Counting (docs/output.md#counting): only tested sessions of DNS-sourced MX hosts count. A session with
no result type is a success; one with any is a failure, and adds one to every
`failure-details` entry it belongs to (result types are not mutually exclusive, §4.3).
Not-testable addresses and policy-only hosts count in neither.

DANE (RFC 8460 §4.3.2.1, RFC 7672; docs/dane.md#report): an MX host that DANE senders
hold to its TLSA records (usable records under a secure MX RRset, or a bogus TLSA
lookup) gets a `tlsa` policy of its own, after the `sts` (or `no-policy-found`) one,
and its sessions count there, not under `sts`: a DANE sender applies DANE, not MTA-STS,
to such a host (RFC 8461 §2). Under `tlsa` only what fails DANE counts: STARTTLS, the
handshake, injection, `tlsa-invalid` and `dnssec-invalid`; the WebPKI checks, the TLS
1.2 floor and the `mx` patterns are MTA-STS's. `dane-required` is never written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from scanner.core.assess import (
    REASON_HANDSHAKE_FAILED,
    REASON_PLAINTEXT_INJECTION,
    AddressVerdict,
    DomainVerdict,
    MxVerdict,
    as_utc,
    canonical_ip,
)
from scanner.core.dane import tlsa_text
from scanner.models import (
    AddressStatus,
    DomainFacts,
    MxSource,
    PolicyFetch,
    ReportOptions,
    ResultType,
    SessionFailure,
)

POLICY_TYPE_STS = "sts"
POLICY_TYPE_TLSA = "tlsa"
POLICY_TYPE_NO_POLICY = "no-policy-found"

DANE_RESULT_TYPES = frozenset({ResultType.TLSA_INVALID, ResultType.DNSSEC_INVALID})


def fails_dane(failure: SessionFailure) -> bool:
    """Does this failure fail a DANE session (RFC 7672 §2.2, §3)? PKIX and MTA-STS rules do not."""
    if failure.result_type in DANE_RESULT_TYPES:
        return True
    if failure.result_type is ResultType.STARTTLS_NOT_SUPPORTED:
        return True
    return failure.result_type is ResultType.VALIDATION_FAILURE and failure.reason_code in (
        REASON_HANDSHAKE_FAILED,
        REASON_PLAINTEXT_INJECTION,
    )


def fails_sts(failure: SessionFailure) -> bool:
    """Does this failure count under the `sts` (or `no-policy-found`) policy?"""
    return failure.result_type not in DANE_RESULT_TYPES


def rfc3339_utc(moment: datetime) -> str:
    """RFC 3339 §5.6 date-time in UTC with a `Z`, whole seconds (naive input is taken as UTC).

    The year has four digits, as §5.6 requires (strftime's %Y writes 999, not 0999).
    """
    return as_utc(moment).isoformat(timespec="seconds")[:-6] + "Z"  # "+00:00" → "Z"


def policy_type(facts: DomainFacts) -> str:
    """RFC 8460 §4.4 `policy-type`: sts with a usable record, else no-policy-found."""
    return POLICY_TYPE_NO_POLICY if facts.sts_record is None else POLICY_TYPE_STS


def _policy_object(facts: DomainFacts) -> dict[str, object]:
    """`policies[0].policy`: sts with a usable record (policy lines when fetched), else
    no-policy-found. `policy-domain` is always present (some parsers need it)."""
    if policy_type(facts) == POLICY_TYPE_NO_POLICY:
        return {"policy-type": POLICY_TYPE_NO_POLICY, "policy-domain": facts.domain}
    policy_object: dict[str, object] = {"policy-type": POLICY_TYPE_STS}
    fetch = facts.policy_fetch
    lines = _policy_lines(fetch)
    if lines is not None:
        policy_object["policy-string"] = lines
    policy_object["policy-domain"] = facts.domain
    if fetch is not None and fetch.policy is not None:
        policy_object["mx-host"] = list(fetch.policy.mx)
    return policy_object


# RFC 8460 §4.5: the policy-string of sts is every line as served, erroneous ones included.
def _policy_lines(fetch: PolicyFetch | None) -> list[str] | None:
    if fetch is None:
        return None
    if fetch.policy is not None:
        return list(fetch.policy.lines)
    failure = fetch.failure
    if failure is not None and failure.result_type is ResultType.STS_POLICY_INVALID and fetch.text:
        return [line.rstrip("\r") for line in fetch.text.split("\n") if line.strip()]
    return None


def report_id(domain: str, started: datetime) -> str:
    """The report-id of a domain's scan: its start time and the domain, unique per run."""
    return f"{as_report_time(started)}.{domain}"


def as_report_time(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def build_report(
    facts: DomainFacts,
    verdict: DomainVerdict,
    *,
    options: ReportOptions,
    window: tuple[datetime, datetime],
    report_id: str,
) -> dict[str, object]:
    """The RFC 8460 §4.4 report of one domain, keys in the RFC's order.

    `policies` holds the domain's `sts` (or `no-policy-found`) entry, then one `tlsa`
    entry per MX host that DANE senders hold to TLSA, in MX order; each session counts
    in exactly one of them. `failure-details` is present (possibly empty) and has one
    entry per (result-type, sending-mta-ip, receiving-mx-hostname, receiving-ip,
    failure-reason-code), sorted by first appearance. A policy-level failure
    (`PolicyFetch.failure`) comes first in the `sts` entry, with no receiving address
    and a `failed-session-count` of the counted sessions it would have applied to (at
    least 1); those sessions then count as failures in the summary too, never as
    successes. `sending-mta-ip` is the probe's local address, omitted when unknown.
    """
    dane_hosts = [
        host
        for host in verdict.mx
        if host.dane is not None and host.dane.applies and host.source is MxSource.DNS
    ]
    sts_sessions = [
        (host, address) for host, address in verdict.dns_addresses() if host not in dane_hosts
    ]
    successes, failures, entries = _tally(sts_sessions, fails_sts)
    fetch = facts.policy_fetch
    if fetch is not None and fetch.failure is not None:
        # A policy that could not be fetched or validated fails every session it
        # applies to, so the summary counts them all as failures (at least one, the
        # fetch itself) and agrees with this entry's count.
        failures = max(1, successes + failures)
        successes = 0
        entries.insert(
            0,
            {
                "result-type": fetch.failure.result_type.value,
                "failed-session-count": failures,
                "failure-reason-code": fetch.failure.detail,
            },
        )
    policies: list[dict[str, object]] = [
        _policy_entry(_policy_object(facts), successes, failures, entries)
    ]
    for host in dane_hosts:
        sessions = [(host, address) for address in host.addresses]
        host_successes, host_failures, host_entries = _tally(sessions, fails_dane)
        policies.append(
            _policy_entry(_tlsa_policy_object(host), host_successes, host_failures, host_entries)
        )

    start, end = window
    return {
        "organization-name": options.organization_name,
        "date-range": {"start-datetime": rfc3339_utc(start), "end-datetime": rfc3339_utc(end)},
        "contact-info": options.contact_info,
        "report-id": report_id,
        "policies": policies,
    }


def _policy_entry(
    policy: dict[str, object], successes: int, failures: int, entries: list[dict[str, object]]
) -> dict[str, object]:
    return {
        "policy": policy,
        "summary": {
            "total-successful-session-count": successes,
            "total-failure-session-count": failures,
        },
        "failure-details": entries,
    }


# RFC 8460 §4.4 with RFC 7672: the TLSA base domain is the policy domain, the RRset
# (presentation form, one string per record) the policy string. A bogus TLSA lookup
# returned no records, so its entry has no policy-string.
def _tlsa_policy_object(host: MxVerdict) -> dict[str, object]:
    assert host.dane is not None
    facts = host.dane.facts
    policy: dict[str, object] = {"policy-type": POLICY_TYPE_TLSA}
    if facts.tlsa is not None and facts.tlsa.records:
        policy["policy-string"] = [tlsa_text(record) for record in facts.tlsa.records]
    policy["policy-domain"] = facts.base_domain
    policy["mx-host"] = [host.hostname]
    return policy


def _tally(
    sessions: Iterable[tuple[MxVerdict, AddressVerdict]],
    counts: Callable[[SessionFailure], bool],
) -> tuple[int, int, list[dict[str, object]]]:
    """(successes, failures, failure-details) of tested sessions, counting `counts` failures."""
    successes = 0
    failures = 0
    details: dict[tuple[str, str | None, str, str, str | None], int] = {}
    for host, address in sessions:
        if address.status is not AddressStatus.TESTED:
            continue
        counted = [failure for failure in dict.fromkeys(address.failures) if counts(failure)]
        if not counted:
            successes += 1
            continue
        failures += 1
        probe = address.probe
        local_ip = canonical_ip(probe.local_ip) if probe and probe.local_ip else None
        for failure in counted:
            key = (failure.result_type.value, local_ip, host.hostname, address.ip,
                   failure.reason_code)  # fmt: skip
            details[key] = details.get(key, 0) + 1
    entries: list[dict[str, object]] = []
    for (result_type, local_ip, mx_host, receiving_ip, reason), count in details.items():
        entry: dict[str, object] = {"result-type": result_type}
        if local_ip is not None:
            entry["sending-mta-ip"] = local_ip
        entry["receiving-mx-hostname"] = mx_host
        entry["receiving-ip"] = receiving_ip
        entry["failed-session-count"] = count
        if reason is not None:
            entry["failure-reason-code"] = reason
        entries.append(entry)
    return successes, failures, entries
