"""`scanner tlsrpt serve`: receive RFC 8460 reports POSTed over HTTP(S) into the database.

Theory of operation: trio accepts connections and moves bytes; h11 parses and
writes HTTP/1.1 (the library `scanner.net.policy_fetch` already uses as a client:
no new dependency, and the same bounded, sans-IO parsing); every decision is in
`intake`. One request per connection (`Connection: close`): senders POST one
report and go, and a shutdown never has an idle keep-alive connection to wait for.

No one sender stalls the others. Per connection, in order:

1. the global cap (`max_connections` in flight; more are answered 503, or over
   TLS closed before any handshake) and the cap per source (`max_per_source`,
   counted by `source_key`: an IPv6 peer by its /64; a trusted proxy is not
   counted itself, the address it forwards is, once the head is read);
2. under `head_timeout`, for plain HTTP and TLS alike: the TLS handshake and the
   request head, never more than `MAX_HEADER_BYTES` of it (complete or not), the
   rate limit of its source, the head checks;
3. under `request_timeout` (from the start): the body, counted as it arrives and
   refused at `max_compressed_bytes`;
4. parsing in a worker thread (`accept_body`, bounded by the limits; at most
   `max_parsing` at once, twice what one source may hold, so a good report's parse
   never waits behind one sender's), then storing;
5. the answer. An unexpected exception answers 500, is logged with the source,
   and costs that connection only.

Writes are serialised by `StoreWriter` (one lock; each write opens the database in
a worker thread, adds one report in one transaction and closes it; a write is
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
from dataclasses import dataclass, field
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
    SourceSlots,
    TokenBuckets,
    accept_body,
    allowed_domains,
    check_head,
    read_head,
    source_address,
    source_key,
    too_large_reason,
)
from scanner.received.limits import DEFAULT_LIMITS, ReceivedLimits
from scanner.received.records import AddOutcome, AddResult, Provenance
from scanner.received.report import ParsedReport
from scanner.received.store import DatabaseError, ReportStore
from scanner.signals import STOP_SIGNALS
from scanner.untrusted import visible

SERVER_HEADER: Final = f"scanner/{__version__} (TLS-RPT receiver)".encode("ascii")
MAX_HEADER_BYTES: Final = 16 * 1024  # request line and header fields, complete or not
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
    connections in flight at once; `max_per_source`: of them, from one source
    (`source_key`); more are answered 503. `head_timeout`: seconds for the TLS
    handshake and the request head; `request_timeout`: for all of the request.
    `max_parsing`: bodies parsed at once (each costs up to the limits' bytes).
    """

    allowed_domains: frozenset[str]
    limits: ReceivedLimits = DEFAULT_LIMITS
    destinations: frozenset[str] = frozenset()
    trusted_proxies: frozenset[str] = frozenset()
    head_timeout: float = 10.0
    request_timeout: float = 30.0
    shutdown_grace: float = 5.0
    max_connections: int = 256
    max_per_source: int = 8
    max_parsing: int = 16
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


@dataclass(slots=True)
class _ConnectionState:
    """The per-source slots one connection holds (the peer's, then a forwarded source's),
    and whether its TLS handshake completed (so that it can be answered)."""

    keys: list[str] = field(default_factory=list)
    handshaken: bool = False


REFUSED_BUSY: Final = Reply(503, "too many connections; try again later", retry_after=60)
REFUSED_SOURCE: Final = Reply(
    503, "too many connections from this address at once; try again later", retry_after=60
)
FAILED: Final = Reply(500, "the receiver failed on this request; send it again later")


class Receiver:
    """The shared state of one running receiver: settings, limits, the writer, the log."""

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
        self.sources = SourceSlots(settings.max_per_source)
        self.parsing = trio.CapacityLimiter(settings.max_parsing)

    # ------------------------------------------------------------ one connection

    async def handle(self, tcp: trio.SocketStream) -> None:
        """Serve one connection; whatever it does, the receiver goes on."""
        peer = _peer(tcp)
        try:
            await self._handle(tcp, peer)
        except Exception as exc:  # a bug outside a request (its answer is sent already)
            self.log(ServeEvent(peer, 500, f"{type(exc).__name__}: {visible(str(exc), 300)}"))

    async def _handle(self, tcp: trio.SocketStream, peer: str) -> None:
        stream: trio.abc.Stream = tcp
        state = _ConnectionState()
        try:
            try:
                self.connections.acquire_on_behalf_of_nowait(tcp)
            except trio.WouldBlock:
                await self._refuse(tcp, REFUSED_BUSY, peer)
                return
            try:
                proxied = peer in self.settings.trusted_proxies
                if not proxied and not self._take_slot(source_key(peer), state):
                    await self._refuse(tcp, REFUSED_SOURCE, peer)
                    return
                if self.tls is not None:
                    stream = trio.SSLStream(tcp, self.tls, server_side=True)
                await self._serve_one(stream, peer, state)
            finally:
                for key in state.keys:
                    self.sources.give_back(key)
                self.connections.release_on_behalf_of(tcp)
        finally:
            await trio.aclose_forcefully(stream)

    def _take_slot(self, key: str, state: _ConnectionState) -> bool:
        if not self.sources.take(key):
            return False
        state.keys.append(key)
        return True

    async def _refuse(self, tcp: trio.SocketStream, reply: Reply, peer: str) -> None:
        """A connection refused before anything is read: 503 over plain HTTP; over TLS
        closed at once (no handshake spent on a connection refused anyway)."""
        if self.tls is not None:
            self.log(ServeEvent(peer, reply.status, reply.reason + " (closed before TLS)"))
            return
        await self._answer(tcp, h11.Connection(h11.SERVER), reply, peer)

    async def _serve_one(self, stream: trio.abc.Stream, peer: str, state: _ConnectionState) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        source = peer
        try:
            request: _Request | Reply | None = None
            started = trio.current_time()
            with trio.CancelScope(deadline=started + self.settings.head_timeout) as deadline:
                request = await self._read_request(
                    stream, connection, peer, state, deadline, started
                )
            if deadline.cancelled_caught:
                request = self._late(connection, state)
            if request is None:
                return  # the client went away (or never finished TLS): nobody to answer
            if isinstance(request, Reply):
                await self._answer(stream, connection, request, peer)
                return
            source = request.source
            reply = await self._store(request, peer)
            await self._answer(stream, connection, reply, source)
        except Exception as exc:  # a bug one request found: that connection only
            detail = f"{FAILED.reason} ({type(exc).__name__}: {visible(str(exc), 300)})"
            await self._answer(stream, connection, FAILED, source, detail=detail)

    def _late(self, connection: h11.Connection, state: _ConnectionState) -> Reply | None:
        """What a request that ran out of time is told (nothing, when TLS never started)."""
        if self.tls is not None and not state.handshaken:
            return None
        if connection.their_state is h11.IDLE:
            return Reply(408, f"the request head took longer than {self.settings.head_timeout:g} s")
        return Reply(408, f"the request took longer than {self.settings.request_timeout:g} s")

    async def _receive(self, stream: trio.abc.Stream, size: int = RECEIVE_SIZE) -> bytes | None:
        try:
            return bytes(await stream.receive_some(size))
        except (trio.BrokenResourceError, OSError):
            return None

    async def _read_request(
        self,
        stream: trio.abc.Stream,
        connection: h11.Connection,
        peer: str,
        state: _ConnectionState,
        deadline: trio.CancelScope,
        started: float,
    ) -> _Request | Reply | None:
        limits = self.settings.limits
        head: Head | None = None
        kind: MediaType | None = None
        source = peer
        body = bytearray()
        head_bytes = 0  # received before the head was complete
        if isinstance(stream, trio.SSLStream):
            try:
                await stream.do_handshake()
            except (trio.BrokenResourceError, OSError):
                return None
            state.handshaken = True
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                return Reply(exc.error_status_hint, f"not an HTTP/1.1 request we can read: {exc}")
            if event is h11.NEED_DATA:
                # Before the head is complete, never more than MAX_HEADER_BYTES + 1 bytes
                # (h11 refuses an incomplete head over the limit, we a complete one).
                size = (
                    RECEIVE_SIZE if head is not None else max(1, MAX_HEADER_BYTES + 1 - head_bytes)
                )
                data = await self._receive(stream, size)
                if data is None:
                    return None
                if head is None:
                    head_bytes += len(data)
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                deadline.deadline = started + self.settings.request_timeout
                unread, _ = connection.trailing_data
                decided = self._decide_head(event, head_bytes - len(unread), peer, state)
                if isinstance(decided, Reply):
                    return decided
                head, kind, source = decided
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

    def _decide_head(
        self, event: h11.Request, size: int, peer: str, state: _ConnectionState
    ) -> tuple[Head, MediaType, str] | Reply:
        """The head, its media type and the source, or the refusal, before any body is read."""
        if size > MAX_HEADER_BYTES:
            return Reply(431, f"the request head is over {MAX_HEADER_BYTES} bytes; no report's is")
        proxied = peer in self.settings.trusted_proxies
        source = source_address(peer, event.headers, self.settings.trusted_proxies)
        if proxied and not self._take_slot(source_key(source), state):
            return REFUSED_SOURCE
        wait = self.buckets.take(source_key(source), trio.current_time())
        if wait > 0:
            return Reply(
                429,
                "too many reports from this address; slow down",
                retry_after=max(1, round(wait + 0.5)),
            )
        head = read_head(event.method, event.target, event.headers)
        if isinstance(head, Reply):
            return head
        kind = check_head(head, self.settings.limits)
        if isinstance(kind, Reply):
            return kind
        return head, kind, source

    async def _store(self, request: _Request, peer: str) -> Reply:
        settings = self.settings
        accepted = await trio.to_thread.run_sync(
            accept_body,
            request.kind,
            request.body,
            settings.allowed_domains,
            settings.limits,
            limiter=self.parsing,
        )
        if isinstance(accepted, Reply):
            return accepted
        return await self._add(accepted, request, peer)

    async def _add(self, accepted: Accepted, request: _Request, peer: str) -> Reply:
        report = accepted.parsed.report
        origin = f"https POST from {request.source}" + (
            f" via {peer}" if peer != request.source else ""
        )
        provenance = Provenance(
            HTTPS_RECEIVED,
            origin,
            destinations=self.settings.destinations,
            source=source_key(request.source),
        )
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
        self,
        stream: trio.abc.Stream,
        connection: h11.Connection,
        reply: Reply,
        source: str,
        *,
        detail: str | None = None,
    ) -> None:
        """Log the outcome (`detail`, for the operator, or the reason) and send `reply`."""
        self.log(ServeEvent(source, reply.status, detail or reply.reason))
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
        if connection.their_state not in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            await self._linger(stream)  # only a client refused before it finished sending

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
