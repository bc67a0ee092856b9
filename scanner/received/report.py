"""RFC 8460 §4 aggregate reports as received: parse, validate, and say why not.

Theory of operation: a report arrives as bytes (gzip or plain JSON, RFC 8460
§5.2/§5.3). `parse_report` inflates it within `ReceivedLimits`, decodes UTF-8,
reads JSON, and checks the object against RFC 8460 §4.4. The outcome is a value,
never an exception: `ParsedReport` (the typed report, the notes on what was
tolerated, and the hash of its canonical JSON) or `RejectedReport` (every reason,
each naming the JSON path it concerns). Any input, however hostile, yields one of
the two; a test feeds it arbitrary JSON and bytes to hold that.

What is rejected: anything that would make the numbers wrong or the report
unidentifiable. A required key missing or of the wrong type, a count that is not
a non-negative integer (booleans and floats are not integers), a date that is
not RFC 3339, a date range that ends before it starts, lasts longer than
`max_report_days` or lies outside `earliest_year`..`latest_year`, a report with
no policy (nothing would tie it to a policy domain), more policies or failure
details than the limits allow. And, before the JSON is parsed at all: nesting
deeper than `max_json_depth`, more than `max_json_values` values; while it is
parsed: a number that is not finite (`NaN`, `1e999999`).

What is tolerated, as real senders write it (and noted where it matters):
policy-string lines ending in CR (the CR is dropped), an empty `sending-mta-ip`
or `receiving-ip` (absent), `mx-host` as one string (RFC 8460's own example) or
a list, a missing `contact-info` (noted), free-text `failure-reason-code`,
unknown result types and policy types (kept, noted), unknown keys (ignored: §4.4
allows extension; neither hashed nor stored), a date-time without a time-offset
(read as UTC, noted), a policy without `policy-domain` (kept under
`UNKNOWN_POLICY_DOMAIN`, noted; the importer may attribute it), `contact-info: null`
(noted), a known misspelling of a key (`MISSPELT_KEYS`: read, noted), and a summary whose failure count disagrees with the sum of
its failure details (both kept, the disagreement noted; result types are not
mutually exclusive, §4.3, and senders may truncate the details).

No I/O here: no sockets, files, trio or databases.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Final

from scanner.received.limits import DEFAULT_LIMITS, ReceivedLimits

GZIP_MAGIC: Final = b"\x1f\x8b"
UTF8_BOM: Final = b"\xef\xbb\xbf"

# RFC 8460 §4.3 and the IANA "STARTTLS Validation Result Types" registry.
TLS_NEGOTIATION_RESULT_TYPES: Final = frozenset(
    {
        "starttls-not-supported",
        "certificate-host-mismatch",
        "certificate-expired",
        "certificate-not-trusted",
        "validation-failure",
    }
)
DANE_POLICY_RESULT_TYPES: Final = frozenset({"tlsa-invalid", "dnssec-invalid", "dane-required"})
# RFC 8460 §4.3.2.2, "MTA-STS-specific Policy Failures": the policy itself failed,
# not one session's negotiation.
STS_POLICY_RESULT_TYPES: Final = frozenset(
    {"sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"}
)
KNOWN_RESULT_TYPES: Final = (
    TLS_NEGOTIATION_RESULT_TYPES | DANE_POLICY_RESULT_TYPES | STS_POLICY_RESULT_TYPES
)
# RFC 8460 §4.4: "policy-type": "tlsa" / "sts" / "no-policy-found".
KNOWN_POLICY_TYPES: Final = frozenset({"sts", "tlsa", "no-policy-found"})

# A policy that names no policy-domain (a reporter library's no-policy-found entries,
# before its late-2025 fix) is kept under this value, unless the email attributes it.
UNKNOWN_POLICY_DOMAIN: Final = ""

MAX_REASONS: Final = 20  # reasons kept for one rejected report; the rest are counted


# ---------------------------------------------------------------- typed values


@dataclass(frozen=True, slots=True)
class DateRange:
    """RFC 8460 §4.4 `date-range`, both ends as aware UTC datetimes."""

    start: datetime
    end: datetime

    @property
    def day(self) -> date:
        """The UTC day a report is counted on: the day its range starts (§4.1: a UTC day)."""
        return self.start.date()


@dataclass(frozen=True, slots=True)
class Policy:
    """RFC 8460 §4.4 `policy`. Wire strings from the sender are kept as they came.

    `policy_type` and the result types stay `str`, not enums: the vocabulary is
    open (a registry), and a value we do not know is data to show, not an error.
    """

    policy_type: str
    policy_domain: str  # lower case, no trailing dot; UNKNOWN_POLICY_DOMAIN ("") when not said
    policy_strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()

    @property
    def mode(self) -> str | None:
        """The `mode:` of an sts policy-string (RFC 8461 §3.2), or None."""
        for line in self.policy_strings:
            key, colon, value = line.partition(":")
            if colon and key.strip() == "mode":
                return value.strip()
        return None


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """One RFC 8460 §4.4 `failure-details` entry. Empty addresses are None."""

    result_type: str
    failed_session_count: int
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None  # lower case, no trailing dot
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    failure_reason_code: str | None = None
    additional_information: str | None = None

    @property
    def is_policy_failure(self) -> bool:
        """An MTA-STS policy failure (§4.3.2.2) rather than one session's negotiation."""
        return self.result_type in STS_POLICY_RESULT_TYPES


@dataclass(frozen=True, slots=True)
class PolicyReport:
    """One entry of `policies`: the policy, its summary counts and its failure details."""

    policy: Policy
    successful_sessions: int
    failed_sessions: int
    failure_details: tuple[FailureDetail, ...] = ()

    @property
    def sessions(self) -> int:
        return self.successful_sessions + self.failed_sessions

    @property
    def detail_failures(self) -> int:
        """The failed sessions the failure details add up to."""
        return sum(detail.failed_session_count for detail in self.failure_details)

    @property
    def summary_disagrees(self) -> bool:
        """The summary's failure count is not the sum of the details' counts."""
        return self.detail_failures != self.failed_sessions


@dataclass(frozen=True, slots=True)
class TlsReport:
    """An RFC 8460 §4.4 report. `key` is what it claims to be; a stored report is
    identified by who vouches for it and its report-id (`records.StoredReport.key`)."""

    organization_name: str
    report_id: str
    date_range: DateRange
    contact_info: str | None
    policies: tuple[PolicyReport, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.organization_name, self.report_id)

    def policies_for(self, domain: str) -> tuple[PolicyReport, ...]:
        wanted = normalise_domain(domain)
        return tuple(entry for entry in self.policies if entry.policy.policy_domain == wanted)


@dataclass(frozen=True, slots=True)
class ParsedReport:
    """An accepted report: the typed value, what was tolerated, and its identity.

    `canonical_json` is the report as validated (`report_value`: its RFC 8460
    fields only, normalised), serialised with sorted keys, no spaces, ASCII only:
    what the database stores, and parses back to the same `report`.
    `content_hash` is the SHA-256 in hex of `canonical_json`: the validated form,
    so two copies that differ only in what is not read (unknown keys, spacing,
    a time-offset written `+00:00` or not at all) are the same report. The same
    report sent gzipped by mail and plain over HTTPS has the same hash.
    """

    report: TlsReport
    notes: tuple[str, ...]
    canonical_json: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class RejectedReport:
    """A report that cannot be used, and every reason found (at most `MAX_REASONS`)."""

    reasons: tuple[str, ...]

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


ReportOutcome = ParsedReport | RejectedReport


# ---------------------------------------------------------------- bytes to JSON text


@dataclass(frozen=True, slots=True)
class PayloadError:
    """Why a payload gives no JSON text (too large, broken gzip); `too_large` for the size caps."""

    reason: str
    too_large: bool = False


def is_gzip(data: bytes) -> bool:
    return data.startswith(GZIP_MAGIC)


# RFC 8460 §5.2: "application/tlsrpt+gzip" is the report JSON compressed with gzip
# (RFC 1952). A gzip file may hold several members (§2.2); at most `max_gzip_members`
# are inflated, and never more than `max_decompressed_bytes` of output is produced.
# The input is fed in `INFLATE_CHUNK` pieces of a memoryview, so what is left after
# a member's end is never copied whole: the time is linear in the input.
INFLATE_CHUNK: Final = 64 * 1024


def inflate_payload(data: bytes, limits: ReceivedLimits = DEFAULT_LIMITS) -> bytes | PayloadError:
    """The JSON bytes of a report as delivered: gunzipped when it starts with the gzip magic."""
    if len(data) > limits.max_compressed_bytes:
        return PayloadError(
            f"the report is {len(data)} bytes; the limit is {limits.max_compressed_bytes}",
            too_large=True,
        )
    if not is_gzip(data):
        if len(data) > limits.max_decompressed_bytes:
            return PayloadError(
                f"the report is {len(data)} bytes; the limit is {limits.max_decompressed_bytes}",
                too_large=True,
            )
        return data
    view = memoryview(data)
    output = bytearray()
    position = 0
    members = 0
    while position < len(data) and data.startswith(GZIP_MAGIC, position):
        members += 1
        if members > limits.max_gzip_members:
            return PayloadError(
                f"the gzip data has more than {limits.max_gzip_members} members", too_large=True
            )
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not inflater.eof:
            if position >= len(data):
                return PayloadError("the gzip data is truncated")
            chunk = view[position : position + INFLATE_CHUNK]
            position += len(chunk)
            budget = limits.max_decompressed_bytes - len(output)
            try:
                output += inflater.decompress(chunk, budget + 1)
            except zlib.error as exc:
                return PayloadError(f"the gzip data is corrupt: {exc}")
            if len(output) > limits.max_decompressed_bytes:
                return PayloadError(
                    f"the report inflates to more than {limits.max_decompressed_bytes} bytes",
                    too_large=True,
                )
        position -= len(inflater.unused_data)
    # What follows the last member and is no member is trailing garbage, as gzip(1) tolerates.
    return bytes(output)


def looks_like_report(text: bytes) -> bool:
    """Cheap recognition of RFC 8460 JSON among attachments: an object naming its keys."""
    head = text.lstrip(b" \t\r\n")
    if head.startswith(UTF8_BOM):
        head = head[len(UTF8_BOM) :].lstrip(b" \t\r\n")
    return (
        head.startswith(b"{")
        and b'"policies"' in text
        and (b'"report-id"' in text or b'"organization-name"' in text)
    )


def parse_report(data: bytes, limits: ReceivedLimits = DEFAULT_LIMITS) -> ReportOutcome:
    """A report from its bytes as delivered (gzip or not). Never raises."""
    inflated = inflate_payload(data, limits)
    if isinstance(inflated, PayloadError):
        return RejectedReport((inflated.reason,))
    return parse_report_json(inflated, limits)


class _NotJson(ValueError):
    pass


def _refuse_constant(name: str) -> object:
    raise _NotJson(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 30 else text[:27] + "..."
        raise _NotJson(f"{shown} is not a finite number")
    return value


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_EMPTY_PAIR = re.compile(rb"\{\}|\[\]")
_NOT_STRUCTURE = bytes(set(range(256)) - set(b"[]{},"))
SHAPE_CHUNK: Final = 64 * 1024  # bytes scanned per call, so that a thread yields between them


def _structure(text: bytes) -> Iterator[bytes]:
    """The brackets and commas of JSON text outside its strings, piece by piece.

    Escape pairs are dropped, then strings, then all but `[]{},`. The state across
    pieces: inside a string or not, and a backslash whose escaped byte is in the next.
    """
    inside = False
    escaped = False
    for start in range(0, len(text), SHAPE_CHUNK):
        piece = text[start : start + SHAPE_CHUNK]
        if escaped:
            piece, escaped = piece[1:], False
        piece = _ESCAPE.sub(b"", piece)
        if piece.endswith(b"\\"):
            piece, escaped = piece[:-1], True
        if inside:
            end = piece.find(b'"')
            if end < 0:
                continue
            piece, inside = piece[end + 1 :], False
        piece = _STRING.sub(b"", piece)
        opening = piece.find(b'"')
        if opening >= 0:
            piece, inside = piece[:opening], True
        yield piece.translate(None, _NOT_STRUCTURE)


def json_shape_problem(text: bytes, max_depth: int, max_values: int) -> str | None:
    """Why JSON text is nested too deeply or holds too many values, or None.

    Linear, in pieces, before any parsing (a recursive parser must never meet the
    nesting): the structure outside strings (`_structure`) gives the values (commas
    and arrays and objects, a bound within a few of the truth); then innermost empty
    pairs of brackets are removed, one level per pass, `max_depth` passes at most.
    In JSON, quotes delimit exactly the strings once escape pairs are gone, so the
    brackets left balance; brackets that do not are refused here (the parser would
    recurse into them before finding out). A backslash outside a string (which could
    shift the quotes) is not JSON, and the parser stops there, before any bracket
    this scan did not count.
    """
    brackets = bytearray()
    values = 1
    for piece in _structure(text):
        commas = piece.count(b",")
        values += commas + (len(piece) - commas + 1) // 2
        if values > max_values:
            return f"more than {max_values} values"
        brackets += piece.replace(b",", b"")
    remaining = bytes(brackets)
    for _ in range(max_depth):
        if not remaining:
            return None
        reduced = _EMPTY_PAIR.sub(b"", remaining)
        if len(reduced) == len(remaining):
            return "its brackets do not balance"
        remaining = reduced
    return f"nested more than {max_depth} deep" if remaining else None


def parse_report_json(text: bytes, limits: ReceivedLimits = DEFAULT_LIMITS) -> ReportOutcome:
    """A report from its JSON bytes (UTF-8, a byte-order mark allowed). Never raises."""
    if len(text) > limits.max_decompressed_bytes:
        return RejectedReport(
            (f"the report is {len(text)} bytes; the limit is {limits.max_decompressed_bytes}",)
        )
    if text.startswith(UTF8_BOM):
        text = text[len(UTF8_BOM) :]
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RejectedReport((f"the report is not UTF-8 (byte {exc.start})",))
    shape = json_shape_problem(text, limits.max_json_depth, limits.max_json_values)
    if shape is not None:
        return RejectedReport((f"the report is not JSON we read: {shape}",))
    try:
        value = json.loads(decoded, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotJson as exc:
        return RejectedReport((f"the report is not JSON: {exc}",))
    except RecursionError:
        return RejectedReport(("the report is not JSON we can read: nested too deeply",))
    except ValueError as exc:  # json.JSONDecodeError, and integers beyond the digit limit
        return RejectedReport((f"the report is not JSON: {exc}",))
    return parse_report_value(value, limits)


def canonical_json(value: object) -> str:
    """Sorted keys, no whitespace, ASCII only: equal JSON values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# ---------------------------------------------------------------- JSON value to report


@dataclass(slots=True)
class _Findings:
    reasons: list[str]
    notes: list[str]
    omitted: int = 0

    def reject(self, path: str, why: str) -> None:
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"{path}: {why}" if path else why)
        else:
            self.omitted += 1

    def note(self, path: str, what: str) -> None:
        if len(self.notes) < MAX_REASONS:
            self.notes.append(f"{path}: {what}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: object) -> str:
    """A short description of a JSON value for a reason (never the whole value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 30 else text[:27] + "..."
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return json.dumps(shown)
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: str, path: str, findings: _Findings) -> str:
    """A JSON string made storable: unpaired surrogates (not Unicode) become U+FFFD."""
    if _SURROGATE.search(value) is None:
        return value
    findings.note(path, "unpaired surrogates replaced by U+FFFD")
    return _SURROGATE.sub("\ufffd", value)


def _required_string(
    obj: Mapping[str, object], key: str, path: str, findings: _Findings, *, non_empty: bool = True
) -> str | None:
    where = _join(path, key)
    if key not in obj:
        findings.reject(where, "required, missing")
        return None
    value = obj[key]
    if not isinstance(value, str):
        findings.reject(where, f"must be a string, got {_describe(value)}")
        return None
    if non_empty and not value.strip():
        findings.reject(where, "must not be empty")
        return None
    return _text(value, where, findings)


def _optional_string(
    obj: Mapping[str, object], key: str, path: str, findings: _Findings
) -> str | None:
    """A string that may be absent or empty (both give None); other types are noted and dropped."""
    where = _join(path, key)
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        findings.note(where, f"ignored: not a string ({_describe(value)})")
        return None
    value = value.strip()
    return _text(value, where, findings) if value else None


def _count(
    obj: Mapping[str, object], key: str, path: str, findings: _Findings, limits: ReceivedLimits
) -> int | None:
    """RFC 8460 §4.4 counts: integers, at least 0. Booleans are not integers."""
    where = f"{path}.{key}"
    if key not in obj:
        findings.reject(where, "required, missing")
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        findings.reject(where, f"must be a non-negative integer, got {_describe(value)}")
        return None
    if value < 0:
        findings.reject(where, f"must be a non-negative integer, got {value}")
        return None
    if value > limits.max_session_count:
        findings.reject(where, f"{value} exceeds the limit of {limits.max_session_count}")
        return None
    return value


def _object(value: object, path: str, findings: _Findings) -> Mapping[str, object] | None:
    if not isinstance(value, dict):
        findings.reject(path, f"must be an object, got {_describe(value)}")
        return None
    return value


# RFC 3339 §5.6:
#   date-time    = full-date "T" full-time        ; "t" and (§5.6 NOTE) " " also seen
#   full-date    = date-fullyear "-" date-month "-" date-mday
#   full-time    = partial-time time-offset
#   partial-time = time-hour ":" time-minute ":" time-second [time-secfrac]
#   time-offset  = "Z" / time-numoffset           ; time-numoffset = ("+" / "-") HH ":" MM
#   (a sender's quirk: no time-offset at all; read as UTC by `parse_report_datetime`)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?",
    re.ASCII,
)


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 date-time as an aware UTC datetime, or None when it is not one.

    A leap second (`:60`) is read as `:59`; fractions beyond microseconds are cut.
    A date-time without a time-offset is not RFC 3339: None (see `parse_report_datetime`).
    """
    moment, offset_given = parse_report_datetime(text)
    return moment if offset_given else None


def parse_report_datetime(text: str) -> tuple[datetime | None, bool]:
    """A report's date-time as an aware UTC datetime, and whether it gave a time-offset.

    Some senders (a large mailbox provider's reports of early 2023) write
    `2023-01-10T00:00:00` with no offset; RFC 8460 §4.1 has report days in UTC, so
    such a time is read as UTC, and the caller notes it.
    """
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        return None, False
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7)
    micros = int((fraction[1:] + "000000")[:6]) if fraction else 0
    offset_text = match.group(8)
    if offset_text is None or offset_text in ("Z", "z"):
        offset = timedelta(0)
    else:
        sign = -1 if offset_text[0] == "-" else 1
        hours, minutes = int(offset_text[1:3]), int(offset_text[4:6])
        if hours > 23 or minutes > 59:
            return None, False
        offset = sign * timedelta(hours=hours, minutes=minutes)
    try:
        moment = datetime(
            year, month, day, hour, minute, min(second, 59), micros, tzinfo=timezone(offset)
        )
        return moment.astimezone(UTC), offset_text is not None
    except (ValueError, OverflowError):  # day 31 of April, hour 25, year 0 shifted below 1
        return None, False


# RFC 8460 §4.1: a report covers one UTC day (longer is allowed, not usual); a range
# over `max_report_days`, or outside `earliest_year`..`latest_year`, is no real report's
# and would count in every window a reader asks about.
def _date_range(
    obj: Mapping[str, object], findings: _Findings, limits: ReceivedLimits
) -> DateRange | None:
    if "date-range" not in obj:
        findings.reject("date-range", "required, missing")
        return None
    range_object = _object(obj["date-range"], "date-range", findings)
    if range_object is None:
        return None
    ends: list[datetime | None] = []
    for key in ("start-datetime", "end-datetime"):
        text = _required_string(range_object, key, "date-range", findings)
        if text is None:
            ends.append(None)
            continue
        moment, offset_given = parse_report_datetime(text)
        if moment is None:
            findings.reject(f"date-range.{key}", f"not an RFC 3339 date-time: {_describe(text)}")
        elif not offset_given:
            findings.note(f"date-range.{key}", f"no UTC offset in {_describe(text)}: read as UTC")
        ends.append(moment)
    start, end = ends
    if start is None or end is None:
        return None
    if end < start:
        findings.reject("date-range", "end-datetime is before start-datetime")
        return None
    if (end - start).total_seconds() > limits.max_report_days * 86400:
        findings.reject(
            "date-range",
            f"it lasts {(end - start).days} days; the limit is {limits.max_report_days}",
        )
        return None
    if start.year < limits.earliest_year or end.year > limits.latest_year:
        findings.reject(
            "date-range",
            f"it is not within the years {limits.earliest_year} to {limits.latest_year}",
        )
        return None
    return DateRange(start, end)


def normalise_domain(name: str) -> str:
    """Lower case, surrounding spaces and one trailing dot removed."""
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") else name


def _ip_text(obj: Mapping[str, object], key: str, path: str, findings: _Findings) -> str | None:
    """An address field: empty is absent (real senders write ""); text that is no IP is kept, noted."""
    value = _optional_string(obj, key, path, findings)
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        findings.note(f"{path}.{key}", f"not an IP address: {_describe(value)}")
        return value


def _policy(value: object, path: str, findings: _Findings) -> Policy | None:
    obj = _object(value, path, findings)
    if obj is None:
        return None
    policy_type = _required_string(obj, "policy-type", path, findings)
    domain: str | None = UNKNOWN_POLICY_DOMAIN
    if "policy-domain" in obj:
        domain = _required_string(obj, "policy-domain", path, findings)
    else:
        findings.note(
            f"{path}.policy-domain",
            "missing (RFC 8460 §4.4 requires it): kept under an unknown policy domain",
        )
    if policy_type is not None and policy_type not in KNOWN_POLICY_TYPES:
        findings.note(f"{path}.policy-type", f"unknown policy type {_describe(policy_type)}")
    strings: list[str] = []
    raw_strings = obj.get("policy-string")
    if isinstance(raw_strings, list):
        for index, line in enumerate(raw_strings):
            if isinstance(line, str):
                strings.append(
                    _text(line.rstrip("\r\n"), f"{path}.policy-string[{index}]", findings)
                )
            else:
                findings.note(f"{path}.policy-string[{index}]", "ignored: not a string")
    elif isinstance(raw_strings, str):  # one string, as some senders write it
        strings.extend(
            _text(line.rstrip("\r"), f"{path}.policy-string", findings)
            for line in raw_strings.split("\n")
            if line.strip()
        )
    elif raw_strings is not None:
        findings.note(f"{path}.policy-string", f"ignored: {_describe(raw_strings)}")
    hosts: list[str] = []
    raw_hosts = obj.get("mx-host")
    # RFC 8460 §4.4 lists mx-host as a list; its own example (§4.5) gives one string.
    host_values = [raw_hosts] if isinstance(raw_hosts, str) else raw_hosts
    if isinstance(host_values, list):
        for index, host in enumerate(host_values):
            if isinstance(host, str) and host.strip():
                hosts.append(normalise_domain(_text(host, f"{path}.mx-host[{index}]", findings)))
            elif not isinstance(host, str):
                findings.note(f"{path}.mx-host[{index}]", "ignored: not a string")
    elif raw_hosts is not None:
        findings.note(f"{path}.mx-host", f"ignored: {_describe(raw_hosts)}")
    if policy_type is None or domain is None:
        return None
    return Policy(policy_type, normalise_domain(domain), tuple(strings), tuple(hosts))


def _failure_detail(
    value: object, path: str, findings: _Findings, limits: ReceivedLimits
) -> FailureDetail | None:
    obj = _object(value, path, findings)
    if obj is None:
        return None
    result_type = _required_string(obj, "result-type", path, findings)
    count = _count(obj, "failed-session-count", path, findings, limits)
    if result_type is not None and result_type not in KNOWN_RESULT_TYPES:
        findings.note(f"{path}.result-type", f"unknown result type {_describe(result_type)}")
    obj = _read_misspellings(obj, path, findings)
    mx = _optional_string(obj, "receiving-mx-hostname", path, findings)
    detail = FailureDetail(
        result_type=result_type or "",
        failed_session_count=count or 0,
        sending_mta_ip=_ip_text(obj, "sending-mta-ip", path, findings),
        receiving_mx_hostname=normalise_domain(mx) if mx is not None else None,
        receiving_mx_helo=_optional_string(obj, "receiving-mx-helo", path, findings),
        receiving_ip=_ip_text(obj, "receiving-ip", path, findings),
        failure_reason_code=_optional_string(obj, "failure-reason-code", path, findings),
        additional_information=_optional_string(obj, "additional-information", path, findings),
    )
    return detail if result_type is not None and count is not None else None


# Misspellings of RFC 8460 §4.4 keys that senders have shipped: read as the key meant.
MISSPELT_KEYS: Final = {
    "receiving-mx-host-name": "receiving-mx-hostname",
}


def _read_misspellings(
    obj: Mapping[str, object], path: str, findings: _Findings
) -> Mapping[str, object]:
    """`obj` with a misspelt key's value under the key meant (when that is absent), noted."""
    found = [key for key in MISSPELT_KEYS if key in obj and MISSPELT_KEYS[key] not in obj]
    if not found:
        return obj
    corrected = dict(obj)
    for misspelt in found:
        corrected[MISSPELT_KEYS[misspelt]] = obj[misspelt]
        findings.note(_join(path, misspelt), f"misspelt: read as {MISSPELT_KEYS[misspelt]}")
    return corrected


def _policy_report(
    value: object, path: str, findings: _Findings, limits: ReceivedLimits, budget: list[int]
) -> PolicyReport | None:
    obj = _object(value, path, findings)
    if obj is None:
        return None
    policy: Policy | None = None
    if "policy" not in obj:
        findings.reject(f"{path}.policy", "required, missing")
    else:
        policy = _policy(obj["policy"], f"{path}.policy", findings)
    successful = failed = None
    if "summary" not in obj:
        findings.reject(f"{path}.summary", "required, missing")
    else:
        summary = _object(obj["summary"], f"{path}.summary", findings)
        if summary is not None:
            successful = _count(
                summary, "total-successful-session-count", f"{path}.summary", findings, limits
            )
            failed = _count(
                summary, "total-failure-session-count", f"{path}.summary", findings, limits
            )
    details: list[FailureDetail] = []
    raw_details = obj.get("failure-details", [])
    if raw_details is None:
        raw_details = []
    if not isinstance(raw_details, list):
        findings.reject(f"{path}.failure-details", f"must be a list, got {_describe(raw_details)}")
    elif len(raw_details) > budget[0]:
        findings.reject(
            f"{path}.failure-details",
            f"more than {limits.max_failure_details} failure details in the report",
        )
    else:
        budget[0] -= len(raw_details)
        for index, raw in enumerate(raw_details):
            detail = _failure_detail(raw, f"{path}.failure-details[{index}]", findings, limits)
            if detail is not None:
                details.append(detail)
    if policy is None or successful is None or failed is None:
        return None
    entry = PolicyReport(policy, successful, failed, tuple(details))
    if entry.summary_disagrees and not findings.reasons:
        findings.note(
            path,
            f"the summary counts {failed} failed sessions, the failure details "
            f"add up to {entry.detail_failures}",
        )
    return entry


def parse_report_value(value: object, limits: ReceivedLimits = DEFAULT_LIMITS) -> ReportOutcome:
    """A report from a decoded JSON value (RFC 8460 §4.4). Never raises."""
    findings = _Findings([], [])
    report = _report(value, findings, limits)
    if findings.reasons or report is None:
        reasons = findings.reasons or ["the report is not usable"]
        if findings.omitted:
            reasons.append(f"... and {findings.omitted} more problems")
        return RejectedReport(tuple(reasons))
    validated = canonical_json(report_value(report))
    return ParsedReport(
        report=report,
        notes=tuple(findings.notes),
        canonical_json=validated,
        content_hash=content_hash(validated),
    )


def content_hash(validated_json: str) -> str:
    """SHA-256 in hex of a report's canonical validated JSON (`ParsedReport.canonical_json`)."""
    return hashlib.sha256(validated_json.encode("ascii")).hexdigest()


def _report(value: object, findings: _Findings, limits: ReceivedLimits) -> TlsReport | None:
    if not isinstance(value, dict):
        findings.reject("", f"the report must be a JSON object, got {_describe(value)}")
        return None
    organization = _required_string(value, "organization-name", "", findings)
    report_id = _required_string(value, "report-id", "", findings)
    date_range = _date_range(value, findings, limits)
    contact: str | None = None
    if "contact-info" not in value:
        findings.note("contact-info", "missing (RFC 8460 §4.4 requires it)")
    elif value["contact-info"] is None:
        findings.note("contact-info", "null (RFC 8460 §4.4 requires it)")
    else:
        contact = _optional_string(value, "contact-info", "", findings)
    policies: list[PolicyReport] = []
    if "policies" not in value:
        findings.reject("policies", "required, missing")
    elif not isinstance(value["policies"], list):
        findings.reject("policies", f"must be a list, got {_describe(value['policies'])}")
    elif len(value["policies"]) > limits.max_policies:
        findings.reject(
            "policies", f"{len(value['policies'])} policies; the limit is {limits.max_policies}"
        )
    else:
        if not value["policies"]:
            findings.reject("policies", "empty: a report names at least one policy (RFC 8460 §4.4)")
        budget = [limits.max_failure_details]
        for index, raw in enumerate(value["policies"]):
            entry = _policy_report(raw, f"policies[{index}]", findings, limits, budget)
            if entry is not None:
                policies.append(entry)
    if organization is None or report_id is None or date_range is None:
        return None
    return TlsReport(organization, report_id, date_range, contact, tuple(policies))


# ---------------------------------------------------------------- report to JSON value


def format_rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC, four-digit year, microseconds when there are any."""
    moment = moment.astimezone(UTC)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    return text + (f".{moment.microsecond:06d}Z" if moment.microsecond else "Z")


def _present(**fields: object) -> dict[str, object]:
    return {key.replace("_", "-"): value for key, value in fields.items() if value is not None}


def report_value(report: TlsReport) -> dict[str, object]:
    """The report as RFC 8460 §4.4 JSON: the fields this parser reads, as it read them.

    `parse_report_value` gives back the same `TlsReport` (what the database relies on).
    """
    return _present(
        organization_name=report.organization_name,
        report_id=report.report_id,
        date_range={
            "start-datetime": format_rfc3339(report.date_range.start),
            "end-datetime": format_rfc3339(report.date_range.end),
        },
        contact_info=report.contact_info,
        policies=[
            {
                "policy": _present(
                    policy_type=entry.policy.policy_type,
                    policy_domain=entry.policy.policy_domain or None,
                    policy_string=list(entry.policy.policy_strings),
                    mx_host=list(entry.policy.mx_hosts),
                ),
                "summary": {
                    "total-successful-session-count": entry.successful_sessions,
                    "total-failure-session-count": entry.failed_sessions,
                },
                "failure-details": [
                    _present(
                        result_type=detail.result_type,
                        failed_session_count=detail.failed_session_count,
                        sending_mta_ip=detail.sending_mta_ip,
                        receiving_mx_hostname=detail.receiving_mx_hostname,
                        receiving_mx_helo=detail.receiving_mx_helo,
                        receiving_ip=detail.receiving_ip,
                        failure_reason_code=detail.failure_reason_code,
                        additional_information=detail.additional_information,
                    )
                    for detail in entry.failure_details
                ],
            }
            for entry in report.policies
        ],
    )
