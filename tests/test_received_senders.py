"""Every real sender's report is read: the quirks of fixtures/tlsrpt/quirks/, each accepted,
noted, and counted exactly as the report's own summaries say."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_received_builders import POLICY_DOMAIN, report_dict, report_email

from scanner.received.authenticity import Authenticity, AuthMethod, AuthStatus
from scanner.received.importer import EventKind, Importer, report_id_domain
from scanner.received.intake import MediaType, Reply, accept_body
from scanner.received.items import MessageItem, PayloadItem, SourceItem
from scanner.received.mail import MessageInfo, extract_reports
from scanner.received.mailboxes import file_items
from scanner.received.records import StoredReport
from scanner.received.report import ParsedReport, parse_report_json
from scanner.received.store import ReportStore
from scanner.received.summary import summarise_domains

QUIRKS = Path(__file__).resolve().parent.parent / "fixtures" / "tlsrpt" / "quirks"
NOW = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
UNCHECKED = Authenticity(AuthStatus.NONE, AuthMethod.DKIM, "not checked in this test")


def unchecked(message: bytes, info: MessageInfo) -> Authenticity:
    return UNCHECKED


def import_items(database: Path, items: list[SourceItem]) -> Importer:
    with ReportStore.open(database) as store:
        importer = Importer(store, verify=unchecked, now=lambda: NOW)
        importer.run(items)
    return importer


def stored_reports(database: Path) -> tuple[StoredReport, ...]:
    with ReportStore.open(database, create=False) as store:
        return store.reports()


def own_summaries(report: dict[str, Any]) -> tuple[int, int]:
    """What a report's own summaries say: successful and failed sessions."""
    return (
        sum(p["summary"]["total-successful-session-count"] for p in report["policies"]),
        sum(p["summary"]["total-failure-session-count"] for p in report["policies"]),
    )


def counted(reports: tuple[StoredReport, ...], domain: str) -> tuple[int, int]:
    (summary,) = summarise_domains(reports, domain)
    return summary.sessions.successful, summary.sessions.failed


@pytest.mark.parametrize(
    ("name", "domain", "note"),
    [
        ("no-utc-offset.json", POLICY_DOMAIN, "no UTC offset in"),
        ("no-policy-domain.json", "", "policies[0].policy.policy-domain: missing"),
        ("contact-info-null.json", POLICY_DOMAIN, "contact-info: null"),
        ("misspelt-key.json", POLICY_DOMAIN, "receiving-mx-host-name: misspelt"),
    ],
    ids=["no-utc-offset", "no-policy-domain", "contact-info-null", "misspelt-key"],
)
def test_each_quirk_is_accepted_noted_and_counted(
    tmp_path: Path, name: str, domain: str, note: str
) -> None:
    path = QUIRKS / name
    importer = import_items(tmp_path / "db.sqlite", list(file_items([path])))
    assert importer.tally.count(EventKind.IMPORTED) == 1, importer.tally.notable
    (stored,) = stored_reports(tmp_path / "db.sqlite")
    assert any(note in text for text in stored.notes), stored.notes
    assert counted((stored,), domain) == own_summaries(json.loads(path.read_text()))


def test_a_time_without_offset_is_read_as_utc() -> None:
    outcome = parse_report_json((QUIRKS / "no-utc-offset.json").read_bytes())
    assert isinstance(outcome, ParsedReport)
    assert outcome.report.date_range.start == datetime(2026, 4, 5, tzinfo=UTC)
    assert outcome.report.date_range.day.isoformat() == "2026-04-05"
    # its twin with an offset is the same report, and is not noted
    with_offset = json.loads((QUIRKS / "no-utc-offset.json").read_text())
    with_offset["date-range"]["start-datetime"] += "Z"
    with_offset["date-range"]["end-datetime"] += "+00:00"
    twin = parse_report_json(json.dumps(with_offset).encode())
    assert isinstance(twin, ParsedReport)
    assert twin.content_hash == outcome.content_hash
    assert not any("offset" in text for text in twin.notes)


def test_a_misspelt_key_is_read_as_the_key_meant() -> None:
    outcome = parse_report_json((QUIRKS / "misspelt-key.json").read_bytes())
    assert isinstance(outcome, ParsedReport)
    (detail,) = outcome.report.policies[0].failure_details
    assert detail.receiving_mx_hostname == "mx1.mail.company-y.example"
    # when both spellings are there, the right one wins and nothing is noted
    both = json.loads((QUIRKS / "misspelt-key.json").read_text())
    both["policies"][0]["failure-details"][0]["receiving-mx-hostname"] = "mx2.example"
    again = parse_report_json(json.dumps(both).encode())
    assert isinstance(again, ParsedReport)
    assert again.report.policies[0].failure_details[0].receiving_mx_hostname == "mx2.example"
    assert not any("misspelt" in text for text in again.notes)


def test_contact_info_null_and_missing_are_both_noted() -> None:
    missing = report_dict(contact=None)
    null = report_dict()
    null["contact-info"] = None
    for value, said in ((missing, "contact-info: missing"), (null, "contact-info: null")):
        outcome = parse_report_json(json.dumps(value).encode())
        assert isinstance(outcome, ParsedReport)
        assert outcome.report.contact_info is None
        assert any(said in text for text in outcome.notes)
    present = parse_report_json(json.dumps(report_dict()).encode())
    assert isinstance(present, ParsedReport)
    assert not any("contact-info" in text for text in present.notes)


def test_a_policy_without_domain_is_attributed_by_the_email(tmp_path: Path) -> None:
    path = QUIRKS / "no-policy-domain.eml"
    importer = import_items(tmp_path / "db.sqlite", list(file_items([path])))
    assert importer.tally.count(EventKind.IMPORTED) == 1, importer.tally.notable
    (stored,) = stored_reports(tmp_path / "db.sqlite")
    assert stored.report.policies[0].policy.policy_domain == POLICY_DOMAIN
    assert any("attributed to company-y.example" in text for text in stored.notes)
    (found,) = extract_reports(path.read_bytes()).reports
    assert isinstance(found.outcome, ParsedReport)
    report = json.loads(found.outcome.canonical_json)
    assert counted((stored,), POLICY_DOMAIN) == own_summaries(report)


@pytest.mark.parametrize(
    ("report_id", "header", "attributed"),
    [
        ("2026-04-06T00:00:00Z_company-y.example", "company-y.example", True),
        ("133210368000000000+company-y.example", "Company-Y.example.", True),
        ("2026-04-06T00:00:00Z_other.example", "company-y.example", False),
        ("no-domain-here", "company-y.example", False),
    ],
    ids=["underscore", "plus-and-case", "other-domain", "no-domain"],
)
def test_attribution_needs_the_report_ids_domain(
    tmp_path: Path, report_id: str, header: str, attributed: bool
) -> None:
    report = report_dict(report_id=report_id)
    del report["policies"][0]["policy"]["policy-domain"]
    message = report_email(report).replace(
        b"TLS-Report-Domain: company-y.example", f"TLS-Report-Domain: {header}".encode()
    )
    import_items(tmp_path / "db.sqlite", [MessageItem("test", message, 1)])
    (stored,) = stored_reports(tmp_path / "db.sqlite")
    domain = stored.report.policies[0].policy.policy_domain
    assert domain == (POLICY_DOMAIN if attributed else "")
    if not attributed:
        assert any("no policy of the report covers" in text for text in stored.notes)


def test_report_id_domain() -> None:
    assert report_id_domain("133210368000000000+contoso.example") == "contoso.example"
    assert report_id_domain("abc@Example.COM.") == "example.com"
    assert report_id_domain("5065427c-23d3-47ca-b6e0-946ea0e8c4be") is None


def test_serve_refuses_a_policy_without_domain() -> None:
    report = report_dict()
    del report["policies"][0]["policy"]["policy-domain"]
    answer = accept_body(MediaType.JSON, json.dumps(report).encode(), frozenset({POLICY_DOMAIN}))
    assert isinstance(answer, Reply)
    assert answer.status == 403
    allowed = accept_body(
        MediaType.JSON, json.dumps(report_dict()).encode(), frozenset({POLICY_DOMAIN})
    )
    assert not isinstance(allowed, Reply)


@pytest.mark.parametrize("order", ["email-first", "file-first"])
def test_duplicates_merge_the_same_whatever_the_order(tmp_path: Path, order: str) -> None:
    report = report_dict()
    email_item = MessageItem("mail.eml", report_email(report, submitter="mail.example"), 1)
    file_item = PayloadItem("report.json", json.dumps(report).encode(), 1)
    items: list[SourceItem] = (
        [email_item, file_item] if order == "email-first" else [file_item, email_item]
    )
    failing = Authenticity(AuthStatus.FAIL, AuthMethod.DKIM, "d=mail.example: did not verify")
    with ReportStore.open(tmp_path / "db.sqlite") as store:
        importer = Importer(store, verify=lambda message, info: failing, now=lambda: NOW)
        importer.run(items)
        assert importer.tally.count(EventKind.DUPLICATE) == 1
        (stored,) = store.reports()
    assert (stored.authenticity.status, stored.submitter, stored.voucher) == (
        AuthStatus.FAIL,
        "mail.example",
        "submitter:mail.example",
    )


def test_the_quirks_folder_through_the_command_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scanner.cli import app

    runner = CliRunner()
    db = str(tmp_path / "db.sqlite")
    result = runner.invoke(app, ["tlsrpt", "import", str(QUIRKS), "--db", db])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("5 imported"), result.output
    result = runner.invoke(app, ["tlsrpt", "summary", "--db", db, "--json"])
    domains = {d["policy_domain"]: d for d in json.loads(result.output)["domains"]}
    assert set(domains) == {POLICY_DOMAIN, None}  # None: the policies without policy-domain
    assert (domains[None]["successful_sessions"], domains[None]["failed_sessions"]) == (30, 2)
    expected = [
        own_summaries(json.loads((QUIRKS / name).read_text()))
        for name in ("no-utc-offset.json", "contact-info-null.json", "misspelt-key.json")
    ]
    assert domains[POLICY_DOMAIN]["successful_sessions"] == sum(s for s, _ in expected) + 30
    assert domains[POLICY_DOMAIN]["failed_sessions"] == sum(f for _, f in expected) + 2
    table = runner.invoke(app, ["tlsrpt", "summary", "--db", db]).output
    assert "Policy domain (policies without policy-domain): 1 reports" in table
