"""`scanner tlsrpt html`: one offline page, report text escaped, charts as SVG images.

A database whose reports name a hostile organization (HTML and mathtext) goes through
the real command; the page is checked as text, then rendered in headless Chromium
(`@pytest.mark.browser`), where the hostile name must be text and the charts and
tables must be there.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from headless import headless_chromium
from test_received_builders import POLICY_DOMAIN, clean_report, report_dict

from scanner.received.authenticity import HTTPS_RECEIVED, NOT_EMAIL
from scanner.received.records import Provenance
from scanner.received.report import ParsedReport, parse_report_value
from scanner.received.store import ReportStore

HOSTILE = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
MATH = r"$\alpha^2$"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
NOW = datetime(2026, 4, 5, tzinfo=UTC)
ENV = {**os.environ, "COLUMNS": "300"}


def add(store: ReportStore, report: dict[str, object], https: bool = True) -> None:
    parsed = parse_report_value(report)
    assert isinstance(parsed, ParsedReport)
    store.add(parsed, Provenance(HTTPS_RECEIVED if https else NOT_EMAIL, "test"), NOW)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "reports.sqlite"
    with ReportStore.open(path) as store:
        for day in ("2026-04-01", "2026-04-02", "2026-04-03"):
            add(store, report_dict(day=day, report_id=f"x-{day}"))
            add(
                store,
                clean_report(day=day, report_id=f"h-{day}", organization=HOSTILE, successful=900),
                https=False,
            )
        add(
            store,
            report_dict(
                day="2026-04-02",
                report_id="m",
                organization=MATH,
                details=[
                    {
                        "result-type": f"validation-failure {HOSTILE}",
                        "failed-session-count": 7,
                        "sending-mta-ip": "192.0.2.9",
                    }
                ],
                failed=7,
            ),
        )
        add(store, report_dict(day="2026-04-02", report_id="o", domain="other.example"))
    return path


def run_html(database: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "scanner",
            "tlsrpt",
            "html",
            "--out",
            str(out),
            "--db",
            str(database),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        env=ENV,
        timeout=300,
    )


@pytest.fixture
def page(database: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out" / "tlsrpt.html"
    done = run_html(database, out, "--domain", POLICY_DOMAIN)
    assert done.returncode == 0, done.stderr
    return out


def chart_svgs(html: str) -> list[str]:
    found = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    return [base64.b64decode(match).decode("utf-8") for match in found]


def test_page_is_offline_and_escapes_report_text(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in html
    assert "<script" not in html.lower()
    assert HOSTILE not in html
    assert ESCAPED in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    svgs = chart_svgs(html)
    assert len(svgs) == 3  # per day, by result type, by organization (one domain)
    joined = "".join(svgs)
    assert "<script" not in joined
    assert HOSTILE not in joined
    assert ESCAPED in joined  # the result type label, drawn as text
    assert MATH in joined  # the organization label: no mathtext, the dollars stay
    for title in (
        "Sessions per day",
        "Failures by result type",
        "Failures by reporting organization",
        "By reporting organization",
        "Per UTC day",
        "Reporting organizations",
        "Failures by sending MTA IP",
    ):
        assert title in html
    assert (
        "other.example" not in html.split('id="sources"')[0]
    )  # --domain keeps one domain's sections


def test_every_domain_and_since(database: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.html"
    assert run_html(database, out).returncode == 0
    html = out.read_text(encoding="utf-8")
    assert html.count('<section class="domain">') == 2
    assert len(chart_svgs(html)) == 6
    later = tmp_path / "later.html"
    assert run_html(database, later, "--since", "2026-04-03").returncode == 0
    assert "2026-04-02" not in later.read_text(encoding="utf-8").split('id="sources"')[0]


@pytest.mark.parametrize(
    ("args", "words"), [(["--since", "April"], "YYYY-MM-DD"), ([], "no database")]
)
def test_usage_errors(tmp_path: Path, args: list[str], words: str) -> None:
    done = run_html(tmp_path / "missing.sqlite", tmp_path / "x.html", *args)
    assert done.returncode == 2
    assert words in done.stderr


def test_without_matplotlib_says_how_to_install(database: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.argv = ['scanner', 'tlsrpt', 'html', '--out', "
        f"{str(tmp_path / 'x.html')!r}, '--db', {str(database)!r}]; from scanner.cli import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 2
    assert "scanner[charts]" in done.stderr
    assert not (tmp_path / "x.html").exists()


@pytest.mark.browser
def test_page_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    browser = headless_chromium(tmp_path / "profile")
    dom = browser.dom(page)
    assert dom.count('src="data:image/svg+xml;base64,') == 3
    assert dom.count("<table") == 7  # five of the summary, two of the sources
    assert ESCAPED in dom  # the organization shows as text
    assert '<img src="x"' not in dom
    assert "onerror" not in re.sub(r"&lt;.*?&gt;", "", dom)
    size = browser.screenshot(page, tmp_path / "page.png")
    assert size > 20_000
