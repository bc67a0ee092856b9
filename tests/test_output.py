"""The docs/output.md#the-json-line, its JSON Schema, and one-line serialisation."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
from builders import (
    AFTER_TLS,
    OPTIONS,
    REASONS,
    SCANNED,
    WINDOW,
    assess,
    bad_mx2,
    certificate,
    domain_facts,
    expired_mx2,
    failed_fetch,
    good_hosts,
    host,
    no_hosts,
    probe,
    untestable,
)
from commands import line_validator
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.core.reasons import after_tls_text, reason_text
from scanner.core.result import DomainResult, ErrorKind, ScanError
from scanner.models import DnsStatus, DomainFacts, Interruption, MxAnswer, MxSource, ResultType
from scanner.output import SCHEMA_VERSION, dumps_line, load_schema, result_line

# docs/output.md#top-level-fields, in order, plus `mx_lookup` and `rank` (added fields, as docs/output.md#changelog-of-the-output-contract allows).
LINE_KEYS = [
    "schema_version",
    "domain",
    "rank",
    "scanned_at",
    "error",
    "mta_sts",
    "tlsrpt",
    "mx_lookup",
    "mx",
    "over_limit",
    "indicators",
    "enforce_ready",
    "blockers",
    "warnings",
    "report",
    "received_reports",
]

VALIDATOR = line_validator()


def line_of(facts: DomainFacts) -> dict[str, Any]:
    result = DomainResult(
        domain=facts.domain,
        scanned_at=WINDOW[0],
        finished_at=WINDOW[1],
        facts=facts,
        verdict=assess(facts),
    )
    return result_line(result, OPTIONS)


def error_line(domain: str, error: ScanError) -> dict[str, Any]:
    return result_line(DomainResult.failed(domain, error, SCANNED), OPTIONS)


def round_trip(line: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(dumps_line(line))
    return decoded


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


REALISTIC = [
    ("ready", domain_facts()),
    ("bad-backup", domain_facts(good_hosts()[0], expired_mx2())),
    ("no-starttls", domain_facts(good_hosts()[0], bad_mx2())),
    ("untestable", domain_facts(good_hosts()[0], host("mx2.example.com", untestable("mx2.example.com", "::1", "timeout:greeting")))),
    ("no-policy", domain_facts(record=None, tlsrpt=None)),
    ("fetch-error", domain_facts(fetch=failed_fetch(ResultType.STS_POLICY_FETCH_ERROR, "connect-refused to 127.0.0.1:443"))),
    ("policy-invalid", domain_facts(fetch=failed_fetch(ResultType.STS_POLICY_INVALID, "line 2: mode", "version: STSv1\nmode: x\n"))),
    ("null-mx", no_hosts(domain_facts(mx=MxAnswer(DnsStatus.ANSWER, null_mx=True)))),
    ("policy-only", domain_facts(*good_hosts(), host("standby.example.com", probe("standby.example.com", "127.0.1.9"), preference=None, source=MxSource.POLICY))),
]  # fmt: skip


@pytest.mark.parametrize("facts", [c[1] for c in REALISTIC], ids=[c[0] for c in REALISTIC])
def test_result_lines_validate(facts: DomainFacts) -> None:
    line = round_trip(line_of(facts))
    VALIDATOR.validate(line)
    assert list(line) == LINE_KEYS


def test_ready_line_fields() -> None:
    line = round_trip(line_of(domain_facts()))
    assert line["schema_version"] == SCHEMA_VERSION == 3
    assert line["domain"] == "example.com"
    assert line["scanned_at"] == "2026-11-28T04:00:00Z"
    assert line["error"] is None
    assert line["mta_sts"]["record"] == "v=STSv1; id=20261128T0400"
    assert line["mta_sts"]["id"] == "20261128T0400"
    assert line["mta_sts"]["policy"] == {
        "version": "STSv1",
        "mode": "testing",
        "mx": ["mx1.example.com", "mx2.example.com"],
        "max_age": 604800,
    }
    assert line["mta_sts"]["error"] is None
    assert line["tlsrpt"] == {
        "record": "v=TLSRPTv1; rua=mailto:tlsrpt@example.com",
        "rua": ["mailto:tlsrpt@example.com"],
        "error": None,
        "error_code": None,
    }
    mx1 = line["mx"][0]
    assert (mx1["hostname"], mx1["preference"], mx1["source"], mx1["in_policy"]) == (
        "mx1.example.com",
        10,
        "dns",
        True,
    )
    address = mx1["addresses"][0]
    assert address["ip"] == "127.0.1.1"
    assert (address["status"], address["reason"], address["starttls"]) == (
        "tested",
        None,
        "offered",
    )
    assert address["tls"] == {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}
    assert address["certificate"]["not_after"] == "2027-01-27T04:00:00Z"
    assert address["certificate"]["chain_valid"] is True
    assert address["result_types"] == []
    assert line["enforce_ready"] is True
    assert line["blockers"] == []
    assert line["report"]["policies"][0]["summary"] == {
        "total-successful-session-count": 2,
        "total-failure-session-count": 0,
    }


def test_policy_failure_line_fields() -> None:
    facts = domain_facts(fetch=failed_fetch(ResultType.STS_WEBPKI_INVALID, "X509_V_ERR_CERT_HAS_EXPIRED"))  # fmt: skip
    line = round_trip(line_of(facts))
    assert line["mta_sts"]["error"] == {
        "result_type": "sts-webpki-invalid",
        "code": "webpki:untrusted",
        "detail": "X509_V_ERR_CERT_HAS_EXPIRED",
    }
    assert line["mta_sts"]["policy"] is None
    assert [h["in_policy"] for h in line["mx"]] == [None, None]
    no_record = round_trip(line_of(domain_facts(record=None)))
    assert no_record["mta_sts"]["error"] == {
        "result_type": None,
        "code": "no-record",
        "detail": "no v=STSv1 record",
    }
    assert no_record["tlsrpt"]["error_code"] is None  # the record is there
    assert line["blockers"][0]["code"] == "sts-webpki-invalid"
    assert line["blockers"][0]["cause"] == "webpki:untrusted"


def test_error_line_validates() -> None:
    error = ScanError(ErrorKind.INVALID_DOMAIN, "empty label")
    line = round_trip(error_line("exa mple..com", error))
    VALIDATOR.validate(line)
    assert list(line) == LINE_KEYS
    assert line["error"] == "invalid-domain: empty label"
    assert (line["mx"], line["enforce_ready"], line["report"]) == ([], False, None)
    assert line["blockers"] == [
        {
            "code": "could-not-scan",
            "text": "could not scan: invalid-domain: empty label",
            "host": None,
            "address": None,
            "cause": "invalid-domain",
        }
    ]


def test_after_tls_error_field() -> None:
    stalled = probe("mx2.example.com", "127.0.1.2", after_tls="timeout:ehlo-after-tls")
    line = round_trip(line_of(domain_facts(good_hosts()[0], host("mx2.example.com", stalled))))
    VALIDATOR.validate(line)
    addresses = [a for h in line["mx"] for a in h["addresses"]]
    assert [a["after_tls_error"] for a in addresses] == [None, "timeout:ehlo-after-tls"]
    assert addresses[1]["status"] == "tested"
    assert addresses[1]["result_types"] == []
    assert any(
        w["code"] == "ehlo-after-tls-failed"
        and w["cause"] == "timeout:ehlo-after-tls"
        and "EHLO after TLS failed (timeout:ehlo-after-tls)" in w["text"]
        for w in line["warnings"]
    )


@pytest.mark.parametrize(("text", "interruption"), REASONS.items(), ids=REASONS.keys())
def test_reasons_render_as_documented(text: str, interruption: Interruption) -> None:
    assert reason_text(interruption) == text


@pytest.mark.parametrize(("text", "interruption"), AFTER_TLS.items(), ids=AFTER_TLS.keys())
def test_after_tls_errors_render_with_their_phase(text: str, interruption: Interruption) -> None:
    assert after_tls_text(interruption) == text


def test_schema_rejects_after_tls_error_on_an_untestable_address() -> None:
    facts = domain_facts(good_hosts()[0], host("mx2.example.com", untestable("mx2.example.com", "::1", "timeout:greeting")))  # fmt: skip
    line = round_trip(line_of(facts))
    untested = line["mx"][1]["addresses"][0]
    assert untested["after_tls_error"] is None
    VALIDATOR.validate(line)
    untested["after_tls_error"] = "timeout:quit"
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(line)


# ---------------------------------------------------------------- failing twins: the schema rejects


def _set(path: tuple[Any, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def change(line: dict[str, Any]) -> None:
        target: Any = line
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _drop(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def change(line: dict[str, Any]) -> None:
        target: Any = line
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


BAD_LINE_CASES = [
    ("unknown-result-type", _set(("mx", 1, "addresses", 0, "result_types"), ["certificate-revoked"])),
    ("policy-result-type-on-a-session", _set(("mx", 1, "addresses", 0, "result_types"), ["sts-policy-invalid"])),
    ("missing-field", _drop(("warnings",))),
    ("missing-address-field", _drop(("mx", 0, "addresses", 0, "starttls"))),
    ("unknown-indicator", _set(("indicators", 0, "code"), "starttls-downgraded")),
    ("unknown-starttls-word", _set(("mx", 0, "addresses", 0, "starttls"), "yes")),
    ("ready-with-blockers", _set(("enforce_ready",), True)),
    ("not-ready-without-blockers", _set(("blockers",), [])),
    ("local-time", _set(("scanned_at",), "2026-11-28T04:00:00+01:00")),
    ("extra-report-key", _set(("report", "policies", 0, "policy", "policy-version"), "1")),
    ("misspelt-reason-key", _set(("report", "policies", 0, "failure-details", 0, "failure-error-code"), "x")),
    ("mx-host-as-string", _set(("report", "policies", 0, "policy", "mx-host"), "mx1.example.com")),
    ("count-as-string", _set(("report", "policies", 0, "summary", "total-failure-session-count"), "1")),
    ("report-missing", _set(("report",), None)),
    ("untestable-with-result-type", _set(("mx", 1, "addresses", 0, "status"), "not-testable")),
    ("after-tls-error-not-a-string", _set(("mx", 0, "addresses", 0, "after_tls_error"), 5)),
    ("after-tls-error-empty", _set(("mx", 0, "addresses", 0, "after_tls_error"), "")),
    ("source-unknown", _set(("mx", 0, "source"), "cache")),
]  # fmt: skip


@pytest.mark.parametrize(
    "corrupt", [c[1] for c in BAD_LINE_CASES], ids=[c[0] for c in BAD_LINE_CASES]
)
def test_schema_rejects(corrupt: Callable[[dict[str, Any]], None]) -> None:
    line = round_trip(line_of(domain_facts(good_hosts()[0], expired_mx2())))
    VALIDATOR.validate(line)
    broken = copy.deepcopy(line)
    corrupt(broken)
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(broken)


@pytest.mark.parametrize(
    "corrupt",
    [_set(("report",), {"organization-name": "x"}), _set(("mx",), [{"hostname": "mx1"}]), _set(("enforce_ready",), True)],
    ids=["error-line-with-report", "error-line-with-mx", "error-line-ready"],
)  # fmt: skip
def test_schema_rejects_error_lines(corrupt: Callable[[dict[str, Any]], None]) -> None:
    line = round_trip(error_line("-bad-", ScanError(ErrorKind.INVALID_DOMAIN, "leading hyphen")))
    corrupt(line)
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(line)


# ---------------------------------------------------------------- one line


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": "é"}, '{"b":1,"a":"é"}'),
        ({"a": "x\ny"}, '{"a":"x\\ny"}'),
        ({"a": "x\u2028y\u2029z\x85"}, '{"a":"x\\u2028y\\u2029z\\u0085"}'),
    ],
    ids=["order-and-utf8", "newline-escaped", "unicode-line-breaks-escaped"],
)
def test_dumps_line(value: object, expected: str) -> None:
    text = dumps_line(value)
    assert text == expected
    assert len(text.splitlines()) == 1
    assert json.loads(text) == value


def test_dumps_line_refuses_nan() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        dumps_line({"a": float("nan")})


@settings(max_examples=100, deadline=None)
@given(
    transcript=st.lists(st.text(max_size=20), max_size=4),
    subject=st.text(max_size=30),
    days_left=st.integers(min_value=-400, max_value=400),
)
def test_any_line_is_one_valid_line(transcript: list[str], subject: str, days_left: int) -> None:
    cert = certificate("mx2.example.com", not_after=SCANNED + timedelta(days=days_left))
    cert = dataclasses.replace(cert, leaf=dataclasses.replace(cert.leaf, subject=subject))
    mx2 = host(
        "mx2.example.com",
        probe("mx2.example.com", "::1", transcript=tuple(transcript), certificate=cert),
    )
    text = dumps_line(line_of(domain_facts(good_hosts()[0], mx2)))
    assert "\n" not in text
    assert len(text.splitlines()) == 1
    VALIDATOR.validate(json.loads(text))
