"""`scanner tlsrpt html`: an operator's dashboard on one offline page, report text escaped.

Databases are real SQLite stores filled with built reports: one whose reports name a
hostile organization (HTML and mathtext), one with reports far apart in time, and 90
days of reports from a verified and an unverified sender with a gap and a failure
spike (`spike_database`). Pages come from the real command run in-process; the
browser tests (`@pytest.mark.browser`) render them in headless Chromium at 1400 and
800 px and measure the layout.
"""

from __future__ import annotations

import base64
import csv
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from commands import invoke
from headless import headless_chromium
from test_received_builders import POLICY_DOMAIN, clean_report, report_dict

from scanner.received.authenticity import (
    HTTPS_RECEIVED,
    NOT_EMAIL,
    Authenticity,
    AuthMethod,
    AuthStatus,
)
from scanner.received.records import Provenance
from scanner.received.report import ParsedReport, parse_report_value
from scanner.received.store import ReportStore
from scanner.received.summary import (
    DayCount,
    Period,
    SessionCounts,
    TrendDirection,
    failure_trend,
    summarise_domains,
)

HOSTILE = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
MATH = r"$\alpha^2$"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
NOW = datetime(2026, 4, 5, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tlsrpt"
SIGNER = "mail.provider-a.example"
FORMULA = '=HYPERLINK("https://attacker.example","x")'


def signed_by(signer: str) -> Authenticity:
    """What the DKIM verifier gives for a report email whose signature by `signer` verified."""
    return Authenticity(AuthStatus.PASS, AuthMethod.DKIM, f"d={signer} verified", signer)


def add(
    store: ReportStore, report: dict[str, Any], authenticity: Authenticity = HTTPS_RECEIVED
) -> None:
    parsed = parse_report_value(report)
    assert isinstance(parsed, ParsedReport)
    submitter = authenticity.signer
    store.add(parsed, Provenance(authenticity, "test", submitter=submitter), NOW)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once for the module: the tests only read it."""
    path = tmp_path_factory.mktemp("database") / "reports.sqlite"
    with ReportStore.open(path) as store:
        for day in ("2026-04-01", "2026-04-02", "2026-04-03"):
            add(store, report_dict(day=day, report_id=f"x-{day}"))
            add(
                store,
                clean_report(day=day, report_id=f"h-{day}", organization=HOSTILE, successful=900),
                NOT_EMAIL,
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
        add(store, clean_report(day="2026-04-02", report_id="o", domain="other.example"))
    return path


def html_page(database: Path, out: Path, *args: str) -> str:
    done = invoke("tlsrpt", "html", "--out", str(out), "--db", str(database), *args)
    assert done.exit_code == 0, done.stderr
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def domain_page(database: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The page of POLICY_DOMAIN, rendered once for the tests that read it: into a
    folder that does not exist yet."""
    out = tmp_path_factory.mktemp("page") / "out" / "page.html"
    return html_page(database, out, "--domain", POLICY_DOMAIN)


def chart_svgs(html: str) -> list[str]:
    found = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    return [base64.b64decode(match).decode("utf-8") for match in found]


def section(html: str, anchor: str) -> str:
    """The text of `<section ... id="anchor">` up to the next section."""
    start = html.index(f'id="{anchor}"')
    end = html.find("<section", start)
    return html[start : end if end >= 0 else len(html)]


def svg_texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


# ---------------------------------------------------------------- the page as text


def test_page_is_offline_and_escapes_report_text(domain_page: str) -> None:
    html = domain_page
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in html
    assert "<script" not in html.lower()
    assert HOSTILE not in html
    assert ESCAPED in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    svgs = chart_svgs(html)
    # per day, result types over time, organizations, sending IPs (one domain)
    assert len(svgs) == 4
    joined = "".join(svgs)
    assert "<script" not in joined
    assert HOSTILE not in joined
    assert ESCAPED in joined  # the result type label, drawn as text
    assert MATH in joined  # the organization label: no mathtext, the dollars stay
    assert "other.example" not in html.split('id="sources"')[0]  # --domain keeps one domain


def test_overview_of_every_domain_comes_first(database: Path, tmp_path: Path) -> None:
    html = html_page(database, tmp_path / "all.html")
    sections = re.findall(r'<section[^>]*id="([^"]+)"', html)
    assert sections == ["overview", "domain-0", "domain-1", "sources"]
    overview = section(html, "overview")
    for words in (POLICY_DOMAIN, "other.example", "trend", "worst result type"):
        assert words in overview
    assert 'href="#domain-0"' in overview
    # company-y.example: 3 HTTPS reports of 5,629 sessions, 3 file reports of HOSTILE of
    # 900 and the MATH one of 5,333: 7 reports, none DKIM-verified.
    row = re.search(r"company-y\.example</a></td>(.*?)</tr>", overview)
    assert row is not None
    cells = re.findall(r">([^<]*)</td>", row.group(1))
    assert cells[:3] == ["7", "24,920", "916"]
    assert cells[5] == "starttls-not-supported (600)"
    assert cells[6] == "100%"  # every session from reports not verified by DKIM


def test_empty_panels_are_said_in_words_not_drawn(database: Path, tmp_path: Path) -> None:
    html = html_page(database, tmp_path / "other.html", "--domain", "other.example")
    svgs = chart_svgs(html)
    for svg in svgs:  # no all-zero axis, whose ticks run from −0.04 to 0.04
        ticks = [text for text in svg_texts(svg) if re.fullmatch(r"[−-]?[\d.,]+", text)]
        assert ticks
        assert not [tick for tick in ticks if tick.startswith(("−", "-"))]
    assert len(svgs) == 2  # per day, organizations: no failure to chart
    domain = section(html, "domain-0")
    assert "No failure details in this period" in domain
    assert "No failure detail names a sending MTA IP" in domain


@pytest.fixture
def sparse_database(tmp_path: Path) -> Path:
    """Reports on 2024-01-09, 2024-02-22 and 2024-06-01: months apart."""
    path = tmp_path / "sparse.sqlite"
    with ReportStore.open(path) as store:
        for day in ("2024-01-09", "2024-02-22", "2024-06-01"):
            add(store, report_dict(day=day, report_id=f"s-{day}"))
    return path


def test_days_lie_on_a_time_axis_with_the_failure_rate(
    sparse_database: Path, tmp_path: Path
) -> None:
    html = html_page(sparse_database, tmp_path / "sparse.html")
    daily = chart_svgs(html)[0]
    texts = svg_texts(daily)
    # Ticks every four weeks from the first day: 2024-02-06 has no report, and the
    # days are placed by date, not one slot per report.
    assert "2024-02-06" in texts
    assert "no report" in texts  # the days without a report, named in the legend
    assert {"successful", "failed", "failure rate (%)", "sessions"} <= set(texts)
    assert 'id="y2-axis-title"' in daily  # the rate has its own axis, with a title
    days = section(html, "domain-0")
    assert "<details>" in days  # 145 days: the day table is collapsed
    assert re.search(
        r'<td data-label="day">2024-01-10</td>.*?<td data-label="note">no report</td>', days
    )


def test_failures_by_result_type_over_time(domain_page: str) -> None:
    html = domain_page
    svgs = chart_svgs(html)
    over_time = next(svg for svg in svgs if "starttls-not-supported" in svg_texts(svg))
    texts = svg_texts(over_time)
    assert {"certificate-expired", "validation-failure", "failed sessions"} <= set(texts)
    assert "2026-04-02" in texts  # on the time axis


def test_organizations_show_successes_beside_failures(domain_page: str) -> None:
    html = domain_page
    organizations = next(
        svg for svg in chart_svgs(html) if "sending organization" in "".join(svg_texts(svg))
    )
    # The file reports of HOSTILE hold 2,700 successful sessions and no failure.
    joined = "".join(svg_texts(organizations))
    assert f'file ("{ESCAPED}")' in joined
    assert "2,700 sessions, 0 failed" in joined


def test_sending_sources_are_charted_per_domain(domain_page: str) -> None:
    html = domain_page
    sending = [svg for svg in chart_svgs(html) if "sending MTA IP" in svg_texts(svg)]
    assert len(sending) == 1
    assert "192.0.2.9" in svg_texts(sending[0])
    assert "Sending sources: failures by sending MTA IP" in section(html, "domain-0")


# ---------------------------------------------------------------- options


@pytest.fixture
def mixed_database(tmp_path: Path) -> Path:
    """A verified sender on 2026-04-01 and 02, an unverified one on 2026-04-03."""
    path = tmp_path / "mixed.sqlite"
    with ReportStore.open(path) as store:
        for day in ("2026-04-01", "2026-04-02"):
            add(
                store,
                clean_report(day=day, report_id=f"v-{day}", organization="Verified Inc."),
                signed_by(SIGNER),
            )
        add(
            store,
            report_dict(
                day="2026-04-03",
                report_id="u",
                organization="Unverified Ltd",
                details=[
                    {"result-type": FORMULA, "failed-session-count": 3},
                    {
                        "result-type": "starttls-not-supported",
                        "sending-mta-ip": "198.51.100.62",
                        "failed-session-count": 300,
                    },
                ],
            ),
        )
    return path


@pytest.mark.parametrize(
    ("args", "kept", "left_out"),
    [
        pytest.param([], ["Verified Inc.", "Unverified Ltd"], [], id="all"),
        pytest.param(["--until", "2026-04-02"], ["Verified Inc."], ["Unverified Ltd"], id="until"),
        pytest.param(
            ["--verified-only"], ["Verified Inc."], ["Unverified Ltd"], id="verified-only"
        ),
        pytest.param(["--since", "2026-04-03"], ["Unverified Ltd"], ["Verified Inc."], id="since"),
    ],
)
def test_html_selects_reports(
    mixed_database: Path, tmp_path: Path, args: list[str], kept: list[str], left_out: list[str]
) -> None:
    html = html_page(mixed_database, tmp_path / "page.html", *args)
    for name in kept:
        assert name in html
    for name in left_out:
        assert name not in html


@pytest.mark.parametrize(
    ("args", "kept", "left_out"),
    [
        pytest.param([], ["Verified Inc.", "Unverified Ltd"], [], id="all"),
        pytest.param(["--since", "2026-04-03"], ["Unverified Ltd"], ["Verified Inc."], id="since"),
        pytest.param(["--until", "2026-04-01"], ["Verified Inc."], ["Unverified Ltd"], id="until"),
    ],
)
def test_sources_selects_reports_by_day(
    mixed_database: Path, args: list[str], kept: list[str], left_out: list[str]
) -> None:
    done = invoke("tlsrpt", "sources", "--db", str(mixed_database), *args)
    assert done.exit_code == 0, done.stderr
    for name in kept:
        assert name in done.stdout
    for name in left_out:
        assert name not in done.stdout


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_summary_csv(mixed_database: Path, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    done = invoke("tlsrpt", "summary", "--db", str(mixed_database), "--csv", str(out))
    assert done.exit_code == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == [
        "days.csv",
        "domains.csv",
        "failures_by_reason.csv",
        "failures_by_receiving.csv",
        "organizations.csv",
        "policy_types.csv",
    ]
    domains = read_csv(out / "domains.csv")
    assert [row["policy_domain"] for row in domains] == [POLICY_DOMAIN]
    assert float(domains[0]["failure_rate"]) == pytest.approx(303 / (2 * 5326 + 5629), abs=1e-6)
    organizations = read_csv(out / "organizations.csv")
    assert {row["policy_domain"] for row in organizations} == {POLICY_DOMAIN}
    names = {row["organization"]: row for row in organizations}
    assert names[f'{SIGNER} ("Verified Inc.")']["dkim_verified"] == "yes"
    assert names['https ? ("Unverified Ltd")']["failed"] == "303"
    reasons = read_csv(out / "failures_by_reason.csv")
    # Text a spreadsheet would read as a formula is neutralised.
    assert {row["result_type"] for row in reasons} == {"'" + FORMULA, "starttls-not-supported"}
    days = read_csv(out / "days.csv")
    assert [row["day"] for row in days] == ["2026-04-01", "2026-04-02", "2026-04-03"]


def test_sources_csv(mixed_database: Path, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    done = invoke("tlsrpt", "sources", "--db", str(mixed_database), "--csv", str(out))
    assert done.exit_code == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == ["organizations.csv", "sending_ips.csv"]
    ips = read_csv(out / "sending_ips.csv")
    assert [(row["sending_mta_ip"], row["failed"]) for row in ips] == [("198.51.100.62", "300")]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--since", "April"], "YYYY-MM-DD"),
        (["--since", "2026-04-03", "--until", "2026-04-01"], "--until is before --since"),
        ([], "no database"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], words: str) -> None:
    done = invoke(
        "tlsrpt", "html", "--out", str(tmp_path / "x.html"), "--db", str(tmp_path / "none"), *args
    )
    assert done.exit_code == 2
    assert words in done.stderr


def without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """As without the `charts` extra: importing matplotlib fails, and so do the chart
    modules that were imported before."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for name in ("scanner.received.charts", "scanner.research.charts"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_without_matplotlib_the_page_holds_the_tables(
    database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_matplotlib(monkeypatch)
    out = tmp_path / "tables.html"
    done = invoke("tlsrpt", "html", "--out", str(out), "--db", str(database))
    assert done.exit_code == 0, done.stderr
    assert "pip install 'scanner[charts]'" in done.stderr
    html = out.read_text(encoding="utf-8")
    assert "pip install &#39;scanner[charts]&#39;" in html
    assert "data:image/svg+xml" not in html
    assert "Every policy domain" in html
    assert "Per UTC day" in html
    assert ESCAPED in html


# ---------------------------------------------------------------- the overview's figures


def days_of(*rates: tuple[int, int]) -> list[DayCount]:
    start = date(2026, 4, 1)
    return [
        DayCount(start + timedelta(days=n), 1, SessionCounts(ok, failed))
        for n, (ok, failed) in enumerate(rates)
    ]


@pytest.mark.parametrize(
    ("days", "direction"),
    [
        pytest.param(
            days_of((1000, 0), (1000, 0), (990, 10), (900, 100)), TrendDirection.RISING, id="rising"
        ),
        pytest.param(
            days_of((900, 100), (990, 10), (1000, 0), (1000, 0)),
            TrendDirection.FALLING,
            id="falling",
        ),
        pytest.param(
            days_of((999, 1), (1000, 0), (1000, 0), (999, 1)), TrendDirection.STEADY, id="steady"
        ),
        pytest.param(days_of((999, 1), (1000, 0)), TrendDirection.STEADY, id="two-days"),
        pytest.param(days_of((999, 1)), TrendDirection.UNKNOWN, id="one-day"),
    ],
)
def test_failure_trend(days: list[DayCount], direction: TrendDirection) -> None:
    period = Period(date(2026, 4, 1), date(2026, 4, 4))
    if len(days) < 3:
        period = Period(days[0].day, days[-1].day)
    assert failure_trend(days, period).direction is direction


def test_share_of_unverified_or_conflicting_sessions(mixed_database: Path) -> None:
    with ReportStore.open(mixed_database, create=False) as store:
        (summary,) = summarise_domains(store.read().reports)
    assert summary.sessions.total == 2 * 5326 + 5629
    assert summary.unverified_sessions == 5629
    assert summary.doubtful_share == pytest.approx(5629 / summary.sessions.total)
    assert [org.verified for org in summary.organizations] == [True, False]


# ---------------------------------------------------------------- 90 days, and the browser


SPIKE_DAYS = range(60, 67)  # days of the period with a failure spike
GAP_DAYS = range(40, 44)  # days without any report


def spike_database(path: Path) -> Path:
    """90 days from 2026-01-01: a DKIM-verified large sender (about 48,000 sessions a day),
    an unverified small one, four days without a report and a week of expired
    certificates from day 60."""
    start = date(2026, 1, 1)
    with ReportStore.open(path) as store:
        for n in range(90):
            if n in GAP_DAYS:
                continue
            day = (start + timedelta(days=n)).isoformat()
            spike = n in SPIKE_DAYS
            details = [
                {
                    "result-type": "certificate-expired" if spike else "starttls-not-supported",
                    "sending-mta-ip": f"198.51.100.{10 + n % 3}",
                    "receiving-mx-hostname": f"mx{1 + n % 2}.mail.{POLICY_DOMAIN}",
                    "failed-session-count": 2400 + 100 * (n % 4) if spike else 5 + n % 7,
                }
            ]
            failed = details[0]["failed-session-count"]
            add(
                store,
                report_dict(
                    day=day,
                    report_id=f"a-{day}",
                    organization="Provider A",
                    successful=48_000 + 97 * (n % 11) - failed,
                    failed=failed,
                    details=details,
                ),
                signed_by(SIGNER),
            )
            if n % 3 == 0:
                policy_failures = [
                    {
                        "result-type": "sts-policy-fetch-error",
                        "sending-mta-ip": "203.0.113.7",
                        "failed-session-count": 40,
                    }
                ]
                add(
                    store,
                    report_dict(
                        day=day,
                        report_id=f"b-{day}",
                        organization="Small Sender",
                        successful=900,
                        failed=40 if spike else 0,
                        details=policy_failures if spike else [],
                    ),
                    NOT_EMAIL,
                )
    return path


def fixtures_database(path: Path) -> Path:
    done = invoke("tlsrpt", "import", str(FIXTURES), "--db", str(path), "--no-progress")
    assert done.exit_code == 0, done.stdout
    return path


@pytest.mark.browser
@pytest.mark.parametrize("width", [1400, 800])
@pytest.mark.parametrize("kind", ["fixtures", "spike", "hostile"])
def test_page_in_headless_chromium(database: Path, tmp_path: Path, width: int, kind: str) -> None:
    source = {
        "fixtures": lambda: fixtures_database(tmp_path / "fixtures.sqlite"),
        "spike": lambda: spike_database(tmp_path / "spike.sqlite"),
        "hostile": lambda: database,
    }[kind]()
    page = tmp_path / f"{kind}.html"
    html = html_page(source, page)
    svgs = chart_svgs(html)
    assert svgs
    for svg in svgs:  # every chart has its axis titles
        assert 'id="x-axis-title"' in svg
        assert 'id="y-axis-title"' in svg
    browser = headless_chromium(tmp_path / "profile")
    layout = browser.layout(page, width, tmp_path)
    assert layout.viewport == width
    assert layout.sections[0] == "overview"
    assert layout.scroll_width <= width
    assert layout.overflowing == ()
    assert len(layout.images) == len(svgs)
    for natural, shown in layout.images:
        assert natural > 0  # the SVG rendered
        assert shown >= 0.85 * width - 60  # the charts use the page's width
    dom = browser.dom(page)
    if kind == "hostile":
        assert ESCAPED in dom  # the organization shows as text
    assert '<img src="x"' not in dom
    assert "onerror" not in re.sub(r"&lt;.*?&gt;", "", dom)
    size = browser.screenshot(page, tmp_path / f"{kind}-{width}.png", width, 3000)
    assert size > 20_000
