"""`scanner tlsrpt ...`: import received RFC 8460 reports, and read what they say.

The one place in `scanner.received` that builds real dependencies: the
database, the DNS key lookup (dnspython), the TLS context for IMAP, the clock.
Exit status: `import` 0 when every source was read (rejected reports are
reported, not errors), 1 when a source could not be read, 2 for usage errors,
130 when interrupted; `summary` and `sources` 0, or 2 for usage errors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import certifi
import typer
from rich.text import Text

from scanner.received.authenticity import build_verifier
from scanner.received.evidence import normalise_destination
from scanner.received.imap import (
    ImapSettings,
    ImapTarget,
    ImapUrlError,
    imap_items,
    parse_imap_url,
    redacted_url,
)
from scanner.received.importer import EventKind, Importer, ImportTally
from scanner.received.items import SourceItem
from scanner.received.key_lookup import CachedKeyLookup, build_resolver
from scanner.received.mailboxes import file_items
from scanner.received.output import sources_document, summary_document
from scanner.received.records import StoredReport, StoredReports
from scanner.received.store import DEFAULT_DATABASE, DatabaseError, ReportStore
from scanner.received.summary import report_period, summarise_domains, summarise_sources
from scanner.received.tables import ReportTable
from scanner.render import output_console
from scanner.untrusted import dumps_document, line

EXIT_SOURCE_UNREADABLE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

tlsrpt_app = typer.Typer(
    help="Received TLS-RPT (RFC 8460) reports: import them, then summarise what senders saw.",
    no_args_is_help=True,
)

DatabaseOption = Annotated[
    Path, typer.Option("--db", help="The report database (SQLite).", dir_okay=False)
]
DomainOption = Annotated[str | None, typer.Option("--domain", help="Only this policy domain.")]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document instead of tables.")
]
VerifiedOption = Annotated[
    bool, typer.Option("--verified-only", help="Count only DKIM-verified reports.")
]
SinceOption = Annotated[
    str | None, typer.Option("--since", help="First UTC day, YYYY-MM-DD (inclusive).")
]
UntilOption = Annotated[
    str | None, typer.Option("--until", help="Last UTC day, YYYY-MM-DD (inclusive).")
]
CsvOption = Annotated[
    Path | None,
    typer.Option(
        "--csv", help="Also write one CSV file per table into this directory.", file_okay=False
    ),
]


def _fail(message: str) -> typer.Exit:
    output_console(stderr=True).print(f"error: {message}", style="red", markup=False)
    return typer.Exit(EXIT_USAGE)


def _open(database: Path, *, create: bool) -> ReportStore:
    try:
        return ReportStore.open(database, create=create)
    except DatabaseError as exc:
        raise _fail(str(exc)) from None


def _password(env: str | None, file: Path | None) -> str:
    if env is not None and file is not None:
        raise _fail("give --imap-password-env or --imap-password-file, not both")
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise _fail(f"the environment variable {env} (--imap-password-env) is not set")
        return value
    if file is not None:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeError) as exc:
            raise _fail(f"cannot read --imap-password-file {file}: {exc}") from None
        if not lines or not lines[0]:
            raise _fail(f"--imap-password-file {file} is empty")
        return lines[0]
    raise _fail("--imap needs a password: --imap-password-env VAR or --imap-password-file FILE")


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise _fail(f"cannot use --imap-ca-file {ca_file}: {exc}") from None
    return context


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops an import as Ctrl-C does: the current report's transaction rolls back."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@tlsrpt_app.command("import")
def import_reports(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Report files (.json, .json.gz), emails (.eml), mbox files, Maildir or other folders."
        ),
    ] = None,
    imap: Annotated[
        list[str] | None,
        typer.Option(
            "--imap",
            help="imaps://USER@HOST:PORT/FOLDER, the port and the folder optional (repeatable).",
        ),
    ] = None,
    imap_password_env: Annotated[
        str | None,
        typer.Option("--imap-password-env", help="Environment variable holding the IMAP password."),
    ] = None,
    imap_password_file: Annotated[
        Path | None,
        typer.Option("--imap-password-file", help="File whose first line is the IMAP password."),
    ] = None,
    imap_all: Annotated[
        bool, typer.Option("--imap-all", help="Fetch every message, not only unseen ones.")
    ] = False,
    imap_ca_file: Annotated[
        Path | None,
        typer.Option("--imap-ca-file", help="Extra trust anchors (PEM) for the IMAP server."),
    ] = None,
    imap_timeout: Annotated[
        float, typer.Option("--imap-timeout", min=1.0, help="Seconds to wait for the IMAP server.")
    ] = 30.0,
    trust_authres: Annotated[
        str | None,
        typer.Option(
            "--trust-authres",
            help="Believe the DKIM result in the Authentication-Results field of this authserv-id (your receiving MTA).",
        ),
    ] = None,
    resolver: Annotated[
        list[str] | None,
        typer.Option(
            "--resolver",
            help="Nameserver IP[:PORT] for DKIM keys (repeatable); default: resolv.conf.",
        ),
    ] = None,
    destination: Annotated[
        list[str] | None,
        typer.Option(
            "--destination",
            help="rua URI (mailto: or https:) the given files were delivered to (repeatable); emails name theirs.",
        ),
    ] = None,
    database: DatabaseOption = DEFAULT_DATABASE,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Import reports from files, folders and IMAP mailboxes into the database."""
    from scanner.net.resolver import parse_nameserver
    from scanner.received.render import ImportProgressBar, render_import

    paths = paths or []
    if not paths and not imap:
        raise _fail("give report files or folders, or --imap URL")
    missing = [path for path in paths if not path.exists()]
    if missing:
        raise _fail(f"no such file or folder: {missing[0]}")
    targets: list[ImapTarget] = []
    for url in imap or []:
        target = parse_imap_url(url)
        if isinstance(target, ImapUrlError):
            raise _fail(f"--imap {redacted_url(url)}: {target.reason}")
        targets.append(target)
    settings: ImapSettings | None = None
    if targets:
        settings = ImapSettings(
            password=_password(imap_password_env, imap_password_file),
            ssl_context=_tls_context(imap_ca_file),
            timeout=imap_timeout,
            unseen_only=not imap_all,
        )
    try:
        nameservers = [parse_nameserver(text) for text in resolver or []]
    except ValueError as exc:
        raise _fail(str(exc)) from None
    lookup = CachedKeyLookup(build_resolver([(server.ip, server.port) for server in nameservers]))
    destinations = frozenset(normalise_destination(uri) for uri in destination or [])

    def items() -> Iterator[SourceItem]:
        if paths:
            yield from file_items(paths)
        for target in targets:
            assert settings is not None
            yield from imap_items(target, settings)

    stderr = output_console(stderr=True)
    interrupted = False
    with _open(database, create=True) as store:
        show_progress = not no_progress and stderr.is_terminal
        bar = ImportProgressBar(stderr) if show_progress else None
        importer = Importer(
            store,
            verify=build_verifier(lookup, trust_authres, now=lambda: datetime.now(UTC)),
            now=lambda: datetime.now(UTC),
            destinations=destinations,
            progress=bar,
        )
        with _sigterm_interrupts(), bar if bar is not None else contextlib.nullcontext():
            try:
                importer.run(items())
            except KeyboardInterrupt:
                interrupted = True
        tally: ImportTally = importer.tally
    render_import(output_console(), tally, str(database), interrupted=interrupted)
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if tally.count(EventKind.UNREADABLE):
        raise typer.Exit(EXIT_SOURCE_UNREADABLE)


def _readable(read: StoredReports) -> tuple[StoredReport, ...]:
    """The reports read back; each row skipped because it no longer reads is named on stderr."""
    stderr = output_console(stderr=True)
    for row in read.unreadable:
        stderr.print(
            line(
                Text(f"warning: stored report {row.row} ("),
                row.organization_name,
                Text(" "),
                row.report_id,
                Text(") skipped: "),
                row.reason,
            ),
            soft_wrap=True,
        )
    return read.reports


def _day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _fail(f"{option} {text!r}: give a date as YYYY-MM-DD") from None


def _period(since: str | None, until: str | None) -> tuple[date | None, date | None]:
    first, last = _day(since, "--since"), _day(until, "--until")
    if first and last and last < first:
        raise _fail("--until is before --since")
    return first, last


def _write_csv(directory: Path, tables: list[tuple[str | None, ReportTable]]) -> None:
    """`--csv DIR`: one `<table name>.csv` per table (`tables.csv_files`) in DIR, created."""
    import csv

    from scanner.received.tables import csv_files

    try:
        directory.mkdir(parents=True, exist_ok=True)
        files = csv_files(tables)
        for name, rows in files.items():
            with (directory / f"{name}.csv").open("w", encoding="utf-8", newline="") as handle:
                csv.writer(handle).writerows(rows)
    except OSError as exc:
        raise _fail(f"cannot write CSV files into {directory}: {exc.strerror or exc}") from None
    output_console(stderr=True).print(
        line(Text(f"{len(files)} CSV files written to "), str(directory))
    )


@tlsrpt_app.command("summary")
def summary(
    domain: DomainOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    json_out: JsonOption = False,
    csv_dir: CsvOption = None,
    verified_only: VerifiedOption = False,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Per policy domain: sessions, failure rate, failures by type, MX, policy type and day."""
    from scanner.received.render import render_summary
    from scanner.received.tables import domain_tables, overview_table

    first, last = _period(since, until)
    with _open(database, create=False) as store:
        stored = _readable(store.read(domain=domain, since=first, until=last))
    if verified_only:
        stored = tuple(report for report in stored if report.verified)
    summaries = summarise_domains(stored, domain)
    if json_out:
        document = summary_document(
            summaries,
            database=str(database),
            domain=domain,
            since=first,
            until=last,
            verified_only=verified_only,
        )
        sys.stdout.write(dumps_document(document) + "\n")
    else:
        render_summary(output_console(), summaries)
    if csv_dir is not None:
        period = report_period(summaries, first, last)
        _write_csv(
            csv_dir,
            [
                (None, overview_table(summaries, period)),
                *(
                    (summary.policy_domain, table)
                    for summary in summaries
                    for table in domain_tables(summary, period)
                ),
            ],
        )


@tlsrpt_app.command("sources")
def sources(
    domain: DomainOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    json_out: JsonOption = False,
    csv_dir: CsvOption = None,
    verified_only: VerifiedOption = False,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """Per reporting organization and per sending MTA IP (failures only)."""
    from scanner.received.render import render_sources
    from scanner.received.tables import source_tables

    first, last = _period(since, until)
    with _open(database, create=False) as store:
        stored = _readable(store.read(domain=domain, since=first, until=last))
    if verified_only:
        stored = tuple(report for report in stored if report.verified)
    result = summarise_sources(stored, domain)
    if json_out:
        document = sources_document(
            result,
            database=str(database),
            domain=domain,
            since=first,
            until=last,
            verified_only=verified_only,
        )
        sys.stdout.write(dumps_document(document) + "\n")
    else:
        render_sources(output_console(), result)
    if csv_dir is not None:
        _write_csv(csv_dir, [(None, table) for table in source_tables(result)])


@tlsrpt_app.command("serve")
def serve(
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT to listen on (port 0: any free port).")
    ],
    domain: Annotated[
        list[str],
        typer.Option(
            "--domain",
            help="Policy domain whose reports are accepted (repeatable; others get 403).",
        ),
    ],
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Certificate chain (PEM) for HTTPS.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="Private key (PEM) for HTTPS.")
    ] = None,
    database: DatabaseOption = DEFAULT_DATABASE,
    keep_days: Annotated[
        int | None,
        typer.Option(
            "--keep-days",
            min=1,
            help="Delete reports that ended more than N days ago (at start, then daily).",
        ),
    ] = None,
    destination: Annotated[
        list[str] | None,
        typer.Option(
            "--destination",
            help="The https: rua URI senders POST to (repeatable), recorded with each report.",
        ),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="Reverse proxy address whose X-Forwarded-For names the client (repeatable).",
        ),
    ] = None,
    rate_per_minute: Annotated[
        float,
        typer.Option(
            "--rate-per-minute", min=0.01, help="Reports per minute one client address may POST."
        ),
    ] = 10.0,
    burst: Annotated[
        int, typer.Option("--burst", min=1, help="Reports one client address may POST at once.")
    ] = 30,
) -> None:
    """Receive reports POSTed to an https: rua (RFC 8460 §5.4) into the database."""
    from scanner.received.serve import run_serve

    code = run_serve(
        listen=listen,
        domains=domain,
        tls_cert=tls_cert,
        tls_key=tls_key,
        database=database,
        keep_days=keep_days,
        destinations=destination or [],
        trusted_proxies=trusted_proxy or [],
        rate_per_minute=rate_per_minute,
        burst=burst,
        fail=_fail,
    )
    raise typer.Exit(code)


@tlsrpt_app.command("html")
def html(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")],
    domain: DomainOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    verified_only: VerifiedOption = False,
    database: DatabaseOption = DEFAULT_DATABASE,
) -> None:
    """One offline HTML page: an overview of every policy domain, then per domain charts
    (sessions per day, failures by result type, organizations, sending IPs) and tables."""
    from scanner.received.page import PageFilters, render_report_page
    from scanner.research.page import CHARTS_NOTE, charts_available

    first, last = _period(since, until)
    with _open(database, create=False) as store:
        stored = _readable(store.read(domain=domain, since=first, until=last))
    if verified_only:
        stored = tuple(report for report in stored if report.verified)
    summaries = summarise_domains(stored, domain)
    with_charts = charts_available()
    page = render_report_page(
        summaries,
        [summarise_sources(stored, summary.policy_domain) for summary in summaries],
        summarise_sources(stored, domain),
        PageFilters(str(database), domain, first, last, verified_only),
        with_charts=with_charts,
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror or exc}") from None
    stderr = output_console(stderr=True)
    stderr.print(line(Text("wrote "), str(out)))
    if not with_charts:
        stderr.print(f"note: {CHARTS_NOTE}", style="yellow", markup=False)
