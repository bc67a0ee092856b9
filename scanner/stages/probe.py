"""The probe stage: every target whose address hashes to this shard, probed once.

The shard reads the targets of every discover shard, keeps those whose address is its
own (`address_shard`), and probes each (MX host, address, port) once through the
scan's own `Scanner.probe_address`: the gate (`--per-ip` with its adaptive limit,
`--max-probes-per-address`, the address guard), busy retries with their pauses, and
the DANE match while the chain's DER is at hand. Since each address belongs to exactly
one probe shard, `--per-ip` and one session per (MX host, address) hold across the
whole fleet. The port-25 check runs here as in a scan (`scanner.port25`): a shard whose
network blocks port 25 writes no outcomes, only `probe-K-of-N.failed` with the reason,
and the verdict stage refuses to go on without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import trio

from scanner.core.egress import Decision, Egress, blocked_words, tally
from scanner.core.inputs import Shard
from scanner.files import Compression
from scanner.scan import Scanner
from scanner.stages.records import (
    Header,
    Probed,
    StageRefusal,
    StageWriter,
    Target,
    address_shard,
    complete_set,
    failed_name,
    probe_name,
    read_records,
)


@dataclass(slots=True)
class ProbeEnd:
    targets: int = 0  # this shard's distinct targets
    probes_run: int = 0  # SMTP probes made (a busy address's retries are one)
    busy_signals: int = 0
    egress: Decision = field(default_factory=lambda: Decision(Egress.PENDING))
    path: Path | None = None  # None when the shard failed


def shard_targets(in_dir: Path, shard: Shard) -> tuple[int, list[Target]]:
    """The discover shard count, and this probe shard's distinct targets, in the order read."""
    count, paths = complete_set(in_dir, "discover", ".targets", "discover targets")
    mine: dict[tuple[str, str, int], Target] = {}
    for index, path in enumerate(paths):

        def expected(header: Header, index: int = index) -> str | None:
            if header.stage != "discover-targets" or (header.shard, header.count) != (index, count):
                return f"its header says {header.stage} {header.shard}/{header.count}"
            return None

        def ours(data: dict[str, object]) -> bool:
            ip = data.get("ip")
            return isinstance(ip, str) and address_shard(ip, shard.count) == shard.index

        for target in read_records(path, Target, expected, ours):
            mine.setdefault(target.key, target)
    return count, list(mine.values())


async def probe_shard(
    scanner: Scanner,
    in_dir: Path,
    shard: Shard,
    out_dir: Path,
    *,
    compression: Compression = Compression.GZIP,
) -> ProbeEnd:
    """Probe this shard's targets into `out_dir`; `StageRefusal` when the inputs are not whole."""
    sources, targets = shard_targets(in_dir, shard)
    port = scanner.settings.probe.smtp_port
    for target in targets:
        if target.port != port:
            raise StageRefusal(
                f"the targets were discovered for port {target.port}, and this probe stage "
                f"uses --smtp-port {port}: give every stage the same scan options"
            )
    end = ProbeEnd(targets=len(targets))
    failed = out_dir / failed_name(shard)
    writer = StageWriter(
        out_dir / probe_name(shard, compression),
        Header("probe", shard.index, shard.count, sources=sources),
    )
    loopback = scanner.settings.egress.thresholds.loopback
    concurrency = max(1, scanner.settings.concurrency)
    work_send, work_receive = trio.open_memory_channel[Target](0)
    done_send, done_receive = trio.open_memory_channel[Probed](concurrency)

    async def producer() -> None:
        async with work_send:
            for target in targets:
                await work_send.send(target)

    async def worker(
        receive: trio.MemoryReceiveChannel[Target], send: trio.MemorySendChannel[Probed]
    ) -> None:
        async with receive, send:
            async for target in receive:
                outcome = await scanner.probe_address(target.hostname, target.ip, dane=target.dane)
                await send.send(Probed(target.hostname, target.ip, target.port, outcome))

    try:
        async with trio.open_nursery() as nursery:

            def blocked(_: Decision) -> None:
                nursery.cancel_scope.cancel()

            watch = scanner.port25_watch(writer.write, blocked)
            nursery.start_soon(producer)
            async with work_receive, done_send:
                for _ in range(concurrency):
                    nursery.start_soon(worker, work_receive.clone(), done_send.clone())
            async with done_receive:
                async for probed in done_receive:
                    await watch.add(probed, tally([probed.outcome], loopback=loopback))
            await watch.finish()
    except BaseException:
        writer.discard()
        raise
    end.egress = watch.decision
    end.probes_run = scanner.probe_cache.probes_run
    end.busy_signals = scanner.gate.busy_signals
    if end.egress.egress is Egress.BLOCKED:
        writer.discard()
        failed.write_text(" ".join(blocked_words(end.egress)) + "\n", encoding="utf-8")
        return end
    writer.commit()
    failed.unlink(missing_ok=True)
    end.path = writer.path
    return end
