"""`scanner stats --html`: one offline page, escaped text, charts as SVG images.

A results file whose MX host name, TLD and input list name are hostile HTML and
mathtext goes through the real command; the page is checked as text, then rendered in
headless Chromium (`@pytest.mark.browser`), where the hostile label must be text and
the charts and tables must be there.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from commands import invoke, run_command
from headless import headless_chromium

from scanner.research.metadata import InputList, ScanMetadata, write_metadata

HOSTILE = "<img src=x onerror=alert(1)>"
MATH = r"$\alpha^2$"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def record(domain: str, mx: str, rank: int, ready: bool) -> dict[str, Any]:
    return {
        "schema_version": 2,
        "domain": domain,
        "rank": rank,
        "scanned_at": "2026-11-28T04:00:00Z",
        "error": None,
        "mta_sts": {
            "record": "v=STSv1; id=1",
            "id": "1",
            "policy": {"version": "STSv1", "mode": "testing", "mx": [mx], "max_age": 604800},
            "policy_text": None,
            "error": None,
        },
        "tlsrpt": {"record": None, "rua": [], "error": "no v=TLSRPTv1 record"},
        "mx_lookup": {"status": "answer", "null_mx": False, "implicit": False, "detail": None},
        "mx": [
            {
                "hostname": mx,
                "preference": 10,
                "source": "dns",
                "in_policy": True,
                "addresses": [
                    {
                        "ip": "192.0.2.1",
                        "status": "not-testable",
                        "reason": f"busy:421 {HOSTILE}",
                        "starttls": None,
                        "tls": None,
                        "certificate": None,
                        "result_types": [],
                        "transcript": [f"S: 421 {HOSTILE}"],
                    }
                ],
            }
        ],
        "indicators": [],
        "enforce_ready": ready,
        "blockers": [],
        "warnings": [],
        "report": None,
    }


def metadata(name: str) -> ScanMetadata:
    started = datetime(2026, 11, 28, 4, tzinfo=UTC)
    return ScanMetadata(
        scanner_version="0.1.0",
        started_at=started,
        finished_at=started,
        vantage="lab",
        public_addresses=(),
        resolver="option",
        nameservers=("127.0.0.1:53",),
        ehlo_name="scanner.example",
        input=InputList(name=name, date="2026-11-27", sha256=None, format="csv"),
        options={},
        runs=(),
    )


def hostile_results(tmp_path: Path) -> tuple[Path, Path]:
    """Two results files (a week apart) whose lines name hostile text."""
    results = tmp_path / "hostile.jsonl"
    lines = [
        record("a.example.co.uk", "mx.provider.co.uk", 5, True),
        record("b.example.com.au", "mx.provider.co.uk", 50_000, False),
        record("c.example", HOSTILE, 2_000, False),
        record(f"d.{MATH}", f"mx.{MATH}", 3, False),
    ]
    results.write_text(
        "".join(json.dumps(line) + "\n" for line in lines) + "not json\n", encoding="utf-8"
    )
    write_metadata(results, metadata(HOSTILE))
    older = tmp_path / "older.jsonl"
    shutil.copy(results, older)
    write_metadata(older, replace(metadata(HOSTILE), started_at=datetime(2026, 11, 21, tzinfo=UTC)))
    return older, results


@pytest.fixture
def page(tmp_path: Path) -> Path:
    older, results = hostile_results(tmp_path)
    target = tmp_path / "out" / "stats.html"
    done = run_command("stats", str(older), str(results), "--html", str(target))
    assert done.returncode == 0, done.stderr
    return target


def chart_svgs(html: str) -> list[str]:
    return [
        base64.b64decode(m).decode("utf-8")
        for m in re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    ]


def test_page_is_offline_and_escapes_hostile_text(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in html
    assert "<script" not in html.lower()
    assert HOSTILE not in html  # never as markup
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing to fetch
    svgs = chart_svgs(html)
    assert len(svgs) == 5  # funnel, taxonomy, providers, ranks, over time
    for svg in svgs:
        assert "<script" not in svg
        assert HOSTILE not in svg
    joined = "".join(svgs)
    assert "&lt;img src=x onerror=alert(1)&gt;" in joined  # the label, drawn as text
    assert MATH in joined  # no mathtext: the dollar signs stay
    for title in (
        "Adoption funnel",
        "Misconfigurations by kind",
        "By MX provider",
        "By rank bucket",
        "Over time",
        "Lines skipped",
    ):
        assert title in html


def test_without_matplotlib_the_page_holds_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    older, results = hostile_results(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as without the `charts` extra
    monkeypatch.delitem(sys.modules, "scanner.research.charts", raising=False)
    target = tmp_path / "tables.html"
    done = invoke("stats", str(older), str(results), "--html", str(target))
    assert done.exit_code == 0, done.stderr
    assert "pip install 'scanner[charts]'" in done.stderr
    html = target.read_text(encoding="utf-8")
    assert "pip install &#39;scanner[charts]&#39;" in html
    assert "data:image/svg+xml" not in html
    assert "Adoption funnel" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert HOSTILE not in html


@pytest.mark.browser
def test_page_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    browser = headless_chromium(tmp_path / "profile")
    dom = browser.dom(page)
    assert dom.count('src="data:image/svg+xml;base64,') == 5
    assert dom.count("<table") >= 7
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom  # shown as text
    assert '<img src="x"' not in dom  # never an element
    assert "onerror" not in re.sub(r"&lt;.*?&gt;", "", dom)  # no attribute anywhere
    size = browser.screenshot(page, tmp_path / "page.png")
    assert size > 20_000  # rendered charts, not a blank page
