"""The run driver of `scanner scan`: from the checked options to the file and the summary.

`run_bulk_scan` opens nothing the command line did not check: it raises the open-files
limit, runs the input through one process (`in_process`) or worker processes
(`in_workers`) under `trio.run`, writes every line as it comes (`run_scan`), records the
scan's metadata beside the file, and prints the summary. `open_output` chooses and opens
the results file. `scan_one` is the one-domain run of `check` and `policy suggest`.
Both stop cleanly on SIGINT and SIGTERM: the file holds only complete lines.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeAlias

import trio
import typer
from rich.text import Text

from scanner.core.egress import (
    ControlEvidence,
    Decision,
    Egress,
    RateComparison,
    blocked_words,
    throttled_words,
)
from scanner.core.inputs import InputFormat, InvalidInput, RankedInput, Shard
from scanner.core.result import DomainResult
from scanner.files import InputReader, count_lines, iterate_lines, open_results
from scanner.net.activity import LISTENER
from scanner.net.canaries import gather_evidence
from scanner.net.connect import has_route
from scanner.net.resolver import Resolver
from scanner.options import NetworkOptions, scan_settings
from scanner.port25 import Port25Watch
from scanner.render import output_console
from scanner.scan import Scanner, ScanStats
from scanner.signals import cancel_on_signals
from scanner.untrusted import terminal

if TYPE_CHECKING:
    from rich.console import Console

    from scanner.progress import ProgressView
    from scanner.workers import Finished, Load

    Port25Builder: TypeAlias = Callable[
        [Callable[[Finished], None], Callable[[Decision], None]], Port25Watch[Finished]
    ]

EXIT_INTERRUPTED = 130
# Seconds between status lines when stderr is no terminal (`--status-interval`).
DEFAULT_STATUS_INTERVAL = 30.0
# An address whose route says whether the host has a global IPv6 route at all: one of
# the documentation prefix (RFC 3849), so no real host is named; only the routing table
# is asked (`connect.has_route`): nothing is sent.
IPV6_ROUTE_PROBE = "2001:db8::1"
EXIT_PORT25_BLOCKED = 3  # the network of the scan blocks outbound port 25: nothing written


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """What the command line decided: the input, the file, the shard, the processes."""

    domains: list[str]
    files: list[Path | None]
    out_path: Path
    skip: set[str]
    shard: Shard | None
    input_format: InputFormat
    vantage: str | None
    resume: bool
    processes: int
    progress: bool
    status_interval: float = DEFAULT_STATUS_INTERVAL


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
    egress: Decision = field(default_factory=lambda: Decision(Egress.PENDING))


RunItems: TypeAlias = Callable[
    [AsyncIterator[str | InvalidInput | RankedInput], Callable[[str], None], ScanEnd],
    Awaitable[None],
]


def in_process(scanner: Scanner, progress: ProgressView | None) -> RunItems:
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
            end.egress = scanner.egress

    return run


def parent_port25(network: NetworkOptions) -> Port25Builder | None:
    """The watch on port 25 of the parent of worker processes, or None when the check is off.

    The canaries are asked through a resolver of the parent's own, made when they are.
    """
    egress = network.egress
    if not egress.enabled:
        return None

    async def consult() -> ControlEvidence:
        resolver = Resolver.create(network.resolvers or None, timeout=network.timeout)
        return await gather_evidence(resolver, egress.canaries, egress.controls, network.timeout)

    def build(
        release: Callable[[Finished], None], blocked: Callable[[Decision], None]
    ) -> Port25Watch[Finished]:
        return Port25Watch(egress.thresholds, consult, release, blocked)

    return build


def in_workers(network: NetworkOptions, workers: int, progress: ProgressView | None) -> RunItems:
    """Scan in `workers` processes behind one gate and one writer here."""
    from scanner.workers import ParallelRun, can_fork_workers, fork_workers, run_parallel

    gate = Scanner.local_gate(scan_settings(network))
    start = fork_workers(workers) if can_fork_workers() else None  # before the trio loop

    async def run(
        items: AsyncIterator[str | InvalidInput | RankedInput],
        write_line: Callable[[str], None],
        end: ScanEnd,
    ) -> None:
        totals = ParallelRun(load=end.load)
        end.stats = totals.stats
        try:
            await run_parallel(
                network,
                workers,
                items,
                write_line,
                gate=gate,
                progress=progress,
                totals=totals,
                port25=parent_port25(network),
                start=start,
            )
        finally:
            end.probes_run = totals.probes_run
            end.busy_signals = gate.busy_signals
            end.lost = totals.lost
            end.stopped = totals.stopped
            end.egress = totals.egress

    return run


async def run_scan(
    run_items: RunItems,
    items: AsyncIterator[str | InvalidInput | RankedInput],
    out: TextIO,
    view: ProgressView | None = None,
) -> ScanEnd:
    """Run the scan until the input ends, SIGINT/SIGTERM arrives or the output fails.

    A failed write (disk full, ...) stops the scan at once: nothing is lost that was
    not already unwritable, and `--resume` repairs a torn last line. `view` is told the
    time about once a second (its status lines), whether or not a domain finished.
    """
    end = ScanEnd()

    async with trio.open_nursery() as nursery:
        if view is not None:
            nursery.start_soon(_ticks, view)

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


def scan_talking(scanner: Scanner, domain: str, *, quiet: bool = False) -> DomainResult | None:
    """`scan_one` for a person waiting: on a terminal (and unless `quiet`), one status line
    on stderr says what the scan does now; on a pipe, nothing."""
    stderr = output_console(stderr=True)
    if quiet or not stderr.is_terminal:
        return trio.run(scan_one, scanner, domain)
    with stderr.status(f"checking {domain}", spinner="dots") as status:
        token = LISTENER.set(lambda words: status.update(Text(words)))
        try:
            return trio.run(scan_one, scanner, domain)
        finally:
            LISTENER.reset(token)


async def scan_one(scanner: Scanner, domain: str) -> DomainResult | None:
    """`scanner.scan_domain(domain)`, or None when SIGINT/SIGTERM arrives first.

    `scanner.egress` then says whether port 25 is blocked from here (`scanner.port25`:
    the canaries are asked when every connect to an MX failed).
    """
    result: DomainResult | None = None
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            nonlocal result
            scanned = await scanner.scan_domain(domain)
            watch: Port25Watch[DomainResult] = scanner.port25_watch(lambda _: None, lambda _: None)
            await watch.add(scanned, scanner.connects_of(scanned))
            scanner.egress = await watch.finish()
            result = scanned
            nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_on_signals, nursery.cancel_scope)
        nursery.start_soon(run)
    return result


def input_files(domains: list[str] | None, input_file: str | None) -> list[Path | None]:
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


def processes_for(workers: int | None, files: list[Path | None]) -> int:
    """Every usable CPU for a list (file or stdin); one process for a few domains given as arguments.

    Worker processes cost a start each (imports, trust store) and a round trip to the
    parent's gate per connection slot: worth it for a list, not for a handful of names
    (docs/architecture.md#worker-processes).
    """
    from scanner.workers import usable_cpus

    if workers is None:
        return usable_cpus() if files else 1
    return usable_cpus() if workers == 0 else workers


async def _ticks(view: ProgressView) -> None:
    while True:
        await trio.sleep(1)
        view.tick()


def estimated_total(plan: ScanPlan) -> int | None:
    """The domains the run will scan, counted on the input's bytes before it is read:
    the lines (a header or blank line counts too), a shard's share of them, less what
    `--resume` skips; None for standard input."""
    lines = count_lines(plan.files) if plan.files else 0
    if lines is None:
        return None
    total = lines + len(plan.domains)
    if plan.shard is not None:
        total = -(-total // plan.shard.count)
    return max(total - len(plan.skip), 0)


def progress_view(plan: ScanPlan, stderr: Console, scanner: Scanner | None) -> ProgressView | None:
    """A progress line on a terminal, status lines in a batch log, or nothing (--no-progress)."""
    if not plan.progress:
        return None
    total = estimated_total(plan)
    if stderr.is_terminal:
        from scanner.progress import Progress

        return Progress(stderr, total)
    from scanner.progress import StatusLines

    def dns_timeouts() -> int:
        assert scanner is not None
        return int(scanner.resolver.load.timeouts)

    return StatusLines(
        sys.stderr, plan.status_interval, total, dns_timeouts if scanner is not None else None
    )


async def _counted(
    items: AsyncIterator[str | InvalidInput | RankedInput],
    reader: InputReader,
    view: ProgressView | None,
) -> AsyncIterator[str | InvalidInput | RankedInput]:
    """`items`, and once they are all read, the exact total for the progress view."""
    async for item in items:
        yield item
    if view is not None:
        view.set_total(reader.accepted, exact=True)


def run_bulk_scan(scanner: Scanner, network: NetworkOptions, plan: ScanPlan, handle: TextIO) -> int:
    """Scan the plan's input into `handle` (`plan.out_path`); the exit status (0, 1, 3, 130)."""
    from scanner.research.metadata import VantageSight, recorded_scan

    ended: list[ScanEnd] = []

    def sight() -> VantageSight:
        """What this host could see, for the sidecar: known better once the scan ended."""
        return VantageSight(
            port25=port25_word(ended[0].egress) if ended else None,
            port25_rates=rates_json(ended[0].egress.rates) if ended else None,
            ipv6_route=has_route(IPV6_ROUTE_PROBE),
            validating_resolver=scanner.resolver.validating,
        )

    stderr = output_console(stderr=True)
    note = raise_descriptor_limit(network.concurrency)
    if note is not None:
        stderr.print(terminal(note, None, "yellow"))
    tune_garbage_collector()
    out_path, files, processes = plan.out_path, plan.files, plan.processes
    reader = InputReader(skip=plan.skip, shard=plan.shard, input_format=plan.input_format)
    with (
        handle,
        recorded_scan(
            out_path,
            network,
            vantage=plan.vantage,
            inputs=files,
            input_format=plan.input_format,
            shard=plan.shard,
            resume=plan.resume,
            sight=sight,
        ),
    ):
        progress = progress_view(plan, stderr, scanner if processes == 1 else None)
        run_items = (
            in_workers(network, processes, progress)
            if processes > 1
            else in_process(scanner, progress)
        )
        with progress if progress is not None else contextlib.nullcontext():
            items = _counted(reader.stream(iterate_lines(plan.domains, files)), reader, progress)
            end = trio.run(run_scan, run_items, items, handle, progress)
            ended.append(end)
        with contextlib.suppress(OSError):  # a full disk refuses the final flush too
            handle.close()
    return summarize(end, reader, out_path, processes)


def counted(count: int, one: str, many: str | None = None) -> str:
    """`1 error`, `2 errors`: a count with its noun in the right number."""
    return f"{count} {one if count == 1 else many or one + 's'}"


def port25_word(decision: Decision) -> str | None:
    """`blocked`; `throttled` when the domains' and the canaries' connects both failed in
    part; `open` when a port-25 handshake completed; else None (nothing shows it)."""
    if decision.egress is Egress.BLOCKED:
        return "blocked"
    rates = decision.rates
    if rates is not None and rates.throttled:
        return "throttled"
    if rates is not None and (rates.domains.connected or rates.canaries.connected):
        return "open"
    evidence = decision.evidence
    if decision.tally.connected or (evidence is not None and evidence.canary_connected):
        return "open"
    return None


def rates_json(rates: RateComparison | None) -> dict[str, object] | None:
    """The sidecar's `port25_rates`: the domains' and canaries' port-25 connects."""
    if rates is None:
        return None
    return {
        "domains": {"connected": rates.domains.connected, "attempts": rates.domains.attempts},
        "canaries": {"connected": rates.canaries.connected, "attempts": rates.canaries.attempts},
        "throttled": rates.throttled,
    }


def summarize(end: ScanEnd, reader: InputReader, out_path: Path, processes: int) -> int:
    """The run's summary on stderr; the exit status."""
    stderr = output_console(stderr=True)
    if end.write_error is not None:
        error = end.write_error
        stderr.print(
            terminal(
                f"error: writing {out_path} failed: {error.strerror or error}; scan stopped",
                None,
                "red",
            )
        )
        return 1
    if end.egress.egress is Egress.BLOCKED:
        for words in blocked_words(end.egress):
            stderr.print(terminal(words, None, "red"))
        stderr.print(terminal(f"No line was written to {out_path}.", None, "red"))
        return EXIT_PORT25_BLOCKED
    stats = end.stats
    stderr.print(
        terminal(
            f"{counted(stats.domains, 'domain')} written to {out_path} "
            f"({stats.ready} enforce-ready, {stats.with_indicators} with downgrade indicators, "
            f"{counted(stats.errors, 'error')}; {counted(reader.duplicates, 'duplicate')}, "
            f"{reader.skipped} resumed; {counted(end.probes_run, 'SMTP session')}, "
            f"{counted(end.busy_signals, 'busy reply', 'busy replies')}; "
            f"{counted(processes, 'process', 'processes')})",
            None,
        )
    )
    if end.egress.rates is not None and end.egress.rates.throttled:
        stderr.print(terminal(throttled_words(end.egress.rates), None, "yellow"))
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
        return EXIT_INTERRUPTED
    if end.lost or end.stopped:
        return 1  # the scan did not complete; the lines written stand
    return 0


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
        except FileExistsError:  # a file where the folder should be
            raise typer.BadParameter(
                f"cannot write {path}: {path.parent} is not a directory", param_hint="--out"
            ) from None
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot write {path}: {exc.strerror or exc}", param_hint="--out"
            ) from None
        try:
            handle = open_results(path, mode)
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
