"""Benchmark: the floor, the least CPU per domain this stack needs for the scanner's network work.

    python bench/floor.py [--domains 2000] [--rounds 3] [--no-breakdown] [--workers 1,2]

The floor client (`python bench/floor.py client ...`, started by this script) does, per
domain, the network work `scanner scan` does and nothing else, on the scanner's own
stack: Python, trio, pyOpenSSL over memory BIOs, the scanner's DNS wire code
(`scanner.core.dns_wire`). With `--concurrency` domains in flight, each domain:

1. DNS over UDP to the lab resolver: MX of the domain, TXT `_mta-sts.` and
   `_smtp._tls.` of it, A and AAAA of `mta-sts.<domain>` and of every MX host;
   answers are cached by (name, type) for the run, one query per question.
2. HTTPS: a TLS handshake with the policy host (SNI `mta-sts.<domain>`), one
   `GET /.well-known/mta-sts.txt` with `Connection: close`, read to the end.
3. SMTP, once per (MX host, address) in the run: greeting, EHLO, STARTTLS (unless
   not offered or refused), TLS handshake (SNI the MX host), EHLO, QUIT.

The steps of a domain run one after the other; DNS goes over one UDP socket, whose
replies one task hands out by query ID, and a question unanswered after 1 s is asked
again (3 tries). STARTTLS is sent only when EHLO offers it (the scanner sends it anyway).

What it is not: a scanner. It verifies no certificate (so expired and wrong-name
certificates cost it what good ones do), keeps no transcript, reaches no verdict,
writes no output, waits for no injected plaintext, limits no address, and has one
deadline per domain. Its client context is
`scanner.net.tls.build_client_context` (OpenSSL's default groups and ciphers), so a
handshake costs what the scanner's does. Whatever the scanner spends above the floor
is its own logic; the floor itself is the price of the protocols on this stack.

The measurement: the `bench/run.py` world, served by `scanner lab serve` pinned to CPU 0;
one unmeasured `scanner scan` (the lab mints certificates on first use); then per round,
in alternating order, the floor client and `scanner scan --concurrency 200 --per-ip 4
--timeout 5 --workers 1 --no-progress` (with the lab's options), each a child process
pinned to CPU 1, CPU (user + system) from `os.wait4`, start-up included. Afterwards the
floor runs once more with no domains, then stopping after DNS, then after HTTPS, to
attribute its CPU to start-up, DNS, HTTPS and SMTP.

`--workers 1,2` measures `scanner scan` once per round for each value given, in the
rotating order, and a scanner with worker processes apart: its workers' CPU from
/proc/PID/stat every 10 ms, the parent's own as the total less theirs. Each variant runs
once more on no domains: its start-up, so that the parent's share past start-up shows
what a long list costs.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import dns.rdatatype
import trio
from OpenSSL import SSL
from trio.lowlevel import wait_readable, wait_writable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import (
    compile_scanner,
    generate_world,
    scan_command,
    serve_world,
    unexpected_verdicts,
)  # bench/run.py

from scanner.core.dns_wire import (
    MAX_RESPONSE_BYTES,
    Exchange,
    RecordData,
    Response,
    build_query,
    interpret,
    name_wire,
)
from scanner.models import MxRecord
from scanner.net.tls import build_client_context

REPO = Path(__file__).resolve().parent.parent
_T = TypeVar("_T")

RECEIVE_SIZE = 65536
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RESEND_AFTER = 1.0  # seconds before a DNS question is asked again (a lost datagram)
DNS_TRIES = 3
EHLO = b"EHLO floor.invalid\r\n"
QUIT = b"QUIT\r\n"
STAGES = ("start", "dns", "https", "smtp")  # where the client stops ("start": no domains)
A, AAAA = dns.rdatatype.A, dns.rdatatype.AAAA
MX, TXT = dns.rdatatype.MX, dns.rdatatype.TXT


# ---------------------------------------------------------------- the floor client


async def connect(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex((address, port))
        if error == errno.EINPROGRESS:
            await wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock


async def receive(sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            await wait_readable(sock)


async def send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await wait_writable(sock)


class Tls:
    """The least pump for pyOpenSSL over memory BIOs on a plain non-blocking socket."""

    __slots__ = ("connection", "eof", "sock")

    def __init__(self, sock: socket.socket, context: SSL.Context, server_name: str) -> None:
        self.sock = sock
        self.eof = False
        self.connection = SSL.Connection(context, None)
        self.connection.set_connect_state()
        self.connection.set_tlsext_host_name(server_name.encode("ascii"))

    async def call(self, operation: Callable[[], _T]) -> _T:
        """Run `operation` until it stops asking for input; flush OpenSSL's output each time."""
        while True:
            try:
                result = operation()
            except SSL.WantReadError:
                await self.flush()
            else:
                await self.flush()
                return result
            if self.eof:
                raise EOFError("the peer closed the connection")
            data = await receive(self.sock)
            if data:
                self.connection.bio_write(data)
            else:
                self.eof = True
                self.connection.bio_shutdown()

    async def flush(self) -> None:
        while True:
            try:
                data = self.connection.bio_read(RECEIVE_SIZE)
            except SSL.WantReadError:
                return
            await send_all(self.sock, data)
            if len(data) < RECEIVE_SIZE:
                return

    async def receive(self) -> bytes:
        """Decrypted bytes; b"" at close_notify or end of stream."""
        try:
            return await self.call(partial(self.connection.recv, RECEIVE_SIZE))
        except (SSL.ZeroReturnError, SSL.SysCallError, EOFError):
            return b""

    async def send(self, data: bytes) -> None:
        await self.call(partial(self.connection.send, data))


async def read_reply(buffer: bytearray, source: Callable[[], Awaitable[bytes]]) -> bytes:
    """One SMTP reply (RFC 5321 §4.2): lines `NNN-...` up to the line `NNN ...`."""
    start = 0
    while True:
        end = buffer.find(b"\n", start)
        if end < 0:
            data = await source()
            if not data:
                raise EOFError("the server closed the connection")
            buffer += data
            continue
        line_end, start = start + 3, end + 1
        if buffer[line_end : line_end + 1] != b"-":
            reply = bytes(buffer[:start])
            del buffer[:start]
            return reply


class Lookup:
    """One DNS question of the run, shared by every domain that asks it."""

    __slots__ = ("done", "exchange", "ids", "records", "sent", "tries")

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.done = trio.Event()
        self.ids: list[int] = []
        self.records: tuple[RecordData, ...] | None = None
        self.sent = 0.0
        self.tries = 0


class Dns:
    """UDP to one resolver over one socket; a reader task matches replies by ID."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.connect(server)
        self.cache: dict[tuple[str, int], Lookup] = {}
        self.pending: dict[int, Lookup] = {}  # query ID -> the question it asks
        self.queries = 0

    async def records(self, name: str, rdtype: dns.rdatatype.RdataType) -> tuple[RecordData, ...]:
        lookup = self.cache.get((name, rdtype))
        if lookup is None:
            lookup = Lookup(Exchange(build_query(name_wire(name), rdtype)))
            self.cache[name, rdtype] = lookup
            self.send(lookup)
        if lookup.records is None:
            await lookup.done.wait()
            if lookup.records is None:
                raise LookupError(f"no reply for {name} {rdtype.name}")
        return lookup.records

    async def addresses(self, name: str) -> list[str]:
        records = await self.records(name, A) + await self.records(name, AAAA)
        return [record for record in records if isinstance(record, str)]

    def send(self, lookup: Lookup) -> None:
        while True:
            datagram = lookup.exchange.datagram_for(self.server)
            query_id = int.from_bytes(datagram[:2], "big")
            if query_id not in self.pending:
                break
        self.pending[query_id] = lookup
        lookup.ids.append(query_id)
        lookup.sent = trio.current_time()
        lookup.tries += 1
        self.queries += 1
        with suppress(BlockingIOError):  # as good as lost: asked again after RESEND_AFTER
            self.sock.send(datagram)

    def finish(self, lookup: Lookup, records: tuple[RecordData, ...] | None) -> None:
        for query_id in lookup.ids:
            self.pending.pop(query_id, None)
        lookup.records = records
        lookup.done.set()

    async def read_replies(self) -> None:
        sock = self.sock
        while True:
            await wait_readable(sock)
            while True:
                try:
                    wire = sock.recv(MAX_RESPONSE_BYTES + 1)
                except OSError:  # BlockingIOError: all read
                    break
                lookup = self.pending.get(int.from_bytes(wire[:2], "big"))
                if lookup is None or lookup.done.is_set():
                    continue
                reply = lookup.exchange.accept(wire, self.server)
                if isinstance(reply, Response):
                    self.finish(lookup, interpret(lookup.exchange.query, reply).records)

    async def resend_lost(self) -> None:
        while True:
            await trio.sleep(RESEND_AFTER / 2)
            late = trio.current_time() - RESEND_AFTER
            for lookup in {lookup for lookup in self.pending.values() if lookup.sent < late}:
                if lookup.tries >= DNS_TRIES:
                    self.finish(lookup, None)
                else:
                    self.send(lookup)


class Floor:
    """The client: `concurrency` workers take domains from one list until it is empty."""

    def __init__(self, args: argparse.Namespace) -> None:
        host, port = args.resolver.rsplit(":", 1)
        self.dns = Dns((host, int(port)))
        self.smtp_port: int = args.smtp_port
        self.https_port: int = args.https_port
        self.timeout: float = args.timeout
        self.stop: str = args.stop
        self.context = build_client_context()
        self.probed: set[tuple[str, str]] = set()
        self.counts: Counter[str] = Counter()

    async def run(self, domains: list[str], concurrency: int) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.dns.read_replies)
            nursery.start_soon(self.dns.resend_lost)
            async with trio.open_nursery() as workers:
                todo = iter(domains)
                for _ in range(min(concurrency, len(domains))):
                    workers.start_soon(self.worker, todo)
            nursery.cancel_scope.cancel()
        self.counts["dns queries"] = self.dns.queries

    async def worker(self, todo: Iterator[str]) -> None:
        for domain in todo:
            self.counts["domains"] += 1
            failure = "timeout"
            with trio.move_on_after(self.timeout):
                try:
                    await self.domain(domain)
                    continue
                except (OSError, SSL.Error, EOFError, LookupError) as error:
                    failure = type(error).__name__
            self.counts["failed domains"] += 1  # the rest of a failed domain is left undone
            self.counts[f"failed: {failure}"] += 1

    async def domain(self, domain: str) -> None:
        dns = self.dns
        mx = await dns.records(domain, MX)
        await dns.records(f"_mta-sts.{domain}", TXT)
        await dns.records(f"_smtp._tls.{domain}", TXT)
        policy_host = f"mta-sts.{domain}"
        policy_addresses = await dns.addresses(policy_host)
        hosts = [record.host for record in mx if isinstance(record, MxRecord)]
        targets = [(host, address) for host in hosts for address in await dns.addresses(host)]
        if self.stop == "dns":
            return
        await self.fetch_policy(policy_host, policy_addresses[0])
        if self.stop == "https":
            return
        for target in targets:
            if target not in self.probed:  # as the scanner's probe cache: once per (host, address)
                self.probed.add(target)
                await self.probe(*target)

    async def fetch_policy(self, host: str, address: str) -> None:
        sock = await connect(address, self.https_port)
        try:
            tls = Tls(sock, self.context, host)
            await tls.call(tls.connection.do_handshake)
            await tls.send(
                b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: "
                + host.encode("ascii")
                + b"\r\nConnection: close\r\n\r\n"
            )
            response = bytearray()
            while data := await tls.receive():
                response += data
        finally:
            sock.close()
        self.counts["https fetches"] += 1
        if not response.startswith(b"HTTP/1.1 200"):
            self.counts["https not 200"] += 1

    async def probe(self, host: str, address: str) -> None:
        sock = await connect(address, self.smtp_port)
        self.counts["smtp sessions"] += 1
        try:
            buffer = bytearray()
            plain = partial(receive, sock)
            await read_reply(buffer, plain)  # the greeting
            await send_all(sock, EHLO)
            refusal = ""
            if b"STARTTLS" not in await read_reply(buffer, plain):
                refusal = "no starttls"
            else:
                await send_all(sock, b"STARTTLS\r\n")
                if not (await read_reply(buffer, plain)).startswith(b"220"):
                    refusal = "starttls refused"
            if refusal:
                self.counts[refusal] += 1
                await send_all(sock, QUIT)
                await read_reply(buffer, plain)
                return
            buffer.clear()
            tls = Tls(sock, self.context, host)
            await tls.call(tls.connection.do_handshake)
            await tls.send(EHLO)
            await read_reply(buffer, tls.receive)
            await tls.send(QUIT)
            await read_reply(buffer, tls.receive)
            self.counts["tls sessions"] += 1
        finally:
            sock.close()


def client_main(argv: list[str]) -> int:
    """`floor.py client DOMAINS [--stop STAGE] ... LAB OPTIONS`: print the counts as JSON."""
    parser = argparse.ArgumentParser(prog="floor.py client")
    parser.add_argument("input", type=Path)
    parser.add_argument("--stop", choices=STAGES[1:], default="smtp")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--resolver", required=True, help="IP:PORT")
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--https-port", type=int, required=True)
    args, _ = parser.parse_known_args(argv)  # the lab's other options are the scanner's
    domains = args.input.read_text(encoding="utf-8").split()
    floor = Floor(args)
    trio.run(floor.run, domains, args.concurrency)
    print(json.dumps(dict(floor.counts)))
    return 0


# ---------------------------------------------------------------- the measurement


@dataclass(frozen=True)
class Cpu:
    """A child's CPU (user + system): in all, and that of its own process apart from its
    children (its worker processes)."""

    total: float
    own: float

    @property
    def children(self) -> float:
        return self.total - self.own


def _stat_times(pid: int) -> tuple[float, float] | None:
    """(own, waited-for children's) CPU seconds of `pid`, from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def _children_of(pid: int) -> list[int]:
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []


def measure(
    command: list[str], env: dict[str, str], work: Path, *, cpu: str = "1"
) -> tuple[Cpu, str, str]:
    """Run `command` pinned to CPU `cpu`: its CPU (user + system, from wait4), its own
    CPU apart from its children's, stdout, stderr.

    The children's share is read from /proc every 10 ms (the last reading of each child
    process, or the parent's count of children waited for, whichever is larger); the
    parent's own is the wait4 total less that.
    """
    out, err = work / "child.out", work / "child.err"
    children: dict[int, float] = {}
    reaped = 0.0
    with out.open("w") as stdout, err.open("w") as stderr:
        child = subprocess.Popen(
            ["taskset", "-c", cpu, *command], stdout=stdout, stderr=stderr, env=env, cwd=REPO
        )
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            times = _stat_times(child.pid)
            if times is not None:
                reaped = max(reaped, times[1])
            for worker in _children_of(child.pid):
                worker_times = _stat_times(worker)
                if worker_times is not None:
                    children[worker] = worker_times[0]
            time.sleep(0.01)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        sys.exit(f"{' '.join(command)}\nexited with {child.returncode}: {err.read_text()[-2000:]}")
    total = usage.ru_utime + usage.ru_stime
    own = total - max(reaped, sum(children.values()))
    return Cpu(total, own), out.read_text(), err.read_text()


def main() -> int:
    if sys.argv[1:2] == ["client"]:
        return client_main(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--per-ip", type=int, default=4)
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false")
    parser.add_argument(
        "--workers",
        default="1",
        help="scanner scan --workers values to measure each round, comma-separated (e.g. 1,2)",
    )
    args = parser.parse_args()
    variants = [int(value) for value in args.workers.split(",")]
    n = args.domains

    compile_scanner()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="scanner-floor-") as tmp:
        work = Path(tmp)
        world_text, domains, faults = generate_world(n)
        (work / "world.toml").write_text(world_text, encoding="utf-8")
        (work / "domains.txt").write_text("\n".join(domains) + "\n", encoding="utf-8")
        (work / "none.txt").write_text("", encoding="utf-8")
        lab, lab_args = serve_world(
            work / "world.toml", work / "lab", runner=["taskset", "-c", "0"], env=env
        )

        def floor(stop: str, domain_file: str = "domains.txt") -> tuple[float, Counter[str]]:
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "client",
                str(work / domain_file),
                "--stop",
            ]
            command += [stop, "--concurrency", str(args.concurrency)]
            cpu, out, _ = measure([*command, "--timeout", str(args.timeout), *lab_args], env, work)
            return cpu.total, Counter(json.loads(out))

        def scan(workers: int, domain_file: str = "domains.txt") -> tuple[Cpu, int, str, int]:
            out = work / "scan.jsonl"
            out.unlink(missing_ok=True)
            args.workers = workers
            command = scan_command(args, work, out, lab_args, [sys.executable, "-m"])
            command[command.index("--input") + 1] = str(work / domain_file)
            cpu, _, err = measure(command, env, work)
            sessions = re.search(r"(\d+) SMTP sessions", err)
            records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            wrong = sum(unexpected_verdicts(records, domains, faults).values())
            return cpu, len(records), sessions.group(1) if sessions else "?", wrong

        try:
            print(f"{n} domains; warm-up: one unmeasured scan ...", flush=True)
            scan(variants[0])
            floors: list[float] = []
            scans: dict[int, list[Cpu]] = {workers: [] for workers in variants}
            ratios: dict[int, list[float]] = {workers: [] for workers in variants}
            for index in range(args.rounds):
                order: list[int | None] = [None, *variants]  # None: the floor
                shift = index % len(order)
                for which in order[shift:] + order[:shift]:
                    if which is None:
                        floor_cpu, counts = floor("smtp")
                        floors.append(floor_cpu / n * 1000)
                        print(
                            f"round {index + 1} floor: {floor_cpu:.2f} s, {floors[-1]:.2f} ms/domain, "
                            f"{json.dumps(counts)}",
                            flush=True,
                        )
                        continue
                    cpu, lines, sessions, wrong = scan(which)
                    scans[which].append(cpu)
                    apart = (
                        f", parent {cpu.own / n * 1000:.3f} ms/domain, workers "
                        f"{cpu.children / n * 1000:.2f} ms/domain, parent/worker "
                        f"{cpu.own / cpu.children:.3f}"
                        if which > 1 and cpu.children
                        else ""
                    )
                    print(
                        f"round {index + 1} scanner --workers {which}: {cpu.total:.2f} s, "
                        f"{cpu.total / n * 1000:.2f} ms/domain{apart}; {lines} lines, "
                        f"{sessions} SMTP sessions, {wrong} unexpected verdicts",
                        flush=True,
                    )
                for workers in variants:
                    ratios[workers].append(scans[workers][-1].total / n * 1000 / floors[-1])
            print(f"median floor {statistics.median(floors):.2f} ms/domain")
            # Each variant once more on no domains: its start-up, to tell what a domain
            # costs once the processes run (what a long list costs per domain).
            started = {workers: scan(workers, "none.txt")[0] for workers in variants}
            for workers, cpu in started.items():
                print(
                    f"start-up, --workers {workers}: {cpu.total:.2f} s "
                    f"(parent {cpu.own:.2f} s, workers {cpu.children:.2f} s)"
                )
            one = scans.get(1)
            for workers in variants:
                each = scans[workers]
                line = (
                    f"median --workers {workers}: {statistics.median(c.total for c in each) / n * 1000:.2f}"
                    f" ms/domain, scanner/floor {statistics.median(ratios[workers]):.2f} (paired by round)"
                )
                if workers > 1:
                    parent = statistics.median(c.own / c.children for c in each if c.children)
                    line += f", parent/workers CPU {parent:.3f}"
                    start = started[workers]
                    marginal = statistics.median(
                        (c.own - start.own) / (c.children - start.children) for c in each
                    )
                    line += f" ({marginal:.3f} past start-up)"
                    if one:
                        paired = [c.total / o.total for c, o in zip(each, one, strict=True)]
                        line += f", total / --workers 1 {statistics.median(paired):.2f} (paired)"
                print(line)
            if args.breakdown:
                runs = {"start": floor("smtp", "none.txt")}
                runs |= {stop: floor(stop) for stop in STAGES[1:]}
                print("floor breakdown (one more run per stage), CPU per domain:")
                print(
                    f"  start-up {runs['start'][0] / n * 1000:.2f} ms ({runs['start'][0]:.2f} s in all)"
                )
                units = {"dns": "dns queries", "https": "https fetches", "smtp": "smtp sessions"}
                for before, stage in itertools.pairwise(STAGES):
                    spent, count = runs[stage][0] - runs[before][0], runs[stage][1][units[stage]]
                    each = f"{spent / count * 1e6:.0f} µs" if count else "-"
                    print(
                        f"  {stage:8s} {spent / n * 1000:.2f} ms ({count} {units[stage]}, {each} each)"
                    )
                print(f"  total    {runs['smtp'][0] / n * 1000:.2f} ms")
        finally:
            lab.terminate()
            lab.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
