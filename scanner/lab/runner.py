"""Starting and stopping a lab: every server of a world, on loopback, in the caller's task tree.

`open_lab` binds all sockets before it returns control (so clients may connect
at once: the kernel queues them until the accept loops run), starts the DNS,
SMTP and HTTPS servers in a nursery, and cancels them when the block exits.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import trio

import scanner
from scanner.lab.certificates import CertificateMint, default_mint
from scanner.lab.connections import ConnectionStats
from scanner.lab.dns_server import DnsConduct, Responder, TcpHandler, Zone, serve_udp
from scanner.lab.dnssec import ZoneTree, tlsa_data_from
from scanner.lab.https_server import DEFAULT_SLOW_INTERVAL, HttpsHandler, https_context_factory
from scanner.lab.listeners import BoundDns, BoundTcp, bind_dns, bind_shared_port
from scanner.lab.smtp_server import SmtpHandler, smtp_context_factory
from scanner.lab.world import PolicyHost, SmtpBehaviour, World, load_world

CA_FILE_NAME = "lab-ca.pem"
TRUST_ANCHOR_FILE_NAME = "lab-trust-anchor.ds"  # the signed root's DS, for a validating resolver
DEMO_WORLD_NAME = "demo-world.toml"
# Receive buffer of the DNS server's UDP socket. The kernel default holds about 200 small
# datagrams: a bulk scan's burst of queries overflowed it while the lab was busy (the
# kernel counted the drops), and every dropped query is a client timeout. The kernel caps
# the request at net.core.rmem_max.
DNS_RECEIVE_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Lab:
    """A running lab. Valid only inside the `open_lab` block that made it."""

    world: World
    resolver: tuple[str, int]  # the authoritative DNS server, UDP and TCP
    smtp_port: int  # shared by every SMTP address
    https_port: int  # shared by every policy host address
    ca_file: Path  # PEM of the lab CA
    smtp_stats: ConnectionStats = field(repr=False)
    https_stats: ConnectionStats = field(repr=False)
    dns: Responder = field(repr=False)
    # The DS of the lab's signed root (a world with zones), for a validating resolver's
    # `trust-anchor-file`; None for a flat, unsigned world.
    trust_anchor_file: Path | None = None

    def smtp_connections(self, ip: str) -> int:
        """SMTP connections accepted on `ip` so far."""
        return self.smtp_stats.total(ip)

    def smtp_max_concurrent(self, ip: str) -> int:
        """The most SMTP connections open at once on `ip` so far."""
        return self.smtp_stats.peak(ip)

    def https_connections(self, ip: str) -> int:
        """HTTPS connections accepted on `ip` so far."""
        return self.https_stats.total(ip)

    def scanner_args(self) -> list[str]:
        """The scanner options that point a scan at this lab."""
        host, port = self.resolver
        return [
            "--resolver",
            f"{host}:{port}",
            "--smtp-port",
            str(self.smtp_port),
            "--https-port",
            str(self.https_port),
            "--ca-file",
            str(self.ca_file),
            "--allow-private",
        ]


def demo_world_path() -> Path:
    """The bundled demo world: in an installed wheel, else in the source tree."""
    package_dir = Path(scanner.__file__).resolve().parent
    candidates = (
        package_dir / "_fixtures" / DEMO_WORLD_NAME,
        package_dir.parent / "fixtures" / DEMO_WORLD_NAME,
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"demo world not found (looked for {', '.join(str(c) for c in candidates)})"
    )


def _write_ca_file(workdir: Path, mint: CertificateMint) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / CA_FILE_NAME
    path.write_bytes(mint.ca_pem)
    return path


@dataclass(slots=True)
class BoundLab:
    """A lab whose sockets are bound but not yet served (`bind_lab`, `serve_bound`)."""

    lab: Lab
    latency: float
    dns: BoundDns
    smtp: BoundTcp
    https: BoundTcp
    smtp_handler: SmtpHandler
    https_handler: HttpsHandler
    conduct: DnsConduct

    def close(self) -> None:
        """Close every socket; the lab cannot be served again."""
        for sock in (self.dns.udp, self.dns.tcp, *self.smtp.sockets, *self.https.sockets):
            sock.close()


def bind_lab(
    world: World,
    workdir: Path,
    *,
    mint: CertificateMint | None = None,
    slow_interval: float = DEFAULT_SLOW_INTERVAL,
    latency: float = 0.0,
    http_clock: Callable[[], datetime] | None = None,
    dns_conduct: DnsConduct | None = None,
) -> BoundLab:
    """Bind every socket of `world`'s lab and write its files, without serving yet.

    The ports are known (`.lab`) before any event loop runs: a caller can then name
    them to a command and serve the lab inside that command's own `trio.run`
    (`serve_bound`). The parameters are `open_lab`'s. The caller closes it.
    """
    if latency < 0:
        raise ValueError(f"latency must not be negative, got {latency}")
    mint = mint or default_mint()
    ca_file = _write_ca_file(Path(workdir), mint)

    smtp_servers = {
        server.address: server
        for server in world.servers
        if server.behaviour is not SmtpBehaviour.CLOSED
    }
    hosts_by_address: dict[str, dict[str, PolicyHost]] = {}
    for host in world.policy_hosts:
        hosts_by_address.setdefault(host.address, {})[host.hostname] = host

    dns_sockets = bind_dns()
    dns_sockets.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DNS_RECEIVE_BUFFER)
    try:
        smtp_bound = bind_shared_port(list(smtp_servers), avoid={dns_sockets.port})
        try:
            https_bound = bind_shared_port(
                list(hosts_by_address), avoid={dns_sockets.port, smtp_bound.port}
            )
        except BaseException:
            for sock in smtp_bound.sockets:
                sock.close()
            raise
    except BaseException:
        dns_sockets.udp.close()
        dns_sockets.tcp.close()
        raise

    tree: ZoneTree | None = None
    try:
        if world.zones:
            # TLSA owners carry the SMTP port, known only now.
            tree = ZoneTree.build(world, smtp_port=smtp_bound.port, tlsa_data=tlsa_data_from(mint))
    except BaseException:
        for sock in (dns_sockets.udp, dns_sockets.tcp, *smtp_bound.sockets, *https_bound.sockets):
            sock.close()
        raise
    trust_anchor_file = None
    if tree is not None:
        trust_anchor_file = Path(workdir) / TRUST_ANCHOR_FILE_NAME
        trust_anchor_file.write_text(tree.trust_anchor() + "\n", encoding="ascii")
    conduct = dns_conduct or DnsConduct()
    if not conduct.tcp:
        dns_sockets.tcp.close()  # connections to the DNS port are refused
    responder = Responder(Zone(world, tree=tree), conduct)
    smtp_stats = ConnectionStats()
    https_stats = ConnectionStats()
    lab = Lab(
        world=world,
        resolver=("127.0.0.1", dns_sockets.port),
        smtp_port=smtp_bound.port,
        https_port=https_bound.port,
        ca_file=ca_file,
        smtp_stats=smtp_stats,
        https_stats=https_stats,
        dns=responder,
        trust_anchor_file=trust_anchor_file,
    )
    smtp_handler = SmtpHandler(
        smtp_servers, smtp_context_factory(mint), smtp_stats, latency=latency
    )
    https_handler = HttpsHandler(
        hosts_by_address,
        https_context_factory(mint, hosts_by_address),
        https_stats,
        slow_interval=slow_interval,
        latency=latency,
        **({"clock": http_clock} if http_clock is not None else {}),
    )
    return BoundLab(
        lab, latency, dns_sockets, smtp_bound, https_bound, smtp_handler, https_handler, conduct
    )


@asynccontextmanager
async def serve_bound(bound: BoundLab, *, once: bool = False) -> AsyncIterator[Lab]:
    """Serve a bound lab for the duration of the block, in the current event loop.

    It serves from duplicates of the bound sockets and closes only those, so the
    same `BoundLab` can be served again (by each `trio.run` of a command). With
    `once`, it serves the bound sockets themselves and closes them: half the open
    files, for a lab served only once (a large world's thousands of addresses).
    """
    responder = bound.lab.dns
    latency = bound.latency

    def served(sock: socket.socket) -> socket.socket:
        return sock if once else sock.dup()

    udp = trio.socket.from_stdlib_socket(served(bound.dns.udp))
    dns_tcp = (
        [trio.SocketListener(trio.socket.from_stdlib_socket(served(bound.dns.tcp)))]
        if bound.conduct.tcp
        else []
    )
    smtp_listeners = BoundTcp(
        bound.smtp.port, tuple(served(s) for s in bound.smtp.sockets)
    ).listeners()
    https_listeners = BoundTcp(
        bound.https.port, tuple(served(s) for s in bound.https.sockets)
    ).listeners()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_udp, udp, responder, latency)
            if dns_tcp:
                nursery.start_soon(trio.serve_listeners, TcpHandler(responder, latency), dns_tcp)
            if smtp_listeners:
                nursery.start_soon(trio.serve_listeners, bound.smtp_handler, smtp_listeners)
            if https_listeners:
                nursery.start_soon(trio.serve_listeners, bound.https_handler, https_listeners)
            try:
                yield bound.lab
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The servers never fail on their own; surface the caller's own exception as is.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        # Normally closed by the serving tasks already; closing twice is harmless.
        udp.close()
        for listener in (*dns_tcp, *smtp_listeners, *https_listeners):
            listener.socket.close()


@asynccontextmanager
async def open_lab(
    world: World,
    workdir: Path,
    *,
    mint: CertificateMint | None = None,
    slow_interval: float = DEFAULT_SLOW_INTERVAL,
    latency: float = 0.0,
    http_clock: Callable[[], datetime] | None = None,
    dns_conduct: DnsConduct | None = None,
) -> AsyncIterator[Lab]:
    """Serve `world` on loopback for the duration of the block.

    `workdir` receives the lab CA file. `mint` defaults to the process-wide
    one; `slow_interval` is the pause between body bytes of "slow" policy hosts.
    `latency` (seconds) is added to every round trip: each DNS reply, SMTP
    reply, HTTPS response and server TLS flight reaches the client that much
    later (`scanner.lab.latency`). `http_clock` is the policy hosts' clock, sent as
    `Date` (default: the real time). `dns_conduct` makes the DNS server a poor
    resolver: no TCP, no EDNS, a small UDP buffer (`scanner.lab.dns_server.DnsConduct`).
    Raises OSError when the lab addresses cannot be bound, ValueError for a negative
    latency.
    """
    bound = bind_lab(
        world,
        workdir,
        mint=mint,
        slow_interval=slow_interval,
        latency=latency,
        http_clock=http_clock,
        dns_conduct=dns_conduct,
    )
    try:
        async with serve_bound(bound, once=True) as lab:
            yield lab
    finally:
        bound.close()


async def serve_forever(
    world_path: Path | str,
    workdir: Path,
    *,
    on_ready: Callable[[Lab], None],
    latency: float = 0.0,
) -> None:
    """Load a world, serve it until cancelled, and call `on_ready` once it is listening.

    `latency` (seconds) is added to every round trip, as in `open_lab`.
    """
    world = load_world(world_path)
    async with open_lab(world, workdir, latency=latency) as lab:
        on_ready(lab)
        await trio.sleep_forever()


@contextmanager
def lab_in_thread(world: World, workdir: Path) -> Iterator[Lab]:
    """`world` served on loopback by a lab in a thread of its own, until the block ends.

    For a caller whose own `trio.run` needs the main thread (a command run in-process,
    a benchmark); the lab's failure to start is raised here, not lost in the thread.
    """
    started: list[tuple[Lab, trio.lowlevel.TrioToken, trio.Event]] = []
    ready = threading.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        stop = trio.Event()
        async with open_lab(world, workdir=workdir) as lab:
            started.append((lab, trio.lowlevel.current_trio_token(), stop))
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:  # raised again in the test's thread
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="lab", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        raise failure[0]
    lab, token, stop = started[0]
    try:
        yield lab
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join()
        if failure:
            raise failure[0]
