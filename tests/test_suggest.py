"""`scanner policy suggest`: the pure choice (tables, properties) and one run against the lab.

Every suggestion must be accepted by the scanner's own parsers (`parse_policy`,
`parse_sts_record`) and must cover exactly the MX hosts it was made for.
"""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime

import pytest
from commands import invoke
from hypothesis import given, reject
from hypothesis import strategies as st
from strategies import dns_labels

from scanner.core.policy_suggestion import (
    DEFAULT_MAX_AGE,
    Suggestion,
    SuggestionError,
    choose_patterns,
    record_id_for,
    suggest_policy,
)
from scanner.core.sts import MAX_AGE_LIMIT, mx_matches, parse_policy, parse_sts_record
from scanner.core.tlsrpt_record import parse_tlsrpt_record
from scanner.lab import Lab
from scanner.models import Policy, PolicyMode, StsRecord, TlsRptRecord

NOW = datetime(2026, 4, 3, 12, 30, 5, tzinfo=UTC)


def live(*mx: str, mode: PolicyMode = PolicyMode.TESTING, max_age: int = DEFAULT_MAX_AGE) -> Policy:
    return Policy("STSv1", mode, max_age, tuple(mx), ())


def made(*hosts: str, **options: object) -> Suggestion:
    result = suggest_policy("example.com", list(hosts), now=NOW, **{"ready": False, **options})  # type: ignore[arg-type]
    assert isinstance(result, Suggestion), result
    return result


@pytest.mark.parametrize(
    ("hosts", "live_mx", "expected"),
    [
        pytest.param(["mx1.example.com"], (), ("mx1.example.com",), id="one"),
        pytest.param(
            ["MX2.example.com.", "mx1.example.com", "mx2.example.com"],
            (),
            ("mx1.example.com", "mx2.example.com"),
            id="normalised-deduplicated",
        ),
        pytest.param(
            ["mx1.example.com", "mx2.example.com"],
            ("*.example.com",),
            ("*.example.com",),
            id="live-wildcard-kept",
        ),
        pytest.param(
            ["mx1.example.com", "a.b.example.com"],
            ("*.example.com",),
            ("*.example.com", "a.b.example.com"),
            id="wildcard-one-label-only",
        ),
        pytest.param(
            ["mx1.example.com"],
            ("*.other.example",),
            ("mx1.example.com",),
            id="live-wildcard-matching-nothing-dropped",
        ),
        pytest.param(
            ["mx.co.uk"], ("*.co.uk",), ("mx.co.uk",), id="wildcard-under-public-suffix-dropped"
        ),
        pytest.param(
            ["mx1.example.com", "mx2.example.com"],
            (),
            ("mx1.example.com", "mx2.example.com"),
            id="no-wildcard-invented",
        ),
    ],
)
def test_choose_patterns(
    hosts: list[str], live_mx: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert choose_patterns(hosts, live_mx) == expected


@pytest.mark.parametrize(
    ("options", "mode", "max_age"),
    [
        pytest.param({}, PolicyMode.TESTING, 1_209_600, id="not-ready"),
        pytest.param({"ready": True}, PolicyMode.ENFORCE, 1_209_600, id="ready"),
        pytest.param(
            {"ready": True, "max_age": MAX_AGE_LIMIT},
            PolicyMode.ENFORCE,
            MAX_AGE_LIMIT,
            id="one-year",
        ),
    ],
)
def test_mode_and_max_age(options: dict[str, object], mode: PolicyMode, max_age: int) -> None:
    suggestion = made("mx1.example.com", **options)
    assert (suggestion.mode, suggestion.max_age) == (mode, max_age)


@pytest.mark.parametrize(
    ("hosts", "options", "words"),
    [
        pytest.param([], {}, "no MX hosts", id="no-mx"),
        pytest.param(["mx_1.example.com"], {}, "not a name", id="underscore"),
        pytest.param(["192.0.2.1"], {}, "not a name", id="address"),
        pytest.param(
            ["mx1.example.com"], {"max_age": MAX_AGE_LIMIT + 1}, "max_age", id="max-age-above-limit"
        ),
        pytest.param(["mx1.example.com"], {"max_age": 0}, "max_age", id="max-age-zero"),
    ],
)
def test_no_suggestion(hosts: list[str], options: dict[str, object], words: str) -> None:
    result = suggest_policy("example.com", hosts, ready=False, now=NOW, **options)  # type: ignore[arg-type]
    assert isinstance(result, SuggestionError)
    assert words in result.reason


def test_short_max_age_warns_in_mode_enforce() -> None:
    short = made("mx1.example.com", max_age=86400, ready=True)
    assert any("under one week" in w for w in short.warnings)
    assert not any("under one week" in w for w in made("mx1.example.com", ready=True).warnings)
    # In mode testing a lapsed policy costs nothing: no warning.
    assert not any("under one week" in w for w in made("mx1.example.com", max_age=86400).warnings)


def test_the_live_max_age_is_kept_unless_asked() -> None:
    live = Policy("STSv1", PolicyMode.TESTING, 604800, ("mx1.example.com",), ())
    kept = made("mx1.example.com", live_policy=live, live_id="1")
    assert kept.max_age == 604800
    assert kept.changes == ()  # same meaning: no new id needed
    asked = made("mx1.example.com", live_policy=live, live_id="1", max_age=86400 * 30)
    assert asked.max_age == 86400 * 30
    assert asked.changes == ("max_age 604800 → 2592000",)


def test_a_tlsrpt_record_is_proposed_when_the_domain_has_none() -> None:
    assert made("mx1.example.com").tlsrpt_record is None
    default = made("mx1.example.com", tlsrpt_missing=True)
    assert default.tlsrpt_record == "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"
    record = parse_tlsrpt_record(default.tlsrpt_record)
    assert isinstance(record, TlsRptRecord)
    chosen = made(
        "mx1.example.com",
        tlsrpt_missing=True,
        rua=["mailto:reports@example.net", "https://tlsrpt.example.net/v1"],
    )
    assert chosen.tlsrpt_record == (
        "v=TLSRPTv1; rua=mailto:reports@example.net,https://tlsrpt.example.net/v1"
    )
    bad = suggest_policy(
        "example.com", ["mx1.example.com"], ready=False, now=NOW, tlsrpt_missing=True,
        rua=["ftp://x.example"],
    )  # fmt: skip
    assert isinstance(bad, SuggestionError)
    assert "--rua 'ftp://x.example'" in bad.reason


@pytest.mark.parametrize(
    ("live_policy", "changes"),
    [
        pytest.param(live("mx1.example.com"), (), id="same"),
        pytest.param(live("MX1.example.com"), (), id="same-other-case"),
        pytest.param(
            live("mx1.example.com", mode=PolicyMode.ENFORCE), ("mode enforce → testing",), id="mode"
        ),
        pytest.param(live("mx1.example.com", max_age=86400), (), id="max-age-kept-unless-asked"),
        pytest.param(
            live("mx0.example.com"),
            ("mx patterns added: mx1.example.com; removed: mx0.example.com",),
            id="mx",
        ),
    ],
)
def test_changes_and_id_warning(live_policy: Policy, changes: tuple[str, ...]) -> None:
    suggestion = made("mx1.example.com", live_policy=live_policy, live_id="20240101")
    assert suggestion.changes == changes
    warned = any(
        "refresh their cached policy only when the id changes" in w for w in suggestion.warnings
    )
    assert warned == bool(changes)


def test_record_id() -> None:
    assert record_id_for(NOW, None) == "20260403123005"
    assert record_id_for(NOW, "20260403123005") == "20260403123005a"  # never the live id


def test_text_is_what_was_decided() -> None:
    suggestion = made("mx2.example.com", "mx1.example.com", ready=True)
    assert suggestion.policy_text == (
        "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: mx2.example.com\nmax_age: 1209600\n"
    )
    assert suggestion.record == "v=STSv1; id=20260403123005"


LABEL = dns_labels(string.ascii_lowercase + string.digits, 8)


@st.composite
def host_names(draw: st.DrawFn) -> str:
    """Two to four labels, the last never all digits (RFC 1123 §2.1: it would read as an
    address): a name that is drawn again, three times at most, as `.filter` would, whose
    every draw costs more than the name."""
    for _ in range(3):
        name = ".".join(draw(st.lists(LABEL, min_size=2, max_size=4)))
        if not name.rpartition(".")[2].isdigit():
            return name
    reject()


HOST = host_names()


@given(
    hosts=st.lists(HOST, min_size=1, max_size=8),
    wildcard_parents=st.lists(st.lists(LABEL, min_size=2, max_size=3).map(".".join), max_size=3),
    ready=st.booleans(),
    max_age=st.one_of(st.none(), st.integers(1, MAX_AGE_LIMIT)),
)
def test_suggestions_parse_and_cover_exactly_the_hosts(
    hosts: list[str], wildcard_parents: list[str], ready: bool, max_age: int | None
) -> None:
    live_policy = live(*[f"*.{parent}" for parent in wildcard_parents], *hosts[:1])
    suggestion = suggest_policy(
        "example.com", hosts, ready=ready, now=NOW, live_policy=live_policy, max_age=max_age
    )
    assert isinstance(suggestion, Suggestion)
    parsed = parse_policy(suggestion.policy_text)
    assert isinstance(parsed, Policy), parsed
    assert parsed.warnings == ()
    assert (parsed.mode, parsed.max_age, parsed.mx) == (
        suggestion.mode,
        suggestion.max_age,
        suggestion.mx,
    )
    record = parse_sts_record(suggestion.record)
    assert isinstance(record, StsRecord)
    assert record.id == suggestion.record_id
    for host in hosts:  # nothing seen is lost
        assert any(mx_matches(pattern, host) for pattern in parsed.mx)
    for pattern in parsed.mx:  # nothing names what was not seen
        assert any(mx_matches(pattern, host) for host in hosts)
        assert pattern.count("*") <= 1


def run_suggest(*args: str) -> tuple[int, str, str]:
    done = invoke("policy", "suggest", *args)
    return done.exit_code, done.stdout, done.stderr


def test_suggest_against_the_demo_lab(demo_lab_command: Lab) -> None:
    code, out, err = run_suggest(
        "testing-ready.example", "--timeout", "1", *demo_lab_command.scanner_args()
    )
    assert code == 0, err
    body = "\n".join(
        line for line in out.splitlines() if not line.startswith(("#", "_mta-sts", "_smtp._tls"))
    )
    policy = parse_policy(body + "\n")
    assert isinstance(policy, Policy), out
    # The live policy's max_age is kept: only the mode changes.
    assert (policy.mode, policy.mx, policy.max_age) == (
        PolicyMode.ENFORCE,
        ("mx.testing-ready.example",),
        604_800,
    )
    found = re.search(r'_mta-sts\.testing-ready\.example\. IN TXT "(v=STSv1; id=\w+)"', out)
    assert found is not None, out
    record = parse_sts_record(found.group(1))
    assert isinstance(record, StsRecord)
    assert record.id != "20240601"
    assert "the live policy differs in meaning (mode testing → enforce)" in err
    # Neither policy nor TLS-RPT record: both proposed.
    code, out, err = run_suggest(
        "no-sts.example", "--timeout", "1", *demo_lab_command.scanner_args()
    )
    assert code == 0, err
    assert "mode: testing" in out
    assert '_smtp._tls.no-sts.example. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@no-sts.example"' in out

    code, out, err = run_suggest(
        "backup-bad.example", "--timeout", "1", *demo_lab_command.scanner_args()
    )
    assert code == 0, err
    assert "mode: testing" in out  # not ready: testing
    code, _, err = run_suggest(
        "no-such-domain.example", "--timeout", "1", *demo_lab_command.scanner_args()
    )
    assert code == 2
    assert "error:" in err


def test_help_lists_only_the_options_that_act() -> None:
    from typer.testing import CliRunner

    from scanner.cli import app

    shown = CliRunner().invoke(app, ["policy", "suggest", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for acting in ("--max-age", "--rua", "--resolver", "--timeout"):
        assert acting in shown.output
    for idle in ("--org", "--contact", "--min-sessions", "--reports", "--max-failure-rate"):
        assert idle not in shown.output
