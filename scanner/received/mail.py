"""Finding RFC 8460 reports inside one email, the way real senders ship them.

Theory of operation: RFC 8460 §5.3 asks for `multipart/report;
report-type=tlsrpt` with the report as `application/tlsrpt+gzip` or
`application/tlsrpt+json`. Senders also use `multipart/mixed`,
`application/gzip`, `application/octet-stream` or `application/json`, with
base64 or quoted-printable. So every leaf part (at most `max_mime_parts`) is
looked at:

- declared `application/tlsrpt+gzip` / `+json`: it is a report; parse it, and
  if it is broken, reject it with the reasons;
- anything else: decode the transfer encoding, gunzip when it starts with the
  gzip magic (within the limits), and treat it as a report only when the JSON
  text names the report keys (`looks_like_report`). Other attachments (a DMARC
  report, a logo, the human-readable text) are not reports and are ignored.

The parser recurses into each multipart and message part, so their number
(which bounds the nesting) is counted before parsing (`max_mime_containers`):
a declaration `Content-Type: multipart/...` or `message/...` at the start of a
line, folded or not. A multipart/digest's parts are message/rfc822 without
saying so, but each level of them needs a declared multipart again.

The message's own headers give the provenance: `From`, `Message-ID`,
`TLS-Report-Domain` and `TLS-Report-Submitter` (§5.3), and the recipients
(`Delivered-To`, `X-Original-To`, `To`, `Cc`) as `mailto:` destinations.

Pure: bytes in, values out; the email package's lenient compat32 parser, which
records defects rather than raising. Nothing here raises on any input.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import decode_header
from email.message import Message
from email.policy import compat32
from typing import Final

from scanner.received.limits import DEFAULT_LIMITS, ReceivedLimits
from scanner.received.report import (
    PayloadError,
    RejectedReport,
    ReportOutcome,
    inflate_payload,
    is_gzip,
    looks_like_report,
    normalise_domain,
    parse_report_json,
)

# RFC 8460 §6.4 and §6.5 register these two media types.
DECLARED_REPORT_TYPES: Final = frozenset({"application/tlsrpt+gzip", "application/tlsrpt+json"})
RECIPIENT_HEADERS: Final = ("Delivered-To", "X-Original-To", "To", "Cc")
MAX_HEADER_TEXT: Final = 2000  # characters kept of one header value
_CONTAINER_TYPE = re.compile(
    rb"^content-type[ \t]*:[ \t]*(?:\r?\n[ \t]+)*\"?(?:multipart|message)/",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """Who says they sent a message, to whom, about what. All of it is sender-controlled."""

    message_id: str | None = None
    from_address: str | None = None
    subject: str | None = None
    report_domain: str | None = None  # TLS-Report-Domain
    submitter_header: str | None = None  # TLS-Report-Submitter
    destinations: frozenset[str] = frozenset()  # "mailto:<address>", lower case
    report_type_tlsrpt: bool = False  # multipart/report; report-type=tlsrpt
    authentication_results: tuple[str, ...] = ()  # Authentication-Results values, topmost first
    # When the message arrived: IMAP INTERNALDATE, else the date of the topmost Received
    # field (RFC 5321 §4.4: the receiving MTA prepends it; a sender's own sit below it).
    arrived: datetime | None = None

    @property
    def submitter(self) -> str | None:
        """The reporting domain a DKIM signature must align with.

        RFC 8460 §5.3's `TLS-Report-Submitter` when present, else the domain of `From`.
        """
        if self.submitter_header:
            return normalise_domain(self.submitter_header)
        if self.from_address and "@" in self.from_address:
            return normalise_domain(self.from_address.rpartition("@")[2])
        return None


@dataclass(frozen=True, slots=True)
class FoundReport:
    """A report found in a message: which part, and what parsing it gave."""

    part: str  # "part 2 (application/tlsrpt+gzip, name.json.gz)"
    outcome: ReportOutcome


@dataclass(frozen=True, slots=True)
class ExtractedMessage:
    info: MessageInfo
    reports: tuple[FoundReport, ...]
    problems: tuple[str, ...] = ()  # about the message itself (too many parts)


_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def _decoded_word(match: re.Match[str]) -> str:
    """One RFC 2047 encoded word as text; left as it is when it cannot be decoded."""
    word = match.group(0)
    try:
        ((data, charset),) = decode_header(word)
        if isinstance(data, bytes):
            return data.decode(charset or "ascii", "replace")
    except (ValueError, LookupError):  # HeaderParseError, binascii.Error, unknown charsets
        pass
    return word


def _clean(value: object) -> str:
    """A header as text: encoded words decoded, undecodable bytes as U+FFFD, bounded.

    Encoded words are decoded one by one, so raw non-ASCII text beside them stays
    as it is (`make_header(decode_header(...))` would turn it into escapes).
    """
    raw = value if isinstance(value, str) else str(value)
    raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    # RFC 2047 §6.2: white space between adjacent encoded words is not displayed.
    raw = re.sub(r"(\?=)\s+(=\?)", r"\1\2", raw)
    text = _ENCODED_WORD.sub(_decoded_word, raw)
    return " ".join(text.split())[:MAX_HEADER_TEXT]


def _header(message: Message, name: str) -> str | None:
    value = message.get(name)
    if value is None:
        return None
    text = _clean(value)
    return text or None


def _addresses(message: Message, names: tuple[str, ...]) -> list[str]:
    values = [_clean(value) for name in names for value in message.get_all(name, [])]
    try:
        pairs = email.utils.getaddresses(values)
    except (ValueError, IndexError):  # pathological address lists
        return []
    return [address.strip().lower() for _, address in pairs if "@" in address]


def message_info(message: Message) -> MessageInfo:
    """The provenance headers of a parsed message."""
    senders = _addresses(message, ("From",))
    recipients = _addresses(message, RECIPIENT_HEADERS)
    return MessageInfo(
        message_id=_header(message, "Message-ID"),
        from_address=senders[0] if senders else None,
        subject=_header(message, "Subject"),
        report_domain=_header(message, "TLS-Report-Domain"),
        submitter_header=_header(message, "TLS-Report-Submitter"),
        destinations=frozenset(f"mailto:{address}" for address in recipients),
        report_type_tlsrpt=(
            message.get_content_type() == "multipart/report"
            and str(message.get_param("report-type", "")).lower() == "tlsrpt"
        ),
        authentication_results=tuple(
            _clean(value) for value in message.get_all("Authentication-Results", [])
        ),
        arrived=_received_time(message),
    )


# RFC 5321 §4.4: Received: ... ; date-time   (the date after the last ";")
def _received_time(message: Message) -> datetime | None:
    """The date-time of the topmost Received field, as aware UTC, or None."""
    values = message.get_all("Received", [])
    if not values:
        return None
    text = _clean(values[0]).rpartition(";")[2].strip()
    if not text:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except (ValueError, LookupError, UnicodeError):
        return None
    return _clean(name) if name else None


def _part_label(index: int, content_type: str, filename: str | None) -> str:
    return f"part {index} ({content_type}{', ' + filename if filename else ''})"


def _payload_bytes(part: Message) -> bytes:
    """The part's body with its Content-Transfer-Encoding (base64, quoted-printable) undone."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _examine(part: Message, label: str, limits: ReceivedLimits) -> ReportOutcome | None:
    """The report a leaf part holds (accepted or rejected), or None when it holds none."""
    declared = part.get_content_type() in DECLARED_REPORT_TYPES
    data = _payload_bytes(part)
    if len(data) > limits.max_compressed_bytes:
        if declared:
            return RejectedReport(
                (f"{label} is {len(data)} bytes; the limit is {limits.max_compressed_bytes}",)
            )
        return None
    if declared:
        inflated = inflate_payload(data, limits)
        if isinstance(inflated, PayloadError):
            return RejectedReport((inflated.reason,))
        return parse_report_json(inflated, limits)
    if is_gzip(data):
        inflated = inflate_payload(data, limits)
        if isinstance(inflated, PayloadError):
            return None  # an undeclared broken archive is nobody's report we can tell
        data = inflated
    if looks_like_report(data):
        return parse_report_json(data, limits)
    return None


def extract_reports(data: bytes, limits: ReceivedLimits = DEFAULT_LIMITS) -> ExtractedMessage:
    """Every RFC 8460 report in one RFC 5322 message, each parsed. Never raises."""
    if len(data) > limits.max_message_bytes:
        return ExtractedMessage(
            MessageInfo(),
            (),
            (f"the message is {len(data)} bytes; the limit is {limits.max_message_bytes}",),
        )
    containers = len(_CONTAINER_TYPE.findall(data))
    if containers > limits.max_mime_containers:
        return ExtractedMessage(
            MessageInfo(),
            (),
            (
                f"the message declares {containers} multipart or message parts; "
                f"the limit is {limits.max_mime_containers}",
            ),
        )
    message = message_from_bytes(data, policy=compat32)
    info = message_info(message)
    found: list[FoundReport] = []
    problems: list[str] = []
    leaves = 0
    for part in message.walk():
        if part.is_multipart():
            continue
        leaves += 1
        if leaves > limits.max_mime_parts:
            problems.append(
                f"more than {limits.max_mime_parts} MIME parts; the rest were not looked at"
            )
            break
        label = _part_label(leaves, part.get_content_type(), _filename(part))
        outcome = _examine(part, label, limits)
        if outcome is not None:
            found.append(FoundReport(label, outcome))
    return ExtractedMessage(info, tuple(found), tuple(problems))
