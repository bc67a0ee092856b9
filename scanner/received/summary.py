"""What stored reports add up to: per policy domain, and per reporting organization.

Pure: typed stored reports in, typed summaries out. Counting rules:

- Sessions come from each policy's `summary` (RFC 8460 §4.4): successful plus
  failed. Only the policies of the domain asked about count.
- Breakdowns of failures (by result type, failure-reason-code, receiving MX and
  IP, sending IP) come from `failure-details`. They need not add up to the
  summary: one session may fail in several ways (§4.3), and senders may leave
  details out. A policy whose summary disagrees with its details is counted in
  `summary_disagreements`.
- A report's day is the UTC day its date-range starts (§4.1 asks for UTC days).
- Reporters are grouped under who vouches for them (`records.reporter_group`: the
  verified DKIM signer, else the voucher and the claimed name), the claimed
  `organization-name`s shown beside (`records.shown_reporter`).
- Policies that name no policy-domain are summed under `UNKNOWN_POLICY_DOMAIN`.
- RFC 8460 §4.4 gives `sending-mta-ip` only inside failure details: there is no
  per-sending-IP count of successful sessions, so per-IP figures are failures.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Final

from scanner.received.records import (
    StoredReport,
    is_verified_group,
    reporter_group,
    shown_reporter,
)
from scanner.received.report import normalise_domain


@dataclass(frozen=True, slots=True)
class SessionCounts:
    successful: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.successful + self.failed

    @property
    def failure_rate(self) -> float | None:
        """Failed / total, or None when no session was counted."""
        return self.failed / self.total if self.total else None

    def __add__(self, other: SessionCounts) -> SessionCounts:
        return SessionCounts(self.successful + other.successful, self.failed + other.failed)


@dataclass(frozen=True, slots=True)
class ReasonCount:
    result_type: str
    failure_reason_code: str | None
    failed_sessions: int


@dataclass(frozen=True, slots=True)
class ReceivingCount:
    receiving_mx_hostname: str | None
    receiving_ip: str | None
    failed_sessions: int
    result_types: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class OrganizationCount:
    organization: str
    reports: int
    sessions: SessionCounts
    verified: bool = False  # grouped under a verified DKIM signer


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date
    reports: int
    sessions: SessionCounts
    failures_by_result_type: tuple[tuple[str, int], ...] = ()  # from the failure details


# How views show UNKNOWN_POLICY_DOMAIN: the policies that named no policy-domain.
UNKNOWN_DOMAIN_SHOWN = "(policies without policy-domain)"


def shown_domain(policy_domain: str) -> str:
    return policy_domain or UNKNOWN_DOMAIN_SHOWN


@dataclass(frozen=True, slots=True)
class DomainSummary:
    policy_domain: str
    reports: int
    sessions: SessionCounts
    failures_by_result_type: tuple[tuple[str, int], ...]
    failures_by_reason_code: tuple[ReasonCount, ...]
    failures_by_receiving: tuple[ReceivingCount, ...]
    by_policy_type: tuple[tuple[str, SessionCounts], ...]
    days: tuple[DayCount, ...]
    organizations: tuple[OrganizationCount, ...]
    authenticity: tuple[tuple[str, int], ...]  # status → reports
    summary_disagreements: int
    conflicting_reports: int
    unverified_sessions: int = 0  # in reports that are not DKIM-verified
    conflicting_sessions: int = 0  # in reports that arrived in conflicting copies
    doubtful_sessions: int = 0  # in reports that are either (each counted once)

    @property
    def doubtful_share(self) -> float | None:
        """The share of sessions from unverified or conflicting reports, None without sessions."""
        return self.doubtful_sessions / self.sessions.total if self.sessions.total else None

    @property
    def worst_result_type(self) -> tuple[str, int] | None:
        """The result type with the most failed sessions, or None without failure details."""
        return self.failures_by_result_type[0] if self.failures_by_result_type else None

    @property
    def shown_domain(self) -> str:
        """The policy domain as views show it (UNKNOWN_POLICY_DOMAIN named, not blank)."""
        return shown_domain(self.policy_domain)


def _ranked(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
    """Most first, then by name: a stable order for views and JSON."""
    return tuple(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


@dataclass(slots=True)
class _DomainTally:
    report_keys: set[tuple[str, str]] = field(default_factory=set)
    sessions: SessionCounts = SessionCounts()
    result_types: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    receiving: Counter[tuple[str | None, str | None]] = field(default_factory=Counter)
    receiving_types: defaultdict[tuple[str | None, str | None], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    policy_types: defaultdict[str, SessionCounts] = field(
        default_factory=lambda: defaultdict(SessionCounts)
    )
    days: defaultdict[date, SessionCounts] = field(
        default_factory=lambda: defaultdict(SessionCounts)
    )
    day_reports: defaultdict[date, set[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(set)
    )
    day_types: defaultdict[date, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    organizations: defaultdict[str, SessionCounts] = field(
        default_factory=lambda: defaultdict(SessionCounts)
    )
    organization_reports: defaultdict[str, set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )
    organization_names: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    authenticity: Counter[str] = field(default_factory=Counter)
    disagreements: int = 0
    conflicting: int = 0
    unverified_sessions: int = 0
    conflicting_sessions: int = 0
    doubtful_sessions: int = 0


def summarise_domains(
    reports: Iterable[StoredReport], domain: str | None = None
) -> tuple[DomainSummary, ...]:
    """One summary per policy domain (only `domain` when given), by domain name."""
    wanted = normalise_domain(domain) if domain is not None else None
    tallies: dict[str, _DomainTally] = {}
    for stored in reports:
        report = stored.report
        seen_domains: set[str] = set()
        for entry in report.policies:
            name = entry.policy.policy_domain
            if wanted is not None and name != wanted:
                continue
            tally = tallies.setdefault(name, _DomainTally())
            counts = SessionCounts(entry.successful_sessions, entry.failed_sessions)
            tally.report_keys.add(stored.key)
            tally.sessions += counts
            tally.policy_types[entry.policy.policy_type] += counts
            tally.days[report.date_range.day] += counts
            tally.day_reports[report.date_range.day].add(stored.key)
            group = reporter_group(stored)
            tally.organizations[group] += counts
            tally.organization_reports[group].add(report.report_id)
            tally.organization_names[group].add(report.organization_name)
            if entry.summary_disagrees:
                tally.disagreements += 1
            if not stored.verified:
                tally.unverified_sessions += counts.total
            if stored.conflicting_copies:
                tally.conflicting_sessions += counts.total
            if not stored.verified or stored.conflicting_copies:
                tally.doubtful_sessions += counts.total
            for detail in entry.failure_details:
                count = detail.failed_session_count
                tally.result_types[detail.result_type] += count
                tally.day_types[report.date_range.day][detail.result_type] += count
                tally.reasons[(detail.result_type, detail.failure_reason_code)] += count
                where = (detail.receiving_mx_hostname, detail.receiving_ip)
                if where != (None, None):
                    tally.receiving[where] += count
                    tally.receiving_types[where][detail.result_type] += count
            if name not in seen_domains:
                seen_domains.add(name)
                tally.authenticity[stored.authenticity.status.value] += 1
                if stored.conflicting_copies:
                    tally.conflicting += 1
    return tuple(_domain_summary(name, tallies[name]) for name in sorted(tallies))


def _domain_summary(name: str, tally: _DomainTally) -> DomainSummary:
    return DomainSummary(
        policy_domain=name,
        reports=len(tally.report_keys),
        sessions=tally.sessions,
        failures_by_result_type=_ranked(tally.result_types),
        failures_by_reason_code=tuple(
            ReasonCount(result_type, code, count)
            for (result_type, code), count in sorted(
                tally.reasons.items(), key=lambda item: (-item[1], item[0][0], item[0][1] or "")
            )
        ),
        failures_by_receiving=tuple(
            ReceivingCount(mx, ip, count, _ranked(tally.receiving_types[(mx, ip)]))
            for (mx, ip), count in sorted(
                tally.receiving.items(),
                key=lambda item: (-item[1], item[0][0] or "", item[0][1] or ""),
            )
        ),
        by_policy_type=tuple(sorted(tally.policy_types.items())),
        days=tuple(
            DayCount(day, len(tally.day_reports[day]), counts, _ranked(tally.day_types[day]))
            for day, counts in sorted(tally.days.items())
        ),
        organizations=tuple(
            OrganizationCount(
                shown_reporter(group, tally.organization_names[group]),
                len(tally.organization_reports[group]),
                counts,
                verified=is_verified_group(group),
            )
            for group, counts in sorted(
                tally.organizations.items(), key=lambda item: (-item[1].total, item[0])
            )
        ),
        authenticity=_ranked(tally.authenticity),
        summary_disagreements=tally.disagreements,
        conflicting_reports=tally.conflicting,
        unverified_sessions=tally.unverified_sessions,
        conflicting_sessions=tally.conflicting_sessions,
        doubtful_sessions=tally.doubtful_sessions,
    )


# ---------------------------------------------------------------- period and trend


@dataclass(frozen=True, slots=True)
class Period:
    """The UTC days a view covers, both inclusive."""

    first: date
    last: date

    @property
    def days(self) -> tuple[date, ...]:
        return tuple(
            self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)
        )

    def without_reports(self, counted: Iterable[DayCount]) -> tuple[date, ...]:
        """The days of the period on which no report starts."""
        seen = {day.day for day in counted}
        return tuple(day for day in self.days if day not in seen)


def report_period(
    summaries: Iterable[DomainSummary], since: date | None, until: date | None
) -> Period | None:
    """`since` to `until`, each end defaulting to the first or last day reported; None when
    there is no day at all."""
    days = [day.day for summary in summaries for day in summary.days]
    first = since if since is not None else min(days, default=None)
    last = until if until is not None else max(days, default=None)
    if first is None or last is None or last < first:
        return None
    return Period(first, last)


class TrendDirection(StrEnum):
    RISING = "rising"
    FALLING = "falling"
    STEADY = "steady"
    UNKNOWN = "unknown"  # a half of the period without sessions


# Failure rates of the two halves closer than this (0.1 percentage points, the readiness
# default of --max-failure-rate) are steady.
STEADY_MARGIN: Final = 0.001


@dataclass(frozen=True, slots=True)
class Trend:
    """The failure rate of the earlier half of a period against the later half."""

    earlier: SessionCounts
    later: SessionCounts

    @property
    def direction(self) -> TrendDirection:
        before, after = self.earlier.failure_rate, self.later.failure_rate
        if before is None or after is None:
            return TrendDirection.UNKNOWN
        if after - before > STEADY_MARGIN:
            return TrendDirection.RISING
        if before - after > STEADY_MARGIN:
            return TrendDirection.FALLING
        return TrendDirection.STEADY


def failure_trend(days: Iterable[DayCount], period: Period) -> Trend:
    """The sessions of the days in the earlier half of `period` against the later half
    (the middle day of an odd period counts with the later half)."""
    middle = period.first + timedelta(days=len(period.days) // 2)
    earlier = later = SessionCounts()
    for day in days:
        if not period.first <= day.day <= period.last:
            continue
        if day.day < middle:
            earlier += day.sessions
        else:
            later += day.sessions
    return Trend(earlier, later)


# ---------------------------------------------------------------- sources


@dataclass(frozen=True, slots=True)
class OrganizationSource:
    organization: str
    reports: int
    sessions: SessionCounts
    first_report: datetime  # earliest start-datetime
    last_report: datetime  # latest end-datetime
    submitters: tuple[str, ...]  # reporting domains of the emails (TLS-Report-Submitter or From)
    authenticity: tuple[tuple[str, int], ...]
    policy_domains: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SendingIpFailures:
    sending_mta_ip: str
    failed_sessions: int
    result_types: tuple[tuple[str, int], ...]
    organizations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SourcesSummary:
    organizations: tuple[OrganizationSource, ...]
    sending_ips: tuple[SendingIpFailures, ...]
    failures_without_sending_ip: int  # detail counts that name no sending address


@dataclass(slots=True)
class _OrganizationTally:
    report_ids: set[str] = field(default_factory=set)
    sessions: SessionCounts = SessionCounts()
    first: datetime | None = None
    last: datetime | None = None
    submitters: set[str] = field(default_factory=set)
    authenticity: Counter[str] = field(default_factory=Counter)
    domains: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)


def summarise_sources(reports: Iterable[StoredReport], domain: str | None = None) -> SourcesSummary:
    """Per reporting organization and per sending-MTA IP (failures only; see the module doc)."""
    wanted = normalise_domain(domain) if domain is not None else None
    organizations: dict[str, _OrganizationTally] = {}
    ip_failures: Counter[str] = Counter()
    ip_types: defaultdict[str, Counter[str]] = defaultdict(Counter)
    ip_organizations: defaultdict[str, set[str]] = defaultdict(set)
    without_ip = 0
    for stored in reports:
        report = stored.report
        entries = [
            entry
            for entry in report.policies
            if wanted is None or entry.policy.policy_domain == wanted
        ]
        if wanted is not None and not entries:
            continue
        group = reporter_group(stored)
        tally = organizations.setdefault(group, _OrganizationTally())
        tally.names.add(report.organization_name)
        if report.report_id not in tally.report_ids:
            tally.report_ids.add(report.report_id)
            tally.authenticity[stored.authenticity.status.value] += 1
        start, end = report.date_range.start, report.date_range.end
        tally.first = start if tally.first is None else min(tally.first, start)
        tally.last = end if tally.last is None else max(tally.last, end)
        if stored.submitter:
            tally.submitters.add(stored.submitter)
        for entry in entries:
            tally.sessions += SessionCounts(entry.successful_sessions, entry.failed_sessions)
            tally.domains.add(entry.policy.policy_domain)
            for detail in entry.failure_details:
                if detail.sending_mta_ip is None:
                    without_ip += detail.failed_session_count
                    continue
                ip_failures[detail.sending_mta_ip] += detail.failed_session_count
                ip_types[detail.sending_mta_ip][detail.result_type] += detail.failed_session_count
                ip_organizations[detail.sending_mta_ip].add(group)
    sources = tuple(
        OrganizationSource(
            organization=shown_reporter(name, tally.names),
            reports=len(tally.report_ids),
            sessions=tally.sessions,
            first_report=tally.first,
            last_report=tally.last,
            submitters=tuple(sorted(tally.submitters)),
            authenticity=_ranked(tally.authenticity),
            policy_domains=tuple(sorted(tally.domains)),
        )
        for name, tally in sorted(
            organizations.items(), key=lambda item: (-item[1].sessions.total, item[0])
        )
        if tally.first is not None and tally.last is not None
    )
    sending = tuple(
        SendingIpFailures(
            ip,
            count,
            _ranked(ip_types[ip]),
            tuple(
                sorted(
                    shown_reporter(group, organizations[group].names)
                    for group in ip_organizations[ip]
                )
            ),
        )
        for ip, count in _ranked(ip_failures)
    )
    return SourcesSummary(sources, sending, without_ip)
