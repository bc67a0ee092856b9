"""Readiness evidence from received reports: do senders see failures for a domain?

Before `mode: enforce`, RFC 8461 §5 (and every operator's guide) says: run
`testing` with TLS-RPT and read the reports. `received_evidence` turns the
reports of one domain into blockers and warnings with the numbers behind them.

Within the window (the `report_days` days up to `now`; a report counts when its
date-range overlaps it), counting only DKIM-verified reports and reports received
by `scanner tlsrpt serve` (which stores only its allowlisted policy domains, see
`authenticity.counts_for_readiness`) unless `include_unverified`.

Reporters are who vouches for the reports (`records.reporter_group`: the verified
DKIM signer's domain, our HTTPS receiver's source), never the claimed
`organization-name`, which is shown beside the voucher. A report's failure rate
is its own (the sessions of its policies for the domain), so no report can
dilute another's:

- blocker: a reporter whose reports above `max_failure_rate` hold together at
  least `min_sessions` sessions (one large sender sees failures);
- blocker: the reports above `max_failure_rate`, all reporters together, hold at
  least `min_sessions` sessions (failures spread thin over many senders);
- blocker: MTA-STS policy failures (`sts-policy-fetch-error`,
  `sts-policy-invalid`, `sts-webpki-invalid`; RFC 8460 §4.3.2.2) on two or more
  UTC days (one day may be a blip; two is a pattern).

The invariant: adding a report never removes a blocker. A report adds sessions
to the reports above the rate or leaves them as they were, and adds days of
policy failures or none; nothing is an average over reports. A conflicting copy
only adds to what its report brings (`_report_above`).

Each blocker names the result types, the reporters and the receiving MX hosts.
Warnings: too few sessions to judge, failures below the thresholds, policy
failures on one day, unverified reports left out, reports not counted (or
counted without a signature) that hold failures, with their counts, stored rows
that no longer read, conflicting copies (named), and, when `rua` is given, a
destination this database receives but no report arrived in the window (or no
destination of `rua` received here at all).

Blockers and warnings are sentences that carry text from reports
(organization names, result types, MX names) with control characters already
made visible (`scanner.untrusted.visible`); a view must still show them through
its `scanner.untrusted` helper. Pure: no I/O; the caller loads the reports
(`scanner.received.store.load_domain_reports`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from scanner.core.codes import Problem, ProblemCode
from scanner.received.authenticity import AuthMethod, counts_for_readiness
from scanner.received.records import (
    ReceivedReports,
    StoredReport,
    UnreadableReport,
    reporter_group,
    shown_reporter,
)
from scanner.received.report import PolicyReport, TlsReport, normalise_domain
from scanner.received.summary import SessionCounts
from scanner.untrusted import visible

SHOWN_LIMIT: Final = 80  # characters of one stranger's value inside a sentence
SHOWN_ITEMS: Final = 5  # items named in a list before "and N more"


@dataclass(frozen=True, slots=True)
class OrganizationEvidence:
    """One reporter's counts within the window: who vouches for its reports, as shown
    (`reporter.example ("Claimed Name")`), and the organization names they claim."""

    organization: str
    reports: int
    sessions: SessionCounts
    failures_by_result_type: tuple[tuple[str, int], ...]
    receiving_mx: tuple[str, ...]
    voucher: str = ""
    claimed_names: tuple[str, ...] = ()


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


def percent(rate: float) -> str:
    """A rate as every view of received reports writes it: three significant digits."""
    return f"{rate * 100:.3g} %"


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
    names: set[str]
    above: SessionCounts  # the sessions of this tally's reports above the failure rate


def _new_tally() -> _Tally:
    return _Tally(set(), SessionCounts(), Counter(), set(), set(), SessionCounts())


@dataclass(slots=True)
class _Uncounted:
    """Reports in the window that are not counted, or counted without a signature."""

    reports: int = 0
    sessions: SessionCounts = field(default_factory=SessionCounts)
    reporters: Counter[str] = field(default_factory=Counter)  # shown reporter → failed sessions
    result_types: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Tallies:
    """The counted reports of one domain within the window."""

    pooled: _Tally
    reporters: defaultdict[
        str, _Tally
    ]  # by `reporter_group`: the signer, or voucher and claimed name
    policy_days: defaultdict[date, Counter[str]]
    policy_reporters: set[str]
    policy_mx: set[str]
    unverified: int = 0
    conflicting: list[str] = field(default_factory=list)
    not_counted: _Uncounted = field(default_factory=_Uncounted)
    unsigned: _Uncounted = field(default_factory=_Uncounted)


def _shown_reporter(group: str, names: Iterable[str]) -> str:
    return shown_reporter(group, names, SHOWN_ITEMS)


def _count_entry(
    tallies: _Tallies, reporter: _Tally, report_day: date, shown: str, entry: PolicyReport
) -> None:
    counts = SessionCounts(entry.successful_sessions, entry.failed_sessions)
    for tally in (tallies.pooled, reporter):
        tally.sessions += counts
    for detail in entry.failure_details:
        for tally in (tallies.pooled, reporter):
            tally.result_types[detail.result_type] += detail.failed_session_count
            if detail.receiving_mx_hostname:
                tally.mx.add(detail.receiving_mx_hostname)
        if detail.is_policy_failure and detail.failed_session_count > 0:
            tallies.policy_days[report_day][detail.result_type] += detail.failed_session_count
            tallies.policy_reporters.add(shown)
            if detail.receiving_mx_hostname:
                tallies.policy_mx.add(detail.receiving_mx_hostname)


def _copies_in(stored: StoredReport, window: tuple[datetime, datetime]) -> list[TlsReport]:
    """The report's copies (the counted one and any conflicting ones) that overlap the
    window: a copy outside it never stands for one inside it."""
    start, end = window
    return [
        copy
        for copy in (stored.report, *stored.conflict_copies)
        if copy.date_range.end > start and copy.date_range.start <= end
    ]


def _note_policy_failures(
    tallies: _Tallies, report_day: date, shown: str, entry: PolicyReport
) -> None:
    """The policy failures of a report's other copy: its days and result types, at most
    as many failures per day and type as it reports (never added to the counted copy's)."""
    for detail in entry.failure_details:
        if detail.is_policy_failure and detail.failed_session_count > 0:
            day = tallies.policy_days[report_day]
            day[detail.result_type] = max(day[detail.result_type], detail.failed_session_count)
            tallies.policy_reporters.add(shown)
            if detail.receiving_mx_hostname:
                tallies.policy_mx.add(detail.receiving_mx_hostname)


def _report_counts(entries: Sequence[PolicyReport]) -> SessionCounts:
    total = SessionCounts()
    for entry in entries:
        total += SessionCounts(entry.successful_sessions, entry.failed_sessions)
    return total


def _note_uncounted(
    uncounted: _Uncounted, stored: StoredReport, entries: Sequence[PolicyReport]
) -> None:
    counts = _report_counts(entries)
    uncounted.reports += 1
    uncounted.sessions += counts
    uncounted.statuses[stored.authenticity.status.value] += 1
    if counts.failed:
        shown = _shown_reporter(reporter_group(stored), [stored.report.organization_name])
        uncounted.reporters[shown] += counts.failed
        for entry in entries:
            for detail in entry.failure_details:
                uncounted.result_types[detail.result_type] += detail.failed_session_count


def _tally(
    candidates: Sequence[StoredReport],
    name: str,
    window: tuple[datetime, datetime],
    include_unverified: bool,
    max_failure_rate: float,
) -> _Tallies:
    tallies = _Tallies(_new_tally(), defaultdict(_new_tally), defaultdict(Counter), set(), set())
    names: defaultdict[str, set[str]] = defaultdict(set)
    for stored in candidates:
        report = stored.report
        if report.policies_for(name):
            names[reporter_group(stored)].add(report.organization_name)
    for stored in candidates:
        copies = _copies_in(stored, window)
        if not copies:
            continue
        report = (
            stored.report
            if stored.report in copies
            else max(copies, key=lambda copy: _report_counts(copy.policies_for(name)).failed)
        )
        entries = report.policies_for(name)
        if not entries:
            continue
        if not counts_for_readiness(stored.authenticity) and not include_unverified:
            tallies.unverified += 1
            _note_uncounted(tallies.not_counted, stored, entries)
            continue
        if not stored.verified and stored.authenticity.method is AuthMethod.HTTPS_RECEIVER:
            _note_uncounted(tallies.unsigned, stored, entries)
        group = reporter_group(stored)
        shown = _shown_reporter(group, names[group])
        if stored.conflicting_copies:
            tallies.conflicting.append(f"{shown} report-id {report.report_id}")
        reporter = tallies.reporters[group]
        reporter.names.add(report.organization_name)
        for tally in (tallies.pooled, reporter):
            tally.reports.add(stored.key)
        for entry in entries:
            _count_entry(tallies, reporter, report.date_range.day, shown, entry)
        # The other copies' policy failures count too (their days, not their sessions):
        # a conflicting copy can add a day of policy failures, never take one away.
        for copy in copies:
            for entry in copy.policies_for(name) if copy is not report else ():
                _note_policy_failures(tallies, copy.date_range.day, shown, entry)
        above = _report_above(copies, name, max_failure_rate)
        if above is not None:
            for tally in (tallies.pooled, reporter):
                tally.above += above
    return tallies


def _report_above(
    copies: Sequence[TlsReport], name: str, max_failure_rate: float
) -> SessionCounts | None:
    """The sessions a report brings to the reports above the failure rate, or None.

    A report in conflicting copies brings the largest of its copies (in the window)
    above the rate (the counted copy is the one with more failures; another may have
    the higher rate): a further copy can only add to what the report brings, never
    take away.
    """
    best: SessionCounts | None = None
    for copy in copies:
        counts = _report_counts(copy.policies_for(name))
        rate = counts.failure_rate
        above = rate is not None and rate > max_failure_rate
        if above and (best is None or (counts.total, counts.failed) > (best.total, best.failed)):
            best = counts
    return best


def _rate_words(
    tallies: _Tallies, name: str, window_label: str, min_sessions: int, max_failure_rate: float
) -> tuple[list[Problem], list[Problem]]:
    """Blockers for reporters (and all together) whose reports above the failure rate hold
    `min_sessions` sessions; a warning for failures that do not."""
    blockers: list[Problem] = []
    warnings: list[Problem] = []
    pooled, reporters = tallies.pooled, tallies.reporters
    threshold = percent(max_failure_rate)
    blocked_sessions = 0
    for group, tally in sorted(reporters.items()):
        above = tally.above
        if above.total >= min_sessions and above.failed:
            blocked_sessions += above.total
            blockers.append(
                Problem(
                    ProblemCode.REPORTED_FAILURE_RATE,
                    f"TLS-RPT: {_shown(_shown_reporter(group, tally.names))} reported "
                    f"{tally.sessions.failed} failed of {tally.sessions.total} sessions to {name} "
                    f"{window_label}; its reports above {threshold} hold {above.failed} failed "
                    f"of {above.total} sessions ({percent(above.failure_rate or 0.0)}): result "
                    f"types {_counted(_ranked(tally.result_types))}; receiving MX "
                    f"{_listed(sorted(tally.mx))}",
                )
            )
    reporters_with_failures = [
        f"{_shown_reporter(group, tally.names)} ({tally.sessions.failed})"
        for group, tally in sorted(
            reporters.items(), key=lambda item: (-item[1].sessions.failed, item[0])
        )
        if tally.sessions.failed
    ]
    above = pooled.above
    if above.total >= min_sessions and above.failed:
        if blocked_sessions < above.total:  # else the blockers above say it all
            blockers.append(
                Problem(
                    ProblemCode.REPORTED_FAILURE_RATE,
                    f"TLS-RPT: {above.failed} failed of {above.total} sessions to {name} "
                    f"{window_label} in reports above {threshold}, all reporters together "
                    f"({percent(above.failure_rate or 0.0)}; {pooled.sessions.failed} failed of "
                    f"{pooled.sessions.total} in all): result types "
                    f"{_counted(_ranked(pooled.result_types))}; reporters "
                    f"{_listed(reporters_with_failures)}; receiving MX "
                    f"{_listed(sorted(pooled.mx))}",
                )
            )
    elif pooled.sessions.failed:
        pooled_rate = pooled.sessions.failure_rate or 0.0
        warnings.append(
            Problem(
                ProblemCode.REPORTED_FAILURES,
                f"TLS-RPT: {pooled.sessions.failed} failed of {pooled.sessions.total} sessions to "
                f"{name} {window_label} ({percent(pooled_rate)}; reports above {threshold} hold "
                f"{above.total} sessions, fewer than {min_sessions}): result "
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
    warnings += _uncounted_words(tallies, name, window_label)
    if conflicting:
        count = len(conflicting)
        warnings.append(
            Problem(
                ProblemCode.REPORTS_CONFLICTING,
                f"TLS-RPT: {count} report{'s' if count > 1 else ''} for {name} "
                f"{window_label} arrived in conflicting copies (same voucher and report-id, "
                f"different content): {_listed(sorted(conflicting))}; the copy with more "
                "failures is counted",
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


def _uncounted_words(tallies: _Tallies, name: str, window_label: str) -> list[Problem]:
    """What is not counted (or counted without a signature) and holds failures: said with
    its counts, whether or not it would change the verdict."""
    warnings: list[Problem] = []
    for uncounted, how in (
        (tallies.not_counted, "not counted (not DKIM-verified)"),
        (tallies.unsigned, "counted without a signature (received over HTTPS)"),
    ):
        if not uncounted.sessions.failed:
            continue
        statuses = ", ".join(f"{status} {count}" for status, count in _ranked(uncounted.statuses))
        warnings.append(
            Problem(
                ProblemCode.REPORTS_UNVERIFIED_FAILURES,
                f"TLS-RPT: {uncounted.reports} report{'s' if uncounted.reports > 1 else ''} for "
                f"{name} {window_label} {how} hold {uncounted.sessions.failed} failed of "
                f"{uncounted.sessions.total} sessions: reporters "
                f"{_counted(_ranked(uncounted.reporters))}; result types "
                f"{_counted(_ranked(uncounted.result_types))}; authenticity {statuses}",
            )
        )
    return warnings


def _unreadable_words(unreadable: Sequence[UnreadableReport]) -> list[Problem]:
    if not unreadable:
        return []
    named = [f"{row.organization_name} report-id {row.report_id}" for row in unreadable]
    return [
        Problem(
            ProblemCode.REPORTS_UNREADABLE,
            f"TLS-RPT: {len(unreadable)} stored report{'s' if len(unreadable) > 1 else ''} no "
            f"longer read back and {'are' if len(unreadable) > 1 else 'is'} not counted (the "
            f"database was changed by something else): {_listed(named)}",
        )
    ]


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
    unreadable: Sequence[UnreadableReport] = ()
    if isinstance(reports, ReceivedReports):
        candidates: Sequence[StoredReport] = reports.reports
        received_destinations = {normalise_destination(uri) for uri in reports.destinations}
        unreadable = reports.unreadable
    else:
        candidates = list(reports)
        received_destinations = {
            normalise_destination(uri) for stored in candidates for uri in stored.destinations
        }
    name = normalise_domain(domain)
    window_end = _as_utc(now)
    window_start = window_end - timedelta(days=report_days)
    window_label = f"in the last {report_days} days"
    tallies = _tally(
        candidates, name, (window_start, window_end), include_unverified, max_failure_rate
    )
    blockers, warnings = _rate_words(tallies, name, window_label, min_sessions, max_failure_rate)
    policy_blockers, policy_warnings = _policy_failure_words(tallies, name, window_label)
    blockers += policy_blockers
    warnings += policy_warnings
    warnings += _volume_words(tallies, name, window_label, min_sessions, rua, received_destinations)
    warnings += _unreadable_words(unreadable)
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
                _shown_reporter(group, tally.names),
                len(tally.reports),
                tally.sessions,
                _ranked(tally.result_types),
                tuple(sorted(tally.mx)),
                group.partition("\n")[0],
                tuple(sorted(tally.names)),
            )
            for group, tally in sorted(tallies.reporters.items())
        ),
        failures_by_result_type=_ranked(pooled.result_types),
        policy_failure_days=tuple(sorted(tallies.policy_days)),
        blockers=tuple(blockers),
        warnings=tuple(warnings),
    )
