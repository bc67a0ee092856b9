"""Readiness evidence from received reports: do senders see failures for a domain?

Before `mode: enforce`, RFC 8461 §5 (and every operator's guide) says: run
`testing` with TLS-RPT and read the reports. `received_evidence` turns the
reports of one domain into blockers and warnings with the numbers behind them.

Within the window (the `report_days` days up to `now`; a report counts when its
date-range overlaps it), counting only DKIM-verified reports and reports received
by `scanner tlsrpt serve` (which stores only its allowlisted policy domains, see
`authenticity.counts_for_readiness`) unless `include_unverified`:

- blocker: a reporting organization with at least `min_sessions` sessions whose
  failure rate is above `max_failure_rate` (one large sender sees failures);
- blocker: the pooled failure rate of all organizations above
  `max_failure_rate` (failures spread thin over many senders; no minimum of
  sessions: a failure is a failure);
- blocker: MTA-STS policy failures (`sts-policy-fetch-error`,
  `sts-policy-invalid`, `sts-webpki-invalid`; RFC 8460 §4.3.2.2) on two or more
  UTC days (one day may be a blip; two is a pattern).

Each blocker names the result types, the reporters and the receiving MX hosts.
Warnings: too few sessions to judge, failures below the thresholds, policy
failures on one day, unverified reports left out, conflicting copies, and, when
`rua` is given, a destination this database receives but no report arrived in
the window (or no destination of `rua` received here at all).

Blockers and warnings are sentences that carry text from reports
(organization names, result types, MX names) with control characters already
made visible (`scanner.untrusted.visible`); a view must still show them through
its `scanner.untrusted` helper. Pure: no I/O; the caller loads the reports
(`scanner.received.store.load_domain_reports`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from scanner.core.codes import Problem, ProblemCode
from scanner.received.authenticity import counts_for_readiness
from scanner.received.records import ReceivedReports, StoredReport
from scanner.received.report import PolicyReport, normalise_domain
from scanner.received.summary import SessionCounts
from scanner.untrusted import visible

SHOWN_LIMIT: Final = 80  # characters of one stranger's value inside a sentence
SHOWN_ITEMS: Final = 5  # items named in a list before "and N more"


@dataclass(frozen=True, slots=True)
class OrganizationEvidence:
    """One reporting organization's counts within the window."""

    organization: str
    reports: int
    sessions: SessionCounts
    failures_by_result_type: tuple[tuple[str, int], ...]
    receiving_mx: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReceivedEvidence:
    """What the received reports say about one domain's readiness for `enforce`."""

    domain: str
    window_start: datetime
    window_end: datetime
    reports: int  # reports counted
    unverified_reports: int  # reports in the window left out as unverified
    sessions: SessionCounts
    organizations: tuple[OrganizationEvidence, ...]
    failures_by_result_type: tuple[tuple[str, int], ...]
    policy_failure_days: tuple[date, ...]
    blockers: tuple[Problem, ...]
    warnings: tuple[Problem, ...]

    @property
    def successful_sessions(self) -> int:
        return self.sessions.successful

    @property
    def failed_sessions(self) -> int:
        return self.sessions.failed

    @property
    def failure_rate(self) -> float | None:
        return self.sessions.failure_rate

    @property
    def ready(self) -> bool:
        return not self.blockers


def normalise_destination(uri: str) -> str:
    """A rua URI in the form destinations are stored: `mailto:addr` lower case, no query;
    `https:` with scheme and host in lower case."""
    uri = uri.strip()
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return uri
    if scheme.lower() == "mailto":
        return "mailto:" + rest.partition("?")[0].strip().lower()
    try:
        parts = urlsplit(uri)
        return urlunsplit(
            (parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, parts.fragment)
        )
    except ValueError:
        return uri


def _shown(text: str) -> str:
    return visible(text, SHOWN_LIMIT)


def _listed(items: Sequence[str]) -> str:
    shown = [_shown(item) for item in items[:SHOWN_ITEMS]]
    if len(items) > SHOWN_ITEMS:
        shown.append(f"and {len(items) - SHOWN_ITEMS} more")
    return ", ".join(shown) if shown else "none"


def _counted(pairs: Sequence[tuple[str, int]]) -> str:
    return _listed([f"{name} {count}" for name, count in pairs]) if pairs else "none named"


def _percent(rate: float) -> str:
    return f"{rate * 100:.3g}%"


def _ranked(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(slots=True)
class _Tally:
    reports: set[tuple[str, str]]
    sessions: SessionCounts
    result_types: Counter[str]
    mx: set[str]


def _new_tally() -> _Tally:
    return _Tally(set(), SessionCounts(), Counter(), set())


@dataclass(slots=True)
class _Tallies:
    """The counted reports of one domain within the window."""

    pooled: _Tally
    organizations: defaultdict[str, _Tally]
    policy_days: defaultdict[date, Counter[str]]
    policy_reporters: set[str]
    policy_mx: set[str]
    unverified: int = 0
    conflicting: int = 0


def _count_entry(
    tallies: _Tallies, organization: _Tally, report_day: date, org_name: str, entry: PolicyReport
) -> None:
    counts = SessionCounts(entry.successful_sessions, entry.failed_sessions)
    for tally in (tallies.pooled, organization):
        tally.sessions += counts
    for detail in entry.failure_details:
        for tally in (tallies.pooled, organization):
            tally.result_types[detail.result_type] += detail.failed_session_count
            if detail.receiving_mx_hostname:
                tally.mx.add(detail.receiving_mx_hostname)
        if detail.is_policy_failure and detail.failed_session_count > 0:
            tallies.policy_days[report_day][detail.result_type] += detail.failed_session_count
            tallies.policy_reporters.add(org_name)
            if detail.receiving_mx_hostname:
                tallies.policy_mx.add(detail.receiving_mx_hostname)


def _tally(
    candidates: Sequence[StoredReport],
    name: str,
    window: tuple[datetime, datetime],
    include_unverified: bool,
) -> _Tallies:
    window_start, window_end = window
    tallies = _Tallies(_new_tally(), defaultdict(_new_tally), defaultdict(Counter), set(), set())
    for stored in candidates:
        report = stored.report
        entries = report.policies_for(name)
        if not entries:
            continue
        if not (report.date_range.end > window_start and report.date_range.start <= window_end):
            continue
        if not counts_for_readiness(stored.authenticity) and not include_unverified:
            tallies.unverified += 1
            continue
        if stored.conflicting_copies:
            tallies.conflicting += 1
        organization = tallies.organizations[report.organization_name]
        for tally in (tallies.pooled, organization):
            tally.reports.add(report.key)
        for entry in entries:
            _count_entry(
                tallies, organization, report.date_range.day, report.organization_name, entry
            )
    return tallies


def _rate_words(
    tallies: _Tallies, name: str, window_label: str, min_sessions: int, max_failure_rate: float
) -> tuple[list[Problem], list[Problem]]:
    """Blockers for reporters (and all pooled) above the failure rate; a warning below it."""
    blockers: list[Problem] = []
    warnings: list[Problem] = []
    pooled, organizations = tallies.pooled, tallies.organizations
    threshold = _percent(max_failure_rate)
    blocked_failures = 0
    for organization_name, tally in sorted(organizations.items()):
        rate = tally.sessions.failure_rate
        if tally.sessions.total >= min_sessions and rate is not None and rate > max_failure_rate:
            blocked_failures += tally.sessions.failed
            blockers.append(
                Problem(
                    ProblemCode.REPORTED_FAILURE_RATE,
                    f"TLS-RPT: {_shown(organization_name)} reported {tally.sessions.failed} failed of "
                    f"{tally.sessions.total} sessions to {name} {window_label} "
                    f"({_percent(rate)}, above {threshold}): result types "
                    f"{_counted(_ranked(tally.result_types))}; receiving MX "
                    f"{_listed(sorted(tally.mx))}",
                )
            )
    pooled_rate = pooled.sessions.failure_rate
    reporters_with_failures = [
        f"{organization_name} ({tally.sessions.failed})"
        for organization_name, tally in sorted(
            organizations.items(), key=lambda item: (-item[1].sessions.failed, item[0])
        )
        if tally.sessions.failed
    ]
    if pooled_rate is not None and pooled_rate > max_failure_rate:
        if blocked_failures < pooled.sessions.failed:  # else the blockers above say it all
            blockers.append(
                Problem(
                    ProblemCode.REPORTED_FAILURE_RATE,
                    f"TLS-RPT: {pooled.sessions.failed} failed of {pooled.sessions.total} sessions "
                    f"to {name} {window_label}, all reporters together ({_percent(pooled_rate)}, "
                    f"above {threshold}): result types {_counted(_ranked(pooled.result_types))}; "
                    f"reporters {_listed(reporters_with_failures)}; receiving MX "
                    f"{_listed(sorted(pooled.mx))}",
                )
            )
    elif pooled.sessions.failed:
        warnings.append(
            Problem(
                ProblemCode.REPORTED_FAILURES,
                f"TLS-RPT: {pooled.sessions.failed} failed of {pooled.sessions.total} sessions to "
                f"{name} {window_label} ({_percent(pooled_rate or 0.0)}, within {threshold}): result "
                f"types {_counted(_ranked(pooled.result_types))}; reporters "
                f"{_listed(reporters_with_failures)}; receiving MX {_listed(sorted(pooled.mx))}",
            )
        )
    return blockers, warnings


def _policy_failure_words(
    tallies: _Tallies, name: str, window_label: str
) -> tuple[list[Problem], list[Problem]]:
    """Policy-level failures: a warning on one day, a blocker on two or more."""
    days = tuple(sorted(tallies.policy_days))
    if not days:
        return [], []
    types: Counter[str] = Counter()
    for counter in tallies.policy_days.values():
        types.update(counter)
    sentence = Problem(
        ProblemCode.REPORTED_POLICY_FAILURES,
        f"TLS-RPT: MTA-STS policy failures for {name} reported on {len(days)} "
        f"day{'s' if len(days) > 1 else ''} {window_label} "
        f"({_listed([day.isoformat() for day in days])}): result types "
        f"{_counted(_ranked(types))}; reporters {_listed(sorted(tallies.policy_reporters))}; "
        f"receiving MX {_listed(sorted(tallies.policy_mx))}",
    )
    return ([sentence], []) if len(days) >= 2 else ([], [sentence])


def _volume_words(
    tallies: _Tallies,
    name: str,
    window_label: str,
    min_sessions: int,
    rua: Sequence[str] | None,
    received_destinations: set[str],
) -> list[Problem]:
    """Warnings: too little traffic, unverified or conflicting reports, rua not received here."""
    pooled, unverified, conflicting = tallies.pooled, tallies.unverified, tallies.conflicting
    warnings: list[Problem] = []
    if pooled.sessions.total == 0:
        warnings.append(
            Problem(
                ProblemCode.REPORTS_NONE, f"TLS-RPT: no sessions to {name} reported {window_label}"
            )
        )
    elif pooled.sessions.total < min_sessions:
        warnings.append(
            Problem(
                ProblemCode.REPORTS_FEW_SESSIONS,
                f"TLS-RPT: only {pooled.sessions.total} sessions to {name} reported {window_label} "
                f"(fewer than {min_sessions}): too little traffic to judge",
            )
        )
    if unverified:
        warnings.append(
            Problem(
                ProblemCode.REPORTS_UNVERIFIED,
                f"TLS-RPT: {unverified} report{'s' if unverified > 1 else ''} for {name} "
                f"{window_label} not DKIM-verified and not counted",
            )
        )
    if conflicting:
        warnings.append(
            Problem(
                ProblemCode.REPORTS_CONFLICTING,
                f"TLS-RPT: {conflicting} report{'s' if conflicting > 1 else ''} for {name} "
                f"{window_label} arrived in conflicting copies (same organization and report-id, "
                "different content); the first or verified copy is counted",
            )
        )
    if rua is not None:
        wanted = [normalise_destination(uri) for uri in rua]
        received_here = [uri for uri in wanted if uri in received_destinations]
        if received_here and not pooled.reports and not unverified:
            warnings.append(
                Problem(
                    ProblemCode.REPORTS_DESTINATION,
                    f"TLS-RPT: no report for {name} arrived {window_label}, though its rua names "
                    f"{_listed(received_here)}, which this database receives",
                )
            )
        elif wanted and not received_here:
            warnings.append(
                Problem(
                    ProblemCode.REPORTS_DESTINATION,
                    f"TLS-RPT: this database receives none of the rua destinations of {name} "
                    f"({_listed(wanted)}); reports sent there are not counted",
                )
            )
    return warnings


def received_evidence(
    reports: ReceivedReports | Iterable[StoredReport],
    domain: str,
    now: datetime,
    *,
    report_days: int = 14,
    min_sessions: int = 100,
    max_failure_rate: float = 0.001,
    rua: Sequence[str] | None = None,
    include_unverified: bool = False,
) -> ReceivedEvidence:
    """The readiness evidence of `domain` from `reports` (see the module doc).

    `reports` is what `load_domain_reports` returns, or any stored reports (then
    the destinations this database receives are those of the reports given).
    `rua` is the domain's TLS-RPT rua URIs. `now` is an aware datetime (naive is
    taken as UTC).
    """
    if isinstance(reports, ReceivedReports):
        candidates: Sequence[StoredReport] = reports.reports
        received_destinations = {normalise_destination(uri) for uri in reports.destinations}
    else:
        candidates = list(reports)
        received_destinations = {
            normalise_destination(uri) for stored in candidates for uri in stored.destinations
        }
    name = normalise_domain(domain)
    window_end = _as_utc(now)
    window_start = window_end - timedelta(days=report_days)
    window_label = f"in the last {report_days} days"
    tallies = _tally(candidates, name, (window_start, window_end), include_unverified)
    blockers, warnings = _rate_words(tallies, name, window_label, min_sessions, max_failure_rate)
    policy_blockers, policy_warnings = _policy_failure_words(tallies, name, window_label)
    blockers += policy_blockers
    warnings += policy_warnings
    warnings += _volume_words(tallies, name, window_label, min_sessions, rua, received_destinations)
    pooled = tallies.pooled
    return ReceivedEvidence(
        domain=name,
        window_start=window_start,
        window_end=window_end,
        reports=len(pooled.reports),
        unverified_reports=tallies.unverified,
        sessions=pooled.sessions,
        organizations=tuple(
            OrganizationEvidence(
                organization_name,
                len(tally.reports),
                tally.sessions,
                _ranked(tally.result_types),
                tuple(sorted(tally.mx)),
            )
            for organization_name, tally in sorted(tallies.organizations.items())
        ),
        failures_by_result_type=_ranked(pooled.result_types),
        policy_failure_days=tuple(sorted(tallies.policy_days)),
        blockers=tuple(blockers),
        warnings=tuple(warnings),
    )
