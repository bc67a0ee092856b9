"""The import loop: items from the sources, reports out of them, each stored on its own.

Theory of operation: for each item, in order, the importer finds the reports
(`mail.extract_reports` for an email, `report.parse_report` for a report file),
judges the email's authenticity once (the injected `Verifier`), and stores each
accepted report in its own transaction. Every outcome is an `ImportEvent`
(imported, duplicate, conflict, rejected, skipped, unreadable) given to the
progress sink and counted in the `ImportTally`. A bad item costs only itself:
the next item is read whatever happened to this one. An unexpected exception
while one item is handled (a bug a hostile item found) rejects that item, with
the exception as the reason, and an email is still acknowledged (IMAP marks it
seen: the next run does not stop at it again). What stops the import: the
database failing (`DatabaseError`, `sqlite3.Error`: no item could be stored)
and an interruption (Ctrl-C); the reports committed so far stand.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol, TypeVar

from scanner.received.authenticity import NOT_EMAIL, Authenticity, Verifier
from scanner.received.items import (
    MessageItem,
    PayloadItem,
    RejectedItem,
    SkippedItem,
    SourceBegins,
    SourceItem,
    UnreadableSource,
)
from scanner.received.limits import DEFAULT_LIMITS, ReceivedLimits
from scanner.received.mail import MessageInfo, extract_reports
from scanner.received.records import AddResult, Provenance
from scanner.received.report import (
    UNKNOWN_POLICY_DOMAIN,
    ParsedReport,
    RejectedReport,
    canonical_json,
    content_hash,
    normalise_domain,
    parse_report,
    report_value,
)
from scanner.received.store import DatabaseError, ReportStore

_Item = TypeVar("_Item", MessageItem, PayloadItem)

# Failures of the database, not of an item: they end the import (nothing could be stored).
_STORE_ERRORS: Final = (DatabaseError, sqlite3.Error)


class EventKind(StrEnum):
    IMPORTED = "imported"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class ImportEvent:
    kind: EventKind
    origin: str
    detail: str = ""
    report_key: tuple[str, str] | None = None  # (organization-name, report-id) as claimed
    authenticity: Authenticity | None = None


class ImportProgress(Protocol):
    def begin(self, label: str, total: int | None, unit: str) -> None: ...

    def advance(self, amount: int) -> None: ...

    def event(self, event: ImportEvent) -> None: ...


@dataclass(slots=True)
class ImportTally:
    """Counts of one import, and the events an operator must read (rejections, conflicts)."""

    counts: Counter[EventKind] = field(default_factory=Counter)
    authenticity: Counter[str] = field(default_factory=Counter)  # of imported reports
    notable: list[ImportEvent] = field(default_factory=list)  # rejected, conflict, unreadable

    def add(self, event: ImportEvent) -> None:
        self.counts[event.kind] += 1
        if event.kind is EventKind.IMPORTED and event.authenticity is not None:
            self.authenticity[event.authenticity.status.value] += 1
        if event.kind in (EventKind.REJECTED, EventKind.CONFLICT, EventKind.UNREADABLE):
            self.notable.append(event)

    def count(self, kind: EventKind) -> int:
        return self.counts[kind]


_REPORT_ID_DOMAIN = re.compile(r"[@+_]([A-Za-z0-9.-]+\.[A-Za-z0-9-]+)\.?$")


def report_id_domain(report_id: str) -> str | None:
    """The domain a report-id ends with after `@`, `+` or `_` (`<digits>+example.com`,
    `<stamp>@example.com`), normalised; None when it ends with none."""
    match = _REPORT_ID_DOMAIN.search(report_id.strip())
    return normalise_domain(match.group(1)) if match else None


# RFC 8460 §5.3: TLS-Report-Domain names the policy domain the report is about.
def _with_header_check(parsed: ParsedReport, info: MessageInfo) -> ParsedReport:
    """Attribute policies that name no policy-domain to the email's TLS-Report-Domain when
    the report-id's domain is that domain; note a TLS-Report-Domain no policy covers."""
    if info.report_domain is None:
        return parsed
    domain = normalise_domain(info.report_domain)
    report = parsed.report
    unknown = [e for e in report.policies if e.policy.policy_domain == UNKNOWN_POLICY_DOMAIN]
    if unknown and domain and report_id_domain(report.report_id) == domain:
        policies = tuple(
            dataclasses.replace(e, policy=dataclasses.replace(e.policy, policy_domain=domain))
            if e.policy.policy_domain == UNKNOWN_POLICY_DOMAIN
            else e
            for e in report.policies
        )
        attributed = dataclasses.replace(report, policies=policies)
        validated = canonical_json(report_value(attributed))
        note = (
            f"policies: {len(unknown)} without policy-domain attributed to {domain}, the "
            "email's TLS-Report-Domain and the report-id's domain (RFC 8460 §5.3)"
        )
        parsed = ParsedReport(attributed, (*parsed.notes, note), validated, content_hash(validated))
        report = attributed
    if any(entry.policy.policy_domain == domain for entry in report.policies):
        return parsed
    note = f"TLS-Report-Domain: the email names {domain}, which no policy of the report covers"
    return dataclasses.replace(parsed, notes=(*parsed.notes, note))


class Importer:
    """Stores the reports of items into `store`. Dependencies are injected."""

    def __init__(
        self,
        store: ReportStore,
        *,
        verify: Verifier,
        now: Callable[[], datetime],
        limits: ReceivedLimits = DEFAULT_LIMITS,
        destinations: frozenset[str] = frozenset(),
        progress: ImportProgress | None = None,
    ) -> None:
        self.store = store
        self.verify = verify
        self.now = now
        self.limits = limits
        self.destinations = destinations  # rua URIs the report files were sent to
        self.progress = progress
        self.tally = ImportTally()

    def run(self, items: Iterable[SourceItem]) -> ImportTally:
        for item in items:
            self.handle(item)
        return self.tally

    def _emit(self, event: ImportEvent) -> None:
        self.tally.add(event)
        if self.progress is not None:
            self.progress.event(event)

    def handle(self, item: SourceItem) -> None:
        if isinstance(item, SourceBegins):
            if self.progress is not None:
                self.progress.begin(item.label, item.total, item.unit)
            return
        if isinstance(item, MessageItem):
            self._isolated(item.origin, self._message, item)
            if item.acknowledge is not None:
                item.acknowledge()
        elif isinstance(item, PayloadItem):
            self._isolated(item.origin, self._payload, item)
        elif isinstance(item, RejectedItem):
            self._emit(ImportEvent(EventKind.REJECTED, item.origin, item.reason))
        elif isinstance(item, SkippedItem):
            self._emit(ImportEvent(EventKind.SKIPPED, item.origin, item.reason))
        elif isinstance(item, UnreadableSource):
            self._emit(ImportEvent(EventKind.UNREADABLE, item.origin, item.reason))
        if self.progress is not None:
            self.progress.advance(item.weight)

    def _isolated(self, origin: str, handle: Callable[[_Item], None], item: _Item) -> None:
        """`handle(item)`; an unexpected exception rejects the item, named, and the import goes on."""
        try:
            handle(item)
        except _STORE_ERRORS:
            raise
        except Exception as exc:  # one hostile item must not end the import
            reason = f"could not be handled ({type(exc).__name__}: {exc}"[:300] + ")"
            self._emit(ImportEvent(EventKind.REJECTED, origin, reason))

    def _payload(self, item: PayloadItem) -> None:
        outcome = parse_report(item.data, self.limits)
        if isinstance(outcome, RejectedReport):
            self._emit(ImportEvent(EventKind.REJECTED, item.origin, outcome.summary))
            return
        provenance = Provenance(NOT_EMAIL, item.origin, destinations=self.destinations)
        self._store(outcome, provenance)

    def _message(self, item: MessageItem) -> None:
        extracted = extract_reports(item.data, self.limits)
        if not extracted.reports:
            if extracted.problems:  # the email could not be looked at (too large)
                self._emit(
                    ImportEvent(EventKind.REJECTED, item.origin, "; ".join(extracted.problems))
                )
            else:
                self._emit(
                    ImportEvent(EventKind.SKIPPED, item.origin, "no TLS-RPT report in the email")
                )
            return
        info = extracted.info
        if item.arrived is not None:
            info = dataclasses.replace(info, arrived=item.arrived)
        authenticity: Authenticity | None = None
        for found in extracted.reports:
            origin = f"{item.origin} {found.part}"
            if isinstance(found.outcome, RejectedReport):
                self._emit(ImportEvent(EventKind.REJECTED, origin, found.outcome.summary))
                continue
            if authenticity is None:
                authenticity = self.verify(item.data, info)
            provenance = Provenance(
                authenticity=authenticity,
                origin=origin,
                submitter=info.submitter,
                message_id=info.message_id,
                destinations=info.destinations | self.destinations,
            )
            self._store(_with_header_check(found.outcome, info), provenance)

    def _store(self, parsed: ParsedReport, provenance: Provenance) -> None:
        outcome = self.store.add(parsed, provenance, self.now())
        kind = {
            AddResult.IMPORTED: EventKind.IMPORTED,
            AddResult.DUPLICATE: EventKind.DUPLICATE,
            AddResult.CONFLICT: EventKind.CONFLICT,
        }[outcome.result]
        self._emit(
            ImportEvent(
                kind,
                provenance.origin,
                outcome.detail,
                parsed.report.key,
                provenance.authenticity,
            )
        )
