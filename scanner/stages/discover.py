"""The discover stage: a domain shard's records, policies, MX hosts, addresses and TLSA.

`Discoverer` is the one-process `Scanner` with one step left out: where a scan would
probe an admitted (MX host, address) (`Scanner.probe_admitted`), it puts the target
aside and records `LEFT_TO_PROBE` in the domain's facts. Everything else is the scan's
own code: the gate (exclusions, the address guard, `--allow-private`, IPv6 routes), the
caps, the policy fetch and the TLSA lookups. The policy hosts are contacted here,
through this shard's gate: `--per-ip` bounds the HTTPS connections to one address per
discover shard, and the SMTP ones across the whole fleet (the probe stage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from scanner.core.inputs import InputFormat, InvalidInput, RankedInput, Shard
from scanner.core.result import DomainResult, ErrorKind, ScanError
from scanner.files import Compression, InputReader, iterate_lines
from scanner.models import HostDane, ProbeOutcome
from scanner.net.gate import DomainGate, Gate
from scanner.output import MAX_ERROR_TEXT, dumps_line
from scanner.scan import Scanner, ScanStats
from scanner.stages.codec import encode
from scanner.stages.records import (
    Discovered,
    Header,
    StageWriter,
    Target,
    facts_name,
    left_to_probe,
    targets_name,
)


class Discoverer(Scanner):
    """A `Scanner` that leaves each admitted probe to the probe stage and lists its target."""

    def __init__(self, scanner: Scanner) -> None:
        settings = dataclasses.replace(
            scanner.settings,
            received=None,  # joined by the verdict stage, over the whole facts
            egress=dataclasses.replace(scanner.settings.egress, enabled=False),  # no port 25
        )
        # --max-probes-per-address counts names per address across the fleet: the
        # address's probe shard decides it.
        gate = Gate(
            allow_private=settings.allow_private,
            exclusions=settings.exclusions,
            per_ip=settings.per_ip,
        )
        super().__init__(
            resolver=scanner.resolver,
            tls=scanner.tls,
            settings=settings,
            clock=scanner.clock,
            gate=gate,
        )
        self.targets: dict[tuple[str, str], HostDane | None] = {}

    async def probe_admitted(
        self, hostname: str, ip: str, gate: DomainGate, dane: HostDane | None
    ) -> ProbeOutcome:
        self.targets.setdefault((hostname, ip), dane)
        return left_to_probe(hostname, ip)


def discovered_line(result: DomainResult, port: int) -> tuple[str, DomainResult]:
    """The facts line of one domain (its verdict is the verdict stage's)."""
    record = Discovered(
        domain=result.domain,
        scanned_at=result.scanned_at,
        finished_at=result.finished_at,
        port=port,
        facts=result.facts,
        error=result.error,
        rank=result.rank,
    )
    try:
        return dumps_line(encode(record)), result
    except Exception as exc:  # a bug: this domain's line only
        words = f"its facts could not be written: {type(exc).__name__}: {exc}"
        error = ScanError(ErrorKind.INTERNAL_ERROR, words[:MAX_ERROR_TEXT])
        failed = DomainResult.failed(result.domain, error, result.scanned_at)
        bare = dataclasses.replace(record, facts=None, error=error)
        return dumps_line(encode(bare)), failed


@dataclass(slots=True)
class DiscoverEnd:
    stats: ScanStats
    targets: int
    facts: Path
    target_file: Path


async def discover(
    scanner: Scanner,
    lines: AsyncIterator[str],
    shard: Shard,
    out_dir: Path,
    *,
    input_format: InputFormat = InputFormat.AUTO,
    compression: Compression = Compression.GZIP,
) -> DiscoverEnd:
    """Discover this shard's domains of `lines` into `out_dir` (facts and targets files)."""
    discoverer = Discoverer(scanner)
    reader = InputReader(shard=shard, input_format=input_format)
    facts = StageWriter(
        out_dir / facts_name(shard, compression), Header("discover-facts", *_of(shard))
    )
    targets = StageWriter(
        out_dir / targets_name(shard, compression), Header("discover-targets", *_of(shard))
    )
    try:
        items: AsyncIterator[str | InvalidInput | RankedInput] = reader.stream(lines)
        port = discoverer.settings.probe.smtp_port
        stats = await discoverer.run(
            items, facts.write_line, line_of=lambda result: discovered_line(result, port)
        )
        for (hostname, ip), dane in discoverer.targets.items():
            targets.write(Target(hostname, ip, port, dane))
    except BaseException:
        facts.discard()
        targets.discard()
        raise
    targets.commit()
    facts.commit()  # last: the facts file says the shard is complete
    return DiscoverEnd(stats, targets.records, facts.path, targets.path)


def _of(shard: Shard) -> tuple[int, int]:
    return shard.index, shard.count


def input_lines(path: Path | None) -> AsyncIterator[str]:
    """The lines of the input list (None: standard input)."""
    return iterate_lines([], [path])
