"""`scanner tlsrpt serve`: receive RFC 8460 reports POSTed over HTTP(S) into the database.

Theory of operation: trio accepts connections and moves bytes; h11 parses and
writes HTTP/1.1 (the library `scanner.net.policy_fetch` already uses as a client:
no new dependency, and the same bounded, sans-IO parsing: a header block above
`MAX_HEADER_BYTES` is refused by h11 itself); every decision is in `intake`.
One request per connection (`Connection: close`): senders POST one report and
go, and a shutdown never has an idle keep-alive connection to wait for.

Per connection, under one deadline (`ServeSettings.request_timeout`): the TLS
handshake (with a certificate), the request head, the rate limit of its
source, the head checks, then the body, counted as it arrives and refused at
`max_compressed_bytes`. Outside the deadline: parsing and storing. Writes are
serialised by `StoreWriter` (one lock; each write opens the database in a
worker thread, adds one report in one transaction and closes it; a write is
never abandoned, so a shutdown waits for it). The reply is 200 only once
`ReportStore.add` has committed.

Shutdown (`stop` set, by SIGINT or SIGTERM in the CLI): the listeners close at
once (no new connection), connections in flight get `shutdown_grace` seconds
to finish, then are cancelled.
"""

from __future__ import annotations

import errno
import ipaddress
import sqlite3
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import h11
import trio
from rich.text import Text

from scanner import __version__
from scanner.received.authenticity import HTTPS_RECEIVED
from scanner.received.intake import (
    Accepted,
    Head,
    MediaType,
    Reply,
    TokenBuckets,
    accept_body,
    allowed_domains,
    check_head,
    read_head,
    source_address,
    too_large_reason,
)
from scanner.received.limits import DEFAULT_LIMITS, ReceivedLimits
from scanner.received.records import AddOutcome, AddResult, Provenance
from scanner.received.report import ParsedReport
from scanner.received.store import DatabaseError, ReportStore
from scanner.signals import STOP_SIGNALS

SERVER_HEADER: Final = f"scanner/{__version__} (TLS-RPT receiver)".encode("ascii")
MAX_HEADER_BYTES: Final = 16 * 1024  # request line and header fields
RECEIVE_SIZE: Final = 65536
LINGER_SECONDS: Final = 1.0  # reading what a refused client still sends, before closing
LINGER_BYTES: Final = 256 * 1024
SEND_TIMEOUT: Final = 10.0
RETENTION_INTERVAL: Final = 24 * 3600.0
# The accept errors that mean "out of descriptors or memory for now" (trio's serve_listeners).
ACCEPT_CAPACITY_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_PAUSE: Final = 0.1


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Bounds and choices of the receiver (the CLI's defaults are these).

    `rate` and `burst`: a source may POST `burst` reports at once, then one per
    `1 / rate` seconds (default: 30 at once, then 1 every 6 s). `max_connections`:
    connections in flight at once; more are answered 503.
    """

    allowed_domains: frozenset[str]
    limits: ReceivedLimits = DEFAULT_LIMITS
    destinations: frozenset[str] = frozenset()
    trusted_proxies: frozenset[str] = frozenset()
    request_timeout: float = 30.0
    shutdown_grace: float = 5.0
    max_connections: int = 64
    rate: float = 1 / 6
    burst: int = 30


@dataclass(frozen=True, slots=True)
class ServeEvent:
    """One request's outcome, for the log (`source` and `detail` may quote strangers)."""

    source: str
    status: int
    detail: str


class StoreWriter:
    """Serialised writes to the report database, each in a worker thread.

    The store's connection is opened and closed inside the thread of each write,
    so no SQLite connection crosses threads; the lock keeps one write at a time
    (SQLite's own busy timeout covers other processes, such as an import).
    """

    def __init__(self, database: Path, now: Callable[[], datetime]) -> None:
        self.database = database
        self.now = now
        self._lock = trio.Lock()

    def _add(self, parsed: ParsedReport, provenance: Provenance) -> AddOutcome:
        with ReportStore.open(self.database) as store:
            return store.add(parsed, provenance, self.now())

    def _purge(self, keep_days: int) -> int:
        with ReportStore.open(self.database) as store:
            return store.delete_ended_before(self.now() - timedelta(days=keep_days))

    async def add(self, parsed: ParsedReport, provenance: Provenance) -> AddOutcome:
        async with self._lock:
            return await trio.to_thread.run_sync(self._add, parsed, provenance)

    async def purge(self, keep_days: int) -> int:
        async with self._lock:
            return await trio.to_thread.run_sync(self._purge, keep_days)


@dataclass(frozen=True, slots=True)
class _Request:
    head: Head
    kind: MediaType
    source: str
    body: bytes


class Receiver:
    """The shared state of one running receiver: settings, rate limits, the writer, the log."""

    def __init__(
        self,
        settings: ServeSettings,
        writer: StoreWriter,
        log: Callable[[ServeEvent], None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.log = log
        self.tls = tls
        self.buckets = TokenBuckets(settings.rate, settings.burst)
        self.connections = trio.CapacityLimiter(settings.max_connections)

    # ------------------------------------------------------------ one connection

    async def handle(self, tcp: trio.SocketStream) -> None:
        peer = _peer(tcp)
        stream: trio.abc.Stream = tcp
        try:
            try:
                self.connections.acquire_on_behalf_of_nowait(tcp)
            except trio.WouldBlock:
                if self.tls is not None:
                    return  # no handshake spent on a connection we refuse anyway
                await self._answer(
                    stream,
                    h11.Connection(h11.SERVER),
                    Reply(503, "too many connections; try again later", retry_after=60),
                    peer,
                )
                return
            try:
                if self.tls is not None:
                    stream = trio.SSLStream(tcp, self.tls, server_side=True)
                await self._serve_one(stream, peer)
            finally:
                self.connections.release_on_behalf_of(tcp)
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_one(self, stream: trio.abc.Stream, peer: str) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        request: _Request | Reply | None = None
        with trio.move_on_after(self.settings.request_timeout) as deadline:
            request = await self._read_request(stream, connection, peer)
        if deadline.cancelled_caught:
            request = Reply(
                408, f"the request took longer than {self.settings.request_timeout:g} s"
            )
        if request is None:
            return  # the client went away (or the TLS handshake failed): nobody to answer
        if isinstance(request, Reply):
            await self._answer(stream, connection, request, peer)
            return
        reply = await self._store(request, peer)
        await self._answer(stream, connection, reply, request.source)

    async def _receive(self, stream: trio.abc.Stream) -> bytes | None:
        try:
            return bytes(await stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, OSError):
            return None

    async def _read_request(
        self, stream: trio.abc.Stream, connection: h11.Connection, peer: str
    ) -> _Request | Reply | None:
        limits = self.settings.limits
        head: Head | None = None
        kind: MediaType | None = None
        source = peer
        body = bytearray()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                return Reply(exc.error_status_hint, f"not an HTTP/1.1 request we can read: {exc}")
            if event is h11.NEED_DATA:
                data = await self._receive(stream)
                if data is None:
                    return None
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                source = source_address(peer, event.headers, self.settings.trusted_proxies)
                wait = self.buckets.take(source, trio.current_time())
                if wait > 0:
                    return Reply(
                        429,
                        "too many reports from this address; slow down",
                        retry_after=max(1, round(wait + 0.5)),
                    )
                read = read_head(event.method, event.target, event.headers)
                if isinstance(read, Reply):
                    return read
                head = read
                checked = check_head(head, limits)
                if isinstance(checked, Reply):
                    return checked
                kind = checked
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > limits.max_compressed_bytes:
                    return Reply(413, too_large_reason(None, limits))
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                assert kind is not None
                return _Request(head, kind, source, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _store(self, request: _Request, peer: str) -> Reply:
        accepted = accept_body(
            request.kind, request.body, self.settings.allowed_domains, self.settings.limits
        )
        if isinstance(accepted, Reply):
            return accepted
        return await self._add(accepted, request, peer)

    async def _add(self, accepted: Accepted, request: _Request, peer: str) -> Reply:
        report = accepted.parsed.report
        origin = f"https POST from {request.source}" + (
            f" via {peer}" if peer != request.source else ""
        )
        provenance = Provenance(HTTPS_RECEIVED, origin, destinations=self.settings.destinations)
        try:
            outcome = await self.writer.add(accepted.parsed, provenance)
        except (DatabaseError, OSError, sqlite3.Error) as exc:
            return Reply(
                503,
                f"the report could not be stored now ({exc}); send it again later",
                retry_after=300,
            )
        said = {
            AddResult.IMPORTED: "stored",
            AddResult.DUPLICATE: "already stored",
            AddResult.CONFLICT: "stored as a conflicting copy",
        }[outcome.result]
        return Reply(200, f"{said}: report {report.report_id} of {report.organization_name}")

    async def _answer(
        self, stream: trio.abc.Stream, connection: h11.Connection, reply: Reply, source: str
    ) -> None:
        self.log(ServeEvent(source, reply.status, reply.reason))
        body = (reply.reason + "\n").encode("utf-8", "backslashreplace")
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
            (b"server", SERVER_HEADER),
        ]
        if reply.retry_after is not None:
            headers.append((b"retry-after", str(reply.retry_after).encode("ascii")))
        if reply.allow is not None:
            headers.append((b"allow", reply.allow.encode("ascii")))
        if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            data = connection.send(h11.Response(status_code=reply.status, headers=headers))
            data += connection.send(h11.Data(data=body)) or b""
            data += connection.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return
        with trio.move_on_after(SEND_TIMEOUT):
            try:
                assert data is not None
                await stream.send_all(data)
            except (trio.BrokenResourceError, OSError):
                return
        if connection.their_state is not h11.DONE:
            await self._linger(stream)

    async def _linger(self, stream: trio.abc.Stream) -> None:
        """Read (and drop) what a refused client still sends, briefly, so that closing
        with unread data does not reset the connection before it reads our answer."""
        drained = 0
        with trio.move_on_after(LINGER_SECONDS):
            while drained < LINGER_BYTES:
                data = await self._receive(stream)
                if not data:
                    return
                drained += len(data)


def _peer(stream: trio.SocketStream) -> str:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "unknown"
    return str(address[0]) if isinstance(address, tuple) else str(address)


async def _accept_loop(
    listener: trio.SocketListener, receiver: Receiver, connections: trio.Nursery
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno in ACCEPT_CAPACITY_ERRORS:
                await trio.sleep(ACCEPT_PAUSE)
                continue
            raise
        connections.start_soon(receiver.handle, stream)


async def serve_reports(
    receiver: Receiver,
    listeners: Sequence[trio.SocketListener],
    stop: trio.Event,
) -> None:
    """Accept on `listeners` until `stop` is set; then close them, give the connections in
    flight `shutdown_grace` seconds, and cancel what is left."""
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as acceptors:
            for listener in listeners:
                acceptors.start_soon(_accept_loop, listener, receiver, connections)
            await stop.wait()
            acceptors.cancel_scope.cancel()
        for listener in listeners:
            await listener.aclose()
        connections.cancel_scope.deadline = trio.current_time() + receiver.settings.shutdown_grace


async def retention_loop(
    writer: StoreWriter,
    keep_days: int,
    on_purge: Callable[[int], None],
    interval: float = RETENTION_INTERVAL,
) -> None:
    """Delete reports that ended more than `keep_days` ago now, then every `interval` seconds."""
    while True:
        on_purge(await writer.purge(keep_days))
        await trio.sleep(interval)


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT`; ValueError with the reason."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"--listen {text!r}: give HOST:PORT (e.g. 127.0.0.1:8443)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--listen {text!r}: the port is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--listen {text!r}: the port must be 0 to 65535")
    return host, port


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2 or later) with the given certificate chain and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    return context


# ---------------------------------------------------------------- the command


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _checked_options(
    listen: str,
    domains: Sequence[str],
    tls_cert: Path | None,
    tls_key: Path | None,
    database: Path,
    trusted_proxies: Sequence[str],
    fail: Callable[[str], BaseException],
) -> tuple[str, int, ssl.SSLContext | None, frozenset[str], set[str]]:
    """The options of `serve`, checked (a usage error via `fail` otherwise)."""
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if (tls_cert is None) != (tls_key is None):
        raise fail("give both --tls-cert and --tls-key, or neither")
    tls: ssl.SSLContext | None = None
    if tls_cert is not None and tls_key is not None:
        try:
            tls = server_tls_context(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise fail(f"cannot use --tls-cert {tls_cert} / --tls-key {tls_key}: {exc}") from None
    elif not _is_loopback(host):
        raise fail(
            "plain HTTP only on a loopback address (behind a reverse proxy that terminates TLS); "
            "give --tls-cert and --tls-key to listen elsewhere"
        )
    allowed = allowed_domains(domains)
    if not allowed or "" in allowed:
        raise fail("give --domain with the policy domains whose reports are accepted")
    proxies: set[str] = set()
    for proxy in trusted_proxies:
        try:
            proxies.add(str(ipaddress.ip_address(proxy)))
        except ValueError:
            raise fail(f"--trusted-proxy {proxy!r} is not an IP address") from None
    try:  # usable now, not at the first report
        ReportStore.open(database).close()
    except DatabaseError as exc:
        raise fail(str(exc)) from None
    return host, port, tls, allowed, proxies


def run_serve(
    *,
    listen: str,
    domains: Sequence[str],
    tls_cert: Path | None,
    tls_key: Path | None,
    database: Path,
    keep_days: int | None,
    destinations: Sequence[str],
    trusted_proxies: Sequence[str],
    rate_per_minute: float,
    burst: int,
    fail: Callable[[str], BaseException],
) -> int:
    """`scanner tlsrpt serve`: check the options, build the real dependencies, serve until a signal.

    `fail(message)` gives the usage error to raise. Returns the exit status (0 after a
    SIGINT or SIGTERM shutdown).
    """
    from scanner.received.evidence import normalise_destination
    from scanner.render import output_console
    from scanner.untrusted import line

    host, port, tls, allowed, proxies = _checked_options(
        listen, domains, tls_cert, tls_key, database, trusted_proxies, fail
    )
    settings = ServeSettings(
        allowed_domains=allowed,
        destinations=frozenset(normalise_destination(uri) for uri in destinations),
        trusted_proxies=frozenset(proxies),
        rate=rate_per_minute / 60.0,
        burst=burst,
    )
    stderr = output_console(stderr=True)

    def log(event: ServeEvent) -> None:
        stderr.print(
            line(event.source, Text(f" {event.status} ", style="bold"), event.detail, limit=600)
        )

    def purged(count: int) -> None:
        if count:
            stderr.print(
                Text(
                    f"retention: deleted {count} reports that ended more than {keep_days} days ago"
                )
            )

    receiver = Receiver(settings, StoreWriter(database, lambda: datetime.now(UTC)), log, tls)

    async def main() -> None:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise fail(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        stop = trio.Event()
        scheme = "https" if tls is not None else "http"
        for listener in listeners:
            bound = listener.socket.getsockname()
            shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
            stderr.print(
                line(
                    Text(f"listening on {scheme}://{shown}:{bound[1]}/ for "),
                    ", ".join(sorted(allowed)),
                    Text(" into "),
                    str(database),
                ),
                soft_wrap=True,
            )
        async with trio.open_nursery() as nursery:

            async def on_signals() -> None:
                with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
                    async for _ in signals:
                        stderr.print(
                            Text("stopping: no new connections; finishing those in flight")
                        )
                        stop.set()
                        return

            nursery.start_soon(on_signals)
            if keep_days is not None:
                nursery.start_soon(retention_loop, receiver.writer, keep_days, purged)
            await serve_reports(receiver, listeners, stop)
            nursery.cancel_scope.cancel()
        stderr.print(Text("stopped"))

    trio.run(main)
    return 0
