"""Stored reports as typed values: what the database holds about each copy it kept.

Pure: shared by the store (which builds them), the summaries and the readiness
evidence (which read them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from scanner.received.authenticity import Authenticity
from scanner.received.report import TlsReport


class AddResult(StrEnum):
    IMPORTED = "imported"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a report came from and whether its sender is proven."""

    authenticity: Authenticity
    origin: str  # "reports/x.mbox message 3", "imaps://user@host/INBOX uid 7"
    submitter: str | None = None
    message_id: str | None = None
    destinations: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AddOutcome:
    result: AddResult
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A report as the database holds it: the report and what is known about its copy."""

    report: TlsReport
    content_hash: str
    authenticity: Authenticity
    submitter: str | None
    origin: str
    imported_at: datetime
    destinations: frozenset[str]
    notes: tuple[str, ...]
    conflicting_copies: int  # other contents seen under the same (organization, report-id)

    @property
    def verified(self) -> bool:
        return self.authenticity.verified


@dataclass(frozen=True, slots=True)
class UnreadableReport:
    """A stored row that no longer reads back (changed by something else): skipped, named."""

    row: int  # reports.id
    organization_name: str
    report_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class StoredReports:
    """What a selection read back: the reports, and the rows skipped because they no longer read."""

    reports: tuple[StoredReport, ...]
    unreadable: tuple[UnreadableReport, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceivedReports:
    """The reports of one policy domain, and every rua destination the database receives."""

    domain: str
    reports: tuple[StoredReport, ...]
    destinations: frozenset[str]
    unreadable: tuple[UnreadableReport, ...] = ()
