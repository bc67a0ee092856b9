"""`check` as an operator reads it: 80 columns, pipes, lookups that failed."""

from __future__ import annotations

import dataclasses
import io

import pytest
from builders import (
    SCANNED,
    assess,
    domain_facts,
    expired_mx2,
    good_hosts,
    host,
    probe,
)
from rich.console import Console
from trio.testing import MockClock

from scanner.core.codes import RecordCode
from scanner.core.result import DomainResult
from scanner.lab import Lab
from scanner.models import DnsStatus, RecordError, TxtAnswer
from scanner.render import output_console, render_check

LONG = "mx-with-a-rather-long-name.mail-cluster-eu-west.example.com"


def shown(width: int, *hosts: object, **changes: object) -> str:
    facts = domain_facts(*hosts, **changes)  # type: ignore[arg-type]
    result = DomainResult("example.com", SCANNED, SCANNED, facts, assess(facts))
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, highlight=False)
    render_check(console, result)
    return buffer.getvalue()


def long_hosts() -> tuple[object, ...]:
    return (
        host(LONG, probe(LONG, "2001:db8:ffff:ffff:ffff:ffff:ffff:1")),
        expired_mx2(),
    )


def test_at_80_columns_every_mx_name_and_address_is_whole() -> None:
    text = shown(80, *long_hosts())
    assert max(len(line) for line in text.splitlines()) <= 80
    assert LONG in text
    assert "2001:db8:ffff:ffff:ffff:ffff:ffff:1" in text
    assert "mx2.example.com" in text
    assert "127.0.1.5" in text
    assert "…" not in text  # nothing cut


def test_a_wide_terminal_keeps_the_table() -> None:
    text = shown(250, *good_hosts())
    assert "┃ MX" in text
    assert max(len(line) for line in text.splitlines()) <= 250


def test_piped_output_fits_columns_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert output_console().width == 80
    monkeypatch.delenv("COLUMNS")
    assert output_console().width > 10_000  # unwrapped for grep


def test_a_record_lookup_that_failed_is_not_shown_as_none() -> None:
    failed = RecordError(RecordCode.LOOKUP_FAILED, "_mta-sts TXT lookup failed (timeout: 5 s)")
    facts = dataclasses.replace(
        domain_facts(record=None, record_error=failed),
        sts_txt=TxtAnswer(DnsStatus.TIMEOUT, detail="5 s"),
    )
    result = DomainResult("example.com", SCANNED, SCANNED, facts, assess(facts))
    buffer = io.StringIO()
    render_check(Console(file=buffer, width=200, no_color=True), result)
    text = buffer.getvalue()
    assert "_mta-sts record: unknown: _mta-sts TXT lookup failed (timeout: 5 s)" in text
    assert "_mta-sts record: none" not in text


def test_a_domain_wide_indicator_has_no_stray_space() -> None:
    text = shown(200, good_hosts()[0], expired_mx2())
    assert "tls-inconsistent: valid TLS on" in text
    assert "tls-inconsistent :" not in text


async def test_check_says_what_it_does_while_it_works(
    demo_lab: Lab, loopback_clock: MockClock
) -> None:
    from scanner.net.activity import LISTENER
    from scanner.options import build_scanner, network_options

    said: list[str] = []
    scanner = build_scanner(
        network_options(
            resolver=[f"{demo_lab.resolver[0]}:{demo_lab.resolver[1]}"],
            ca_file=[demo_lab.ca_file],
            allow_private=True,
            timeout=2.0,
            smtp_port=demo_lab.smtp_port,
            https_port=demo_lab.https_port,
            ehlo_name="scanner.example",
        )
    )
    token = LISTENER.set(said.append)
    try:
        result = await scanner.scan_domain("partly-untestable.example")
    finally:
        LISTENER.reset(token)
    assert result.verdict is not None
    assert any("looking up" in words and "partly-untestable.example" in words for words in said)
    assert any(words.startswith("fetching the policy from https://mta-sts.") for words in said)
    assert any("probing mx.partly-untestable.example (127.0.1.11)" in words for words in said)
    # The busy server's pauses are said, with the wait, before each new attempt.
    retries = [words for words in said if words.startswith("mx.busy.example (127.0.1.21)")]
    assert retries
    assert "busy:421" in retries[0]
    assert "trying again in " in retries[0]


def test_received_rates_read_alike_everywhere() -> None:
    from scanner.received.evidence import percent

    assert percent(0.01316) == "1.32 %"
    assert percent(0.001) == "0.1 %"


def test_a_table_too_wide_for_the_terminal_becomes_blocks_with_every_cell_whole() -> None:
    from rich.table import Table

    from scanner.render import print_table

    table = Table(title="Reporting organizations")
    for column in ("organization", "reports", "first report", "last report", "submitter"):
        table.add_column(column)
    name = "Enterprise Outlook Exchange Online Protection Reporting"
    table.add_row(name, "12", "2016-04-01 00:00", "2016-04-09 00:00", "mail.example.com")
    narrow = io.StringIO()
    print_table(Console(file=narrow, width=60, no_color=True), table)
    text = narrow.getvalue()
    assert name in text
    assert "first report: 2016-04-01 00:00" in text
    assert max(len(line) for line in text.splitlines()) <= 60
    wide = io.StringIO()
    print_table(Console(file=wide, width=300, no_color=True), table)
    assert "┃ organization" in wide.getvalue()


@pytest.mark.parametrize(("columns", "widest"), [("80", 80), (None, 10_000)])
def test_the_ehlo_name_warning_fits_columns_when_asked(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    columns: str | None,
    widest: int,
) -> None:
    from scanner import options

    monkeypatch.setattr(options, "host_ehlo_name", lambda: None)
    if columns is not None:
        monkeypatch.setenv("COLUMNS", columns)
    options.default_ehlo_name.cache_clear()
    try:
        assert options.default_ehlo_name() == options.DEFAULT_EHLO_NAME
    finally:
        options.default_ehlo_name.cache_clear()
    lines = capsys.readouterr().err.splitlines()
    assert all(len(line) <= widest for line in lines)
    assert (len(lines) > 1) is (columns is not None)  # piped: one line for grep
    assert "set --ehlo-name to a name that resolves" in " ".join(lines)
