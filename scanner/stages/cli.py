"""`scanner stage discover|probe|verdict`: a staged scan's three commands.

Built when a command line names them (`scanner.cli.COMMANDS_ON_DEMAND`). Each takes
the scan's network options, so one set of options is given to all three
(`deploy/local-stages.sh`); `--shard K/N` (or `auto/N` on a Kubernetes Indexed Job or
a Slurm array) picks the shard.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import trio
import typer

from scanner.core.egress import Egress
from scanner.core.inputs import InputFormat, Shard
from scanner.files import Compression
from scanner.options import NetworkOptions, build_scanner, with_network_options
from scanner.render import output_console
from scanner.signals import cancel_on_signals
from scanner.stages.records import StageRefusal
from scanner.untrusted import terminal

_T = TypeVar("_T")

EXIT_REFUSED = 1
EXIT_INTERRUPTED = 130
EXIT_PORT25_BLOCKED = 3

stage_app = typer.Typer(
    help="A scan in three stages over a shared directory: discover (domain shards), "
    "probe (address shards), verdict (domain shards).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add `stage` to `app`."""
    app.add_typer(stage_app, name="stage")


ShardOption = Annotated[
    str,
    typer.Option(
        "--shard",
        help="K/N: the K-th of N shards (0 <= K < N); auto/N: from a Kubernetes Indexed Job "
        "or a Slurm array.",
    ),
]
CompressionOption = Annotated[
    Compression,
    typer.Option("--compression", help="How the stage files are compressed: gzip, zstd or none."),
]
ConcurrencyOption = Annotated[
    int,
    typer.Option(
        "--concurrency", min=1, max=10_000, help="Domains (discover) or probes (probe) in flight."
    ),
]


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text, os.environ)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from None


def _say(words: str, style: str | None = None) -> None:
    output_console(stderr=True).print(terminal(words, None, style))


def _run_stage(run: Callable[[], Awaitable[_T]]) -> _T:
    """`run()` under `trio.run`: a refusal is said and exits EXIT_REFUSED, an interrupt
    EXIT_INTERRUPTED."""
    try:
        return trio.run(_cancellable, run)
    except StageRefusal as exc:
        _say(f"error: {exc}", "red")
        raise typer.Exit(EXIT_REFUSED) from None


async def _cancellable(run: Callable[[], Awaitable[_T]]) -> _T:
    """`run()` stopped cleanly by SIGINT or SIGTERM (the stage's files are then not written)."""
    result: list[_T] = []
    refusal: list[StageRefusal] = []
    async with trio.open_nursery() as nursery:

        async def go() -> None:
            try:
                result.append(await run())
            except StageRefusal as exc:
                refusal.append(exc)
            nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_on_signals, nursery.cancel_scope)
        nursery.start_soon(go)
    if refusal:
        raise refusal[0]
    if not result:
        raise typer.Exit(EXIT_INTERRUPTED)
    return result[0]


@stage_app.command("discover")
@with_network_options
def discover_command(
    shard: ShardOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="The shared directory.")],
    input_file: Annotated[
        str, typer.Option("--input", "-i", help="File of domains, one per line; '-' for stdin.")
    ] = "-",
    input_format: Annotated[
        InputFormat,
        typer.Option("--input-format", help="lines, csv (rank,domain as Tranco), or auto: detect."),
    ] = InputFormat.AUTO,
    compression: CompressionOption = Compression.GZIP,
    concurrency: ConcurrencyOption = 100,
    *,
    network: NetworkOptions,
) -> None:
    """Records, policies, MX hosts, addresses and TLSA of this shard's domains; their probe targets."""
    from scanner.stages.discover import DiscoverEnd, discover, input_lines

    part = _shard(shard)
    path = None if input_file == "-" else Path(input_file)
    if path is not None and not path.is_file():
        raise typer.BadParameter(f"no such file: {input_file}", param_hint="--input")
    scanner = build_scanner(network)

    async def run() -> DiscoverEnd:
        return await discover(
            scanner,
            input_lines(path),
            part,
            out,
            input_format=input_format,
            compression=compression,
        )

    end = _run_stage(run)
    stats = end.stats
    _say(
        f"discover {part.index}/{part.count}: {stats.domains} domains ({stats.errors} errors), "
        f"{end.targets} probe targets, in {out}"
    )


@stage_app.command("probe")
@with_network_options
def probe_command(
    shard: ShardOption,
    in_dir: Annotated[Path, typer.Option("--in", help="The shared directory discover wrote.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write; default: the --in directory."),
    ] = None,
    compression: CompressionOption = Compression.GZIP,
    concurrency: ConcurrencyOption = 100,
    *,
    network: NetworkOptions,
) -> None:
    """Probe every target whose address hashes to this shard, each (MX host, address, port) once."""
    from scanner.core.egress import blocked_words
    from scanner.stages.probe import ProbeEnd, probe_shard

    part = _shard(shard)
    scanner = build_scanner(network)

    async def run() -> ProbeEnd:
        return await probe_shard(scanner, in_dir, part, out or in_dir, compression=compression)

    end = _run_stage(run)
    if end.egress.egress is Egress.BLOCKED:
        for words in blocked_words(end.egress):
            _say(words, "red")
        _say(f"probe {part.index}/{part.count} wrote no outcomes: the verdict stage refuses", "red")
        raise typer.Exit(EXIT_PORT25_BLOCKED)
    _say(
        f"probe {part.index}/{part.count}: {end.targets} targets, "
        f"{end.probes_run} SMTP probes, {end.busy_signals} busy replies, "
        f"in {end.path}"
    )


@stage_app.command("verdict")
@with_network_options
def verdict_command(
    shard: ShardOption,
    in_dir: Annotated[Path, typer.Option("--in", help="The shared directory of both stages.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="This shard's results file (.jsonl, .jsonl.gz, .jsonl.zst), or a directory "
            "that gets results-K-of-N.jsonl.",
        ),
    ],
    concurrency: ConcurrencyOption = 100,
    *,
    network: NetworkOptions,
) -> None:
    """Join this shard's facts with every probe shard's outcomes: the lines a scan writes."""
    from scanner.stages.verdict import VerdictEnd, verdict_shard

    part = _shard(shard)
    if out.is_dir():
        out = out / f"results-{part.index}-of-{part.count}.jsonl"

    async def run() -> VerdictEnd:
        return await verdict_shard(
            in_dir, part, out, report=network.report, received=network.received
        )

    end = _run_stage(run)
    stats = end.stats
    _say(
        f"verdict {part.index}/{part.count}: {stats.domains} domains written to {out} "
        f"({stats.ready} enforce-ready, {stats.with_indicators} with downgrade indicators, "
        f"{stats.errors} errors; outcomes of {end.probe_shards} probe shards)"
    )
