"""`scanner tlsrpt html`: one self-contained, offline HTML page of the received reports.

An operator's dashboard: first an overview of every policy domain (sessions, failure
rate, trend over the period, worst result type, the share from unverified or
conflicting reports), then per policy domain four panels (sessions per day with the
failure rate, failures by result type over time, sessions by sending organization,
failures by sending MTA IP) and the tables of `summary`, then the tables of
`sources`. A panel with nothing to show says so in words; a table longer than
`OPEN_ROWS` is collapsed in `<details>`.

The approach of `scanner.research.page`: a Jinja2 template (`templates/tlsrpt.html.j2`)
rendered with autoescaping on; every table cell is text that may come from a report
(organization names, domains, MX names, result types, reason codes, addresses) and
goes through the `untrusted` filter (`scanner.untrusted.html_text`, marked safe, so
it is escaped exactly once). Charts are SVG images in `data:` URIs (`charts`). The
page's Content-Security-Policy allows inline styles and `data:` images only: no
script, no request, offline.

Pure: summaries in, the page's text out. Charts need matplotlib (the `charts` extra);
without it (`with_charts=False`) the page holds the tables and a note saying how to
get the charts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

from scanner import __version__
from scanner.received.summary import DomainSummary, Period, SourcesSummary, report_period
from scanner.received.tables import (
    ReportTable,
    cell_text,
    domain_tables,
    overview_table,
    sending_ip_table,
    source_tables,
)
from scanner.research.page import CHARTS_NOTE, Chart
from scanner.research.page import environment as research_environment

TEMPLATE = "tlsrpt.html.j2"
PAGE_TITLE = "Received TLS-RPT reports"
OPEN_ROWS: Final = 12  # a table with more rows is collapsed (`<details>`)


@dataclass(frozen=True, slots=True)
class ShownCell:
    text: str
    number: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[ShownCell, ...], ...]
    collapsed: bool


@dataclass(frozen=True, slots=True)
class Panel:
    """One chart of a domain, or the words saying why there is none."""

    title: str
    chart: Chart | None
    empty: str | None  # what the page says instead of an empty chart


@dataclass(frozen=True, slots=True)
class DomainSection:
    anchor: str
    domain: str
    headline: str
    notes: tuple[str, ...]
    panels: tuple[Panel, ...]
    tables: tuple[Table, ...]


def shown_table(table: ReportTable) -> Table:
    return Table(
        table.title,
        tuple(column.title for column in table.columns),
        tuple(
            tuple(
                ShownCell(cell_text(cell), column.numeric)
                for cell, column in zip(row, table.columns, strict=True)
            )
            for row in table.rows
        ),
        collapsed=len(table.rows) > OPEN_ROWS,
    )


def _rate_text(summary: DomainSummary) -> str:
    rate = summary.sessions.failure_rate
    return "-" if rate is None else f"{rate * 100:.3g}%"


def _headline(summary: DomainSummary) -> str:
    sessions = summary.sessions
    return (
        f"{summary.reports} report{'' if summary.reports == 1 else 's'}, {sessions.total:,} sessions, {sessions.successful:,} "
        f"succeeded, {sessions.failed:,} failed (failure rate {_rate_text(summary)}); reports by "
        "authenticity: " + ", ".join(f"{status} {count}" for status, count in summary.authenticity)
    )


def _notes(summary: DomainSummary) -> tuple[str, ...]:
    notes = []
    if summary.unverified_sessions:
        notes.append(
            f"{summary.unverified_sessions:,} of {summary.sessions.total:,} sessions come from "
            "reports not verified by DKIM (`--verified-only` leaves them out)."
        )
    if summary.conflicting_reports:
        notes.append(
            f"{summary.conflicting_reports} reports ({summary.conflicting_sessions:,} sessions) "
            "arrived in conflicting copies: the same voucher and report-id with other content; "
            "each counts as the copy with more failures."
        )
    if summary.summary_disagreements:
        notes.append(
            f"{summary.summary_disagreements} policy summaries disagree with their failure "
            "details (sessions are counted from the summaries)."
        )
    return tuple(notes)


ChartMaker = Callable[[], Chart | None]


def _panel(title: str, make: ChartMaker | None, empty: str) -> Panel:
    """The chart `make` draws, or the words `empty` when it has nothing to draw."""
    if make is None:
        return Panel(title, None, None)
    chart = make()
    return Panel(title, chart, None if chart is not None else empty)


def _panels(
    summary: DomainSummary,
    sources: SourcesSummary,
    period: Period | None,
    index: int,
    with_charts: bool,
) -> tuple[Panel, ...]:
    if not with_charts or period is None:
        return ()
    from scanner.received import charts

    return (
        _panel(
            "Sessions per day, and the failure rate",
            lambda: charts.daily_chart(summary, period, index),
            "The reports of this period count no sessions: there is nothing to draw.",
        ),
        _panel(
            "Failures by result type over time",
            lambda: charts.result_types_over_time_chart(summary, period, index),
            "No failure details in this period: no failed session to break down by result type.",
        ),
        _panel(
            "Sessions by sending organization",
            lambda: charts.organization_chart(summary, index),
            "No organization reported sessions in this period.",
        ),
        _panel(
            "Failures by sending MTA IP",
            lambda: charts.sending_ip_chart(sources.sending_ips, summary.shown_domain, index),
            "No failure detail names a sending MTA IP (RFC 8460 gives sending-mta-ip only for failures).",
        ),
    )


@dataclass(frozen=True, slots=True)
class PageFilters:
    """What the page was asked for, said at its top."""

    database: str
    domain: str | None
    since: date | None
    until: date | None
    verified_only: bool


def render_report_page(
    summaries: Sequence[DomainSummary],
    domain_sources: Sequence[SourcesSummary],
    sources: SourcesSummary,
    filters: PageFilters,
    *,
    with_charts: bool = True,
) -> str:
    """The page. `domain_sources[i]` are the sources of `summaries[i]`'s policy domain."""
    period = report_period(summaries, filters.since, filters.until)
    sections = []
    for index, (summary, own_sources) in enumerate(zip(summaries, domain_sources, strict=True)):
        sections.append(
            DomainSection(
                f"domain-{index}",
                summary.shown_domain,
                _headline(summary),
                _notes(summary),
                _panels(summary, own_sources, period, index, with_charts),
                (
                    *(shown_table(table) for table in domain_tables(summary, period)),
                    shown_table(
                        sending_ip_table(
                            own_sources.sending_ips, "Sending sources: failures by sending MTA IP"
                        )
                    ),
                ),
            )
        )
    return (
        research_environment("scanner.received")
        .get_template(TEMPLATE)
        .render(
            title=PAGE_TITLE,
            version=__version__,
            filters=filters,
            since=filters.since.isoformat() if filters.since else None,
            until=filters.until.isoformat() if filters.until else None,
            period=(period.first.isoformat(), period.last.isoformat()) if period else None,
            overview=shown_table(overview_table(summaries, period)),
            anchors=[section.anchor for section in sections],
            sections=sections,
            source_tables=[shown_table(table) for table in source_tables(sources)],
            failures_without_sending_ip=sources.failures_without_sending_ip,
            charts_note=None if with_charts else CHARTS_NOTE,
        )
    )
