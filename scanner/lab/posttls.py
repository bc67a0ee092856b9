"""Side by side with Postfix: the scanner's DANE verdict and `posttls-finger -l dane`'s, per domain.

Theory of operation. posttls-finger (Debian's postfix package) resolves through the
system resolver: /etc/resolv.conf, port 53, and glibc passes on the AD bit only with
`options trust-ad`. So the comparison runs inside a network namespace of its own,
entered with `ip netns exec NAME`, which bind-mounts /etc/netns/NAME/resolv.conf
(`nameserver 127.0.0.1`, `options trust-ad`) over /etc/resolv.conf for this process
and its children. Inside it, `compare` serves a DANE world (the lab), runs unbound as
the validating resolver on 127.0.0.1:53 with the lab's trust anchor, scans every
domain whose expectation names DANE statuses with the system resolver (the same
/etc/resolv.conf posttls-finger reads), runs `posttls-finger -v -c -l dane
DOMAIN:PORT` on it, and puts Postfix's outcome in the scanner's words
(`postfix_status`). Two verdicts agree when they are the same status.

`python -m scanner.lab.posttls WORLD --workdir DIR [--json FILE]` does it and prints
the table; it must already run inside such a namespace (tests/test_dane_posttls.py
makes one). Nothing here is used by a scan.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from scanner.lab.runner import open_lab
from scanner.lab.unbound import open_unbound
from scanner.lab.world import World, load_world
from scanner.models import DaneStatus

POSTTLS_FINGER = "posttls-finger"
POSTFIX_DEADLINE = 60.0  # seconds for one posttls-finger run


def posttls_finger_path() -> str | None:
    """posttls-finger, or None when Debian's postfix package is not installed."""
    return shutil.which(POSTTLS_FINGER) or shutil.which(POSTTLS_FINGER, path="/usr/sbin")


# What posttls-finger -v says, in order of precedence, and the scanner's word for it.
# "MX RRset insecure" comes first: posttls-finger then still matches the TLSA records
# but logs the result as "Trusted", not "Verified": Postfix's SMTP client would not
# apply DANE (smtp_tls_policy.c: "non DNSSEC destination").
_POSTFIX_SIGNS: tuple[tuple[re.Pattern[str], DaneStatus], ...] = (
    (re.compile(r"TLSA lookup error"), DaneStatus.BOGUS),
    (re.compile(r"MX RRset insecure"), DaneStatus.INSECURE),
    (re.compile(r"no matching DANE TLSA records"), DaneStatus.FAIL),
    (re.compile(r"no usable TLSA records found"), DaneStatus.UNUSABLE),
    (re.compile(r"Matched DANE (EE|TA) "), DaneStatus.PASS),
)
_NO_TLSA = re.compile(r"no TLSA records found")
_TLSA_QUERY = re.compile(r"dns_query: _\d+\._tcp\.\S+ \(TLSA\)")


def postfix_status(output: str) -> tuple[DaneStatus | None, str]:
    """posttls-finger's outcome as a DANE status, with the line that says so.

    "no TLSA records found" is `no-tlsa` when a TLSA query was sent (a denial), and
    `insecure` when none was (Postfix skips TLSA for hosts whose address records are
    not signed). None when the output says none of these things.
    """
    lines = output.splitlines()
    for sign, status in _POSTFIX_SIGNS:
        for line in lines:
            if sign.search(line):
                return status, line.strip()
    for line in lines:
        if _NO_TLSA.search(line):
            queried = any(_TLSA_QUERY.search(other) for other in lines)
            return (DaneStatus.NO_TLSA if queried else DaneStatus.INSECURE), line.strip()
    return None, (lines[-1].strip() if lines else "no output")


@dataclass(frozen=True, slots=True)
class Comparison:
    domain: str
    scanner: str | None  # the scanner's DANE status of the domain's (first) address
    scanner_detail: str
    postfix: str | None
    postfix_line: str
    agree: bool


async def compare(world: World, workdir: Path, *, postfix_binary: str) -> list[Comparison]:
    """Serve `world`, run unbound on 127.0.0.1:53, and compare every DANE domain.

    Must run inside a network namespace whose /etc/resolv.conf points at 127.0.0.1
    with `options trust-ad` (see the module docstring).
    """
    from scanner.options import build_scanner, network_options

    comparisons: list[Comparison] = []
    async with open_lab(world, workdir / "lab") as lab:
        assert lab.trust_anchor_file is not None, "the world has no [zones]: nothing is signed"
        async with open_unbound(
            lab_dns=lab.resolver,
            trust_anchor_file=lab.trust_anchor_file,
            directory=workdir / "unbound",
            zones=[zone.name for zone in world.zones],
            address="127.0.0.1",
            port=53,
        ):
            options = network_options(
                smtp_port=lab.smtp_port,
                https_port=lab.https_port,
                ca_file=[lab.ca_file],
                allow_private=True,
                timeout=5.0,
                ehlo_name="scanner.lab.example",
            )
            scanner = build_scanner(options)  # the system resolver: /etc/resolv.conf
            for domain in world.domains:
                if domain.expect is None or not domain.expect.dane:
                    continue
                result = await scanner.scan_domain(domain.name)
                ours = None
                detail = str(result.error or "no address")
                if result.verdict is not None:
                    for host in result.verdict.mx:
                        for address in host.addresses:
                            if address.dane is not None:
                                ours, detail = address.dane.status, address.dane.detail
                                break
                        if ours is not None:
                            break
                output = f"posttls-finger: no answer within {POSTFIX_DEADLINE:g} s"
                with trio.move_on_after(POSTFIX_DEADLINE):
                    finished = await trio.run_process(
                        [
                            postfix_binary,
                            "-v",
                            "-c",
                            "-l",
                            "dane",
                            f"{domain.name}:{lab.smtp_port}",
                        ],
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                    )
                    output = (finished.stdout + finished.stderr).decode("utf-8", "replace")
                theirs, line = postfix_status(output)
                comparisons.append(
                    Comparison(
                        domain=domain.name,
                        scanner=ours.value if ours else None,
                        scanner_detail=detail,
                        postfix=theirs.value if theirs else None,
                        postfix_line=line,
                        agree=ours is not None and ours == theirs,
                    )
                )
    return comparisons


def table(comparisons: list[Comparison]) -> str:
    """A Markdown table of the comparisons (docs/dane.md shows one)."""
    rows = ["| domain | scanner | posttls-finger | agree | Postfix said |", "|---|---|---|---|---|"]
    for c in comparisons:
        said = re.sub(r"_\d+\._tcp", "_PORT._tcp", c.postfix_line.removeprefix("posttls-finger: "))
        said = re.sub(r":\d+\b", ":PORT", said)
        rows.append(
            f"| {c.domain} | {c.scanner} | {c.postfix} | {'yes' if c.agree else 'NO'} | {said[:110]} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("world", type=Path)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None, help="write the comparisons here")
    args = parser.parse_args(argv)
    binary = posttls_finger_path()
    if binary is None:
        print("posttls-finger is not installed (apt-get install postfix)", file=sys.stderr)
        return 2
    world = load_world(args.world)
    comparisons = trio.run(lambda: compare(world, args.workdir, postfix_binary=binary))
    print(table(comparisons))
    if args.json is not None:
        args.json.write_text(
            json.dumps([asdict(c) for c in comparisons], indent=2), encoding="utf-8"
        )
    return 0 if all(c.agree for c in comparisons) else 1


if __name__ == "__main__":
    raise SystemExit(main())
