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

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import idna

from scanner.core.codes import PolicyCode, Problem, ProblemCode, RecordCode
from scanner.core.names import is_ip_literal
from scanner.models import Policy, PolicyFailure, PolicyMode, ResultType, StsRecord

STS_VERSION = "STSv1"
STS_RECORD_VERSION = "v=STSv1"

# RFC 8461 §3.2: max_age is at most 31557600 seconds (about one year).
MAX_AGE_LIMIT = 31_557_600

# A max_age below this draws a warning. RFC 8461 §3.2 expects "weeks or greater"
# to blunt attacks at refresh time (§10.2); one week is the smallest such value.
SHORT_MAX_AGE = 7 * 24 * 3600

WSP = " \t"
# Erratum 6285: mox accepts such a record (mtasts.go LookupRecord says so);
# only a literal reading of the multi-record discard rule drops it.
NONCONFORMANT_DELIMITER = (
    "nonconformant-delimiter: whitespace between the version and the first ';'; the grammar "
    "allows it, but when a name holds several TXT records the discard rule keeps only those "
    "beginning with the version immediately followed by ';' (erratum 6285), so a sender "
    "reading that rule literally may ignore this record"
)

# What a policy that mox's parser (mjl-/mox mtasts/parse.go, ParsePolicy) rejects
# means for delivery: mtastsdb/db.go treats ErrPolicySyntax as "not doing
# MTA-STS" and, on a refresh, keeps the policy it cached before.
STRICT_PARSERS_REJECT_POLICY = (
    "strict parsers such as mox reject the whole policy, so senders using them see "
    "no MTA-STS policy (or keep one they cached earlier)"
)

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
    """Why a record does not parse. `extra_delimiter` marks an empty field (`;;`),
    which lenient parsers skip but the grammar and strict parsers refuse."""

    reason: str
    extra_delimiter: bool = False


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


EXTRA_DELIMITER = (
    "an empty field between two ';' (the grammar allows at most one ';' after the last field)"
)


# RFC 8461 §3.1 / RFC 8460 §3:
#   record      = version 1*(field-delim field) [field-delim]
#   field-delim = *WSP ";" *WSP
# WSP may surround every ';'. At most one delimiter follows the last field, and
# none stands alone between fields: "v=STSv1; id=a;" parses, "v=STSv1; id=a;;"
# and "v=STSv1;; id=a" do not. WSP between the version and the first ';' is
# grammatical but clashes with the "v=STSv1;" discard rule (erratum 6285), so
# only that spot draws a warning.
def split_tagged_record(record: str, version_field: str) -> TaggedRecord | TaggedRecordError:
    """Split a record that starts with `version_field` into (name, value) pairs.

    Names are checked against the extension-name grammar; values are returned
    as written (WSP trimmed) for the caller to check, since their grammar
    depends on the field. No fields at all is not an error here: the caller
    reports its missing required field. An empty field (`;;`) is an error with
    `extra_delimiter` set, so the caller can name the consequence.
    """
    if not starts_with_version(record, version_field):
        return TaggedRecordError(f"record does not start with {version_field!r}")
    rest = record[len(version_field) :]
    parts = rest.split(";")
    warnings: list[str] = []
    fields: list[tuple[str, str]] = []
    last = len(parts) - 1
    for index, part in enumerate(parts):
        text = part.strip(WSP)
        if index == 0:
            if text:
                return TaggedRecordError(
                    f"unexpected {text!r} after {version_field!r}; fields are separated by ';'"
                )
            if part and last > 0:
                warnings.append(NONCONFORMANT_DELIMITER)
            continue
        if text == "":
            if index == last:
                continue  # the one optional trailing field-delim
            return TaggedRecordError(EXTRA_DELIMITER, extra_delimiter=True)
        name, equals, value = text.partition("=")
        if not equals:
            return TaggedRecordError(f"field {text!r} is not name=value")
        if not is_extension_name(name):
            return TaggedRecordError(
                f"field name {name!r} is invalid (a letter or digit, then up to 31 of A-Z a-z 0-9 _ . -)"
            )
        fields.append((name, value))
    return TaggedRecord(tuple(fields), tuple(warnings))


def _leading_version(record: str) -> str | None:
    """The value of a leading `v=` (any case) up to WSP or `;`, or None without one."""
    if record[:2].lower() != "v=":
        return None
    value = record[2:]
    for index, char in enumerate(value):
        if char in WSP + ";":
            return value[:index]
    return value


def near_miss_hint(txt_records: Sequence[str], version_field: str) -> str:
    """Why the record that looks closest to a `version_field` record was not taken, if any.

    `version_field` is `v=` and a version such as `STSv1`; a record opening
    with the same family and another version (`v=STSv12`, `v=TLSRPTv10`) is
    named as an unsupported version, one differing only in case as a case error.
    """
    wanted = version_field.removeprefix("v=")
    family = wanted.rstrip("0123456789").lower()
    for record in txt_records:
        if starts_with_version(record, version_field):
            return (
                f" ({record!r} is not it: {version_field!r} must be followed by ';' and the fields)"
            )
        version = _leading_version(record)
        if version is not None and version.lower() == wanted.lower():
            return f" ({record!r} is not it: {version_field!r} is case-sensitive)"
        if version is not None and version.lower().startswith(family):
            return (
                f" ({record!r} is not it: version {version!r} is not supported; "
                f"only {wanted!r} is defined)"
            )
        if version_field.lower() in record.lower():
            return f" ({record!r} is not it: {version_field!r} must come first)"
    return ""


# ---------------------------------------------------------------- _mta-sts TXT record


@dataclass(frozen=True, slots=True)
class StsRecordError:
    """Why a domain has no usable `_mta-sts` record: its code, and `reason` for an operator."""

    code: RecordCode
    reason: str


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
        hint = near_miss_hint(txt_records, STS_RECORD_VERSION)
        code = RecordCode.NEAR_MISS if hint else RecordCode.NO_RECORD
        return StsRecordError(code, "no v=STSv1 record" + hint)
    if len(candidates) > 1:
        return StsRecordError(
            RecordCode.SEVERAL_RECORDS,
            f"{len(candidates)} v=STSv1 records; exactly one is required, so senders see no policy",
        )
    return parse_sts_record(candidates[0])


# RFC 8461 §3.1: "if the resulting record is syntactically invalid, senders
# MUST assume the recipient domain does not have an available MTA-STS Policy".
# A second ';' after the last field is such a record: mox (mtasts/parse.go)
# refuses it, postfix-mta-sts-resolver (utils.parse_mta_sts_record) skips the
# empty field. The scanner follows the grammar and the strict side.
def parse_sts_record(record: str) -> StsRecord | StsRecordError:
    """Parse one `_mta-sts` record (RFC 8461 §3.1). Extension fields are checked and ignored."""
    split = split_tagged_record(record, STS_RECORD_VERSION)
    if isinstance(split, TaggedRecordError):
        consequence = ""
        if split.extra_delimiter:
            consequence = (
                "; strict senders such as mox ignore the record and see no MTA-STS policy, "
                "although lenient ones such as postfix-mta-sts-resolver accept it"
            )
        return StsRecordError(
            RecordCode.INVALID_RECORD,
            f"v=STSv1 record {record!r} is invalid: {split.reason}{consequence}",
        )
    warnings = list(split.warnings)
    record_id: str | None = None
    for name, value in split.fields:
        if name == "id":
            if _STS_ID.fullmatch(value) is None:
                return StsRecordError(
                    RecordCode.INVALID_ID,
                    f"v=STSv1 record {record!r} is invalid: id {value!r} must be 1 to 32 letters and digits",
                )
            if record_id is None:
                record_id = value
            else:
                # mox (mtasts/parse.go) skips a repeated id's value and then
                # fails on it as leftover characters.
                warnings.append(
                    f"duplicate id field; the first ({record_id}) is used here, but strict "
                    "senders such as mox reject a record with a second id and see no "
                    "MTA-STS policy"
                )
        elif not is_extension_value(value):
            return StsRecordError(
                RecordCode.INVALID_RECORD,
                f"v=STSv1 record {record!r} is invalid: value of {name!r} must be printable ASCII without spaces, '=' or ';'",
            )
    if record_id is None:
        hint = ""
        if any(name.lower() == "id" for name, _ in split.fields):
            hint = " (field names are case-sensitive: write 'id=')"
        return StsRecordError(
            RecordCode.MISSING_ID, f"v=STSv1 record {record!r} has no id field{hint}"
        )
    return StsRecord(raw=record, id=record_id, warnings=tuple(warnings))


# ---------------------------------------------------------------- policy body

# RFC 5321 §4.1.2: Domain = sub-domain *("." sub-domain);
#   sub-domain = Let-dig [Ldh-str]  (letters, digits, hyphens; no hyphen at either end)
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")
_MAX_AGE_DIGITS = re.compile(r"[0-9]{1,10}")
# RFC 8461 §3.2:
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
    return all(_LDH_LABEL.fullmatch(label) for label in name.split(".")) and not is_ip_literal(name)


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
    if is_ip_literal(domain.strip("[]")):
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


def _invalid(code: PolicyCode, detail: str) -> PolicyFailure:
    return PolicyFailure(ResultType.STS_POLICY_INVALID, detail, code)


def _line_failure(
    line: _PolicyLine, problem: str, code: PolicyCode = PolicyCode.LINE_SYNTAX
) -> PolicyFailure:
    return _invalid(code, f"line {line.number} {line.text!r}: {problem}")


# The code of a known field's value problem (`_known_field_problem`).
_FIELD_CODES = {
    "version": PolicyCode.VERSION,
    "mode": PolicyCode.MODE,
    "max_age": PolicyCode.MAX_AGE,
}


# RFC 8461 §3.2 values of the fields the scanner reads (sts-policy-version,
# sts-policy-mode, sts-policy-max-age); literals are case-sensitive.
def _known_field_problem(key: str, value: str) -> str | None:
    """Why `value` is not a valid value of the policy field `key`, or None.

    Only `version`, `mode` and `max_age` are checked here; the max_age range is
    a separate decision (see `MAX_AGE_LIMIT`), and any other key yields None.
    """
    if key == "version" and value != STS_VERSION:
        return f"version must be {STS_VERSION!r}"
    if key == "mode" and value not in {mode.value for mode in PolicyMode}:
        return "mode must be enforce, testing or none (case-sensitive)"
    if key == "max_age" and _MAX_AGE_DIGITS.fullmatch(value) is None:
        return "max_age must be 1 to 10 digits"
    return None


# RFC 8461 §3.2:
#   sts-policy-record      = sts-policy-field *WSP *(sts-policy-term sts-policy-field *WSP) [sts-policy-term]
#   sts-policy-field-delim = ":" *WSP
# Keys other than mx: the first occurrence wins. Unknown keys are ignored.
# Leniencies (each with a warning): blank lines, indented lines, WSP before ':',
# and a repeated field with a value its grammar forbids. mox's ParsePolicy
# (mjl-/mox mtasts/parse.go) rejects each of them: a key must start every line
# and be followed directly by ':', one LF or CRLF separates fields, and a
# repeated version, mode or max_age is parsed (and must be valid) before being
# ignored. So those warnings say what strict senders do.
@dataclass(slots=True)
class _PolicyFields:
    """What the lines of a policy said so far (see `parse_policy`)."""

    warnings: list[str] = field(default_factory=list)
    first: dict[str, tuple[_PolicyLine, str]] = field(default_factory=dict)
    mx: list[str] = field(default_factory=list)
    kept_lines: list[str] = field(default_factory=list)


def _line_shape_problem(line: _PolicyLine, fields: _PolicyFields) -> PolicyFailure | None:
    """Characters and layout of one non-blank line; warnings for what strict parsers refuse."""
    if _CONTROL.search(line.text):
        return _line_failure(line, "contains a control character")
    if _SURROGATE.search(line.text):
        return _line_failure(line, "contains a lone surrogate, which is not UTF-8")
    if line.text[0] in WSP:
        fields.warnings.append(
            f"line {line.number} is indented; the grammar allows no leading whitespace, and "
            + STRICT_PARSERS_REJECT_POLICY
        )
    return None


def _read_policy_line(line: _PolicyLine, fields: _PolicyFields) -> PolicyFailure | None:
    """One line of the policy into `fields`; a failure when it breaks the grammar."""
    problem = _line_shape_problem(line, fields)
    if problem is not None:
        return problem
    key, colon, value = line.text.partition(":")
    if not colon:
        return _line_failure(line, "not 'key: value'")
    if key != key.rstrip(WSP) and key.strip(WSP):
        fields.warnings.append(
            f"line {line.number} has whitespace before ':', which the grammar does not "
            "allow; " + STRICT_PARSERS_REJECT_POLICY
        )
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
        mx_problem = mx_pattern_problem(value)
        if mx_problem is not None:
            return _line_failure(line, f"invalid mx pattern: {mx_problem}", PolicyCode.MX_PATTERN)
        fields.mx.append(value.lower())
    elif key in fields.first:
        fields.warnings.append(_repeated_field_warning(line, key, value))
    else:
        fields.first[key] = (line, value)
    return None


def _repeated_field_warning(line: _PolicyLine, key: str, value: str) -> str:
    problem = _known_field_problem(key, value)
    if problem is None:
        return f"line {line.number}: repeated {key!r} ignored; the first occurrence wins"
    return (
        f"line {line.number}: repeated {key!r} ignored (the first occurrence wins), "
        f"but its value {value!r} is invalid ({problem}): " + STRICT_PARSERS_REJECT_POLICY
    )


def _policy_from(fields: _PolicyFields) -> Policy | PolicyFailure:
    """The policy the fields make, or why they make none (required fields, values)."""
    first = fields.first
    if not fields.kept_lines:
        return _invalid(PolicyCode.EMPTY, "the policy is empty")
    missing = [key for key in _REQUIRED if key not in first]
    if missing:
        hint = ""
        lowered = {k.lower() for k in first}
        if any(key in lowered for key in missing):
            hint = " (field names are case-sensitive)"
        return _invalid(
            PolicyCode.MISSING_FIELD, f"missing required field(s): {', '.join(missing)}{hint}"
        )
    for key in _REQUIRED:
        field_line, field_value = first[key]
        problem = _known_field_problem(key, field_value)
        if problem is not None:
            return _line_failure(field_line, problem, _FIELD_CODES[key])
    mode = PolicyMode(first["mode"][1])
    age_line, age_text = first["max_age"]
    max_age = int(age_text)
    if max_age > MAX_AGE_LIMIT:
        return _line_failure(
            age_line,
            f"max_age above {MAX_AGE_LIMIT} (one year); strict senders reject the policy, "
            "some others cap it to one year",
            PolicyCode.MAX_AGE,
        )
    if not fields.mx and mode is not PolicyMode.NONE:
        return _invalid(PolicyCode.NO_MX, f"mode {mode} requires at least one mx line")
    return Policy(
        version=first["version"][1],
        mode=mode,
        max_age=max_age,
        mx=tuple(fields.mx),
        lines=tuple(fields.kept_lines),
        warnings=tuple(fields.warnings),
    )


def parse_policy(text: str) -> Policy | PolicyFailure:
    """Parse an MTA-STS policy body.

    Returns a `Policy` (mx patterns lower-cased; `lines` as served without line
    terminators, trailing whitespace or blank lines) or a `PolicyFailure` of
    type `sts-policy-invalid` whose detail names the offending line.
    """
    fields = _PolicyFields()
    for line in _policy_lines(text):
        if line.text.strip(WSP) == "":
            fields.warnings.append(
                f"line {line.number} is blank; the grammar allows no blank lines, and "
                + STRICT_PARSERS_REJECT_POLICY
            )
            continue
        fields.kept_lines.append(line.text)
        failure = _read_policy_line(line, fields)
        if failure is not None:
            return failure
    return _policy_from(fields)


def parse_policy_bytes(body: bytes) -> Policy | PolicyFailure:
    """Decode a policy body as UTF-8 (RFC 8461 §3.2) and parse it; other encodings are invalid."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return _invalid(
            PolicyCode.NOT_UTF8, f"the policy is not valid UTF-8 (byte offset {error.start})"
        )
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
# The MX name's trailing dot (the DNS root) is dropped; a pattern never has one
# (§3.2 sts-policy-mx-value = ["*."] Domain), so a dotted pattern matches nothing.
def mx_matches(pattern: str, mx_host: str) -> bool:
    """True when the MX host name `mx_host` matches the policy `mx` pattern."""
    host = normalise_host(mx_host)
    if host == "" or pattern.endswith("."):
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


def policy_warnings(policy: Policy, mx_hosts: Sequence[str]) -> tuple[Problem, ...]:
    """Non-blocking findings about a valid policy against the domain's MX host names.

    Covers mode none, a max_age under `SHORT_MAX_AGE` (not in mode none, where a
    short max_age is the RFC 8461 §8.3 removal procedure), wildcards directly
    under a public suffix, and `mx` patterns matching none of `mx_hosts`.
    Parse warnings stay in `Policy.warnings` and are not repeated here.
    """
    warnings: list[Problem] = []
    if policy.mode is PolicyMode.NONE:
        warnings.append(
            Problem(
                ProblemCode.MODE_NONE,
                "policy mode is none: senders treat the domain as having no MTA-STS policy",
            )
        )
    elif policy.max_age < SHORT_MAX_AGE:
        warnings.append(
            Problem(
                ProblemCode.SHORT_MAX_AGE,
                f"max_age {policy.max_age} is under one week; RFC 8461 expects weeks or more "
                "so that a blocked refresh does not expire the policy",
            )
        )
    for pattern in policy.mx:
        if is_broad_pattern(pattern):
            warnings.append(
                Problem(
                    ProblemCode.BROAD_MX_PATTERN,
                    f"mx pattern {pattern!r} is a wildcard under a public suffix: any host "
                    "there with a certificate would be accepted",
                    cause=pattern,
                )
            )
    for pattern in policy.mx:
        if not any(mx_matches(pattern, host) for host in mx_hosts):
            warnings.append(
                Problem(
                    ProblemCode.UNUSED_MX_PATTERN,
                    f"mx pattern {pattern!r} matches none of the domain's MX hosts",
                    cause=pattern,
                )
            )
    return tuple(warnings)
