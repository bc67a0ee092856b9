"""Kinds of problems: the codes of a line, and for lines before schema 3, codes named
from their words by data tables of patterns.

Since schema 3 a line carries the code of each problem (`mta_sts.error.code`,
`tlsrpt.error_code`, an address's `reason_code`: docs/output.md#codes), and research
counts problems by those codes; no pattern here runs on such a line. Lines of schema
versions 1 and 2 state their problems in words only (`mta_sts.error.detail`,
`tlsrpt.error`, an address's `reason`): the results reader (`scanner.research.lines`)
names their codes with the tables below. Each lists (kind, pattern) rows, tried in
order with `re.search`; the first that matches names the kind, and a text no row
matches is `other`. The kinds are the codes schema 3 writes, so files of both versions
count alike.

The words come from `scanner/core/discovery.py`, `core/sts.py`, `core/tlsrpt_record.py`,
`net/policy_fetch.py` and `core/reasons.py` (docs/output.md#not-testable-reasons).
The texts carry hostile parts (a record, a server's reply), so a kind never copies
free text: a `{name}` in a kind takes a named group whose pattern admits only a short
word of letters, digits and hyphens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from scanner.core.codes import FETCH_POLICY_CODES
from scanner.models import ResultType

OTHER: Final = "other"


@dataclass(frozen=True, slots=True)
class TextKind:
    """Texts `pattern` finds are of `kind`; `{group}` in `kind` takes that named group."""

    kind: str
    pattern: re.Pattern[str]


def _rows(*rows: tuple[str, str]) -> tuple[TextKind, ...]:
    return tuple(TextKind(kind, re.compile(pattern)) for kind, pattern in rows)


def kind_of(text: str | None, table: Sequence[TextKind]) -> str:
    """The kind of `text` by the first matching row of `table`; `other` when none matches."""
    if text is None:
        return OTHER
    for row in table:
        found = row.pattern.search(text)
        if found is not None:
            return row.kind.format(**found.groupdict()) if found.groupdict() else row.kind
    return OTHER


# `mta_sts.error.detail` when there is no usable record (result_type null).
RECORD_ERROR_KINDS: Final = _rows(
    ("no-record", r"^no _mta-sts TXT record"),
    ("lookup-failed", r"^_mta-sts TXT lookup failed"),
    ("near-miss", r"^no v=STSv1 record \("),
    ("no-record", r"^no v=STSv1 record"),
    ("several-records", r"^[0-9]+ v=STSv1 records"),
    ("invalid-id", r"^v=STSv1 record .* is invalid: id "),
    ("missing-id", r"^v=STSv1 record .* has no id field"),
    ("invalid-record", r"^v=STSv1 record "),
)

# `tlsrpt.error`.
TLSRPT_ERROR_KINDS: Final = _rows(
    ("no-record", r"^no _smtp\._tls TXT record"),
    ("lookup-failed", r"^_smtp\._tls TXT lookup failed"),
    ("near-miss", r"^no v=TLSRPTv1 record \("),
    ("no-record", r"^no v=TLSRPTv1 record"),
    ("several-records", r"^[0-9]+ v=TLSRPTv1 records"),
    ("missing-rua", r"^v=TLSRPTv1 record .* has no rua field"),
    ("invalid-record", r"^v=TLSRPTv1 record "),
)

# `mta_sts.error.detail` of `sts-policy-fetch-error`.
FETCH_ERROR_KINDS: Final = _rows(
    ("not-contacted", r"is listed in --exclude|resolves only to addresses"),
    (
        "dns",
        r"^policy host \S+ (does not exist in DNS|has no A or AAAA)|^DNS lookup of policy host",
    ),
    ("connect", r"^could not connect to policy host"),
    ("tls-handshake", r"^TLS handshake with policy host"),
    ("http-timeout", r" sent no response headers within | did not finish sending the policy body"),
    ("redirect", r"\) answered HTTP 3[0-9][0-9] redirect"),
    ("http-status", r"\) answered HTTP [0-9]{3}"),
    ("size", r"\) announced a [0-9]+-byte policy|\) sent a policy body over the "),
    ("http-protocol", r"\) sent a malformed HTTP response|broke during the HTTP exchange"),
)

# `mta_sts.error.detail` of `sts-webpki-invalid` (the policy host's certificate).
WEBPKI_KINDS: Final = _rows(
    ("webpki:no-certificate", r"presented no certificate"),
    ("webpki:expired", r"certificate expired on "),
    ("webpki:not-yet-valid", r"certificate is not valid before "),
    ("webpki:untrusted", r"certificate does not chain to a trusted root"),
    ("webpki:name-mismatch", r"certificate is not valid for "),
)

# `sts-policy-invalid` because of how it was served: a fetch problem, not syntax.
SERVED_KINDS: Final = _rows(("content-type", r"\) served the policy as .*, not text/plain"))

# `mta_sts.error.detail` of `sts-policy-invalid`: the policy text itself.
SYNTAX_ERROR_KINDS: Final = _rows(
    ("not-utf8", r"is not valid UTF-8"),
    ("empty", r"^the policy is empty"),
    ("missing-field", r"^missing required field"),
    ("version", r": version must be "),
    ("mode", r": mode must be "),
    ("max-age", r": max_age (must be|above) "),
    ("no-mx", r"requires at least one mx line"),
    ("mx-pattern", r": invalid mx pattern: "),
    (
        "line-syntax",
        r": (not 'key: value'|invalid field name|empty value|a TAB inside the value"
        r"|contains a control character|contains a lone surrogate)",
    ),
)

# An address's not-testable `reason`.
NOT_TESTABLE_KINDS: Final = _rows(
    ("connect-refused", r"^connect-refused"),
    ("connect-failed:{errno}", r"^connect-failed: (?P<errno>E[A-Z0-9]{2,20})\b"),
    ("connect-failed", r"^connect-failed"),
    ("timeout:{phase}", r"^timeout:(?P<phase>[a-z-]{1,20})"),
    ("closed:{phase}", r"^closed:(?P<phase>[a-z-]{1,20})"),
    ("busy:{code}", r"^busy:(?P<code>[0-9]{3})"),
    ("busy", r"^busy"),
    ("rejected:{code}", r"^rejected:(?P<code>[0-9]{3})"),
    ("ehlo-rejected:{code}", r"^ehlo-rejected:(?P<code>[0-9]{3})"),
    ("protocol-error", r"^protocol-error"),
    ("address-not-allowed", r"^address-not-allowed"),
    ("excluded", r"^excluded"),
    ("invalid-mx-name", r"^invalid-mx-name"),
    ("not-probed", r"^not-probed"),
    ("over-limit", r"^over-limit"),
    ("scanner-network:{what}", r"^scanner-network: (?P<what>[a-z0-9-]{1,30})"),
)

# A certificate's `verify_error`, as a kind: `not-trusted:depth-zero-self-signed-cert`.
VERIFY_ERROR_KINDS: Final = _rows(
    ("not-trusted:{name}", r"^X509_V_ERR_(?P<name>[A-Z0-9_]{1,60})$"),
)

# A cap of `over_limit[].cap`.
CAP_KINDS: Final = _rows(("{cap}", r"^(?P<cap>--max-[a-z-]{1,40})$"))


def verify_error_kind(verify_error: str | None) -> str:
    kind = kind_of(verify_error, VERIFY_ERROR_KINDS)
    return kind.lower().replace("_", "-") if kind != OTHER else "not-trusted"


def record_error_kind(detail: str | None) -> str:
    return kind_of(detail, RECORD_ERROR_KINDS)


def tlsrpt_error_kind(detail: str | None) -> str:
    return kind_of(detail, TLSRPT_ERROR_KINDS)


def not_testable_kind(reason: str | None) -> str:
    return kind_of(reason, NOT_TESTABLE_KINDS)


def legacy_sts_error_code(result_type: str | None, detail: str | None) -> str:
    """The code of a version 1 or 2 line's `mta_sts.error`: a record or a policy code."""
    if result_type is None:
        return record_error_kind(detail)
    if result_type == ResultType.STS_POLICY_FETCH_ERROR:
        return kind_of(detail, FETCH_ERROR_KINDS)
    if result_type == ResultType.STS_WEBPKI_INVALID:
        return kind_of(detail, WEBPKI_KINDS)
    if result_type == ResultType.STS_POLICY_INVALID:
        served = kind_of(detail, SERVED_KINDS)
        return served if served != OTHER else kind_of(detail, SYNTAX_ERROR_KINDS)
    return OTHER


_POLICY_RESULT_TYPES: Final = frozenset(
    {
        ResultType.STS_POLICY_FETCH_ERROR,
        ResultType.STS_WEBPKI_INVALID,
        ResultType.STS_POLICY_INVALID,
    }
)


def policy_problem(result_type: str | None, code: str | None) -> tuple[str, str] | None:
    """("fetch" or "syntax", code) of a policy result type and its code; None for none.

    A policy served with the wrong Content-Type is `sts-policy-invalid` in RFC 8460's
    terms but a fetch problem here: its text may be fine, how it was served is not.
    """
    if result_type is None:
        return None
    if result_type not in _POLICY_RESULT_TYPES:
        return "fetch", OTHER
    kind = code or OTHER
    if result_type == ResultType.STS_POLICY_INVALID and kind not in FETCH_POLICY_CODES:
        return "syntax", kind
    return "fetch", kind
