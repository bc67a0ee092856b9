"""Peak memory of a scan of domains whose every address presents a large certificate of its own.

    .venv/bin/python bench/hostile_memory.py                 # 16 domains, --concurrency 2
    .venv/bin/python bench/hostile_memory.py --domains 4 --names 2000

Each domain has 4 MX hosts of 8 addresses; each of its 32 addresses presents a distinct
certificate of about 95 kB (`--names` short SAN dNSNames, none of them the MX host). DNS
is the lab's, SMTP the lab's server presenting those certificates (tests/hostile.py).
`scanner scan --input` runs in its own process tree (worker processes by default); the
peak is the largest sum of the resident sets of that tree, sampled every 20 ms, next
to the largest line written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hostile import Forge, serve_certificates  # noqa: E402

from scanner.lab import open_lab, parse_world  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def world_text(domains: int) -> tuple[str, dict[str, str]]:
    """The world's DNS and, per address, the domain it serves."""
    parts, served = [], {}
    for d in range(domains):
        name = f"heavy{d}.example"
        hosts = [f"mx{h}.{name}" for h in range(4)]
        parts.append(f'[domains."{name}".dns]')
        parts.append('"@" = { mx = [' + ", ".join(f'"10 {h}"' for h in hosts) + "] }")
        for h, host in enumerate(hosts):
            addresses = [f"127.1.{d}.{8 * h + a + 1}" for a in range(8)]
            served.update(dict.fromkeys(addresses, name))
            parts.append(f'"{host}." = {{ a = {json.dumps(addresses)} }}')
        parts.append(f'[domains."{name}".expect]\nenforce_ready = false')
    return "\n".join(parts) + "\n", served


def tree_rss(root: int) -> int:
    """Bytes resident in `root` and its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in family and pid not in family:
                family.add(pid)
                grew = True
    total = 0
    for pid in family:
        with contextlib.suppress(OSError):  # it ended meanwhile
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


async def main(domains: int, names: int, concurrency: int) -> None:
    text, served = world_text(domains)
    forge = Forge()
    started = time.monotonic()
    contexts = {
        address: forge.issue([f"{i:x}.{n:x}" for i in range(names)]).context()
        for n, address in enumerate(served)
    }
    size = len(forge.issue([f"{i:x}.1ff" for i in range(names)]).leaf)
    print(f"{len(contexts)} certificates of {size:,} bytes in {time.monotonic() - started:.0f} s")
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        (workdir / "forge.pem").write_bytes(forge.pem)
        (workdir / "domains.txt").write_text("\n".join(sorted(set(served.values()))) + "\n")
        async with (
            open_lab(parse_world(text), workdir=workdir / "lab") as lab,
            serve_certificates(contexts) as port,
        ):
            host, dns_port = lab.resolver
            command = [
                sys.executable, "-m", "scanner", "scan", "--input", str(workdir / "domains.txt"),
                "--out", str(workdir / "out.jsonl"), "--no-progress", "--allow-private",
                "--concurrency", str(concurrency), "--resolver", f"{host}:{dns_port}",
                "--smtp-port", str(port), "--ca-file", str(workdir / "forge.pem"),
            ]  # fmt: skip
            peak = 0
            async with trio.open_nursery() as nursery:
                process = await nursery.start(trio.run_process, command)
                while process.returncode is None:
                    peak = max(peak, await trio.to_thread.run_sync(tree_rss, process.pid))
                    await trio.sleep(0.02)
        lines = (workdir / "out.jsonl").read_bytes().splitlines()
    print(
        f"{len(lines)} lines, the largest {max(map(len, lines)):,} bytes; "
        f"peak resident set of the scan's processes: {peak / 1e6:.0f} MB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=16)
    parser.add_argument("--names", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=2)
    arguments = parser.parse_args()
    trio.run(main, arguments.domains, arguments.names, arguments.concurrency)
