"""Human-readable views: `scanner check` (a typed result) and the console of every command.

`render_check` reads the typed `DomainResult`. Text from records, servers and
certificates is added as plain `Text`, never as markup. The `stats` tables are in
`scanner.research`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from scanner.core.assess import AddressVerdict, DomainVerdict, MxVerdict
from scanner.core.codes import RecordCode
from scanner.core.dane import tlsa_text
from scanner.core.reasons import reason_text
from scanner.core.result import DomainResult
from scanner.core.tlsrpt import rfc3339_utc
from scanner.models import DaneStatus, MxSource, RecordError, StsRecord, TlsRptRecord
from scanner.untrusted import line as text_line
from scanner.untrusted import terminal

if TYPE_CHECKING:
    from scanner.received import ReceivedEvidence


def output_console(*, stderr: bool = False) -> Console:
    """A console for a view: styled on a terminal; plain otherwise.

    Piped or redirected output is read by programs and by `grep`: no colour codes, and
    no line wrapped, unless `COLUMNS` asks for a width, which it then fits.
    """
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    width = os.environ.get("COLUMNS", "")
    chosen = int(width) if width.isdigit() and int(width) > 0 else UNWRAPPED_WIDTH
    return Console(stderr=stderr, width=chosen, no_color=True, highlight=False)


UNWRAPPED_WIDTH = 100_000


def _styled(text: str, style: str) -> Text:
    """Our own words, styled: trusted text only."""
    return Text(text, style=style)


def _certificate_cell(address: AddressVerdict) -> Text:
    probe = address.probe
    if probe is None or probe.certificate is None:
        return Text()
    check = probe.certificate
    problems: list[str] = []
    if not check.chain.trusted:
        problems.append(check.chain.verify_error or "untrusted")
    if not check.name_matches:
        problems.append("name mismatch")
    cell = _styled("valid", "green") if not problems else terminal(", ".join(problems), style="red")
    until = check.leaf.not_after
    cell.append(
        f" until {rfc3339_utc(until)[:10]}" if until is not None else " (no readable end date)"
    )
    return cell


def _address_rows(host: MxVerdict) -> Iterator[tuple[Text, ...]]:
    """Table rows: every cell a `Text`, so rich never reads a server's words as markup."""
    label = text_line(host.hostname, Text(" (policy)" if host.source is MxSource.POLICY else ""))
    preference = Text(str(host.preference) if host.preference is not None else "")
    in_policy = Text()
    if host.in_policy is not None:
        in_policy = Text("yes") if host.in_policy else _styled("no", "red")
    if not host.addresses:
        yield (label, preference, in_policy, *(Text() for _ in range(6)))
    for address in host.addresses:
        status = address.status.value
        if address.interruption is not None:
            status = f"{status}: {reason_text(address.interruption)}"
        probe = address.probe
        version = probe.tls.version if probe is not None and probe.tls is not None else ""
        yield (
            label,
            preference,
            in_policy,
            terminal(address.ip),
            terminal(status),
            Text(address.starttls.value if address.starttls is not None else ""),
            terminal(version),
            _certificate_cell(address),
            Text(", ".join(t.value for t in address.result_types)),
        )


def render_check(console: Console, result: DomainResult) -> None:
    """The human verdict of one domain: records, policy, every address, readiness."""
    if result.error is not None or result.facts is None or result.verdict is None:
        console.print(
            text_line(
                (result.domain, "bold red"),
                _styled(": could not scan: ", "bold red"),
                str(result.error),
            )
        )
        return
    facts, verdict = result.facts, result.verdict
    console.print(
        text_line((facts.domain, "bold"), Text(f"  scanned {rfc3339_utc(facts.scanned_at)}"))
    )
    console.print(
        text_line(
            Text("  _mta-sts record: "), *_record_words(facts.sts_record, facts.sts_record_error)
        )
    )
    fetch = facts.policy_fetch
    policy = fetch.policy if fetch is not None else None
    if policy is not None:
        console.print(
            text_line(
                Text("  policy: mode "),
                _styled(policy.mode.value, "bold"),
                Text(f", max_age {policy.max_age}, mx "),
                ", ".join(policy.mx),
            )
        )
    if fetch is not None and fetch.failure is not None:
        console.print(
            text_line(
                Text("  policy problem: "),
                _styled(fetch.failure.result_type.value, "red"),
                Text(" "),
                fetch.failure.detail,
            )
        )
    console.print(
        text_line(
            Text("  _smtp._tls record: "),
            *_record_words(facts.tlsrpt_record, facts.tlsrpt_error, missing="yellow"),
        )
    )

    table = Table(title="MX hosts and addresses", show_lines=False)
    for column in CHECK_COLUMNS:
        table.add_column(column)
    for host in verdict.mx:
        for row in _address_rows(host):
            table.add_row(*row)
    # The table only where it fits whole: a cell cut would cut a host name or an address.
    if natural_width(table) <= console.width:
        console.print(table)
    else:
        render_stacked(console, verdict)
    render_dane(console, verdict)
    if verdict.indicators:
        console.print(_styled("Downgrade indicators", "bold"))
        for indicator in verdict.indicators:
            where = " ".join(x for x in (indicator.mx, indicator.ip) if x)
            console.print(
                text_line(
                    Text("  "),
                    _styled(indicator.code.value, "red"),
                    f" {where}: {indicator.detail}" if where else f": {indicator.detail}",
                )
            )
    if result.received is not None:
        _render_received(console, result.received)
    if verdict.enforce_ready:
        console.print(_styled("Ready for mode: enforce", "bold green"))
    else:
        console.print(_styled("Not ready for mode: enforce", "bold red"))
    for blocker in verdict.blockers:
        console.print(text_line(Text("  "), _styled("blocker", "red"), Text(": "), blocker.text))
    for warning in verdict.warnings:
        console.print(text_line(Text("  "), _styled("warning", "yellow"), Text(": "), warning.text))


# Status words of a session's DANE check, with their style (docs/dane.md#statuses).
DANE_STYLES = {
    "pass": "green",
    "fail": "red",
    "bogus": "red",
    "unusable": "yellow",
    "no-tlsa": "",
    "insecure": "",
    "unvalidated": "yellow",
}


def render_dane(console: Console, verdict: DomainVerdict) -> None:
    """The DANE section of `check`: per MX host its TLSA records, per address the match.

    Records, names and details come from DNS and certificates: shown as untrusted text.
    """
    hosts = [host for host in verdict.mx if host.dane is not None]
    if not hosts:
        return
    if all(host.dane is not None and host.dane.status is DaneStatus.UNVALIDATED for host in hosts):
        console.print(
            text_line(
                _styled("DANE (RFC 7672)", "bold"),
                Text(": not checked: the resolver does not validate DNSSEC (see --resolver)"),
            )
        )
        return
    console.print(_styled("DANE (RFC 7672)", "bold"))
    for host in hosts:
        dane = host.dane
        assert dane is not None
        facts = dane.facts
        records = [tlsa_text(r) for r in facts.tlsa.records] if facts.tlsa is not None else []
        applies = _styled("applies", "bold") if dane.applies else Text("not applied")
        console.print(
            text_line(
                Text("  "),
                (host.hostname, "bold"),
                Text(
                    f": MX RRset {dane.mx_dnssec.value}, address records "
                    f"{facts.address_dnssec.value}, TLSA base domain "
                ),
                facts.base_domain,
                Text(": "),
                applies,
            )
        )
        if facts.owner is not None:
            dnssec = facts.tlsa.dnssec.value if facts.tlsa is not None else "unvalidated"
            console.print(
                text_line(
                    Text("    TLSA at "),
                    facts.owner,
                    Text(f" ({dnssec}): "),
                    ", ".join(records) if records else "none",
                    limit=None,
                )
            )
        for address in host.addresses:
            if address.dane is None:
                continue
            status = address.dane.status.value
            console.print(
                text_line(
                    Text("    "),
                    terminal(address.ip),
                    Text(" "),
                    _styled(status, DANE_STYLES.get(status, "")),
                    Text(": "),
                    address.dane.detail,
                )
            )
        if not any(address.dane is not None for address in host.addresses) and dane.detail:
            console.print(text_line(Text("    "), dane.detail))


def _render_received(console: Console, evidence: ReceivedEvidence) -> None:
    """What senders reported, beside what the probe saw."""
    from scanner.received.evidence import percent

    rate = evidence.failure_rate
    console.print(
        _styled(
            f"Received TLS-RPT reports ({evidence.window_start.date()} to {evidence.window_end.date()})",
            "bold",
        )
    )
    console.print(
        Text(
            f"  {evidence.reports} report{'' if evidence.reports == 1 else 's'}, "
            f"{evidence.successful_sessions} sessions succeeded, "
            f"{evidence.failed_sessions} failed"
            + (f" ({percent(rate)})" if rate is not None else "")
            + (
                f"; {evidence.unverified_reports} unverified left out"
                if evidence.unverified_reports
                else ""
            )
        )
    )
    for org in evidence.organizations:
        console.print(
            text_line(
                Text("  "),
                org.organization,
                Text(f": {org.sessions.successful} ok, {org.sessions.failed} failed"),
            )
        )


def _record_words(
    record: StsRecord | TlsRptRecord | None, error: RecordError | None, missing: str = "red"
) -> tuple[str | Text, ...]:
    """A record as published; else "none", or what kept it from being known (a lookup that
    timed out or failed is never shown as none)."""
    if record is not None:
        return (record.raw,)
    if error is None or error.code is RecordCode.NO_RECORD:
        return (_styled("none", missing),)
    if error.code is RecordCode.LOOKUP_FAILED:
        return (_styled("unknown: ", "yellow"), error.detail)
    return (_styled(f"none usable ({error.code.value}): ", missing), error.detail)


def natural_width(renderable: Table) -> int:
    """The width `renderable` takes when nothing limits it."""
    return Measurement.get(WIDE, WIDE.options, renderable).maximum


WIDE = Console(width=UNWRAPPED_WIDTH, file=io.StringIO())


def print_table(console: Console, table: Table) -> None:
    """`table` where it fits whole; else one block per row, `column: value` per line, so no
    cell (a host name, an address, an organization) is ever cut on a narrow terminal."""
    if natural_width(table) <= console.width:
        console.print(table)
        return
    if table.title:
        console.print(Text(str(table.title), style="bold"))
    columns = [(str(column.header), list(column.cells)) for column in table.columns]
    for index in range(table.row_count):
        for position, (header, cells) in enumerate(columns):
            cell = cells[index] if index < len(cells) else ""
            value = cell if isinstance(cell, Text) else Text(str(cell))
            if position == 0:
                heading = value.copy()
                heading.stylize("bold")
                console.print(text_line(Text("  "), heading))
            elif value.plain:
                console.print(text_line(Text(f"    {header}: "), value))


def render_stacked(console: Console, verdict: DomainVerdict) -> None:
    """The table of MX hosts and addresses as one block per host and address, for a narrow
    terminal: names and addresses whole on lines of their own, never cut."""
    console.print(_styled("MX hosts and addresses", "bold"))
    for host in verdict.mx:
        words: list[str] = []
        if host.preference is not None:
            words.append(f"preference {host.preference}")
        if host.source is MxSource.POLICY:
            words.append("named only by the policy")
        if host.in_policy is not None:
            words.append("in policy" if host.in_policy else "NOT in policy")
        console.print(text_line(Text("  "), (host.hostname, "bold"), Text(f"  {', '.join(words)}")))
        for address in host.addresses:
            status = address.status.value
            if address.interruption is not None:
                status = f"{status}: {reason_text(address.interruption)}"
            console.print(text_line(Text("    "), address.ip, Text("  "), status))
            probe = address.probe
            version = probe.tls.version if probe is not None and probe.tls is not None else ""
            details = [
                ("STARTTLS", Text(address.starttls.value if address.starttls else "")),
                ("TLS", terminal(version)),
                ("certificate", _certificate_cell(address)),
                ("result types", Text(", ".join(t.value for t in address.result_types))),
            ]
            for name, value in details:
                if value.plain:
                    console.print(text_line(Text(f"      {name}: "), value))


CHECK_COLUMNS = (
    "MX",
    "pref",
    "in policy",
    "address",
    "status",
    "STARTTLS",
    "TLS",
    "certificate",
    "result types",
)
