"""`scanner diff OLD NEW`: each kind of change (with its unchanged twin), and end to end."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from commands import lab_in_command, run_command

from scanner.lab import parse_world
from scanner.research.diff import (
    ChangeKind,
    Direction,
    change_summary,
    compare_snapshots,
    domain_changes,
    got_worse,
    snapshot,
)
from scanner.research.lines import scan_line
from scanner.research.metadata import metadata_path, read_metadata, write_metadata

Record = dict[str, Any]
Mutation = Callable[[Record], None]

POLICY = {
    "version": "STSv1",
    "mode": "testing",
    "mx": ["mx1.example.com", "mx2.example.com"],
    "max_age": 604800,
}


def certificate(not_after: str = "2027-06-01T00:00:00Z", sha256: str = "aa" * 32) -> dict[str, Any]:
    return {
        "subject": "CN=mx",
        "san": ["mx1.example.com"],
        "issuer": "CN=ca",
        "not_before": "2026-01-01T00:00:00Z",
        "not_after": not_after,
        "sha256": sha256,
        "chain_valid": True,
        "verify_error": None,
        "name_matches": True,
    }


def address(ip: str, **changes: Any) -> dict[str, Any]:
    return {
        "ip": ip,
        "status": "tested",
        "reason": None,
        "starttls": "offered",
        "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"},
        "certificate": certificate(),
        "result_types": [],
        "transcript": [],
        "after_tls_error": None,
        **changes,
    }


def base() -> Record:
    """A scanned, enforce-ready domain: testing policy, two MX hosts, all tested and fine."""
    return {
        "schema_version": 2,
        "domain": "example.com",
        "rank": None,
        "scanned_at": "2026-11-28T04:00:00Z",
        "error": None,
        "mta_sts": {
            "record": "v=STSv1; id=20261101",
            "id": "20261101",
            "policy": copy.deepcopy(POLICY),
            "policy_text": "version: STSv1\nmode: testing\nmx: mx1.example.com\nmx: mx2.example.com\nmax_age: 604800\n",
            "error": None,
        },
        "tlsrpt": {"record": None, "rua": [], "error": "no v=TLSRPTv1 record"},
        "mx_lookup": {"status": "answer", "null_mx": False, "implicit": False, "detail": None},
        "mx": [
            {
                "hostname": "mx1.example.com",
                "preference": 10,
                "source": "dns",
                "in_policy": True,
                "addresses": [address("192.0.2.1")],
            },
            {
                "hostname": "mx2.example.com",
                "preference": 20,
                "source": "dns",
                "in_policy": True,
                "addresses": [address("192.0.2.2")],
            },
        ],
        "indicators": [],
        "enforce_ready": True,
        "blockers": [],
        "warnings": [],
        "report": None,
    }


def no_record(r: Record) -> None:
    r["mta_sts"] = {
        "record": None,
        "id": None,
        "policy": None,
        "policy_text": None,
        "error": {"result_type": None, "detail": "no v=STSv1 record"},
    }


def fetch_error(r: Record) -> None:
    r["mta_sts"]["policy"] = None
    r["mta_sts"]["error"] = {
        "result_type": "sts-policy-fetch-error",
        "detail": "policy host mta-sts.example.com (192.0.2.9) answered HTTP 404 Not Found",
    }


def mode(value: str) -> Mutation:
    def mutate(r: Record) -> None:
        r["mta_sts"]["policy"]["mode"] = value

    return mutate


def max_age(value: int) -> Mutation:
    def mutate(r: Record) -> None:
        r["mta_sts"]["policy"]["max_age"] = value

    return mutate


def new_id(r: Record) -> None:
    r["mta_sts"]["id"] = "20261201"
    r["mta_sts"]["record"] = "v=STSv1; id=20261201"


def patterns(*mx: str) -> Mutation:
    def mutate(r: Record) -> None:
        r["mta_sts"]["policy"]["mx"] = list(mx)

    return mutate


def crlf_text(r: Record) -> None:
    r["mta_sts"]["policy_text"] = r["mta_sts"]["policy_text"].replace("\n", "\r\n")


def add_mx(covered: bool) -> Mutation:
    def mutate(r: Record) -> None:
        r["mx"].append(
            {
                "hostname": "mx3.elsewhere.example",
                "preference": 30,
                "source": "dns",
                "in_policy": covered,
                "addresses": [address("192.0.2.3")],
            }
        )

    return mutate


def expired_mx1(r: Record) -> None:
    mx1 = r["mx"][0]["addresses"][0]
    mx1["result_types"] = ["certificate-expired"]
    mx1["certificate"] = certificate(not_after="2026-11-01T00:00:00Z")
    r["indicators"] = [
        {
            "code": "certificate-expired",
            "mx": "mx1.example.com",
            "ip": "192.0.2.1",
            "detail": "expired",
        }
    ]


def expiring_mx1(r: Record) -> None:
    r["mx"][0]["addresses"][0]["certificate"] = certificate(
        not_after="2026-12-05T00:00:00Z", sha256="bb" * 32
    )


def mx1_not_testable(r: Record) -> None:
    r["mx"][0]["addresses"][0] = address(
        "192.0.2.1",
        status="not-testable",
        reason="timeout:greeting",
        starttls=None,
        tls=None,
        certificate=None,
    )


def scan_error(r: Record) -> None:
    r["error"] = "timeout: the domain's scan exceeded 300 s"
    r["mx"] = []
    r["mta_sts"] = {"record": None, "id": None, "policy": None, "policy_text": None, "error": None}


def apply(*mutations: Mutation) -> Record:
    record = base()
    for mutation in mutations:
        mutation(record)
    return record


W, B, N = Direction.WORSE, Direction.BETTER, Direction.NEUTRAL
CASES: list[
    tuple[str, tuple[Mutation, ...], tuple[Mutation, ...], set[tuple[ChangeKind, Direction]]]
] = [
    ("unchanged", (), (), set()),
    ("adopted", (no_record,), (), {(ChangeKind.MTA_STS_ADOPTED, B)}),
    ("dropped", (), (no_record,), {(ChangeKind.MTA_STS_DROPPED, W)}),
    ("policy-broken", (), (fetch_error,), {(ChangeKind.POLICY_BROKEN, W)}),
    ("policy-repaired", (fetch_error,), (), {(ChangeKind.POLICY_REPAIRED, B)}),
    (
        "mode-down-same-id",
        (mode("enforce"),),
        (),
        {(ChangeKind.MODE_CHANGED, W), (ChangeKind.STALE_POLICY_ID, W)},
    ),
    (
        "mode-up-new-id",
        (),
        (mode("enforce"), new_id),
        {(ChangeKind.MODE_CHANGED, B), (ChangeKind.POLICY_CHANGED, N)},
    ),
    ("max-age-same-id", (), (max_age(86400),), {(ChangeKind.STALE_POLICY_ID, W)}),
    ("max-age-new-id", (), (max_age(86400), new_id), {(ChangeKind.POLICY_CHANGED, N)}),
    (
        "mx-pattern-same-id",
        (),
        (patterns("mx1.example.com", "*.example.com"),),
        {(ChangeKind.STALE_POLICY_ID, W)},
    ),
    (
        "patterns-reordered-and-cased",
        (),
        (patterns("MX2.example.com", "mx1.example.com", "mx1.example.com"),),
        set(),
    ),
    ("line-endings", (), (crlf_text,), set()),
    ("id-only", (), (new_id,), set()),
    ("mx-added-not-covered", (), (add_mx(False),), {(ChangeKind.MX_NOT_COVERED, W)}),
    ("mx-added-covered", (), (add_mx(True),), {(ChangeKind.MX_CHANGED, N)}),
    (
        "failure-new",
        (),
        (expired_mx1,),
        {(ChangeKind.FAILURE_NEW, W), (ChangeKind.INDICATOR_NEW, W)},
    ),
    (
        "failure-fixed",
        (expired_mx1,),
        (),
        {(ChangeKind.FAILURE_FIXED, B), (ChangeKind.INDICATOR_FIXED, B)},
    ),
    ("failure-gone-because-not-testable", (expired_mx1,), (mx1_not_testable,), set()),
    ("certificate-newly-expiring", (), (expiring_mx1,), {(ChangeKind.CERTIFICATE_EXPIRING, W)}),
    ("certificate-already-expiring", (expiring_mx1,), (expiring_mx1,), set()),
    ("scan-error-new", (), (scan_error,), {(ChangeKind.SCAN_ERROR_NEW, N)}),
    ("scan-error-gone", (scan_error,), (), {(ChangeKind.SCAN_ERROR_GONE, N)}),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), CASES, ids=[case[0] for case in CASES])
def test_change_kinds(
    name: str,
    old: tuple[Mutation, ...],
    new: tuple[Mutation, ...],
    expected: set[tuple[ChangeKind, Direction]],
) -> None:
    before = snapshot(scan_line(apply(*old), 2))
    after = snapshot(scan_line(apply(*new), 2))
    if name == "certificate-already-expiring":
        # Scanned a week earlier, the same certificate was already within 14 days then.
        before = snapshot(scan_line({**apply(*old), "scanned_at": "2026-11-23T04:00:00Z"}, 2))
    changes = domain_changes(before, after)
    assert {(c.kind, c.direction) for c in changes} == expected
    assert got_worse(changes) == any(direction is W for _, direction in expected)


def test_stale_id_names_what_changed_and_the_rule() -> None:
    changes = domain_changes(
        snapshot(scan_line(base(), 2)), snapshot(scan_line(apply(max_age(86400)), 2))
    )
    (stale,) = changes
    assert "max_age 604800 → 86400" in stale.detail
    assert "RFC 8461 §3.1" in stale.detail
    assert stale.old == stale.new == "20261101"


def test_session_changes_name_the_mx_and_address() -> None:
    changes = domain_changes(
        snapshot(scan_line(base(), 2)), snapshot(scan_line(apply(expired_mx1), 2))
    )
    assert {(c.mx, c.ip) for c in changes} == {("mx1.example.com", "192.0.2.1")}


def test_domains_only_in_one_file() -> None:
    line = snapshot(scan_line(base(), 2))
    assert [c.kind for c in domain_changes(None, line)] == [ChangeKind.DOMAIN_ADDED]
    assert [c.kind for c in domain_changes(line, None)] == [ChangeKind.DOMAIN_REMOVED]


# ---------------------------------------------------------------- end to end, over the lab

WORLD = """
[domains."stale.example".dns]
"@" = {{ mx = ["10 mx.stale.example"] }}
"_mta-sts" = {{ txt = ["v=STSv1; id=20261101"] }}
[[domains."stale.example".servers]]
hostname = "mx.stale.example"
address = "127.0.5.1"
[domains."stale.example".policy]
address = "127.0.5.101"
body = "version: STSv1\\nmode: {mode}\\nmx: mx.stale.example\\nmax_age: 604800\\n"

[domains."steady.example".dns]
"@" = {{ mx = ["10 mx.steady.example"] }}
[[domains."steady.example".servers]]
hostname = "mx.steady.example"
address = "127.0.5.2"
certificate = "{certificate}"

[domains."flip.example".dns]
"@" = {{ mx = ["10 mx.flip.example"] }}
"_mta-sts" = {{ txt = ["v=STSv1; id=flip1"] }}
[[domains."flip.example".servers]]
hostname = "mx.flip.example"
address = "127.0.5.3"
certificate = "{flip}"
[domains."flip.example".policy]
address = "127.0.5.103"
body = "version: STSv1\\nmode: testing\\nmx: mx.flip.example\\nmax_age: 604800\\n"
"""


def run_scanner(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (`commands.run_command`): no second of imports each."""
    return run_command(*args)


def scan(world_text: str, workdir: Path, out: Path, vantage: str) -> None:
    """Serve the world and scan it with the real command, in this process on virtual time."""
    world = parse_world(world_text)
    with lab_in_command(world, workdir) as lab:
        done = run_command(
            "scan", *world.domain_names, "bad..example", "--out", str(out), "--timeout", "1",
            "--greeting-timeout", "1", "--no-progress", "--vantage", vantage,
            *lab.scanner_args(),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def two_scans(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The world scanned, then changed (the policy to enforce, id kept; an expired certificate)."""
    workdir = tmp_path_factory.mktemp("diff")
    old, new = workdir / "old.jsonl", workdir / "new.jsonl"

    # flip.example: its expired certificate replaced, it becomes ready.
    scan(
        WORLD.format(mode="testing", certificate="good", flip="expired"),
        workdir / "lab-old",
        old,
        "lab",
    )
    scan(
        WORLD.format(mode="enforce", certificate="expired", flip="good"),
        workdir / "lab-new",
        new,
        "lab",
    )

    return old, new


def test_diff_of_two_lab_scans(two_scans: tuple[Path, Path]) -> None:
    old, new = two_scans
    done = run_scanner("diff", str(old), str(new), "--json")
    assert done.returncode == 1, done.stderr  # something got worse
    document = json.loads(done.stdout)
    found = {(c["domain"], c["change"], c["direction"]) for c in document["changes"]}
    assert ("stale.example", "stale-policy-id", "worse") in found
    assert ("stale.example", "mode-changed", "better") in found
    assert ("steady.example", "failure-new", "worse") in found
    assert ("steady.example", "indicator-new", "worse") in found
    assert document["worse"] >= 3
    assert not any(
        c["domain"] == "bad..example" for c in document["changes"]
    )  # an error line in both
    assert ("flip.example", "became-ready", "better") in found
    assert ("flip.example", "blocker-fixed", "better") in found
    summary = {(row["change"], row["direction"]): row["count"] for row in document["summary"]}
    assert summary[("became-ready", "better")] == 1
    assert summary[("stale-policy-id", "worse")] == 1
    assert summary[("blocker-new", "worse")] == 1
    codes = {(c["change"], c["code"]) for c in document["changes"]}
    assert ("failure-new", "certificate-expired") in codes
    assert ("blocker-new", "certificate-expired") in codes
    table = run_scanner("diff", str(old), str(new))
    assert table.returncode == 1
    assert "stale-policy-id" in table.stdout
    # The summary leads, before the rows.
    assert table.stdout.index("Summary") < table.stdout.index("Changes")
    assert "blocker-new" in table.stdout.split("Changes")[0]
    assert "became-ready" in table.stdout.split("Changes")[0]


def test_diff_of_a_scan_with_itself_exits_0(two_scans: tuple[Path, Path]) -> None:
    old, _ = two_scans
    done = run_scanner("diff", str(old), str(old))
    assert done.returncode == 0, done.stderr
    assert "0 worse" in done.stdout


def test_diff_refuses_different_vantages_unless_forced(
    two_scans: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = two_scans
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_bytes(new.read_bytes())
    metadata = read_metadata(new)
    assert metadata is not None
    from dataclasses import replace

    write_metadata(elsewhere, replace(metadata, vantage="lab-b"))
    refused = run_scanner("diff", str(old), str(elsewhere))
    assert refused.returncode == 2
    assert "vantage differs" in refused.stderr
    forced = run_scanner("diff", str(old), str(elsewhere), "--force")
    assert forced.returncode == 1
    assert "warning: vantage differs" in forced.stderr


def test_diff_without_metadata_warns_and_compares(
    two_scans: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = two_scans
    bare = tmp_path / "bare.jsonl"
    bare.write_bytes(new.read_bytes() + b"not json\n")
    assert not metadata_path(bare).exists()
    done = run_scanner("diff", str(old), str(bare))
    assert done.returncode == 1
    assert "no .meta.json sidecar" in done.stderr
    assert "1 not JSON" in done.stderr


@pytest.mark.parametrize(
    "args",
    [("one.jsonl",), ("a.jsonl", "b.jsonl", "c.jsonl"), ("missing.jsonl", "missing.jsonl")],
    ids=["one-file", "three-files", "missing"],
)
def test_diff_usage_errors(args: tuple[str, ...], tmp_path: Path) -> None:
    for name in args:
        if name != "missing.jsonl":
            (tmp_path / name).write_text("", encoding="utf-8")
    done = run_scanner("diff", *(str(tmp_path / name) for name in args))
    assert done.returncode == 2


# ---------------------------------------------------------------- readiness, codes, order


def _version_3(record: Record, *blockers: str) -> Record:
    """`record` as schema 3 writes it, with blockers of these codes."""
    record = copy.deepcopy(record)
    record["schema_version"] = 3
    record["blockers"] = [
        {"code": code, "text": f"words of {code}", "host": None, "address": None, "cause": None}
        for code in blockers
    ]
    record["enforce_ready"] = not blockers
    return record


def _changes(old: Record, new: Record) -> set[tuple[ChangeKind, Direction, str | None]]:
    before = snapshot(scan_line(old, old["schema_version"]))
    after = snapshot(scan_line(new, new["schema_version"]))
    return {(c.kind, c.direction, c.code) for c in domain_changes(before, after)}


def test_a_domain_that_became_ready_leads_with_it_and_its_fixed_blockers() -> None:
    blocked = _version_3(base(), "starttls-missing", "no-tlsrpt-record")
    ready = _version_3(base())
    assert _changes(blocked, ready) == {
        (ChangeKind.BECAME_READY, B, None),
        (ChangeKind.BLOCKER_FIXED, B, "no-tlsrpt-record"),
        (ChangeKind.BLOCKER_FIXED, B, "starttls-missing"),
    }
    assert _changes(ready, blocked) == {
        (ChangeKind.BECAME_NOT_READY, W, None),
        (ChangeKind.BLOCKER_NEW, W, "no-tlsrpt-record"),
        (ChangeKind.BLOCKER_NEW, W, "starttls-missing"),
    }
    # Words only (version 2) on one side: readiness compares, blocker codes cannot.
    worded = copy.deepcopy(blocked)
    worded["schema_version"] = 2
    worded["blockers"] = [b["text"] for b in blocked["blockers"]]
    assert _changes(worded, ready) == {(ChangeKind.BECAME_READY, B, None)}


def _with_dane(status: str) -> Mutation:
    def change(r: Record) -> None:
        r["mx"][0]["addresses"][0]["dane"] = {
            "status": status,
            "matched": None,
            "depth": None,
            "detail": "",
        }

    return change


@pytest.mark.parametrize(
    ("before", "after", "direction"),
    [("pass", "fail", W), ("bogus", "pass", B), ("no-tlsa", "pass", N)],
)
def test_dane_status_changes(before: str, after: str, direction: Direction) -> None:
    assert _changes(apply(_with_dane(before)), apply(_with_dane(after))) == {
        (ChangeKind.DANE_CHANGED, direction, after)
    }


def test_domains_are_listed_by_rank_then_the_worst_then_by_name() -> None:
    def line(domain: str, rank: int | None, ready: bool) -> Record:
        record = {**base(), "domain": domain, "rank": rank, "enforce_ready": ready}
        return record

    old = {d: snapshot(scan_line(line(d, r, True), 2)) for d, r in [("d10", None), ("d2", None), ("top", 2), ("first", 1)]}  # fmt: skip
    new = {d: snapshot(scan_line(line(d, r, d != "d10"), 2)) for d, r in [("d10", None), ("d2", None), ("top", 2), ("first", 1)]}  # fmt: skip
    changes = compare_snapshots(old, new)
    assert [c.domain for c in changes] == ["d10"]
    # Everything changes: ranks first, then the worse, then natural order (d2 before d10).
    flipped = {d: snapshot(scan_line(line(d, s.rank, False), 2)) for d, s in old.items()}
    order = [c.domain for c in compare_snapshots(old, flipped)]
    assert order == ["first", "top", "d2", "d10"]
    summary = change_summary(compare_snapshots(old, flipped))
    assert summary == [(ChangeKind.BECAME_NOT_READY, W, 4)]


def test_diff_at_80_columns_shows_every_domain_and_address_whole() -> None:
    import io

    from rich.console import Console

    from scanner.research.cli import render_changes

    domain = "a-rather-long-domain-name-for-a-narrow-terminal.example"
    old = {domain: snapshot(scan_line({**base(), "domain": domain}, 2))}
    new = {domain: snapshot(scan_line({**apply(expired_mx1), "domain": domain}, 2))}
    changes = compare_snapshots(old, new)
    buffer = io.StringIO()
    render_changes(Console(file=buffer, width=80, no_color=True), changes)
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert domain in text
    assert "mx1.example.com 192.0.2.1" in text
    assert "…" not in text
    wide = io.StringIO()
    render_changes(Console(file=wide, width=300, no_color=True), changes)
    assert "┃ domain" in wide.getvalue()  # a table where it fits
