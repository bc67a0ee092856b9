"""A real validating resolver in front of the lab DNS: Debian's unbound, for DANE tests.

The lab DNS server is authoritative for a signed tree (`scanner.lab.dnssec`); a
scanner (or posttls-finger) needs a validating recursive resolver between them, as
on the internet. `unbound_config` writes a configuration that runs unbound in the
foreground as the current user (no chroot, no user switch, logging to stderr),
listening on one loopback address and port, sending every query to the lab DNS
through stub zones (`do-not-query-localhost: no`, since the lab listens on
127.0.0.1): one for the root and one for every zone of the world, so that unbound
knows the lab serves each side of every zone cut and never chases the NS names (the
lab's port is in no NS record); validating with the lab's trust anchor, with QNAME minimisation off
(the lab answers every zone itself, without referrals) and RFC 8914 extended errors
on. `open_unbound` runs it for the duration of a block and waits until it answers.

Nothing here is used by a scan; tests and `lab` tooling start it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import trio

UNBOUND = "unbound"
STARTUP_DEADLINE = 15.0  # seconds for unbound to answer its first query
DEFAULT_ADDRESS = "127.0.53.1"


class UnboundUnavailable(RuntimeError):
    """unbound is not installed, or did not start; the message says which."""


def unbound_path() -> str | None:
    """The unbound binary, or None when it is not installed (Debian: /usr/sbin/unbound)."""
    return shutil.which(UNBOUND) or shutil.which(UNBOUND, path="/usr/sbin:/usr/local/sbin")


def unbound_config(
    *,
    listen: tuple[str, int],
    lab_dns: tuple[str, int],
    trust_anchor_file: Path,
    directory: Path,
    zones: Sequence[str] = (),
) -> str:
    """An unbound.conf for a validating resolver in front of the lab DNS serving `zones`."""
    address, port = listen
    lab_address, lab_port = lab_dns
    stubs = "".join(
        f'stub-zone:\n    name: "{zone.rstrip(".")}."\n    stub-addr: {lab_address}@{lab_port}\n\n'
        for zone in dict.fromkeys(("", *zones))
    )
    return f"""server:
    interface: {address}@{port}
    port: {port}
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{directory}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    log-servfail: yes
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "validator iterator"
    trust-anchor-file: "{trust_anchor_file}"
    qname-minimisation: no
    aggressive-nsec: no
    prefetch: no
    ede: yes
    val-permissive-mode: no
    harden-dnssec-stripped: yes
    cache-max-ttl: 300

{stubs}remote-control:
    control-enable: no
"""


def free_port(address: str) -> int:
    """A port free for both UDP and TCP on `address` (the kernel's choice, checked twice)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                return port
    raise UnboundUnavailable(f"no free port on {address}")


def write_config(
    directory: Path,
    *,
    listen: tuple[str, int],
    lab_dns: tuple[str, int],
    trust_anchor_file: Path,
    zones: Sequence[str] = (),
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "unbound.conf"
    path.write_text(
        unbound_config(
            listen=listen,
            lab_dns=lab_dns,
            trust_anchor_file=trust_anchor_file,
            directory=directory,
            zones=zones,
        ),
        encoding="utf-8",
    )
    return path


async def answers(address: str, port: int) -> bool:
    """Does a resolver at (address, port) answer a query for the root's SOA with AD?"""
    query = dns.message.make_query(".", "SOA", want_dnssec=True)
    query.flags |= dns.flags.AD
    try:
        reply = await dns.asyncquery.udp(query, address, port=port, timeout=1.0)
    except (dns.exception.DNSException, OSError):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.flags & dns.flags.AD)


@asynccontextmanager
async def open_unbound(
    *,
    lab_dns: tuple[str, int],
    trust_anchor_file: Path,
    directory: Path,
    zones: Sequence[str] = (),
    address: str = DEFAULT_ADDRESS,
    port: int | None = None,
    prefix: Sequence[str] = (),
) -> AsyncIterator[tuple[str, int]]:
    """Run unbound for the block; yields (address, port) once it validates the lab's root.

    `zones` are the zone apexes the lab serves besides the root (`World.zones`).
    `prefix` runs it under another command (`ip netns exec NAME`). Raises
    `UnboundUnavailable` when unbound is missing or does not answer in time.
    """
    binary = unbound_path()
    if binary is None:
        raise UnboundUnavailable("unbound is not installed (Debian: apt-get install unbound)")
    chosen = port if port is not None else free_port(address)
    config = write_config(
        directory,
        listen=(address, chosen),
        lab_dns=lab_dns,
        trust_anchor_file=trust_anchor_file,
        zones=zones,
    )
    log = (directory / "unbound.log").open("wb")
    try:
        async with trio.open_nursery() as nursery:
            process = await nursery.start(_run, [*prefix, binary, "-d", "-c", str(config)], log)
            with trio.move_on_after(STARTUP_DEADLINE) as waiting:
                while not await answers(address, chosen):
                    if process.returncode is not None:
                        break
                    await trio.sleep(0.1)
            if waiting.cancelled_caught or process.returncode is not None:
                process.terminate()
                log.flush()
                text = (directory / "unbound.log").read_text(errors="replace")[-2000:]
                raise UnboundUnavailable(f"unbound did not answer on {address}:{chosen}: {text}")
            try:
                yield address, chosen
            finally:
                process.terminate()
    finally:
        log.close()


async def _run(
    command: list[str], log: IO[bytes], *, task_status: trio.TaskStatus[trio.Process]
) -> None:
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    task_status.started(process)
    try:
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
