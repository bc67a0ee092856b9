"""Untrusted text through every view, end to end: the lab's hostile world.

Records, greetings and 421 texts carry rich markup, terminal control sequences,
bidirectional overrides and overlong lines. The verdicts must be the expected
ones, and no view may crash, restyle itself or pass a control character on.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from rich.console import Console

from scanner.core.result import DomainResult
from scanner.files import InputReader
from scanner.lab import Lab, World, load_world, open_lab
from scanner.lab.demo import render_demo_summary
from scanner.lab.expectations import mismatches
from scanner.options import build_scanner, network_options
from scanner.render import render_check
from scanner.report_files import write_report_files
from scanner.research.statistics import adoption_statistics
from scanner.research.views import render_statistics
from scanner.untrusted import CONTROL_CODEPOINTS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SGR = re.compile(r"\x1b\[[0-9;]*m")  # rich's own styling: the only escape allowed out


@pytest.fixture(scope="module")
def hostile_world() -> World:
    return load_world(FIXTURES / "world-hostile.toml")


@pytest.fixture(scope="module")
def scanned(
    hostile_world: World, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[DomainResult], list[str]]:
    """One scan of the hostile world (its own trio run), shared by the view tests."""
    results: list[DomainResult] = []
    lines: list[str] = []

    class Collect:
        def domain_done(self, result: DomainResult) -> None:
            results.append(result)

    async def scan() -> None:
        async with open_lab(hostile_world, tmp_path_factory.mktemp("lab")) as lab:
            scanner = build_scanner(lab_options(lab))

            async def items() -> AsyncIterator[str]:
                for name in hostile_world.domain_names:
                    yield name

            await scanner.run(InputReader().stream(items()), lines.append, progress=Collect())

    trio.run(scan)
    return results, lines


def lab_options(lab: Lab) -> Any:
    return network_options(
        resolver=[f"{lab.resolver[0]}:{lab.resolver[1]}"],
        ca_file=[lab.ca_file],
        allow_private=True,
        timeout=1.0,
        smtp_port=lab.smtp_port,
        https_port=lab.https_port,
        busy_retries=0,
    )


def terminal_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, color_system="truecolor", width=160), buffer


def assert_inert(output: str) -> None:
    """Only rich's own SGR escapes, and no other control or reordering character."""
    bare = SGR.sub("", output)
    bad = sorted({f"U+{ord(c):04X}" for c in bare if ord(c) in CONTROL_CODEPOINTS and c != "\n"})
    assert bad == []


def test_hostile_domains_get_their_expected_verdicts(
    scanned: tuple[list[DomainResult], list[str]], hostile_world: World
) -> None:
    results, _ = scanned
    by_domain = {result.domain: result for result in results}
    problems = {
        domain.name: mismatches(by_domain[domain.name], domain.expect)
        for domain in hostile_world.domains
        if domain.expect is not None
    }
    assert {name: found for name, found in problems.items() if found} == {}


def test_check_view_is_inert(scanned: tuple[list[DomainResult], list[str]]) -> None:
    results, _ = scanned
    for result in results:
        console, buffer = terminal_console()
        render_check(console, result)
        output = buffer.getvalue()
        assert_inert(output)
        if result.verdict is None:
            continue
        # A server's words may say "Ready for mode: enforce", but only inside a line
        # of ours: the one verdict line at the start of a line is the scanner's.
        verdicts = [
            text
            for text in SGR.sub("", output).splitlines()
            if text.startswith(("Ready for mode", "Not ready for mode"))
        ]
        expected = (
            "Ready for mode: enforce"
            if result.verdict.enforce_ready
            else "Not ready for mode: enforce"
        )
        assert verdicts == [expected]


def test_markup_in_a_record_is_shown_as_text(
    scanned: tuple[list[DomainResult], list[str]],
) -> None:
    results, _ = scanned
    (markup,) = [r for r in results if r.domain == "markup-record.hostile.example"]
    console, buffer = terminal_console()
    render_check(console, markup)
    assert "ext=[/bold][red]x[/red]" in SGR.sub("", buffer.getvalue())


def test_json_lines_escape_control_and_bidi_characters(
    scanned: tuple[list[DomainResult], list[str]],
) -> None:
    _, lines = scanned
    assert lines
    for text in lines:
        assert not [c for c in text if ord(c) in CONTROL_CODEPOINTS]
        json.loads(text)  # still valid JSON
    busy = next(json.loads(t) for t in lines if '"busy.hostile.example"' in t)
    assert any("\u202e" in b["text"] or "\x1b" in b["text"] for b in busy["blockers"])  # lossless


def test_demo_table_and_statistics_are_inert(
    scanned: tuple[list[DomainResult], list[str]], hostile_world: World
) -> None:
    results, lines = scanned
    console, buffer = terminal_console()
    render_demo_summary(console, hostile_world, results)
    render_statistics(console, adoption_statistics(json.loads(text) for text in lines))
    assert_inert(buffer.getvalue())


def test_report_files_refuse_hostile_names(tmp_path: Path) -> None:
    report = {"contact-info": "x@scanner.example", "date-range": {}}
    lines = [
        {"schema_version": 2, "domain": name, "report": report}
        for name in ("good.example", "evil!example", "../../escape", "bidi\u202eexample")
    ]
    lines.append({"schema_version": 99, "domain": "future.example", "report": report})
    out = tmp_path / "reports"
    out.mkdir()
    counts = write_report_files(lines, out, gzip_reports=False, submitter=None)
    assert counts.written == 1
    assert len(counts.refused) == 4
    assert sum("not written" in why for why in counts.refused) == 3
    assert "schema_version 99 is not one this scanner reads" in counts.refused[-1]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [
        next(out.iterdir()).name
    ]  # nothing outside the folder
