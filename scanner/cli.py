"""Command line (docs/output.md#commands): the only place that builds real dependencies and calls `trio.run`."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, TextIO, TypeAlias, cast

import trio
import typer
from typer.core import TyperGroup
from typer.main import get_group

from scanner import __version__
from scanner.core.inputs import InputFormat, InvalidInput, RankedInput, Shard, parse_input_line
from scanner.core.result import DomainResult, ErrorKind, ScanError
from scanner.options import NetworkOptions, build_scanner, scan_settings, with_network_options
from scanner.output import result_line
from scanner.render import output_console
from scanner.scan import (
    InputReader,
    Scanner,
    ScanStats,
    UnknownSchemaVersion,
    completed_domains,
    iterate_lines,
)
from scanner.signals import cancel_on_signals
from scanner.untrusted import terminal

if TYPE_CHECKING:
    from typer._click import Command, Context

    from scanner.progress import Progress
    from scanner.workers import Load

EXIT_INTERRUPTED = 130
EXIT_USAGE = 2


def _add_research(app: typer.Typer) -> None:
    from scanner.research.cli import register

    register(app)


def _add_tlsrpt(app: typer.Typer) -> None:
    from scanner.received.cli import tlsrpt_app

    app.add_typer(tlsrpt_app, name="tlsrpt")


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
}
# The order in which `scanner --help` lists the commands.
LISTED_ORDER: Final = (
    "stats",
    "diff",
    "scan",
    "check",
    "report",
    "demo",
    "lab",
    "tlsrpt",
    "policy",
)


class OnDemandGroup(TyperGroup):
    """The root command: the commands of `COMMANDS_ON_DEMAND` are built when first named.

    A name the group does not know yet builds every on-demand command, so the root's
    help and "No such command ... Did you mean" see them all, as if they had been added
    at start.
    """

    def list_commands(self, ctx: Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS_ON_DEMAND}, key=_listed_position)

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
        return super().get_command(ctx, cmd_name)


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
lab_app = typer.Typer(help="The fixture lab: real DNS, SMTP and HTTPS servers on loopback.")
app.add_typer(lab_app, name="lab")


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


@dataclass(slots=True)
class LoadNote:
    """How DNS held up under the run's load, summed over processes, for the summary."""

    tries: int = 0
    timeouts: int = 0
    retries: int = 0
    lowered: int = 0
    lowest: int | None = None

    def add(self, scanner: Scanner) -> None:
        from scanner.workers import load_of

        self.add_load(load_of(scanner))

    def add_load(self, load: Load) -> None:
        self.tries += load.tries
        self.timeouts += load.timeouts
        self.retries += load.retries
        if load.lowered:
            self.lowered += load.lowered
            self.lowest = min(load.lowest, self.lowest or load.lowest)

    def words(self) -> str | None:
        """A line for the summary when DNS was overloaded; None when it was not."""
        if not self.timeouts and not self.lowered:
            return None
        text = (
            f"DNS under load: {self.timeouts} of {self.tries} tries timed out, "
            f"{self.retries} retried"
        )
        if self.lowered:
            text += (
                f"; domains in flight lowered {self.lowered} times (to {self.lowest} at "
                "the least) to keep lookups from being lost"
            )
        return text


@dataclass(slots=True)
class ScanEnd:
    interrupted: bool = False
    write_error: OSError | None = None
    stats: ScanStats = field(default_factory=ScanStats)
    probes_run: int = 0
    busy_signals: int = 0
    lost: list[str] = field(default_factory=list)
    stopped: bool = False  # every worker ended early: the input was not read to its end
    load: LoadNote = field(default_factory=LoadNote)


RunItems: TypeAlias = Callable[
    [AsyncIterator[str | InvalidInput | RankedInput], Callable[[str], None], ScanEnd],
    Awaitable[None],
]


def in_process(scanner: Scanner, progress: Progress | None) -> RunItems:
    """Scan in this process: one trio loop, the `Scanner`'s own gate."""

    async def run(
        items: AsyncIterator[str | InvalidInput | RankedInput],
        write_line: Callable[[str], None],
        end: ScanEnd,
    ) -> None:
        end.stats = scanner.stats
        try:
            await scanner.run(items, write_line, progress=progress)
        finally:
            end.probes_run = scanner.probe_cache.probes_run
            end.busy_signals = scanner.gate.busy_signals
            end.load.add(scanner)

    return run


def in_workers(network: NetworkOptions, workers: int, progress: Progress | None) -> RunItems:
    """Scan in `workers` processes behind one gate and one writer here."""
    from scanner.workers import ParallelRun, run_parallel

    gate = Scanner.local_gate(scan_settings(network))

    async def run(
        items: AsyncIterator[str | InvalidInput | RankedInput],
        write_line: Callable[[str], None],
        end: ScanEnd,
    ) -> None:
        totals = ParallelRun(load=end.load)
        end.stats = totals.stats
        try:
            await run_parallel(
                network, workers, items, write_line, gate=gate, progress=progress, totals=totals
            )
        finally:
            end.probes_run = totals.probes_run
            end.busy_signals = gate.busy_signals
            end.lost = totals.lost
            end.stopped = totals.stopped

    return run


async def run_scan(
    run_items: RunItems, items: AsyncIterator[str | InvalidInput | RankedInput], out: TextIO
) -> ScanEnd:
    """Run the scan until the input ends, SIGINT/SIGTERM arrives or the output fails.

    A failed write (disk full, ...) stops the scan at once: nothing is lost that was
    not already unwritable, and `--resume` repairs a torn last line.
    """
    end = ScanEnd()

    async with trio.open_nursery() as nursery:

        def write_line(text: str) -> None:
            if end.write_error is not None:
                return
            try:
                out.write(text + "\n")
                out.flush()
            except OSError as exc:
                end.write_error = exc
                nursery.cancel_scope.cancel()

        def interrupted() -> None:
            end.interrupted = True

        nursery.start_soon(cancel_on_signals, nursery.cancel_scope, interrupted)
        await run_items(items, write_line, end)
        nursery.cancel_scope.cancel()
    return end


async def scan_one(scanner: Scanner, domain: str) -> DomainResult | None:
    """`scanner.scan_domain(domain)`, or None when SIGINT/SIGTERM arrives first."""
    result: DomainResult | None = None
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            nonlocal result
            result = await scanner.scan_domain(domain)
            nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_on_signals, nursery.cancel_scope)
        nursery.start_soon(run)
    return result


def _input_files(domains: list[str] | None, input_file: str | None) -> list[Path | None]:
    """The input files of `scan` (None is stdin); stdin when nothing else is given and it is a pipe."""
    if not domains and input_file is None:
        if sys.stdin.isatty():
            raise typer.BadParameter("give domains as arguments, --input FILE or --input - (stdin)")
        input_file = "-"
    if input_file is None:
        return []
    if input_file == "-":
        return [None]
    path = Path(input_file)
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {input_file}", param_hint="--input")
    return [path]


def _processes(workers: int | None, files: list[Path | None]) -> int:
    """Every usable CPU for a list (file or stdin); one process for a few domains given as arguments.

    Worker processes cost a start each (imports, trust store) and a round trip to the
    parent's gate per connection slot: worth it for a list, not for a handful of names
    (docs/architecture.md#worker-processes).
    """
    from scanner.workers import usable_cpus

    if workers is None:
        return usable_cpus() if files else 1
    return usable_cpus() if workers == 0 else workers


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
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
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
    from scanner.research.metadata import recorded_scan

    shard_value = _shard(shard)
    if resume and out is None:
        raise typer.BadParameter(
            "--resume needs --out FILE, the file to resume", param_hint="--resume"
        )
    if resume and overwrite:
        raise typer.BadParameter(
            "--resume and --overwrite exclude each other", param_hint="--overwrite"
        )
    files = _input_files(domains, input_file)
    handle, out_path = open_output(out, resume=resume, overwrite=overwrite, shard=shard_value)
    try:
        skip = completed_domains(out_path) if resume else set()
    except UnknownSchemaVersion as exc:
        handle.close()
        raise typer.BadParameter(str(exc), param_hint="--resume") from None
    processes = _processes(workers, files)
    stderr = output_console(stderr=True)
    note = raise_descriptor_limit(network.concurrency)
    if note is not None:
        stderr.print(terminal(note, None, "yellow"))
    scanner = build_scanner(network)  # also checks the options (CA files, resolver) here
    tune_garbage_collector()
    reader = InputReader(skip=skip, shard=shard_value, input_format=input_format)
    with (
        handle,
        recorded_scan(
            out_path,
            network,
            vantage=vantage,
            inputs=files,
            input_format=input_format,
            shard=shard_value,
            resume=resume,
        ),
    ):
        progress: Progress | None = None
        if not no_progress and stderr.is_terminal:
            from scanner.progress import Progress

            progress = Progress(stderr)
        run_items = (
            in_workers(network, processes, progress)
            if processes > 1
            else in_process(scanner, progress)
        )
        with progress if progress is not None else contextlib.nullcontext():
            items = reader.stream(iterate_lines(domains or [], files))
            end = trio.run(run_scan, run_items, items, handle)
        with contextlib.suppress(OSError):  # a full disk refuses the final flush too
            handle.close()
    if end.write_error is not None:
        error = end.write_error
        stderr.print(
            terminal(
                f"error: writing {out_path} failed: {error.strerror or error}; scan stopped",
                None,
                "red",
            )
        )
        raise typer.Exit(1)
    stats = end.stats
    stderr.print(
        terminal(
            f"{stats.domains} domains written to {out_path} "
            f"({stats.ready} enforce-ready, {stats.with_indicators} with downgrade indicators, "
            f"{stats.errors} errors; {reader.duplicates} duplicates, {reader.skipped} resumed; "
            f"{end.probes_run} SMTP sessions, {end.busy_signals} busy replies; "
            f"{processes} process{'es' if processes > 1 else ''})",
            None,
        )
    )
    load = end.load.words()
    if load is not None:
        stderr.print(terminal(load, None, "yellow"))
    if end.lost or end.stopped:
        words = f"{len(end.lost)} domains it held have no line" + (
            "; every worker ended, so the rest of the input was not scanned" if end.stopped else ""
        )
        stderr.print(
            terminal(
                f"error: a worker process ended early; {words}: --resume scans them",
                None,
                "red",
            )
        )
    if stats.domains == 0 and reader.skipped == 0:
        stderr.print(terminal("warning: the input held no domains", None, "yellow"))
    if end.interrupted:
        stderr.print(
            terminal(
                "interrupted: the file holds only complete lines; use --resume to continue",
                None,
                "yellow",
            )
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if end.lost or end.stopped:
        raise typer.Exit(1)  # the scan did not complete; the lines written stand


def open_output(
    out: Path | None, *, resume: bool, overwrite: bool, shard: Shard | None
) -> tuple[TextIO, Path]:
    """The results file: appended with --resume, else created new (never silently replaced).

    The default name carries the time, the shard and a counter, so parallel runs
    (shards on one machine) never share a file.
    """
    if out is not None and out.is_dir():
        raise typer.BadParameter(f"{out} is a directory; give a file name", param_hint="--out")
    if resume:
        assert out is not None
        mode = "a"
    elif out is not None:
        mode = "w" if overwrite else "x"
    else:
        mode = "x"
    candidates = [out] if out is not None else default_output_paths(shard)
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = cast(TextIO, open(path, mode, encoding="utf-8"))  # noqa: SIM115 (the caller closes it)
            return handle, path
        except FileExistsError:
            if out is not None:
                raise typer.BadParameter(
                    f"{out} exists; --resume continues it, --overwrite replaces it",
                    param_hint="--out",
                ) from None
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot write {path}: {exc.strerror or exc}", param_hint="--out"
            ) from None
    raise typer.BadParameter(
        "no free default output name in results/; give --out FILE", param_hint="--out"
    )


def default_output_paths(shard: Shard | None) -> Iterator[Path]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    part = f"-shard{shard.index}of{shard.count}" if shard is not None else ""
    yield Path("results") / f"scan-{stamp}{part}.jsonl"
    for counter in range(2, 1000):
        yield Path("results") / f"scan-{stamp}{part}-{counter}.jsonl"


def raise_descriptor_limit(concurrency: int) -> str | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; a note when `concurrency` needs more.

    A domain in flight holds up to DESCRIPTORS_PER_DOMAIN sockets at once (DNS, the
    policy fetch, probes of several addresses).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    needed = concurrency * DESCRIPTORS_PER_DOMAIN + DESCRIPTORS_SPARE
    if needed > soft:
        return (
            f"warning: --concurrency {concurrency} may need about {needed} open files, but the "
            f"limit is {soft} (raise it with `ulimit -n`, or lower --concurrency): connections "
            "beyond it fail and their addresses would be reported not testable"
        )
    return None


DESCRIPTORS_PER_DOMAIN = 8
DESCRIPTORS_SPARE = 64


def tune_garbage_collector() -> None:
    """Long bulk runs allocate many short-lived objects and few cycles: collect less often."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


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
        scanned = trio.run(scan_one, scanner, item)
        if scanned is None:
            output_console(stderr=True).print(terminal("interrupted", None, "yellow"))
            raise typer.Exit(EXIT_INTERRUPTED)
        result = scanned
    console = output_console()
    if json_out:
        typer.echo(json.dumps(result_line(result, network.report), indent=2, ensure_ascii=False))
    else:
        render_check(console, result)
    if result.could_not_scan:
        raise typer.Exit(2)
    raise typer.Exit(0 if result.enforce_ready else 1)


# ---------------------------------------------------------------- report and stats


def read_lines(path: Path) -> Iterator[dict[str, object]]:
    """The JSON objects of a results file; other lines are skipped with a note on stderr."""
    stderr = output_console(stderr=True)
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                stderr.print(terminal(f"{path}:{number}: not a JSON line, skipped", None, "yellow"))
                continue
            if isinstance(record, dict):
                yield record


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
    from scanner.report_files import write_report_files
    from scanner.research.cli import describe_metadata

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


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output JSON lines file.")] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Deadline in seconds for each network step.")
    ] = 2.0,
) -> None:
    """Start the bundled lab on loopback, scan its demo world, compare with the expected verdicts."""
    from scanner.lab import demo_world_path, load_world
    from scanner.lab.demo import render_demo_summary, scan_world

    world = load_world(demo_world_path())
    out_path = out or Path("results") / f"demo-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    console = output_console()
    console.print(
        terminal(
            f"Serving the demo world ({len(world.domains)} domains) on loopback and scanning it ...",
            None,
        )
    )
    with out_path.open("w", encoding="utf-8") as handle:

        def write_line(text: str) -> None:
            handle.write(text + "\n")
            handle.flush()

        results = trio.run(scan_world, world, world.domain_names, write_line, timeout)
    ok = render_demo_summary(console, world, results)
    console.print(
        terminal(
            f"Results: {out_path}  (RFC 8460 reports: scanner report {out_path} --out-dir results/reports)",
            None,
        )
    )
    raise typer.Exit(0 if ok else 1)


@lab_app.command("serve")
def lab_serve(
    world: Annotated[
        Path | None, typer.Argument(help="World description (TOML); default: the demo world.")
    ] = None,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Where the lab CA file is written.")
    ] = Path("results/lab"),
    latency_ms: Annotated[
        float,
        typer.Option(
            "--latency-ms", min=0, help="Delay in ms added to every DNS, SMTP, HTTPS and TLS reply."
        ),
    ] = 0.0,
) -> None:
    """Serve a world on loopback until Ctrl-C, printing how to point the scanner at it."""
    from scanner.lab import Lab, demo_world_path, serve_forever

    world_path = world or demo_world_path()
    workdir.mkdir(parents=True, exist_ok=True)

    def on_ready(lab: Lab) -> None:
        typer.echo(f"world:     {world_path}")
        typer.echo(f"resolver:  {lab.resolver[0]}:{lab.resolver[1]}")
        typer.echo(f"smtp port: {lab.smtp_port}")
        typer.echo(f"https port: {lab.https_port}")
        typer.echo(f"CA file:   {lab.ca_file}")
        typer.echo("scan with: scanner scan DOMAIN " + " ".join(lab.scanner_args()))
        typer.echo("serving until Ctrl-C")

    stopped = False
    try:
        trio.run(
            lambda: serve_forever(world_path, workdir, on_ready=on_ready, latency=latency_ms / 1000)
        )
    except* KeyboardInterrupt:  # alone, or inside a group when it lands in a server task
        stopped = True
    if stopped:
        typer.echo("stopped")
        raise typer.Exit(EXIT_INTERRUPTED)
