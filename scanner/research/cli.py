"""The `stats` and `diff` commands; `register(app)` adds them to the application.

Exit status: `stats` 0 done, 2 usage or read errors (and a comparison the sidecars make
unsound, without `--force`). `diff` 0 nothing got worse, 1 something got worse, 2 usage
or read errors; `diff --vantage` 0 no path-dependent difference, 1 some.
Output goes to stdout; warnings, notes and skipped-line counts to stderr.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scanner.core.tlsrpt import rfc3339_utc
from scanner.render import natural_width
from scanner.research.diff import (
    Change,
    Direction,
    change_summary,
    compare_snapshots,
    got_worse,
    load_snapshots,
)
from scanner.research.lines import ResultFileError, SkipTally
from scanner.research.metadata import (
    METADATA_SUFFIX,
    Comparison,
    MetadataError,
    Problem,
    Severity,
    comparison_problems,
    load_file_metadata,
    read_metadata,
    rule_problems,
)
from scanner.research.tables import DEFAULT_TOP, statistics_json, statistics_tables
from scanner.research.vantage import (
    Flag,
    PairDifference,
    Transcript,
    VantageScan,
    compare_vantages,
    signature_text,
)
from scanner.untrusted import dumps_document, terminal, visible
from scanner.untrusted import line as text_line

if TYPE_CHECKING:
    from scanner.research.statistics import Statistics

EXIT_WORSE = 1
EXIT_USAGE = 2


def _stdout() -> Console:
    from scanner.render import output_console

    return output_console()


def _stderr() -> Console:
    from scanner.render import output_console

    return output_console(stderr=True)


def _judge_problems(problems: Sequence[Problem], force: bool) -> None:
    """Print the problems; exit 2 when one refuses the comparison and --force is absent."""
    stderr = _stderr()
    refusing = [p for p in problems if p.severity is Severity.REFUSE]
    for problem in problems:
        word = "refused" if problem.severity is Severity.REFUSE and not force else "warning"
        stderr.print(
            terminal(f"{word}: {problem.text}", None, "red" if word == "refused" else "yellow")
        )
    if refusing and not force:
        stderr.print(terminal("the comparison is unsound; --force compares anyway", None, "red"))
        raise typer.Exit(EXIT_USAGE)


def _print_skipped(tally: SkipTally) -> None:
    stderr = _stderr()
    for note in tally.notes:
        stderr.print(terminal(note, None, "yellow"))
    if tally.skipped:
        stderr.print(
            terminal(
                f"skipped: {tally.not_json} not JSON, {tally.foreign} foreign, "
                f"{sum(tally.unknown_versions.values())} of unknown schema versions",
                None,
            )
        )


def input_list_name(statistics: Statistics) -> str:
    """The name of the input list the files' sidecars name, when they name one; else ""."""
    names = {
        entry.metadata.input.name or ""
        for entry in statistics.files
        if entry.metadata is not None and entry.metadata.input is not None
    }
    return names.pop() if len(names) == 1 else ""


def _print_overlap(statistics: Statistics) -> None:
    """Say which files held lines of a domain already counted: it counts once, its latest line."""
    stderr = _stderr()
    for scan in statistics.scans:
        overlap = scan.overlap
        if not overlap.superseded:
            continue
        files = ", ".join(
            f"{visible(label, 200)} {count}" for label, count in sorted(overlap.by_file.items())
        )
        stderr.print(
            terminal(
                f"note: scan date {scan.date}: {overlap.superseded} lines name a domain that "
                f"another line of that date names too (the same list scanned twice, a file "
                f"given twice, or a shard beside a whole scan); each domain counts once, by its "
                f"latest line. Lines left out per file: {files}",
                None,
                "yellow",
            )
        )


def _read_error(error: ResultFileError) -> typer.Exit:
    _stderr().print(terminal(f"error: {error}", None, "red"))
    return typer.Exit(EXIT_USAGE)


def _usage_error(words: str) -> typer.Exit:
    _stderr().print(terminal(f"error: {words}", None, "red"))
    return typer.Exit(EXIT_USAGE)


def require_results_files(paths: Sequence[Path]) -> None:
    """A usage error, before any work, when a file is not a results file (or unreadable)."""
    from scanner.research.lines import not_a_results_file

    for path in paths:
        try:
            problem = not_a_results_file(path)
        except ResultFileError as error:
            raise _read_error(error) from None
        if problem is not None:
            raise _usage_error(problem)


def _writable_directory(directory: Path, option: str) -> None:
    """`directory` made if need be and writable, or a usage error before any work."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise _usage_error(f"{option} {directory}: not a directory") from None
    except OSError as error:
        raise _usage_error(f"{option} {directory}: {error.strerror or error}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _usage_error(f"{option} {directory}: not writable")


# ---------------------------------------------------------------- stats


def stats(
    results: Annotated[
        list[Path], typer.Argument(help="Results files (JSON lines).", exists=True, dir_okay=False)
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    csv_dir: Annotated[
        Path | None,
        typer.Option("--csv", help="Also write one CSV file per table into this directory."),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", help="Also write one self-contained offline HTML page.", dir_okay=False
        ),
    ] = None,
    top: Annotated[
        int, typer.Option("--top", min=1, max=10_000, help="Providers and TLDs listed.")
    ] = DEFAULT_TOP,
    force: Annotated[
        bool, typer.Option("--force", help="Count files whose metadata says they do not compare.")
    ] = False,
) -> None:
    """Adoption funnel, misconfigurations, breakdowns and trends over results files."""
    from scanner.research.statistics import StatisticsBuilder, stats_problems

    require_results_files(results)
    if csv_dir is not None:
        _writable_directory(csv_dir, "--csv")
    if html is not None:
        _writable_directory(html.parent, "--html")
    files = [load_file_metadata(path) for path in results]
    problems = stats_problems(files)
    _judge_problems(problems, force)
    builder = StatisticsBuilder()
    for path, entry in zip(results, files, strict=True):
        builder.add_file(path, entry)
    try:
        statistics = builder.result()
    except ResultFileError as error:
        raise _read_error(error) from None
    _print_skipped(statistics.skipped)
    _print_overlap(statistics)
    tables = statistics_tables(statistics, top=top)
    if json_out:
        typer.echo(dumps_document(statistics_json(statistics, problems, top=top)))
    else:
        from scanner.research.views import render_tables

        render_tables(_stdout(), tables)
    try:
        if csv_dir is not None:
            from scanner.research.views import write_csv

            written = write_csv(
                csv_dir,
                tables,
                scan_date=statistics.latest.date,
                input_list=input_list_name(statistics),
            )
            _stderr().print(terminal(f"{len(written)} CSV files written to {csv_dir}", None))
        if html is not None:
            from scanner.research.page import CHARTS_NOTE, charts_available, render_page

            with_charts = charts_available()
            html.parent.mkdir(parents=True, exist_ok=True)
            html.write_text(
                render_page(statistics, tables, problems, with_charts=with_charts),
                encoding="utf-8",
            )
            _stderr().print(terminal(f"HTML page written to {html}", None))
            if not with_charts:
                _stderr().print(terminal(f"note: {CHARTS_NOTE}", None, "yellow"))
    except OSError as error:
        _stderr().print(
            terminal(f"error: {error.strerror or error}: {error.filename or ''}", None, "red")
        )
        raise typer.Exit(EXIT_USAGE) from None


# ---------------------------------------------------------------- diff


def _change_json(change: Change) -> dict[str, object]:
    return {
        "domain": change.domain,
        "change": change.kind.value,
        "direction": change.direction.value,
        "mx": change.mx,
        "ip": change.ip,
        "old": change.old,
        "new": change.new,
        "code": change.code,
        "detail": change.detail,
    }


DIRECTION_STYLES = {Direction.WORSE: "red", Direction.BETTER: "green", Direction.NEUTRAL: ""}


def render_summary(console: Console, changes: Sequence[Change]) -> None:
    """What changed, by kind, before the rows: readiness flips first among the worse and better."""
    if not changes:
        console.print(Text("No change."))
        return
    table = Table(title=Text("Summary", style="bold"), title_justify="left")
    for column in ("change", "direction", "count"):
        table.add_column(Text(column), justify="right" if column == "count" else "left")
    for kind, direction, count in change_summary(changes):
        table.add_row(
            Text(kind.value),
            Text(direction.value, style=DIRECTION_STYLES[direction]),
            Text(str(count)),
        )
    console.print(table)


def render_changes(console: Console, changes: Sequence[Change]) -> None:
    render_summary(console, changes)
    if changes:
        render_rows(console, changes)
    counts = {direction: sum(c.direction is direction for c in changes) for direction in Direction}
    console.print(
        Text(
            f"{counts[Direction.WORSE]} worse, {counts[Direction.BETTER]} better, "
            f"{counts[Direction.NEUTRAL]} neutral"
        )
    )


def render_rows(console: Console, changes: Sequence[Change]) -> None:
    table = Table(title=Text("Changes", style="bold"), title_justify="left")
    for column in ("domain", "change", "direction", "MX", "address", "old", "new", "detail"):
        table.add_column(Text(column))
    for change in changes:
        table.add_row(
            terminal(change.domain),
            Text(change.kind.value),
            Text(change.direction.value, style=DIRECTION_STYLES[change.direction]),
            terminal(change.mx or ""),
            terminal(change.ip or ""),
            terminal(change.old or ""),
            terminal(change.new or ""),
            terminal(change.detail),
        )
    if natural_width(table) <= console.width:
        console.print(table)
        return
    # Too narrow for the table: one block per domain, names and addresses whole.
    console.print(Text("Changes", style="bold"))
    domain = None
    for change in changes:
        if change.domain != domain:
            domain = change.domain
            console.print(text_line((change.domain, "bold")))
        where = " ".join(x for x in (change.mx, change.ip) if x)
        console.print(
            text_line(
                Text("  "),
                Text(change.direction.value, style=DIRECTION_STYLES[change.direction]),
                Text(f" {change.kind.value}"),
                Text(" at ") if where else Text(""),
                where,
            )
        )
        values = f"{change.old or '–'} → {change.new or '–'}" if change.old or change.new else ""
        for words in (values, change.detail):
            if words and words != change.new:
                console.print(text_line(Text("    "), words))


def _time_diff(files: list[Path], json_out: bool, force: bool) -> None:
    if len(files) != 2:
        raise typer.BadParameter("give exactly two files, OLD and NEW (or --vantage for more)")
    old_path, new_path = files
    problems = comparison_problems(Comparison.TIME_DIFF, [load_file_metadata(p) for p in files])
    _judge_problems(problems, force)
    tally = SkipTally()
    try:
        old = load_snapshots(old_path, tally)
        new = load_snapshots(new_path, tally)
    except ResultFileError as error:
        raise _read_error(error) from None
    _print_skipped(tally)
    changes = compare_snapshots(old, new)
    if json_out:
        document = {
            "old": str(old_path),
            "new": str(new_path),
            "worse": sum(c.direction is Direction.WORSE for c in changes),
            "better": sum(c.direction is Direction.BETTER for c in changes),
            "neutral": sum(c.direction is Direction.NEUTRAL for c in changes),
            "summary": [
                {"change": kind.value, "direction": direction.value, "count": count}
                for kind, direction, count in change_summary(changes)
            ],
            "changes": [_change_json(change) for change in changes],
            "problems": [{"severity": p.severity.value, "text": p.text} for p in problems],
        }
        typer.echo(dumps_document(document))
    else:
        render_changes(_stdout(), changes)
    raise typer.Exit(EXIT_WORSE if got_worse(changes) else 0)


def vantage_scans(files: Sequence[Path], force: bool) -> list[VantageScan]:
    """Each file with the vantage its sidecar names; without one, usage error unless --force."""
    entries = [load_file_metadata(path) for path in files]
    problems = rule_problems(Comparison.VANTAGE_DIFF, entries)
    scans: list[VantageScan] = []
    for path, entry in zip(files, entries, strict=True):
        name = entry.metadata.vantage if entry.metadata is not None else None
        if name is None:
            why = entry.unreadable or f"no vantage in {path}{METADATA_SUFFIX}"
            problems.append(
                Problem(
                    Severity.REFUSE, f"{path}: vantage unknown ({why}); --force takes the file name"
                )
            )
            name = path.name
        scans.append(VantageScan(name, path))
    _judge_problems(problems, force)
    if len({scan.vantage for scan in scans}) < 2:
        raise typer.BadParameter(
            "the files come from one vantage; give scans from at least two (scan --vantage NAME)"
        )
    return scans


def _difference_json(difference: PairDifference) -> dict[str, object]:
    return {
        "mx": difference.mx,
        "ip": difference.ip,
        "differs_in": list(difference.fields),
        "flag": difference.flag.value,
        "observations": [
            {
                "vantage": o.scan.vantage,
                "file": str(o.scan.path),
                "starttls": o.signature.starttls,
                "certificate_sha256": o.signature.certificate,
                "tls_version": o.signature.tls_version,
            }
            for o in difference.observations
        ],
        "transcripts": [
            {"vantage": t.scan.vantage, "file": str(t.scan.path), "transcript": list(t.lines)}
            for t in difference.transcripts
        ],
    }


def render_differences(
    console: Console, scans: Sequence[VantageScan], differences: Sequence[PairDifference]
) -> None:
    vantages = list(dict.fromkeys(scan.vantage for scan in scans))
    table = Table(title=Text("Differences across vantages", style="bold"), title_justify="left")
    for column in ("MX", "address", "differs in", *vantages, "flag"):
        table.add_column(terminal(column))
    for difference in differences:
        per_vantage = []
        for vantage in vantages:
            seen = [
                signature_text(o.signature)
                for o in difference.observations
                if o.scan.vantage == vantage
            ]
            per_vantage.append(terminal(" | ".join(seen) or "not tested"))
        flag_style = "red" if difference.flag is Flag.PATH_DEPENDENT else "yellow"
        table.add_row(
            terminal(difference.mx),
            terminal(difference.ip),
            Text(", ".join(difference.fields)),
            *per_vantage,
            Text(difference.flag.value, style=flag_style),
        )
    console.print(table)
    for difference in differences:
        first: dict[str, Transcript] = {}
        for transcript in difference.transcripts:
            first.setdefault(transcript.scan.vantage, transcript)
        side = Table(
            title=text_line(Text("Transcripts of "), difference.mx, Text(" "), difference.ip),
            title_justify="left",
            show_lines=False,
        )
        shown = [first[v] for v in vantages if v in first]
        for transcript in shown:
            side.add_column(
                text_line(transcript.scan.vantage, Text(" ("), transcript.scan.path.name, Text(")"))
            )
        for index in range(max((len(t.lines) for t in shown), default=0)):
            side.add_row(*(terminal(t.lines[index] if index < len(t.lines) else "") for t in shown))
        console.print(side)
    paths = sum(d.flag is Flag.PATH_DEPENDENT for d in differences)
    console.print(Text(f"{len(differences)} differing (MX, address) pairs, {paths} path-dependent"))


def _vantage_diff(files: list[Path], json_out: bool, force: bool) -> None:
    if len(files) < 2:
        raise typer.BadParameter("give at least two files from different vantages")
    scans = vantage_scans(files, force)
    tally = SkipTally()
    try:
        differences = compare_vantages(scans, tally)
    except ResultFileError as error:
        raise _read_error(error) from None
    _print_skipped(tally)
    if json_out:
        document = {
            "vantages": {
                scan.vantage: [str(s.path) for s in scans if s.vantage == scan.vantage]
                for scan in scans
            },
            "differences": [_difference_json(d) for d in differences],
        }
        typer.echo(dumps_document(document))
    else:
        render_differences(_stdout(), scans, differences)
    path_dependent = any(d.flag is Flag.PATH_DEPENDENT for d in differences)
    raise typer.Exit(EXIT_WORSE if path_dependent else 0)


def diff(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="OLD.jsonl NEW.jsonl, or with --vantage two or more files.",
            exists=True,
            dir_okay=False,
        ),
    ],
    vantage: Annotated[
        bool,
        typer.Option("--vantage", help="Compare the same MX addresses across the files' vantages."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Compare files whose metadata says they do not compare.")
    ] = False,
) -> None:
    """What changed per domain between two scans (exit 1 when something got worse)."""
    require_results_files(files)
    if vantage:
        _vantage_diff(files, json_out, force)
    else:
        _time_diff(files, json_out, force)


# ---------------------------------------------------------------- report and registration


def describe_metadata(results: Path) -> Text | None:
    """One line about the scan that wrote `results`, for `scanner report`; None without a sidecar."""
    try:
        metadata = read_metadata(results)
    except MetadataError as error:
        return terminal(f"warning: {results}{METADATA_SUFFIX} is unusable: {error}", None, "yellow")
    if metadata is None:
        return None
    finished = rfc3339_utc(metadata.finished_at) if metadata.finished_at else "unfinished"
    return terminal(
        f"scan by scanner {metadata.scanner_version} from vantage {metadata.vantage or 'unnamed'} "
        f"(EHLO {metadata.ehlo_name or '?'}), {rfc3339_utc(metadata.started_at)} to {finished}",
        None,
    )


def register(app: typer.Typer) -> None:
    """Add `stats` and `diff` to the application."""
    app.command("stats")(stats)
    app.command("diff")(diff)
