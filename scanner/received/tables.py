"""The received-report summaries as neutral tables, for the HTML page and for CSV.

A `ReportTable` is a name (the CSV file stem), a title, columns and rows of cells:
text (always untrusted: it may come from a report), counts, dates and `Rate`s. The
page (`page.py`) shows the cells as text; `csv_files` gives their values for
`--csv`, text through `untrusted.csv_cell`. The tables are built once, here.

Pure: summaries in, tables (and the rows of CSV files, `csv_files`) out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

from scanner.received.summary import (
    DomainSummary,
    Period,
    SendingIpFailures,
    SessionCounts,
    SourcesSummary,
    Trend,
    failure_trend,
    shown_domain,
)
from scanner.research.tables import Column
from scanner.untrusted import csv_cell

NO_REPORT: Final = "no report"


@dataclass(frozen=True, slots=True)
class Rate:
    """A failure rate (0 to 1), or None when no session was counted."""

    value: float | None

    @classmethod
    def of(cls, counts: SessionCounts) -> Rate:
        return cls(counts.failure_rate)

    def text(self) -> str:
        return "-" if self.value is None else f"{self.value * 100:.3g}%"


Cell = str | int | Rate | date | None


@dataclass(frozen=True, slots=True)
class ReportTable:
    name: str  # a plain word: the CSV file stem
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]


def cell_text(cell: Cell) -> str:
    """A cell as the page shows it."""
    if cell is None:
        return "-"
    if isinstance(cell, Rate):
        return cell.text()
    if isinstance(cell, date):
        return cell.isoformat()
    if isinstance(cell, int):
        return f"{cell:,}"
    return cell


def _text(column: str, key: str | None = None) -> Column:
    return Column(column, numeric=False, key=key)


def _counted(pairs: Sequence[tuple[str, int]]) -> str:
    return "; ".join(f"{name} {count}" for name, count in pairs)


def trend_text(trend: Trend) -> str:
    """`0.2% → 3.1% (rising)`: the failure rate of each half of the period."""
    before, after = Rate.of(trend.earlier).text(), Rate.of(trend.later).text()
    return f"{before} → {after} ({trend.direction.value})"


def overview_table(summaries: Sequence[DomainSummary], period: Period | None) -> ReportTable:
    """One row per policy domain: what an operator reads first."""
    rows: list[tuple[Cell, ...]] = []
    for summary in summaries:
        worst = summary.worst_result_type
        rows.append(
            (
                summary.shown_domain,
                summary.reports,
                summary.sessions.total,
                summary.sessions.failed,
                Rate.of(summary.sessions),
                trend_text(failure_trend(summary.days, period)) if period is not None else None,
                f"{worst[0]} ({worst[1]})" if worst is not None else None,
                Rate(summary.doubtful_share),
            )
        )
    return ReportTable(
        "domains",
        "Every policy domain",
        (
            _text("policy domain"),
            Column("reports"),
            Column("sessions"),
            Column("failed"),
            Column("failure rate"),
            _text("trend (earlier half → later half)", key="trend"),
            _text("worst result type"),
            Column("from unverified or conflicting reports", key="doubtful_share"),
        ),
        tuple(rows),
    )


def domain_tables(summary: DomainSummary, period: Period | None = None) -> tuple[ReportTable, ...]:
    """The tables of `scanner tlsrpt summary` for one policy domain; with `period`, the
    days table lists every day of it, those without a report said so."""
    missing = set(period.without_reports(summary.days)) if period is not None else set()
    day_rows: list[tuple[Cell, ...]] = [
        (d.day, d.reports, d.sessions.successful, d.sessions.failed, Rate.of(d.sessions), None)
        for d in summary.days
    ]
    day_rows += [(day, 0, None, None, None, NO_REPORT) for day in missing]
    day_rows.sort(key=lambda row: row[0] if isinstance(row[0], date) else date.min)
    return (
        ReportTable(
            "failures_by_reason",
            "Failures by result type and failure-reason-code",
            (_text("result type"), _text("failure-reason-code"), Column("failed")),
            tuple(
                (r.result_type, r.failure_reason_code, r.failed_sessions)
                for r in summary.failures_by_reason_code
            ),
        ),
        ReportTable(
            "failures_by_receiving",
            "Failures by receiving MX and IP",
            (
                _text("receiving MX"),
                _text("receiving IP"),
                Column("failed"),
                _text("result types"),
            ),
            tuple(
                (
                    r.receiving_mx_hostname,
                    r.receiving_ip,
                    r.failed_sessions,
                    _counted(r.result_types),
                )
                for r in summary.failures_by_receiving
            ),
        ),
        ReportTable(
            "policy_types",
            "By policy type",
            (_text("policy type"), Column("succeeded"), Column("failed"), Column("failure rate")),
            tuple((name, c.successful, c.failed, Rate.of(c)) for name, c in summary.by_policy_type),
        ),
        ReportTable(
            "organizations",
            "By sending organization (who vouches for the reports)",
            (
                _text("organization"),
                _text("DKIM-verified"),
                Column("reports"),
                Column("succeeded"),
                Column("failed"),
                Column("failure rate"),
            ),
            tuple(
                (
                    o.organization,
                    "yes" if o.verified else "no",
                    o.reports,
                    o.sessions.successful,
                    o.sessions.failed,
                    Rate.of(o.sessions),
                )
                for o in summary.organizations
            ),
        ),
        ReportTable(
            "days",
            "Per UTC day",
            (
                _text("day"),
                Column("reports"),
                Column("succeeded"),
                Column("failed"),
                Column("failure rate"),
                _text("note"),
            ),
            tuple(day_rows),
        ),
    )


def sending_ip_table(
    sending_ips: Sequence[SendingIpFailures], title: str = "Failures by sending MTA IP"
) -> ReportTable:
    return ReportTable(
        "sending_ips",
        title,
        (
            _text("sending MTA IP"),
            Column("failed"),
            _text("result types"),
            _text("organizations"),
        ),
        tuple(
            (
                s.sending_mta_ip,
                s.failed_sessions,
                _counted(s.result_types),
                ", ".join(s.organizations),
            )
            for s in sending_ips
        ),
    )


def _moment(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def source_tables(sources: SourcesSummary) -> tuple[ReportTable, ...]:
    """The tables of `scanner tlsrpt sources`."""
    return (
        ReportTable(
            "organizations",
            "Reporting organizations",
            (
                _text("organization"),
                Column("reports"),
                Column("sessions"),
                Column("failed"),
                Column("failure rate"),
                _text("first report"),
                _text("last report"),
                _text("submitters"),
                _text("authenticity"),
                _text("policy domains"),
            ),
            tuple(
                (
                    o.organization,
                    o.reports,
                    o.sessions.total,
                    o.sessions.failed,
                    Rate.of(o.sessions),
                    _moment(o.first_report),
                    _moment(o.last_report),
                    ", ".join(o.submitters) or None,
                    _counted(o.authenticity),
                    ", ".join(shown_domain(name) for name in o.policy_domains),
                )
                for o in sources.organizations
            ),
        ),
        sending_ip_table(
            sources.sending_ips,
            "Failures by sending MTA IP (RFC 8460 names sending IPs only in failure details)",
        ),
    )


def _csv_value(cell: Cell) -> str | int | float:
    if isinstance(cell, Rate):
        return round(cell.value, 6) if cell.value is not None else ""
    if isinstance(cell, date):
        return cell.isoformat()
    return csv_cell(cell)


def csv_files(
    tables: Iterable[tuple[str | None, ReportTable]],
) -> dict[str, list[list[str | int | float]]]:
    """The rows (header first) of one CSV file per table name.

    Each pair is (policy domain, table): tables of the same name (one per policy domain)
    go into one file whose rows start with the policy domain; a table given without a
    domain has no such column. The header holds machine ids (`failure_rate`), rates are
    numbers from 0 to 1, and text from reports goes through `untrusted.csv_cell`.
    """
    grouped: dict[str, list[tuple[str | None, ReportTable]]] = {}
    for domain, table in tables:
        grouped.setdefault(table.name, []).append((domain, table))
    files: dict[str, list[list[str | int | float]]] = {}
    for name, group in grouped.items():
        with_domain = any(domain is not None for domain, _ in group)
        header: list[str | int | float] = [column.id for column in group[0][1].columns]
        rows = [["policy_domain", *header] if with_domain else header]
        for domain, table in group:
            for row in table.rows:
                values = [_csv_value(cell) for cell in row]
                rows.append([csv_cell(domain), *values] if with_domain else values)
        files[name] = rows
    return files
