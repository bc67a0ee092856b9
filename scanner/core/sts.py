"""MTA-STS discovery record, policy body and MX pattern matching (RFC 8461 §3.1, §3.2, §4.1).

Theory of operation: every function here is pure. DNS answers arrive as already
joined TXT strings, policy bodies as text (or bytes, via `parse_policy_bytes`);
the result is either a record from `scanner.models` or a failure value whose
text an operator can act on. Nothing raises on malformed input.

The TXT grammar helpers (`split_tagged_record`, `is_extension_name`,
`is_extension_value`) are shared with `scanner.core.tlsrpt_record`, because
RFC 8460 §3 reuses the field delimiter and extension rules of RFC 8461 §3.1.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

import idna

from scanner.models import Policy, PolicyFailure, PolicyMode, ResultType, StsRecord

STS_VERSION = "STSv1"
STS_RECORD_VERSION = "v=STSv1"

# RFC 8461 §3.2: max_age is at most 31557600 seconds (about one year).
MAX_AGE_LIMIT = 31_557_600

# A max_age below this draws a warning. RFC 8461 §3.2 expects "weeks or greater"
# to blunt attacks at refresh time (§10.2); one week is the smallest such value.
SHORT_MAX_AGE = 7 * 24 * 3600

WSP = " \t"
NONCONFORMANT_DELIMITER = "nonconformant-delimiter: whitespace before ';'"

# Public suffixes under which a wildcard `mx` pattern is dangerously broad
# (RFC 8461 §10.4). A small built-in list of common ones, not the full Public
# Suffix List: a wildcard directly under any single-label name (a TLD) is also
# flagged, but less common multi-label suffixes (e.g. `github.io`) are not.
COMMON_PUBLIC_SUFFIXES = frozenset(
    {
        "com", "net", "org", "edu", "gov", "mil", "int", "info", "biz", "io", "co",
        "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk",
        "com.au", "net.au", "org.au", "edu.au", "gov.au",
        "co.nz", "org.nz", "net.nz", "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp",
        "co.za", "org.za", "com.br", "net.br", "org.br", "gov.br",
        "com.cn", "net.cn", "org.cn", "com.mx", "org.mx", "co.in", "net.in", "org.in",
        "co.kr", "or.kr", "com.tw", "com.hk", "com.sg", "com.tr", "com.ar", "co.il",
        "github.io", "herokuapp.com", "appspot.com", "azurewebsites.net",
        "cloudfront.net", "amazonaws.com", "blogspot.com",
    }
)  # fmt: skip


# ---------------------------------------------------------------- shared TXT grammar

# RFC 8461 §3.1 sts-ext-name: (ALPHA / DIGIT) 0*31(ALPHA / DIGIT / "_" / "-" / ".")
_EXTENSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
# RFC 8461 §3.1 sts-ext-value: 1*(%x21-3A / %x3C / %x3E-7E)
_EXTENSION_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
# RFC 8461 §3.1 sts-id-value: 1*32(ALPHA / DIGIT)
_STS_ID = re.compile(r"[A-Za-z0-9]{1,32}")


def is_extension_name(name: str) -> bool:
    """True when `name` is a valid TXT (or policy) extension field name."""
    return _EXTENSION_NAME.fullmatch(name) is not None


def is_extension_value(value: str) -> bool:
    """True when `value` is a valid TXT extension value: printable ASCII, no `=` or `;`."""
    return _EXTENSION_VALUE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class TaggedRecord:
    """A `v=...; name=value; ...` TXT record split into fields, the version field excluded."""

    fields: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TaggedRecordError:
    reason: str


def starts_with_version(record: str, version_field: str) -> bool:
    """True when `record` opens with `version_field` followed by the end, WSP or `;`.

    RFC 8461 §3.1 / RFC 8460 §3 discard records that do not start with the
    version; `v=STSv10` is another version, not ours.
    """
    if not record.startswith(version_field):
        return False
    rest = record[len(version_field) :]
    return rest == "" or rest[0] in WSP + ";"


# RFC 8461 §3.1 / RFC 8460 §3: records that do not begin with "v=STSv1;"
# ("v=TLSRPTv1;") are discarded before counting. Erratum 6285: the grammar
# allows WSP before that ';', so "v=STSv1 ;" is kept (and warned about later).
def is_version_record(record: str, version_field: str) -> bool:
    """True when `record` begins with `version_field`, optional WSP, then `;`.

    This is the discard rule applied before counting records: `v=STSv1` alone,
    `v=STSv1 id=x` and `v=STSv10;` are not candidates.
    """
    if not record.startswith(version_field):
        return False
    return record[len(version_field) :].lstrip(WSP).startswith(";")


# RFC 8461 §3.1 / RFC 8460 §3:
#   record      = version 1*(field-delim field) [field-delim]
#   field-delim = *WSP ";" *WSP
# Leniencies: repeated and trailing delimiters (`;;`) and trailing WSP are
# accepted; WSP before `;` is grammatical but clashes with the `v=STSv1;`
# discard rule (erratum 6285), so it is accepted with a warning.
def split_tagged_record(record: str, version_field: str) -> TaggedRecord | TaggedRecordError:
    """Split a record that starts with `version_field` into (name, value) pairs.

    Names are checked against the extension-name grammar; values are returned
    as written (WSP trimmed) for the caller to check, since their grammar
    depends on the field. No fields at all is not an error here: the caller
    reports its missing required field.
    """
    if not starts_with_version(record, version_field):
        return TaggedRecordError(f"record does not start with {version_field!r}")
    rest = record[len(version_field) :]
    parts = rest.split(";")
    warnings: list[str] = []
    fields: list[tuple[str, str]] = []
    for index, part in enumerate(parts):
        followed_by_delimiter = index < len(parts) - 1
        if followed_by_delimiter and part != "" and part[-1] in WSP:
            warnings.append(NONCONFORMANT_DELIMITER)
        text = part.strip(WSP)
        if index == 0:
            if text:
                return TaggedRecordError(
                    f"unexpected {text!r} after {version_field!r}; fields are separated by ';'"
                )
            continue
        if text == "":
            continue
        name, equals, value = text.partition("=")
        if not equals:
            return TaggedRecordError(f"field {text!r} is not name=value")
        if not is_extension_name(name):
            return TaggedRecordError(
                f"field name {name!r} is invalid (a letter or digit, then up to 31 of A-Z a-z 0-9 _ . -)"
            )
        fields.append((name, value))
    return TaggedRecord(tuple(fields), tuple(dict.fromkeys(warnings)))


# ---------------------------------------------------------------- _mta-sts TXT record


@dataclass(frozen=True, slots=True)
class StsRecordError:
    """Why a domain has no usable `_mta-sts` record; `reason` is meant for an operator."""

    reason: str


def near_miss_hint(txt_records: Sequence[str], version_field: str) -> str:
    """Why the record that looks closest to a `version_field` record was not taken, if any."""
    wanted = version_field.lower()
    for record in txt_records:
        lowered = record.lower()
        if starts_with_version(record, version_field):
            return f" ({record!r} is not it: {version_field!r} must be followed by ';' and the fields)"
        if lowered.startswith(wanted):
            return f" ({record!r} is not it: {version_field!r} is case-sensitive)"
        if wanted in lowered:
            return f" ({record!r} is not it: {version_field!r} must come first)"
    return ""


# RFC 8461 §3.1: discard records not starting with "v=STSv1;"; exactly one
# must remain and parse, or the domain has no MTA-STS policy.
def select_sts_record(txt_records: Sequence[str]) -> StsRecord | StsRecordError:
    """Pick and parse the one `v=STSv1;` record among the TXT records at `_mta-sts.<domain>`.

    Each element is one TXT record with its character-strings already joined.
    Records not beginning with `v=STSv1`, optional WSP and `;` are discarded
    before counting, so `["v=STSv1; id=abc", "v=STSv1"]` selects id `abc`.
    """
    candidates = [r for r in txt_records if is_version_record(r, STS_RECORD_VERSION)]
    if not candidates:
        return StsRecordError("no v=STSv1 record" + near_miss_hint(txt_records, STS_RECORD_VERSION))
    if len(candidates) > 1:
        return StsRecordError(
            f"{len(candidates)} v=STSv1 records; exactly one is required, so senders see no policy"
        )
    return parse_sts_record(candidates[0])


def parse_sts_record(record: str) -> StsRecord | StsRecordError:
    """Parse one `_mta-sts` record (RFC 8461 §3.1). Extension fields are checked and ignored."""
    split = split_tagged_record(record, STS_RECORD_VERSION)
    if isinstance(split, TaggedRecordError):
        return StsRecordError(f"v=STSv1 record {record!r} is invalid: {split.reason}")
    warnings = list(split.warnings)
    record_id: str | None = None
    for name, value in split.fields:
        if name == "id":
            if _STS_ID.fullmatch(value) is None:
                return StsRecordError(
                    f"v=STSv1 record {record!r} is invalid: id {value!r} must be 1 to 32 letters and digits"
                )
            if record_id is None:
                record_id = value
            else:
                warnings.append(f"duplicate id field; the first ({record_id}) is used")
        elif not is_extension_value(value):
            return StsRecordError(
                f"v=STSv1 record {record!r} is invalid: value of {name!r} must be printable ASCII without spaces, '=' or ';'"
            )
    if record_id is None:
        hint = ""
        if any(name.lower() == "id" for name, _ in split.fields):
            hint = " (field names are case-sensitive: write 'id=')"
        return StsRecordError(f"v=STSv1 record {record!r} has no id field{hint}")
    return StsRecord(raw=record, id=record_id, warnings=tuple(warnings))


# ---------------------------------------------------------------- policy body

# RFC 5321 §4.1.2: Domain = sub-domain *("." sub-domain);
#   sub-domain = Let-dig [Ldh-str]  (letters, digits, hyphens; no hyphen at either end)
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")
_MAX_AGE_DIGITS = re.compile(r"[0-9]{1,10}")
# RFC 8461 §3.2 (RFC-NOTES §1.4):
#   sts-policy-ext-value = sts-policy-vchar [*(%x20 / sts-policy-vchar) sts-policy-vchar]
#   sts-policy-vchar     = %x21-7E / UTF8-2 / UTF8-3 / UTF8-4
# So no control character anywhere (HTAB only as WSP around the value and the
# ':'), while U+0080-U+009F, being UTF8-2, are allowed. A lone surrogate
# (possible only in text not decoded from bytes) is no UTF-8 at all.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_REQUIRED = ("version", "mode", "max_age")


def is_rfc5321_domain(name: str) -> bool:
    """True for an RFC 5321 Domain of LDH labels (no trailing dot, no IP literal)."""
    if not name or len(name) > 253:
        return False
    if all(_LDH_LABEL.fullmatch(label) for label in name.split(".")):
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return True
    return False


def mx_pattern_problem(value: str) -> str | None:
    """Why `value` is not a valid policy `mx` value, or None when it is (RFC 8461 §3.2).

    sts-policy-mx-value = ["*."] Domain
    """
    if value == "":
        return "empty mx value"
    domain = value[2:] if value.startswith("*.") else value
    if "*" in domain:
        return "'*' is allowed only as the whole left-most label, once ('*.example.com')"
    if not value.isascii():
        return "internationalised names must be written as A-labels (xn--...)"
    if domain.endswith("."):
        return "no trailing dot is allowed"
    try:
        ipaddress.ip_address(domain.strip("[]"))
    except ValueError:
        pass
    else:
        return "an IP address is not allowed; name the MX host"
    if not is_rfc5321_domain(domain):
        return "not a domain name of letters, digits and hyphens"
    return None


@dataclass(frozen=True, slots=True)
class _PolicyLine:
    number: int  # 1-based, counting every line as served
    text: str  # without terminator and trailing whitespace


def _policy_lines(text: str) -> list[_PolicyLine]:
    # RFC 8461 §3.2 sts-policy-term = LF / CRLF (erratum 6253: both, mixed too).
    raw_lines = text.split("\n")
    if raw_lines and raw_lines[-1] == "":
        raw_lines.pop()  # a final terminator ends the last line, it does not open a new one
    lines: list[_PolicyLine] = []
    for number, raw in enumerate(raw_lines, start=1):
        raw = raw.removesuffix("\r")
        lines.append(_PolicyLine(number, raw.rstrip(WSP)))
    return lines


def _invalid(detail: str) -> PolicyFailure:
    return PolicyFailure(ResultType.STS_POLICY_INVALID, detail)


def _line_failure(line: _PolicyLine, problem: str) -> PolicyFailure:
    return _invalid(f"line {line.number} {line.text!r}: {problem}")


# RFC 8461 §3.2:
#   sts-policy-record      = sts-policy-field *WSP *(sts-policy-term sts-policy-field *WSP) [sts-policy-term]
#   sts-policy-field-delim = ":" *WSP
# Keys other than mx: the first occurrence wins. Unknown keys are ignored.
# Leniencies (each with a warning): blank lines, indented lines, WSP before ':'.
def parse_policy(text: str) -> Policy | PolicyFailure:
    """Parse an MTA-STS policy body.

    Returns a `Policy` (mx patterns lower-cased; `lines` as served without line
    terminators, trailing whitespace or blank lines) or a `PolicyFailure` of
    type `sts-policy-invalid` whose detail names the offending line.
    """
    warnings: list[str] = []
    first: dict[str, tuple[_PolicyLine, str]] = {}
    mx: list[str] = []
    kept_lines: list[str] = []
    for line in _policy_lines(text):
        if line.text.strip(WSP) == "":
            warnings.append(f"line {line.number} is blank; the grammar allows no blank lines")
            continue
        kept_lines.append(line.text)
        if _CONTROL.search(line.text):
            return _line_failure(line, "contains a control character")
        if _SURROGATE.search(line.text):
            return _line_failure(line, "contains a lone surrogate, which is not UTF-8")
        if line.text[0] in WSP:
            warnings.append(
                f"line {line.number} is indented; the grammar allows no leading whitespace"
            )
        key, colon, value = line.text.partition(":")
        if not colon:
            return _line_failure(line, "not 'key: value'")
        if key != key.rstrip(WSP) and key.strip(WSP):
            warnings.append(f"line {line.number} has whitespace before ':'")
        key = key.strip(WSP)
        value = value.strip(WSP)
        if not is_extension_name(key):
            return _line_failure(line, "invalid field name")
        if value == "":
            return _line_failure(line, "empty value")
        if "\t" in value:
            return _line_failure(
                line, "a TAB inside the value; only spaces may separate its characters"
            )
        if key == "mx":
            problem = mx_pattern_problem(value)
            if problem is not None:
                return _line_failure(line, f"invalid mx pattern: {problem}")
            mx.append(value.lower())
        elif key in first:
            warnings.append(
                f"line {line.number}: repeated {key!r} ignored; the first occurrence wins"
            )
        else:
            first[key] = (line, value)

    if not kept_lines:
        return _invalid("the policy is empty")
    missing = [key for key in _REQUIRED if key not in first]
    if missing:
        hint = ""
        lowered = {k.lower() for k in first}
        if any(key in lowered for key in missing):
            hint = " (field names are case-sensitive)"
        return _invalid(f"missing required field(s): {', '.join(missing)}{hint}")

    version_line, version = first["version"]
    if version != STS_VERSION:
        return _line_failure(version_line, f"version must be {STS_VERSION!r}")

    mode_line, mode_text = first["mode"]
    try:
        mode = PolicyMode(mode_text)
    except ValueError:
        return _line_failure(mode_line, "mode must be enforce, testing or none (case-sensitive)")

    age_line, age_text = first["max_age"]
    if _MAX_AGE_DIGITS.fullmatch(age_text) is None:
        return _line_failure(age_line, "max_age must be 1 to 10 digits")
    max_age = int(age_text)
    if max_age > MAX_AGE_LIMIT:
        return _line_failure(
            age_line,
            f"max_age above {MAX_AGE_LIMIT} (one year); strict senders reject the policy, "
            "some others cap it to one year",
        )

    if not mx and mode is not PolicyMode.NONE:
        return _invalid(f"mode {mode} requires at least one mx line")

    return Policy(
        version=version,
        mode=mode,
        max_age=max_age,
        mx=tuple(mx),
        lines=tuple(kept_lines),
        warnings=tuple(warnings),
    )


def parse_policy_bytes(body: bytes) -> Policy | PolicyFailure:
    """Decode a policy body as UTF-8 (RFC 8461 §3.2) and parse it; other encodings are invalid."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return _invalid(f"the policy is not valid UTF-8 (byte offset {error.start})")
    return parse_policy(text)


# ---------------------------------------------------------------- MX matching


def normalise_host(name: str) -> str:
    """Lower-case A-label form without a trailing dot; names idna rejects are only lower-cased."""
    name = name.removesuffix(".")
    if name.isascii():
        return name.lower()
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return name.lower()


# RFC 8461 §4.1: the MX name must match a policy mx pattern; a "*." pattern
# matches exactly one extra left-most label. Case-insensitive, on A-labels.
def mx_matches(pattern: str, mx_host: str) -> bool:
    """True when the MX host name `mx_host` matches the policy `mx` pattern."""
    host = normalise_host(mx_host)
    if host == "":
        return False
    if pattern.startswith("*."):
        suffix = normalise_host(pattern[2:])
        if suffix == "":
            return False
        first_label, dot, rest = host.partition(".")
        return bool(dot) and first_label != "" and rest == suffix
    return normalise_host(pattern) == host


def policy_covers(policy: Policy, mx_host: str) -> bool:
    """True when some `mx` pattern of the policy matches `mx_host` (RFC 8461 §4.1)."""
    return any(mx_matches(pattern, mx_host) for pattern in policy.mx)


def is_broad_pattern(pattern: str) -> bool:
    """True for a wildcard directly under a public suffix (RFC 8461 §10.4).

    Uses `COMMON_PUBLIC_SUFFIXES` plus every single-label suffix; see its limits.
    """
    if not pattern.startswith("*."):
        return False
    suffix = normalise_host(pattern[2:])
    return "." not in suffix or suffix in COMMON_PUBLIC_SUFFIXES


def policy_warnings(policy: Policy, mx_hosts: Sequence[str]) -> tuple[str, ...]:
    """Non-blocking findings about a valid policy against the domain's MX host names.

    Covers mode none, a max_age under `SHORT_MAX_AGE` (not in mode none, where a
    short max_age is the RFC 8461 §8.3 removal procedure), wildcards directly
    under a public suffix, and `mx` patterns matching none of `mx_hosts`.
    Parse warnings stay in `Policy.warnings` and are not repeated here.
    """
    warnings: list[str] = []
    if policy.mode is PolicyMode.NONE:
        warnings.append("policy mode is none: senders treat the domain as having no MTA-STS policy")
    elif policy.max_age < SHORT_MAX_AGE:
        warnings.append(
            f"max_age {policy.max_age} is under one week; RFC 8461 expects weeks or more "
            "so that a blocked refresh does not expire the policy"
        )
    for pattern in policy.mx:
        if is_broad_pattern(pattern):
            warnings.append(
                f"mx pattern {pattern!r} is a wildcard under a public suffix: any host there "
                "with a certificate would be accepted"
            )
    for pattern in policy.mx:
        if not any(mx_matches(pattern, host) for host in mx_hosts):
            warnings.append(f"mx pattern {pattern!r} matches none of the domain's MX hosts")
    return tuple(warnings)
