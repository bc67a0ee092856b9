"""`_smtp._tls` TLS-RPT record selection and parsing (RFC 8460 §3)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.core.sts import EXTRA_DELIMITER, NONCONFORMANT_DELIMITER
from scanner.core.tlsrpt_record import TlsRptRecordError, select_tlsrpt_record
from scanner.models import TlsRptRecord

# Each valid case is followed by its failing twin.
CASES = [
    # RFC 8460 §3.1 examples.
    pytest.param(
        ["v=TLSRPTv1;rua=mailto:reports@example.com"], ("mailto:reports@example.com",), id="mailto"
    ),
    pytest.param(["v=TLSRPTv1;rua=mailto:reports.example.com"], None, id="mailto-no-at-twin"),
    pytest.param(
        ["v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt"],
        ("https://reporting.example.com/v1/tlsrpt",),
        id="https",
    ),
    pytest.param(["v=TLSRPTv1; rua=http://reporting.example.com/v1/tlsrpt"], None, id="http-twin"),
    # Comma-separated URIs, WSP around commas.
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com , https://r.example/x"],
        ("mailto:a@example.com", "https://r.example/x"),
        id="two-uris",
    ),
    pytest.param(["v=TLSRPTv1; rua=mailto:a@example.com , "], None, id="dangling-comma-twin"),
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com,mailto:b@example.com"],
        ("mailto:a@example.com", "mailto:b@example.com"),
        id="no-space-comma",
    ),
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com mailto:b@example.com"],
        None,
        id="space-separated-twin",
    ),
    # Several rua fields are grammatical: all collected.
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com; rua=https://r.example/"],
        ("mailto:a@example.com", "https://r.example/"),
        id="two-rua-fields",
    ),
    pytest.param(["v=TLSRPTv1; ruf=mailto:a@example.com"], None, id="no-rua-twin"),
    # Percent-encoding of '!' (and ',' ';').
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a%21b@example.com"],
        ("mailto:a%21b@example.com",),
        id="encoded-bang",
    ),
    pytest.param(["v=TLSRPTv1; rua=mailto:a!b@example.com"], None, id="raw-bang-twin"),
    pytest.param(
        ["v=TLSRPTv1; rua=https://r.example/?k=v&x=1"],
        ("https://r.example/?k=v&x=1",),
        id="query-with-equals",
    ),
    pytest.param(["v=TLSRPTv1; rua=https:///path"], None, id="https-no-host-twin"),
    # Extensions ignored.
    pytest.param(
        ["v=TLSRPTv1; ext=1; rua=mailto:a@example.com"], ("mailto:a@example.com",), id="extension"
    ),
    pytest.param(
        ["v=TLSRPTv1; ext=a=b; rua=mailto:a@example.com"], None, id="bad-extension-value-twin"
    ),
    # Delimiters.
    pytest.param(
        ["v=TLSRPTv1 ; rua=mailto:a@example.com ;"],
        ("mailto:a@example.com",),
        id="wsp-around-delimiters",
    ),
    pytest.param(["v=TLSRPTv1 rua=mailto:a@example.com"], None, id="missing-delimiter-twin"),
    # At most one delimiter after the last field (RFC 8460 §3 grammar).
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:x@example.com;"], ("mailto:x@example.com",), id="one-trailing"
    ),
    pytest.param(["v=TLSRPTv1; rua=mailto:x@example.com;;"], None, id="two-trailing-twin"),
    pytest.param(
        ["v=TLSRPTv1; ext=1; rua=mailto:x@example.com"],
        ("mailto:x@example.com",),
        id="delimiter-between-fields",
    ),
    pytest.param(["v=TLSRPTv1; ext=1;; rua=mailto:x@example.com"], None, id="empty-field-twin"),
    # Version first, case-sensitive; exactly one record.
    pytest.param(
        ["v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@example.com"],
        ("mailto:a@example.com",),
        id="spf-discarded",
    ),
    pytest.param(["v=tlsrptv1; rua=mailto:a@example.com"], None, id="version-case-twin"),
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv2; rua=mailto:b@example.com"],
        ("mailto:a@example.com",),
        id="other-version-discarded",
    ),
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1; rua=mailto:b@example.com"],
        None,
        id="two-records-twin",
    ),
    pytest.param(
        ["v=TLSRPTv1; rua=MAILTO:a@example.com"],
        ("MAILTO:a@example.com",),
        id="scheme-case-insensitive",
    ),
    pytest.param(["rua=mailto:a@example.com; v=TLSRPTv1"], None, id="version-not-first-twin"),
    pytest.param(["v=TLSRPTv1; rua=mailto:a@example.com"], ("mailto:a@example.com",), id="plain"),
    pytest.param([], None, id="no-records-twin"),
    # Only records beginning "v=TLSRPTv1" *WSP ";" count (RFC 8460 §3).
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1"],
        ("mailto:a@example.com",),
        id="bare-version-discarded",
    ),
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1;"],
        None,
        id="empty-fields-counted-twin",
    ),
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1 rua=mailto:b@example.com"],
        ("mailto:a@example.com",),
        id="no-delimiter-discarded",
    ),
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1\t; rua=mailto:b@example.com"],
        None,
        id="wsp-delimiter-counted-twin",
    ),
    pytest.param(
        ["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv10; rua=mailto:b@example.com"],
        ("mailto:a@example.com",),
        id="TLSRPTv10-discarded",
    ),
    pytest.param(["v=TLSRPTv1"], None, id="only-bare-version-twin"),
]


@pytest.mark.parametrize(("records", "rua"), CASES)
def test_select_tlsrpt_record(records: list[str], rua: tuple[str, ...] | None) -> None:
    result = select_tlsrpt_record(records)
    if rua is None:
        assert isinstance(result, TlsRptRecordError)
        assert result.reason
    else:
        assert isinstance(result, TlsRptRecord)
        assert result.rua == rua


@pytest.mark.parametrize(
    ("records", "fragment"),
    [
        pytest.param([], "no v=TLSRPTv1 record", id="none"),
        pytest.param(
            ["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1; rua=mailto:c@d"],
            "2 v=TLSRPTv1 records",
            id="two",
        ),
        pytest.param(["v=TLSRPTv1;"], "no rua field", id="no-rua"),
        pytest.param(["v=TLSRPTv1"], "must be followed by ';'", id="bare-version"),
        pytest.param(["v=TLSRPTv1 rua=mailto:a@b"], "must be followed by ';'", id="no-delimiter"),
        pytest.param(["v=TLSRPTv1; RUA=mailto:a@b"], "write 'rua='", id="rua-case"),
        pytest.param(["v=TLSRPTv1; rua=ftp://x"], "neither mailto: nor https:", id="scheme"),
        pytest.param(["v=TLSRPTv1; rua=mailto:a,b@c"], "is not mailto:", id="comma-splits"),
        pytest.param(["v=tlsrptv1; rua=mailto:a@b"], "case-sensitive", id="case"),
        pytest.param(
            ["v=TLSRPTv1; rua=mailto:x@example.com;;"],
            "strict reporters such as mox ignore the record and send no reports",
            id="extra-delimiter",
        ),
    ],
)
def test_error_reason_is_actionable(records: list[str], fragment: str) -> None:
    result = select_tlsrpt_record(records)
    assert isinstance(result, TlsRptRecordError)
    assert fragment in result.reason


# A near miss names what is wrong: another version is not a case error.
@pytest.mark.parametrize(
    ("records", "fragment", "not_fragment"),
    [
        pytest.param(
            ["v=TLSRPTv10; rua=mailto:a@example.com"],
            "version 'TLSRPTv10' is not supported; only 'TLSRPTv1' is defined",
            "case-sensitive",
            id="TLSRPTv10",
        ),
        pytest.param(
            ["v=TLSRPTV1; rua=mailto:a@example.com"],
            "case-sensitive",
            "not supported",
            id="TLSRPTV1-case-twin",
        ),
        pytest.param(
            ["v=TLSRPTv2;rua=mailto:a@example.com"],
            "version 'TLSRPTv2' is not supported",
            "case-sensitive",
            id="TLSRPTv2",
        ),
        pytest.param(
            ["v=TLSRPTv1 rua=mailto:a@example.com"],
            "must be followed by ';'",
            "not supported",
            id="TLSRPTv1-no-delimiter-twin",
        ),
    ],
)
def test_version_hint(records: list[str], fragment: str, not_fragment: str) -> None:
    result = select_tlsrpt_record(records)
    assert isinstance(result, TlsRptRecordError)
    assert fragment in result.reason
    assert not_fragment not in result.reason


TWO_RUA_FIELDS = "2 rua fields; RFC 8460 §3 allows several"
RUA_CASE = "field 'RUA' is ignored: field names are case-sensitive"


# Grammatical records that some parsers treat differently: each warning and its twin.
@pytest.mark.parametrize(
    ("record", "fragment", "warned"),
    [
        pytest.param(
            "v=TLSRPTv1; rua=mailto:a@example.com; rua=https://r.example/",
            TWO_RUA_FIELDS,
            True,
            id="two-rua-fields",
        ),
        pytest.param(
            "v=TLSRPTv1; rua=mailto:a@example.com,https://r.example/",
            TWO_RUA_FIELDS,
            False,
            id="one-rua-two-uris-twin",
        ),
        pytest.param(
            "v=TLSRPTv1 ; rua=mailto:a@example.com",
            NONCONFORMANT_DELIMITER,
            True,
            id="wsp-before-first-delimiter",
        ),
        pytest.param(
            "v=TLSRPTv1; rua=mailto:a@example.com ;",
            NONCONFORMANT_DELIMITER,
            False,
            id="wsp-before-trailing-delimiter-twin",
        ),
        pytest.param(
            "v=TLSRPTv1; rua=mailto:a@example.com; RUA=mailto:b@example.com",
            RUA_CASE,
            True,
            id="miscased-rua-ignored",
        ),
        pytest.param(
            "v=TLSRPTv1; rua=mailto:a@example.com; ruf=mailto:b@example.com",
            "field 'ruf' is ignored",
            False,
            id="other-extension-twin",
        ),
    ],
)
def test_warnings(record: str, fragment: str, warned: bool) -> None:
    result = select_tlsrpt_record([record])
    assert isinstance(result, TlsRptRecord)
    assert any(fragment in warning for warning in result.warnings) is warned
    if not warned:
        assert result.warnings == ()


def test_two_rua_fields_warning_names_the_fix() -> None:
    result = select_tlsrpt_record(
        ["v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com"]
    )
    assert isinstance(result, TlsRptRecord)
    assert result.rua == ("mailto:a@example.com", "mailto:b@example.com")
    (warning,) = result.warnings
    assert "checkdmarc reject a repeated rua tag" in warning
    assert "list every URI in one rua field, separated by commas" in warning


def test_extra_delimiter_reason() -> None:
    result = select_tlsrpt_record(["v=TLSRPTv1; rua=mailto:x@example.com;;"])
    assert isinstance(result, TlsRptRecordError)
    assert EXTRA_DELIMITER in result.reason


def test_record_keeps_raw_text() -> None:
    raw = "v=TLSRPTv1; rua=mailto:a@example.com"
    result = select_tlsrpt_record([raw])
    assert isinstance(result, TlsRptRecord)
    assert result.raw == raw


@given(st.lists(st.text(max_size=80), max_size=4))
def test_never_raises_on_arbitrary_text(records: list[str]) -> None:
    result = select_tlsrpt_record(records)
    assert isinstance(result, TlsRptRecord | TlsRptRecordError)


@given(st.lists(st.text(max_size=60).map(lambda s: "v=TLSRPTv1;" + s), max_size=2))
def test_never_raises_on_arbitrary_fields(records: list[str]) -> None:
    result = select_tlsrpt_record(records)
    assert isinstance(result, TlsRptRecord | TlsRptRecordError)


# What r"[a-z0-9.+_-]{1,12}" and r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){1,3}" match, drawn as
# whole strings (a regex strategy draws each character on its own).
LOWER_DIGITS = string.ascii_lowercase + string.digits
locals_ = st.text(alphabet=LOWER_DIGITS + ".+_-", min_size=1, max_size=12)
hosts = st.lists(
    st.text(alphabet=LOWER_DIGITS, min_size=1, max_size=8), min_size=2, max_size=4
).map(".".join)
uris = st.one_of(
    st.builds(lambda user, host: f"mailto:{user}@{host}", locals_, hosts),
    st.builds(lambda host: f"https://{host}/tlsrpt", hosts),
)


@given(st.lists(uris, min_size=1, max_size=4), st.text(alphabet=" \t", max_size=2))
def test_uri_lists_parse_in_order(uri_list: list[str], space: str) -> None:
    record = "v=TLSRPTv1; rua=" + f"{space},{space}".join(uri_list)
    result = select_tlsrpt_record([record])
    assert isinstance(result, TlsRptRecord)
    assert result.rua == tuple(uri_list)
    assert result.warnings == ()


@given(st.lists(st.lists(uris, min_size=1, max_size=2), min_size=1, max_size=4))
def test_every_rua_field_is_collected_and_several_are_warned_about(
    fields: list[list[str]],
) -> None:
    record = "v=TLSRPTv1; " + "; ".join("rua=" + ",".join(field) for field in fields)
    result = select_tlsrpt_record([record])
    assert isinstance(result, TlsRptRecord)
    assert result.rua == tuple(uri for field in fields for uri in field)
    warned = any(f"{len(fields)} rua fields" in warning for warning in result.warnings)
    assert warned is (len(fields) > 1)
