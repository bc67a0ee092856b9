"""Benchmark: a staged scan (`deploy/local-stages.sh SHARDS`) beside a one-process scan.

    python bench/stages.py [--domains 2000] [--shards 4] [--concurrency 200] [--per-ip 4] [--timeout 5]

The world is `bench/run.py`'s. It is served by a lab in a thread of this process, so the
servers' own counts can be read after each run: SMTP sessions per address, and the most
connections open at once to one address (from the servers' side, every shard together).
After an unmeasured warm-up pass (the lab mints each host's certificate on first use),
it runs `scanner scan --workers 1` and then `deploy/local-stages.sh SHARDS` with the same
options, and reports for each: wall time, CPU time of all scanner processes (getrusage
of the children: the lab, a thread here, is not counted), SMTP sessions, the addresses
with more sessions than in the one-process scan, the highest per-address peak; and
whether the lines agree under `scanner.stages.compare`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import compile_scanner, generate_world

from scanner.files import text_lines
from scanner.lab import Lab, lab_in_thread, load_world
from scanner.stages.compare import differences

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run `command`: wall seconds, CPU seconds of it and its descendants, its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"{command[:4]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, cpu, done.stderr


def sessions(lab: Lab) -> tuple[dict[str, int], dict[str, int]]:
    """SMTP sessions and the peak of open connections, per address, since the last reset."""
    stats = lab.smtp_stats
    return (
        {ip: stats.total(ip) for ip in stats.addresses()},
        {ip: stats.peak(ip) for ip in stats.addresses()},
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--per-ip", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()

    compile_scanner()
    with tempfile.TemporaryDirectory(prefix="scanner-bench-stages-") as tmp:
        work = Path(tmp)
        world_text, domains, faults = generate_world(args.domains)
        faulty = {name for name, fault in zip(domains, faults, strict=True) if fault}
        world = work / "world.toml"
        world.write_text(world_text, encoding="utf-8")
        listing = work / "domains.txt"
        listing.write_text("\n".join(domains) + "\n", encoding="utf-8")
        with lab_in_thread(load_world(world), work / "lab") as lab:
            options = [
                "--concurrency", str(args.concurrency), "--per-ip", str(args.per_ip),
                "--timeout", str(args.timeout), *lab.scanner_args(),
            ]  # fmt: skip
            scan = [sys.executable, "-m", "scanner", "scan", "--input", str(listing),
                    "--no-progress", "--workers", "1", *options]  # fmt: skip
            print("warm-up: one unmeasured pass ...", flush=True)
            timed([*scan, "--out", str(work / "warm.jsonl")])
            lab.smtp_stats.reset()
            one_wall, one_cpu, summary = timed([*scan, "--out", str(work / "one.jsonl")])
            one_sessions, one_peaks = sessions(lab)
            print(summary.strip().splitlines()[-1])
            lab.smtp_stats.reset()
            env = {**os.environ, "SCANNER": f"{sys.executable} -m scanner"}
            staged_wall, staged_cpu, log = timed(
                [str(ROOT / "deploy" / "local-stages.sh"), str(args.shards), str(listing),
                 str(work / "staged"), *options],
                env=env,
            )  # fmt: skip
            staged_sessions, staged_peaks = sessions(lab)
        print(log.strip())
        one = [json.loads(line) for line in text_lines(work / "one.jsonl")]
        staged = [json.loads(line) for line in text_lines(work / "staged" / "results.jsonl")]
        more = {
            ip: (count, one_sessions.get(ip, 0))
            for ip, count in staged_sessions.items()
            if count > one_sessions.get(ip, 0)
        }
        print(f"domains                {len(one)} one-process, {len(staged)} staged")
        for name, lines in (("one process", one), ("staged", staged)):
            unexpected = sorted(
                line["domain"]
                for line in lines
                if bool(line.get("enforce_ready")) == (line["domain"] in faulty)
            )
            print(f"unexpected verdicts, {name}: {len(unexpected)} {' '.join(unexpected[:20])}")
        found = differences(one, staged, limit=100_000)
        domains_differing = sorted({text.partition(":")[0] for text in found})
        print(
            f"domains whose answers differ: {len(domains_differing)} {' '.join(domains_differing)}"
        )
        for text in found[:5]:
            print(f"  {text[:400]}")
        for name, wall, cpu, counts, peaks in (
            ("one process", one_wall, one_cpu, one_sessions, one_peaks),
            (
                f"staged, {args.shards} shards",
                staged_wall,
                staged_cpu,
                staged_sessions,
                staged_peaks,
            ),
        ):
            print(
                f"{name:<22} wall {wall:6.1f} s, CPU {cpu:6.1f} s, "
                f"{sum(counts.values())} SMTP sessions to {len(counts)} addresses, "
                f"most open at once to one address {max(peaks.values(), default=0)} "
                f"(--per-ip {args.per_ip})"
            )
        print(f"addresses with more sessions staged than in one process: {len(more)}")
        for ip, (staged_count, one_count) in sorted(more.items())[:10]:
            print(f"  {ip}: {staged_count} staged, {one_count} one process")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
