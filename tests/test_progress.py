"""Progress a person and a batch log can read: totals, percentages, ETA, status lines."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from commands import invoke

from scanner.core.inputs import Shard
from scanner.core.result import DomainResult, ErrorKind, ScanError
from scanner.files import InputReader, count_lines
from scanner.progress import StatusLines, Tally, status_text


def test_lines_are_counted_on_bytes(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a.example\nb.example\n\nc.example")  # no final newline
    assert count_lines([listing]) == 4
    assert count_lines([listing, listing]) == 8
    assert count_lines([None]) is None  # standard input: unknown


def test_a_status_line_says_done_of_total_rate_and_eta() -> None:
    tally = Tally(total=400, started=0.0)
    assert status_text(tally).startswith("status: 0/~400 (0.0 %) domains")
    assert "ETA" not in status_text(tally)  # nothing done yet: no rate to go by
    tally.done, tally.not_ready, tally.errors = 100, 30, 2
    text = status_text(tally, dns_timeouts=7)
    assert "100/~400 (25.0 %) domains" in text
    assert "ETA " in text
    assert "not ready 30, errors 2, DNS timeouts 7" in text
    tally.total, tally.exact = 100, True
    assert "100/100 (100.0 %)" in status_text(tally)
    assert "/?" in status_text(Tally())  # stdin: no total


def test_status_lines_are_written_at_start_at_intervals_and_at_the_end() -> None:
    stream = io.StringIO()
    result = DomainResult.failed(
        "a.example", ScanError(ErrorKind.EXCLUDED, "listed"), datetime.now(UTC)
    )
    with StatusLines(stream, interval=3600, total=2) as view:
        view.domain_done(result)
        view.tick()  # within the interval: nothing
        view.set_total(1, exact=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("status: 0/~2 ")
    assert lines[1].startswith("status: 1/1 (100.0 %) ")
    assert "errors 1" in lines[1]


@pytest.mark.parametrize("index", [0, 1])
def test_duplicates_are_counted_within_a_shard_only(index: int) -> None:
    shard = Shard(index, 2)
    names = [f"d{n}.example" for n in range(40)]
    reader = InputReader(shard=shard)
    taken = [reader.accept(name) for name in names + names]
    mine = [name for name in names if shard.takes(name)]
    assert [item for item in taken if item is not None] == mine
    assert reader.duplicates == len(mine)  # the second copies of this shard's domains
    assert reader.accepted == len(mine)


def test_a_scan_into_a_batch_log_prints_status_lines_with_the_total(tmp_path: Path) -> None:
    names = [f"d{n}.example" for n in range(5)]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    # Every domain excluded: error lines at once, nothing contacted.
    done = invoke(
        "scan",
        "--input",
        str(listing),
        "--exclude",
        str(listing),
        "--resolver",
        "127.0.0.1:9",
        "--workers",
        "1",
        "--out",
        str(tmp_path / "out.jsonl"),
    )
    assert done.exit_code == 0, done.stderr
    status = [line for line in done.stderr.splitlines() if line.startswith("status: ")]
    assert status[0].startswith("status: 0/~5 (0.0 %) domains")
    assert status[-1].startswith("status: 5/5 (100.0 %) domains")
    assert "errors 5" in status[-1]


def test_the_summary_speaks_in_the_right_number() -> None:
    from scanner.run import counted

    assert counted(1, "error") == "1 error"
    assert counted(0, "error") == "0 errors"
    assert counted(2, "busy reply", "busy replies") == "2 busy replies"
    assert counted(1, "process", "processes") == "1 process"
