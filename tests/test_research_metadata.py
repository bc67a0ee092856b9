"""Scan metadata: the sidecar `scanner scan` writes, and the rules that refuse a comparison."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from commands import run_command

from scanner.core.inputs import InputFormat, Shard
from scanner.options import network_options
from scanner.research.metadata import (
    Comparison,
    FileMetadata,
    InputList,
    MetadataError,
    ScanMetadata,
    Severity,
    VantageSight,
    comparison_problems,
    input_list,
    metadata_json,
    metadata_path,
    parse_metadata,
    read_metadata,
    recorded_scan,
    vantage_problem,
    write_metadata,
)

START = datetime(2026, 11, 28, 4, tzinfo=UTC)


def sample(**changes: object) -> ScanMetadata:
    metadata = ScanMetadata(
        scanner_version="0.1.0",
        started_at=START,
        finished_at=START + timedelta(hours=5),
        vantage="eu-1",
        public_addresses=("198.51.100.7",),
        resolver="system",
        nameservers=("192.0.2.53",),
        ehlo_name="scanner.example.org",
        input=InputList("top-1m.csv", "2026-11-27", "ab" * 32, "csv"),
        options={"timeout": 10.0, "shard": "0/8"},
        runs=(),
    )
    return replace(metadata, **changes)  # type: ignore[arg-type]


def files(*metadata: ScanMetadata | None) -> list[FileMetadata]:
    return [FileMetadata(f"scan{index}.jsonl", m) for index, m in enumerate(metadata)]


def test_metadata_round_trips(tmp_path: Path) -> None:
    results = tmp_path / "scan.jsonl"
    write_metadata(results, sample())
    assert metadata_path(results).name == "scan.jsonl.meta.json"
    assert read_metadata(results) == sample()
    assert read_metadata(tmp_path / "other.jsonl") is None


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        json.dumps({"format": "something-else", "format_version": 1}),
        json.dumps({**metadata_json(sample()), "format_version": 2}),
        json.dumps({**metadata_json(sample()), "started_at": "yesterday"}),
        json.dumps({**metadata_json(sample()), "vantage": {"name": "<img src=x>"}}),
    ],
    ids=["not-json", "other-format", "other-version", "bad-time", "bad-vantage"],
)
def test_unusable_sidecars_are_errors(document: str, tmp_path: Path) -> None:
    results = tmp_path / "scan.jsonl"
    metadata_path(results).write_text(document, encoding="utf-8")
    with pytest.raises(MetadataError):
        read_metadata(results)


def test_fields_of_odd_shapes_read_as_absent() -> None:
    document = {
        **metadata_json(sample()),
        "input": "top-1m.csv",
        "runs": "many",
        "options": {"x": {"y": 1}},
    }
    parsed = parse_metadata(document)
    assert parsed.input is None
    assert parsed.runs == ()
    assert parsed.options["x"] == '{"y": 1}'


@pytest.mark.parametrize(
    ("comparison", "other", "severity", "what"),
    [
        (Comparison.TIME_DIFF, sample(vantage="us-1"), Severity.REFUSE, "vantage"),
        (Comparison.TIME_DIFF, sample(ehlo_name="other.example.org"), Severity.REFUSE, "EHLO name"),
        (Comparison.TIME_DIFF, sample(nameservers=("203.0.113.53",)), Severity.WARN, "resolver"),
        (Comparison.TIME_DIFF, sample(input=InputList("other.csv", None, None, "csv")), None, None),
        (
            Comparison.STATS_OVER_TIME,
            sample(input=InputList("other.csv", None, None, "csv")),
            Severity.REFUSE,
            "input list",
        ),
        (Comparison.STATS_OVER_TIME, sample(vantage="us-1"), Severity.REFUSE, "vantage"),
        (Comparison.STATS_COMBINED, sample(vantage="us-1"), Severity.WARN, "vantage"),
        (
            Comparison.STATS_COMBINED,
            sample(input=InputList("top-1m.csv", "2026-11-28", None, "csv")),
            Severity.WARN,
            "input list date",
        ),
        (Comparison.VANTAGE_DIFF, sample(vantage="us-1"), None, None),
        (
            Comparison.VANTAGE_DIFF,
            sample(vantage="us-1", ehlo_name="x.example.org"),
            Severity.REFUSE,
            "EHLO name",
        ),
        (
            Comparison.STATS_OVER_TIME,
            sample(scanner_version="0.2.0"),
            Severity.WARN,
            "scanner version",
        ),
        (Comparison.TIME_DIFF, sample(), None, None),
    ],
    ids=[
        "diff-vantage",
        "diff-ehlo",
        "diff-resolver",
        "diff-other-list-is-fine",
        "trend-other-list",
        "trend-vantage",
        "shards-vantage",
        "shards-list-date",
        "vantages-differ-by-design",
        "vantages-ehlo",
        "version",
        "identical",
    ],
)
def test_soundness_rules(
    comparison: Comparison, other: ScanMetadata, severity: Severity | None, what: str | None
) -> None:
    problems = comparison_problems(comparison, files(sample(), other))
    if severity is None:
        assert problems == []
    else:
        assert [(p.severity, p.text.split(" differs")[0]) for p in problems] == [(severity, what)]


def test_files_without_sidecar_are_compared_unchecked() -> None:
    problems = comparison_problems(Comparison.TIME_DIFF, files(sample(), None))
    assert [p.severity for p in problems] == [Severity.WARN]
    assert "no .meta.json sidecar" in problems[0].text


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("eu-1", True),
        ("k8s.eu_west-2", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("-x", False),
        ("<b>", False),
        ("", False),
    ],
)
def test_vantage_names(name: str, ok: bool) -> None:
    assert (vantage_problem(name) is None) is ok


def test_recorded_scan_writes_before_and_after_and_resume_appends(tmp_path: Path) -> None:
    results = tmp_path / "scan.jsonl"
    listing = tmp_path / "tranco.csv"
    listing.write_text("1,example.com\n", encoding="utf-8")
    network = network_options(ehlo_name="scanner.example.org", resolver=["192.0.2.53"])
    times = iter(
        [
            START,
            START + timedelta(hours=1),
            START + timedelta(days=1),
            START + timedelta(days=1, hours=1),
        ]
    )

    def record(resume: bool) -> None:
        with recorded_scan(
            results,
            network,
            vantage="eu-1",
            inputs=[listing],
            input_format=InputFormat.CSV,
            shard=Shard(0, 2),
            resume=resume,
            clock=lambda: next(times),
            addresses=lambda: ("198.51.100.7",),
        ) as started:
            during = read_metadata(results)
            assert during is not None
            assert during.finished_at is None  # written before the scan: a crash keeps a record
            assert started.vantage == "eu-1"

    record(resume=False)
    first = read_metadata(results)
    assert first is not None
    assert first.finished_at == START + timedelta(hours=1)
    assert first.input is not None
    assert first.input.name == "tranco.csv"
    assert first.input.format == "csv"
    assert first.nameservers == ("192.0.2.53:53",)
    assert first.options["shard"] == "0/2"
    assert first.public_addresses == ("198.51.100.7",)
    record(resume=True)
    second = read_metadata(results)
    assert second is not None
    assert second.started_at == START  # the first run's start
    assert second.finished_at == START + timedelta(days=1, hours=1)
    assert [run.started_at for run in second.runs] == [START, START + timedelta(days=1)]


def test_an_unwritable_sidecar_costs_a_warning_not_the_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "missing-dir" / "scan.jsonl"
    network = network_options(ehlo_name="scanner.example.org")
    with recorded_scan(
        results,
        network,
        vantage=None,
        inputs=[],
        input_format=InputFormat.AUTO,
        shard=None,
        resume=False,
        addresses=tuple,
    ):
        pass
    assert "scan metadata" in capsys.readouterr().err


def test_input_list_of_stdin_and_arguments(tmp_path: Path) -> None:
    assert input_list([], InputFormat.AUTO) is None
    assert input_list([None], InputFormat.LINES) == InputList("-", None, None, "lines")


def run_scan(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`scanner scan ARGS` in this process, with the batch systems' variables as given."""
    batch = {k: None for k in os.environ if k.startswith(("SLURM_", "JOB_COMPLETION_INDEX"))}
    return run_command("scan", *args, "--no-progress", env={**batch, **environ})


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        (("--shard", "auto"), {}, "neither JOB_COMPLETION_INDEX"),
        (("--shard", "auto"), {"JOB_COMPLETION_INDEX": "2"}, "give --shard auto/N"),
        (
            ("--shard", "auto"),
            {
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "9",
                "SLURM_ARRAY_TASK_STEP": "1",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            "sparse",
        ),
        (("--vantage", "eu 1"), {}, "not a vantage name"),
        (("--input-format", "tsv"), {}, "tsv"),
    ],
    ids=[
        "auto-without-batch-system",
        "k8s-without-count",
        "slurm-sparse",
        "bad-vantage",
        "bad-format",
    ],
)
def test_scan_usage_errors(
    args: tuple[str, ...], environ: dict[str, str], message: str, tmp_path: Path
) -> None:
    done = run_scan(
        "example.com",
        "--out",
        str(tmp_path / "out.jsonl"),
        *args,
        environ=environ,
    )
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())
    assert not (tmp_path / "out.jsonl").exists()


OPEN_V6 = VantageSight(port25="open", ipv6_route=True, validating_resolver=True)


@pytest.mark.parametrize(
    ("other", "what"),
    [
        (replace(OPEN_V6, port25="blocked"), "outbound port 25 of the scanning host differs"),
        (replace(OPEN_V6, port25="throttled"), "outbound port 25 of the scanning host differs"),
        (replace(OPEN_V6, ipv6_route=False), "IPv6 route of the scanning host differs"),
        (replace(OPEN_V6, validating_resolver=False), "validating resolver differs"),
    ],
    ids=["port25", "port25-throttled", "ipv6", "validating"],
)
@pytest.mark.parametrize("comparison", list(Comparison), ids=lambda c: c.value)
def test_files_from_hosts_that_saw_differently_are_warned_about(
    other: VantageSight, what: str, comparison: Comparison
) -> None:
    problems = comparison_problems(comparison, files(sample(sight=OPEN_V6), sample(sight=other)))
    assert [p.severity for p in problems if what in p.text] == [Severity.WARN]
    # The twin: the same sight, or a file that does not record it, is no warning.
    for same in (OPEN_V6, VantageSight()):
        quiet = comparison_problems(comparison, files(sample(sight=OPEN_V6), sample(sight=same)))
        assert not [p for p in quiet if "scanning host" in p.text or "validating" in p.text]


def test_the_sight_and_the_doctor_round_trip(tmp_path: Path) -> None:
    results = tmp_path / "scan.jsonl"
    doctor = {"at": "2026-11-28T04:00:00Z", "findings": [{"check": "port25", "verdict": "ok"}]}
    metadata = sample(sight=replace(OPEN_V6, doctor=doctor))
    write_metadata(results, metadata)
    assert read_metadata(results) == metadata
    vantage = json.loads(metadata_path(results).read_text(encoding="utf-8"))["vantage"]
    assert vantage["port25"] == "open"
    assert vantage["ipv6_route"] is True
    assert vantage["doctor"] == doctor


def test_a_throttled_host_and_its_rates_round_trip(tmp_path: Path) -> None:
    from scanner.core.egress import ConnectRate, Decision, Egress, RateComparison
    from scanner.run import port25_word, rates_json

    rates = RateComparison(ConnectRate(10, 50), ConnectRate(3, 3), throttled=True)
    decision = Decision(Egress.OPEN, rates=rates)
    assert port25_word(decision) == "throttled"
    results = tmp_path / "scan.jsonl"
    sight = replace(OPEN_V6, port25=port25_word(decision), port25_rates=rates_json(rates))
    write_metadata(results, sample(sight=sight))
    assert read_metadata(results) == sample(sight=sight)
    vantage = json.loads(metadata_path(results).read_text(encoding="utf-8"))["vantage"]
    assert vantage["port25"] == "throttled"
    assert vantage["port25_rates"] == {
        "domains": {"connected": 10, "attempts": 60},
        "canaries": {"connected": 3, "attempts": 6},
        "throttled": True,
    }
    not_throttled = replace(rates, throttled=False)  # the canaries connect: dead hosts
    assert port25_word(Decision(Egress.OPEN, rates=not_throttled)) == "open"
