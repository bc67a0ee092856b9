"""The JSON edge of `scanner tlsrpt summary --json` and `sources --json`.

The typed summaries become dicts here and only here. Keys are snake_case;
breakdowns are lists of objects in the order of the typed value (most failures
first) or objects keyed by the wire string (`failures_by_result_type`). Rates are
numbers in [0, 1], or null when no session was counted. Written with
`scanner.untrusted.dumps_json_line`: stranger's text stays lossless and inert.
"""

from __future__ import annotations

from datetime import date, datetime

from scanner.received.summary import (
    DomainSummary,
    SessionCounts,
    SourcesSummary,
)

SENDING_IP_NOTE = (
    "RFC 8460 §4.4 carries sending-mta-ip only in failure-details: successful sessions "
    "name no sending address, so per-IP figures count failed sessions only"
)


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sessions(counts: SessionCounts) -> dict[str, object]:
    return {
        "successful_sessions": counts.successful,
        "failed_sessions": counts.failed,
        "failure_rate": counts.failure_rate,
    }


def domain_summary_json(summary: DomainSummary) -> dict[str, object]:
    return {
        "policy_domain": summary.policy_domain or None,  # null: policies without policy-domain
        "reports": summary.reports,
        **_sessions(summary.sessions),
        "failures_by_result_type": dict(summary.failures_by_result_type),
        "failures_by_reason_code": [
            {
                "result_type": item.result_type,
                "failure_reason_code": item.failure_reason_code,
                "failed_sessions": item.failed_sessions,
            }
            for item in summary.failures_by_reason_code
        ],
        "failures_by_receiving_mx": [
            {
                "receiving_mx_hostname": item.receiving_mx_hostname,
                "receiving_ip": item.receiving_ip,
                "failed_sessions": item.failed_sessions,
                "failures_by_result_type": dict(item.result_types),
            }
            for item in summary.failures_by_receiving
        ],
        "policy_types": {name: _sessions(counts) for name, counts in summary.by_policy_type},
        "days": [
            {"day": item.day.isoformat(), "reports": item.reports, **_sessions(item.sessions)}
            for item in summary.days
        ],
        "organizations": [
            {"organization": item.organization, "reports": item.reports, **_sessions(item.sessions)}
            for item in summary.organizations
        ],
        "authenticity": dict(summary.authenticity),
        "summary_disagreements": summary.summary_disagreements,
        "conflicting_reports": summary.conflicting_reports,
    }


def summary_document(
    summaries: tuple[DomainSummary, ...],
    *,
    database: str,
    domain: str | None,
    since: date | None,
    until: date | None,
    verified_only: bool,
) -> dict[str, object]:
    return {
        "database": database,
        "filters": {
            "domain": domain,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "verified_only": verified_only,
        },
        "domains": [domain_summary_json(summary) for summary in summaries],
    }


def sources_document(
    sources: SourcesSummary,
    *,
    database: str,
    domain: str | None,
    since: date | None = None,
    until: date | None = None,
    verified_only: bool,
) -> dict[str, object]:
    return {
        "database": database,
        "filters": {
            "domain": domain,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "verified_only": verified_only,
        },
        "organizations": [
            {
                "organization": item.organization,
                "reports": item.reports,
                "sessions": item.sessions.total,
                **_sessions(item.sessions),
                "first_report": _time(item.first_report),
                "last_report": _time(item.last_report),
                "submitters": list(item.submitters),
                "authenticity": dict(item.authenticity),
                "policy_domains": list(item.policy_domains),
            }
            for item in sources.organizations
        ],
        "sending_ips": [
            {
                "sending_mta_ip": item.sending_mta_ip,
                "failed_sessions": item.failed_sessions,
                "failures_by_result_type": dict(item.result_types),
                "organizations": list(item.organizations),
            }
            for item in sources.sending_ips
        ],
        "failures_without_sending_ip": sources.failures_without_sending_ip,
        "sending_ip_note": SENDING_IP_NOTE,
    }
