"""An import killed or interrupted midway leaves whole reports only, and a database that works."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from commands import invoke
from test_received_builders import report_dict

from scanner.received.store import ReportStore

REPORTS = 100
DETAILS = 150  # rows per report: a transaction big enough to be caught in the middle


def write_reports(folder: Path) -> None:
    folder.mkdir()
    details = [
        {
            "result-type": "certificate-expired",
            "sending-mta-ip": f"192.0.2.{i % 250}",
            "receiving-mx-hostname": f"mx{i}.company-y.example",
            "failed-session-count": 1,
        }
        for i in range(DETAILS)
    ]
    for number in range(REPORTS):
        report = report_dict(
            report_id=f"r{number:04d}", successful=1000, failed=DETAILS, details=details
        )
        (folder / f"r{number:04d}.json").write_text(json.dumps(report))


def start_import(folder: Path, db: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scanner",
            "tlsrpt",
            "import",
            str(folder),
            "--db",
            str(db),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stored_count(db: Path) -> int:
    try:
        connection = sqlite3.connect(db, timeout=10)
        try:
            return int(connection.execute("SELECT COUNT(*) FROM reports").fetchone()[0])
        finally:
            connection.close()
    except sqlite3.Error:
        return 0


def wait_for_reports(process: subprocess.Popen[bytes], db: Path, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while stored_count(db) < at_least:
        assert process.poll() is None, "the import ended before it could be interrupted"
        assert time.monotonic() < deadline, "the import stored nothing in 60 s"
        time.sleep(0.01)


def assert_whole_reports(db: Path) -> int:
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = connection.execute(
            "SELECT r.id, r.report_json, "
            "(SELECT COUNT(*) FROM policies p WHERE p.report_ref = r.id), "
            "(SELECT COUNT(*) FROM failure_details d JOIN policies p ON d.policy_ref = p.id WHERE p.report_ref = r.id) "
            "FROM reports r"
        ).fetchall()
        for _, text, policies, details in rows:
            report = json.loads(text)
            assert policies == len(report["policies"])
            assert details == sum(len(entry["failure-details"]) for entry in report["policies"])
        orphans = connection.execute(
            "SELECT COUNT(*) FROM policies WHERE report_ref NOT IN (SELECT id FROM reports)"
        ).fetchone()[0]
        assert orphans == 0
        return len(rows)
    finally:
        connection.close()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_interrupted_import_keeps_whole_reports_and_resumes(tmp_path: Path, how: str) -> None:
    folder, db = tmp_path / "reports", tmp_path / "tlsrpt.sqlite"
    write_reports(folder)
    process = start_import(folder, db)
    try:
        wait_for_reports(process, db, at_least=5)
        process.send_signal(getattr(signal, how))
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if how == "SIGKILL":
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 130, (stdout, stderr)
        assert b"interrupted: every report listed as imported is stored whole" in stdout
    kept = assert_whole_reports(db)
    assert 5 <= kept < REPORTS, "the import was not caught midway"

    with ReportStore.open(db) as store:  # reopening recovers (a hot journal is rolled back)
        assert len(store.reports()) == kept

    # the resumed import needs no process of its own: run in-process
    finish = invoke("tlsrpt", "import", str(folder), "--db", str(db), "--no-progress")
    assert finish.exit_code == 0, finish.stderr
    assert finish.stdout.startswith(f"{REPORTS - kept} imported"), finish.stdout
    assert f"{kept} duplicate" in finish.stdout
    assert assert_whole_reports(db) == REPORTS
