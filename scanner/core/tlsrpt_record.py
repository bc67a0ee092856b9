"""The `_smtp._tls` TLS-RPT reporting-policy record (RFC 8460 §3).

Pure: takes the TXT records found at `_smtp._tls.<domain>` (each already
joined) and returns a `TlsRptRecord` or a `TlsRptRecordError` whose reason an
operator can act on. Nothing raises on malformed input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from scanner.core.codes import RecordCode
from scanner.core.sts import (
    TaggedRecordError,
    is_extension_value,
    is_version_record,
    near_miss_hint,
    split_tagged_record,
)
from scanner.models import TlsRptRecord

TLSRPT_RECORD_VERSION = "v=TLSRPTv1"

# RFC 8460 §3: a URI inside rua must percent-encode ",", "!" and ";"; WSP
# only surrounds the commas. We also refuse the characters RFC 3986 never
# allows unencoded.
_URI_TEXT = re.compile(r"[\x21-\x7e]+")
_URI_FORBIDDEN = set('!,;"<>\\^`{|}')
_HTTPS_URI = re.compile(r"https://[^/?#@]+(?:[/?#].*)?", re.IGNORECASE)
_MAILTO_URI = re.compile(r"mailto:[^@]+@[^@]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TlsRptRecordError:
    """Why a domain has no usable `_smtp._tls` record: its code, and `reason` for an operator."""

    code: RecordCode
    reason: str


def rua_uri_problem(uri: str) -> str | None:
    """Why `uri` is not a usable rua destination, or None (RFC 8460 §3: mailto: or https:)."""
    if _URI_TEXT.fullmatch(uri) is None:
        return f"rua URI {uri!r} contains spaces or non-printable characters"
    bad = sorted(set(uri) & _URI_FORBIDDEN)
    if bad:
        return f"rua URI {uri!r} contains {''.join(bad)!r}, which must be percent-encoded"
    scheme = uri.partition(":")[0].lower()
    if scheme == "mailto":
        if _MAILTO_URI.fullmatch(uri) is None:
            return f"rua URI {uri!r} is not mailto:local@domain"
        return None
    if scheme == "https":
        if _HTTPS_URI.fullmatch(uri) is None:
            return f"rua URI {uri!r} is not https://host/path"
        return None
    return f"rua URI {uri!r} is neither mailto: nor https:"


def split_rua(value: str) -> tuple[str, ...]:
    """The URIs of one rua value: tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)."""
    return tuple(uri.strip(" \t") for uri in value.split(","))


# RFC 8460 §3: drop records not starting with "v=TLSRPTv1;"; exactly one must
# remain. rua is required and may repeat (all are collected); extensions are
# ignored.
def select_tlsrpt_record(txt_records: Sequence[str]) -> TlsRptRecord | TlsRptRecordError:
    """Pick and parse the one `v=TLSRPTv1;` record among the TXT records at `_smtp._tls.<domain>`.

    Records not beginning with `v=TLSRPTv1`, optional WSP and `;` are discarded
    before counting.
    """
    candidates = [r for r in txt_records if is_version_record(r, TLSRPT_RECORD_VERSION)]
    if not candidates:
        hint = near_miss_hint(txt_records, TLSRPT_RECORD_VERSION)
        code = RecordCode.NEAR_MISS if hint else RecordCode.NO_RECORD
        return TlsRptRecordError(code, "no v=TLSRPTv1 record" + hint)
    if len(candidates) > 1:
        return TlsRptRecordError(
            RecordCode.SEVERAL_RECORDS,
            f"{len(candidates)} v=TLSRPTv1 records; exactly one is required, so reporters send no reports",
        )
    return parse_tlsrpt_record(candidates[0])


# RFC 8460 §3:
#   tlsrpt-record = tlsrpt-version 1*(tlsrpt-field-delim tlsrpt-field) [tlsrpt-field-delim]
#   tlsrpt-field  = tlsrpt-rua / tlsrpt-extension
#   tlsrpt-rua    = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
# Several rua fields are grammatical ("the record supports the ability to
# declare more than one rua"); mox (tlsrpt/parse.go, tlsrptsend/send.go) and
# Stalwart mail-auth (src/mta_sts/parse.rs) use them all, but checkdmarc
# (smtp_tls_reporting.py) refuses a duplicate rua tag, hence a warning.
# A second ';' after the last field is not grammatical; mox refuses the record
# (tlsrpt/parse_test.go "additional semicolon") and then sends no report.
def parse_tlsrpt_record(record: str) -> TlsRptRecord | TlsRptRecordError:
    """Parse one `v=TLSRPTv1` record; `rua` collects the URIs of every rua field in order.

    Warnings: WSP before the first `;` (erratum 6285's discard-rule clash), more
    than one rua field, and a field whose name is `rua` in another case (an
    unknown extension, since names are case-sensitive, so it is ignored).
    """
    split = split_tagged_record(record, TLSRPT_RECORD_VERSION)
    if isinstance(split, TaggedRecordError):
        consequence = ""
        if split.extra_delimiter:
            consequence = "; strict reporters such as mox ignore the record and send no reports"
        return TlsRptRecordError(
            RecordCode.INVALID_RECORD,
            f"v=TLSRPTv1 record {record!r} is invalid: {split.reason}{consequence}",
        )
    warnings = list(split.warnings)
    rua: list[str] = []
    rua_fields = 0
    miscased: list[str] = []
    for name, value in split.fields:
        if name == "rua":
            rua_fields += 1
            for uri in split_rua(value):
                if uri == "":
                    return TlsRptRecordError(
                        RecordCode.INVALID_RECORD,
                        f"v=TLSRPTv1 record {record!r} is invalid: empty URI in rua",
                    )
                problem = rua_uri_problem(uri)
                if problem is not None:
                    return TlsRptRecordError(
                        RecordCode.INVALID_RECORD,
                        f"v=TLSRPTv1 record {record!r} is invalid: {problem}",
                    )
                rua.append(uri)
        elif not is_extension_value(value):
            return TlsRptRecordError(
                RecordCode.INVALID_RECORD,
                f"v=TLSRPTv1 record {record!r} is invalid: value of {name!r} must be printable "
                "ASCII without spaces, '=' or ';'",
            )
        elif name.lower() == "rua":
            miscased.append(name)
    if rua_fields == 0:
        hint = " (field names are case-sensitive: write 'rua=')" if miscased else ""
        return TlsRptRecordError(
            RecordCode.MISSING_RUA, f"v=TLSRPTv1 record {record!r} has no rua field{hint}"
        )
    if rua_fields > 1:
        warnings.append(
            f"{rua_fields} rua fields; RFC 8460 §3 allows several and reporters such as mox "
            "use them all, but checkers such as checkdmarc reject a repeated rua tag: "
            "list every URI in one rua field, separated by commas"
        )
    for name in dict.fromkeys(miscased):
        warnings.append(
            f"field {name!r} is ignored: field names are case-sensitive, so it is an unknown "
            "extension, not 'rua'"
        )
    return TlsRptRecord(raw=record, rua=tuple(rua), warnings=tuple(warnings))
