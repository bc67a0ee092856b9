"""Received TLS-RPT reports joined with the active probe: one verdict from both sides.

`scanner check DOMAIN --reports DB` (and `scan --reports DB`) adds what senders
reported (`scanner.received.received_evidence`) to the probe's verdict: its blockers
and warnings, which start with "TLS-RPT:", so the verdict says which evidence found
what (docs/received-reports.md#readiness-evidence).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from scanner.core.codes import Problem, ProblemCode
from scanner.core.result import DomainResult

if TYPE_CHECKING:
    from scanner.received import ReceivedEvidence

# `scanner.received` (SQLite, DKIM, IMAP) is imported where it is used: a scan without
# `--reports`, and every worker process, starts about 90 ms sooner.


@dataclass(frozen=True, slots=True)
class ReceivedSettings:
    """Where received reports are and how strictly they are read (`--reports` and friends)."""

    database: Path
    report_days: int = 14
    min_sessions: int = 100
    max_failure_rate: float = 0.001
    include_unverified: bool = False


def evaluate(settings: ReceivedSettings, result: DomainResult, now: datetime) -> ReceivedEvidence:
    """The evidence of the reports stored for `result`'s domain (blocking: SQLite)."""
    from scanner.received import load_domain_reports, received_evidence

    facts = result.facts
    rua = facts.tlsrpt_record.rua if facts is not None and facts.tlsrpt_record is not None else None
    reports = load_domain_reports(settings.database, result.domain)
    return received_evidence(
        reports,
        result.domain,
        now,
        report_days=settings.report_days,
        min_sessions=settings.min_sessions,
        max_failure_rate=settings.max_failure_rate,
        rua=rua,
        include_unverified=settings.include_unverified,
    )


def joined(result: DomainResult, evidence: ReceivedEvidence) -> DomainResult:
    """The result with the received evidence and its blockers and warnings in the verdict."""
    verdict = result.verdict
    if verdict is None:
        return dataclasses.replace(result, received=evidence)
    blockers = verdict.blockers + evidence.blockers
    verdict = dataclasses.replace(
        verdict,
        blockers=blockers,
        warnings=verdict.warnings + evidence.warnings,
        enforce_ready=not blockers,
    )
    return dataclasses.replace(result, verdict=verdict, received=evidence)


async def with_received(
    settings: ReceivedSettings, result: DomainResult, now: datetime
) -> DomainResult:
    """`result` joined with its received evidence; unchanged for an error result.

    A database that cannot be read is a warning of the verdict, never a crash.
    """
    from scanner.received import DatabaseError

    if result.verdict is None:
        return result
    try:
        evidence = await trio.to_thread.run_sync(evaluate, settings, result, now)
    except DatabaseError as exc:
        verdict = dataclasses.replace(
            result.verdict,
            warnings=(
                *result.verdict.warnings,
                Problem(ProblemCode.REPORTS_NOT_READ, f"TLS-RPT: received reports not read: {exc}"),
            ),
        )
        return dataclasses.replace(result, verdict=verdict)
    return joined(result, evidence)
