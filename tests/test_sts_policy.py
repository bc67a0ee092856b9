"""MTA-STS policy body parsing (RFC 8461 §3.2)."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given, reject
from hypothesis import strategies as st
from strategies import dns_labels

from scanner.core.sts import (
    MAX_AGE_LIMIT,
    STRICT_PARSERS_REJECT_POLICY,
    parse_policy,
    parse_policy_bytes,
)
from scanner.models import Policy, PolicyFailure, PolicyMode, ResultType

RFC_EXAMPLE = (
    "version: STSv1\n"
    "mode: enforce\n"
    "mx: mail.example.com\n"
    "mx: *.example.net\n"
    "mx: backupmx.example.com\n"
    "max_age: 604800\n"
)


def body(*lines: str, end: str = "\n") -> str:
    return end.join(lines) + end


BASE = ("version: STSv1", "mode: enforce", "mx: mail.example.com", "max_age: 86400")

# Each valid case is followed by its failing twin.
CASES = [
    # P1: line endings.
    pytest.param(body(*BASE, end="\r\n"), True, id="P1-crlf"),
    pytest.param(body(*BASE, end="\r"), False, id="P1-bare-cr-twin"),
    pytest.param(body(*BASE), True, id="P1-lf"),
    pytest.param(
        "version: STSv1\nmode: enforce mx: mail.example.com\nmax_age: 86400\n",
        False,
        id="P1-joined-lines-twin",
    ),
    pytest.param(
        "version: STSv1\r\nmode: enforce\nmx: mail.example.com\r\nmax_age: 86400",
        True,
        id="P1-mixed-no-final",
    ),
    pytest.param(
        "version: STSv1\r\r\nmode: enforce\nmx: mail.example.com\nmax_age: 86400",
        False,
        id="P1-double-cr-twin",
    ),
    # P2: required fields; mx required unless mode none.
    pytest.param(body(*BASE), True, id="P2-all-present"),
    pytest.param(
        body("mode: enforce", "mx: mail.example.com", "max_age: 86400"),
        False,
        id="P2-no-version-twin",
    ),
    pytest.param(
        body("version: STSv1", "mode: testing", "mx: a.example", "max_age: 1"),
        True,
        id="P2-testing",
    ),
    pytest.param(
        body("version: STSv1", "mx: a.example", "max_age: 1"), False, id="P2-no-mode-twin"
    ),
    pytest.param(
        body("version: STSv1", "mode: none", "max_age: 86400"), True, id="P2-none-without-mx"
    ),
    pytest.param(
        body("version: STSv1", "mode: enforce", "max_age: 86400"),
        False,
        id="P2-enforce-without-mx-twin",
    ),
    pytest.param(body("version: STSv1", "mode: none", "max_age: 0"), True, id="P2-max-age-zero"),
    pytest.param(body("version: STSv1", "mode: none"), False, id="P2-no-max-age-twin"),
    pytest.param(
        body("version: STSv1", "mode: testing", "mx: a.example", "max_age: 1"),
        True,
        id="P2-testing-mx",
    ),
    pytest.param(
        body("version: STSv1", "mode: testing", "max_age: 1"),
        False,
        id="P2-testing-without-mx-twin",
    ),
    # P3: first occurrence wins for non-mx keys.
    pytest.param(
        body(*BASE, "mode: bogus", "version: STSv2"), True, id="P3-later-duplicates-ignored"
    ),
    pytest.param(body("mode: bogus", *BASE), False, id="P3-first-is-invalid-twin"),
    # P4: unknown keys ignored, UTF-8 extension values accepted.
    pytest.param(body(*BASE, "x-comment: héllo wörld"), True, id="P4-utf8-extension"),
    pytest.param(body(*BASE, "x-comment: bell\x07"), False, id="P4-control-char-twin"),
    pytest.param(body(*BASE, "future_field.v2: 1"), True, id="P4-unknown-key"),
    pytest.param(body(*BASE, "future field: 1"), False, id="P4-bad-key-name-twin"),
    pytest.param(body(*BASE, "x: y"), True, id="P4-unknown-key-with-value"),
    pytest.param(body(*BASE, "x:"), False, id="P4-empty-value-twin"),
    pytest.param(body(*BASE, "note: a: b"), True, id="P4-colon-in-value"),
    pytest.param(body(*BASE, "no colon here"), False, id="P4-no-colon-twin"),
    # P4: extension values: visible first and last, inner SP only.
    pytest.param(body(*BASE, "note: a  b"), True, id="P4-inner-spaces"),
    pytest.param(body(*BASE, "note: a\tb"), False, id="P4-inner-tab-twin"),
    pytest.param(body(*BASE, "note:\ta b\t"), True, id="P4-tab-around-value"),
    pytest.param(body(*BASE, "note: a \t b"), False, id="P4-tab-among-spaces-twin"),
    pytest.param(body(*BASE, "note: a\x80b\x9f"), True, id="P4-u0080-u009f"),
    pytest.param(body(*BASE, "note: a\x7fb"), False, id="P4-del-twin"),
    pytest.param(body(*BASE, "note: \x85"), True, id="P4-u0085-alone"),
    pytest.param(body(*BASE, "note: \x1b"), False, id="P4-escape-twin"),
    pytest.param(body(*BASE, "note: \u00a0x\u3000"), True, id="P4-non-ascii-spaces-are-vchar"),
    pytest.param(body(*BASE, "note: a\ud800"), False, id="P4-lone-surrogate-twin"),
    # P5: max_age digits and range.
    pytest.param(body(*BASE[:3], f"max_age: {MAX_AGE_LIMIT}"), True, id="P5-max"),
    pytest.param(body(*BASE[:3], f"max_age: {MAX_AGE_LIMIT + 1}"), False, id="P5-above-max-twin"),
    pytest.param(body(*BASE[:3], "max_age: 0000604800"), True, id="P5-ten-digits"),
    pytest.param(body(*BASE[:3], "max_age: 12345678901"), False, id="P5-eleven-digits-twin"),
    pytest.param(body(*BASE[:3], "max_age: 1"), True, id="P5-one"),
    pytest.param(body(*BASE[:3], "max_age: -1"), False, id="P5-negative-twin"),
    pytest.param(body(*BASE[:3], "max_age: 604800"), True, id="P5-week"),
    pytest.param(body(*BASE[:3], "max_age: 1w"), False, id="P5-unit-twin"),
    pytest.param(body(*BASE[:3], "max_age: 86400"), True, id="P5-day"),
    pytest.param(body(*BASE[:3], "max_age: +86400"), False, id="P5-plus-twin"),
    # P6: mx syntax.
    pytest.param(body(*BASE[:2], "mx: *.example.com", BASE[3]), True, id="P6-wildcard"),
    pytest.param(
        body(*BASE[:2], "mx: *example.com", BASE[3]), False, id="P6-partial-wildcard-twin"
    ),
    pytest.param(body(*BASE[:2], "mx: mail.example.com", BASE[3]), True, id="P6-plain"),
    pytest.param(
        body(*BASE[:2], "mx: mail.*.example.com", BASE[3]), False, id="P6-inner-wildcard-twin"
    ),
    pytest.param(body(*BASE[:2], "mx: *.mx.example.com", BASE[3]), True, id="P6-deep-wildcard"),
    pytest.param(
        body(*BASE[:2], "mx: *.*.example.com", BASE[3]), False, id="P6-double-wildcard-twin"
    ),
    pytest.param(body(*BASE[:2], "mx: mx-1.example.com", BASE[3]), True, id="P6-hyphen"),
    pytest.param(
        body(*BASE[:2], "mx: -mx.example.com", BASE[3]), False, id="P6-leading-hyphen-twin"
    ),
    pytest.param(body(*BASE[:2], "mx: mx1.example.com", BASE[3]), True, id="P6-digits"),
    pytest.param(body(*BASE[:2], "mx: ex_ample.com", BASE[3]), False, id="P6-underscore-twin"),
    pytest.param(body(*BASE[:2], "mx: xn--bcher-kva.example", BASE[3]), True, id="P6-a-label"),
    pytest.param(body(*BASE[:2], "mx: bücher.example", BASE[3]), False, id="P6-u-label-twin"),
    pytest.param(body(*BASE[:2], "mx: 192-0-2-1.example", BASE[3]), True, id="P6-digit-name"),
    pytest.param(body(*BASE[:2], "mx: 192.0.2.1", BASE[3]), False, id="P6-ipv4-twin"),
    pytest.param(body(*BASE[:2], "mx: mail.example.com", BASE[3]), True, id="P6-no-trailing-dot"),
    pytest.param(body(*BASE[:2], "mx: [2001:db8::1]", BASE[3]), False, id="P6-ipv6-twin"),
    pytest.param(body(*BASE[:2], "mx: localhost", BASE[3]), True, id="P6-single-label"),
    pytest.param(
        body(*BASE[:2], "mx: mail.example.com.", BASE[3]), False, id="P6-trailing-dot-twin"
    ),
    pytest.param(body(*BASE[:2], "mx: a.b", BASE[3]), True, id="P6-short"),
    pytest.param(body(*BASE[:2], "mx: a..b", BASE[3]), False, id="P6-empty-label-twin"),
    pytest.param(body(*BASE[:2], "mx:  a.b", BASE[3]), True, id="P6-extra-space"),
    pytest.param(body(*BASE[:2], "mx:", BASE[3]), False, id="P6-empty-twin"),
    pytest.param(body(*BASE[:2], "mx: *.b", BASE[3]), True, id="P6-star-dot-tld"),
    pytest.param(body(*BASE[:2], "mx: *.", BASE[3]), False, id="P6-star-dot-twin"),
    # P7: literals case-sensitive.
    pytest.param(body("version: STSv1", *BASE[1:]), True, id="P7-version"),
    pytest.param(body("version: stsv1", *BASE[1:]), False, id="P7-version-case-twin"),
    pytest.param(body(BASE[0], "mode: enforce", *BASE[2:]), True, id="P7-mode"),
    pytest.param(body(BASE[0], "mode: Enforce", *BASE[2:]), False, id="P7-mode-case-twin"),
    pytest.param(body("version: STSv1", *BASE[1:]), True, id="P7-version-value"),
    pytest.param(body("version: STSv2", *BASE[1:]), False, id="P7-version-2-twin"),
    pytest.param(body("version: STSv1", *BASE[1:]), True, id="P7-key-lower"),
    pytest.param(body("Version: STSv1", *BASE[1:]), False, id="P7-key-case-twin"),
    # P8: blank and indented lines accepted (with warnings).
    pytest.param(body(BASE[0], "", *BASE[1:]), True, id="P8-blank-line"),
    pytest.param("", False, id="P8-empty-body-twin"),
    pytest.param(body(BASE[0], "  " + BASE[1], *BASE[2:]), True, id="P8-indented"),
    pytest.param("\n\n  \n", False, id="P8-only-blank-twin"),
    # The RFC 8461 §3.2 example.
    pytest.param(RFC_EXAMPLE, True, id="rfc-example"),
    pytest.param(
        RFC_EXAMPLE.replace("max_age: 604800\n", ""), False, id="rfc-example-truncated-twin"
    ),
]


@pytest.mark.parametrize(("text", "valid"), CASES)
def test_parse_policy(text: str, valid: bool) -> None:
    result = parse_policy(text)
    if valid:
        assert isinstance(result, Policy), result
    else:
        assert isinstance(result, PolicyFailure)
        assert result.result_type is ResultType.STS_POLICY_INVALID
        assert result.detail


def test_rfc_example_fields() -> None:
    result = parse_policy(RFC_EXAMPLE)
    assert result == Policy(
        version="STSv1",
        mode=PolicyMode.ENFORCE,
        max_age=604800,
        mx=("mail.example.com", "*.example.net", "backupmx.example.com"),
        lines=tuple(RFC_EXAMPLE.splitlines()),
    )


def test_first_occurrence_wins_and_all_mx_kept() -> None:
    result = parse_policy(
        body(
            "version: STSv1",
            "mode: testing",
            "mx: a.example",
            "max_age: 5",
            "mode: enforce",
            "mx: b.example",
            "max_age: 9",
        )
    )
    assert isinstance(result, Policy)
    assert result.mode is PolicyMode.TESTING
    assert result.max_age == 5
    assert result.mx == ("a.example", "b.example")
    assert any("repeated 'mode'" in w for w in result.warnings)


def test_mx_lower_cased_lines_as_served() -> None:
    result = parse_policy(
        body("version: STSv1", "mode: enforce", "mx: Mail.EXAMPLE.com", "max_age: 5")
    )
    assert isinstance(result, Policy)
    assert result.mx == ("mail.example.com",)
    assert "mx: Mail.EXAMPLE.com" in result.lines


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(
            body(*BASE[:3], "max_age: 31557601"), "line 4 'max_age: 31557601'", id="line-number"
        ),
        pytest.param(body(*BASE[:3], "max_age: 31557601"), "cap it", id="max-age-cap-note"),
        pytest.param(body(*BASE[:2], "mx: 192.0.2.1", BASE[3]), "IP address", id="ip-literal"),
        pytest.param(
            body(*BASE[:2], "mx: *example.com", BASE[3]), "left-most label", id="wildcard"
        ),
        pytest.param(body(*BASE[:2], "mx: bücher.example", BASE[3]), "A-labels", id="u-label"),
        pytest.param(body("Version: STSv1", *BASE[1:]), "case-sensitive", id="key-case"),
        pytest.param(
            body("version: STSv1", "mode: enforce", "max_age: 1"), "at least one mx", id="no-mx"
        ),
        pytest.param(
            body("version: STSv1", "mode: strict", *BASE[2:]), "line 2 'mode: strict'", id="mode"
        ),
    ],
)
def test_failure_detail_is_actionable(text: str, fragment: str) -> None:
    result = parse_policy(text)
    assert isinstance(result, PolicyFailure)
    assert fragment in result.detail


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(body(BASE[0], "", *BASE[1:]), "line 2 is blank", id="blank"),
        pytest.param(body(BASE[0], "\t" + BASE[1], *BASE[2:]), "line 2 is indented", id="indented"),
        pytest.param(
            body("version : STSv1", *BASE[1:]), "whitespace before ':'", id="space-before-colon"
        ),
    ],
)
def test_lenient_lines_warn(text: str, fragment: str) -> None:
    result = parse_policy(text)
    assert isinstance(result, Policy)
    assert any(fragment in warning for warning in result.warnings)
    assert "" not in result.lines


# Accepted with a warning, but mox's ParsePolicy (mtasts/parse.go) rejects each
# policy of the first kind, so the warning says what senders using it see. The
# twin of each is a near case mox accepts, whose warning (if any) makes no such claim.
STRICT_CASES = [
    pytest.param(body(BASE[0], "  " + BASE[1], *BASE[2:]), "line 2 is indented", True, id="indented"),
    pytest.param(body(BASE[0], BASE[1] + "  ", *BASE[2:]), "", False, id="trailing-wsp-twin"),
    pytest.param(body("mode : enforce", BASE[0], *BASE[2:]), "line 1 has whitespace before ':'", True, id="wsp-before-colon"),
    pytest.param(body("mode:   enforce", BASE[0], *BASE[2:]), "", False, id="wsp-after-colon-twin"),
    pytest.param(body(*BASE) + "\n", "line 5 is blank", True, id="trailing-blank-line"),
    pytest.param(body(*BASE), "", False, id="single-final-terminator-twin"),
    pytest.param(body(*BASE, end="\r\n") + "\r\n", "line 5 is blank", True, id="trailing-blank-crlf-line"),
    pytest.param(body(*BASE, end="\r\n"), "", False, id="single-final-crlf-twin"),
    pytest.param(body(BASE[0], "", *BASE[1:]), "line 2 is blank", True, id="inner-blank-line"),
    pytest.param(body(*BASE, "  "), "line 5 is blank", True, id="trailing-wsp-only-line"),
    pytest.param(body(*BASE, "mode: bogus"), "repeated 'mode' ignored (the first occurrence wins), but its value 'bogus' is invalid", True, id="second-mode-invalid"),
    pytest.param(body(*BASE, "mode: testing"), "line 5: repeated 'mode' ignored; the first occurrence wins", False, id="second-mode-valid-twin"),
    pytest.param(body(*BASE, "mode: Enforce"), "its value 'Enforce' is invalid (mode must be enforce, testing or none", True, id="second-mode-case"),
    pytest.param(body(*BASE, "version: STSv2"), "repeated 'version' ignored (the first occurrence wins), but its value 'STSv2' is invalid (version must be 'STSv1')", True, id="second-version-other"),
    pytest.param(body(*BASE, "version: STSv1"), "line 5: repeated 'version' ignored; the first occurrence wins", False, id="second-version-same-twin"),
    pytest.param(body(*BASE, "max_age: 1w"), "its value '1w' is invalid (max_age must be 1 to 10 digits)", True, id="second-max-age-invalid"),
    pytest.param(body(*BASE, f"max_age: {MAX_AGE_LIMIT + 1}"), "repeated 'max_age' ignored; the first occurrence wins", False, id="second-max-age-digits-twin"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "fragment", "strict_rejects"), STRICT_CASES)
def test_warnings_name_strict_parsers_only_where_they_reject(
    text: str, fragment: str, strict_rejects: bool
) -> None:
    result = parse_policy(text)
    assert isinstance(result, Policy)
    assert (result.mode, result.max_age, result.mx) == (
        PolicyMode.ENFORCE,
        86400,
        ("mail.example.com",),
    )
    if fragment:
        assert any(fragment in warning for warning in result.warnings)
    else:
        assert result.warnings == ()
    rejecting = [w for w in result.warnings if STRICT_PARSERS_REJECT_POLICY in w]
    assert bool(rejecting) is strict_rejects


def test_strict_rejection_text_names_the_consequence() -> None:
    assert "mox reject the whole policy" in STRICT_PARSERS_REJECT_POLICY
    assert "see no MTA-STS policy" in STRICT_PARSERS_REJECT_POLICY


def test_clean_policy_has_no_warnings() -> None:
    result = parse_policy(body(*BASE))
    assert isinstance(result, Policy)
    assert result.warnings == ()


@pytest.mark.parametrize(
    ("data", "valid"),
    [
        pytest.param(body(*BASE, "note: ünïcödé").encode(), True, id="utf8"),
        pytest.param(body(*BASE, "note: ünïcödé").encode("latin-1"), False, id="latin1-twin"),
    ],
)
def test_parse_policy_bytes(data: bytes, valid: bool) -> None:
    result = parse_policy_bytes(data)
    assert isinstance(result, Policy) is valid
    if not valid:
        assert isinstance(result, PolicyFailure)
        assert "UTF-8" in result.detail


# ---------------------------------------------------------------- properties

labels = dns_labels(string.ascii_lowercase + string.digits, 8)


@st.composite
def domain_names(draw: st.DrawFn) -> str:
    """Two to four labels, not all digits: drawn again, three times at most, as `.filter`
    would."""
    for _ in range(3):
        name = ".".join(draw(st.lists(labels, min_size=2, max_size=4)))
        if not name.replace(".", "").isdigit():
            return name
    reject()


domains = domain_names()
patterns = st.one_of(domains, domains.map(lambda d: "*." + d))


MODES = st.sampled_from(["enforce", "testing", "none"])
MAX_AGES = st.integers(0, MAX_AGE_LIMIT)
MX_PATTERNS = st.lists(patterns, min_size=1, max_size=4)
EXTENSIONS = st.lists(st.sampled_from(["x-a: 1", "ext.b: two words", "c_d: é"]), max_size=2)


@st.composite
def policy_fields(draw: st.DrawFn) -> list[str]:
    mode = draw(MODES)
    fields = ["version: STSv1", f"mode: {mode}", f"max_age: {draw(MAX_AGES)}"]
    fields += [f"mx: {p}" for p in draw(MX_PATTERNS)]
    fields += draw(EXTENSIONS)
    return draw(st.permutations(fields))


TRAILING = st.text(alphabet=" \t", max_size=3)
ENDINGS = st.sampled_from(["\n", "\r\n"])


@given(
    policy_fields(),
    st.data(),
)
def test_same_policy_for_any_line_endings_and_trailing_whitespace(
    fields: list[str], data: st.DataObject
) -> None:
    reference = parse_policy("\n".join(fields))
    assert isinstance(reference, Policy)
    pieces: list[str] = []
    for field in fields:
        trailing = data.draw(TRAILING)
        ending = data.draw(ENDINGS)
        pieces.append(field + trailing + ending)
    if data.draw(st.booleans()):
        pieces[-1] = pieces[-1].rstrip("\r\n")
    assert parse_policy("".join(pieces)) == reference


# RFC 8461 §3.2 sts-policy-vchar = %x21-7E / UTF8-2 / UTF8-3 / UTF8-4 (no surrogates).
VCHARS = st.characters(min_codepoint=0x21, exclude_characters="\x7f", exclude_categories=["Cs"])
INNER = st.one_of(VCHARS, st.just(" "))
CONTROLS = st.sampled_from([chr(c) for c in [*range(0x00, 0x20), 0x7F] if c != 0x0A])


@given(VCHARS, st.text(INNER, max_size=10), VCHARS)
def test_extension_value_of_visible_characters_and_inner_spaces_is_accepted(
    first: str, inner: str, last: str
) -> None:
    result = parse_policy(body(*BASE, f"x-note: {first}{inner}{last}"))
    assert isinstance(result, Policy)
    assert result.lines[-1] == f"x-note: {first}{inner}{last}"


@given(VCHARS, st.text(INNER, max_size=10), CONTROLS, st.text(INNER, max_size=10), VCHARS)
@example("a", " ", "\t", "", "b")
def test_extension_value_with_a_control_character_inside_is_rejected(
    first: str, before: str, control: str, after: str, last: str
) -> None:
    result = parse_policy(body(*BASE, f"x-note: {first}{before}{control}{after}{last}"))
    assert isinstance(result, PolicyFailure)
    assert "line 5" in result.detail


@given(st.text(max_size=300))
def test_never_raises_on_arbitrary_text(text: str) -> None:
    result = parse_policy(text)
    assert isinstance(result, Policy | PolicyFailure)


@given(st.binary(max_size=300))
def test_bytes_never_raises(data: bytes) -> None:
    assert isinstance(parse_policy_bytes(data), Policy | PolicyFailure)


INVALID_REPEATS = {
    "version": st.sampled_from(["STSv2", "STSv10", "stsv1"]),
    "mode": st.sampled_from(["bogus", "Enforce", "enforce2"]),
    "max_age": st.sampled_from(["1w", "-1", "12345678901"]),
}


@given(policy_fields(), st.sampled_from(sorted(INVALID_REPEATS)), st.data())
def test_an_invalid_repeat_is_ignored_but_flagged_as_fatal_for_strict_parsers(
    fields: list[str], key: str, data: st.DataObject
) -> None:
    reference = parse_policy("\n".join(fields))
    assert isinstance(reference, Policy)
    junk = data.draw(INVALID_REPEATS[key])
    result = parse_policy("\n".join([*fields, f"{key}: {junk}"]))
    assert isinstance(result, Policy)
    assert (result.version, result.mode, result.max_age, result.mx) == (
        reference.version,
        reference.mode,
        reference.max_age,
        reference.mx,
    )
    assert any(
        f"repeated {key!r}" in warning and STRICT_PARSERS_REJECT_POLICY in warning
        for warning in result.warnings
    )


@given(policy_fields())
def test_valid_policy_round_trips_through_its_lines(fields: list[str]) -> None:
    first = parse_policy("\n".join(fields))
    assert isinstance(first, Policy)
    assert parse_policy("\r\n".join(first.lines)) == first
