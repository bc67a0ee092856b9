"""Command line (DESIGN §3): the only place that builds real dependencies and calls `trio.run`."""

from __future__ import annotations

import contextlib
import gzip
import json
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TextIO, cast

import dns.exception
import trio
import typer
from rich.console import Console

from scanner import __version__
from scanner.core.addresses import Exclusions, parse_exclusions
from scanner.core.inputs import InvalidInput, Shard, parse_input_line
from scanner.core.names import is_valid_hostname
from scanner.models import ReportOptions
from scanner.net.policy_fetch import FetchSettings
from scanner.net.probe import ProbeSettings
from scanner.net.resolver import Nameserver, Resolver, parse_nameserver
from scanner.net.tls import TrustStore, build_client_context
from scanner.scan import (
    InputReader,
    Scanner,
    ScanSettings,
    completed_domains,
    iterate_lines,
)

EXIT_INTERRUPTED = 130
EXIT_USAGE = 2

app = typer.Typer(
    name="scanner",
    help="Active STARTTLS probe and MTA-STS downgrade-detection scanner.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lab_app = typer.Typer(help="The fixture lab: real DNS, SMTP and HTTPS servers on loopback.")
app.add_typer(lab_app, name="lab")

stderr = Console(stderr=True)


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
        typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Active STARTTLS probe and MTA-STS downgrade-detection scanner."""


# ---------------------------------------------------------------- shared options


ResolverOpt = Annotated[
    list[str] | None,
    typer.Option("--resolver", help="Nameserver IP[:PORT] (repeatable); default: resolv.conf."),
]
CaFileOpt = Annotated[
    list[Path] | None,
    typer.Option("--ca-file", help="Extra trust anchors (PEM), added to certifi's roots.", exists=True, dir_okay=False),
]
AllowPrivateOpt = Annotated[
    bool, typer.Option("--allow-private", help="Permit loopback, private and link-local targets.")
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Deadline in seconds for each network step.")
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", min=1, max=10_000, help="Domains in flight.")]
PerIpOpt = Annotated[int, typer.Option("--per-ip", min=1, help="Connections to one address at once.")]
EhloOpt = Annotated[str, typer.Option("--ehlo-name", help="Name sent in EHLO; identify your scanner.")]
SmtpPortOpt = Annotated[int, typer.Option("--smtp-port", min=1, max=65535, help="SMTP port (labs).")]
HttpsPortOpt = Annotated[int, typer.Option("--https-port", min=1, max=65535, help="HTTPS port (labs).")]
ExcludeOpt = Annotated[
    Path | None,
    typer.Option("--exclude", help="File of domains and CIDRs never contacted.", exists=True, dir_okay=False),
]
OrgOpt = Annotated[str, typer.Option("--org", help="organization-name of the RFC 8460 reports.")]
ContactOpt = Annotated[str, typer.Option("--contact", help="contact-info of the RFC 8460 reports.")]


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    resolvers: tuple[Nameserver, ...]
    ca_files: tuple[Path, ...]
    allow_private: bool
    timeout: float
    concurrency: int
    per_ip: int
    ehlo_name: str
    smtp_port: int
    https_port: int
    exclusions: Exclusions | None
    report: ReportOptions


def network_options(
    resolver: list[str] | None,
    ca_file: list[Path] | None,
    allow_private: bool,
    timeout: float,
    concurrency: int,
    per_ip: int,
    ehlo_name: str,
    smtp_port: int,
    https_port: int,
    exclude: Path | None,
    org: str,
    contact: str,
) -> NetworkOptions:
    try:
        nameservers = tuple(parse_nameserver(text) for text in resolver or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--resolver") from None
    exclusions = None
    if exclude is not None:
        try:
            exclusions = parse_exclusions(exclude.read_text(encoding="utf-8").splitlines())
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--exclude") from None
    if not valid_ehlo_name(ehlo_name):
        raise typer.BadParameter(
            f"{ehlo_name!r} is not a hostname or an address literal such as [192.0.2.1]",
            param_hint="--ehlo-name",
        )
    submitter = contact.rpartition("@")[2] or "scanner.invalid"
    return NetworkOptions(
        resolvers=nameservers,
        ca_files=tuple(ca_file or []),
        allow_private=allow_private,
        timeout=timeout,
        concurrency=concurrency,
        per_ip=per_ip,
        ehlo_name=ehlo_name,
        smtp_port=smtp_port,
        https_port=https_port,
        exclusions=exclusions,
        report=ReportOptions(organization_name=org, contact_info=contact, submitter=submitter),
    )


def valid_ehlo_name(name: str) -> bool:
    """RFC 5321 §4.1.1.1: EHLO takes a domain or an address literal."""
    import ipaddress

    if name.startswith("[") and name.endswith("]"):
        literal = name[1:-1].removeprefix("IPv6:")
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            return False
        return True
    return is_valid_hostname(name)


def build_scanner(options: NetworkOptions) -> Scanner:
    """Real dependencies for one run: resolver, TLS context, trust store, settings."""
    try:
        trust = TrustStore.from_files(list(options.ca_files))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ca-file") from None
    settings = ScanSettings(
        concurrency=options.concurrency,
        per_ip=options.per_ip,
        domain_timeout=max(60.0, options.timeout * 30),
        allow_private=options.allow_private,
        exclusions=options.exclusions,
        report=options.report,
        probe=ProbeSettings(
            smtp_port=options.smtp_port,
            ehlo_name=options.ehlo_name,
            step_timeout=options.timeout,
            total_timeout=options.timeout * 8,
            allow_private=options.allow_private,
        ),
        fetch=FetchSettings(
            https_port=options.https_port,
            timeout=options.timeout,
            allow_private=options.allow_private,
        ),
    )
    try:
        resolver = Resolver.create(options.resolvers or None, timeout=options.timeout)
    except dns.exception.DNSException as exc:
        raise typer.BadParameter(
            f"no usable system resolver ({exc}); name one with --resolver IP[:PORT]",
            param_hint="--resolver",
        ) from None
    return Scanner(
        resolver=resolver,
        context=build_client_context(),
        trust=trust,
        settings=settings,
    )


# ---------------------------------------------------------------- scan


class Progress:
    """Progress on stderr: domains done, rate, failures seen."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self._progress = RichProgress(
            TextColumn("[bold]scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} domains/s"),
            TextColumn("not ready {task.fields[not_ready]}  errors {task.fields[errors]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("scan", total=None, rate=0.0, not_ready=0, errors=0)
        self._started = datetime.now(UTC)
        self._done = 0
        self._not_ready = 0
        self._errors = 0

    def __enter__(self) -> Progress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def domain_done(self, line: dict[str, Any]) -> None:
        self._done += 1
        if line.get("error"):
            self._errors += 1
        elif not line.get("enforce_ready"):
            self._not_ready += 1
        elapsed = max((datetime.now(UTC) - self._started).total_seconds(), 1e-6)
        self._progress.update(
            self._task,
            completed=self._done,
            rate=self._done / elapsed,
            not_ready=self._not_ready,
            errors=self._errors,
        )


@dataclass(slots=True)
class ScanEnd:
    interrupted: bool = False
    write_error: OSError | None = None


async def run_scan(
    scanner: Scanner,
    reader: InputReader,
    lines: Callable[[], Any],
    out: TextIO,
    progress: Progress | None,
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

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    end.interrupted = True
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch_signals)
        await scanner.run(reader.stream(lines()), write_line, progress=progress)
        nursery.cancel_scope.cancel()
    return end


async def interruptible(fn: Callable[[str], Any], arg: str) -> Any:
    """`await fn(arg)`, or None when SIGINT/SIGTERM arrives first."""
    result: Any = None
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        async def run() -> None:
            nonlocal result
            result = await fn(arg)
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_signals)
        nursery.start_soon(run)
    return result


@app.command()
def scan(
    domains: Annotated[list[str] | None, typer.Argument(help="Domains to scan.")] = None,
    input_file: Annotated[
        str | None, typer.Option("--input", "-i", help="File of domains, one per line; '-' for stdin.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output JSON lines file.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip domains already complete in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
    shard: Annotated[str | None, typer.Option("--shard", help="K/N: scan the K-th of N stable hash slices (0 <= K < N).")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    resolver: ResolverOpt = None,
    ca_file: CaFileOpt = None,
    allow_private: AllowPrivateOpt = False,
    timeout: TimeoutOpt = 10.0,
    concurrency: ConcurrencyOpt = 100,
    per_ip: PerIpOpt = 4,
    ehlo_name: EhloOpt = "scanner.invalid",
    smtp_port: SmtpPortOpt = 25,
    https_port: HttpsPortOpt = 443,
    exclude: ExcludeOpt = None,
    org: OrgOpt = "scanner",
    contact: ContactOpt = "postmaster@scanner.invalid",
) -> None:
    """Scan domains and write one JSON line per domain."""
    options = network_options(
        resolver, ca_file, allow_private, timeout, concurrency, per_ip, ehlo_name,
        smtp_port, https_port, exclude, org, contact,
    )
    shard_value = None
    if shard is not None:
        try:
            shard_value = Shard.parse(shard)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--shard") from None
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out FILE, the file to resume", param_hint="--resume")
    if resume and overwrite:
        raise typer.BadParameter("--resume and --overwrite exclude each other", param_hint="--overwrite")
    if not domains and input_file is None:
        if sys.stdin.isatty():
            raise typer.BadParameter("give domains as arguments, --input FILE or --input - (stdin)")
        input_file = "-"
    files: list[Path | None] = []
    if input_file is not None:
        if input_file == "-":
            files.append(None)
        else:
            path = Path(input_file)
            if not path.is_file():
                raise typer.BadParameter(f"no such file: {input_file}", param_hint="--input")
            files.append(path)
    handle, out_path = open_output(out, resume=resume, overwrite=overwrite, shard=shard_value)
    skip = completed_domains(out_path) if resume else set()
    scanner = build_scanner(options)
    tune_garbage_collector()
    reader = InputReader(skip=skip, shard=shard_value)
    show_progress = not no_progress and sys.stderr.isatty()
    with handle:
        progress = Progress(stderr) if show_progress else None
        with progress if progress is not None else contextlib.nullcontext():
            end = trio.run(
                run_scan, scanner, reader, lambda: iterate_lines(domains or [], files), handle, progress
            )
        with contextlib.suppress(OSError):  # a full disk refuses the final flush too
            handle.close()
    if end.write_error is not None:
        error = end.write_error
        stderr.print(f"[red]error:[/] writing {out_path} failed: {error.strerror or error}; scan stopped")
        raise typer.Exit(1)
    stats = scanner.stats
    stderr.print(
        f"{stats.domains} domains written to {out_path} "
        f"({stats.ready} enforce-ready, {stats.with_indicators} with downgrade indicators, "
        f"{stats.errors} errors; {reader.duplicates} duplicates, {reader.skipped} resumed; "
        f"{scanner.probe_cache.probes_run} SMTP sessions)"
    )
    if stats.domains == 0 and reader.skipped == 0:
        stderr.print("[yellow]warning:[/] the input held no domains")
    if end.interrupted:
        stderr.print("[yellow]interrupted: the file holds only complete lines; use --resume to continue")
        raise typer.Exit(EXIT_INTERRUPTED)


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
                    f"{out} exists; --resume continues it, --overwrite replaces it", param_hint="--out"
                ) from None
        except OSError as exc:
            raise typer.BadParameter(f"cannot write {path}: {exc.strerror or exc}", param_hint="--out") from None
    raise typer.BadParameter("no free default output name in results/; give --out FILE", param_hint="--out")


def default_output_paths(shard: Shard | None) -> Iterator[Path]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    part = f"-shard{shard.index}of{shard.count}" if shard is not None else ""
    yield Path("results") / f"scan-{stamp}{part}.jsonl"
    for counter in range(2, 1000):
        yield Path("results") / f"scan-{stamp}{part}-{counter}.jsonl"


def tune_garbage_collector() -> None:
    """Long bulk runs allocate many short-lived objects and few cycles: collect less often."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


# ---------------------------------------------------------------- check


@app.command()
def check(
    domain: Annotated[str, typer.Argument(help="The domain to check.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON line instead.")] = False,
    resolver: ResolverOpt = None,
    ca_file: CaFileOpt = None,
    allow_private: AllowPrivateOpt = False,
    timeout: TimeoutOpt = 10.0,
    concurrency: ConcurrencyOpt = 1,
    per_ip: PerIpOpt = 4,
    ehlo_name: EhloOpt = "scanner.invalid",
    smtp_port: SmtpPortOpt = 25,
    https_port: HttpsPortOpt = 443,
    exclude: ExcludeOpt = None,
    org: OrgOpt = "scanner",
    contact: ContactOpt = "postmaster@scanner.invalid",
) -> None:
    """Human verdict for one domain: exit 0 ready, 1 not ready, 2 could not scan."""
    from scanner.render import could_not_scan, render_check

    options = network_options(
        resolver, ca_file, allow_private, timeout, concurrency, per_ip, ehlo_name,
        smtp_port, https_port, exclude, org, contact,
    )
    item = parse_input_line(domain)
    scanner = build_scanner(options)
    if item is None or isinstance(item, InvalidInput):
        from scanner.output import error_line

        reason = item.error if item is not None else "invalid-domain: empty"
        line = error_line(domain, reason, datetime.now(UTC))
    else:
        scanned = trio.run(interruptible, scanner.scan_domain, item)
        if scanned is None:
            stderr.print("[yellow]interrupted")
            raise typer.Exit(EXIT_INTERRUPTED)
        line = scanned
    console = Console()
    if json_out:
        console.print_json(json.dumps(line))
    else:
        render_check(console, line)
    if could_not_scan(line):
        raise typer.Exit(2)
    raise typer.Exit(0 if line.get("enforce_ready") else 1)


# ---------------------------------------------------------------- report and stats


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                stderr.print(f"[yellow]{path}:{number}: not a JSON line, skipped")
                continue
            if isinstance(record, dict):
                yield record


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="Results file (JSON lines).", exists=True, dir_okay=False)],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Directory for the reports.")],
    gzip_reports: Annotated[bool, typer.Option("--gzip", help="Write .json.gz (RFC 8460 §5.2).")] = False,
    submitter: Annotated[
        str | None, typer.Option("--submitter", help="Submitter domain in file names; default: from contact-info.")
    ] = None,
) -> None:
    """Write one RFC 8460 report per domain, named as RFC 8460 §5.1 recommends."""
    from scanner.core.tlsrpt import report_filename

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise typer.BadParameter(f"cannot use {out_dir}: {exc.strerror or exc}", param_hint="--out-dir") from None
    written = skipped = 0
    for line in read_lines(results):
        rpt = line.get("report")
        domain = line.get("domain")
        if not isinstance(rpt, dict) or not isinstance(domain, str) or not domain:
            skipped += 1
            continue
        contact = str(rpt.get("contact-info", ""))
        sender = submitter or contact.rpartition("@")[2] or "scanner.invalid"
        date_range = rpt.get("date-range")
        if not isinstance(date_range, dict):
            date_range = {}
        begin = _parse_time(date_range.get("start-datetime"))
        end = _parse_time(date_range.get("end-datetime"))
        name = report_filename(sender, domain, begin, end, gzip=gzip_reports, unique_id=None)
        if "/" in name or name.startswith("."):
            skipped += 1
            continue
        data = json.dumps(rpt, indent=2, ensure_ascii=False).encode("utf-8")
        target = out_dir / name
        if gzip_reports:
            target.write_bytes(gzip.compress(data))
        else:
            target.write_bytes(data)
        written += 1
    stderr.print(f"{written} reports written to {out_dir}; {skipped} lines without a report skipped")


def _parse_time(value: object) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.now(UTC)


@app.command()
def stats(
    results: Annotated[list[Path], typer.Argument(help="Results files (JSON lines).", exists=True, dir_okay=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Adoption statistics over one or more results files."""
    from scanner.render import adoption_statistics, render_statistics

    numbers = adoption_statistics(line for path in results for line in read_lines(path))
    if json_out:
        typer.echo(json.dumps(numbers, indent=2))
    else:
        render_statistics(Console(), numbers)


# ---------------------------------------------------------------- demo and lab


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output JSON lines file.")] = None,
    timeout: TimeoutOpt = 2.0,
) -> None:
    """Start the bundled lab on loopback, scan its demo world, compare with the expected verdicts."""
    from scanner.lab import demo_world_path, load_world

    world_path = demo_world_path()
    world = load_world(world_path)
    out_path = out or Path("results") / f"demo-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    console = Console()
    console.print(f"Serving the demo world ({len(world.domains)} domains) on loopback and scanning it ...")
    with out_path.open("w", encoding="utf-8") as handle:
        lines = trio.run(scan_world, world, world.domain_names, handle, timeout)
    ok = render_demo_summary(console, world, lines)
    console.print(f"Results: {out_path}  (RFC 8460 reports: scanner report {out_path} --out-dir results/reports)")
    raise typer.Exit(0 if ok else 1)


async def scan_world(
    world: Any, domains: tuple[str, ...], out: TextIO, step_timeout: float
) -> list[dict[str, Any]]:
    """Serve `world` with the lab in this process and scan `domains` against it."""
    import tempfile

    from scanner.lab import open_lab

    collected: list[dict[str, Any]] = []

    def write_line(text: str) -> None:
        out.write(text + "\n")
        out.flush()
        collected.append(json.loads(text))

    with tempfile.TemporaryDirectory(prefix="scanner-lab-") as workdir:
        async with open_lab(world, Path(workdir)) as lab:
            options = network_options(
                [f"{lab.resolver[0]}:{lab.resolver[1]}"], [lab.ca_file], True, step_timeout,
                20, 4, "scanner.invalid", lab.smtp_port, lab.https_port, None,
                "scanner demo", "postmaster@scanner.invalid",
            )
            scanner = build_scanner(options)
            reader = InputReader()

            async def items() -> Any:
                for name in domains:
                    yield name

            await scanner.run(reader.stream(items()), write_line)
    return collected


def render_demo_summary(console: Console, world: Any, lines: list[dict[str, Any]]) -> bool:
    """Print one row per domain with the scanner's verdict and whether it is the expected one."""
    from rich.table import Table

    from scanner.expectations import mismatches

    by_domain = {str(line.get("domain")): line for line in lines}
    table = Table(title="Demo world: verdicts")
    table.add_column("domain", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("indicators, or the first blocker", overflow="fold", ratio=3)
    table.add_column("as expected?", overflow="fold", ratio=1)
    all_ok = True
    for domain in world.domains:
        line = by_domain.get(domain.name)
        if line is None:
            from scanner.core.inputs import InvalidInput, parse_input_line

            item = parse_input_line(domain.name)
            key = item.text if isinstance(item, InvalidInput) else item
            line = by_domain.get(str(key))
        if line is None:
            table.add_row(domain.name, "[red]missing[/]", "", "[red]no line[/]")
            all_ok = False
            continue
        if line.get("error"):
            verdict = "[yellow]error[/]"
            detail = str(line["error"])
        else:
            verdict = "[green]ready[/]" if line.get("enforce_ready") else "[red]not ready[/]"
            detail = ", ".join(sorted({str(i.get("code")) for i in line.get("indicators") or []}))
            if not detail and not line.get("enforce_ready"):
                detail = (line.get("blockers") or [""])[0]
        problems = mismatches(line, domain.expect) if domain.expect is not None else []
        all_ok = all_ok and not problems
        table.add_row(
            domain.name,
            verdict,
            detail if len(detail) <= 90 else detail[:89] + "…",
            "[green]yes[/]" if not problems else "[red]" + "; ".join(problems) + "[/]",
        )
    console.print(table)
    expected = sum(1 for d in world.domains if d.expect is not None)
    console.print(
        "[bold green]Every verdict is the expected one.[/]" if all_ok
        else f"[bold red]Some verdicts differ from the {expected} expected ones.[/]"
    )
    return all_ok


@lab_app.command("serve")
def lab_serve(
    world: Annotated[Path | None, typer.Argument(help="World description (TOML); default: the demo world.")] = None,
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the lab CA file is written.")] = Path("results/lab"),
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

    try:
        trio.run(lambda: serve_forever(world_path, workdir, on_ready=on_ready))
    except KeyboardInterrupt:
        typer.echo("stopped")
        raise typer.Exit(EXIT_INTERRUPTED) from None
