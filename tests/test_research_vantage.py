"""`scanner diff --vantage`: one MX address that behaves differently from one vantage.

Two lab worlds stand for two network paths to the same servers: on path B a middlebox
strips STARTTLS from `mx.path.example` (the lab's `starttls-hidden`), while
`mx.same.example` looks the same from both. Each path is scanned twice with the real
command and its `--vantage`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from commands import lab_in_command, run_command

from scanner.lab import parse_world
from scanner.research.lines import SkipTally
from scanner.research.vantage import (
    Flag,
    Observation,
    Signature,
    VantageScan,
    compare_vantages,
    judge,
)

WORLD = """
[domains."path.example".dns]
"@" = {{ mx = ["10 mx.path.example"] }}
[[domains."path.example".servers]]
hostname = "mx.path.example"
address = "127.0.5.11"
behaviour = "{behaviour}"

[domains."same.example".dns]
"@" = {{ mx = ["10 mx.same.example"] }}
[[domains."same.example".servers]]
hostname = "mx.same.example"
address = "127.0.5.12"

[domains."down.example".dns]
"@" = {{ mx = ["10 mx.down.example"] }}
[[domains."down.example".servers]]
hostname = "mx.down.example"
address = "127.0.5.13"
behaviour = "{down}"
"""


def scan(world_text: str, workdir: Path, out: Path, vantage: str) -> None:
    """Serve the world and scan it with the real command, in this process on virtual time."""
    world = parse_world(world_text)
    with lab_in_command(world, workdir) as lab:
        done = run_command(
            "scan", *world.domain_names, "--out", str(out), "--timeout", "1",
            "--greeting-timeout", "1", "--no-progress", "--vantage", vantage,
            *lab.scanner_args(),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """a1, a2 from vantage A; b1, b2 from vantage B (STARTTLS stripped on the path to mx.path)."""
    workdir = tmp_path_factory.mktemp("vantage")
    paths = {name: workdir / f"{name}.jsonl" for name in ("a1", "a2", "b1", "b2")}

    # down.example does not answer from A (silent): not testable, so never compared.
    path_a = WORLD.format(behaviour="good", down="silent")
    path_b = WORLD.format(behaviour="starttls-hidden", down="no-starttls")
    scan(path_a, workdir / "lab-a1", paths["a1"], "vantage-a")
    scan(path_a, workdir / "lab-a2", paths["a2"], "vantage-a")
    scan(path_b, workdir / "lab-b1", paths["b1"], "vantage-b")
    scan(path_b, workdir / "lab-b2", paths["b2"], "vantage-b")

    return paths


def run_scanner(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (`commands.run_command`): no second of imports each."""
    return run_command(*args)


def test_a_difference_that_repeats_is_path_dependent(scans: dict[str, Path]) -> None:
    done = run_scanner(
        "diff", "--vantage", *(str(scans[n]) for n in ("a1", "b1", "a2", "b2")), "--json"
    )
    assert done.returncode == 1, done.stderr  # a path-dependent difference
    document = json.loads(done.stdout)
    assert document["vantages"] == {
        "vantage-a": [str(scans["a1"]), str(scans["a2"])],
        "vantage-b": [str(scans["b1"]), str(scans["b2"])],
    }
    (difference,) = document["differences"]  # only the stripped pair; same and down are left out
    assert (difference["mx"], difference["ip"]) == ("mx.path.example", "127.0.5.11")
    assert difference["flag"] == "path-dependent"
    assert "STARTTLS" in difference["differs_in"]
    seen = {(o["vantage"], o["starttls"]) for o in difference["observations"]}
    assert seen == {("vantage-a", "offered"), ("vantage-b", "stripped")}
    assert len(difference["transcripts"]) == 4
    assert all(
        any("STARTTLS" in line for line in t["transcript"]) for t in difference["transcripts"]
    )


def test_one_scan_per_vantage_only_differs_once(scans: dict[str, Path]) -> None:
    done = run_scanner("diff", "--vantage", str(scans["a1"]), str(scans["b1"]), str(scans["a2"]))
    assert done.returncode == 0, done.stderr  # not repeated from B: no path-dependent pair
    assert "differs-once" in done.stdout
    assert "path-dependent" not in done.stdout.replace("0 path-dependent", "")
    assert "Transcripts of mx.path.example 127.0.5.11" in done.stdout
    assert "vantage-a (a1.jsonl)" in done.stdout
    assert "vantage-b (b1.jsonl)" in done.stdout


def test_files_of_one_vantage_are_a_usage_error(scans: dict[str, Path]) -> None:
    done = run_scanner("diff", "--vantage", str(scans["a1"]), str(scans["a2"]))
    assert done.returncode == 2


def test_a_file_without_vantage_is_refused_unless_forced(
    scans: dict[str, Path], tmp_path: Path
) -> None:
    bare = tmp_path / "bare.jsonl"
    bare.write_bytes(scans["b1"].read_bytes())
    refused = run_scanner("diff", "--vantage", str(scans["a1"]), str(bare))
    assert refused.returncode == 2
    assert "vantage unknown" in refused.stderr
    forced = run_scanner("diff", "--vantage", str(scans["a1"]), str(bare), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert "bare.jsonl" in json.loads(forced.stdout)["vantages"]


def test_not_testable_addresses_are_left_out(scans: dict[str, Path]) -> None:
    a = VantageScan("a", scans["a1"])
    b = VantageScan("b", scans["b1"])
    differences = compare_vantages([a, b], SkipTally())
    assert [d.mx for d in differences] == ["mx.path.example"]  # not mx.down.example


OFFERED = Signature("offered", "aa", "TLSv1.3")
STRIPPED = Signature("stripped", "aa", "TLSv1.3")
OTHER_CERT = Signature("offered", "bb", "TLSv1.3")


def observations(*pairs: tuple[str, Signature]) -> list[Observation]:
    return [Observation(VantageScan(v, Path(f"{v}{i}.jsonl")), s) for i, (v, s) in enumerate(pairs)]


@pytest.mark.parametrize(
    ("seen", "verdict"),
    [
        ([("a", OFFERED), ("b", OFFERED)], None),
        ([("a", OFFERED), ("a", STRIPPED)], None),  # one vantage: nothing to compare
        (
            [("a", OFFERED), ("a", OFFERED), ("b", STRIPPED), ("b", STRIPPED)],
            (("STARTTLS",), Flag.PATH_DEPENDENT),
        ),
        ([("a", OFFERED), ("b", STRIPPED), ("b", STRIPPED)], (("STARTTLS",), Flag.DIFFERS_ONCE)),
        (
            [("a", OFFERED), ("a", STRIPPED), ("b", STRIPPED), ("b", STRIPPED)],
            (("STARTTLS",), Flag.DIFFERS_ONCE),
        ),
        (
            [("a", OFFERED), ("a", OFFERED), ("b", OTHER_CERT), ("b", OTHER_CERT)],
            (("certificate",), Flag.PATH_DEPENDENT),
        ),
    ],
    ids=["same", "one-vantage", "repeats", "once-from-b", "flapping-a", "certificate"],
)
def test_judging_one_pair(
    seen: list[tuple[str, Signature]], verdict: tuple[tuple[str, ...], Flag] | None
) -> None:
    assert judge(observations(*seen)) == verdict
