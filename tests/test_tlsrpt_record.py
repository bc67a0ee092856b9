"""`_smtp._tls` TLS-RPT record selection and parsing (RFC 8460 §3; RFC-NOTES §2.2, §7 R8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    ],
)
def test_error_reason_is_actionable(records: list[str], fragment: str) -> None:
    result = select_tlsrpt_record(records)
    assert isinstance(result, TlsRptRecordError)
    assert fragment in result.reason


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


locals_ = st.from_regex(r"[a-z0-9.+_-]{1,12}", fullmatch=True)
hosts = st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){1,3}", fullmatch=True)
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
