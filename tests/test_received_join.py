"""`scanner check DOMAIN --reports DB`: one verdict from the active probe and received reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from commands import run_command
from test_received_builders import clean_report, report_dict

from scanner.lab import Lab

DOMAIN = "testing-ready.example"  # ready by the probe in the demo world


def run(*args: str) -> tuple[int, str]:
    """Exit status and output of the command in this process; with --json, stdout alone."""
    done = run_command(*args)
    if "--json" in args:
        return done.returncode, done.stdout
    return done.returncode, done.stdout + done.stderr


def database(tmp_path: Path, *reports: dict[str, object]) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    for number, report in enumerate(reports):
        (folder / f"r{number}.json").write_text(json.dumps(report), encoding="utf-8")
    db = tmp_path / "tlsrpt.sqlite"
    code, text = run("tlsrpt", "import", str(folder), "--db", str(db), "--no-progress")
    assert code == 0, text
    return db


def recent(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).date().isoformat()


def test_failures_senders_report_block_a_domain_the_probe_finds_ready(
    demo_lab_command: Lab, tmp_path: Path
) -> None:
    failing = report_dict(domain=DOMAIN, day=recent(2), successful=900, failed=100)
    db = database(tmp_path, failing)
    args = [
        "check",
        DOMAIN,
        "--timeout",
        "1",
        "--greeting-timeout",
        "1",
        *demo_lab_command.scanner_args(),
    ]
    # Reports read from files carry no DKIM: by default they do not count, and the
    # verdict is the probe's, with the received evidence shown beside it.
    code, text = run(*args, "--reports", str(db))
    assert code == 0, text
    assert "Received TLS-RPT reports" in text
    # ... and it says what it did not count: the failures those reports hold
    code, text = run(*args, "--reports", str(db), "--json")
    line = json.loads(text)
    assert line["enforce_ready"] is True
    (warning,) = [w for w in line["warnings"] if w["code"] == "reports-unverified-failures"]
    assert "not counted (not DKIM-verified) hold 100 failed of 1000 sessions" in warning["text"]
    assert "result types starttls-not-supported 200, certificate-expired 100" in warning["text"]
    code, text = run(*args, "--reports", str(db), "--include-unverified")
    assert code == 1, text
    assert "blocker: TLS-RPT:" in text
    code, text = run(*args, "--reports", str(db), "--include-unverified", "--json")
    line = json.loads(text)
    assert line["enforce_ready"] is False
    assert line["received_reports"]["failed_sessions"] == 100
    assert any(
        b["code"] == "reported-failure-rate" and b["text"].startswith("TLS-RPT:")
        for b in line["blockers"]
    )


def test_clean_reports_leave_a_ready_domain_ready(demo_lab_command: Lab, tmp_path: Path) -> None:
    db = database(tmp_path, clean_report(domain=DOMAIN, day=recent(1), successful=5000))
    code, text = run(
        "check", DOMAIN, "--timeout", "1", "--greeting-timeout", "1", *demo_lab_command.scanner_args(),
        "--reports", str(db), "--include-unverified", "--json",
    )  # fmt: skip
    assert code == 0, text
    line = json.loads(text)
    assert line["received_reports"]["successful_sessions"] == 5000
    assert line["enforce_ready"] is True


def test_a_missing_database_is_a_usage_error(demo_lab_command: Lab, tmp_path: Path) -> None:
    code, text = run(
        "check",
        DOMAIN,
        *demo_lab_command.scanner_args(),
        "--reports",
        str(tmp_path / "none.sqlite"),
    )
    assert code == 2
    assert "--reports" in text
