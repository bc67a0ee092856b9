"""The JSON line of one domain (docs/output.md) and its JSON Schema.

The JSON edge: a typed `DomainResult` comes in, a dict goes out, keys in the documented
order, and nothing else in the scanner builds or reads these dicts. `result_line` is the
line of any result; `dumps_line` writes one line of compact JSON. `load_schema` returns
the JSON Schema (draft 2020-12) every line satisfies, shipped as
`scanner/schema/result-line.schema.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Final

from scanner.core.assess import AddressVerdict, DomainVerdict, MxVerdict
from scanner.core.codes import Problem, ProblemCode, RecordCode
from scanner.core.dane import AddressDane, HostDaneVerdict, tlsa_text
from scanner.core.reasons import after_tls_text, reason_code, reason_text
from scanner.core.result import DomainResult, ErrorKind, ScanError
from scanner.core.tlsrpt import build_report, report_id, rfc3339_utc
from scanner.models import CertificateCheck, DomainFacts, Indicator, ProbeOutcome, ReportOptions
from scanner.untrusted import dumps_json_line

if TYPE_CHECKING:
    from scanner.received import ReceivedEvidence

SCHEMA_VERSION = 3
# Versions this scanner's readers (stats, report, diff) understand; see the changelog
# in docs/output.md. Lines of other versions are left out, and said so. `--resume`
# appends to files of the current version only.
KNOWN_SCHEMA_VERSIONS = frozenset({1, 2, 3})
SCHEMA_RESOURCE = "schema/result-line.schema.json"


def _certificate(check: CertificateCheck) -> dict[str, object]:
    leaf = check.leaf
    return {
        "subject": leaf.subject,
        "san": list(leaf.san),
        "san_count": leaf.san_total,
        "issuer": leaf.issuer,
        "not_before": rfc3339_utc(leaf.not_before) if leaf.not_before is not None else None,
        "not_after": rfc3339_utc(leaf.not_after) if leaf.not_after is not None else None,
        "sha256": leaf.sha256,
        "chain_valid": check.chain.trusted,
        "verify_error": check.chain.verify_error,
        "name_matches": check.name_matches,
    }


def _tls(probe: ProbeOutcome | None) -> dict[str, object] | None:
    if probe is None or probe.tls is None:
        return None
    return {"version": probe.tls.version, "cipher": probe.tls.cipher}


def _address(address: AddressVerdict) -> dict[str, object]:
    probe = address.probe
    return {
        "ip": address.ip,
        "status": address.status.value,
        "reason": reason_text(address.interruption) if address.interruption else None,
        "reason_code": reason_code(address.interruption) if address.interruption else None,
        "starttls": address.starttls.value if address.starttls is not None else None,
        "tls": _tls(probe),
        "certificate": (
            _certificate(probe.certificate)
            if probe is not None and probe.certificate is not None
            else None
        ),
        "result_types": [result_type.value for result_type in address.result_types],
        "transcript": list(probe.transcript) if probe is not None else [],
        "after_tls_error": (
            after_tls_text(probe.after_tls) if probe is not None and probe.after_tls else None
        ),
        "attempts": probe.attempts if probe is not None else 0,
        "dane": _address_dane(address.dane),
    }


def _mx(host: MxVerdict) -> dict[str, object]:
    return {
        "hostname": host.hostname,
        "preference": host.preference,
        "source": host.source.value,
        "in_policy": host.in_policy,
        "addresses": [_address(address) for address in host.addresses],
        "dane": _host_dane(host.dane),
    }


# docs/output.md#dane: what DNS said about DANE for one MX host (RFC 7672 §2.2).
def _host_dane(dane: HostDaneVerdict | None) -> dict[str, object] | None:
    if dane is None:
        return None
    facts = dane.facts
    answer = facts.tlsa
    return {
        "base_domain": facts.base_domain,
        "owner": facts.owner,
        "tlsa": [tlsa_text(record) for record in answer.records] if answer is not None else [],
        "dnssec": (answer.dnssec if answer is not None else facts.address_dnssec).value,
        "mx_dnssec": dane.mx_dnssec.value,
        "address_dnssec": facts.address_dnssec.value,
        "applies": dane.applies,
        "detail": dane.detail,
    }


# docs/output.md#dane: DANE for one session: its status and the record that matched.
def _address_dane(dane: AddressDane | None) -> dict[str, object] | None:
    if dane is None:
        return None
    return {
        "status": dane.status.value,
        "matched": tlsa_text(dane.matched) if dane.matched is not None else None,
        "depth": dane.depth,
        "detail": dane.detail,
    }


def _indicator(indicator: Indicator) -> dict[str, object]:
    return {
        "code": indicator.code.value,
        "mx": indicator.mx,
        "ip": indicator.ip,
        "detail": indicator.detail,
    }


def _mta_sts(facts: DomainFacts) -> dict[str, object]:
    record = facts.sts_record
    fetch = facts.policy_fetch
    policy = fetch.policy if fetch is not None else None
    error: dict[str, object] | None = None
    if record is None:
        missing = facts.sts_record_error
        error = {
            "result_type": None,
            "code": (missing.code if missing is not None else RecordCode.NO_RECORD).value,
            "detail": missing.detail if missing is not None else "no v=STSv1 record",
        }
    elif fetch is not None and fetch.failure is not None:
        error = {
            "result_type": fetch.failure.result_type.value,
            "code": fetch.failure.code.value,
            "detail": fetch.failure.detail,
        }
    return {
        "record": record.raw if record is not None else None,
        "id": record.id if record is not None else None,
        "policy": (
            {
                "version": policy.version,
                "mode": policy.mode.value,
                "mx": list(policy.mx),
                "max_age": policy.max_age,
            }
            if policy is not None
            else None
        ),
        "policy_text": fetch.text if fetch is not None else None,
        "error": error,
    }


def _tlsrpt(facts: DomainFacts) -> dict[str, object]:
    record = facts.tlsrpt_record
    missing = facts.tlsrpt_error
    if record is not None:
        error, code = None, None
    elif missing is not None:
        error, code = missing.detail, missing.code.value
    else:
        error, code = "no v=TLSRPTv1 record", RecordCode.NO_RECORD.value
    return {
        "record": record.raw if record is not None else None,
        "rua": list(record.rua) if record is not None else [],
        "error": error,
        "error_code": code,
    }


def problem_object(problem: Problem) -> dict[str, object]:
    """A blocker or warning of the line (docs/output.md#blockers-and-warnings)."""
    return {
        "code": problem.code,
        "text": problem.text,
        "host": problem.host,
        "address": problem.address,
        "cause": problem.cause,
    }


def result_line(result: DomainResult, options: ReportOptions) -> dict[str, object]:
    """The line of one result: a scanned domain with its RFC 8460 report, or an error line."""
    if result.error is not None or result.facts is None or result.verdict is None:
        error = result.error
        cause = error.kind.value if error is not None else None
        line = _with_rank(
            error_line(result.domain, str(error), result.scanned_at, cause=cause), result.rank
        )
        line["received_reports"] = None
        return line
    report = build_report(
        result.facts,
        result.verdict,
        options=options,
        window=(result.scanned_at, result.finished_at),
        report_id=report_id(result.domain, result.scanned_at),
    )
    line = _with_rank(scanned_line(result.facts, result.verdict, report), result.rank)
    line["received_reports"] = _received(result.received) if result.received is not None else None
    return line


def _with_rank(line: dict[str, object], rank: int | None) -> dict[str, object]:
    """`line` with `rank` (the input list's rank, or null) placed right after `domain`."""
    ranked: dict[str, object] = {}
    for key, value in line.items():
        ranked[key] = value
        if key == "domain":
            ranked["rank"] = rank
    return ranked


def _received(evidence: ReceivedEvidence) -> dict[str, object]:
    """What received TLS-RPT reports said (docs/received-reports.md#readiness-evidence)."""
    return {
        "window_start": rfc3339_utc(evidence.window_start),
        "window_end": rfc3339_utc(evidence.window_end),
        "reports": evidence.reports,
        "unverified_reports": evidence.unverified_reports,
        "successful_sessions": evidence.successful_sessions,
        "failed_sessions": evidence.failed_sessions,
        "failure_rate": evidence.failure_rate,
        "organizations": [
            {
                "organization": org.organization,
                "reports": org.reports,
                "successful_sessions": org.sessions.successful,
                "failed_sessions": org.sessions.failed,
                "failures_by_result_type": dict(org.failures_by_result_type),
                "receiving_mx": list(org.receiving_mx),
            }
            for org in evidence.organizations
        ],
        "failures_by_result_type": dict(evidence.failures_by_result_type),
        "policy_failure_days": [day.isoformat() for day in evidence.policy_failure_days],
        "blockers": [problem_object(problem) for problem in evidence.blockers],
        "warnings": [problem_object(problem) for problem in evidence.warnings],
    }


def scanned_line(
    facts: DomainFacts, verdict: DomainVerdict, report: dict[str, object]
) -> dict[str, object]:
    """The line of a scanned domain; `report` is `core.tlsrpt.build_report`'s."""
    return {
        "schema_version": SCHEMA_VERSION,
        "domain": facts.domain,
        "scanned_at": rfc3339_utc(facts.scanned_at),
        "error": None,
        "mta_sts": _mta_sts(facts),
        "tlsrpt": _tlsrpt(facts),
        "mx_lookup": {
            "status": facts.mx.status.value,
            "null_mx": facts.mx.null_mx,
            "implicit": facts.mx.implicit,
            "detail": facts.mx.detail or None,
        },
        "mx": [_mx(host) for host in verdict.mx],
        "over_limit": [
            {"cap": o.cap, "limit": o.limit, "skipped": o.skipped, "examples": list(o.examples)}
            for o in facts.over_limit
        ],
        "indicators": [_indicator(indicator) for indicator in verdict.indicators],
        "enforce_ready": verdict.enforce_ready,
        "blockers": [problem_object(problem) for problem in verdict.blockers],
        "warnings": [problem_object(problem) for problem in verdict.warnings],
        "report": report,
    }


def error_line(
    domain: str, error: str, scanned_at: datetime, *, cause: str | None = None
) -> dict[str, object]:
    """The line of an input that could not be scanned.

    Every field is present: `error` is set (e.g. "invalid-domain: ..."), nothing
    was observed so `mx` and `indicators` are empty, `enforce_ready` is false with one
    blocker stating the error (code `could-not-scan`, `cause` the error's kind), and `report` is null: no sessions were attempted, so there
    is nothing to report (a zero-count report would read as a heartbeat).
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "domain": domain,
        "scanned_at": rfc3339_utc(scanned_at),
        "error": error,
        "mta_sts": {"record": None, "id": None, "policy": None, "policy_text": None, "error": None},
        "tlsrpt": {"record": None, "rua": [], "error": None, "error_code": None},
        "mx_lookup": None,
        "mx": [],
        "over_limit": [],
        "indicators": [],
        "enforce_ready": False,
        "blockers": [
            problem_object(
                Problem(ProblemCode.COULD_NOT_SCAN, f"could not scan: {error}", cause=cause)
            )
        ],
        "warnings": [],
        "report": None,
    }


# ---------------------------------------------------------------- the byte budget of a line

# docs/output.md: no line exceeds 2 MiB. Lists and long texts of a line hold what servers
# and records chose; `fit_line` cuts the biggest of them until the line fits.
MAX_LINE_BYTES: Final = 2 * 1024 * 1024
MAX_ERROR_TEXT: Final = 4096  # characters of an error line's `error`
_NOTE_RESERVE: Final = 16 * 1024  # bytes kept free for the `trimmed` note
_CUTS_LISTED: Final = 50
_LONG_TEXT: Final = 256  # a string longer than this (in bytes written) may be cut
# The lists whose items servers and records choose (by their paths, indices left out);
# the other lists carry the verdict and are never cut.
_UNTRUSTED_LISTS: Final = frozenset(
    {
        "mx[].addresses[].certificate.san",
        "mx[].addresses[].transcript",
        "mx[].dane.tlsa",
        "mta_sts.policy.mx",
        "tlsrpt.rua",
        "over_limit",
        "indicators",
        "blockers",
        "warnings",
        "report.policies[].policy.policy-string",
        "report.policies[].policy.mx-host",
        "report.policies[].failure-details",
    }
)


def written_line(result: DomainResult, options: ReportOptions) -> tuple[str, DomainResult]:
    """The JSON line written for `result`, never longer than `MAX_LINE_BYTES`, and the
    result it stands for. Never raises.

    A line over the budget is cut by `fit_line`; one that cannot be cut to fit, or any
    failure while building it, becomes the domain's `internal-error` line (and the
    result returned is that error), so one domain can only ever cost its own line.
    """
    try:
        line = result_line(result, options)
        text = dumps_line(line)
        size = _utf8_size(text)
        if size <= MAX_LINE_BYTES:
            return text, result
        fitted = fit_line(line, MAX_LINE_BYTES)
        if fitted is not None:
            return fitted, result
        detail = f"its line of {size:,} bytes stays over {MAX_LINE_BYTES:,} bytes when cut"
    except Exception as exc:  # a bug, or a value no line can hold: this domain's line only
        detail = f"its line could not be built: {type(exc).__name__}: {exc}"
    error = ScanError(ErrorKind.INTERNAL_ERROR, detail[:MAX_ERROR_TEXT])
    failed = replace(DomainResult.failed(result.domain, error, result.scanned_at), rank=result.rank)
    return dumps_line(result_line(failed, options)), failed


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _written_size(value: object) -> int:
    return _utf8_size(dumps_line(value))


@dataclass(slots=True)
class _Cuttable:
    """A list or long text of a line, where it is held, and its written size."""

    path: str
    holder: dict[str, object] | list[object]
    key: str | int
    size: int

    @property
    def value(self) -> object:
        if isinstance(self.holder, dict):
            return self.holder[str(self.key)]
        return self.holder[int(self.key)]

    def replace(self, value: object) -> None:
        if isinstance(self.holder, dict):
            self.holder[str(self.key)] = value
        else:
            self.holder[int(self.key)] = value


def _cuttables(value: object, path: str, shape: str, found: list[_Cuttable]) -> None:
    """Collect the lists and long texts under `value` (`shape`: its path without indices)."""
    items: list[tuple[str | int, object, str, str]]
    if isinstance(value, dict):
        items = [
            (k, v, f"{path}.{k}" if path else k, f"{shape}.{k}" if shape else k)
            for k, v in value.items()
        ]
    elif isinstance(value, list):
        items = [(i, v, f"{path}[{i}]", f"{shape}[]") for i, v in enumerate(value)]
    else:
        return
    for key, item, item_path, item_shape in items:
        if isinstance(item, list) and item_shape in _UNTRUSTED_LISTS:
            size = _written_size(item)
            if size > 2:
                found.append(_Cuttable(item_path, value, key, size))
        elif isinstance(item, str) and len(item) > _LONG_TEXT // 6:
            size = _written_size(item)
            if size > _LONG_TEXT:
                found.append(_Cuttable(item_path, value, key, size))
        else:
            _cuttables(item, item_path, item_shape, found)


def _cap(sizes: list[int], room: int) -> int:
    """The largest size C with sum(min(size, C)) within `room` (sizes never cut below C)."""
    ordered = sorted(sizes)
    left = room
    for index, size in enumerate(ordered):
        share = left // (len(ordered) - index)
        if size > share:
            return share
        left -= size
    return ordered[-1] if ordered else 0


def _cut_list(items: list[object], room: int) -> list[object]:
    kept: list[object] = []
    used = 2  # the brackets
    for item in items:
        used += _written_size(item) + (1 if kept else 0)
        if used > room:
            break
        kept.append(item)
    return kept


def _cut_text(text: str, room: int) -> str:
    keep = len(text)
    while keep > 0:
        keep = keep * max(room - 8, 0) // max(_written_size(text[:keep]), 1)
        cut = text[:keep] + "…"
        if _written_size(cut) <= room:
            return cut
        keep -= max(1, keep // 10)
    return "…"


def fit_line(line: dict[str, object], budget: int) -> str | None:
    """`line` written in at most `budget` bytes, its biggest lists and texts cut; None if it cannot be.

    The lists whose items servers and records choose (`_UNTRUSTED_LISTS`: SAN names,
    transcripts, TLSA records, policy lines, the findings they multiply) and the long
    texts are cut to one common size, the largest that lets the line fit: lists keep
    their first items, texts their beginning and a "…"; the lists that carry the
    verdict (hosts, addresses, result types) are never cut. What was cut is recorded in the line's
    `trimmed` note: the budget, and each cut's path with the items or characters
    kept and there were.
    """
    found: list[_Cuttable] = []
    _cuttables(line, "", "", found)
    total = _written_size(line)
    fixed = total - sum(c.size for c in found)
    room = budget - _NOTE_RESERVE - fixed
    if not found or room <= 0:
        return None
    cap = _cap([c.size for c in found], room)
    cuts: list[dict[str, object]] = []
    for cuttable in found:
        if cuttable.size <= cap:
            continue
        value = cuttable.value
        if isinstance(value, list):
            items = _cut_list(value, cap)
            cuttable.replace(items)
            cuts.append({"path": cuttable.path, "items_kept": len(items), "items": len(value)})
        elif isinstance(value, str):
            text = _cut_text(value, cap)
            cuttable.replace(text)
            cuts.append(
                {"path": cuttable.path, "characters_kept": len(text) - 1, "characters": len(value)}
            )
    line["trimmed"] = {
        "budget": budget,
        "cuts": cuts[:_CUTS_LISTED],
        "cuts_not_listed": max(0, len(cuts) - _CUTS_LISTED),
    }
    text = dumps_line(line)
    return text if _utf8_size(text) <= budget else None


def dumps_line(obj: object) -> str:
    """Compact JSON on one line, non-ASCII kept, key order kept, no trailing newline.

    Characters that could reach a terminal as control or reorder text (C1, DEL,
    bidirectional marks, U+2028/2029, U+0085) are written as JSON escapes, so `cat`
    and `jq -r` show them inertly and line-splitting readers never cut a line inside
    a string (`scanner.untrusted.dumps_json_line`). NaN and infinities are refused.
    """
    return dumps_json_line(obj)


def schema_problem(record: dict[str, object]) -> str | None:
    """Why a reader should leave a line out: a schema_version it does not know, or None."""
    version = record.get("schema_version")
    if (
        isinstance(version, int)
        and not isinstance(version, bool)
        and version in KNOWN_SCHEMA_VERSIONS
    ):
        return None
    known = ", ".join(str(v) for v in sorted(KNOWN_SCHEMA_VERSIONS))
    return f"schema_version {version!r} is not one this scanner reads ({known})"


def load_schema() -> dict[str, object]:
    """The JSON Schema of a line, read from the installed package."""
    resource = resources.files("scanner").joinpath(SCHEMA_RESOURCE)
    schema: dict[str, object] = json.loads(resource.read_text(encoding="utf-8"))
    return schema
