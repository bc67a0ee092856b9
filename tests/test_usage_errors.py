"""Bad arguments are a one-line usage error (exit 2) before any work: no traceback, no
table printed, no file written, no lab started."""

from __future__ import annotations

from pathlib import Path

import pytest
from commands import invoke

RESULT_LINE = '{"schema_version": 3, "domain": "example.com"}\n'


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "foreign.jsonl").write_text('{"x": 1}\n' * 3, encoding="utf-8")
    (tmp_path / "text.txt").write_text("example.com\nexample.org\n", encoding="utf-8")
    (tmp_path / "results.jsonl").write_text(RESULT_LINE, encoding="utf-8")
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    (tmp_path / "a-dir").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("stats", "foreign.jsonl"), "foreign.jsonl is not a results file"),
        (("stats", "results.jsonl", "text.txt"), "text.txt is not a results file"),
        (("diff", "results.jsonl", "foreign.jsonl"), "foreign.jsonl is not a results file"),
        (("diff", "--vantage", "text.txt", "results.jsonl"), "text.txt is not a results file"),
        (("report", "--out-dir", "reports", "text.txt"), "text.txt is not a results file"),
        (("stats", "--csv", "a-file", "results.jsonl"), "--csv a-file: not a directory"),
        (("stats", "--html", "a-file/page.html", "results.jsonl"), "--html a-file: not a dir"),
    ],
    ids=[
        "stats-foreign",
        "stats-text",
        "diff-foreign",
        "diff-vantage-text",
        "report-text",
        "stats-csv-file",
        "stats-html-under-file",
    ],
)
def test_research_commands_refuse_before_reading(
    files: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], says: str
) -> None:
    monkeypatch.chdir(files)
    done = invoke(*args)
    assert done.exit_code == 2, done.output
    assert done.stdout == ""  # no table printed first
    assert done.stderr.startswith("error: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert says in done.stderr
    assert not (files / "reports").exists()


def test_a_file_with_no_line_still_reads_as_an_empty_scan(files: Path) -> None:
    (files / "empty.jsonl").write_text("\n", encoding="utf-8")
    done = invoke("stats", str(files / "empty.jsonl"), "--json")
    assert done.exit_code == 0, done.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("demo", "--out", "a-file/demo.jsonl"), "Invalid value for --out"),
        (("demo", "--out", "a-dir"), "Is a directory"),
        (("lab", "serve", "missing.toml"), "cannot read world file"),
        (("lab", "serve", "text.txt"), "not valid TOML"),
        (("lab", "serve", "--workdir", "a-file"), "Invalid value for --workdir"),
        (("check", "--timeout", "inf", "example.invalid"), "--timeout"),
        (("check", "--timeout", "3601", "example.invalid"), "less than or equal to 3600"),
        (("scan", "--greeting-timeout", "inf", "-o", "out.jsonl", "x.invalid"), "--greeting"),
        (("scan", "--out", "a-file/out.jsonl", "x.invalid"), "a-file is not a directory"),
        (("doctor", "--results", "results.jsonl"), "results.jsonl.meta.json not found"),
    ],
    ids=[
        "demo-out-under-file",
        "demo-out-dir",
        "lab-missing-world",
        "lab-bad-world",
        "lab-workdir-file",
        "check-timeout-inf",
        "check-timeout-too-long",
        "scan-greeting-inf",
        "scan-out-under-a-file",
        "doctor-results-without-sidecar",
    ],
)
def test_usage_errors_before_any_work(
    files: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], says: str
) -> None:
    monkeypatch.chdir(files)
    done = invoke(*args)  # an unhandled exception would be raised here
    assert done.exit_code == 2, done.output
    assert says in " ".join(done.output.replace("│", " ").split())
    assert not (files / "results").exists()
    assert not (files / "out.jsonl").exists()
