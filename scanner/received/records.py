"""Stored reports as typed values: what the database holds about each copy it kept.

Pure: shared by the store (which builds them), the summaries and the readiness
evidence (which read them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from scanner.received.authenticity import Authenticity, AuthMethod
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
    source: str | None = None  # HTTPS: the sender's address as limits count it (`source_key`)

    @property
    def voucher(self) -> str:
        """Who vouches for this copy: part of a stored report's key (see `voucher_of`)."""
        return voucher_of(self.authenticity, self.submitter, self.source)


class VoucherKind(StrEnum):
    """Who vouches for a stored report, strongest first."""

    DKIM = "dkim"  # the verified DKIM signer's domain (or the trusted MTA's word for it)
    HTTPS = "https"  # our HTTPS receiver, by the sender's address (`source_key`)
    SUBMITTER = "submitter"  # an email's unproven reporting domain (TLS-Report-Submitter, From)
    FILE = "file"  # a report file: nobody


def voucher_of(authenticity: Authenticity, submitter: str | None, source: str | None) -> str:
    """`kind:name`: the verified signer, else our HTTPS receiver's source, else the
    email's claimed submitter, else `file:`. Reports are keyed by (voucher, report-id):
    a copy from another voucher is another report, never a replacement."""
    if authenticity.verified and authenticity.signer:
        return f"{VoucherKind.DKIM}:{authenticity.signer}"
    if authenticity.method is AuthMethod.HTTPS_RECEIVER:
        return f"{VoucherKind.HTTPS}:{source or '?'}"
    if authenticity.method is AuthMethod.NOT_EMAIL:
        return f"{VoucherKind.FILE}:"
    return f"{VoucherKind.SUBMITTER}:{submitter or '?'}"


def voucher_label(voucher: str) -> str:
    """A voucher as people read it: `reporter.example`, `https 192.0.2.1`, `unverified
    reporter.example`, `file`."""
    kind, _, name = voucher.partition(":")
    if kind == VoucherKind.DKIM:
        return name
    if kind == VoucherKind.HTTPS:
        return f"https {name}"
    if kind == VoucherKind.SUBMITTER:
        return f"unverified {name}"
    return "file"


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
    conflicting_copies: int  # other contents seen under the same (voucher, report-id)
    voucher: str = ""  # who vouches for it (`voucher_of`); "" is worked out from the rest
    # The other contents seen under its key, as read back (a row that no longer parses
    # is left out): the readiness evidence weighs them too (`evidence._report_above`).
    conflict_copies: tuple[TlsReport, ...] = ()

    def __post_init__(self) -> None:
        if not self.voucher:
            object.__setattr__(self, "voucher", voucher_of(self.authenticity, self.submitter, None))

    @property
    def verified(self) -> bool:
        return self.authenticity.verified

    @property
    def key(self) -> tuple[str, str]:
        """What identifies a stored report: (voucher, report-id)."""
        return (self.voucher, self.report.report_id)

    @property
    def vouched_by(self) -> str:
        return voucher_label(self.voucher)


def reporter_group(stored: StoredReport) -> str:
    """Which reporter a stored report is shown and counted under: its verified signer
    (whatever organization-name it claims), else its voucher and the claimed name."""
    if stored.voucher.startswith(f"{VoucherKind.DKIM}:"):
        return stored.voucher
    return f"{stored.voucher}\n{stored.report.organization_name}"


def is_verified_group(group: str) -> bool:
    """Whether a `reporter_group` is a verified DKIM signer."""
    return group.startswith(f"{VoucherKind.DKIM}:")


def shown_reporter(group: str, names: Iterable[str], limit: int = 5) -> str:
    """A reporter as views show it: who vouches, the claimed names beside it
    (`reporter.example ("Reporter Inc.")`, `file ("Company-X")`)."""
    voucher = group.partition("\n")[0]
    claimed = sorted(set(names))
    label = voucher_label(voucher)
    if not claimed:
        return label
    quoted = ", ".join(f'"{name}"' for name in claimed[:limit])
    more = f" and {len(claimed) - limit} more" if len(claimed) > limit else ""
    return f"{label} ({quoted}{more})"


@dataclass(frozen=True, slots=True)
class UnreadableReport:
    """A stored row that no longer reads back (changed by something else): skipped, named."""

    row: int  # reports.id
    organization_name: str
    report_id: str
    reason: str
    voucher: str = ""


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
