"""`scanner tlsrpt import|summary|sources` end to end on files, through the real command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_received_builders import mbox, report_dict, report_email
from typer.testing import CliRunner

from scanner.cli import app
from scanner.received.store import ReportStore

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tlsrpt"
# The fixtures but quirks/ (real senders' quirks, tests/test_received_senders.py)
BASE_FIXTURES = sorted(str(path) for path in FIXTURES.iterdir() if path.name != "quirks")
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_importing_the_fixture_folder(tmp_path: Path) -> None:
    db = tmp_path / "tlsrpt.sqlite"
    code, output = invoke("tlsrpt", "import", *BASE_FIXTURES, "--db", str(db))
    assert code == 0, output
    assert output.startswith(
        "10 imported (authenticity: none 10), 1 duplicate, 0 conflicting, 1 rejected, 3 skipped (no report), 0 unreadable"
    )
    assert "rejected: " in output
    assert "mailbox.mbox message 4 part 2 (application/tlsrpt+gzip" in output
    assert "the report is not JSON" in output
    code, again = invoke("tlsrpt", "import", *BASE_FIXTURES, "--db", str(db))
    assert code == 0
    assert again.startswith("0 imported, 11 duplicate, 0 conflicting, 1 rejected")
    with ReportStore.open(db) as store:
        assert len(store.reports()) == 10
        assert store.destinations() == {"mailto:tlsrpt@company-y.example"}


def test_summary_json_and_table(tmp_path: Path) -> None:
    db = tmp_path / "tlsrpt.sqlite"
    invoke("tlsrpt", "import", *BASE_FIXTURES, "--db", str(db))
    code, output = invoke("tlsrpt", "summary", "--db", str(db), "--json")
    assert code == 0
    document = json.loads(output)
    (domain,) = document["domains"]
    assert domain["policy_domain"] == "company-y.example"
    assert domain["reports"] == 10
    assert (
        domain["successful_sessions"]
        == 5326 + 48211 + 1200 + 5326 + 6100 + 830 + 77 + 15 + 5400 + 310
    )
    assert domain["failed_sessions"] == 303 + 2 + 303 + 4
    assert domain["failures_by_result_type"]["sts-policy-fetch-error"] == 4
    assert {o["organization"] for o in domain["organizations"]} >= {
        'file ("Company-X")',
        'unverified reporter.example ("Company-X")',
        'file ("Mail Provider B")',
    }
    assert domain["summary_disagreements"] == 1
    code, output = invoke(
        "tlsrpt",
        "summary",
        "--db",
        str(db),
        "--since",
        "2026-04-05",
        "--until",
        "2026-04-06",
        "--json",
    )
    assert [day["day"] for day in json.loads(output)["domains"][0]["days"]] == [
        "2026-04-05",
        "2026-04-06",
    ]
    code, table = invoke("tlsrpt", "summary", "--db", str(db), "--domain", "company-y.example")
    assert code == 0
    assert "Policy domain company-y.example: 10 reports" in table
    assert "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED" in table
    assert "Per day" in table
    code, output = invoke("tlsrpt", "summary", "--db", str(db), "--domain", "nobody.example")
    assert code == 0
    assert "no reports match" in output


def test_sources_json_and_table(tmp_path: Path) -> None:
    db = tmp_path / "tlsrpt.sqlite"
    invoke("tlsrpt", "import", *BASE_FIXTURES, "--db", str(db))
    code, output = invoke("tlsrpt", "sources", "--db", str(db), "--json")
    assert code == 0
    document = json.loads(output)
    company_x = next(
        o
        for o in document["organizations"]
        if o["organization"] == 'unverified reporter.example ("Company-X")'
    )
    assert company_x["reports"] == 3  # and a fourth as a file, which nobody vouches for
    assert company_x["first_report"] == "2026-04-04T00:00:00Z"
    assert company_x["submitters"] == ["reporter.example"]
    assert document["sending_ips"][0] == {
        "sending_mta_ip": "2001:db8:abcd:13::1",
        "failed_sessions": 400,
        "failures_by_result_type": {"starttls-not-supported": 400},
        "organizations": ['file ("Company-X")', 'unverified reporter.example ("Company-X")'],
    }
    code, table = invoke("tlsrpt", "sources", "--db", str(db))
    assert "Reporting organizations" in table
    assert "sending-mta-ip only in failure-details" in table


def test_reading_commands_need_a_database(tmp_path: Path) -> None:
    code, output = invoke("tlsrpt", "summary", "--db", str(tmp_path / "none.sqlite"))
    assert code == 2
    assert "no database at" in output
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tlsrpt", "import"], "give report files or folders, or --imap URL"),
        (["tlsrpt", "import", "/nonexistent/reports"], "no such file or folder"),
        (["tlsrpt", "import", "--imap", "imap://u@h/INBOX"], "plain imap:// is refused"),
        (
            ["tlsrpt", "import", "--imap", "imaps://u:secret@h/INBOX"],
            "a password in the URL is refused",
        ),
        (["tlsrpt", "import", "--imap", "imaps://u@127.0.0.1/INBOX"], "--imap needs a password"),
        (["tlsrpt", "summary", "--since", "April"], "give a date as YYYY-MM-DD"),
        (["tlsrpt", "import", ".", "--resolver", "not-an-ip"], "invalid resolver"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    code, output = invoke(*args, "--db", str(tmp_path / "db.sqlite"))
    assert code == 2
    assert message in output


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("imaps://u:secret@h/INBOX", "imaps://u:***@h/INBOX"),
        ("imaps://u:se:cr@et@h:993/INBOX", "imaps://u:***@h:993/INBOX"),
        ("IMAPS://u%40x:secret@h", "IMAPS://u%40x:***@h"),
        ("imaps://u:secret@h:x/INBOX", "imaps://u:***@h:x/INBOX"),
    ],
)
def test_a_password_in_an_imap_url_is_never_printed(tmp_path: Path, url: str, shown: str) -> None:
    code, output = invoke("tlsrpt", "import", "--imap", url, "--db", str(tmp_path / "db.sqlite"))
    assert code == 2
    assert "secret" not in output
    assert "cr@et" not in output
    assert shown in output


def test_a_stored_row_that_no_longer_parses_is_named_and_skipped(tmp_path: Path) -> None:
    """A row as an earlier receiver wrote it from `1e999999` in an unknown key: every view
    still works, counts the other reports and names the row."""
    import sqlite3

    db = tmp_path / "db.sqlite"
    invoke("tlsrpt", "import", *BASE_FIXTURES, "--db", str(db))
    connection = sqlite3.connect(db)
    connection.execute(
        "UPDATE reports SET report_json = substr(report_json, 1, length(report_json) - 1) "
        "|| ',\"x\":Infinity}' WHERE id = 2"
    )
    connection.commit()
    connection.close()
    for command in (["summary"], ["sources"], ["summary", "--json"], ["sources", "--json"]):
        code, output = invoke("tlsrpt", *command, "--db", str(db))
        assert code == 0, output
        assert "warning: stored report 2 (" in output
        assert "skipped: its JSON no longer parses (the report is not JSON: Infinity" in output
    code, output = invoke("tlsrpt", "summary", "--json", "--db", str(db))
    lines = output.splitlines()
    document = "\n".join(lines[lines.index("{") :])  # after the warning, on stderr
    assert json.loads(document)["domains"][0]["reports"] == 9


def test_hostile_text_is_shown_inert(tmp_path: Path) -> None:
    hostile = "\x1b]0;pwned\x07[bold red]Ready[/] :white_check_mark: \u202eevil"
    report = report_dict(
        organization=hostile,
        report_id="\x1b[2J",
        details=[
            {
                "result-type": "[blink]x[/]\x1b[31m",
                "receiving-mx-hostname": "mx.\x1b[1m.example",
                "failed-session-count": 303,
                "failure-reason-code": "\u2028line\u2029split",
                "sending-mta-ip": "192.0.2.1",
            },
        ],
    )
    path = tmp_path / "evil.eml"
    path.write_bytes(report_email(report))
    db = tmp_path / "db.sqlite"
    code, output = invoke("tlsrpt", "import", str(path), "--db", str(db))
    assert code == 0
    assert output.startswith("1 imported")
    for command in (["summary"], ["sources"]):
        code, output = invoke("tlsrpt", *command, "--db", str(db))
        assert code == 0
        assert "\x1b" not in output
        assert "\x07" not in output
        assert "\u202e" not in output
        assert "\u2028" not in output
        assert "\\x1b]0;pwned\\x07[bold red]Ready[/] :white_check_mark:" in output
    code, output = invoke("tlsrpt", "summary", "--db", str(db), "--json")
    assert "\u202e" not in output
    assert "\u2028" not in output
    assert "\x1b" not in output
    assert (
        json.loads(output)["domains"][0]["organizations"][0]["organization"]
        == f'unverified reporter.example ("{hostile}")'
    )  # lossless


def test_a_good_report_survives_a_bad_mailbox_neighbour(tmp_path: Path) -> None:
    good = report_email(report_dict(report_id="good"))
    box = tmp_path / "box.mbox"
    box.write_bytes(
        mbox(
            [
                b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\xff\xfe garbage",
                good,
                report_email(b"\x00\x01 not json"),
            ]
        )
    )
    db = tmp_path / "db.sqlite"
    code, output = invoke("tlsrpt", "import", str(box), "--db", str(db))
    assert code == 0
    assert output.startswith("1 imported")
    assert "1 rejected" in output


def test_destination_option_is_recorded_for_files(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    shutil.copy(FIXTURES / "https-post.json.gz", tmp_path / "post.json.gz")
    invoke(
        "tlsrpt",
        "import",
        str(tmp_path / "post.json.gz"),
        "--db",
        str(db),
        "--destination",
        "HTTPS://Reports.Company-Y.example/tlsrpt",
    )
    with ReportStore.open(db) as store:
        assert store.destinations() == {"https://reports.company-y.example/tlsrpt"}
