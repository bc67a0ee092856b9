"""RFC 8460 report files from result files: names (§5.1) and writing (§5.2 gzip)."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from scanner.core.assess import as_utc
from scanner.files import NOT_JSON, decoded_lines
from scanner.output import schema_problem
from scanner.render import output_console
from scanner.untrusted import safe_filename, terminal, visible

_UNIQUE_ID = re.compile(r"[A-Za-z0-9]+")


# RFC 8460 §5.1:
#   filename = sender "!" policy-domain "!" begin-timestamp "!" end-timestamp
#              [ "!" unique-id ] "." extension
#   unique-id = 1*(ALPHA / DIGIT);  extension = "json" / "json.gz"
def report_filename(
    submitter: str,
    policy_domain: str,
    begin: datetime,
    end: datetime,
    *,
    gzip: bool,
    unique_id: str | None,
) -> str:
    """The recommended report file name; timestamps are Unix seconds (naive input is UTC).

    Raises ValueError for a `unique_id` that is not letters and digits, or a name
    containing `!` (both are caller bugs: the grammar has no escape).
    """
    if unique_id is not None and _UNIQUE_ID.fullmatch(unique_id) is None:
        raise ValueError(f"unique-id must be letters and digits: {unique_id!r}")
    for name in (submitter, policy_domain):
        if "!" in name or not name:
            raise ValueError(f"not a usable file name part: {name!r}")
    parts = [
        submitter,
        policy_domain,
        str(int(as_utc(begin).timestamp())),
        str(int(as_utc(end).timestamp())),
    ]
    if unique_id is not None:
        parts.append(unique_id)
    return "!".join(parts) + (".json.gz" if gzip else ".json")


def _parse_time(value: object) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.now(UTC)


@dataclass(slots=True)
class ReportWriting:
    written: int = 0
    skipped: int = 0  # lines without a report (error lines, foreign lines)
    refused: list[str] = field(default_factory=list)  # why a line's report was not written


def write_report_files(
    lines: Iterable[dict[str, object]],
    out_dir: Path,
    *,
    gzip_reports: bool,
    submitter: str | None,
) -> ReportWriting:
    """One report file per result line that has a report; other lines are counted skipped.

    The submitter of the name is `submitter`, else the domain of the report's
    contact-info. Every part of the name comes from the file, so from strangers: a
    name that is not one safe path component (`scanner.untrusted.safe_filename`) is
    refused with the reason, and nothing is ever written outside `out_dir`.
    """
    counts = ReportWriting()
    for line in lines:
        problem = schema_problem(line)
        if problem is not None:
            counts.refused.append(
                f"line of {visible(str(line.get('domain')), 100)} left out: {problem}"
            )
            continue
        report = line.get("report")
        domain = line.get("domain")
        if not isinstance(report, dict) or not isinstance(domain, str) or not domain:
            counts.skipped += 1
            continue
        contact = str(report.get("contact-info", ""))
        sender = submitter or contact.rpartition("@")[2] or "scanner.invalid"
        date_range = report.get("date-range")
        if not isinstance(date_range, dict):
            date_range = {}
        begin = _parse_time(date_range.get("start-datetime"))
        end = _parse_time(date_range.get("end-datetime"))
        try:
            name = safe_filename(
                report_filename(sender, domain, begin, end, gzip=gzip_reports, unique_id=None)
            )
        except ValueError as problem:
            counts.refused.append(f"report of {visible(domain, 100)} not written: {problem}")
            continue
        data = json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8")
        target = out_dir / name
        target.write_bytes(gzip.compress(data) if gzip_reports else data)
        counts.written += 1
    return counts


def read_lines(path: Path) -> Iterator[dict[str, object]]:
    """The JSON objects of a results file; other lines are skipped with a note on stderr."""
    stderr = output_console(stderr=True)
    for number, record in decoded_lines(path):
        if record is NOT_JSON:
            stderr.print(terminal(f"{path}:{number}: not a JSON line, skipped", None, "yellow"))
        elif isinstance(record, dict):
            yield record
