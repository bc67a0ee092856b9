"""A report can never hide another's failures: forged copies, borrowed organization names,
floods of successes, and the invariant that adding a report never removes a blocker.

Real parts: reports signed with DKIM keys made here and verified through the importer,
stored in a real SQLite file, judged by `received_evidence`.
"""

from __future__ import annotations

import functools
import itertools
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_received_builders import (
    POLICY_DOMAIN,
    SELECTOR,
    key_lookup,
    report_dict,
    report_email,
    sign,
    signing_key,
)

from scanner.core.codes import ProblemCode
from scanner.received.authenticity import (
    HTTPS_RECEIVED,
    NOT_EMAIL,
    Authenticity,
    AuthMethod,
    AuthStatus,
    build_verifier,
)
from scanner.received.evidence import ReceivedEvidence, received_evidence
from scanner.received.importer import Importer
from scanner.received.items import MessageItem
from scanner.received.records import Provenance, StoredReport, UnreadableReport
from scanner.received.report import ParsedReport, parse_report_value
from scanner.received.store import ReportStore, load_domain_reports
from scanner.received.summary import summarise_domains

NOW = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
GENUINE = "mail-provider.example"  # the large sender whose reports are forged
ATTACKER = "attacker.example"
# Predictable, as a large provider's are: <digits>+<policy domain>
REPORT_ID = "133210368000000000+company-y.example"


def genuine_report(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "organization": "Mail Provider Inc.",
        "report_id": REPORT_ID,
        "day": "2026-04-10",
        "successful": 46_000,
        "failed": 4_000,
        "details": [
            {
                "result-type": "certificate-expired",
                "receiving-mx-hostname": "mx1.mail.company-y.example",
                "failed-session-count": 4_000,
            }
        ],
    }
    values.update(changes)
    return report_dict(**values)


def forged_success(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"successful": 50_000, "failed": 0, "details": []}
    values.update(changes)
    return genuine_report(**values)


def signed_by(domain: str, report: dict[str, Any]) -> bytes:
    message = report_email(report, sender=f"noreply-tlsrpt@{domain}", submitter=domain)
    return sign(message, domain=domain)


def lookup() -> Any:
    record = signing_key().record
    return key_lookup(
        {f"{SELECTOR}._domainkey.{GENUINE}": record, f"{SELECTOR}._domainkey.{ATTACKER}": record}
    )


def importer(store: ReportStore) -> Importer:
    return Importer(store, verify=build_verifier(lookup(), now=lambda: NOW), now=lambda: NOW)


def parsed(report: dict[str, Any]) -> ParsedReport:
    outcome = parse_report_value(report)
    assert isinstance(outcome, ParsedReport)
    return outcome


def evidence_of(database: Path) -> ReceivedEvidence:
    return received_evidence(load_domain_reports(database, POLICY_DOMAIN), POLICY_DOMAIN, NOW)


def test_a_forged_copy_posted_first_does_not_hide_the_genuine_failures(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    with ReportStore.open(database) as store:
        # The forger POSTs first, under the report-id the genuine report will have.
        store.add(
            parsed(forged_success()),
            Provenance(HTTPS_RECEIVED, "https POST from 192.0.2.66", source="192.0.2.66"),
            NOW,
        )
        importer(store).run([MessageItem("inbox 1", signed_by(GENUINE, genuine_report()), 1)])
    evidence = evidence_of(database)
    assert not evidence.ready
    (blocker,) = [b for b in evidence.blockers if GENUINE in b.text]
    assert blocker.code == ProblemCode.REPORTED_FAILURE_RATE
    assert "4000 failed of 50000 sessions" in blocker.text
    assert evidence.sessions.failed == 4_000
    # The forged copy is its source's own report, shown as such.
    assert any(o.voucher == "https:192.0.2.66" for o in evidence.organizations)
    # Received over HTTPS without failures: nothing to warn about for it.
    assert not any(w.code == ProblemCode.REPORTS_UNVERIFIED_FAILURES for w in evidence.warnings)


def test_a_borrowed_organization_name_does_not_replace_the_genuine_report(
    tmp_path: Path,
) -> None:
    database = tmp_path / "db.sqlite"
    with ReportStore.open(database) as store:
        run = importer(store)
        run.run(
            [
                MessageItem("inbox 1", signed_by(ATTACKER, forged_success()), 1),
                MessageItem("inbox 2", signed_by(GENUINE, genuine_report()), 1),
            ]
        )
        reports = store.reports()
    by_voucher = {stored.voucher: stored for stored in reports}
    assert set(by_voucher) == {f"dkim:{ATTACKER}", f"dkim:{GENUINE}"}
    assert all(stored.verified for stored in reports)
    assert by_voucher[f"dkim:{GENUINE}"].conflicting_copies == 0
    # verified only, the genuine failures are there
    (summary,) = summarise_domains([r for r in reports if r.verified], POLICY_DOMAIN)
    assert summary.sessions.failed == 4_000
    assert summary.reports == 2  # one name and report-id, two reports: one per signer
    evidence = evidence_of(database)
    assert not evidence.ready
    shown = {o.organization for o in evidence.organizations}
    assert f'{ATTACKER} ("Mail Provider Inc.")' in shown  # grouped under its signer
    assert f'{GENUINE} ("Mail Provider Inc.")' in shown
    assert any(b.text.startswith(f"TLS-RPT: {GENUINE} ") for b in evidence.blockers)


def test_a_flood_of_forged_successes_does_not_dilute_a_failure_rate(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    small_failing = genuine_report(
        report_id="small-1",
        successful=90,
        failed=10,
        details=[{"result-type": "validation-failure", "failed-session-count": 10}],
    )
    with ReportStore.open(database) as store:
        importer(store).run([MessageItem("inbox 1", signed_by(GENUINE, small_failing), 1)])
        before = evidence_of(database)
        flood = [
            MessageItem(
                f"inbox {n}",
                signed_by(ATTACKER, forged_success(report_id=f"flood-{n}")),
                1,
            )
            for n in range(5)
        ]
        importer(store).run(flood)
    after = evidence_of(database)
    assert not before.ready
    assert not after.ready
    assert after.sessions.total == 100 + 5 * 50_000


def test_within_one_signer_the_copy_with_more_failures_counts(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    with ReportStore.open(database) as store:
        importer(store).run(
            [
                MessageItem("inbox 1", signed_by(GENUINE, forged_success()), 1),
                MessageItem("inbox 2", signed_by(GENUINE, genuine_report()), 1),
            ]
        )
    evidence = evidence_of(database)
    assert evidence.sessions.failed == 4_000
    (warning,) = [w for w in evidence.warnings if w.code == ProblemCode.REPORTS_CONFLICTING]
    assert f'{GENUINE} ("Mail Provider Inc.") report-id 1332103680' in warning.text


def test_a_retired_selector_is_shown_and_not_counted(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    with ReportStore.open(database) as store:
        Importer(
            store,
            verify=build_verifier(key_lookup({}), now=lambda: NOW),
            now=lambda: NOW,
        ).run([MessageItem("inbox 1", signed_by(GENUINE, genuine_report()), 1)])
        (stored,) = store.reports()
    assert stored.authenticity.status is AuthStatus.KEY_UNAVAILABLE
    evidence = evidence_of(database)
    assert evidence.ready  # not counted: a forger can name a selector that does not exist
    (warning,) = [w for w in evidence.warnings if w.code == ProblemCode.REPORTS_UNVERIFIED_FAILURES]
    assert "not counted (not DKIM-verified) hold 4000 failed of 50000 sessions" in warning.text
    assert "authenticity key-unavailable 1" in warning.text


def test_unverified_reports_with_failures_are_warned_with_their_counts() -> None:
    reports = [
        stored_report(
            genuine_report(
                report_id=f"u{n}",
                successful=500,
                failed=12,
                details=[{"result-type": "starttls-not-supported", "failed-session-count": 12}],
            ),
            NOT_EMAIL,
        )
        for n in range(9)
    ]
    clean = stored_report(forged_success(report_id="clean"), verified(GENUINE))
    evidence = received_evidence([*reports, clean], POLICY_DOMAIN, NOW)
    assert evidence.ready  # they do not change the verdict, and are said all the same
    (warning,) = [w for w in evidence.warnings if w.code == ProblemCode.REPORTS_UNVERIFIED_FAILURES]
    assert warning.text.startswith(
        "TLS-RPT: 9 reports for company-y.example in the last 14 days not counted (not "
        "DKIM-verified) hold 108 failed of 4608 sessions"
    )
    assert 'reporters file ("Mail Provider Inc.") 108' in warning.text
    assert "result types starttls-not-supported 108" in warning.text
    # the twin: without failures, no such warning (only the count left out)
    quiet = received_evidence(
        [stored_report(forged_success(report_id="q"), NOT_EMAIL), clean], POLICY_DOMAIN, NOW
    )
    assert not any(w.code == ProblemCode.REPORTS_UNVERIFIED_FAILURES for w in quiet.warnings)
    assert any(w.code == ProblemCode.REPORTS_UNVERIFIED for w in quiet.warnings)


def test_https_reports_with_failures_are_said_to_be_unsigned() -> None:
    posted = stored_report(
        genuine_report(
            report_id="h1",
            successful=100_000,
            failed=3,
            details=[{"result-type": "validation-failure", "failed-session-count": 3}],
        ),
        HTTPS_RECEIVED,
        voucher="https:192.0.2.1",
    )
    evidence = received_evidence([posted], POLICY_DOMAIN, NOW)
    (warning,) = [w for w in evidence.warnings if w.code == ProblemCode.REPORTS_UNVERIFIED_FAILURES]
    assert "counted without a signature (received over HTTPS) hold 3 failed" in warning.text
    assert 'https 192.0.2.1 ("Mail Provider Inc.") 3' in warning.text


def test_unreadable_rows_are_warned_about(tmp_path: Path) -> None:
    from scanner.received.records import ReceivedReports

    unreadable = (UnreadableReport(7, "Mail Provider Inc.", "r7", "its JSON no longer parses"),)
    evidence = received_evidence(
        ReceivedReports(POLICY_DOMAIN, (), frozenset(), unreadable), POLICY_DOMAIN, NOW
    )
    (warning,) = [w for w in evidence.warnings if w.code == ProblemCode.REPORTS_UNREADABLE]
    assert "1 stored report no longer read back" in warning.text
    assert "Mail Provider Inc. report-id r7" in warning.text
    clean = received_evidence(ReceivedReports(POLICY_DOMAIN, (), frozenset()), POLICY_DOMAIN, NOW)
    assert not any(w.code == ProblemCode.REPORTS_UNREADABLE for w in clean.warnings)


# ---------------------------------------------------------------- the invariant


def verified(signer: str) -> Authenticity:
    return Authenticity(AuthStatus.PASS, AuthMethod.DKIM, "test", signer)


def stored_report(
    report: dict[str, Any], authenticity: Authenticity, *, voucher: str = ""
) -> StoredReport:
    outcome = parsed(report)
    return StoredReport(
        report=outcome.report,
        content_hash=outcome.content_hash,
        authenticity=authenticity,
        submitter=authenticity.signer,
        origin="test",
        imported_at=NOW,
        destinations=frozenset(),
        notes=outcome.notes,
        conflicting_copies=0,
        voucher=voucher,
    )


SIGNERS = ["a.example", "b.example", "c.example", "d.example"]
# Verified by one of the signers, or one of three other outcomes, each a quarter of the
# time: a verified signature is each signer's once, the others are four times each.
AUTHENTICITIES = [
    *(verified(signer) for signer in SIGNERS),
    *[
        NOT_EMAIL,
        HTTPS_RECEIVED,
        Authenticity(AuthStatus.KEY_UNAVAILABLE, AuthMethod.DKIM, "retired"),
    ]
    * len(SIGNERS),
]
RESULT_TYPES = st.sampled_from(
    ["certificate-expired", "starttls-not-supported", "sts-policy-fetch-error"]
)

FAILURES = st.lists(st.tuples(RESULT_TYPES, st.integers(1, 400)), max_size=2)
# floods of successes included: a million or a billion sessions at once
SUCCESSFUL = st.integers(0, 200_000) | st.sampled_from([10**6, 10**9])
# How many days ago, the organization, the report-id, the authenticity and the source
# host: independent choices among a few values each, drawn as one (Hypothesis spends
# more on a draw than the choice is worth).
CHOICES = st.sampled_from(
    list(
        itertools.product(
            range(17),
            ["Mail Provider Inc.", "Other Org"],
            ["r0", "r1", "r2", "r3"],
            AUTHENTICITIES,
            range(1, 4),
        )
    )
)


# SQLite's commits wait for the disk; in memory the property runs in seconds.
MEMORY_FOLDER = "/dev/shm" if Path("/dev/shm").is_dir() else None


@st.composite
def copies(draw: st.DrawFn) -> tuple[ParsedReport, Provenance]:
    """A report as some sender delivers it: under one of a few report-ids (so that
    copies collide: duplicates and conflicts), with any authenticity."""
    failures = draw(FAILURES)
    days_ago, organization, report_id, authenticity, source_host = draw(CHOICES)
    report = report_dict(
        organization=organization,
        report_id=report_id,
        day=(NOW - timedelta(days=days_ago)).date().isoformat(),
        successful=draw(SUCCESSFUL),
        failed=sum(count for _, count in failures),
        details=[{"result-type": kind, "failed-session-count": count} for kind, count in failures],
    )
    source = f"192.0.2.{source_host}"
    return parsed(report), Provenance(
        authenticity, "test", submitter=authenticity.signer, source=source
    )


@functools.cache
def new_store_file() -> bytes:
    """The file of a new, migrated store: made once, each example starts from a copy."""
    with tempfile.TemporaryDirectory(dir=MEMORY_FOLDER) as folder:
        path = Path(folder) / "db.sqlite"
        ReportStore.open(path).close()
        return path.read_bytes()


def evidence_before_and_after(
    base: list[tuple[ParsedReport, Provenance]],
    extra: tuple[ParsedReport, Provenance],
    include_unverified: bool,
) -> tuple[ReceivedEvidence, ReceivedEvidence]:
    """The evidence of a real store holding `base`, then holding `extra` too."""
    judged: list[ReceivedEvidence] = []
    with tempfile.TemporaryDirectory(dir=MEMORY_FOLDER) as folder:
        path = Path(folder) / "db.sqlite"
        path.write_bytes(new_store_file())
        with ReportStore.open(path) as store:
            for added in (base, [extra]):
                for report, provenance in added:
                    store.add(report, provenance, NOW)
                judged.append(
                    received_evidence(
                        load_domain_reports(store, POLICY_DOMAIN),
                        POLICY_DOMAIN,
                        NOW,
                        include_unverified=include_unverified,
                    )
                )
    return judged[0], judged[1]


@settings(max_examples=150, deadline=None)
@given(st.lists(copies(), max_size=6), copies(), st.booleans())
def test_adding_any_report_never_removes_a_blocker(
    base: list[tuple[ParsedReport, Provenance]],
    extra: tuple[ParsedReport, Provenance],
    include_unverified: bool,
) -> None:
    before, after = evidence_before_and_after(base, extra, include_unverified)
    # Every kind of blocker stays. Their number may fall: a copy that joins two reporters
    # into one (a better authenticity for a stored report) leaves that reporter's own
    # line, which then holds what "all reporters together" held.
    codes_before = {blocker.code for blocker in before.blockers}
    codes_after = {blocker.code for blocker in after.blockers}
    assert codes_before <= codes_after, (before.blockers, after.blockers)
    assert after.failed_sessions >= before.failed_sessions
    if not before.ready:
        assert not after.ready


def test_a_conflicting_copy_with_more_failures_and_a_lower_rate_keeps_the_blocker() -> None:
    signer = Provenance(verified("a.example"), "test", submitter="a.example")
    failing = genuine_report(report_id="c", successful=500, failed=500)
    # the same signer's other copy: one failure more, a billion successes
    diluted = genuine_report(report_id="c", successful=10**9, failed=501)
    before, after = evidence_before_and_after(
        [(parsed(failing), signer)], (parsed(diluted), signer), False
    )
    assert not before.ready
    assert after.sessions.failed == 501  # the copy with more failures is counted
    assert not after.ready  # and the copy above the rate still blocks


def test_a_flood_that_would_dilute_an_average_keeps_the_blocker() -> None:
    # The case an average over all reporters gets wrong: the pooled rate falls below.
    failing = stored_report(
        genuine_report(report_id="f", successful=900, failed=100), verified("a.example")
    )
    flood = stored_report(forged_success(report_id="x", successful=10**9), verified("b.example"))
    before = received_evidence([failing], POLICY_DOMAIN, NOW)
    after = received_evidence([failing, flood], POLICY_DOMAIN, NOW)
    pooled_before = before.sessions.failure_rate or 0.0
    pooled_after = after.sessions.failure_rate or 0.0
    assert pooled_before > 0.001 > pooled_after  # an average over all would fall below the rate
    assert not after.ready  # and the blocker stays


def test_a_conflicting_copy_from_outside_the_window_keeps_the_blocker() -> None:
    # Found by the property above: the same signer and report-id, the same failures,
    # another day outside the 14-day window. It must not take the report out of it.
    signer = Provenance(verified("a.example"), "test", submitter="a.example")
    inside = (NOW - timedelta(days=2)).date().isoformat()
    outside = (NOW - timedelta(days=16)).date().isoformat()
    failing = genuine_report(report_id="w", day=inside, successful=0, failed=100)
    old = genuine_report(
        report_id="w", organization="Other Org", day=outside, successful=0, failed=100
    )
    before, after = evidence_before_and_after(
        [(parsed(failing), signer)], (parsed(old), signer), False
    )
    assert not before.ready
    assert not after.ready
    assert after.sessions.failed == 100


def test_a_conflicting_copy_with_more_failures_keeps_the_days_of_policy_failures() -> None:
    # Found by the property above: the counted copy of a report changes to one with
    # more failures of another kind; the other copy's day of policy failures stays.
    signer = Provenance(verified("a.example"), "test", submitter="a.example")
    fetch_error = [{"result-type": "sts-policy-fetch-error", "failed-session-count": 1}]
    first = genuine_report(report_id="p1", day="2026-04-14", failed=1, details=fetch_error)
    second = genuine_report(report_id="p2", day="2026-04-15", failed=1, details=fetch_error)
    other = genuine_report(
        report_id="p2",
        day="2026-04-15",
        failed=2,
        details=[{"result-type": "certificate-expired", "failed-session-count": 2}],
    )
    before, after = evidence_before_and_after(
        [(parsed(first), signer), (parsed(second), signer)], (parsed(other), signer), False
    )
    policy = "reported-policy-failures"
    assert [b.code for b in before.blockers].count(policy) == 1
    assert [b.code for b in after.blockers].count(policy) == 1
