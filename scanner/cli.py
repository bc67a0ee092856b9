"""Command line (docs/output.md#commands): the typer commands; the run driver of `scan` is `run.py`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, TypeVar

import typer
from typer.core import TyperGroup
from typer.main import get_group

from scanner import __version__
from scanner.core.egress import Egress, blocked_words
from scanner.core.inputs import InputFormat, InvalidInput, Shard, parse_input_line
from scanner.core.result import DomainResult, ErrorKind, ScanError
from scanner.files import CannotResume, completed_domains
from scanner.options import NetworkOptions, build_scanner, with_network_options
from scanner.output import result_line
from scanner.render import output_console
from scanner.run import (
    DEFAULT_STATUS_INTERVAL,
    EXIT_INTERRUPTED,
    ScanPlan,
    input_files,
    open_output,
    processes_for,
    run_bulk_scan,
    scan_talking,
)
from scanner.untrusted import dumps_document, terminal

if TYPE_CHECKING:
    from typer._click import Command, Context, Parameter


EXIT_USAGE = 2


def _add_research(app: typer.Typer) -> None:
    from scanner.research.cli import register

    register(app)


def _add_tlsrpt(app: typer.Typer) -> None:
    from scanner.received.cli import tlsrpt_app

    app.add_typer(tlsrpt_app, name="tlsrpt")


def _add_lab(app: typer.Typer) -> None:
    from scanner.lab.cli import register

    register(app)


def _add_doctor(app: typer.Typer) -> None:
    from scanner.doctor import register

    register(app)


def _add_stages(app: typer.Typer) -> None:
    from scanner.stages.cli import register

    register(app)


def _add_policy(app: typer.Typer) -> None:
    from scanner.suggest import policy_app

    app.add_typer(policy_app, name="policy")


# Commands whose modules a scan never uses (result files, statistics and pages; SQLite,
# DKIM and email parsing; policy suggestions), with the function that adds each to an
# application. They are imported when a command line names them: `scanner scan` and
# every worker process start without them.
COMMANDS_ON_DEMAND: Final[Mapping[str, Callable[[typer.Typer], None]]] = {
    "stats": _add_research,
    "diff": _add_research,
    "tlsrpt": _add_tlsrpt,
    "policy": _add_policy,
    "doctor": _add_doctor,
    "stage": _add_stages,
    "demo": _add_lab,
    "lab": _add_lab,
}
# The order in which `scanner --help` lists the commands.
LISTED_ORDER: Final = (
    "check",
    "scan",
    "stage",
    "doctor",
    "report",
    "stats",
    "diff",
    "tlsrpt",
    "policy",
    "demo",
    "lab",
)


P = TypeVar("P", bound="Parameter")


class OnDemandGroup(TyperGroup):
    """The root command: the commands of `COMMANDS_ON_DEMAND` are built when first named.

    A name the group does not know yet builds every on-demand command, so the root's
    help and "No such command ... Did you mean" see them all, as if they had been added
    at start.
    """

    def list_commands(self, ctx: Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS_ON_DEMAND}, key=_listed_position)

    def get_params(self, ctx: Context) -> list[Parameter]:
        return [_tidy(param) for param in super().get_params(ctx)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in self.commands:
            named = cmd_name in COMMANDS_ON_DEMAND
            adders = {
                add: None
                for name, add in COMMANDS_ON_DEMAND.items()
                if name not in self.commands and (name == cmd_name or not named)
            }
            for add in adders:
                part = typer.Typer()
                add(part)
                for name, command in get_group(part).commands.items():
                    self.commands.setdefault(name, command)
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            _tidy_command(found)
        return found


# The words help shows for a value, by its type (`<list[Path]>` reads as FILE).
_VALUE_WORDS: Final = {"int": "N", "float": "NUMBER", "Path": "FILE", "str": "TEXT"}


def _tidy(param: P) -> P:
    """Help that reads as words: a flag shows no `<bool>`, a value a word (N, FILE, TEXT),
    an argument its name in capitals (in the usage line too, where typer would put a
    required one in braces: `DOMAIN`, `RESULTS...`, an optional one `[NAME]`), and no
    type beside it (`<str>`, `<path>`)."""
    if param.param_type_name == "argument" and param.name:
        word = param.metavar or param.name.upper()
        word = word if param.required else f"[{word}]"
        word += "..." if param.nargs != 1 else ""
        param.get_usage_pieces = lambda ctx: [word]  # type: ignore[method-assign]
        param.display_type_rich = lambda ctx: None  # type: ignore[attr-defined]
    if param.metavar is not None:
        return param
    if getattr(param, "is_flag", False):
        param.metavar = ""
    elif param.param_type_name == "argument" and param.name:
        param.metavar = param.name.upper()
    else:
        bare_type = getattr(param, "bare_type", None)
        kind = str(bare_type()) if callable(bare_type) else ""
        kind = kind.removeprefix("list[").removesuffix("]")
        if kind in _VALUE_WORDS:
            param.metavar = _VALUE_WORDS[kind]
    return param


def _tidy_command(command: Command) -> None:
    """`_tidy` every parameter of `command` and of its subcommands, the help option too."""
    for param in command.params:
        _tidy(param)
    original = command.get_help_option

    def get_help_option(ctx: Context) -> Parameter | None:
        option = original(ctx)
        return _tidy(option) if option is not None else None

    command.get_help_option = get_help_option  # type: ignore[method-assign,assignment]
    for sub in getattr(command, "commands", {}).values():
        _tidy_command(sub)


def _listed_position(name: str) -> tuple[int, str]:
    return (LISTED_ORDER.index(name), "") if name in LISTED_ORDER else (len(LISTED_ORDER), name)


app = typer.Typer(
    name="scanner",
    help="Active STARTTLS probe and MTA-STS downgrade-detection scanner.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OnDemandGroup,
)


def main() -> None:
    app()


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"scanner {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Active STARTTLS probe and MTA-STS downgrade-detection scanner."""


# ---------------------------------------------------------------- scan


def check_vantage(value: str | None) -> str | None:
    """The typer callback of `scan --vantage NAME`."""
    if value is None:
        return None
    from scanner.research.metadata import vantage_problem

    if (problem := vantage_problem(value)) is not None:
        raise typer.BadParameter(problem)
    return value


def _shard(text: str | None) -> Shard | None:
    if text is None:
        return None
    try:
        return Shard.parse(text, os.environ)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from None


@app.command()
@with_network_options
def scan(
    domains: Annotated[list[str] | None, typer.Argument(help="Domains to scan.")] = None,
    input_file: Annotated[
        str | None,
        typer.Option("--input", "-i", help="File of domains, one per line; '-' for stdin."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output JSON lines file.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip domains already complete in --out.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out file.")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="K/N: scan the K-th of N stable hash slices (0 <= K < N); auto or auto/N: "
            "from a Kubernetes Indexed Job or a Slurm array.",
        ),
    ] = None,
    input_format: Annotated[
        InputFormat,
        typer.Option("--input-format", help="lines, csv (rank,domain as Tranco), or auto: detect."),
    ] = InputFormat.AUTO,
    vantage: Annotated[
        str | None,
        typer.Option(
            "--vantage",
            callback=check_vantage,
            help="Name of this scan's network vantage, for the metadata.",
        ),
    ] = None,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No progress bar and no status lines.")
    ] = False,
    status_interval: Annotated[
        float,
        typer.Option(
            "--status-interval",
            min=1.0,
            help="Seconds between status lines when stderr is no terminal (a batch log).",
        ),
    ] = DEFAULT_STATUS_INTERVAL,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=10_000, help="Domains in flight.")
    ] = 100,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            max=256,
            help="Worker processes; 1: one process. Default (and 0): the CPUs this process may use, from affinity and cgroup quota; one process for domains given as arguments.",
        ),
    ] = None,
    *,
    network: NetworkOptions,
) -> None:
    """Scan domains and write one JSON line per domain."""
    shard_value = _shard(shard)
    if resume and out is None:
        raise typer.BadParameter(
            "--resume needs --out FILE, the file to resume", param_hint="--resume"
        )
    if resume and overwrite:
        raise typer.BadParameter(
            "--resume and --overwrite exclude each other", param_hint="--overwrite"
        )
    files = input_files(domains, input_file)
    handle, out_path = open_output(out, resume=resume, overwrite=overwrite, shard=shard_value)
    try:
        skip = completed_domains(out_path) if resume else set()
    except CannotResume as exc:
        handle.close()
        raise typer.BadParameter(str(exc), param_hint="--resume") from None
    processes = processes_for(workers, files)
    scanner = build_scanner(network)  # also checks the options (CA files, resolver) here
    status = run_bulk_scan(
        scanner,
        network,
        ScanPlan(
            domains=domains or [],
            files=files,
            out_path=out_path,
            skip=skip,
            shard=shard_value,
            input_format=input_format,
            vantage=vantage,
            resume=resume,
            processes=processes,
            progress=not no_progress,
            status_interval=status_interval,
        ),
        handle,
    )
    if status:
        raise typer.Exit(status)


# ---------------------------------------------------------------- check


@app.command()
@with_network_options
def check(
    domain: Annotated[str, typer.Argument(help="The domain to check.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON line instead.")] = False,
    *,
    network: NetworkOptions,
) -> None:
    """Human verdict for one domain: exit 0 ready, 1 not ready, 2 could not scan."""
    from scanner.render import render_check

    item = parse_input_line(domain)
    scanner = build_scanner(network)
    if item is None or isinstance(item, InvalidInput):
        reason = item.reason if item is not None else "empty"
        result = DomainResult.failed(
            domain, ScanError(ErrorKind.INVALID_DOMAIN, reason), datetime.now(UTC)
        )
    else:
        scanned = scan_talking(scanner, item, quiet=json_out)
        if scanned is None:
            output_console(stderr=True).print(terminal("interrupted", None, "yellow"))
            raise typer.Exit(EXIT_INTERRUPTED)
        result = scanned
    blocked = scanner.egress.egress is Egress.BLOCKED
    if blocked:
        stderr = output_console(stderr=True)
        for words in blocked_words(scanner.egress):
            stderr.print(terminal(words, None, "red"))
    console = output_console()
    if json_out:
        typer.echo(dumps_document(result_line(result, network.report)))
    else:
        render_check(console, result)
    if blocked or result.could_not_scan:
        raise typer.Exit(2)
    raise typer.Exit(0 if result.enforce_ready else 1)


# ---------------------------------------------------------------- report and stats


@app.command()
def report(
    results: Annotated[
        Path, typer.Argument(help="Results file (JSON lines).", exists=True, dir_okay=False)
    ],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Directory for the reports.")],
    gzip_reports: Annotated[
        bool, typer.Option("--gzip", help="Write .json.gz (RFC 8460 §5.2).")
    ] = False,
    submitter: Annotated[
        str | None,
        typer.Option(
            "--submitter", help="Submitter domain in file names; default: from contact-info."
        ),
    ] = None,
) -> None:
    """Write one RFC 8460 report per domain, named as RFC 8460 §5.1 recommends."""
    from scanner.report_files import read_lines, write_report_files
    from scanner.research.cli import describe_metadata, require_results_files

    require_results_files([results])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot use {out_dir}: {exc.strerror or exc}", param_hint="--out-dir"
        ) from None
    counts = write_report_files(
        read_lines(results), out_dir, gzip_reports=gzip_reports, submitter=submitter
    )
    stderr = output_console(stderr=True)
    if (scan := describe_metadata(results)) is not None:
        stderr.print(scan)
    for problem in counts.refused:
        stderr.print(terminal(problem, limit=None, style="yellow"))
    stderr.print(
        terminal(
            f"{counts.written} reports written to {out_dir}; {counts.skipped} lines without "
            f"a report skipped; {len(counts.refused)} reports refused",
            limit=None,
        )
    )


# ---------------------------------------------------------------- demo and lab
