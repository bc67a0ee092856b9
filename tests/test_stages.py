"""`scanner stage`: a staged scan gives a one-process scan's answers, probes each target
once across shards, holds --per-ip across shards, and refuses without every probe shard.

Most tests run the stages in this trio loop, each shard with a scanner of its own (its
own resolver, gate and probe cache, as on its own machine), against a lab on virtual
time (`loopback_clock`); the commands and `deploy/local-stages.sh` are run once each.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from commands import invoke, items_of, lab_in_command, lab_options
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from scanner.core.inputs import Shard
from scanner.files import InputReader, text_lines
from scanner.lab import Lab, World, lab_in_thread
from scanner.models import DomainFacts, HostDane, ProbeOutcome
from scanner.options import NetworkOptions, build_scanner
from scanner.stages.codec import Undecodable, decode, encode
from scanner.stages.compare import answers, differences
from scanner.stages.discover import discover
from scanner.stages.probe import probe_shard
from scanner.stages.records import StageRefusal, address_shard, read_records
from scanner.stages.verdict import verdict_shard

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


async def one_process(options: NetworkOptions, names: list[str]) -> list[dict[str, Any]]:
    lines: list[str] = []
    await build_scanner(options).run(InputReader().stream(items_of(names)), lines.append)
    return [json.loads(line) for line in lines]


async def staged(
    options: NetworkOptions, names: list[str], directory: Path, domains: int, addresses: int
) -> list[dict[str, Any]]:
    """The three stages, each shard with a scanner of its own; the verdicts' lines."""
    for index in range(domains):
        await discover(build_scanner(options), items_of(names), Shard(index, domains), directory)
    for index in range(addresses):
        await probe_shard(build_scanner(options), directory, Shard(index, addresses), directory)
    lines = []
    for index in range(domains):
        out = directory / f"results-{index}.jsonl.gz"
        await verdict_shard(directory, Shard(index, domains), out, report=options.report)
        lines += [json.loads(text) for text in text_lines(out)]
    return lines


async def test_staged_demo_world_gives_the_one_process_answers(
    demo_lab: Lab, demo_world: World, tmp_path: Path, loopback_clock: MockClock
) -> None:
    options = lab_options(demo_lab)
    names = demo_world.domain_names
    one = await one_process(options, names)
    stages = await staged(options, names, tmp_path / "stages", domains=3, addresses=2)
    assert len(stages) == len(names)
    assert differences(one, stages) == []
    # the comparison can fail: a changed verdict is seen
    changed = [dict(stages[0], enforce_ready=not stages[0]["enforce_ready"]), *stages[1:]]
    assert differences(one, changed) != []


async def test_staged_bulk_world_probes_each_target_once_across_shards(
    bulk_lab: Lab, bulk_world: World, tmp_path: Path, loopback_clock: MockClock
) -> None:
    hosted = [name for name in bulk_world.domain_names if name.startswith("hosted")]
    options = lab_options(bulk_lab)
    lines = await staged(options, hosted, tmp_path / "stages", domains=4, addresses=3)
    assert sorted(line["domain"] for line in lines) == sorted(hosted)
    # every hosted domain names the same two provider MX hosts, whatever discover shard
    # it fell in: one session each, fleet-wide
    assert bulk_lab.smtp_connections("127.0.3.1") == 1
    assert bulk_lab.smtp_connections("127.0.3.2") == 1
    assert all(
        address["starttls"] == "offered"
        for line in lines
        for mx in line["mx"]
        for address in mx["addresses"]
    )
    assert differences(await one_process(options, hosted), lines) == []


async def test_per_ip_holds_across_discover_shards(
    bulk_lab: Lab, bulk_world: World, tmp_path: Path, loopback_clock: MockClock
) -> None:
    slow = [name for name in bulk_world.domain_names if name.startswith("slow")]
    options = lab_options(bulk_lab, per_ip=1, concurrency=8)
    lines = await staged(options, slow, tmp_path / "stages", domains=4, addresses=2)
    assert sorted(line["domain"] for line in lines) == sorted(slow)
    # eight MX names on one silent address: one probe each, one at a time (the lab may
    # count a closing connection a moment longer: +1)
    assert bulk_lab.smtp_connections("127.0.3.9") == len(slow)
    assert bulk_lab.smtp_max_concurrent("127.0.3.9") <= 2


async def test_verdict_refuses_without_every_probe_shard(
    demo_lab: Lab, demo_world: World, tmp_path: Path, loopback_clock: MockClock
) -> None:
    options = lab_options(demo_lab)
    names = demo_world.domain_names
    directory = tmp_path / "stages"
    await discover(build_scanner(options), items_of(names), Shard(0, 1), directory)
    await probe_shard(build_scanner(options), directory, Shard(0, 2), directory)
    out = tmp_path / "results.jsonl"
    with pytest.raises(
        StageRefusal, match=r"lacks the probe outcomes of 1 of 2 shards \(shard 1/2"
    ):
        await verdict_shard(directory, Shard(0, 1), out, report=options.report)
    assert not out.exists()
    # a probe shard that stopped on purpose says why, and the verdict repeats it
    (directory / "probe-1-of-2.failed").write_text("port 25 is blocked here\n", encoding="utf-8")
    with pytest.raises(StageRefusal, match="shard 1/2 failed: port 25 is blocked here"):
        await verdict_shard(directory, Shard(0, 1), out, report=options.report)
    # probe shards of another count than the run's targets lack some targets
    await probe_shard(build_scanner(options), directory, Shard(0, 1), directory)
    with pytest.raises(StageRefusal, match="several shard counts"):
        await verdict_shard(directory, Shard(0, 1), out, report=options.report)
    (directory / "probe-0-of-2.jsonl.gz").unlink()
    await verdict_shard(directory, Shard(0, 1), out, report=options.report)
    assert len(list(text_lines(out))) == len(names)


async def test_stage_files_round_trip_and_damage_is_refused(
    demo_lab: Lab, demo_world: World, tmp_path: Path, loopback_clock: MockClock
) -> None:
    options = lab_options(demo_lab)
    scanner = build_scanner(options)
    results = [await scanner.scan_domain(name) for name in demo_world.domain_names[:12]]
    for result in results:
        if result.facts is not None:
            assert decode(DomainFacts, json.loads(json.dumps(encode(result.facts)))) == result.facts
    directory = tmp_path / "stages"
    await discover(
        build_scanner(options), items_of(demo_world.domain_names), Shard(0, 1), directory
    )
    path = directory / "discover-0-of-1.targets.jsonl"
    lines = list(text_lines(directory / "discover-0-of-1.targets.jsonl.gz"))
    damaged = json.loads(lines[1])
    damaged["port"] = "25"
    path.write_text(lines[0] + json.dumps(damaged) + "\n", encoding="utf-8")
    from scanner.stages.records import Target

    with pytest.raises(StageRefusal, match=r"line 2 is damaged: \$\.port: not an integer"):
        list(read_records(path, Target, lambda _: None))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["domain", "mx", "hosts", "status", "records", "scanned_at", "x"]),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_any_json_decodes_to_facts_or_is_undecodable(data: object) -> None:
    """A stage file is data: whatever JSON it holds, decoding gives facts or `Undecodable`."""
    with contextlib.suppress(Undecodable):
        decode(DomainFacts, data)


@settings(max_examples=100, deadline=None)
@given(st.from_type(ProbeOutcome), st.from_type(HostDane))
def test_outcomes_and_tlsa_facts_survive_a_stage_file(
    outcome: ProbeOutcome, dane: HostDane
) -> None:
    """What a probe shard writes is what the verdict reads, field for field."""
    for value, kind in ((outcome, ProbeOutcome), (dane, HostDane)):
        assert decode(kind, json.loads(json.dumps(encode(value)))) == value


def test_address_shards_split_addresses_stably() -> None:
    addresses = [f"192.0.2.{n}" for n in range(1, 200)] + [f"2001:db8::{n:x}" for n in range(99)]
    shards = [address_shard(ip, 4) for ip in addresses]
    assert set(shards) == {0, 1, 2, 3}
    assert shards == [address_shard(ip, 4) for ip in addresses]


def test_answers_leave_out_times_attempts_and_transcripts() -> None:
    address = {"ip": "192.0.2.1", "status": "tested", "reason_code": None, "starttls": "offered",
               "tls": {"version": "TLSv1.3"}, "result_types": [], "attempts": 1,
               "transcript": ["S: 220 hi"], "certificate": {"sha256": "ab", "not_after": "2030"}}  # fmt: skip
    line = {"domain": "example.com", "scanned_at": "2026-01-01T00:00:00Z", "enforce_ready": True,
            "mx": [{"hostname": "mx.example.com", "addresses": [address]}]}  # fmt: skip
    later = dict(line, scanned_at="2026-01-02T00:00:00Z")
    later["mx"] = [
        {"hostname": "mx.example.com",
         "addresses": [dict(address, attempts=2, transcript=["S: 421", "S: 220 hi"],
                            certificate={"sha256": "ab", "not_after": "2031"})]}
    ]  # fmt: skip
    assert answers(line) == answers(later)
    refused = dict(later)
    refused["mx"] = [
        {"hostname": "mx.example.com", "addresses": [dict(address, starttls="refused")]}
    ]
    assert answers(line) != answers(refused)


def _listing(world: World, path: Path) -> Path:
    """The first eight of `world`'s domains, one per line."""
    path.write_text("\n".join(world.domain_names[:8]) + "\n", encoding="utf-8")
    return path


def _scanned(lab: Lab, listing: Path, out: Path) -> list[dict[str, Any]]:
    """`scanner scan` of `listing` in one process: its lines."""
    lab_args = ("--timeout", "1", "--greeting-timeout", "1", *lab.scanner_args())
    scanned = invoke("scan", "--input", str(listing), "--out", str(out),
                     "--workers", "1", "--no-progress", *lab_args)  # fmt: skip
    assert scanned.exit_code == 0, scanned.stderr
    return [json.loads(text) for text in text_lines(out)]


def test_the_stage_commands_write_a_scans_lines(
    demo_lab_command: Lab, demo_world: World, tmp_path: Path
) -> None:
    """`scanner stage discover | probe | verdict`, in-process, on virtual time, against `scan`."""
    listing = _listing(demo_world, tmp_path / "domains.txt")
    lab = demo_lab_command
    one = _scanned(lab, listing, tmp_path / "scan.jsonl")
    lab_args = ("--timeout", "1", "--greeting-timeout", "1", *lab.scanner_args())
    directory = tmp_path / "stages"
    found = invoke("stage", "discover", "--shard", "0/1", "--input", str(listing),
                   "--out", str(directory), *lab_args)  # fmt: skip
    assert found.exit_code == 0, found.stderr
    refused = invoke("stage", "verdict", "--shard", "0/1", "--in", str(directory),
                     "--out", str(tmp_path / "v.jsonl"), *lab_args)  # fmt: skip
    assert refused.exit_code == 1
    assert "holds no probe outcomes files: run that stage first" in refused.stderr
    probed = invoke("stage", "probe", "--shard", "0/1", "--in", str(directory), *lab_args)
    assert probed.exit_code == 0, probed.stderr
    judged = invoke("stage", "verdict", "--shard", "0/1", "--in", str(directory),
                    "--out", str(tmp_path / "v.jsonl"), *lab_args)  # fmt: skip
    assert judged.exit_code == 0, judged.stderr
    assert differences(one, [json.loads(t) for t in text_lines(tmp_path / "v.jsonl")]) == []


def test_local_stages_write_a_scans_lines(demo_world: World, tmp_path: Path) -> None:
    """`deploy/local-stages.sh 2`: two processes per stage, against `scan` (of a lab of
    the same world on virtual time: the answers do not depend on the lab's ports or CA)."""
    listing = _listing(demo_world, tmp_path / "domains.txt")
    with lab_in_command(demo_world, tmp_path / "scan-lab") as lab:
        one = _scanned(lab, listing, tmp_path / "scan.jsonl")
    with lab_in_thread(demo_world, tmp_path / "lab") as lab:
        lab_args = ("--timeout", "1", "--greeting-timeout", "1", *lab.scanner_args())
        out = tmp_path / "local"
        script = subprocess.run(
            [str(ROOT / "deploy" / "local-stages.sh"), "2", str(listing), str(out), *lab_args],
            capture_output=True, text=True, check=False, timeout=120,
            env={**os.environ, "SCANNER": f"{sys.executable} -m scanner"},
        )  # fmt: skip
    assert script.returncode == 0, script.stderr
    staged_lines = [json.loads(t) for t in text_lines(out / "results.jsonl")]
    assert differences(one, staged_lines) == []
