"""The typed result of scanning one domain: facts and verdict, or the error that stopped it.

A `DomainResult` travels from `Scanner.scan_domain` through progress, statistics,
rendering and exit codes as a value; `scanner.output` turns it into the JSON line
exactly once, where it is written (docs/architecture.md#data-flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from scanner.core.assess import DomainVerdict
from scanner.models import DomainFacts

if TYPE_CHECKING:
    from scanner.received import ReceivedEvidence


class ResultView(Protocol):
    """What progress and run totals read of a result (a `DomainResult`, or a worker's summary)."""

    @property
    def error(self) -> object: ...

    @property
    def enforce_ready(self) -> bool: ...

    @property
    def has_indicators(self) -> bool: ...


class ErrorKind(StrEnum):
    """Why a domain has no verdict; the leading word of the line's `error`."""

    INVALID_DOMAIN = "invalid-domain"
    EXCLUDED = "excluded"
    TIMEOUT = "timeout"
    INTERNAL_ERROR = "internal-error"


@dataclass(frozen=True, slots=True)
class ScanError:
    kind: ErrorKind
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class DomainResult:
    """One domain's outcome. Exactly one of `verdict` (with its `facts`) and `error` is set.

    `domain` is the normalised name, or the input text as given when it is no valid name.
    `finished_at` closes the report's date-range.
    """

    domain: str
    scanned_at: datetime
    finished_at: datetime
    facts: DomainFacts | None = None
    verdict: DomainVerdict | None = None
    error: ScanError | None = None
    received: ReceivedEvidence | None = None  # received TLS-RPT evidence, when asked for
    rank: int | None = None  # the domain's rank in a ranked input list (`rank,domain`)

    @classmethod
    def failed(cls, domain: str, error: ScanError, at: datetime) -> DomainResult:
        return cls(domain=domain, scanned_at=at, finished_at=at, error=error)

    @property
    def enforce_ready(self) -> bool:
        return self.verdict is not None and self.verdict.enforce_ready

    @property
    def could_not_scan(self) -> bool:
        """`scanner check` exits 2: an error, or the verdict says nothing could be tested."""
        return self.verdict is None or self.verdict.could_not_scan

    @property
    def has_indicators(self) -> bool:
        return self.verdict is not None and bool(self.verdict.indicators)
