"""End to end: the `scanner` command against the fixture lab's worlds.

Most tests run the command in-process (`commands.invoke`, with the lab in a thread
of its own); the tests of what only a process shows (Ctrl-C, several runs at once)
run it as a real subprocess (`python -m scanner ...`), exactly as a user runs it,
with the lab in the test's trio loop. Tests of the scan itself (verdicts, the
per-address limit) run the scanner in the test's loop on virtual time.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from commands import invoke, line_count, line_validator, process_of
from rich.console import Console
from trio.testing import MockClock

from scanner.core.result import DomainResult
from scanner.files import InputReader
from scanner.lab import Lab, World
from scanner.lab.demo import render_demo_summary, scan_world
from scanner.lab.expectations import mismatches
from scanner.options import build_scanner, network_options

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
STEP_TIMEOUT = "1"


def lab_options(lab: Lab) -> list[str]:
    """The step and greeting deadlines of these tests, and the options that aim at `lab`."""
    return ["--timeout", STEP_TIMEOUT, "--greeting-timeout", STEP_TIMEOUT, *lab.scanner_args()]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_scan_of_demo_world_reaches_every_expected_verdict(
    demo_lab: Lab, demo_world: World, loopback_clock: MockClock
) -> None:
    """The typed results meet every expectation, and the lines written for them validate."""
    options = network_options(
        resolver=[f"{demo_lab.resolver[0]}:{demo_lab.resolver[1]}"],
        ca_file=[demo_lab.ca_file],
        allow_private=True,
        timeout=float(STEP_TIMEOUT),
        greeting_timeout=float(STEP_TIMEOUT),  # the lab greets at once or never
        concurrency=20,
        smtp_port=demo_lab.smtp_port,
        https_port=demo_lab.https_port,
    )
    scanner = build_scanner(options)
    written: list[dict[str, Any]] = []
    results: list[DomainResult] = []

    class Collect:
        def domain_done(self, result: DomainResult) -> None:
            results.append(result)

    async def items() -> AsyncIterator[str]:
        for name in demo_world.domain_names:
            yield name

    await scanner.run(
        InputReader().stream(items()),
        lambda text: written.append(json.loads(text)),
        progress=Collect(),
    )
    assert len(results) == len(written) == len(demo_world.domains)  # one line per input domain
    validator = line_validator()
    for line, result in zip(written, results, strict=True):
        validator.validate(line)
        assert (line["domain"], line["enforce_ready"]) == (result.domain, result.enforce_ready)
    by_domain = {result.domain: result for result in results}
    failures = {}
    for domain in demo_world.domains:
        found = by_domain.get(domain.name) or by_domain.get(domain.name.strip())
        assert found is not None, domain.name  # an invalid name is reported under its input text
        assert domain.expect is not None
        problems = mismatches(found, domain.expect)
        if problems:
            failures[domain.name] = problems
    assert failures == {}


def test_check_exit_codes_and_verdict(demo_lab_command: Lab) -> None:
    ready = invoke(
        "check",
        "testing-ready.example",
        *lab_options(demo_lab_command),
    )
    assert ready.exit_code == 0, ready.stdout + ready.stderr
    assert "Ready for mode: enforce" in ready.stdout

    not_ready = invoke(
        "check",
        "backup-bad.example",
        *lab_options(demo_lab_command),
    )
    assert not_ready.exit_code == 1
    text = not_ready.stdout
    assert "Not ready" in text
    assert "mx2.backup-bad.example" in text  # the blocker names the bad backup MX

    invalid = invoke("check", "invalid..example", *demo_lab_command.scanner_args())
    assert invalid.exit_code == 2
    assert "invalid-domain" in invalid.stdout


def test_report_writes_one_rfc8460_file_per_domain(demo_lab_command: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    scanned = invoke(
        "scan",
        "testing-ready.example",
        "backup-bad.example",
        "invalid..example",
        "--out",
        str(out),
        "--no-progress",
        "--contact",
        "tlsrpt@reporter.example",
        *lab_options(demo_lab_command),
    )
    assert scanned.exit_code == 0, scanned.stderr
    reports = tmp_path / "reports"
    result = invoke("report", str(out), "--out-dir", str(reports), "--gzip")
    assert result.exit_code == 0, result.stderr
    names = sorted(path.name for path in reports.iterdir())
    assert len(names) == 2  # the invalid name has no report
    pattern = re.compile(
        r"^reporter\.example!(backup-bad|testing-ready)\.example!\d+!\d+\.json\.gz$"
    )
    assert all(pattern.match(name) for name in names), names
    import gzip

    backup = json.loads(gzip.decompress(next(reports.glob("*backup-bad*")).read_bytes()))
    policy = backup["policies"][0]
    assert policy["policy"]["policy-type"] == "sts"
    assert policy["summary"]["total-failure-session-count"] == 1
    assert policy["summary"]["total-successful-session-count"] == 1
    assert {d["result-type"] for d in policy["failure-details"]} == {"certificate-expired"}


def test_input_lines_are_normalised_deduplicated_and_invalid_ones_recorded(
    bulk_lab_command: Lab, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    stdin = b"# comment\n\n  Hosted0.Example.  \nhosted0.example\nhosted1.example\nnot a domain\n"
    result = invoke(
        "scan",
        "--input",
        "-",
        "--out",
        str(out),
        "--no-progress",
        "--workers",
        "1",  # the parent reads the input, with worker processes or without
        *lab_options(bulk_lab_command),
        stdin=stdin,
    )
    assert result.exit_code == 0, result.stderr
    lines = read_jsonl(out)
    assert sorted(line["domain"] for line in lines) == [
        "hosted0.example",
        "hosted1.example",
        "not a domain",
    ]
    invalid = next(line for line in lines if line["domain"] == "not a domain")
    assert invalid["error"].startswith("invalid-domain")
    assert invalid["mx"] == []


def test_probe_cache_one_connection_per_address(
    bulk_lab_command: Lab, bulk_world: World, tmp_path: Path
) -> None:
    hosted = [name for name in bulk_world.domain_names if name.startswith("hosted")]
    out = tmp_path / "out.jsonl"
    result = invoke(
        "scan",
        *hosted,
        "--out",
        str(out),
        "--no-progress",
        "--concurrency",
        "16",
        *lab_options(bulk_lab_command),
    )
    assert result.exit_code == 0, result.stderr
    lines = read_jsonl(out)
    assert len(lines) == len(hosted)
    for line in lines:  # every domain got the shared result
        assert [a["starttls"] for mx in line["mx"] for a in mx["addresses"]] == [
            "offered",
            "offered",
        ]
    assert bulk_lab_command.smtp_connections("127.0.3.1") == 1
    assert bulk_lab_command.smtp_connections("127.0.3.2") == 1


@pytest.mark.parametrize("per_ip", [1, 3])
async def test_per_ip_limit_is_honoured(
    bulk_lab: Lab, bulk_world: World, per_ip: int, loopback_clock: MockClock
) -> None:
    slow = [name for name in bulk_world.domain_names if name.startswith("slow")]
    scanner = build_scanner(
        network_options(
            resolver=[f"{bulk_lab.resolver[0]}:{bulk_lab.resolver[1]}"],
            ca_file=[bulk_lab.ca_file],
            allow_private=True,
            timeout=0.5,
            greeting_timeout=0.5,
            concurrency=8,
            per_ip=per_ip,
            smtp_port=bulk_lab.smtp_port,
            https_port=bulk_lab.https_port,
        )
    )
    lines: list[str] = []

    async def items() -> AsyncIterator[str]:
        for name in slow:
            yield name

    started = trio.current_time()
    await scanner.run(InputReader().stream(items()), lines.append)
    elapsed = trio.current_time() - started  # virtual seconds
    assert len(lines) == len(slow)
    assert bulk_lab.smtp_connections("127.0.3.9") == len(slow)  # eight hostnames, eight probes
    # The lab counts a connection open until it reads the client's FIN, so the next connection
    # of a waiting probe may be accepted a moment before the previous one is seen closing:
    # the peak is per_ip, or per_ip + 1 in that race; without the limit it would be 8.
    assert per_ip <= bulk_lab.smtp_max_concurrent("127.0.3.9") <= per_ip + 1
    # Eight probes that each wait out a 0.5 s greeting deadline, per_ip at a time.
    assert elapsed >= 0.5 * len(slow) / per_ip * 0.9


def test_resume_completes_a_torn_file(
    bulk_lab_command: Lab, bulk_world: World, tmp_path: Path
) -> None:
    hosted = [name for name in bulk_world.domain_names if name.startswith("hosted")][:6]
    out = tmp_path / "out.jsonl"
    first = invoke(
        "scan",
        *hosted[:3],
        "--out",
        str(out),
        "--no-progress",
        *lab_options(bulk_lab_command),
    )
    assert first.exit_code == 0
    with out.open("a", encoding="utf-8") as handle:
        handle.write('{"schema_version": 1, "domain": "hosted5.exa')  # an interrupted write
    second = invoke(
        "scan",
        *hosted,
        "--out",
        str(out),
        "--resume",
        "--no-progress",
        *lab_options(bulk_lab_command),
    )
    assert second.exit_code == 0, second.stderr
    lines = read_jsonl(out)  # every line parses: the torn one is gone
    assert sorted(line["domain"] for line in lines) == sorted(hosted)


def test_shards_split_the_input_without_overlap(
    bulk_lab_command: Lab, bulk_world: World, tmp_path: Path
) -> None:
    hosted = [name for name in bulk_world.domain_names if name.startswith("hosted")]
    seen: list[str] = []
    for index in range(3):
        out = tmp_path / f"shard{index}.jsonl"
        result = invoke(
            "scan",
            *hosted,
            "--shard",
            f"{index}/3",
            "--out",
            str(out),
            "--no-progress",
            *lab_options(bulk_lab_command),
        )
        assert result.exit_code == 0, result.stderr
        shard_domains = [line["domain"] for line in read_jsonl(out)]
        assert shard_domains, "a shard of 30 domains in 3 slices should not be empty"
        seen.extend(shard_domains)
    assert sorted(seen) == sorted(hosted)


async def test_interrupt_leaves_only_complete_lines(
    bulk_lab: Lab, bulk_world: World, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    domains = [name for name in bulk_world.domain_names if name.startswith("hosted")]
    domains += [name for name in bulk_world.domain_names if name.startswith("slow")]
    async with process_of(
        [
            sys.executable,
            "-m",
            "scanner",
            "scan",
            *domains,
            "--out",
            str(out),
            "--no-progress",
            "--timeout",
            "5",
            "--per-ip",
            "1",
            *bulk_lab.scanner_args(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as process:
        with trio.fail_after(30):
            # Another process writes the file; polling is the only way to watch it.
            while line_count(out) < len(domains) - 8:  # noqa: ASYNC110
                await trio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            returncode = await process.wait()
    assert returncode == 130
    lines = read_jsonl(out)  # raises if any line is torn
    assert len(lines) < len(domains)  # the silent hosts were still in flight
    assert all(line["domain"] in domains for line in lines)


async def test_demo_scans_the_bundled_world_and_agrees_with_it(
    demo_world: World, loopback_clock: MockClock
) -> None:
    """What `scanner demo` runs and prints (`scan_world`, `render_demo_summary`), on virtual
    time: the command's own `trio.run` keeps the real clock, which a loaded machine can
    run out (the command's glue is tested below)."""
    lines: list[str] = []
    results = await scan_world(
        demo_world, demo_world.domain_names, lines.append, float(STEP_TIMEOUT)
    )
    shown = io.StringIO()
    agrees = render_demo_summary(Console(file=shown, width=500, no_color=True), demo_world, results)
    assert agrees, shown.getvalue()
    assert "Every verdict is the expected one" in shown.getvalue()
    assert len(lines) == len(demo_world.domains)


def test_demo_command_writes_a_line_per_domain_and_exits_by_its_summary(
    tmp_path: Path, demo_world: World
) -> None:
    """The command around it: the file, the summary and the exit status agree. The
    shortest deadline: whether the verdicts meet the world's is the test above."""
    out = tmp_path / "demo.jsonl"
    result = invoke("demo", "--out", str(out), "--timeout", "0.1")
    text = result.stdout
    assert result.exit_code in (0, 1), text + result.stderr
    agrees = "Every verdict is the expected one" in text
    assert agrees == (result.exit_code == 0), text
    assert agrees or "Some verdicts differ" in text, text
    assert len(read_jsonl(out)) == len(demo_world.domains)


def test_stats_counts_a_results_file(demo_lab_command: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    scanned = invoke(
        "scan",
        "testing-ready.example",
        "backup-bad.example",
        "no-sts.example",
        "invalid..example",
        "--out",
        str(out),
        "--no-progress",
        *lab_options(demo_lab_command),
    )
    assert scanned.exit_code == 0, scanned.stderr
    result = invoke("stats", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    numbers = json.loads(result.stdout)  # docs/research.md#json
    funnel = {stage["stage"]: stage["domains"] for stage in numbers["funnel"]}
    assert numbers["domains"] == 3
    assert numbers["skipped"]["error_lines"] == 1
    assert funnel["with-mta-sts-record"] == 2
    assert funnel["enforce-ready"] == 1
    assert numbers["beside"]["mode-testing"] == 2
    kinds = {(row["category"], row["kind"]): row["domains"] for row in numbers["taxonomy"]}
    assert kinds[("certificate", "expired")] == 1


async def test_lab_serve_prints_how_to_reach_it_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    from scanner.net.resolver import Resolver, parse_nameserver

    async with process_of(
        [sys.executable, "-m", "scanner", "lab", "serve", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as process:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(60):  # bounds a hang only: a loaded machine starts slowly
            while b"serving until Ctrl-C" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, output.decode()
                output += chunk
            text = output.decode()
            resolver_text = re.search(r"resolver:\s+(\S+)", text)
            assert resolver_text is not None
            assert (tmp_path / "lab-ca.pem").is_file()
            resolver = Resolver.create([parse_nameserver(resolver_text.group(1))], timeout=10)
            answer = await resolver.mx("testing-ready.example")
            assert [record.host for record in answer.records] == ["mx.testing-ready.example"]
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130


def test_check_exits_2_when_the_mx_lookup_fails(demo_lab_command: Lab) -> None:
    result = invoke(
        "check",
        "dns-servfail.example",
        *lab_options(demo_lab_command),
    )
    assert result.exit_code == 2, result.stdout
    assert "MX lookup failed" in result.stdout


def test_undecodable_and_overlong_input_lines_become_error_lines(
    bulk_lab_command: Lab, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    stdin = b"hosted0.example\n\xffbad.example\n" + b"x" * 200_000 + b"\nhosted1.example\n"
    result = invoke(
        "scan",
        "--input",
        "-",
        "--out",
        str(out),
        "--no-progress",
        "--workers",
        "1",  # the parent reads the input, with worker processes or without
        *lab_options(bulk_lab_command),
        stdin=stdin,
    )
    assert result.exit_code == 0, result.stderr
    lines = read_jsonl(out)
    assert len(lines) == 4
    errors = [line for line in lines if line["error"]]
    assert len(errors) == 2
    assert all(line["error"].startswith("invalid-domain") for line in errors)
    assert max(len(line["domain"]) for line in errors) <= 201  # the long line is not echoed whole
    assert max(len(json.dumps(line)) for line in errors) < 5_000


def test_undecodable_argument_is_an_error_line(bulk_lab_command: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    # Python hands a program an argument that is not UTF-8 with its bytes escaped (PEP 383).
    undecodable = b"\xff.example".decode("utf-8", "surrogateescape")
    result = invoke(
        "scan",
        undecodable,
        "hosted0.example",
        "--out",
        str(out),
        "--no-progress",
        *bulk_lab_command.scanner_args(),
    )
    assert result.exit_code == 0, result.stderr
    lines = read_jsonl(out)
    assert sorted(bool(line["error"]) for line in lines) == [False, True]


def test_an_existing_output_file_is_never_silently_replaced(
    bulk_lab_command: Lab, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n", encoding="utf-8")
    refused = invoke("scan", "hosted0.example", "--out", str(out), *bulk_lab_command.scanner_args())
    assert refused.exit_code == 2
    assert "--overwrite" in refused.stderr
    assert out.read_text(encoding="utf-8") == "precious\n"
    replaced = invoke(
        "scan",
        "hosted0.example",
        "--out",
        str(out),
        "--overwrite",
        "--no-progress",
        *bulk_lab_command.scanner_args(),
    )
    assert replaced.exit_code == 0, replaced.stderr
    assert [line["domain"] for line in read_jsonl(out)] == ["hosted0.example"]


def test_a_directory_as_output_is_a_usage_error(bulk_lab_command: Lab, tmp_path: Path) -> None:
    for extra in ([], ["--resume"]):
        result = invoke(
            "scan",
            "hosted0.example",
            "--out",
            str(tmp_path),
            *extra,
            *bulk_lab_command.scanner_args(),
        )
        assert result.exit_code == 2, result.stderr
        assert "is a directory" in result.stderr


async def test_parallel_runs_with_default_output_never_share_a_file(
    bulk_lab: Lab, tmp_path: Path
) -> None:
    async def one(shard: str) -> None:
        result = await trio.run_process(
            [
                sys.executable,
                "-m",
                "scanner",
                "scan",
                "--input",
                "-",
                "--shard",
                shard,
                "--workers",
                "1",  # two processes at once, not six
                "--no-progress",
                *lab_options(bulk_lab),
            ],
            stdin=b"".join(f"hosted{i}.example\n".encode() for i in range(30)),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr.decode()

    async with trio.open_nursery() as nursery:
        for shard in ("0/2", "0/2"):  # two runs of the same shard at the same second
            nursery.start_soon(one, shard)
    files = sorted((tmp_path / "results").glob("scan-*.jsonl"))
    assert len(files) == 2  # two runs, two files
    assert all("-shard0of2" in path.name for path in files)
    counts = [len(read_jsonl(path)) for path in files]  # each parses
    assert counts[0] == counts[1]
    assert 0 < counts[0] < 30


def test_write_failure_stops_the_scan_with_a_clear_error(bulk_lab_command: Lab) -> None:
    result = invoke(
        "scan",
        "hosted0.example",
        "--out",
        "/dev/full",
        "--overwrite",
        "--no-progress",
        *bulk_lab_command.scanner_args(),
    )
    assert result.exit_code == 1
    stderr = result.stderr
    assert "writing /dev/full failed" in stderr
    assert "Traceback" not in stderr


async def test_ctrl_c_during_check_exits_130(demo_lab: Lab) -> None:
    async with process_of(
        [
            sys.executable,
            "-m",
            "scanner",
            "check",
            "silent.example",
            "--timeout",
            "10",
            *demo_lab.scanner_args(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as process:
        with trio.fail_after(20):
            # the silent MX of silent.example; the counter lives in the lab, polling is simplest
            while demo_lab.smtp_connections("127.0.1.24") == 0:  # noqa: ASYNC110
                await trio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130


def test_report_and_stats_survive_a_foreign_file(tmp_path: Path) -> None:
    results = tmp_path / "foreign.jsonl"
    results.write_bytes(
        b'{"domain": "a.example", "report": {"date-range": "x"}, "mta_sts": {"policy": "x"}}\n'
        b"\xff\xfe not json\n"
        b'{"report": {}, "mx": "x", "indicators": [1]}\n'
        b"[1, 2]\n"
    )
    # Not one result line: not a results file, a usage error before any work.
    for command in (("stats", "--json"), ("report", "--out-dir", str(tmp_path / "reports"))):
        refused = invoke(command[0], str(results), *command[1:])
        assert refused.exit_code == 2, refused.stderr
        assert "is not a results file" in refused.stderr
    assert not (tmp_path / "reports").exists()
    ours = tmp_path / "ours.jsonl"
    ours.write_bytes(
        results.read_bytes().replace(
            b'{"domain": "a.example"', b'{"schema_version": 2, "domain": "a.example"'
        )
    )
    stats = invoke("stats", str(ours), "--json")
    assert stats.exit_code == 0, stats.stderr
    skipped = json.loads(stats.stdout)["skipped"]  # lines without a schema_version are foreign
    assert (skipped["foreign"], skipped["not_json"]) == (2, 1)
    report = invoke("report", str(ours), "--out-dir", str(tmp_path / "reports"))
    assert report.exit_code == 0, report.stderr
    assert len(list((tmp_path / "reports").iterdir())) == 1  # the line without a domain is skipped
    # lines of no known schema_version are left out, and said so: no report from them
    assert "is not one this scanner reads" in report.stderr
    not_a_dir = invoke("report", str(results), "--out-dir", str(results))
    assert not_a_dir.exit_code == 2
