"""Result files read back as typed lines: the reading edge of research.

A results file is JSON lines (docs/output.md). This module is the one place where
research code touches those dicts: `read_results` yields a frozen `ScanLine` for each
line of a schema version this scanner knows (`scanner.output.KNOWN_SCHEMA_VERSIONS`)
and counts everything else in a `SkipTally`: lines that are not JSON, JSON that is
no result line (foreign), and lines of an unknown `schema_version`, with one note per
file and version naming it (docs/output.md#readers-and-versions).

Fields of an unexpected shape (a hand-edited or foreign file) read as absent, never
as an error: a number where a string belongs is None, a list that is no list is empty.
Words from the file stay strings (a later version may add values); code compares
them with the scanner's enums.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from scanner.files import NOT_JSON, decoded_lines
from scanner.models import AddressStatus, MxSource
from scanner.output import KNOWN_SCHEMA_VERSIONS
from scanner.research.kinds import (
    OTHER,
    legacy_sts_error_code,
    not_testable_kind,
    tlsrpt_error_kind,
)
from scanner.untrusted import visible

# Notes naming skipped lines are kept up to this many per tally; the counts are exact.
MAX_NOTES = 50
# The first schema version whose lines carry codes (docs/output.md#changelog); earlier
# lines have their codes named from their words by `scanner.research.kinds`.
CODES_SINCE = 3
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,79}")


class ResultFileError(Exception):
    """A results file that cannot be read at all (missing, a directory, unreadable)."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        self.why = why
        super().__init__(f"cannot read {path}: {why}")


@dataclass(frozen=True, slots=True)
class Certificate:
    sha256: str | None
    not_after: datetime | None
    chain_valid: bool | None
    verify_error: str | None
    name_matches: bool | None


@dataclass(frozen=True, slots=True)
class Address:
    ip: str
    status: str
    reason: str | None
    starttls: str | None
    tls_version: str | None
    certificate: Certificate | None
    result_types: tuple[str, ...]
    transcript: tuple[str, ...]
    after_tls_error: str | None
    attempts: int | None
    dane_status: str | None = None  # the address's DANE status (docs/dane.md), when checked
    # The not-testable reason's code (docs/output.md#not-testable-reasons): written by
    # schema 3, named from the `reason` text for versions 1 and 2.
    reason_code: str | None = None

    @property
    def tested(self) -> bool:
        return self.status == AddressStatus.TESTED

    @property
    def not_testable(self) -> bool:
        return self.status == AddressStatus.NOT_TESTABLE


@dataclass(frozen=True, slots=True)
class MxHost:
    hostname: str
    preference: int | None
    source: str
    in_policy: bool | None
    addresses: tuple[Address, ...]
    # DANE for the host (docs/output.md#dane), when it was looked into: how many TLSA
    # records, the DNSSEC status of their lookup and of the domain's MX RRset.
    tlsa_records: int = 0
    tlsa_dnssec: str | None = None
    mx_dnssec: str | None = None

    @property
    def from_dns(self) -> bool:
        return self.source == MxSource.DNS


@dataclass(frozen=True, slots=True)
class Policy:
    mode: str
    max_age: int | None
    mx: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Indicator:
    code: str
    mx: str | None
    ip: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class OverLimit:
    cap: str
    skipped: int


@dataclass(frozen=True, slots=True)
class ScanLine:
    """One result line as research reads it; `error` is set on an error line."""

    schema_version: int
    domain: str
    rank: int | None
    scanned_at: datetime | None
    error: str | None
    sts_record: str | None
    sts_id: str | None
    policy: Policy | None
    policy_text: str | None
    sts_error_type: str | None
    sts_error_detail: str | None
    sts_error_code: str | None  # a RecordCode or PolicyCode (docs/output.md#codes)
    tlsrpt_record: str | None
    tlsrpt_error: str | None
    tlsrpt_error_code: str | None  # a RecordCode
    mx_status: str | None
    null_mx: bool
    implicit_mx: bool
    hosts: tuple[MxHost, ...]
    indicators: tuple[Indicator, ...]
    enforce_ready: bool
    over_limit: tuple[OverLimit, ...]
    # The codes of the blockers (schema 3), None for lines of versions 1 and 2, which
    # state blockers in words only.
    blocker_codes: tuple[str, ...] | None = None

    @property
    def dns_hosts(self) -> tuple[MxHost, ...]:
        """The MX hosts from DNS (or the implicit MX): what readiness and reports count."""
        return tuple(host for host in self.hosts if host.from_dns)


# ---------------------------------------------------------------- tolerant field access


def _object(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _items(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time of the line (`2026-11-28T04:00:00Z`), always aware; None otherwise."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _certificate(value: object) -> Certificate | None:
    if not isinstance(value, dict):
        return None
    return Certificate(
        sha256=_text(value.get("sha256")),
        not_after=parse_time(value.get("not_after")),
        chain_valid=_flag(value.get("chain_valid")),
        verify_error=_text(value.get("verify_error")),
        name_matches=_flag(value.get("name_matches")),
    )


def _code(value: object) -> str | None:
    """A code as written, when it has the shape of one; `other` for text that has not.

    Codes are short words of letters, digits and `-:._`; anything else (a hand-edited
    or hostile file) is never shown or counted as a code of its own.
    """
    if not isinstance(value, str):
        return None
    return value if _CODE.fullmatch(value) else OTHER


def _address(value: object, version: int) -> Address | None:
    data = _object(value)
    ip = _text(data.get("ip"))
    if ip is None:
        return None
    tls = _object(data.get("tls"))
    reason = _text(data.get("reason"))
    if version >= CODES_SINCE:
        code = _code(data.get("reason_code"))
    else:
        code = not_testable_kind(reason) if reason is not None else None
    return Address(
        ip=ip,
        status=_text(data.get("status")) or "",
        reason=reason,
        reason_code=code,
        starttls=_text(data.get("starttls")),
        tls_version=_text(tls.get("version")),
        certificate=_certificate(data.get("certificate")),
        result_types=tuple(t for t in _items(data.get("result_types")) if isinstance(t, str)),
        transcript=tuple(t for t in _items(data.get("transcript")) if isinstance(t, str)),
        after_tls_error=_text(data.get("after_tls_error")),
        attempts=_integer(data.get("attempts")),
        dane_status=_text(_object(data.get("dane")).get("status")),
    )


def _host(value: object, version: int) -> MxHost | None:
    data = _object(value)
    hostname = _text(data.get("hostname"))
    if hostname is None:
        return None
    addresses = (_address(item, version) for item in _items(data.get("addresses")))
    dane = _object(data.get("dane"))
    return MxHost(
        hostname=hostname,
        preference=_integer(data.get("preference")),
        source=_text(data.get("source")) or MxSource.DNS.value,
        in_policy=_flag(data.get("in_policy")),
        addresses=tuple(address for address in addresses if address is not None),
        tlsa_records=len(_items(dane.get("tlsa"))),
        tlsa_dnssec=_text(dane.get("dnssec")),
        mx_dnssec=_text(dane.get("mx_dnssec")),
    )


def _policy(value: object) -> Policy | None:
    data = _object(value)
    mode = _text(data.get("mode"))
    if mode is None:
        return None
    return Policy(
        mode=mode,
        max_age=_integer(data.get("max_age")),
        mx=tuple(p for p in _items(data.get("mx")) if isinstance(p, str)),
    )


def _indicator(value: object) -> Indicator | None:
    data = _object(value)
    code = _text(data.get("code"))
    if code is None:
        return None
    return Indicator(
        code=code,
        mx=_text(data.get("mx")),
        ip=_text(data.get("ip")),
        detail=_text(data.get("detail")) or "",
    )


def _over_limit(value: object) -> OverLimit | None:
    data = _object(value)
    cap = _text(data.get("cap"))
    return OverLimit(cap, _integer(data.get("skipped")) or 0) if cap is not None else None


def scan_line(record: Mapping[str, object], version: int) -> ScanLine:
    """The typed view of one result line whose `schema_version` is `version` (known)."""
    sts = _object(record.get("mta_sts"))
    sts_error = _object(sts.get("error"))
    tlsrpt = _object(record.get("tlsrpt"))
    lookup = _object(record.get("mx_lookup"))
    hosts = (_host(item, version) for item in _items(record.get("mx")))
    indicators = (_indicator(item) for item in _items(record.get("indicators")))
    over = (_over_limit(item) for item in _items(record.get("over_limit")))
    rank = _integer(record.get("rank"))
    sts_type = _text(sts_error.get("result_type"))
    sts_detail = _text(sts_error.get("detail"))
    tlsrpt_error = _text(tlsrpt.get("error"))
    if version >= CODES_SINCE:
        sts_code = _code(sts_error.get("code"))
        tlsrpt_code = _code(tlsrpt.get("error_code"))
    else:
        sts_code = legacy_sts_error_code(sts_type, sts_detail) if sts_error else None
        tlsrpt_code = tlsrpt_error_kind(tlsrpt_error) if tlsrpt_error is not None else None
    return ScanLine(
        schema_version=version,
        domain=_text(record.get("domain")) or "",
        rank=rank if rank is not None and rank >= 1 else None,
        scanned_at=parse_time(record.get("scanned_at")),
        error=_text(record.get("error")),
        sts_record=_text(sts.get("record")),
        sts_id=_text(sts.get("id")),
        policy=_policy(sts.get("policy")),
        policy_text=_text(sts.get("policy_text")),
        sts_error_type=sts_type,
        sts_error_detail=sts_detail,
        sts_error_code=sts_code,
        tlsrpt_record=_text(tlsrpt.get("record")),
        tlsrpt_error=tlsrpt_error,
        tlsrpt_error_code=tlsrpt_code,
        mx_status=_text(lookup.get("status")),
        null_mx=_flag(lookup.get("null_mx")) is True,
        implicit_mx=_flag(lookup.get("implicit")) is True,
        hosts=tuple(host for host in hosts if host is not None),
        indicators=tuple(indicator for indicator in indicators if indicator is not None),
        enforce_ready=_flag(record.get("enforce_ready")) is True,
        over_limit=tuple(entry for entry in over if entry is not None),
        blocker_codes=(
            tuple(
                code
                for item in _items(record.get("blockers"))
                if (code := _code(_object(item).get("code"))) is not None
            )
            if version >= CODES_SINCE
            else None
        ),
    )


# ---------------------------------------------------------------- reading files


@dataclass(slots=True)
class SkipTally:
    """What reading left out, over any number of files; `notes` name unknown versions."""

    read: int = 0  # result lines of a known version, error lines among them
    not_json: int = 0
    foreign: int = 0  # JSON, but no result line: not an object, no schema_version, no domain
    unknown_versions: Counter[str] = field(default_factory=Counter)  # version as written → lines
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.not_json + self.foreign + sum(self.unknown_versions.values())

    def note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)
        elif len(self.notes) == MAX_NOTES:
            self.notes.append("further notes left out")


def _version_word(version: object) -> str:
    """An unknown `schema_version` as it was written, shown inertly and briefly."""
    try:
        return visible(json.dumps(version, ensure_ascii=False), 40)
    except (TypeError, ValueError):
        return "?"


def classify_record(record: object) -> int | str:
    """The known schema version of a decoded line, or why it is not read.

    Returns the version (an int in `KNOWN_SCHEMA_VERSIONS`), `"foreign"`, or the
    unknown version as written (`"3"`, `"\\"2\\""`, `"null"`).
    """
    if not isinstance(record, dict) or "schema_version" not in record:
        return "foreign"
    version = record["schema_version"]
    if (
        isinstance(version, int)
        and not isinstance(version, bool)
        and version in KNOWN_SCHEMA_VERSIONS
    ):
        if not isinstance(record.get("domain"), str):
            return "foreign"
        return version
    return _version_word(version)


def read_results(path: Path, tally: SkipTally) -> Iterator[ScanLine]:
    """The typed lines of one results file, in file order; the rest counted in `tally`.

    Undecodable bytes are replaced. ResultFileError when the file cannot be opened
    or read; lines already yielded stand.
    """
    unknown: dict[str, tuple[int, int]] = {}  # version → (lines, first line number)
    try:
        for number, record in decoded_lines(path):
            if record is NOT_JSON:
                tally.not_json += 1
                continue
            kind = classify_record(record)
            if isinstance(kind, int):
                assert isinstance(record, dict)  # only an object has a known version
                tally.read += 1
                yield scan_line(record, kind)
            elif kind == "foreign":
                tally.foreign += 1
            else:
                tally.unknown_versions[kind] += 1
                count, first = unknown.get(kind, (0, number))
                unknown[kind] = (count + 1, first)
    except OSError as error:
        raise ResultFileError(path, error.strerror or str(error)) from None
    known = ", ".join(str(v) for v in sorted(KNOWN_SCHEMA_VERSIONS))
    for version, (count, first) in unknown.items():
        tally.note(
            f"{visible(str(path), 200)}: {count} line(s) with schema_version {version} skipped "
            f"(first at line {first}); this scanner reads versions {known}"
        )


RESULTS_FILE_PEEK = 100  # lines read to tell a results file from another file


def not_a_results_file(path: Path, peek: int = RESULTS_FILE_PEEK) -> str | None:
    """Why `path` is not a results file, from its first `peek` non-blank lines; None when
    it may be one (no line at all, or a result line, or one of a schema version this
    scanner does not read, among them). The commands that read results files ask this
    before any work, so that another file is a usage error, not a page of zeros.

    ResultFileError when the file cannot be opened or read.
    """
    seen = 0
    try:
        for _, record in decoded_lines(path):
            if record is not NOT_JSON and classify_record(record) != "foreign":
                return None
            seen += 1
            if seen >= peek:
                break
    except OSError as error:
        raise ResultFileError(path, error.strerror or str(error)) from None
    if not seen:
        return None
    which = "its one line is not" if seen == 1 else f"none of its first {seen} lines is"
    return f"{visible(str(path), 200)} is not a results file: {which} a result line"
