"""`scanner tlsrpt html`: one self-contained, offline HTML page of the received reports.

The approach of `scanner.research.page`: a Jinja2 template (`templates/tlsrpt.html.j2`)
rendered with autoescaping on; every table cell is text that may come from a report
(organization names, domains, MX names, result types, reason codes, addresses) and
goes through the `untrusted` filter (`scanner.untrusted.html_text`, marked safe, so
it is escaped exactly once). Charts are SVG images in `data:` URIs (`charts`). The
page's Content-Security-Policy allows inline styles and `data:` images only: no
script, no request, offline.

Pure: summaries in, the page's text out. Needs matplotlib (the `charts` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from scanner import __version__
from scanner.received.charts import domain_charts
from scanner.received.summary import DomainSummary, SessionCounts, SourcesSummary, shown_domain
from scanner.research.charts import Chart
from scanner.research.page import environment as research_environment

TEMPLATE = "tlsrpt.html.j2"
PAGE_TITLE = "Received TLS-RPT reports"


@dataclass(frozen=True, slots=True)
class ShownCell:
    text: str
    number: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[ShownCell, ...], ...]


@dataclass(frozen=True, slots=True)
class DomainSection:
    domain: str
    headline: str
    charts: tuple[Chart, ...]
    tables: tuple[Table, ...]


def _n(value: int) -> ShownCell:
    return ShownCell(str(value), number=True)


def _t(value: str | None) -> ShownCell:
    return ShownCell("-" if value is None else value)


def _rate(counts: SessionCounts) -> ShownCell:
    rate = counts.failure_rate
    return ShownCell("-" if rate is None else f"{rate * 100:.3g}%", number=True)


def _counted(pairs: Sequence[tuple[str, int]]) -> ShownCell:
    return ShownCell("; ".join(f"{name} {count}" for name, count in pairs))


def domain_tables(summary: DomainSummary) -> tuple[Table, ...]:
    """The tables of `scanner tlsrpt summary` for one policy domain."""
    return (
        Table(
            "Failures by result type and failure-reason-code",
            ("result type", "failure-reason-code", "failed"),
            tuple(
                (_t(r.result_type), _t(r.failure_reason_code), _n(r.failed_sessions))
                for r in summary.failures_by_reason_code
            ),
        ),
        Table(
            "Failures by receiving MX and IP",
            ("receiving MX", "receiving IP", "failed", "result types"),
            tuple(
                (
                    _t(r.receiving_mx_hostname),
                    _t(r.receiving_ip),
                    _n(r.failed_sessions),
                    _counted(r.result_types),
                )
                for r in summary.failures_by_receiving
            ),
        ),
        Table(
            "By policy type",
            ("policy type", "succeeded", "failed", "failure rate"),
            tuple(
                (_t(name), _n(c.successful), _n(c.failed), _rate(c))
                for name, c in summary.by_policy_type
            ),
        ),
        Table(
            "By reporting organization",
            ("organization", "reports", "succeeded", "failed", "failure rate"),
            tuple(
                (
                    _t(o.organization),
                    _n(o.reports),
                    _n(o.sessions.successful),
                    _n(o.sessions.failed),
                    _rate(o.sessions),
                )
                for o in summary.organizations
            ),
        ),
        Table(
            "Per UTC day",
            ("day", "reports", "succeeded", "failed", "failure rate"),
            tuple(
                (
                    ShownCell(d.day.isoformat()),
                    _n(d.reports),
                    _n(d.sessions.successful),
                    _n(d.sessions.failed),
                    _rate(d.sessions),
                )
                for d in summary.days
            ),
        ),
    )


def source_tables(sources: SourcesSummary) -> tuple[Table, ...]:
    """The tables of `scanner tlsrpt sources`."""
    return (
        Table(
            "Reporting organizations",
            (
                "organization",
                "reports",
                "sessions",
                "failed",
                "failure rate",
                "first report",
                "last report",
                "submitters",
                "authenticity",
                "policy domains",
            ),
            tuple(
                (
                    _t(o.organization),
                    _n(o.reports),
                    _n(o.sessions.total),
                    _n(o.sessions.failed),
                    _rate(o.sessions),
                    ShownCell(o.first_report.isoformat()),
                    ShownCell(o.last_report.isoformat()),
                    ShownCell(", ".join(o.submitters) or "-"),
                    _counted(o.authenticity),
                    ShownCell(", ".join(shown_domain(name) for name in o.policy_domains)),
                )
                for o in sources.organizations
            ),
        ),
        Table(
            "Failures by sending MTA IP (RFC 8460 names sending IPs only in failure details)",
            ("sending MTA IP", "failed", "result types", "organizations"),
            tuple(
                (
                    _t(s.sending_mta_ip),
                    _n(s.failed_sessions),
                    _counted(s.result_types),
                    ShownCell(", ".join(s.organizations)),
                )
                for s in sources.sending_ips
            ),
        ),
    )


def render_report_page(
    summaries: Sequence[DomainSummary],
    sources: SourcesSummary,
    *,
    database: str,
    domain: str | None,
    since: date | None,
) -> str:
    sections = []
    for index, summary in enumerate(summaries):
        sessions = summary.sessions
        rate = _rate(sessions).text
        sections.append(
            DomainSection(
                summary.shown_domain,
                f"{summary.reports} reports, {sessions.total} sessions, {sessions.successful} succeeded, "
                f"{sessions.failed} failed (failure rate {rate}); reports by authenticity: "
                + ", ".join(f"{status} {count}" for status, count in summary.authenticity),
                tuple(domain_charts(summary, index)),
                domain_tables(summary),
            )
        )
    return (
        research_environment("scanner.received")
        .get_template(TEMPLATE)
        .render(
            title=PAGE_TITLE,
            version=__version__,
            database=database,
            domain=domain,
            since=since.isoformat() if since is not None else None,
            sections=sections,
            source_tables=source_tables(sources),
            failures_without_sending_ip=sources.failures_without_sending_ip,
        )
    )
