"""MX pattern matching and policy warnings (RFC 8461 §4.1, §10.4)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import dns_labels

from scanner.core.sts import is_broad_pattern, mx_matches, policy_covers, policy_warnings
from scanner.models import Policy, PolicyMode

# Each matching case is followed by its non-matching twin.
CASES = [
    # M1: exact, case-insensitive, trailing dot of the MX name stripped.
    pytest.param("mail.example.com", "mail.example.com", True, id="M1-exact"),
    pytest.param("mail.example.com", "mail2.example.com", False, id="M1-other-host-twin"),
    pytest.param("mail.example.com", "MAIL.Example.COM", True, id="M1-case"),
    pytest.param("mail.example.com", "mail.example.co", False, id="M1-truncated-twin"),
    pytest.param("mail.example.com", "mail.example.com.", True, id="M1-trailing-dot"),
    pytest.param("mail.example.com", "mail.example.com..", False, id="M1-two-trailing-dots-twin"),
    # Only the MX name's root dot is dropped: a pattern has none (sts-policy-mx-value).
    pytest.param("mail.example.com", "mail.example.com", True, id="M1-undotted-pattern"),
    pytest.param("mail.example.com.", "mail.example.com", False, id="M1-dotted-pattern-twin"),
    pytest.param("*.example.com", "mail.example.com.", True, id="M2-undotted-wildcard"),
    pytest.param("*.example.com.", "mail.example.com", False, id="M2-dotted-wildcard-twin"),
    pytest.param("MAIL.example.com", "mail.example.com", True, id="M1-pattern-case"),
    pytest.param("mail.example.com", "", False, id="M1-empty-host-twin"),
    # M2: a wildcard covers exactly one extra left-most label.
    pytest.param("*.example.com", "a.example.com", True, id="M2-one-label"),
    pytest.param("*.example.com", "example.com", False, id="M2-bare-domain-twin"),
    pytest.param("*.example.com", "A.EXAMPLE.COM.", True, id="M2-case-and-dot"),
    pytest.param("*.example.com", "a.b.example.com", False, id="M2-two-labels-twin"),
    pytest.param("*.mx.example.com", "eu1.mx.example.com", True, id="M2-deep"),
    pytest.param("*.mx.example.com", "eu1.example.com", False, id="M2-sibling-twin"),
    pytest.param("*.EXAMPLE.com", "mx.example.COM", True, id="M2-pattern-case"),
    pytest.param("*.example.com", ".example.com", False, id="M2-empty-label-twin"),
    pytest.param("*.example.com", "mx.example.com", True, id="M2-suffix"),
    pytest.param("*.example.com", "mx.notexample.com", False, id="M2-suffix-glued-twin"),
    # M3: IDN MX name against an A-label pattern.
    pytest.param("mail.xn--bcher-kva.example", "mail.bücher.example", True, id="M3-u-label-host"),
    pytest.param(
        "mail.xn--bcher-kva.example", "mail.bucher.example", False, id="M3-ascii-lookalike-twin"
    ),
    pytest.param("*.xn--bcher-kva.example", "MAIL.BÜCHER.example.", True, id="M3-wildcard-u-label"),
    pytest.param("*.xn--bcher-kva.example", "bücher.example", False, id="M3-wildcard-bare-twin"),
]


@pytest.mark.parametrize(("pattern", "host", "matches"), CASES)
def test_mx_matches(pattern: str, host: str, matches: bool) -> None:
    assert mx_matches(pattern, host) is matches


def make_policy(*mx: str, mode: PolicyMode = PolicyMode.ENFORCE, max_age: int = 1209600) -> Policy:
    return Policy(version="STSv1", mode=mode, max_age=max_age, mx=mx, lines=())


@pytest.mark.parametrize(
    ("mx", "host", "covered"),
    [
        pytest.param(("a.example", "*.mx.example"), "b.mx.example", True, id="second-pattern"),
        pytest.param(("a.example", "*.mx.example"), "b.example", False, id="no-pattern-twin"),
        pytest.param((), "a.example", False, id="empty-policy"),
    ],
)
def test_policy_covers(mx: tuple[str, ...], host: str, covered: bool) -> None:
    assert policy_covers(make_policy(*mx), host) is covered


@pytest.mark.parametrize(
    ("pattern", "broad"),
    [
        pytest.param("*.com", True, id="M7-tld"),
        pytest.param("*.example.com", False, id="M7-domain-twin"),
        pytest.param("*.co.uk", True, id="M7-two-label-suffix"),
        pytest.param("*.example.co.uk", False, id="M7-under-two-label-suffix-twin"),
        pytest.param("*.example", True, id="M7-any-single-label"),
        pytest.param("com", False, id="M7-not-wildcard-twin"),
    ],
)
def test_is_broad_pattern(pattern: str, broad: bool) -> None:
    assert is_broad_pattern(pattern) is broad


@pytest.mark.parametrize(
    ("policy", "mx_hosts", "fragments"),
    [
        pytest.param(make_policy("mx1.example.com"), ["mx1.example.com"], [], id="clean"),
        pytest.param(
            make_policy("*.com"),
            ["mx1.example.com"],
            ["public suffix", "matches none"],
            id="broad-twin",
        ),
        pytest.param(
            make_policy("mx1.example.com", "mx2.example.com"),
            ["MX1.example.com."],
            ["'mx2.example.com' matches none"],
            id="unused-pattern",
        ),
        pytest.param(
            make_policy("mx1.example.com", max_age=604800),
            ["mx1.example.com"],
            [],
            id="week-is-enough",
        ),
        pytest.param(
            make_policy("mx1.example.com", max_age=86400),
            ["mx1.example.com"],
            ["under one week"],
            id="short-max-age-twin",
        ),
        pytest.param(
            make_policy(mode=PolicyMode.NONE, max_age=86400),
            [],
            ["mode is none"],
            id="none-short-age-not-flagged",
        ),
    ],
)
def test_policy_warnings(policy: Policy, mx_hosts: list[str], fragments: list[str]) -> None:
    warnings = policy_warnings(policy, mx_hosts)
    assert len(warnings) == len(fragments)
    for fragment in fragments:
        assert any(fragment in warning.text for warning in warnings), (fragment, warnings)


# ---------------------------------------------------------------- properties

labels = dns_labels(string.ascii_letters + string.digits, 6)
names = st.lists(labels, min_size=1, max_size=5).map(".".join)


def flip_case(text: str, mask: list[bool]) -> str:
    return "".join(
        c.swapcase() if flip else c
        for c, flip in zip(text, mask + [False] * len(text), strict=False)
    )


@given(names, names, st.booleans(), st.lists(st.booleans(), max_size=50), st.booleans())
def test_case_and_trailing_dot_insensitive(
    pattern: str, host: str, wildcard: bool, mask: list[bool], dot: bool
) -> None:
    if wildcard:
        pattern = "*." + pattern
    variant = flip_case(host, mask) + ("." if dot else "")
    assert mx_matches(pattern, variant) is mx_matches(pattern, host)
    assert mx_matches(flip_case(pattern, mask), host) is mx_matches(pattern, host)


@given(names)
def test_host_matches_itself_and_its_wildcard(host: str) -> None:
    assert mx_matches(host, host)
    _, _, rest = host.partition(".")
    if rest:
        assert mx_matches("*." + rest, host)


@given(names, names)
def test_wildcard_never_matches_a_different_label_count(suffix: str, host: str) -> None:
    if host.count(".") != suffix.count(".") + 1:
        assert not mx_matches("*." + suffix, host)
