"""Benchmark: scan a generated world of N domains served by the fixture lab in another process.

    python bench/run.py [--domains 2000] [--concurrency 200] [--timeout 5]

The world: every domain has an MX pair and an MTA-STS policy. Half of the
domains are hosted by a few shared providers (so the probe cache matters);
the other half have their own MX hostnames, four domains per address like
small hosters. Policy hosts share addresses, ten domains per address. A tenth of the domains have a fault (no STARTTLS, expired or
wrong-name certificate, STARTTLS refused, a policy that does not cover the MX).

Reports domains per second, SMTP sessions per second and the scanner's peak
RSS (from wait4, so the lab's memory is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

PROVIDERS = 4
FAULTS = [
    ("no-starttls", "good"),
    ("good", "expired"),
    ("good", "wrong-name"),
    ("starttls-454", "good"),
    ("good", "good"),  # with a policy that does not cover the MX
]


def address(index: int) -> str:
    """The index-th lab address in 127.10.0.0/16 and beyond (never .0 or .255)."""
    base = 10 * 65536 * 1 + index
    second, rest = divmod(base, 254 * 254)
    third, fourth = divmod(rest, 254)
    return f"127.{second}.{third + 1}.{fourth + 1}"


def policy_body(mx: list[str], *, cover: bool) -> str:
    lines = ["version: STSv1", "mode: testing"]
    lines += [f"mx: {host}" for host in (mx if cover else ["elsewhere.invalid"])]
    lines.append("max_age: 604800")
    return "\\n".join(lines) + "\\n"


def generate_world(count: int) -> tuple[str, list[str], list[bool]]:
    out: list[str] = ['[lab]\ndescription = "generated benchmark world"\n']
    next_address = 0

    def new_address() -> str:
        nonlocal next_address
        next_address += 1
        return address(next_address)

    for provider in range(PROVIDERS):
        for n in (1, 2):
            out.append(
                f'[[servers]]\nhostnames = ["mx{n}.provider{provider}.example"]\n'
                f'address = "{new_address()}"\n'
            )
    # Policy hosts: one address per ten domains, as at MTA-STS hosting services.
    policy_addresses = [new_address() for _ in range(max(1, count // 10))]
    domains: list[str] = []
    faults: list[bool] = []
    shared_address: str | None = None
    own_domains = 0
    for index in range(count):
        name = f"d{index}.example"
        domains.append(name)
        fault = FAULTS[(index // 10) % len(FAULTS)] if index % 10 == 9 else None
        faults.append(fault is not None)
        hosted = index % 2 == 0 and fault is None
        if hosted:
            provider = index % PROVIDERS
            mx = [f"mx1.provider{provider}.example", f"mx2.provider{provider}.example"]
            servers = ""
        else:
            mx = [f"mx1.{name}", f"mx2.{name}"]
            behaviour, certificate = fault[:2] if fault else ("good", "good")
            if fault is not None:
                first = new_address()  # a faulty server behaves alone on its address
            else:
                own_domains += 1
                if shared_address is None or own_domains % 4 == 1:
                    shared_address = new_address()  # four domains' first MX per address
                first = shared_address
            second = new_address()
            servers = (
                f'servers = [{{ hostname = "{mx[0]}", address = "{first}", '
                f'behaviour = "{behaviour}", certificate = "{certificate}" }}, '
                f'{{ hostname = "{mx[1]}", address = "{second}" }}]\n'
            )
        cover = fault != ("good", "good")
        out.append(
            f'[domains."{name}"]\n'
            f'dns."@" = {{ mx = ["10 {mx[0]}", "20 {mx[1]}"] }}\n'
            f'dns."_mta-sts" = {{ txt = ["v=STSv1; id=bench{index}"] }}\n'
            f"{servers}"
            f'policy.address = "{policy_addresses[index % len(policy_addresses)]}"\n'
            f'policy.body = "{policy_body(mx, cover=cover)}"\n'
        )
    return "\n".join(out), domains, faults


def compile_scanner() -> None:
    """Byte-compile the scanner package, as an installation does.

    With PYTHONDONTWRITEBYTECODE set (some containers set it), every scanner process
    would otherwise compile its modules again at start: about 0.1 s per process, which
    no installed scanner pays.
    """
    package = Path(__file__).resolve().parent.parent / "scanner"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


def serve_world(
    world: Path,
    workdir: Path,
    *,
    runner: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], list[str]]:
    """`scanner lab serve WORLD` in another process, and the scanner options it prints.

    `runner` goes before the Python command (`taskset -c 0` to pin the lab). Exits
    when the lab does not start.
    """
    command = [*(runner or []), sys.executable, "-m", "scanner", "lab", "serve", str(world)]
    lab = subprocess.Popen(
        [*command, "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert lab.stdout is not None
    for line in lab.stdout:
        if match := re.match(r"scan with: scanner scan DOMAIN (.*)$", line.strip()):
            return lab, match.group(1).split()
    lab.terminate()
    sys.exit("the lab did not start")


def scan_command(
    args: argparse.Namespace,
    work: Path,
    out: Path,
    lab_args: list[str],
    runner: list[str] | None = None,
) -> list[str]:
    """`scanner scan` over the world's domains with the benchmark's options and the lab's."""
    return [
        *(runner or [sys.executable, "-m"]),
        "scanner",
        "scan",
        "--input",
        str(work / "domains.txt"),
        "--out",
        str(out),
        "--no-progress",
        "--concurrency",
        str(args.concurrency),
        "--per-ip",
        str(args.per_ip),
        "--timeout",
        str(args.timeout),
        *(["--workers", str(args.workers)] if args.workers is not None else []),
        *lab_args,
    ]


def unexpected_verdicts(
    records: list[dict[str, Any]], domains: list[str], faults: list[bool]
) -> Counter[str]:
    """Lines whose verdict differs from the generated truth (faulty: not ready), by reason."""
    faulty = {name for name, fault in zip(domains, faults, strict=True) if fault}
    return Counter(
        (record.get("blockers") or ["(ready)"])[0].split(":")[0][:70]
        for record in records
        if bool(record.get("enforce_ready")) == (record["domain"] in faulty)
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--per-ip", type=int, default=4)
    parser.add_argument(
        "--workers", type=int, default=None, help="passed to scanner scan (default: its own)"
    )
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="measure the first pass, while the lab still mints a certificate per host",
    )
    parser.add_argument(
        "--profile",
        metavar="HTML",
        help="run the scan under pyinstrument, write a text profile here",
    )
    args = parser.parse_args()

    compile_scanner()
    with tempfile.TemporaryDirectory(prefix="scanner-bench-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        world_text, domains, faults = generate_world(args.domains)
        world = work / "world.toml"
        world.write_text(world_text, encoding="utf-8")
        (work / "domains.txt").write_text("\n".join(domains) + "\n", encoding="utf-8")
        lab, scan_args = serve_world(world, work / "lab")
        print(f"lab ready in {time.monotonic() - started:.1f} s ({args.domains} domains)")
        out = work / "out.jsonl"
        runner = [sys.executable, "-m"]
        if args.profile:
            runner += ["pyinstrument", "-r", "text", "-o", args.profile, "-m"]
        command = scan_command(args, work, out, scan_args, runner)
        if args.warm_up:
            # The lab mints each host's certificate on first use, which real servers do
            # not: an unmeasured pass first, so the figures are the scanner's own.
            print("warm-up: one unmeasured pass ...", flush=True)
            warm = scan_command(args, work, work / "warm.jsonl", scan_args, runner)
            subprocess.run(warm, stderr=subprocess.DEVNULL, check=True)
        began = time.monotonic()
        scan = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(scan.pid, 0)
        elapsed = time.monotonic() - began
        assert scan.stderr is not None
        summary = scan.stderr.read()
        lab.terminate()
        lab.wait()
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        lines = len(records)
        surprises = unexpected_verdicts(records, domains, faults)
        sessions_match = re.search(r"(\d+) SMTP sessions", summary)
        sessions = int(sessions_match.group(1)) if sessions_match else 0
        print(summary.strip())
        print(f"exit status        {os.waitstatus_to_exitcode(status)}")
        print(f"domains            {lines} in {elapsed:.2f} s = {lines / elapsed:.1f} domains/s")
        print(f"SMTP sessions      {sessions} = {sessions / elapsed:.1f} sessions/s")
        print(f"scanner peak RSS   {usage.ru_maxrss / 1024:.1f} MB")
        print(f"scanner CPU        {usage.ru_utime + usage.ru_stime:.1f} s")
        print(f"unexpected verdicts {sum(surprises.values())}")
        for reason, count in surprises.most_common(5):
            print(f"  {count:6d}  {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
