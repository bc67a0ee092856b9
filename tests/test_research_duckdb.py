"""The README's DuckDB queries run over result files of two versions, error lines and all."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def queries() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Querying result files with DuckDB", 1)[1]
    found = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)
    assert len(found) == 2
    return found


def session(ip: str, starttls: str | None, status: str = "tested") -> dict[str, Any]:
    return {
        "ip": ip,
        "status": status,
        "reason": None,
        "starttls": starttls,
        "tls": None,
        "certificate": None,
        "result_types": [],
        "transcript": [],
    }


def line(
    domain: str, mode: str | None, sessions: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "domain": domain,
        "scanned_at": "2026-11-28T04:00:00Z",
        "error": None,
        "mta_sts": {
            "record": None,
            "id": None,
            "policy": {"mode": mode, "mx": ["mx.example"], "max_age": 1} if mode else None,
            "policy_text": None,
            "error": None,
        },
        "tlsrpt": {"record": None, "rua": [], "error": None},
        "mx": [
            {
                "hostname": f"mx.{domain}",
                "preference": 10,
                "source": "dns",
                "in_policy": None,
                "addresses": sessions,
            }
        ],
        "indicators": [],
        "enforce_ready": False,
        "blockers": [],
        "warnings": [],
        "report": None,
        **extra,
    }


def error_line(domain: str, version: int) -> dict[str, Any]:
    return {
        **line(domain, None, []),
        "schema_version": version,
        "error": "timeout: the domain's scan exceeded 60 s",
        "mx": [],
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """An old file (version 1: no rank, no mx_lookup), a newer one with fields added since,
    and one of version 3, whose blockers are objects."""
    old = [
        line("a.example", "testing", [session("192.0.2.1", "offered")]),
        error_line("bad.example", 1),
    ]
    current = [
        line(
            "d.example",
            "testing",
            [{**session("192.0.2.5", "missing"), "reason_code": None}],
            schema_version=3,
            blockers=[
                {
                    "code": "starttls-missing",
                    "text": "mx.d.example (192.0.2.5): STARTTLS is not offered",
                    "host": "mx.d.example",
                    "address": "192.0.2.5",
                    "cause": None,
                }
            ],
        )
    ]
    newer = [
        line(
            "b.example",
            "enforce",
            [session("192.0.2.2", "offered"), session("192.0.2.3", "stripped")],
            schema_version=2,
            rank=7,
            over_limit=[],
            mx_lookup={"status": "answer", "null_mx": False},
            a_field_from_the_future={"nested": [1, 2]},
        ),
        line(
            "c.example",
            None,
            [session("192.0.2.4", None, "not-testable")],
            schema_version=2,
            rank=9,
        ),
        error_line("slow.example", 2),
        # A version this reader does not know: left out by the schema_version test.
        {
            "schema_version": 99,
            "domain": "future.example",
            "mta_sts": {"policy": {"mode": "enforce"}},
        },
    ]
    directory = tmp_path / "results"
    directory.mkdir()
    (directory / "old.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in old), encoding="utf-8"
    )
    (directory / "current.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in current), encoding="utf-8"
    )
    (directory / "new.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in newer) + "not json\n", encoding="utf-8"
    )
    return directory


def run(query: str, directory: Path) -> list[tuple[Any, ...]]:
    sql = query.replace("'results/*.jsonl'", f"'{directory}/*.jsonl'")
    assert sql != query
    return duckdb.sql(sql).fetchall()


def test_policy_modes_query(results: Path) -> None:
    modes, _ = queries()
    assert run(modes, results) == [("testing", 2), ("enforce", 1), ("no valid policy", 1)]


def test_starttls_sessions_query(results: Path) -> None:
    _, sessions = queries()
    assert run(sessions, results) == [("offered", 2), ("missing", 1), ("stripped", 1)]
