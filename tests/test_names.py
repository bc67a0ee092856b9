"""Hostname normalisation and RFC 6125 / RFC 9525 certificate name matching."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.core.names import (
    InvalidHostname,
    certificate_matches,
    is_ip_literal,
    is_valid_hostname,
    normalize_hostname,
    presented_identifier_matches,
    presented_identifier_problem,
)

# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("mx1.example.com.", "mx1.example.com"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example.", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("例え。テスト", "xn--r8jz45g.xn--zckzah"),  # ideographic full stop is a dot (UTS 46)
        ("faß.de", "xn--fa-hia.de"),  # non-transitional: ß stays ß
        ("a-b.example", "a-b.example"),
        ("localhost", "localhost"),
        ("1password.com", "1password.com"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
    ids=[
        "plain",
        "upper",
        "trailing-dot",
        "u-label",
        "u-label-upper-dot",
        "a-label",
        "fullwidth-dot",
        "eszett",
        "hyphen",
        "single-label",
        "leading-digit",
        "label-63",
    ],
)
def test_normalize_hostname(raw: str, normalised: str) -> None:
    assert normalize_hostname(raw) == normalised
    assert is_valid_hostname(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        (".", "empty"),
        ("a..example", "empty label"),
        (".example.com", "empty label"),
        ("example.com..", "empty label"),
        ("a" * 64 + ".example", "longer than 63"),
        (".".join(["a" * 60] * 5), "longer than 253"),
        ("exa mple.com", "invalid characters"),
        ("exa_mple.com", "invalid characters"),
        ("-mx.example.com", "hyphen"),
        ("mx-.example.com", "hyphen"),
        ("192.0.2.1", "all digits"),
        ("mx.example.123", "all digits"),
        ("a\u200db.example", "internationalised"),  # ZWJ not allowed in this context
        ("*.example.com", "invalid characters"),
    ],
    ids=[
        "empty",
        "dot",
        "double-dot",
        "leading-dot",
        "two-trailing-dots",
        "label-64",
        "name-over-253",
        "space",
        "underscore",
        "leading-hyphen",
        "trailing-hyphen",
        "ipv4-literal",
        "numeric-tld",
        "bad-idn",
        "wildcard",
    ],
)
def test_normalize_hostname_rejects(raw: str, message: str) -> None:
    with pytest.raises(InvalidHostname, match=message):
        normalize_hostname(raw)
    assert not is_valid_hostname(raw)


@pytest.mark.parametrize(
    ("raw", "allow", "valid"),
    [
        ("_mta-sts.example.com", True, True),
        ("_mta-sts.example.com", False, False),
        ("mx_1.example.com", True, True),
        ("mx_1.example.com", False, False),
    ],
    ids=["service-allowed", "service-refused", "host-allowed", "host-refused"],
)
def test_underscore_flag(raw: str, allow: bool, valid: bool) -> None:
    assert is_valid_hostname(raw, allow_underscore=allow) is valid


# ---------------------------------------------------------------- certificate matching


@pytest.mark.parametrize(
    ("hostname", "san", "matches"),
    [
        # exact, case-insensitive (RFC 6125 §6.4.1)
        ("mx.example.com", ["mx.example.com"], True),
        ("mx.example.com", ["mx.example.org"], False),
        ("MX.Example.COM", ["mx.example.com"], True),
        ("mx.example.com", ["MX.EXAMPLE.COM"], True),
        ("mx.example.com.", ["mx.example.com"], True),
        ("mx.example.com", ["mx.example.com."], False),  # RFC 5280 dNSNames have no dot
        ("mx.example.com", ["mx.example.co"], False),
        # several presented identifiers
        ("mx2.example.com", ["mx1.example.com", "mx2.example.com"], True),
        ("mx3.example.com", ["mx1.example.com", "mx2.example.com"], False),
        # wildcard: entire left-most label, exactly one label (RFC 9525 §6.3)
        ("mx.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("a.mx.example.com", ["*.example.com"], False),
        ("mx.example.com", ["*.EXAMPLE.com"], True),
        ("mx.example.org", ["*.example.com"], False),
        # partial wildcards and wildcards elsewhere never match
        ("baz.example.net", ["b*z.example.net"], False),
        ("baz.example.net", ["baz.example.net"], True),
        ("foox.example.com", ["*x.example.com"], False),
        ("xn--bcher-kva.example", ["xn--*.example"], False),
        ("xn--bcher-kva.example", ["*.example.org", "xn--bcher-kva.example"], True),
        ("mx.sub.example.com", ["mx.*.example.com"], False),
        ("mx.a.example.com", ["*.*.example.com"], False),
        # a wildcard needs two labels after it
        ("example.com", ["*.com"], False),
        ("example", ["*"], False),
        ("mx.example.co.uk", ["*.example.co.uk"], True),
        # IDN: A-label comparison (RFC 6125 §6.4.2)
        ("Bücher.example", ["xn--bcher-kva.example"], True),
        ("Bücher.example", ["bücher.example"], False),  # U-label in a SAN is malformed
        ("mx.bücher.example", ["*.xn--bcher-kva.example"], True),
        ("mx.bücher.example", ["*.xn--bcher.example"], False),
        # nothing presented, or junk presented
        ("mx.example.com", [], False),
        ("mx.example.com", ["", ".", "mx..example.com"], False),
        # invalid reference names match nothing
        ("", ["*.example.com"], False),
        ("192.0.2.1", ["192.0.2.1"], False),
    ],
    ids=[
        "exact",
        "exact-other",
        "reference-case",
        "presented-case",
        "reference-dot",
        "presented-dot",
        "suffix-shorter",
        "second-of-two",
        "none-of-two",
        "wildcard",
        "wildcard-not-parent",
        "wildcard-one-label-only",
        "wildcard-case",
        "wildcard-other-domain",
        "partial-wildcard",
        "partial-wildcard-twin",
        "suffix-wildcard",
        "a-label-wildcard",
        "a-label-wildcard-twin",
        "inner-wildcard",
        "double-wildcard",
        "tld-wildcard",
        "bare-star",
        "second-level-wildcard",
        "idn-reference",
        "idn-presented-u-label",
        "idn-wildcard",
        "idn-wildcard-other",
        "empty-san",
        "junk-san",
        "empty-reference",
        "ip-reference",
    ],
)
def test_certificate_matches(hostname: str, san: list[str], matches: bool) -> None:
    assert certificate_matches(hostname, san) is matches


# A presented dNSName with a trailing dot is malformed (RFC 5280 §4.2.1.6
# preferred name syntax); Go's crypto/x509 VerifyHostname does not match it
# either. The reference name's own trailing dot is still dropped. Each case is
# followed by its twin.
@pytest.mark.parametrize(
    ("hostname", "san", "matches"),
    [
        pytest.param("example.com", ["example.com."], False, id="san-dot"),
        pytest.param("example.com.", ["example.com"], True, id="reference-dot-twin"),
        pytest.param("mail.example.com", ["*.example.com."], False, id="wildcard-san-dot"),
        pytest.param("mail.example.com", ["*.example.com"], True, id="wildcard-no-dot-twin"),
        pytest.param("example.com.", ["example.com."], False, id="both-dotted"),
        pytest.param("example.com", ["example.com.", "example.com"], True, id="second-usable-twin"),
    ],
)
def test_presented_trailing_dot_never_matches(hostname: str, san: list[str], matches: bool) -> None:
    assert certificate_matches(hostname, san) is matches


@pytest.mark.parametrize(
    ("presented", "fragment"),
    [
        pytest.param("example.com.", "ends with a dot; dNSNames have none (RFC 5280", id="dot"),
        pytest.param("example.com", None, id="dot-twin"),
        pytest.param("bücher.example", "is not ASCII", id="u-label"),
        pytest.param("xn--bcher-kva.example", None, id="a-label-twin"),
        pytest.param("mx..example.com", "has an empty label", id="empty-label"),
        pytest.param("*.example.com", None, id="wildcard-twin"),
        pytest.param("", "has an empty label", id="empty"),
        pytest.param(".", "has an empty label", id="root"),
    ],
)
def test_presented_identifier_problem(presented: str, fragment: str | None) -> None:
    problem = presented_identifier_problem(presented)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None
        assert fragment in problem
        assert repr(presented) in problem


def test_reference_with_underscore_is_tolerated() -> None:
    assert certificate_matches("mx_1.example.com", ["*.example.com"])
    assert not certificate_matches("mx_1.example.com", ["mx-1.example.com"])


# ---------------------------------------------------------------- properties

# What r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z" and r"\A[a-z]{2,8}\Z" match, drawn as
# whole strings (a regex strategy draws each character on its own).
LABEL = st.text(
    alphabet=string.ascii_lowercase + string.digits + "-", min_size=1, max_size=22
).filter(lambda label: not label.startswith("-") and not label.endswith("-"))
TLD = st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=8)
HOSTNAME = st.builds(
    lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL, min_size=1, max_size=4), TLD
)


@given(HOSTNAME)
def test_normalisation_is_idempotent(name: str) -> None:
    once = normalize_hostname(name)
    assert normalize_hostname(once) == once


@given(st.text(max_size=40))
def test_normalisation_never_crashes_and_is_idempotent(text: str) -> None:
    if not is_valid_hostname(text):
        with pytest.raises(InvalidHostname) as info:
            normalize_hostname(text)
        # The message names the offending input (the empty name is said to be empty).
        assert (repr(text) if text else "empty name") in str(info.value)
        return
    once = normalize_hostname(text)
    assert normalize_hostname(once) == once
    assert once == once.lower()
    assert once.isascii()
    assert not once.endswith(".")


@given(HOSTNAME, st.booleans())
def test_exact_match_is_case_insensitive(name: str, upper_reference: bool) -> None:
    reference = name.upper() if upper_reference else name
    presented = name if upper_reference else name.upper()
    assert certificate_matches(reference, [presented])


@given(HOSTNAME, st.booleans())
def test_only_the_reference_may_carry_a_trailing_dot(name: str, wildcard: bool) -> None:
    # A wildcard needs two labels after it (see presented_identifier_matches).
    presented = "*." + name.partition(".")[2] if wildcard and name.count(".") >= 2 else name
    assert certificate_matches(name + ".", [presented])
    assert not certificate_matches(name, [presented + "."])
    assert presented_identifier_problem(presented + ".") is not None


@given(HOSTNAME, HOSTNAME)
def test_different_names_do_not_match(first: str, second: str) -> None:
    assert certificate_matches(first, [second]) is (first == second)


@given(LABEL, st.lists(LABEL, min_size=1, max_size=3), TLD)
def test_wildcard_matches_exactly_one_label(label: str, parent: list[str], tld: str) -> None:
    parent_name = ".".join([*parent, tld])
    assert certificate_matches(f"{label}.{parent_name}", [f"*.{parent_name}"])
    assert not certificate_matches(parent_name, [f"*.{parent_name}"])
    assert not certificate_matches(f"{label}.{label}.{parent_name}", [f"*.{parent_name}"])


@given(HOSTNAME, HOSTNAME)
def test_wildcard_never_matches_other_label_count(reference: str, presented_base: str) -> None:
    presented = "*." + presented_base
    if reference.count(".") != presented.count("."):
        assert not presented_identifier_matches(reference, presented)


def reads_as_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "text",
    ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", "fe80::1%eth0", "::", "0.0.0.0",
     "mx.example.com", "1.2.3", "1.2.3.4.5", "01.2.3.4", "256.1.1.1", "1.2.3.4.", "",
     "\u0661.2.3.4", "１.2.3.4", "2001:db8::g", "[2001:db8::1]", "1e3"],
)  # fmt: skip
def test_ip_literal_is_what_ipaddress_reads(text: str) -> None:
    assert is_ip_literal(text) == reads_as_address(text)


@given(
    st.one_of(
        st.text(max_size=45),
        st.text(alphabet="0123456789.:abcdefABCDEF%", max_size=45),
        st.ip_addresses().map(str),
    )
)
def test_ip_literal_agrees_with_ipaddress_on_any_text(text: str) -> None:
    assert is_ip_literal(text) == reads_as_address(text)


def test_names_met_again_give_the_same_answer_and_the_same_refusal() -> None:
    """Normalised names are kept; a refused name is refused again, with its reason."""
    assert normalize_hostname("MX.Example.NET.") == normalize_hostname("MX.Example.NET.")
    reasons = []
    for _ in range(2):
        with pytest.raises(InvalidHostname) as refused:
            normalize_hostname("mx..example.net")
        reasons.append(str(refused.value))
    assert reasons[0] == reasons[1]
    assert "empty" in reasons[0]
    assert normalize_hostname("_25._tcp.mx.example.net", allow_underscore=True)
    with pytest.raises(InvalidHostname):
        normalize_hostname("_25._tcp.mx.example.net")  # kept apart from the call that allowed it
