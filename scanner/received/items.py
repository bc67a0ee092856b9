"""What the sources hand the importer: one value per message, report file or failure.

Pure values. A source (files and folders, an IMAP mailbox) yields a
`SourceBegins` when it knows how much is coming (for the progress bar), then one
item per thing it read. A source that fails midway yields `UnreadableSource`
and stops; the items before it stand, and the other sources go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SourceBegins:
    """A source starts: `total` units (bytes of files, IMAP messages) will follow, if known."""

    label: str
    total: int | None
    unit: str


@dataclass(frozen=True, slots=True)
class MessageItem:
    """One email (RFC 5322 bytes).

    `acknowledge`, when given, is called once the message is fully handled and
    its reports are committed (IMAP marks it \\Seen).
    """

    origin: str
    data: bytes
    weight: int
    acknowledge: Callable[[], None] | None = field(default=None, compare=False)
    arrived: datetime | None = None  # IMAP INTERNALDATE: when the server received it


@dataclass(frozen=True, slots=True)
class PayloadItem:
    """One report as a file (`.json`, `.json.gz`: an HTTPS POST body saved)."""

    origin: str
    data: bytes
    weight: int


@dataclass(frozen=True, slots=True)
class RejectedItem:
    """Something meant as a report or an email that cannot be used (too large)."""

    origin: str
    reason: str
    weight: int


@dataclass(frozen=True, slots=True)
class SkippedItem:
    """A file that is neither a report, an email nor a mailbox."""

    origin: str
    reason: str
    weight: int


@dataclass(frozen=True, slots=True)
class UnreadableSource:
    """A file, folder or mailbox that could not be read (or not to its end)."""

    origin: str
    reason: str
    weight: int = 0


SourceItem = (
    SourceBegins | MessageItem | PayloadItem | RejectedItem | SkippedItem | UnreadableSource
)
