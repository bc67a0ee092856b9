"""Human views of received reports: the import summary, `summary` and `sources` tables,
and the import progress bar.

Every string that came from a report or an email (organization names, domains,
MX names, addresses, result types, reason codes, origins, rejection reasons that
quote values) reaches rich as a `Text` from `scanner.untrusted`; numbers and our
own words are the only `str` rich sees.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from scanner import untrusted
from scanner.progress import LiveDisplay
from scanner.received.importer import EventKind, ImportEvent, ImportTally
from scanner.received.output import SENDING_IP_NOTE
from scanner.received.summary import DomainSummary, SessionCounts, SourcesSummary
from scanner.render import print_table

MAX_LISTED_EVENTS = 50  # rejections and conflicts listed after an import; the rest counted


def _rate(counts: SessionCounts) -> str:
    rate = counts.failure_rate
    return "-" if rate is None else f"{rate * 100:.3g}%"


def _shown(value: str | None) -> Text:
    return untrusted.terminal(value) if value is not None else Text("-", style="dim")


# ---------------------------------------------------------------- import


class ImportProgressBar(LiveDisplay):
    """An `ImportProgress` drawing one bar per source on a terminal console, shown while
    it is entered as a context manager."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} {task.fields[unit]}"),
            TextColumn("{task.fields[counts]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._imported = 0
        self._rejected = 0

    def begin(self, label: str, total: int | None, unit: str) -> None:
        description = untrusted.visible(label, 60)
        self._task = self._progress.add_task(
            description, total=total, unit=unit, counts=self._counts()
        )

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=amount, counts=self._counts())

    def event(self, event: ImportEvent) -> None:
        if event.kind is EventKind.IMPORTED:
            self._imported += 1
        elif event.kind is EventKind.REJECTED:
            self._rejected += 1

    def _counts(self) -> str:
        return f"{self._imported} imported, {self._rejected} rejected"


def render_import(
    console: Console, tally: ImportTally, database: str, *, interrupted: bool
) -> None:
    """The outcome of an import: counts, then each rejection, conflict and unreadable source."""
    count = tally.count
    authenticity = ", ".join(f"{status} {n}" for status, n in sorted(tally.authenticity.items()))
    console.print(
        untrusted.line(
            Text(
                f"{count(EventKind.IMPORTED)} imported"
                + (f" (authenticity: {authenticity})" if authenticity else "")
                + f", {count(EventKind.DUPLICATE)} duplicate, {count(EventKind.CONFLICT)} conflicting, "
                f"{count(EventKind.REJECTED)} rejected, {count(EventKind.SKIPPED)} skipped (no report), "
                f"{count(EventKind.UNREADABLE)} unreadable; database "
            ),
            database,
        )
    )
    styles = {
        EventKind.REJECTED: "red",
        EventKind.CONFLICT: "yellow",
        EventKind.UNREADABLE: "red",
    }
    for event in tally.notable[:MAX_LISTED_EVENTS]:
        parts: list[untrusted.Part] = [
            Text(f"{event.kind.value}: ", style=styles[event.kind]),
            event.origin,
        ]
        if event.report_key is not None:
            parts += [
                Text(" (report "),
                event.report_key[1],
                Text(" of "),
                event.report_key[0],
                Text(")"),
            ]
        parts += [Text(": "), event.detail]
        console.print(untrusted.line(*parts, limit=500))
    if len(tally.notable) > MAX_LISTED_EVENTS:
        console.print(f"... and {len(tally.notable) - MAX_LISTED_EVENTS} more", markup=False)
    if interrupted:
        console.print(
            "interrupted: every report listed as imported is stored whole; import again to continue",
            style="yellow",
            markup=False,
        )


# ---------------------------------------------------------------- summary


NUMERIC_COLUMNS = frozenset({"reports", "sessions", "succeeded", "failed", "failure rate"})


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in NUMERIC_COLUMNS else "left")
    return table


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def render_summary(console: Console, summaries: tuple[DomainSummary, ...]) -> None:
    if not summaries:
        console.print("no reports match", markup=False)
        return
    for summary in summaries:
        sessions = summary.sessions
        console.print(
            untrusted.line(
                Text("Policy domain ", style="bold"),
                (summary.shown_domain, "bold"),
                Text(
                    f": {summary.reports} reports, {sessions.total} sessions, "
                    f"{sessions.successful} succeeded, {sessions.failed} failed "
                    f"(failure rate {_rate(sessions)})"
                ),
            )
        )
        authenticity = ", ".join(f"{status} {count}" for status, count in summary.authenticity)
        console.print(f"  reports by authenticity: {authenticity}", markup=False)
        if summary.summary_disagreements:
            console.print(
                f"  {_plural(summary.summary_disagreements, 'policy summary disagrees', 'policy summaries disagree')} "
                "with the failure details (both kept; sessions are counted from the summaries)",
                style="yellow",
                markup=False,
            )
        if summary.conflicting_reports:
            console.print(
                f"  {_plural(summary.conflicting_reports, 'report', 'reports')} arrived in conflicting copies "
                "(same organization and report-id, different content)",
                style="yellow",
                markup=False,
            )
        if summary.failures_by_reason_code:
            table = _table(
                "Failures by result type and failure-reason-code",
                "result type",
                "failure-reason-code",
                "failed",
            )
            for reason in summary.failures_by_reason_code:
                table.add_row(
                    _shown(reason.result_type),
                    _shown(reason.failure_reason_code),
                    str(reason.failed_sessions),
                )
            print_table(console, table)
        if summary.failures_by_receiving:
            table = _table(
                "Failures by receiving MX and IP",
                "receiving MX",
                "receiving IP",
                "failed",
                "result types",
            )
            for where in summary.failures_by_receiving:
                types = untrusted.terminal(
                    "; ".join(f"{name} {count}" for name, count in where.result_types)
                )
                table.add_row(
                    _shown(where.receiving_mx_hostname),
                    _shown(where.receiving_ip),
                    str(where.failed_sessions),
                    types,
                )
            print_table(console, table)
        table = _table("By policy type", "policy type", "succeeded", "failed", "failure rate")
        for name, counts in summary.by_policy_type:
            table.add_row(_shown(name), str(counts.successful), str(counts.failed), _rate(counts))
        print_table(console, table)
        table = _table(
            "By reporting organization",
            "organization",
            "reports",
            "succeeded",
            "failed",
            "failure rate",
        )
        for organization in summary.organizations:
            counts = organization.sessions
            table.add_row(
                _shown(organization.organization),
                str(organization.reports),
                str(counts.successful),
                str(counts.failed),
                _rate(counts),
            )
        print_table(console, table)
        table = _table(
            "Per day (UTC, by report start)",
            "day",
            "reports",
            "succeeded",
            "failed",
            "failure rate",
        )
        for day in summary.days:
            counts = day.sessions
            table.add_row(
                day.day.isoformat(),
                str(day.reports),
                str(counts.successful),
                str(counts.failed),
                _rate(counts),
            )
        print_table(console, table)
        console.print()


# ---------------------------------------------------------------- sources


def render_sources(console: Console, sources: SourcesSummary) -> None:
    if not sources.organizations:
        console.print("no reports match", markup=False)
        return
    table = _table(
        "Reporting organizations",
        "organization",
        "reports",
        "sessions",
        "failed",
        "failure rate",
        "first report",
        "last report",
        "submitter (email)",
        "authenticity",
    )
    for item in sources.organizations:
        table.add_row(
            _shown(item.organization),
            str(item.reports),
            str(item.sessions.total),
            str(item.sessions.failed),
            _rate(item.sessions),
            item.first_report.strftime("%Y-%m-%d %H:%M"),
            item.last_report.strftime("%Y-%m-%d %H:%M"),
            untrusted.terminal(", ".join(item.submitters))
            if item.submitters
            else Text("-", style="dim"),
            ", ".join(f"{status} {count}" for status, count in item.authenticity),
        )
    print_table(console, table)
    console.print()
    if sources.sending_ips:
        table = _table(
            "Failures by sending MTA IP",
            "sending MTA IP",
            "failed",
            "result types",
            "organizations",
        )
        for ip in sources.sending_ips:
            table.add_row(
                _shown(ip.sending_mta_ip),
                str(ip.failed_sessions),
                untrusted.terminal("; ".join(f"{name} {count}" for name, count in ip.result_types)),
                untrusted.terminal(", ".join(ip.organizations)),
            )
        print_table(console, table)
    else:
        console.print("no failure detail names a sending MTA IP", markup=False)
    if sources.failures_without_sending_ip:
        console.print(
            f"{sources.failures_without_sending_ip} failed sessions in details without a sending-mta-ip",
            markup=False,
        )
    console.print(f"Note: {SENDING_IP_NOTE}.", style="dim", markup=False)
