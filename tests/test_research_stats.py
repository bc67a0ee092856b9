"""`scanner stats`: the funnel, the taxonomy, the breakdowns, time series, over lab results.

The demo world is scanned once for the module with the real command (a ranked CSV
input, `--vantage`), so the files carry ranks and a metadata sidecar; error lines,
foreign lines and a line of an unknown schema version are added to a copy.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from commands import lab_in_command, line_validator, run_command
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.core.codes import ProblemCode
from scanner.lab import lab_in_thread, load_world
from scanner.lab.world import World
from scanner.models import IndicatorCode
from scanner.research.diff import ChangeKind, compare_snapshots, load_snapshots
from scanner.research.groups import (
    RANK_BUCKETS,
    mx_provider,
    rank_buckets,
    registrable_domain,
    shown_buckets,
    tld,
)
from scanner.research.kinds import (
    NOT_TESTABLE_KINDS,
    OTHER,
    kind_of,
    legacy_sts_error_code,
    policy_problem,
    record_error_kind,
)
from scanner.research.lines import SkipTally, classify_record, scan_line
from scanner.research.measures import STAGES, Stage
from scanner.research.metadata import (
    load_file_metadata,
    metadata_json,
    metadata_path,
    read_metadata,
    write_metadata,
)
from scanner.research.statistics import StatisticsBuilder, adoption_statistics
from scanner.research.tables import statistics_json
from scanner.research.taxonomy import CATEGORIES

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Two seconds per step, the greeting's too (the lab greets at once or never), and a modest
# concurrency: the lab shares the machine's cores with the scanner's processes.
SCAN_OPTIONS = ("--timeout", "2", "--greeting-timeout", "2", "--concurrency", "20", "--no-progress")


def run_scanner(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (`commands.run_command`): no second of imports each."""
    return run_command(*args)


def scan_world(
    world: World, workdir: Path, out: Path, *extra: str, domains: list[str] | None = None
) -> None:
    """Serve `world` and scan it with the real command (`--input` a Tranco-style CSV)."""
    names = domains if domains is not None else world.domain_names
    listing = workdir / "top-list.csv"
    listing.write_text(
        "".join(f"{rank},{name}\n" for rank, name in enumerate(names, 1)), encoding="utf-8"
    )
    # One process (unless asked) on virtual time; worker processes on real time, the lab
    # in a thread.
    if "--workers" not in extra:
        extra = (*extra, "--workers", "1")
    serve = lab_in_command if extra[extra.index("--workers") + 1] == "1" else lab_in_thread
    with serve(world, workdir / "lab") as lab:
        done = run_command(
            "scan", "--input", str(listing), "--out", str(out),
            *SCAN_OPTIONS, *lab.scanner_args(), *extra,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def demo_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo world scanned once, as `lab-a`, with ranks; its sidecar beside it."""
    workdir = tmp_path_factory.mktemp("demo-scan")
    out = workdir / "demo.jsonl"
    world = load_world(FIXTURES / "demo-world.toml")
    scan_world(world, workdir, out, "--vantage", "lab-a")
    return out


FOREIGN = [
    "not json at all",
    '{"hello": "world"}',
    "[1, 2, 3]",
    '{"schema_version": 99, "domain": "future.example"}',
]


@pytest.fixture
def mixed_file(demo_scan: Path, tmp_path: Path) -> Path:
    """The demo scan with foreign lines and an unknown schema version, and its sidecar."""
    target = tmp_path / "mixed.jsonl"
    target.write_text(
        demo_scan.read_text(encoding="utf-8") + "\n".join(FOREIGN) + "\n", encoding="utf-8"
    )
    shutil.copy(metadata_path(demo_scan), metadata_path(target))
    return target


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


# ---------------------------------------------------------------- the lab scan itself


def test_ranked_lines_carry_their_rank_and_validate(demo_scan: Path) -> None:
    world = load_world(FIXTURES / "demo-world.toml")
    ranks = {name: rank for rank, name in enumerate(world.domain_names, 1)}
    validator = line_validator()
    lines = read_jsonl(demo_scan)
    assert len(lines) == len(ranks)
    for line in lines:
        validator.validate(line)
        assert list(line)[:3] == ["schema_version", "domain", "rank"]
        assert line["rank"] == ranks[line["domain"]] or line["error"]
    assert any(line["error"] for line in lines)  # the demo world's invalid name


SMALL_WORLD = """
[domains."one.example".dns]
"@" = { mx = ["10 mx.one.example"] }
[[domains."one.example".servers]]
hostname = "mx.one.example"
address = "127.0.5.21"

[domains."two.example".dns]
"@" = { mx = ["10 mx.one.example"] }
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ranks_reach_the_line_in_one_process_and_across_workers(
    workers: str, tmp_path: Path
) -> None:
    from scanner.lab import parse_world

    world = parse_world(SMALL_WORLD)
    out = tmp_path / "ranked.jsonl"
    names = ["two.example", "one.example", "bad..example"]
    scan_world(world, tmp_path, out, "--workers", workers, "--input-format", "csv", domains=names)
    ranks = {line["domain"]: line["rank"] for line in read_jsonl(out)}
    assert ranks == {"two.example": 1, "one.example": 2, "bad..example": 3}


def test_scan_writes_its_metadata(demo_scan: Path) -> None:
    metadata = read_metadata(demo_scan)
    assert metadata is not None
    assert metadata.vantage == "lab-a"
    assert metadata.input is not None
    assert metadata.input.name == "top-list.csv"
    assert metadata.input.format == "auto"
    assert metadata.input.date is not None
    assert metadata.finished_at is not None
    assert metadata.finished_at >= metadata.started_at
    assert metadata.resolver == "option"
    assert metadata.options["timeout"] == 2.0
    assert len(metadata.runs) == 1
    document = json.loads(metadata_path(demo_scan).read_text(encoding="utf-8"))
    assert document["format"] == "scanner-scan-metadata"
    assert document == metadata_json(metadata)  # the typed value round-trips


# ---------------------------------------------------------------- stats over the lab files


def test_stats_json_over_lab_results_with_foreign_lines(mixed_file: Path) -> None:
    done = run_scanner("stats", str(mixed_file), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    skipped = document["skipped"]
    assert skipped["not_json"] == 1
    assert skipped["foreign"] == 2
    assert skipped["unknown_schema_versions"] == {"99": 1}
    assert skipped["error_lines"] == 1
    assert "schema_version 99 skipped" in done.stderr
    world = load_world(FIXTURES / "demo-world.toml")
    funnel = {stage["stage"]: stage["domains"] for stage in document["funnel"]}
    assert funnel["domains"] == len(world.domain_names) - 1  # the invalid name is an error line
    counts = [stage["domains"] for stage in document["funnel"]]
    assert counts == sorted(counts, reverse=True)
    # The taxonomy accounts for every domain that leaves the funnel between two policy stages.
    taxonomy = document["taxonomy"]
    fetch = sum(row["domains"] for row in taxonomy if row["category"] == "policy-fetch")
    syntax = sum(row["domains"] for row in taxonomy if row["category"] == "policy-syntax")
    assert funnel["record-valid"] - funnel["policy-fetched"] == fetch
    assert funnel["policy-fetched"] - funnel["policy-valid"] == syntax
    kinds = {(row["category"], row["kind"]) for row in taxonomy}
    expected = {
        ("policy-fetch", "redirect"),
        ("policy-fetch", "http-status"),
        ("policy-fetch", "content-type"),
        ("policy-fetch", "size"),
        ("policy-fetch", "webpki:untrusted"),
        ("policy-syntax", "mode"),
        ("record", "several-records"),
        ("starttls", "stripped"),
        ("starttls", "garbled"),
        ("certificate", "expired"),
        ("certificate", "host-mismatch"),
        ("not-testable", "timeout:greeting"),
        ("not-testable", "connect-refused"),
        ("tls-session", "plaintext-injection"),
    }
    assert expected <= kinds
    assert all(row["kind"] != OTHER for row in taxonomy), [
        r for r in taxonomy if r["kind"] == OTHER
    ]
    for row in taxonomy:
        base = funnel[row["base"]]
        assert row["domains"] <= base
    # 48 ranks: top 10 and top 100 (which holds them all), no four rows of the same domains.
    assert [bucket["name"] for bucket in document["rank_buckets"]] == ["top 10", "top 100"]
    assert document["rank_buckets"][0]["domains"] == 10
    assert document["rank_buckets"][-1]["domains"] == funnel["domains"]
    assert document["files"][0]["vantage"] == "lab-a"


def test_stats_tables_csv_and_html(mixed_file: Path, tmp_path: Path) -> None:
    done = run_scanner(
        "stats",
        str(mixed_file),
        "--csv",
        str(tmp_path / "csv"),
        "--html",
        str(tmp_path / "page.html"),
    )
    assert done.returncode == 0, done.stderr
    for title in (
        "Adoption funnel",
        "Misconfigurations by kind",
        "By MX provider",
        "By rank bucket",
        "Lines skipped",
    ):
        assert title in done.stdout
    names = sorted(path.name for path in (tmp_path / "csv").iterdir())
    assert names == [
        "beside.csv",
        "funnel.csv",
        "providers.csv",
        "ranks.csv",
        "skipped.csv",
        "taxonomy.csv",
        "tlds.csv",
    ]
    with (tmp_path / "csv" / "funnel.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    # Machine ids, the scan date and the input list on every row: scans concatenate.
    assert rows[0] == [
        "scan_date",
        "input",
        "stage",
        "id",
        "domains",
        "of_previous_stage",
        "of_all_domains",
    ]
    assert [row[3] for row in rows[1:]] == [stage.value for stage in STAGES]
    scan_date = read_metadata(mixed_file).scan_date.isoformat()  # type: ignore[union-attr]
    assert {(row[0], row[1]) for row in rows[1:]} == {(scan_date, "top-list.csv")}
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/svg+xml;base64,') >= 4


def with_date(source: Path, target: Path, days_before: int, **changes: Any) -> Path:
    """A copy of a scan whose sidecar says it ran `days_before` days earlier."""
    shutil.copy(source, target)
    metadata = read_metadata(source)
    assert metadata is not None
    moved = replace(
        metadata,
        started_at=metadata.started_at - timedelta(days=days_before),
        finished_at=(metadata.finished_at or metadata.started_at) - timedelta(days=days_before),
        **changes,
    )
    write_metadata(target, moved)
    return target


def test_stats_over_time_gives_the_measures_per_scan_date(demo_scan: Path, tmp_path: Path) -> None:
    older = with_date(demo_scan, tmp_path / "older.jsonl", 7)
    done = run_scanner("stats", str(older), str(demo_scan), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    dates = [scan["date"] for scan in document["over_time"]]
    assert len(dates) == 2
    assert dates == sorted(dates)
    assert document["scan_date"] == dates[-1]
    assert document["over_time"][0]["funnel"] == document["over_time"][1]["funnel"]
    tables = run_scanner("stats", str(older), str(demo_scan))
    assert "Over time" in tables.stdout


def test_stats_over_time_refuses_different_input_lists_unless_forced(
    demo_scan: Path, tmp_path: Path
) -> None:
    metadata = read_metadata(demo_scan)
    assert metadata is not None
    assert metadata.input is not None
    other = replace(metadata.input, name="another-list.csv")
    older = with_date(demo_scan, tmp_path / "older.jsonl", 7, input=other)
    refused = run_scanner("stats", str(older), str(demo_scan), "--json")
    assert refused.returncode == 2
    assert "input list differs" in refused.stderr
    assert refused.stdout == ""
    forced = run_scanner("stats", str(older), str(demo_scan), "--json", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "warning: input list differs" in forced.stderr
    assert json.loads(forced.stdout)["problems"][0]["severity"] == "refuse"


def test_stats_over_time_refuses_different_vantages(demo_scan: Path, tmp_path: Path) -> None:
    older = with_date(demo_scan, tmp_path / "older.jsonl", 1, vantage="lab-b")
    refused = run_scanner("stats", str(older), str(demo_scan))
    assert refused.returncode == 2
    assert "vantage differs" in refused.stderr


def test_shards_of_one_date_are_counted_together(demo_scan: Path, tmp_path: Path) -> None:
    lines = demo_scan.read_text(encoding="utf-8").splitlines(keepends=True)
    first, second = tmp_path / "shard0.jsonl", tmp_path / "shard1.jsonl"
    first.write_text("".join(lines[::2]), encoding="utf-8")
    second.write_text("".join(lines[1::2]), encoding="utf-8")
    for part in (first, second):
        shutil.copy(metadata_path(demo_scan), metadata_path(part))
    together = json.loads(run_scanner("stats", str(first), str(second), "--json").stdout)
    whole = json.loads(run_scanner("stats", str(demo_scan), "--json").stdout)
    assert together["funnel"] == whole["funnel"]
    assert together["taxonomy"] == whole["taxonomy"]
    assert len(together["over_time"]) == 1


def test_unreadable_input_is_a_usage_error(tmp_path: Path) -> None:
    done = run_scanner("stats", str(tmp_path / "missing.jsonl"))
    assert done.returncode == 2


def test_stats_of_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    done = run_scanner("stats", str(empty), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["domains"] == 0


# ---------------------------------------------------------------- groups


@pytest.mark.parametrize(
    ("hostname", "provider"),
    [
        ("mx1.mail.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("aspmx.l.google.com", "google.com"),
        ("mx.shop.example.com.au", "example.com.au"),
        ("EXAMPLE.COM.AU.", "example.com.au"),
        ("mx.user.github.io", "github.io"),  # private section: not a provider boundary
        ("co.uk", "co.uk"),  # a suffix itself
        ("mx1.provider.example", "provider.example"),  # unknown TLD: its last label is the suffix
    ],
    ids=[
        "co.uk",
        "co.uk-apex",
        "com",
        "com.au",
        "com.au-case-dot",
        "private-section",
        "suffix",
        "unknown-tld",
    ],
)
def test_providers_are_registrable_domains_under_the_icann_section(
    hostname: str, provider: str
) -> None:
    assert registrable_domain(hostname) == provider


def test_provider_is_of_the_most_preferred_mx() -> None:
    record = base_record(
        mx=[host("mx.backup.example.com.au", 20), host("mx1.mail.example.co.uk", 10)],
    )
    assert mx_provider(scan_line(record, 2)) == "example.co.uk"
    assert mx_provider(scan_line(base_record(mx=[], mx_lookup={"null_mx": True}), 2)) == "(null MX)"
    implicit = base_record(domain="shop.example.com.au", mx=[], mx_lookup={"implicit": True})
    assert mx_provider(scan_line(implicit, 2)) == "example.com.au"


@pytest.mark.parametrize(
    ("rank", "buckets"),
    [
        (None, ()),
        (1, ("top 10", "top 100", "top 1k", "top 10k", "top 100k", "top 1M")),
        (1000, ("top 1k", "top 10k", "top 100k", "top 1M")),
        (1001, ("top 10k", "top 100k", "top 1M")),
        (1_000_000, ("top 1M",)),
        (1_000_001, ("beyond 1M",)),
    ],
)
def test_rank_buckets_are_cumulative(rank: int | None, buckets: tuple[str, ...]) -> None:
    assert rank_buckets(rank) == buckets


@pytest.mark.parametrize(
    ("highest", "shown"),
    [
        (7, ("top 10",)),
        (402, ("top 10", "top 100", "top 1k")),
        (1_000_000, ("top 10", "top 100", "top 1k", "top 10k", "top 100k", "top 1M")),
        (1_500_000, (*(name for _, name in RANK_BUCKETS), "beyond 1M")),
    ],
)
def test_rank_buckets_shown_are_sized_to_the_ranks(highest: int, shown: tuple[str, ...]) -> None:
    assert shown_buckets(highest) == shown


def test_tld_is_the_last_label() -> None:
    assert tld("shop.example.co.uk") == "uk"
    assert tld("xn--bcher-kva.xn--p1ai.") == "xn--p1ai"


# ---------------------------------------------------------------- kinds


@pytest.mark.parametrize(
    ("detail", "kind"),
    [
        ("no _mta-sts TXT record (nxdomain)", "no-record"),
        ("no v=STSv1 record", "no-record"),
        (
            "no v=STSv1 record ('v=STSv1 id=1' is not it: 'v=STSv1' must be followed by ';' and the fields)",
            "near-miss",
        ),
        ("2 v=STSv1 records; exactly one is required, so senders see no policy", "several-records"),
        (
            "v=STSv1 record 'v=STSv1; id=a-b' is invalid: id 'a-b' must be 1 to 32 letters and digits",
            "invalid-id",
        ),
        ("v=STSv1 record 'v=STSv1;' has no id field", "missing-id"),
        ("_mta-sts TXT lookup failed (servfail: )", "lookup-failed"),
        ("something new", OTHER),
    ],
)
def test_record_error_kinds(detail: str, kind: str) -> None:
    assert record_error_kind(detail) == kind


@pytest.mark.parametrize(
    ("result_type", "detail", "problem"),
    [
        (
            "sts-policy-fetch-error",
            "policy host mta-sts.x.example does not exist in DNS (NXDOMAIN); publish",
            ("fetch", "dns"),
        ),
        (
            "sts-policy-fetch-error",
            "could not connect to policy host mta-sts.x.example port 443: 192.0.2.1: connection refused",
            ("fetch", "connect"),
        ),
        (
            "sts-policy-fetch-error",
            "policy host mta-sts.x.example (192.0.2.1) answered HTTP 301 redirect to https://x/",
            ("fetch", "redirect"),
        ),
        (
            "sts-policy-fetch-error",
            "policy host mta-sts.x.example (192.0.2.1) answered HTTP 404 Not Found for /.well-known/mta-sts.txt; only 200 is a policy",
            ("fetch", "http-status"),
        ),
        (
            "sts-webpki-invalid",
            "policy host mta-sts.x.example (192.0.2.1): certificate expired on 2020-01-01 00:00:00Z (X509_V_ERR_CERT_HAS_EXPIRED)",
            ("fetch", "webpki:expired"),
        ),
        (
            "sts-policy-invalid",
            "policy host mta-sts.x.example (192.0.2.1) served the policy as 'text/html', not text/plain; strict senders reject it",
            ("fetch", "content-type"),
        ),
        (
            "sts-policy-invalid",
            "line 2 'mode: Enforce': mode must be enforce, testing or none (case-sensitive)",
            ("syntax", "mode"),
        ),
        (
            "sts-policy-invalid",
            "line 4 'max_age: 99999999999': max_age must be 1 to 10 digits",
            ("syntax", "max-age"),
        ),
        ("sts-policy-invalid", "the policy is empty", ("syntax", "empty")),
        (None, "no v=STSv1 record", None),
    ],
    ids=[
        "dns",
        "connect",
        "redirect",
        "status",
        "webpki",
        "content-type",
        "mode",
        "max-age",
        "empty",
        "none",
    ],
)
def test_policy_problem_kinds_of_version_2_words(
    result_type: str | None, detail: str, problem: tuple[str, str] | None
) -> None:
    """A version 1 or 2 line's words name the code a version 3 line carries."""
    code = legacy_sts_error_code(result_type, detail)
    assert policy_problem(result_type, code) == problem


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("busy:421 4.7.0 mx.example Error: too many connections <img src=x>", "busy:421"),
        ("timeout:greeting (partial 220- received)", "timeout:greeting"),
        ("connect-failed: EHOSTUNREACH", "connect-failed:EHOSTUNREACH"),
        ("connect-failed: something odd", "connect-failed"),
        ("closed:ehlo", "closed:ehlo"),
        ("rejected:554 go away", "rejected:554"),
        ("over-limit: --max-addresses ...", "over-limit"),
        ("\x1b[2Jbusy", OTHER),
    ],
)
def test_not_testable_kinds_never_copy_free_text(reason: str, kind: str) -> None:
    assert kind_of(reason, NOT_TESTABLE_KINDS) == kind


# ---------------------------------------------------------------- the funnel, by property

# Hypothesis spends far more on each value it draws than the code under test spends on
# a record, so independent choices among a few values are drawn as one, from all their
# combinations (each combination as likely as drawing the choices one by one).

MODES = ["enforce", "testing", "none", "Enforce"]
RESULT_TYPES = [
    None,
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
    "something-else",
]
DETAILS = [
    "no v=STSv1 record",
    "2 v=STSv1 records; exactly one",
    "policy host m (1.2.3.4) answered HTTP 404 x",
    "policy host m (1.2.3.4) served the policy as 'text/html', not text/plain",
    "line 1 'x': mode must be",
    "",
]
BOOLEANS = [False, True]


def combinations(*choices: list[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    """One of each of `choices`, as one draw."""
    return st.sampled_from(list(itertools.product(*choices)))


def host(
    name: str,
    preference: int | None = 10,
    source: str = "dns",
    addresses: list[dict[str, Any]] | None = None,
    in_policy: bool | None = True,
) -> dict[str, Any]:
    return {
        "hostname": name,
        "preference": preference,
        "source": source,
        "in_policy": in_policy,
        "addresses": addresses if addresses is not None else [],
    }


def base_record(domain: str = "example.com", **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema_version": 2,
        "domain": domain,
        "rank": None,
        "scanned_at": "2026-11-28T04:00:00Z",
        "error": None,
        "mta_sts": {"record": None, "id": None, "policy": None, "policy_text": None, "error": None},
        "tlsrpt": {"record": None, "rua": [], "error": "no v=TLSRPTv1 record"},
        "mx_lookup": {"status": "answer", "null_mx": False, "implicit": False, "detail": None},
        "mx": [],
        "over_limit": [],
        "indicators": [],
        "enforce_ready": False,
        "blockers": [],
        "warnings": [],
        "report": None,
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    return record


# An address's result types: any list of up to two (repeats included), one as likely as another.
RESULT_TYPE_LISTS = [
    (),
    *(
        kinds
        for size in (1, 2)
        for kinds in itertools.product(
            ["certificate-expired", "starttls-not-supported"], repeat=size
        )
    ),
]


def address(
    choices: tuple[str, str, str | None, str | int | None, tuple[str, ...], int | None],
) -> dict[str, Any]:
    ip, status, reason, starttls, result_types, attempts = choices
    return {
        "ip": ip,
        "status": status,
        "reason": reason,
        "starttls": starttls,
        "result_types": list(result_types),
        "attempts": attempts,
    }


addresses = st.lists(
    st.builds(
        address,
        combinations(
            ["192.0.2.1", "192.0.2.2", "2001:db8::1"],
            ["tested", "not-testable", "weird"],
            [None, "timeout:greeting", "busy:421 x"],
            [None, "offered", "missing", "stripped", 3],
            RESULT_TYPE_LISTS,
            [None, 1, 3],
        ),
    ),
    max_size=3,
)
# No policy half the time, else one of each mode and max_age (`st.one_of` of the two).
POLICIES: list[tuple[str, int] | None] = [None] * len(MODES) * 11 + list(
    itertools.product(MODES, range(11))
)


def funnel_record(
    choices: tuple[Any, ...], policy: tuple[str, int] | None, hosts: list[dict[str, Any]]
) -> dict[str, Any]:
    sts_record, error_type, detail, null_mx, implicit, ready, tlsrpt = choices
    return base_record(
        mta_sts={
            "record": sts_record,
            "id": "1" if sts_record else None,
            "policy": None
            if policy is None
            else {"mode": policy[0], "mx": ["mx.example"], "max_age": policy[1]},
            "error": {"result_type": error_type, "detail": detail}
            if error_type or detail
            else None,
        },
        mx_lookup={"null_mx": null_mx, "implicit": implicit},
        mx=hosts,
        enforce_ready=ready,
        tlsrpt={"record": tlsrpt},
    )


records = st.builds(
    funnel_record,
    combinations(
        [None, "v=STSv1; id=1", 7],
        RESULT_TYPES,
        DETAILS,
        BOOLEANS,
        BOOLEANS,
        BOOLEANS,
        [None, "v=TLSRPTv1; rua=mailto:x@example.com"],
    ),
    st.sampled_from(POLICIES),
    st.lists(
        st.builds(
            lambda a, source_in_policy: host(
                "mx.example", source=source_in_policy[0], addresses=a, in_policy=source_in_policy[1]
            ),
            addresses,
            combinations(["dns", "policy"], [None, True, False]),
        ),
        max_size=3,
    ),
)


@settings(max_examples=300)
@given(st.lists(records, max_size=30))
def test_each_funnel_stage_is_at_most_the_one_before(lines: list[dict[str, Any]]) -> None:
    lines = [{**line, "domain": f"d{number}.example"} for number, line in enumerate(lines)]
    statistics = adoption_statistics(lines)
    funnel = statistics.latest.total.funnel
    assert funnel[0] == len(lines)
    assert all(later <= earlier for earlier, later in itertools.pairwise(funnel))
    scan = statistics.latest
    for category in CATEGORIES:
        base = funnel[STAGES.index(category.base)]
        for (name, _), domains in scan.taxonomy_domains.items():
            if name == category.name:
                assert domains <= base
    for count in scan.total.beside.values():
        assert count <= funnel[0]
    document = statistics_json(statistics, [])
    for stage in document["funnel"]:
        share = stage["share_of_previous"]
        assert share is None or 0.0 <= share <= 1.0


def test_a_domain_reaches_enforce_ready_only_through_every_stage() -> None:
    ready_without_mx = base_record(
        mta_sts={
            "record": "v=STSv1; id=1",
            "id": "1",
            "policy": {"mode": "enforce", "mx": [], "max_age": 1},
        },
        enforce_ready=True,
    )
    statistics = adoption_statistics([ready_without_mx])
    assert statistics.latest.total.funnel[STAGES.index(Stage.ENFORCE_READY)] == 0
    assert statistics.latest.total.funnel[STAGES.index(Stage.WITH_MX)] == 0


def test_error_and_foreign_records_are_skipped() -> None:
    lines: list[Any] = [
        base_record(domain="slow.example", error="timeout: the domain's scan exceeded 60 s"),
        {"schema_version": 4, "domain": "x.example"},
        {"schema_version": "2", "domain": "x.example"},
        {"domain": "no-version.example"},
        ["not", "an", "object"],
        base_record(mx=[host("mx.example.com")]),
    ]
    statistics = adoption_statistics(lines)
    assert statistics.latest.total.domains == 1
    assert statistics.error_lines == 1
    assert statistics.skipped.unknown_versions == {"4": 1, '"2"': 1}
    assert statistics.skipped.foreign == 2
    assert classify_record(lines[1]) == "4"


def iter_kinds() -> Iterator[str]:
    for category in CATEGORIES:
        yield category.name


def test_category_names_are_unique_words() -> None:
    names = list(iter_kinds())
    assert len(names) == len(set(names))
    assert all(name.replace("-", "").isalpha() for name in names)


def test_dane_statuses_are_counted_beside_mta_sts() -> None:
    """RFC 7672 beside MTA-STS: addresses' DANE statuses in the taxonomy; unvalidated left out."""

    def line(domain: str, statuses: list[str]) -> dict[str, Any]:
        addresses = [
            {
                "ip": f"192.0.2.{n}",
                "status": "tested",
                "reason": None,
                "starttls": "offered",
                "tls": {"version": "TLSv1.3", "cipher": "x"},
                "certificate": None,
                "result_types": [],
                "transcript": [],
                "dane": {"status": status},
            }
            for n, status in enumerate(statuses, 1)
        ]
        return {
            "schema_version": 2,
            "domain": domain,
            "error": None,
            "mx_lookup": {"status": "answer", "null_mx": False, "implicit": False, "detail": None},
            "mx": [
                {
                    "hostname": f"mx.{domain}",
                    "preference": 10,
                    "source": "dns",
                    "addresses": addresses,
                }
            ],
        }

    statistics = adoption_statistics(
        [
            line("a.example", ["pass", "fail"]),
            line("b.example", ["pass"]),
            line("c.example", ["unvalidated"]),
        ]
    )
    rows = {
        row["kind"]: row
        for row in statistics_json(statistics, [])["taxonomy"]  # type: ignore[attr-defined]
        if row["category"] == "dane"
    }
    assert {kind: (row["domains"], row["sessions"]) for kind, row in rows.items()} == {
        "pass": (2, 2),
        "fail": (1, 1),
    }


# ---------------------------------------------------------------- codes (schema 3)


def documented_codes() -> set[str]:
    """Every code in backticks in docs/output.md's code tables and vocabularies."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "output.md").read_text("utf-8")
    codes = text.split("## Codes", 1)[1].split("## Readiness", 1)[0]
    indicators = text.split("### Indicators", 1)[1].split("## Result types", 1)[0]
    return set(re.findall(r"`([a-z0-9:.-]+)`", codes + indicators))


def test_every_problem_of_the_demo_carries_a_documented_code(demo_scan: Path) -> None:
    documented = documented_codes()
    known = {c.value for c in ProblemCode} | {c.value for c in IndicatorCode}
    seen: set[str] = set()
    for record in read_jsonl(demo_scan):
        assert record["schema_version"] == 3
        for problem in record["blockers"] + record["warnings"]:
            assert set(problem) == {"code", "text", "host", "address", "cause"}
            assert problem["code"] in known, problem
            assert problem["code"] in documented, problem
            seen.add(problem["code"])
        error = record["mta_sts"]["error"]
        if error is not None:
            assert error["code"] in documented, error
        if record["tlsrpt"]["error"] is not None:
            assert record["tlsrpt"]["error_code"] in documented
        for host in record["mx"]:
            for address in host["addresses"]:
                assert (address["reason"] is None) is (address["reason_code"] is None)
    # The demo world has one domain or more for every behaviour of the lab.
    assert {"no-sts-record", "not-testable", "starttls-missing", "no-tlsrpt-record"} <= seen


NONSENSE = "lorem ipsum"


def _words_replaced(record: dict[str, Any]) -> dict[str, Any]:
    """A schema 3 line with every text that states a problem replaced by nonsense."""
    copy = json.loads(json.dumps(record))
    for key in ("blockers", "warnings"):
        for problem in copy[key]:
            problem["text"] = NONSENSE
    if copy["mta_sts"]["error"] is not None:
        copy["mta_sts"]["error"]["detail"] = NONSENSE
    if copy["tlsrpt"]["error"] is not None:
        copy["tlsrpt"]["error"] = NONSENSE
    for indicator in copy["indicators"]:
        indicator["detail"] = NONSENSE
    for host in copy["mx"]:
        for address in host["addresses"]:
            if address["reason"] is not None:
                address["reason"] = NONSENSE
    return copy


def as_version_2(record: dict[str, Any]) -> dict[str, Any]:
    """A schema 3 line as version 2 wrote it: words only, no codes."""
    copy = json.loads(json.dumps(record))
    copy["schema_version"] = 2
    for key in ("blockers", "warnings"):
        copy[key] = [problem["text"] for problem in copy[key]]
    if copy["mta_sts"]["error"] is not None:
        del copy["mta_sts"]["error"]["code"]
    del copy["tlsrpt"]["error_code"]
    for host in copy["mx"]:
        for address in host["addresses"]:
            del address["reason_code"]
    return copy


def test_statistics_read_codes_not_words(demo_scan: Path) -> None:
    records = read_jsonl(demo_scan)
    original = statistics_json(adoption_statistics(records), [])
    nonsense = statistics_json(adoption_statistics([_words_replaced(r) for r in records]), [])
    assert nonsense == original
    taxonomy = original["taxonomy"]
    assert isinstance(taxonomy, list)
    assert taxonomy  # there is something to count


def test_a_version_2_copy_of_a_scan_gives_the_same_statistics_and_no_diff(
    demo_scan: Path, tmp_path: Path
) -> None:
    records = read_jsonl(demo_scan)
    old = tmp_path / "version-2.jsonl"
    old.write_text("".join(json.dumps(as_version_2(r)) + "\n" for r in records), "utf-8")
    shutil.copy(metadata_path(demo_scan), metadata_path(old))
    assert statistics_json(adoption_statistics(read_jsonl(old)), []) == statistics_json(
        adoption_statistics(records), []
    )
    tally = SkipTally()
    changes = compare_snapshots(load_snapshots(old, tally), load_snapshots(demo_scan, tally))
    assert tally.read == 2 * len(records)
    assert changes == []
    # A real change in the version 3 file is seen against the version 2 one.
    changed = [json.loads(json.dumps(r)) for r in records]
    for record in changed:
        if record["error"] is None and record["mta_sts"]["error"] is None:
            record["mta_sts"]["error"] = {
                "result_type": "sts-policy-fetch-error",
                "code": "http-status",
                "detail": NONSENSE,
            }
            break
    new = tmp_path / "changed.jsonl"
    new.write_text("".join(json.dumps(r) + "\n" for r in changed), "utf-8")
    worse = compare_snapshots(load_snapshots(old, tally), load_snapshots(new, tally))
    assert [change.kind for change in worse] == [ChangeKind.POLICY_BROKEN]


# ---------------------------------------------------------------- a domain counts once


def _scanned(domain: str, at: str, **changes: Any) -> dict[str, Any]:
    return base_record(domain=domain, scanned_at=at, **changes)


def test_a_list_scanned_twice_on_one_day_counts_once(demo_scan: Path, tmp_path: Path) -> None:
    twice = tmp_path / "twice.jsonl"
    twice.write_text(demo_scan.read_text("utf-8") * 2, "utf-8")
    lines = read_jsonl(demo_scan)
    once = statistics_json(adoption_statistics(lines), [])
    builder = StatisticsBuilder()
    builder.add_file(demo_scan, load_file_metadata(demo_scan))
    builder.add_file(twice, load_file_metadata(twice))
    statistics = builder.result()
    result = statistics_json(statistics, [])
    scanned = {line["domain"] for line in lines if line["error"] is None}
    assert result["domains"] == once["domains"] == len(scanned)
    assert result["funnel"] == once["funnel"]
    assert result["taxonomy"] == once["taxonomy"]
    assert statistics.superseded == 2 * len(lines)
    assert statistics.latest.overlap.by_file == {str(demo_scan): len(lines), str(twice): len(lines)}


def test_the_latest_line_of_a_domain_counts_and_shards_add_up() -> None:
    null = {"mx_lookup": {"status": "answer", "null_mx": True, "implicit": False, "detail": None}}
    records = [
        _scanned("a.example", "2026-11-28T04:00:00Z"),
        _scanned("b.example", "2026-11-28T04:00:01Z"),
        # A later line of a.example, a null MX now: it wins.
        _scanned("a.example", "2026-11-28T05:00:00Z", **null),
        # An earlier line of b.example after it in file order: it does not win.
        _scanned("b.example", "2026-11-28T03:00:00Z", **null),
    ]
    statistics = adoption_statistics(records)
    assert statistics.latest.total.domains == 2
    assert statistics.superseded == 2
    # Latest wins: a.example only (first wins: none; last written wins: both).
    assert statistics.latest.total.beside["null-mx"] == 1
    # Shards: different domains, one date, no overlap.
    shards = adoption_statistics(records[:2])
    assert (shards.latest.total.domains, shards.superseded) == (2, 0)


# ---------------------------------------------------------------- DANE beside the funnel


def test_dane_is_not_measured_through_a_resolver_that_does_not_validate(demo_scan: Path) -> None:
    document = statistics_json(adoption_statistics(read_jsonl(demo_scan)), [])
    beside = document["beside"]
    assert isinstance(beside, dict)
    assert beside["dane-measured"] == 0
    assert beside["dane-all-pass"] is None  # not 0 %: nothing could be said
    assert beside["dane-tlsa-published"] is None


def _dane_host(name: str, mx_dnssec: str, tlsa: int, *statuses: str) -> dict[str, Any]:
    addresses = [
        {
            "ip": f"192.0.2.{n}",
            "status": "tested",
            "starttls": "offered",
            "dane": {"status": status},
        }
        for n, status in enumerate(statuses, 1)
    ]
    return {
        **host(name, addresses=addresses),
        "dane": {
            "tlsa": ["3 1 1 " + "ab" * 32] * tlsa,
            "dnssec": "secure" if tlsa else mx_dnssec,
            "mx_dnssec": mx_dnssec,
        },
    }


def test_dane_counts_a_domain_when_all_its_sessions_pass() -> None:
    records = [
        base_record("all.example", mx=[_dane_host("mx.all.example", "secure", 1, "pass", "pass")]),
        base_record(
            "some.example",
            mx=[
                _dane_host("a.some.example", "secure", 1, "pass"),
                _dane_host("b.some.example", "secure", 0, "no-tlsa"),
            ],
        ),
        base_record(
            "unsigned.example", mx=[_dane_host("mx.unsigned.example", "insecure", 0, "insecure")]
        ),
    ]
    beside = statistics_json(adoption_statistics(records), [])["beside"]
    assert isinstance(beside, dict)
    assert beside["dane-measured"] == 3
    assert beside["dane-mx-secure"] == 2
    assert beside["dane-tlsa-published"] == 2  # any MX host with TLSA
    assert beside["dane-all-pass"] == 1  # every session: some.example's b host has none


def test_not_adopting_is_no_misconfiguration_and_null_mx_is_left_out() -> None:
    null = {"mx_lookup": {"status": "answer", "null_mx": True, "implicit": False, "detail": None}}
    no_record = {"error": {"result_type": None, "detail": "no _mta-sts TXT record (nxdomain)"}}
    records = [
        base_record(
            "plain.example",
            mx=[host("mx.plain.example")],
            mta_sts={**base_record()["mta_sts"], **no_record},
        ),
        base_record("null.example", mta_sts={**base_record()["mta_sts"], **no_record}, **null),
    ]
    document = statistics_json(adoption_statistics(records), [])
    kinds = {(row["category"], row["kind"]) for row in document["taxonomy"]}  # type: ignore[union-attr]
    assert ("record", "no-record") not in kinds
    assert ("tlsrpt", "no-record") not in kinds
    beside = document["beside"]
    assert isinstance(beside, dict)
    assert beside["mta-sts-not-adopted"] == 1  # the null MX domain takes no mail
    assert beside["tlsrpt-not-adopted"] == 1
