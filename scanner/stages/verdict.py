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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scanner.core.assess import assess_domain
from scanner.core.inputs import Shard
from scanner.core.result import DomainResult
from scanner.evidence import ReceivedSettings, with_received
from scanner.models import DomainFacts, ProbeOutcome, ReportOptions
from scanner.output import written_line
from scanner.scan import ScanStats, utc_now
from scanner.stages.codec import encode
from scanner.stages.records import (
    LEFT_TO_PROBE,
    Discovered,
    Header,
    Probed,
    StageRefusal,
    StageWriter,
    complete_set,
    is_left_to_probe,
    raw_records,
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


def _expected_facts(shard: Shard) -> Callable[[Header], str | None]:
    def expected(header: Header) -> str | None:
        if header.stage != "discover-facts" or (header.shard, header.count) != (
            shard.index,
            shard.count,
        ):
            return f"its header says {header.stage} {header.shard}/{header.count}"
        return None

    return expected


def discovered(path: Path, shard: Shard) -> Iterator[Discovered]:
    return read_records(path, Discovered, _expected_facts(shard))


def wanted_keys(path: Path, shard: Shard) -> set[Key]:
    """The targets this shard's facts left to the probe stage, read from the JSON alone:
    the facts are decoded once, when they are joined."""
    left = encode(LEFT_TO_PROBE)
    wanted: set[Key] = set()
    for number, data in raw_records(path, _expected_facts(shard)):
        facts, port = data.get("facts"), data.get("port")
        hosts = facts.get("hosts") if isinstance(facts, dict) else None
        for host in hosts if isinstance(hosts, list) else ():
            probes = host.get("probes") if isinstance(host, dict) else None
            for probe in probes if isinstance(probes, list) else ():
                if not isinstance(probe, dict) or probe.get("interruption") != left:
                    continue
                hostname, ip = probe.get("hostname"), probe.get("ip")
                if not (isinstance(hostname, str) and isinstance(ip, str) and type(port) is int):
                    raise StageRefusal(f"{path} line {number} is damaged: a target without names")
                wanted.add((hostname, ip, port))
    return wanted


def probe_outcomes(in_dir: Path, wanted: set[Key]) -> tuple[int, dict[Key, ProbeOutcome]]:
    """The probe shard count and the outcomes of `wanted`; `StageRefusal` unless all are there."""
    count, paths = complete_set(in_dir, "probe", "", "probe outcomes")
    outcomes: dict[Key, ProbeOutcome] = {}
    for index, path in enumerate(paths):

        def expected(header: Header, index: int = index) -> str | None:
            if header.stage != "probe" or (header.shard, header.count) != (index, count):
                return f"its header says {header.stage} {header.shard}/{header.count}"
            return None

        def mine(data: dict[str, object]) -> bool:
            key = (data.get("hostname"), data.get("ip"), data.get("port"))
            return all(isinstance(part, str | int) for part in key) and key in wanted

        for probed in read_records(path, Probed, expected, mine):
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
    wanted = wanted_keys(path, shard)
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
