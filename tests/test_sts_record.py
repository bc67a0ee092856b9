"""`_mta-sts` TXT record selection and parsing (RFC 8461 §3.1)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scanner.core.sts import (
    EXTRA_DELIMITER,
    NONCONFORMANT_DELIMITER,
    StsRecordError,
    select_sts_record,
)
from scanner.models import StsRecord

# Each valid case is followed by its failing twin.
CASES = [
    # T3/T8: the reference vectors (postfix-mta-sts-resolver) and near misses.
    pytest.param(["v=STSv1; id=20160831085700Z;"], "20160831085700Z", id="T8-trailing-delimiter"),
    pytest.param(["v=STSv1; id=20160831085700Z:"], None, id="T8-trailing-colon-twin"),
    pytest.param(["v=STSv1;id=20160831085700Z"], "20160831085700Z", id="T8-no-space"),
    pytest.param(["v=STSv1id=20160831085700Z"], None, id="T8-no-delimiter-twin"),
    pytest.param(["v=STSv1;        id=20160831085700Z   "], "20160831085700Z", id="T8-wsp"),
    pytest.param(["v=STSv1;        id=2016 0831085700Z"], None, id="T8-wsp-inside-id-twin"),
    # T8: at most one delimiter after the last field (RFC 8461 §3.1); postfix-mta-sts-resolver
    # accepts the ";;;" vector, mox (the strict side, followed here) refuses it.
    pytest.param(
        ["v=STSv1; id=20160831085700Z ; "], "20160831085700Z", id="T8-one-delimiter-after-last"
    ),
    pytest.param(["v=STSv1; id=20160831085700Z;;;"], None, id="T8-repeated-delimiters-twin"),
    pytest.param(["v=STSv1; id=a;"], "a", id="T8-one-trailing-semicolon"),
    pytest.param(["v=STSv1; id=a;;"], None, id="T8-two-trailing-semicolons-twin"),
    pytest.param(["v=STSv1; ext=1; id=a"], "a", id="T8-delimiter-between-fields"),
    pytest.param(["v=STSv1; ext=1; ; id=a"], None, id="T8-empty-field-between-twin"),
    pytest.param(["v=STSv1; id=a"], "a", id="T8-one-delimiter-after-version"),
    pytest.param(["v=STSv1;; id=a"], None, id="T8-empty-first-field-twin"),
    pytest.param(["v=STSv1;\tid=abc"], "abc", id="T8-tab"),
    pytest.param(["v=STSv1;\nid=abc"], None, id="T8-newline-twin"),
    # T5: version first, literals case-sensitive.
    pytest.param(["v=STSv1; id=abc"], "abc", id="T5-version-first"),
    pytest.param(["id=abc; v=STSv1"], None, id="T5-version-not-first-twin"),
    pytest.param(["v=STSv1; id=abc; v=STSv1"], "abc", id="T5-v-again-as-extension"),
    pytest.param(["v=stsv1; id=abc"], None, id="T5-version-case-twin"),
    pytest.param(["v=STSv1; id=AbC123"], "AbC123", id="T5-id-case-kept"),
    pytest.param(["v=STSv1; ID=AbC123"], None, id="T5-id-name-case-twin"),
    pytest.param(["v=STSv1; id=1"], "1", id="T5-STSv1"),
    pytest.param(["v=STSv10; id=1"], None, id="T5-STSv10-twin"),
    # T6: id is 1-32 letters and digits.
    pytest.param(["v=STSv1; id=" + "a" * 32], "a" * 32, id="T6-32-chars"),
    pytest.param(["v=STSv1; id=" + "a" * 33], None, id="T6-33-chars-twin"),
    pytest.param(["v=STSv1; id=20190101"], "20190101", id="T6-digits"),
    pytest.param(["v=STSv1; id=2019-01-01"], None, id="T6-hyphen-twin"),
    pytest.param(["v=STSv1; id=abc"], "abc", id="T6-letters"),
    pytest.param(["v=STSv1; id=a.b"], None, id="T6-dot-twin"),
    pytest.param(["v=STSv1; id=T102030Z"], "T102030Z", id="T6-stamp"),
    pytest.param(["v=STSv1; id=10:20:30"], None, id="T6-colon-twin"),
    pytest.param(["v=STSv1; id=x"], "x", id="T6-one-char"),
    pytest.param(["v=STSv1; id="], None, id="T6-empty-twin"),
    pytest.param(["v=STSv1; id=abc"], "abc", id="T6-present"),
    pytest.param(["v=STSv1;"], None, id="T6-missing-twin"),
    # T7: extensions accepted and ignored; their values exclude '=', ';' and space.
    pytest.param(["v=STSv1; id=abc; ext_a.b-c=val!ue"], "abc", id="T7-extension"),
    pytest.param(["v=STSv1; id=abc; ext=va=lue"], None, id="T7-equals-in-value-twin"),
    pytest.param(["v=STSv1; ext=1; id=abc"], "abc", id="T7-extension-before-id"),
    pytest.param(["v=STSv1; ext=a b; id=abc"], None, id="T7-space-in-value-twin"),
    pytest.param(["v=STSv1; id=abc; " + "e" * 32 + "=1"], "abc", id="T7-32-char-name"),
    pytest.param(["v=STSv1; id=abc; " + "e" * 33 + "=1"], None, id="T7-33-char-name-twin"),
    pytest.param(["v=STSv1; id=abc; e=1"], "abc", id="T7-name-alnum-first"),
    pytest.param(["v=STSv1; id=abc; _e=1"], None, id="T7-name-underscore-first-twin"),
    pytest.param(["v=STSv1; id=abc; e=é"], None, id="T7-non-ascii-value-twin"),
    # T2/T3/T4: selection among several records (already joined).
    pytest.param(["v=spf1 -all", "v=STSv1; id=abc"], "abc", id="T3-spf-discarded"),
    pytest.param(["v=spf1 -all"], None, id="T4-only-spf-twin"),
    pytest.param(["v=STSv1; id=abc", "v=STSv2; id=def"], "abc", id="T3-other-version-discarded"),
    pytest.param(["v=STSv1; id=abc", "v=STSv1; id=def"], None, id="T4-two-records-twin"),
    pytest.param(["v=STSv1; id=abc"], "abc", id="T4-one-record"),
    pytest.param([], None, id="T4-no-records-twin"),
    # T3: only records beginning "v=STSv1" *WSP ";" count (RFC 8461 §3.1).
    pytest.param(["v=STSv1; id=abc", "v=STSv1"], "abc", id="T3-bare-version-discarded"),
    pytest.param(["v=STSv1; id=abc", "v=STSv1;"], None, id="T3-empty-fields-counted-twin"),
    pytest.param(["v=STSv1; id=abc", "v=STSv1 id=def"], "abc", id="T3-no-delimiter-discarded"),
    pytest.param(["v=STSv1; id=abc", "v=STSv1 ; id=def"], None, id="T3-wsp-delimiter-counted-twin"),
    pytest.param(["v=STSv1; id=abc", "v=STSv10; id=def"], "abc", id="T3-STSv10-discarded"),
    pytest.param(["v=STSv1; id=abc", "v=STSv1\t;id=def"], None, id="T3-tab-delimiter-counted-twin"),
    pytest.param(["v=STSv1; id=abc", "v=STSv1 "], "abc", id="T3-version-and-wsp-discarded"),
    pytest.param(["v=STSv1"], None, id="T3-only-bare-version-twin"),
]


@pytest.mark.parametrize(("records", "expected_id"), CASES)
def test_select_sts_record(records: list[str], expected_id: str | None) -> None:
    result = select_sts_record(records)
    if expected_id is None:
        assert isinstance(result, StsRecordError)
        assert result.reason
    else:
        assert isinstance(result, StsRecord)
        assert result.id == expected_id


@pytest.mark.parametrize(
    ("records", "fragment"),
    [
        pytest.param([], "no v=STSv1 record", id="none"),
        pytest.param(["v=STSv1; id=a", "v=STSv1; id=b"], "2 v=STSv1 records", id="two"),
        pytest.param(["v=stsv1; id=a"], "case-sensitive", id="case"),
        pytest.param(["id=a; v=STSv1"], "must come first", id="order"),
        pytest.param(["v=STSv1;"], "no id field", id="no-id"),
        pytest.param(["v=STSv1; ID=a"], "write 'id='", id="id-case"),
        pytest.param(["v=STSv1; id=a-b"], "1 to 32 letters and digits", id="bad-id"),
        pytest.param(["v=STSv1 id=a"], "must be followed by ';'", id="missing-delimiter"),
        pytest.param(["v=STSv1"], "must be followed by ';'", id="bare-version"),
    ],
)
def test_error_reason_is_actionable(records: list[str], fragment: str) -> None:
    result = select_sts_record(records)
    assert isinstance(result, StsRecordError)
    assert fragment in result.reason


# A near miss names what is wrong: another version is not a case error.
@pytest.mark.parametrize(
    ("records", "fragment", "not_fragment"),
    [
        pytest.param(
            ["v=STSv12; id=a"],
            "version 'STSv12' is not supported; only 'STSv1' is defined",
            "case-sensitive",
            id="STSv12",
        ),
        pytest.param(["v=stsv1; id=a"], "case-sensitive", "not supported", id="STSv1-case-twin"),
        pytest.param(
            ["v=spf1 -all", "v=STSv2; id=a"],
            "'v=STSv2; id=a' is not it: version 'STSv2' is not supported",
            "case-sensitive",
            id="STSv2",
        ),
        pytest.param(
            ["v=STSv1 id=a"], "must be followed by ';'", "not supported", id="STSv1-no-delim-twin"
        ),
        pytest.param(
            ["v=sTsV12;id=a"], "version 'sTsV12' is not supported", "case", id="STSv12-any-case"
        ),
        pytest.param(["V=STSv1; id=a"], "case-sensitive", "not supported", id="V-case-twin"),
    ],
)
def test_version_hint(records: list[str], fragment: str, not_fragment: str) -> None:
    result = select_sts_record(records)
    assert isinstance(result, StsRecordError)
    assert fragment in result.reason
    assert not_fragment not in result.reason


# RFC 8461 §3.1: record = version 1*(field-delim field) [field-delim]. A second
# ';' after the last field is an empty field: invalid, and the reason says what
# senders do with it.
@pytest.mark.parametrize(
    ("record", "valid"),
    [
        pytest.param("v=STSv1; id=a;", True, id="one-trailing-delimiter"),
        pytest.param("v=STSv1; id=a;;", False, id="two-trailing-delimiters-twin"),
        pytest.param("v=STSv1; id=a ; \t", True, id="trailing-delimiter-with-wsp"),
        pytest.param("v=STSv1; id=a ; ;", False, id="wsp-between-two-delimiters-twin"),
    ],
)
def test_at_most_one_delimiter_after_the_last_field(record: str, valid: bool) -> None:
    result = select_sts_record([record])
    if valid:
        assert isinstance(result, StsRecord)
        assert result.warnings == ()
        return
    assert isinstance(result, StsRecordError)
    assert EXTRA_DELIMITER in result.reason
    assert "strict senders such as mox ignore the record and see no MTA-STS policy" in result.reason
    assert "postfix-mta-sts-resolver accept it" in result.reason


# The grammar's field-delim is *WSP ";" *WSP everywhere; only WSP between the
# version and the first ';' clashes with the "v=STSv1;" discard rule (erratum 6285).
@pytest.mark.parametrize(
    ("record", "warned"),
    [
        pytest.param("v=STSv1 ; id=abc", True, id="wsp-before-first-delimiter"),
        pytest.param("v=STSv1; id=abc", False, id="wsp-after-delimiter-twin"),
        pytest.param("v=STSv1\t;id=abc", True, id="tab-before-first-delimiter"),
        pytest.param("v=STSv1; id=abc ;", False, id="wsp-before-trailing-delimiter-twin"),
        pytest.param("v=STSv1 ;id=abc ;", True, id="wsp-before-first-and-trailing"),
        pytest.param("v=STSv1; ext=1 ;\tid=abc", False, id="wsp-before-inner-delimiter-twin"),
    ],
)
def test_erratum_6285_delimiter_warning(record: str, warned: bool) -> None:
    result = select_sts_record([record])
    assert isinstance(result, StsRecord)
    assert (NONCONFORMANT_DELIMITER in result.warnings) is warned
    assert result.warnings.count(NONCONFORMANT_DELIMITER) <= 1


def test_record_keeps_raw_text() -> None:
    result = select_sts_record(["v=STSv1; id=abc; ext=1"])
    assert isinstance(result, StsRecord)
    assert result.raw == "v=STSv1; id=abc; ext=1"


@pytest.mark.parametrize(
    ("record", "warned"),
    [
        pytest.param("v=STSv1; id=first; id=second", True, id="second-id"),
        pytest.param("v=STSv1; id=first; idx=second", False, id="other-field-twin"),
    ],
)
def test_duplicate_id_first_wins_with_warning(record: str, warned: bool) -> None:
    result = select_sts_record([record])
    assert isinstance(result, StsRecord)
    assert result.id == "first"
    text = " ".join(result.warnings)
    assert ("duplicate id field; the first (first) is used" in text) is warned
    assert ("mox reject a record with a second id" in text) is warned


@given(st.lists(st.text(max_size=80), max_size=4))
def test_never_raises_on_arbitrary_text(records: list[str]) -> None:
    result = select_sts_record(records)
    assert isinstance(result, StsRecord | StsRecordError)


ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    min_size=1,
    max_size=32,
)
wsp = st.text(alphabet=" \t", max_size=3)


@given(ids, wsp, wsp, wsp, st.sampled_from(["", ";", ";;"]))
def test_valid_id_always_parses_whatever_the_spacing(
    record_id: str, before: str, after: str, tail_space: str, trailer: str
) -> None:
    tail = f"{tail_space}{trailer}{tail_space}" if trailer else ""
    record = f"v=STSv1{before};{after}id={record_id}{tail}"
    result = select_sts_record([record])
    if trailer == ";;":
        # At most one field-delim follows the last field (RFC 8461 §3.1).
        assert isinstance(result, StsRecordError)
        assert EXTRA_DELIMITER in result.reason
        return
    assert isinstance(result, StsRecord)
    assert result.id == record_id
    # Only WSP between the version and the first ';' is warned about.
    assert result.warnings == ((NONCONFORMANT_DELIMITER,) if before else ())


@given(ids, wsp, st.integers(min_value=0, max_value=2), st.booleans())
def test_an_empty_field_anywhere_makes_the_record_invalid(
    record_id: str, space: str, where: int, doubled: bool
) -> None:
    delimiters = ["; ", "; ", ";"]
    if doubled:
        delimiters[where] = ";" + space + delimiters[where]
    record = f"v=STSv1{delimiters[0]}id={record_id}{delimiters[1]}ext=1{delimiters[2]}"
    result = select_sts_record([record])
    if doubled:
        assert isinstance(result, StsRecordError)
        assert EXTRA_DELIMITER in result.reason
    else:
        assert isinstance(result, StsRecord)
        assert result.id == record_id


def is_valid_id(text: str) -> bool:
    return 1 <= len(text) <= 32 and text.isascii() and text.isalnum()


@given(st.text(min_size=1, max_size=40).filter(lambda s: not is_valid_id(s)))
@example("abc ")
@example(" 0")
@example("\t0")
@example(" abc")
@example("a;b")
def test_invalid_id_never_parses(record_id: str) -> None:
    result = select_sts_record([f"v=STSv1; id={record_id}"])
    if ";" in record_id:
        # The ';' may split the junk into a valid id plus further fields.
        return
    if is_valid_id(record_id.rstrip(" \t")):
        # WSP after a field is part of the delimiter (sts-field-delim = *WSP ";" *WSP),
        # not of the id; WSP after "=" is part of the value, which makes it invalid.
        assert isinstance(result, StsRecord)
        assert result.id == record_id.rstrip(" \t")
        return
    assert isinstance(result, StsRecordError)


@given(st.text(max_size=40), st.text(max_size=40))
def test_record_not_opening_with_version_and_delimiter_is_discarded(other: str, tail: str) -> None:
    record = "v=STSv1" + tail
    expected_candidate = tail.lstrip(" \t").startswith(";")
    result = select_sts_record(["v=STSv1; id=abc", record, other])
    if other.startswith("v=STSv1") and other.removeprefix("v=STSv1").lstrip(" \t")[:1] == ";":
        return  # a third candidate; covered by the two-record cases
    if expected_candidate:
        assert isinstance(result, StsRecordError)
        assert "2 v=STSv1 records" in result.reason
    else:
        assert isinstance(result, StsRecord)
        assert result.id == "abc"
