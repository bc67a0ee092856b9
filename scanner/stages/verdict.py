"""The verdict stage: a domain shard's facts joined with the probe outcomes, as results lines.

It reads this shard's discover facts once for the targets they left to the probe stage,
then every probe shard's outcomes, keeping only those targets, then the facts again:
each `LEFT_TO_PROBE` is replaced by its outcome, `assess_domain` judges the facts, and
`output.written_line` writes the line a one-machine scan writes. Memory holds this
shard's outcomes, not the fleet's. Every probe shard must have finished: a missing or
failed one, or a target no probe shard answered, makes the stage refuse (`StageRefusal`)
and write nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scanner.core.assess import assess_domain
from scanner.core.inputs import Shard
from scanner.core.result import DomainResult
from scanner.evidence import ReceivedSettings, with_received
from scanner.models import DomainFacts, ProbeOutcome, ReportOptions
from scanner.output import written_line
from scanner.scan import ScanStats, utc_now
from scanner.stages.records import (
    Discovered,
    Header,
    Probed,
    StageRefusal,
    StageWriter,
    complete_set,
    is_left_to_probe,
    read_records,
    shard_files,
)

Key = tuple[str, str, int]


@dataclass(slots=True)
class VerdictEnd:
    stats: ScanStats
    probe_shards: int
    outcomes: int  # probe outcomes joined in
    path: Path


def facts_path(in_dir: Path, shard: Shard) -> Path:
    """This shard's complete discover facts file; `StageRefusal` when there is none."""
    found = shard_files(in_dir, "discover", ".facts").get(shard.count, {}).get(shard.index)
    if found is None:
        raise StageRefusal(
            f"{in_dir} has no complete discover facts of shard {shard.index}/{shard.count}: "
            "run discover with the same --shard first (a shard that failed or still runs "
            "leaves none)"
        )
    return found


def discovered(path: Path, shard: Shard) -> Iterator[Discovered]:
    def expected(header: Header) -> str | None:
        if header.stage != "discover-facts" or (header.shard, header.count) != (
            shard.index,
            shard.count,
        ):
            return f"its header says {header.stage} {header.shard}/{header.count}"
        return None

    return read_records(path, Discovered, expected)


def keys_left(record: Discovered) -> Iterator[Key]:
    """The targets a domain's facts left to the probe stage."""
    if record.facts is None:
        return
    for host in record.facts.hosts:
        for probe in host.probes:
            if is_left_to_probe(probe):
                yield (probe.hostname, probe.ip, record.port)


def probe_outcomes(in_dir: Path, wanted: set[Key]) -> tuple[int, dict[Key, ProbeOutcome]]:
    """The probe shard count and the outcomes of `wanted`; `StageRefusal` unless all are there."""
    count, paths = complete_set(in_dir, "probe", "", "probe outcomes")
    outcomes: dict[Key, ProbeOutcome] = {}
    for index, path in enumerate(paths):

        def expected(header: Header, index: int = index) -> str | None:
            if header.stage != "probe" or (header.shard, header.count) != (index, count):
                return f"its header says {header.stage} {header.shard}/{header.count}"
            return None

        for probed in read_records(path, Probed, expected):
            if probed.key in wanted:
                outcomes[probed.key] = probed.outcome
    missing = wanted - outcomes.keys()
    if missing:
        host, ip, port = sorted(missing)[0]
        raise StageRefusal(
            f"the probe outcomes in {in_dir} lack {len(missing)} of this shard's "
            f"{len(wanted)} targets (such as {host} {ip} port {port}): were the probe "
            "shards run after every discover shard had finished, on this directory?"
        )
    return count, outcomes


def joined(record: Discovered, outcomes: dict[Key, ProbeOutcome]) -> DomainResult:
    """The domain's result: its facts with the probe stage's outcomes, judged."""
    facts = record.facts
    if facts is None:
        return DomainResult(
            domain=record.domain,
            scanned_at=record.scanned_at,
            finished_at=record.finished_at,
            error=record.error,
            rank=record.rank,
        )
    hosts = tuple(
        dataclasses.replace(
            host,
            probes=tuple(
                outcomes[(probe.hostname, probe.ip, record.port)]
                if is_left_to_probe(probe)
                else probe
                for probe in host.probes
            ),
        )
        for host in facts.hosts
    )
    whole: DomainFacts = dataclasses.replace(facts, hosts=hosts)
    return DomainResult(
        domain=record.domain,
        scanned_at=record.scanned_at,
        finished_at=record.finished_at,
        facts=whole,
        verdict=assess_domain(whole),
        rank=record.rank,
    )


async def verdict_shard(
    in_dir: Path,
    shard: Shard,
    out: Path,
    *,
    report: ReportOptions,
    received: ReceivedSettings | None = None,
) -> VerdictEnd:
    """Write this shard's results lines to `out` (replaced when it exists, once complete)."""
    path = facts_path(in_dir, shard)
    wanted = {key for record in discovered(path, shard) for key in keys_left(record)}
    count, outcomes = probe_outcomes(in_dir, wanted)
    stats = ScanStats()
    writer = StageWriter(out, header=None)
    try:
        for record in discovered(path, shard):
            result = joined(record, outcomes)
            if received is not None and result.facts is not None:
                result = await with_received(received, result, utc_now())
            line, written = written_line(result, report)
            writer.write_line(line)
            stats.domains += 1
            stats.errors += written.error is not None
            stats.ready += written.enforce_ready
            stats.with_indicators += written.has_indicators
    except BaseException:
        writer.discard()
        raise
    writer.commit()
    return VerdictEnd(stats, count, len(outcomes), out)
