"""Results files plain and compressed: written in whole members, read by every command,
resumed after a kill."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pytest
from commands import invoke

from scanner.files import (
    MEMBER_BYTES,
    CannotResume,
    Compression,
    MemberWriter,
    completed_domains,
    open_results,
    text_lines,
    whole_members,
)
from scanner.output import SCHEMA_VERSION


def line(domain: str) -> str:
    return json.dumps({"schema_version": SCHEMA_VERSION, "domain": domain, "error": None})


def write(path: Path, domains: list[str], *, every: int = 1) -> None:
    """Lines written as the scan writes them; a member is forced every `every` lines."""
    handle = open_results(path, "x")
    for number, domain in enumerate(domains, 1):
        handle.write(line(domain) + "\n")
        if number % every == 0 and isinstance(handle, MemberWriter):
            handle.end_member()  # what a flush does once a second has passed
    handle.close()


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_every_line_reads_back(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"scan{suffix}"
    domains = [f"d{n}.example" for n in range(50)]
    write(path, domains, every=7)
    assert [json.loads(text)["domain"] for text in text_lines(path)] == domains
    if suffix == ".jsonl.gz":
        assert gzip.decompress(path.read_bytes()).count(b"\n") == 50  # standard gzip
        assert path.read_bytes().count(b"\x1f\x8b\x08") >= 8  # one member per flush


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_killed_run_reads_to_its_last_whole_member_and_resumes(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"scan{suffix}"
    domains = [f"d{n}.example" for n in range(30)]
    write(path, domains, every=10)
    whole = path.read_bytes()
    compression = Compression.GZIP if suffix.endswith("gz") else Compression.ZSTD
    with path.open("rb") as handle:
        ends = [end for _, end in whole_members(handle, compression)]
    assert ends[-1] == len(whole)
    # A kill in the middle of the third member.
    path.write_bytes(whole[: (ends[1] + ends[2]) // 2])
    assert [json.loads(t)["domain"] for t in text_lines(path)] == domains[:20]
    assert completed_domains(path) == set(domains[:20])
    assert path.stat().st_size == ends[1]  # cut back to the last whole member
    handle = open_results(path, "a")
    handle.write(line("again.example") + "\n")
    handle.close()
    assert [json.loads(t)["domain"] for t in text_lines(path)] == [*domains[:20], "again.example"]


def test_a_member_is_written_when_enough_is_buffered(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl.gz"
    handle = open_results(path, "x")
    handle.write("x" * (MEMBER_BYTES + 1) + "\n")
    handle.flush()  # due by size, whatever the time
    assert path.stat().st_size > 0
    handle.close()


def test_duckdb_reads_a_multi_member_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "scan.jsonl.gz"
    write(path, [f"d{n}.example" for n in range(12)], every=5)
    rows = duckdb.sql(
        f"SELECT count(*) FROM read_json('{path}', format = 'newline_delimited')"
    ).fetchall()
    assert rows == [(12,)]


def test_stats_diff_and_report_read_a_compressed_scan(tmp_path: Path) -> None:
    plain = tmp_path / "scan.jsonl"
    domains = [f"d{n}.example" for n in range(4)]
    plain.write_text("".join(line(d) + "\n" for d in domains), encoding="utf-8")
    packed = tmp_path / "scan.jsonl.gz"
    write(packed, domains, every=2)

    stats = invoke("stats", str(packed), "--json", "--force")
    assert stats.exit_code == 0, stats.stderr
    assert json.loads(stats.stdout)["domains"] == 4
    diff = invoke("diff", str(plain), str(packed), "--json", "--force")
    assert diff.exit_code == 0, diff.stderr
    assert json.loads(diff.stdout)["changes"] == []
    report = invoke("report", str(packed), "--out-dir", str(tmp_path / "reports"))
    assert report.exit_code == 0, report.stderr
    assert "4 lines without a report skipped" in report.stderr


def test_a_scan_writes_and_resumes_a_compressed_file(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"d{n}.example\n" for n in range(6)), encoding="utf-8")
    out = tmp_path / "scan.jsonl.gz"
    # Every domain excluded: an error line each at once, nothing contacted.
    common = ["--exclude", str(listing), "--resolver", "127.0.0.1:9", "--no-progress"]
    first = invoke("scan", "d0.example", "d1.example", "--out", str(out), *common)
    assert first.exit_code == 0, first.stderr
    assert [json.loads(t)["domain"] for t in text_lines(out)] == ["d0.example", "d1.example"]
    again = invoke("scan", "--input", str(listing), "--out", str(out), "--resume", *common)
    assert again.exit_code == 0, again.stderr
    assert "2 resumed" in again.stderr
    assert sorted(json.loads(t)["domain"] for t in text_lines(out)) == [
        f"d{n}.example" for n in range(6)
    ]
    assert gzip.decompress(out.read_bytes()).count(b"\n") == 6


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_file_named_compressed_that_is_not_is_read_as_nothing_and_never_cut(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"scan{suffix}"
    content = line("plain.example").encode() + b"\n"
    path.write_bytes(content)  # named compressed, is not
    assert list(text_lines(path)) == []
    with pytest.raises(CannotResume, match="does not start as"):
        completed_domains(path)
    assert path.read_bytes() == content  # nothing lost
    # A member torn at its start is still cut back.
    whole = tmp_path / f"torn{suffix}"
    write(whole, ["a.example"])
    whole.write_bytes(whole.read_bytes()[:5])
    assert completed_domains(whole) == set()
    assert whole.stat().st_size == 0
