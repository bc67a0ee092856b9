"""The RFC 8460 §4 report parser: what it accepts, tolerates, rejects, and that it never crashes."""

from __future__ import annotations

import gzip
import json
import string
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_received_builders import deep, report_bytes, report_dict

from scanner.received.limits import ReceivedLimits
from scanner.received.report import (
    ParsedReport,
    PayloadError,
    RejectedReport,
    content_hash,
    inflate_payload,
    looks_like_report,
    parse_report,
    parse_report_json,
    parse_report_value,
    parse_rfc3339,
)


def accepted(value: object) -> ParsedReport:
    outcome = parse_report_value(value)
    assert isinstance(outcome, ParsedReport), outcome
    return outcome


def rejected(value: object) -> RejectedReport:
    outcome = parse_report_value(value)
    assert isinstance(outcome, RejectedReport), outcome
    return outcome


def test_the_rfc_shaped_example_is_read_whole() -> None:
    parsed = accepted(report_dict())
    report = parsed.report
    assert report.organization_name == "Company-X"
    assert report.date_range.start == datetime(2026, 4, 1, tzinfo=UTC)
    assert report.date_range.day.isoformat() == "2026-04-01"
    (entry,) = report.policies
    assert entry.policy.policy_type == "sts"
    assert entry.policy.mode == "testing"
    assert entry.policy.mx_hosts == ("*.mail.company-y.example",)
    assert (entry.successful_sessions, entry.failed_sessions) == (5326, 303)
    assert [d.result_type for d in entry.failure_details] == [
        "certificate-expired",
        "starttls-not-supported",
        "validation-failure",
    ]
    assert entry.failure_details[0].sending_mta_ip == "2001:db8:abcd:12::1"  # normalised
    assert entry.failure_details[2].failure_reason_code == "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"
    assert not entry.summary_disagrees
    assert parsed.notes == ()


def test_gzip_and_plain_give_the_same_hash() -> None:
    plain = parse_report(report_bytes(report_dict(), gzipped=False))
    packed = parse_report(report_bytes(report_dict(), gzipped=True))
    respaced = parse_report(json.dumps(report_dict(), indent=7).encode())
    assert isinstance(plain, ParsedReport)
    assert isinstance(packed, ParsedReport)
    assert isinstance(respaced, ParsedReport)
    assert plain.content_hash == packed.content_hash == respaced.content_hash
    changed = parse_report(report_bytes(report_dict(successful=1)))
    assert isinstance(changed, ParsedReport)
    assert changed.content_hash != plain.content_hash


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """An edit of a report dict at a dotted path with [index] parts; value DELETE removes the key."""

    def edit(report: dict[str, Any]) -> None:
        target: Any = report
        parts = [part for part in path.replace("[", ".[").split(".") if part]
        for part in parts[:-1]:
            target = target[int(part[1:-1])] if part.startswith("[") else target[part]
        last = parts[-1]
        if value is DELETE:
            del target[last]
        elif last.startswith("["):
            target[int(last[1:-1])] = value
        else:
            target[last] = value

    return edit


DELETE = object()
P0 = "policies.[0]"
D0 = f"{P0}.failure-details.[0]"

# (id, edit, expected fragment of the reason) — each rejection has an accepted twin below.
REJECTIONS = [
    (
        "organization missing",
        _set("organization-name", DELETE),
        "organization-name: required, missing",
    ),
    (
        "organization not string",
        _set("organization-name", 7),
        "organization-name: must be a string, got 7",
    ),
    ("organization empty", _set("organization-name", "  "), "organization-name: must not be empty"),
    ("report-id missing", _set("report-id", DELETE), "report-id: required, missing"),
    ("date-range missing", _set("date-range", DELETE), "date-range: required, missing"),
    ("date-range list", _set("date-range", []), "date-range: must be an object"),
    (
        "start not rfc3339",
        _set("date-range.start-datetime", "2026-04-01"),
        "date-range.start-datetime: not an RFC 3339",
    ),
    (
        "end offset out of range",
        _set("date-range.end-datetime", "2026-04-01T23:59:59+24:00"),
        "date-range.end-datetime: not an RFC 3339",
    ),
    (
        "end before start",
        _set("date-range.end-datetime", "2026-03-31T00:00:00Z"),
        "end-datetime is before",
    ),
    (
        "impossible date",
        _set("date-range.start-datetime", "2026-02-30T00:00:00Z"),
        "not an RFC 3339",
    ),
    ("policies missing", _set("policies", DELETE), "policies: required, missing"),
    ("policies object", _set("policies", {}), "policies: must be a list"),
    ("policies empty", _set("policies", []), "policies: empty"),
    (
        "range over 31 days",
        _set("date-range.end-datetime", "2026-05-02T00:00:01Z"),
        "date-range: it lasts 31 days; the limit is 31",
    ),
    (
        "range ending in year 0999",
        _set(
            "date-range",
            {"start-datetime": "0999-12-31T00:00:00Z", "end-datetime": "0999-12-31T23:59:59Z"},
        ),
        "date-range: it is not within the years 2000 to 2100",
    ),
    (
        "range before 2000",
        _set(
            "date-range",
            {"start-datetime": "1999-12-31T00:00:00Z", "end-datetime": "1999-12-31T23:59:59Z"},
        ),
        "date-range: it is not within the years 2000 to 2100",
    ),
    (
        "range after 2100",
        _set(
            "date-range",
            {"start-datetime": "2101-01-01T00:00:00Z", "end-datetime": "2101-01-01T23:59:59Z"},
        ),
        "date-range: it is not within the years 2000 to 2100",
    ),
    (
        "range 0001 to 9999",
        _set(
            "date-range",
            {"start-datetime": "0001-01-01T00:00:00Z", "end-datetime": "9999-12-31T23:59:59Z"},
        ),
        "date-range: it lasts 3652058 days",
    ),
    ("policy missing", _set(f"{P0}.policy", DELETE), "policies[0].policy: required, missing"),
    ("policy-type missing", _set(f"{P0}.policy.policy-type", DELETE), "policy-type: required"),
    (
        "policy-domain empty",
        _set(f"{P0}.policy.policy-domain", " "),
        "policy-domain: must not be empty",
    ),
    (
        "policy-domain null",
        _set(f"{P0}.policy.policy-domain", None),
        "policy-domain: must be a string",
    ),
    ("summary missing", _set(f"{P0}.summary", DELETE), "summary: required, missing"),
    (
        "negative count",
        _set(f"{P0}.summary.total-failure-session-count", -1),
        "non-negative integer, got -1",
    ),
    (
        "float count",
        _set(f"{P0}.summary.total-successful-session-count", 5.5),
        "non-negative integer, got 5.5",
    ),
    (
        "integral float count",
        _set(f"{P0}.summary.total-successful-session-count", 5.0),
        "non-negative integer",
    ),
    (
        "boolean count",
        _set(f"{P0}.summary.total-successful-session-count", True),
        "non-negative integer, got true",
    ),
    (
        "string count",
        _set(f"{P0}.summary.total-successful-session-count", "5"),
        'non-negative integer, got "5"',
    ),
    (
        "huge count",
        _set(f"{P0}.summary.total-successful-session-count", 10**13),
        "exceeds the limit",
    ),
    ("details object", _set(f"{P0}.failure-details", {}), "failure-details: must be a list"),
    (
        "detail count missing",
        _set(f"{D0}.failed-session-count", DELETE),
        "failed-session-count: required",
    ),
    ("detail result-type number", _set(f"{D0}.result-type", 3), "result-type: must be a string"),
]


@pytest.mark.parametrize(
    ("edit", "reason"), [(e, r) for _, e, r in REJECTIONS], ids=[i for i, _, _ in REJECTIONS]
)
def test_rejections_say_where_and_why(edit: Callable[[dict[str, Any]], None], reason: str) -> None:
    report = deep(report_dict())
    edit(report)
    outcome = rejected(report)
    assert any(reason in text for text in outcome.reasons), outcome.reasons


# The accepted twins: the nearest value that is fine.
ACCEPTED_TWINS = [
    ("organization with spaces inside", _set("organization-name", "Company X, Inc.")),
    ("start with offset", _set("date-range.start-datetime", "2026-04-01T02:00:00+02:00")),
    ("lower-case t and z", _set("date-range.end-datetime", "2026-04-01t23:59:59z")),
    ("fractional seconds", _set("date-range.end-datetime", "2026-04-01T23:59:59.999999999Z")),
    ("leap second", _set("date-range.end-datetime", "2026-04-01T23:59:60Z")),
    ("zero count", _set(f"{P0}.summary.total-successful-session-count", 0)),
    ("range of 31 days", _set("date-range.end-datetime", "2026-05-02T00:00:00Z")),
    (
        "range in 2000",
        _set(
            "date-range",
            {"start-datetime": "2000-01-01T00:00:00Z", "end-datetime": "2000-01-01T23:59:59Z"},
        ),
    ),
    (
        "range in 2100",
        _set(
            "date-range",
            {"start-datetime": "2100-12-31T00:00:00Z", "end-datetime": "2100-12-31T23:59:59Z"},
        ),
    ),
    ("count at the limit", _set(f"{P0}.summary.total-successful-session-count", 10**12)),
    ("no failure details", _set(f"{P0}.failure-details", DELETE)),
    ("null failure details", _set(f"{P0}.failure-details", None)),
    ("unknown keys ignored", _set("x-extension", {"anything": [1, 2]})),
]


@pytest.mark.parametrize("edit", [e for _, e in ACCEPTED_TWINS], ids=[i for i, _ in ACCEPTED_TWINS])
def test_accepted_twins(edit: Callable[[dict[str, Any]], None]) -> None:
    report = deep(report_dict())
    edit(report)
    accepted(report)


def test_real_sender_quirks_are_tolerated() -> None:
    report = deep(report_dict(contact=None))
    policy = report["policies"][0]["policy"]
    policy["policy-string"] = [
        "version: STSv1\r",
        "mode: enforce\r",
        "mx: *.mail.company-y.example\r",
        "max_age: 604800\r",
    ]
    policy["mx-host"] = "*.mail.company-y.example"  # a string, as in RFC 8460's own example
    detail = report["policies"][0]["failure-details"][0]
    detail["sending-mta-ip"] = ""
    detail["receiving-ip"] = ""
    detail["failure-reason-code"] = (
        "TLS handshake failed: certificate has expired (notAfter 2026-03-30)"
    )
    report["policies"][0]["summary"]["total-failure-session-count"] = 250  # details add up to 303
    parsed = accepted(report)
    entry = parsed.report.policies[0]
    assert entry.policy.policy_strings[1] == "mode: enforce"
    assert entry.policy.mode == "enforce"
    assert entry.policy.mx_hosts == ("*.mail.company-y.example",)
    assert entry.failure_details[0].sending_mta_ip is None
    assert entry.failure_details[0].receiving_ip is None
    assert entry.failure_details[0].failure_reason_code.startswith("TLS handshake failed")
    assert entry.failed_sessions == 250
    assert entry.detail_failures == 303
    assert entry.summary_disagrees
    assert parsed.report.contact_info is None
    assert any("contact-info: missing" in note for note in parsed.notes)
    assert any(
        "the summary counts 250 failed sessions, the failure details add up to 303" in note
        for note in parsed.notes
    )


def test_unknown_vocabulary_is_kept_and_noted() -> None:
    report = deep(report_dict())
    report["policies"][0]["policy"]["policy-type"] = "future-policy"
    report["policies"][0]["failure-details"][0]["result-type"] = "quantum-tunnel-collapse"
    report["policies"][0]["failure-details"][1]["receiving-ip"] = "not an address"
    parsed = accepted(report)
    entry = parsed.report.policies[0]
    assert entry.policy.policy_type == "future-policy"
    assert entry.failure_details[0].result_type == "quantum-tunnel-collapse"
    assert entry.failure_details[1].receiving_ip == "not an address"
    assert len(parsed.notes) == 3


def test_domains_are_normalised() -> None:
    report = deep(report_dict(domain="Company-Y.Example."))
    parsed = accepted(report)
    assert parsed.report.policies[0].policy.policy_domain == "company-y.example"
    assert parsed.report.policies_for("COMPANY-Y.example") == parsed.report.policies


def test_unpaired_surrogates_are_replaced_not_fatal() -> None:
    text = json.dumps(report_dict(organization="Org")).replace('"Org"', '"Org\\ud800"').encode()
    outcome = parse_report_json(text)
    assert isinstance(outcome, ParsedReport)
    assert outcome.report.organization_name == "Org\ufffd"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{", "not JSON"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 32 deep"),
        (b"[" + b"0," * 200_000 + b"0]", "more than 200000 values"),
        (b"[" * 33 + b"]" * 33, "nested more than 32 deep"),
        (b"[" * 1000, "its brackets do not balance"),
        (b"1" * 5000, "not JSON"),  # beyond Python's integer digit limit
        (b"[]", "must be a JSON object, got a list of 0"),
        (b"null", "must be a JSON object, got null"),
    ],
    ids=[
        "not-utf8",
        "truncated",
        "nan",
        "very-deep",
        "wide",
        "deep",
        "unclosed",
        "long-int",
        "list",
        "null",
    ],
)
def test_not_a_report_at_all(data: bytes, reason: str) -> None:
    outcome = parse_report_json(data)
    assert isinstance(outcome, RejectedReport)
    assert reason in outcome.summary


def test_byte_order_mark_is_allowed() -> None:
    assert isinstance(
        parse_report_json(b"\xef\xbb\xbf" + report_bytes(report_dict(), gzipped=False)),
        ParsedReport,
    )


# ---------------------------------------------------------------- limits


SMALL = ReceivedLimits(
    max_compressed_bytes=2000, max_decompressed_bytes=10_000, max_policies=2, max_failure_details=3
)


def test_gzip_bomb_stops_at_the_limit() -> None:
    limits = ReceivedLimits(max_compressed_bytes=100_000, max_decompressed_bytes=10_000)
    bomb = gzip.compress(b" " * 50_000_000)
    assert len(bomb) < limits.max_compressed_bytes
    outcome = inflate_payload(bomb, limits)
    assert isinstance(outcome, PayloadError)
    assert "more than 10000 bytes" in outcome.reason
    assert isinstance(inflate_payload(gzip.compress(b" " * 10_000), limits), bytes)  # the twin


def test_compressed_size_limit() -> None:
    outcome = inflate_payload(b"\x00" * 2001, SMALL)
    assert isinstance(outcome, PayloadError)
    assert "2001 bytes" in outcome.reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (gzip.compress(b"{}")[:-6], "truncated"),
        (b"\x1f\x8b" + b"\x00" * 30, "corrupt"),
    ],
    ids=["truncated", "corrupt"],
)
def test_broken_gzip(data: bytes, reason: str) -> None:
    outcome = parse_report(data)
    assert isinstance(outcome, RejectedReport)
    assert reason in outcome.summary


def test_multi_member_gzip_is_read_whole() -> None:
    text = report_bytes(report_dict(), gzipped=False)
    data = gzip.compress(text[:100]) + gzip.compress(text[100:])
    assert isinstance(parse_report(data), ParsedReport)


def test_policy_and_detail_limits() -> None:
    report = deep(report_dict())
    report["policies"] = report["policies"] * 3
    outcome = parse_report_value(report, SMALL)
    assert isinstance(outcome, RejectedReport)
    assert "3 policies; the limit is 2" in outcome.summary
    report = deep(report_dict())  # three details: at the limit
    assert isinstance(parse_report_value(report, SMALL), ParsedReport)
    report["policies"][0]["failure-details"].append(report["policies"][0]["failure-details"][0])
    outcome = parse_report_value(report, SMALL)
    assert isinstance(outcome, RejectedReport)
    assert "more than 3 failure details" in outcome.summary


def test_many_problems_are_listed_then_counted() -> None:
    report = deep(report_dict())
    report["policies"][0]["failure-details"] = [{"result-type": 1}] * 50
    outcome = rejected(report)
    assert len(outcome.reasons) == 21
    assert outcome.reasons[-1].startswith("... and ")


# ---------------------------------------------------------------- RFC 3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-04-01T00:00:00Z", datetime(2026, 4, 1, tzinfo=UTC)),
        ("2026-04-01 00:00:00Z", datetime(2026, 4, 1, tzinfo=UTC)),
        ("2026-04-01T02:30:00+02:30", datetime(2026, 4, 1, tzinfo=UTC)),
        ("2026-03-31T19:00:00-05:00", datetime(2026, 4, 1, tzinfo=UTC)),
        ("2026-04-01T00:00:00.5Z", datetime(2026, 4, 1, 0, 0, 0, 500_000, tzinfo=UTC)),
        ("2026-04-01T00:00:00", None),
        ("2026-04-01T24:00:00Z", None),
        ("2026-04-01T00:00:00+24:00", None),
        ("2026-04-01", None),
        ("0001-01-01T00:00:00+01:00", None),  # before year 1 in UTC
        ("١٢٣٤-04-01T00:00:00Z", None),  # non-ASCII digits
    ],
)
def test_rfc3339(text: str, expected: datetime | None) -> None:
    assert parse_rfc3339(text) == expected


# ---------------------------------------------------------------- never crash

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
KEYS = [
    "organization-name",
    "date-range",
    "start-datetime",
    "end-datetime",
    "contact-info",
    "report-id",
    "policies",
    "policy",
    "policy-type",
    "policy-string",
    "policy-domain",
    "mx-host",
    "summary",
    "total-successful-session-count",
    "total-failure-session-count",
    "failure-details",
    "result-type",
    "sending-mta-ip",
    "receiving-mx-hostname",
    "receiving-ip",
    "failed-session-count",
    "failure-reason-code",
]
REPORTISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10**13)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["2026-04-01T00:00:00Z", "sts", "example.com", "", "192.0.2.1"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=8)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_value_gives_an_outcome(value: object) -> None:
    assert isinstance(parse_report_value(value), ParsedReport | RejectedReport)


@settings(max_examples=500, deadline=None)
@given(REPORTISH)
def test_report_shaped_values_give_an_outcome(value: object) -> None:
    outcome = parse_report_value(value)
    assert isinstance(outcome, ParsedReport | RejectedReport)
    if isinstance(outcome, RejectedReport):
        assert outcome.reasons


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_an_outcome(data: bytes) -> None:
    assert isinstance(parse_report(data), ParsedReport | RejectedReport)
    assert isinstance(parse_report(gzip.compress(data)), ParsedReport | RejectedReport)
    assert isinstance(parse_report(b"\x1f\x8b" + data), ParsedReport | RejectedReport)
    assert isinstance(parse_report(zlib.compress(data)), ParsedReport | RejectedReport)


@settings(max_examples=200, deadline=None)
@given(
    successful=st.integers(0, 10**12),
    counts=st.lists(st.integers(0, 10**6), max_size=5),
    domain=st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=10).map(
        lambda label: label + ".example"
    ),
)
def test_generated_valid_reports_round_trip(
    successful: int, counts: list[int], domain: str
) -> None:
    details = [
        {
            "result-type": "certificate-expired",
            "failed-session-count": count,
            "sending-mta-ip": "192.0.2.1",
        }
        for count in counts
    ]
    report = report_dict(domain=domain, successful=successful, failed=sum(counts), details=details)
    parsed = parse_report(report_bytes(report))
    assert isinstance(parsed, ParsedReport)
    entry = parsed.report.policies[0]
    assert entry.successful_sessions == successful
    assert entry.failed_sessions == entry.detail_failures == sum(counts)
    again = parse_report_json(parsed.canonical_json.encode())
    assert isinstance(again, ParsedReport)
    assert again.report == parsed.report


def test_recognition_of_report_json() -> None:
    assert looks_like_report(report_bytes(report_dict(), gzipped=False))
    assert looks_like_report(b'\xef\xbb\xbf {"report-id": 1, "policies": []}')
    assert not looks_like_report(b'{"feedback": {"policies": 1}}')
    assert not looks_like_report(b"<feedback/>")


# ---------------------------------------------------------------- hostile JSON


def _with_extension(value: object) -> bytes:
    report = deep(report_dict())
    report["x-extension"] = value
    return json.dumps(report).encode()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param(
            _with_extension(0)[:-1] + b', "x-deep": ' + _nested(970).encode() + b"}",
            "nested more than 32 deep",
            id="deep-in-unknown-key",
        ),
        pytest.param(
            _with_extension(0)[:-1] + b', "x-big": 1e999999}',
            "1e999999 is not a finite number",
            id="infinite-number",
        ),
        pytest.param(
            _with_extension(0)[:-1] + b', "x-neg": -1e400}',
            "-1e400 is not a finite number",
            id="negative-infinite-number",
        ),
        pytest.param(
            _with_extension(0)[:-1] + b', "x-inf": Infinity}',
            "Infinity is not JSON",
            id="infinity-constant",
        ),
        pytest.param(
            _with_extension(0)[:-1] + b', "x-wide": [' + b"{}," * 150_000 + b"{}]}",
            "more than 200000 values",
            id="width-bomb",
        ),
    ],
)
def test_hostile_json_is_refused_before_it_costs_anything(text: bytes, reason: str) -> None:
    outcome = parse_report_json(text)
    assert isinstance(outcome, RejectedReport)
    assert reason in outcome.summary


@pytest.mark.parametrize(
    "extension",
    [
        pytest.param(json.loads(_nested(27)), id="deep-at-the-limit"),  # 5 levels are the report's
        pytest.param(1.5e300, id="large-finite-number"),
        pytest.param([{}] * 40_000, id="wide-within-the-limit"),
        pytest.param('"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"\\\\', id="brackets-in-a-string"),
    ],
)
def test_hostile_json_twins_are_read(extension: object) -> None:
    assert isinstance(parse_report_json(_with_extension(extension)), ParsedReport)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        pytest.param(b'["\\\\"]', 1, id="escaped-backslash-before-quote"),
        pytest.param(b'{"a": "\\"[[["}', 1, id="escaped-quote-then-brackets"),
        pytest.param(b'{"a\\u005b": [1, {"b": []}]}', 4, id="unicode-escape-in-key"),
        pytest.param(b'["]]]]", [["[[[["]]]', 3, id="brackets-in-strings"),
    ],
)
def test_shape_scan_reads_strings_as_the_parser_does(text: bytes, depth: int) -> None:
    from scanner.received.report import json_shape_problem

    json.loads(text)
    assert json_shape_problem(text, depth, 100) is None
    assert json_shape_problem(text, depth - 1, 100) == f"nested more than {depth - 1} deep"


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.text(max_size=5), lambda c: st.lists(c, max_size=3)))
def test_shape_scan_measures_the_depth_of_any_json(value: object) -> None:
    from scanner.received.report import json_shape_problem

    def depth(item: object) -> int:
        return 1 + max(map(depth, item), default=0) if isinstance(item, list) else 0

    text = json.dumps(value).encode()
    measured = depth(value)
    assert json_shape_problem(text, measured, 10_000) is None
    if measured:
        assert json_shape_problem(text, measured - 1, 10_000) is not None


def test_only_the_validated_report_is_stored_and_hashed() -> None:
    plain = parse_report_json(_with_extension(None))
    extended = parse_report_json(_with_extension({"anything": [1, 2, "x" * 1000]}))
    assert isinstance(plain, ParsedReport)
    assert isinstance(extended, ParsedReport)
    assert "x-extension" not in extended.canonical_json
    assert extended.canonical_json == plain.canonical_json
    assert extended.content_hash == plain.content_hash == content_hash(plain.canonical_json)
    again = parse_report_json(extended.canonical_json.encode())
    assert isinstance(again, ParsedReport)
    assert again.report == extended.report


def test_many_gzip_members_are_refused_and_cost_linear_time() -> None:
    empty = gzip.compress(b"", mtime=0)
    text = report_bytes(report_dict(), gzipped=False)
    members = [gzip.compress(text[i : i + 200], mtime=0) for i in range(0, len(text), 200)]
    assert 1 < len(members) <= 16
    assert isinstance(parse_report(b"".join(members)), ParsedReport)
    bomb = empty * (5 * 1024 * 1024 // len(empty))  # 262k members in 5 MiB
    outcome = inflate_payload(bomb)
    assert isinstance(outcome, PayloadError)
    assert outcome.reason == "the gzip data has more than 16 members"
    assert isinstance(inflate_payload(empty * 16), bytes)  # the twin at the limit


def test_a_large_single_member_is_inflated_in_pieces() -> None:
    text = b" " * (3 * 1024 * 1024) + report_bytes(report_dict(), gzipped=False)
    assert isinstance(parse_report(gzip.compress(text) + b"trailing"), ParsedReport)
