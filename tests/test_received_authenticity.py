"""Who sent a report: DKIM with an injected key lookup, and a trusted MTA's Authentication-Results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from test_received_builders import (
    REPORTER,
    SELECTOR,
    key_lookup,
    report_dict,
    report_email,
    reporter_lookup,
    sign,
    signing_key,
)

from scanner.lab import open_lab, parse_world
from scanner.received.authenticity import (
    AuthMethod,
    AuthStatus,
    aligned,
    authentication_results_verdict,
    build_verifier,
    counts_for_readiness,
    parse_authentication_results,
    verify_dkim,
)
from scanner.received.key_lookup import CachedKeyLookup, build_resolver
from scanner.received.mail import extract_reports

KEY_NAME = f"{SELECTOR}._domainkey.{REPORTER}"


def signed_report(**kwargs: object) -> bytes:
    return sign(report_email(report_dict()), **kwargs)  # type: ignore[arg-type]


def test_signed_by_the_reporting_domain_passes() -> None:
    verdict = verify_dkim(signed_report(), REPORTER, reporter_lookup())
    assert verdict.status is AuthStatus.PASS
    assert verdict.method is AuthMethod.DKIM
    assert verdict.signer == REPORTER


def test_a_changed_report_fails() -> None:
    message = signed_report()
    body_start = message.index(b"\n\n")
    tampered = message[:body_start] + message[body_start:].replace(
        b"aggregate TLS report", b"aggregate TLS rep0rt"
    )
    verdict = verify_dkim(tampered, REPORTER, reporter_lookup())
    assert verdict.status is AuthStatus.FAIL
    assert "body hash mismatch" in verdict.detail


def test_a_changed_signed_header_fails() -> None:
    original = signed_report()
    message = original.replace(b"To: tlsrpt@company-y.example", b"To: someone@company-y.example", 1)
    assert message != original
    assert verify_dkim(message, REPORTER, reporter_lookup()).status is AuthStatus.FAIL


@pytest.mark.parametrize(
    ("records", "temporary", "status"),
    [
        ({KEY_NAME: None}, frozenset(), AuthStatus.KEY_UNAVAILABLE),  # no key published
        ({KEY_NAME: b"v=DKIM1; k=rsa; p="}, frozenset(), AuthStatus.FAIL),  # key revoked
        ({}, frozenset({KEY_NAME}), AuthStatus.TEMPERROR),  # SERVFAIL
    ],
    ids=["no-key", "revoked", "temporary"],
)
def test_key_lookup_outcomes(
    records: dict[str, bytes | None], temporary: frozenset[str], status: AuthStatus
) -> None:
    verdict = verify_dkim(signed_report(), REPORTER, key_lookup(records, temporary=temporary))
    assert verdict.status is status


def test_someone_elses_key_fails() -> None:
    other = signing_key("email")  # a different key pair, with s=email
    verdict = verify_dkim(signed_report(), REPORTER, reporter_lookup(other))
    assert verdict.status is AuthStatus.FAIL


@pytest.mark.parametrize("service", ["tlsrpt", "email", "*"])
def test_key_service_types_accepted(service: str) -> None:
    key = signing_key(service)
    verdict = verify_dkim(
        sign(report_email(report_dict()), key=key), REPORTER, reporter_lookup(key)
    )
    assert verdict.status is AuthStatus.PASS


def test_key_for_another_service_fails() -> None:
    key = signing_key("chat")
    verdict = verify_dkim(
        sign(report_email(report_dict()), key=key), REPORTER, reporter_lookup(key)
    )
    assert verdict.status is AuthStatus.FAIL


def test_unsigned_is_none() -> None:
    verdict = verify_dkim(report_email(report_dict()), REPORTER, reporter_lookup())
    assert (verdict.status, verdict.detail) == (AuthStatus.NONE, "no DKIM signature")


def test_signed_by_someone_else_is_none() -> None:
    message = sign(report_email(report_dict()), domain="relay.example")
    lookup = key_lookup({f"{SELECTOR}._domainkey.relay.example": signing_key().record})
    verdict = verify_dkim(message, REPORTER, lookup)
    assert verdict.status is AuthStatus.NONE
    assert "d=relay.example" in verdict.detail


def test_any_aligned_signature_among_several_passes() -> None:
    message = sign(
        sign(report_email(report_dict())), domain="relay.example"
    )  # relay signs last, on top
    lookup = key_lookup(
        {
            KEY_NAME: signing_key().record,
            f"{SELECTOR}._domainkey.relay.example": None,
        }
    )
    assert verify_dkim(message, REPORTER, lookup).status is AuthStatus.PASS


@pytest.mark.parametrize(
    ("signer", "domain", "expected"),
    [
        ("reporter.example", "reporter.example", True),
        ("reporter.example", "mail.reporter.example", True),
        ("mail.reporter.example", "reporter.example", True),
        ("Reporter.Example.", "reporter.example", True),
        ("example", "reporter.example", False),
        ("other.example", "reporter.example", False),
        ("porter.example", "reporter.example", False),
        ("", "reporter.example", False),
    ],
)
def test_alignment(signer: str, domain: str, expected: bool) -> None:
    assert aligned(signer, domain) is expected


def test_garbage_signature_field_fails_without_raising() -> None:
    message = b"DKIM-Signature: v=1; a=rsa-sha256; d=reporter.example; garbage\n" + report_email(
        report_dict()
    )
    assert verify_dkim(message, REPORTER, reporter_lookup()).status is AuthStatus.FAIL


# ---------------------------------------------------------------- Authentication-Results


@pytest.mark.parametrize(
    ("value", "authserv_id", "methods"),
    [
        (
            "mx.company-y.example; dkim=pass header.d=reporter.example header.s=sel",
            "mx.company-y.example",
            [("dkim", "pass", "reporter.example")],
        ),
        (
            "mx.company-y.example 1; spf=pass smtp.mailfrom=x@y.example; dkim=fail (bad sig) header.d=reporter.example",
            "mx.company-y.example",
            [("spf", "pass", None), ("dkim", "fail", "reporter.example")],
        ),
        (
            'MX.Company-Y.Example;\r\n\tdkim = pass reason="a; b" header.i=@reporter.example',
            "mx.company-y.example",
            [("dkim", "pass", None)],
        ),
        ("(comment) mx.example (more); none", "mx.example", []),
        (
            "mx.example; dkim/1=pass header.d=a.example",
            "mx.example",
            [("dkim", "pass", "a.example")],
        ),
    ],
)
def test_authentication_results_parsing(
    value: str, authserv_id: str, methods: list[tuple[str, str, str | None]]
) -> None:
    parsed = parse_authentication_results(value)
    assert parsed is not None
    assert parsed.authserv_id == authserv_id
    assert [(r.method, r.result, r.property("header.d")) for r in parsed.results] == methods


@pytest.mark.parametrize("value", ["", "   ", "; dkim=pass", "(only a comment)"])
def test_authentication_results_without_authserv_id(value: str) -> None:
    assert parse_authentication_results(value) is None


def _with_authres(message: bytes, *values: str) -> bytes:
    return b"".join(f"Authentication-Results: {value}\n".encode() for value in values) + message


def test_trusted_mta_result_is_believed() -> None:
    message = _with_authres(
        report_email(report_dict()), "mx.company-y.example; dkim=pass header.d=reporter.example"
    )
    info = extract_reports(message).info
    verdict = build_verifier(key_lookup({}), "mx.company-y.example")(message, info)
    assert verdict.status is AuthStatus.PASS
    assert verdict.method is AuthMethod.AUTHENTICATION_RESULTS


def test_untrusted_mta_result_is_not_believed() -> None:
    message = _with_authres(
        report_email(report_dict()), "evil.example; dkim=pass header.d=reporter.example"
    )
    info = extract_reports(message).info
    verdict = build_verifier(key_lookup({}), "mx.company-y.example")(message, info)
    assert verdict.status is AuthStatus.NONE
    assert verdict.method is AuthMethod.DKIM


def test_only_the_topmost_run_of_the_trusted_mta_counts() -> None:
    forged_below = _with_authres(
        report_email(report_dict()),
        "mx.company-y.example; dkim=fail header.d=reporter.example",
        "relay.example; spf=pass smtp.mailfrom=reporter.example",  # another MTA's, on the way
        "mx.company-y.example; dkim=pass header.d=reporter.example",  # forged by the sender, below
    )
    info = extract_reports(forged_below).info
    verdict = build_verifier(key_lookup({}), "mx.company-y.example")(forged_below, info)
    assert verdict.status is AuthStatus.FAIL


def test_every_field_of_the_topmost_run_is_read() -> None:
    # A large mailbox provider adds one field per check, all with its authserv-id;
    # the DKIM verdict is in the fourth. Below another MTA's field, a forged one.
    message = _with_authres(
        report_email(report_dict()),
        "mx.company-y.example; dkim-adsp=none (no policy) header.from=reporter.example",
        "mx.company-y.example; spf=pass smtp.mailfrom=reporter.example",
        "mx.company-y.example; dmarc=pass (p=reject) header.from=reporter.example",
        "mx.company-y.example; dkim=pass (2048-bit rsa key sha256) header.d=reporter.example "
        "header.i=@reporter.example header.b=AbCd1234 header.a=rsa-sha256 header.s=tlsrpt2026",
        "relay.example; spf=pass smtp.mailfrom=reporter.example",
        "mx.company-y.example; dkim=fail header.d=reporter.example",
    )
    info = extract_reports(message).info
    verdict = build_verifier(key_lookup({}), "mx.company-y.example")(message, info)
    assert (verdict.status, verdict.signer) == (AuthStatus.PASS, REPORTER)
    assert verdict.method is AuthMethod.AUTHENTICATION_RESULTS
    # its twin: the same fields with the dkim verdict below another MTA's field is not read
    forged = _with_authres(
        report_email(report_dict()),
        "mx.company-y.example; spf=pass smtp.mailfrom=reporter.example",
        "relay.example; spf=pass smtp.mailfrom=reporter.example",
        "mx.company-y.example; dkim=pass header.d=reporter.example",
    )
    info = extract_reports(forged).info
    verdict = build_verifier(key_lookup({}), "mx.company-y.example")(forged, info)
    assert verdict.status is AuthStatus.NONE
    assert verdict.method is AuthMethod.DKIM


def test_trusted_mta_that_did_not_check_dkim_leaves_it_to_us() -> None:
    message = _with_authres(
        signed_report(), "mx.company-y.example; spf=pass smtp.mailfrom=reporter.example"
    )
    info = extract_reports(message).info
    verdict = build_verifier(reporter_lookup(), "mx.company-y.example")(message, info)
    assert verdict.status is AuthStatus.PASS
    assert verdict.method is AuthMethod.DKIM


@pytest.mark.parametrize(
    ("result", "status"),
    [
        ("pass", AuthStatus.PASS),
        ("fail", AuthStatus.FAIL),
        ("temperror", AuthStatus.TEMPERROR),
        ("permerror", AuthStatus.FAIL),
        ("none", AuthStatus.NONE),
    ],
)
def test_authres_statuses(result: str, status: AuthStatus) -> None:
    verdict = authentication_results_verdict(
        [f"mx.example; dkim={result} header.d=reporter.example"], "mx.example", REPORTER
    )
    assert verdict is not None
    assert verdict.status is status


def test_authres_pass_for_another_domain_is_none() -> None:
    verdict = authentication_results_verdict(
        ["mx.example; dkim=pass header.d=other.example"], "mx.example", REPORTER
    )
    assert verdict is not None
    assert verdict.status is AuthStatus.NONE


# ---------------------------------------------------------------- the production lookup, against the lab's DNS


def test_dnspython_lookup_against_a_real_dns_server(tmp_path: Path) -> None:
    record = signing_key().record.decode()  # about 400 characters: two TXT strings
    world = parse_world(
        f"""
[lab]
description = "DKIM keys"

[domains."{REPORTER}"]
dns."{SELECTOR}._domainkey" = {{ txt = ["{record}"] }}
dns."broken._domainkey" = {{ servfail = true }}
"""
    )
    answers: dict[str, object] = {}

    async def main() -> None:
        async with open_lab(world, workdir=tmp_path) as lab:
            host, port = lab.resolver
            lookup = CachedKeyLookup(build_resolver([(host, port)], timeout=2.0))

            def run() -> None:
                answers["key"] = lookup(KEY_NAME)
                answers["missing"] = lookup(f"nope._domainkey.{REPORTER}")
                answers["broken"] = lookup(f"broken._domainkey.{REPORTER}")
                answers["verdict"] = verify_dkim(signed_report(), REPORTER, lookup)

            await trio.to_thread.run_sync(run)

    trio.run(main)
    key = answers["key"]
    assert key.text == record.encode()
    assert answers["missing"].temporary is False
    assert answers["missing"].text is None
    assert answers["broken"].temporary is True
    assert answers["verdict"].status is AuthStatus.PASS


# ---------------------------------------------------------------- never crash


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.text(max_size=200))
def test_any_message_gives_a_verdict(body: bytes, signature: str) -> None:
    message = (
        b"DKIM-Signature: "
        + signature.encode("utf-8", "surrogatepass")
        + b"\nFrom: a@reporter.example\n\n"
        + body
    )
    assert verify_dkim(message, REPORTER, reporter_lookup()).status in AuthStatus
    assert verify_dkim(body, REPORTER, reporter_lookup()).status in AuthStatus


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_authentication_results_value_parses_or_not(value: str) -> None:
    parse_authentication_results(value)
    authentication_results_verdict([value], "mx.example", REPORTER)


# ---------------------------------------------------------------- statuses that say what happened

SENT = datetime(2026, 4, 2, 3, 4, 5, tzinfo=UTC)
EXPIRES = SENT + timedelta(days=7)  # x= about a week after sending, as large senders set it


def expiring_report() -> bytes:
    return sign(
        report_email(report_dict()),
        signed_at=int(SENT.timestamp()),
        expires=int(EXPIRES.timestamp()),
    )


@pytest.mark.parametrize(
    ("now", "arrived", "status"),
    [
        (SENT + timedelta(days=1), None, AuthStatus.PASS),  # read before x=
        (SENT + timedelta(days=30), SENT + timedelta(minutes=2), AuthStatus.PASS),  # backlog
        (SENT + timedelta(days=30), None, AuthStatus.FAIL),  # arrival unknown
        (SENT + timedelta(days=30), SENT + timedelta(days=20), AuthStatus.FAIL),  # arrived late
    ],
    ids=["before-expiry", "expired-valid-at-arrival", "arrival-unknown", "arrived-after-expiry"],
)
def test_expiry_is_judged_at_arrival(
    now: datetime, arrived: datetime | None, status: AuthStatus
) -> None:
    verdict = verify_dkim(expiring_report(), REPORTER, reporter_lookup(), now=now, arrived=arrived)
    assert verdict.status is status, verdict.detail
    if status is AuthStatus.PASS and arrived is not None:
        assert "x= (2026-04-09T03:04:05+00:00) is past" in verdict.detail
        assert "valid when the message arrived" in verdict.detail
    if status is AuthStatus.FAIL:
        assert "signature expired" in verdict.detail


def test_an_expired_signature_over_a_changed_report_still_fails() -> None:
    message = expiring_report().replace(b"aggregate TLS report", b"aggregate TLS rep0rt")
    verdict = verify_dkim(
        message,
        REPORTER,
        reporter_lookup(),
        now=SENT + timedelta(days=30),
        arrived=SENT + timedelta(minutes=2),
    )
    assert verdict.status is AuthStatus.FAIL


def test_a_retired_selector_is_key_unavailable_with_the_name() -> None:
    verdict = verify_dkim(
        signed_report(),
        REPORTER,
        key_lookup({KEY_NAME: None}),
    )
    assert verdict.status is AuthStatus.KEY_UNAVAILABLE
    assert KEY_NAME in verdict.detail
    assert not verdict.verified
    assert not counts_for_readiness(verdict)


@pytest.mark.parametrize(
    ("received", "arrived"),
    [
        (
            [
                "from mx.reporter.example by mx.company-y.example; Thu, 2 Apr 2026 03:06:05 +0000",
                "from forged.example by relay.example; Mon, 1 Jan 2024 00:00:00 +0000",
            ],
            datetime(2026, 4, 2, 3, 6, 5, tzinfo=UTC),
        ),
        (["from a by b; not a date"], None),
        (["from a by b with ESMTP id 42"], None),
        ([], None),
    ],
    ids=["topmost", "unreadable-date", "no-date", "none"],
)
def test_arrival_is_the_topmost_received_date(
    received: list[str], arrived: datetime | None
) -> None:
    message = report_email(report_dict())
    head = b"".join(f"Received: {value}\r\n".encode() for value in received)
    assert extract_reports(head + message).info.arrived == arrived


def test_the_verifier_judges_expiry_at_the_received_time() -> None:
    message = expiring_report()
    late = SENT + timedelta(days=30)
    verify = build_verifier(reporter_lookup(), now=lambda: late)
    arrived = b"Received: from mx.reporter.example by mx.company-y.example; Thu, 2 Apr 2026 03:06:05 +0000\r\n"
    on_time = arrived + message
    assert verify(on_time, extract_reports(on_time).info).status is AuthStatus.PASS
    assert verify(message, extract_reports(message).info).status is AuthStatus.FAIL
