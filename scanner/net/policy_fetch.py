"""Fetch and validate a domain's MTA-STS policy over HTTPS (RFC 8461 §3.3, §7.1).

Theory of operation: `fetch_policy` resolves `mta-sts.<domain>`, connects to
its addresses in order (A, then AAAA) until one accepts, runs the TLS
handshake with SNI through `scanner.net.tls`, checks the certificate against
the trust store and the name *before* sending anything, then speaks HTTP/1.1
through h11: one GET of the fixed well-known path with `Connection: close`,
no cache and no conditional headers. Only a 200 with a `text/plain` body of at
most `max_body` bytes goes on to `scanner.core.sts.parse_policy`.

Every expected failure (DNS, refused or disallowed address, timeout, TLS,
certificate, HTTP status, size, media type, syntax) comes back as a
`PolicyFetch` whose `failure` carries one of the three sts-* result types and a
detail an operator can act on. Each network step has its own deadline
(`FetchSettings.timeout`), held here: the connect to each address with
`trio.move_on_after`, the steps over the connection (handshake, request and
response headers, body) by one cancel scope whose deadline each step moves. The
DNS lookup of the policy host is the exception: the resolver holds its deadline
(it starts when the lookup is sent, not while it waits for a slot). Cancellation
from outside is never swallowed.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import h11
import trio
from OpenSSL import SSL

from scanner import __version__
from scanner.core.codes import PolicyCode
from scanner.core.policy_response import (
    POLICY_PATH,
    certificate_failure,
    decode_body,
    fetch_error,
    head_failure,
    oversized_body,
    policy_of,
)
from scanner.core.reasons import reason_text
from scanner.models import (
    AddressAnswer,
    CertificateCheck,
    DnsStatus,
    InterruptionKind,
    Policy,
    PolicyFailure,
    PolicyFetch,
    ResultType,
)
from scanner.net.connect import TcpStream, connect_tcp
from scanner.net.gate import REFUSED_EXCLUDED, ConnectionGate
from scanner.net.tls import TlsClient, TlsFailure

USER_AGENT = f"scanner/{__version__} (MTA-STS policy check)"
RECEIVE_SIZE = 16384
MAX_RESPONSE_HEADERS = 16384
# Bytes read before the final response's headers end, interim (1xx) responses included
# (and the start of the body that came with them): a flood of `100 Continue` costs no
# more than one large header block.
MAX_BEFORE_RESPONSE = MAX_RESPONSE_HEADERS + 2 * RECEIVE_SIZE
# Bytes read for a body, per byte of the body cap: the body and its chunk sizes,
# extensions and trailers. A policy in one-byte chunks takes 6 bytes per byte; endless
# chunk extensions around one-byte chunks would keep a core parsing until the deadline.
BODY_WIRE_FACTOR = 8


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """Limits of one policy fetch.

    `timeout` bounds each network step (connect, TLS handshake, response
    headers) and, separately, the whole body. RFC 8461 §3.3 suggests a 64 KiB
    body cap (`max_body`).
    """

    https_port: int = 443
    timeout: float = 10.0
    max_body: int = 65536


class AddressResolver(Protocol):
    """What the fetch needs from `scanner.net.resolver.Resolver`."""

    async def addresses(self, name: str) -> tuple[AddressAnswer, AddressAnswer]: ...


# Errors of an established stream (TCP or TLS) that mean "the peer went away
# or broke the protocol"; mapped to fetch errors once, here.
STREAM_ERRORS: tuple[type[BaseException], ...] = (trio.BrokenResourceError, OSError, SSL.Error)


def policy_host(domain: str) -> str:
    """RFC 8461 §1.1: the Policy Host is `mta-sts.` + the Policy Domain."""
    return f"mta-sts.{domain}"


def _fetch_error(code: PolicyCode, detail: str, ip: str | None = None) -> PolicyFetch:
    return PolicyFetch(policy=None, failure=fetch_error(code, detail), ip=ip)


async def fetch_policy(
    domain: str,
    *,
    resolver: AddressResolver,
    tls: TlsClient,
    settings: FetchSettings,
    now: datetime,
    gate: ConnectionGate,
) -> PolicyFetch:
    """Fetch `https://mta-sts.<domain>/.well-known/mta-sts.txt` and parse it.

    `domain` is an A-label without trailing dot. `now` is the instant the
    certificate must be valid at. `gate` decides which addresses may be
    contacted and holds a per-address slot for the connection. Never
    raises for a network or content problem; returns a `PolicyFetch` with
    exactly one of policy and failure set.
    """
    host = policy_host(domain)
    if gate.name_refusal(host) is not None:
        return _fetch_error(
            PolicyCode.NOT_CONTACTED,
            f"policy host {host} is listed in --exclude; it was not contacted",
        )
    addresses = await _resolve(host, resolver)
    if isinstance(addresses, PolicyFetch):
        return addresses
    async with AsyncExitStack() as held:
        connected = await _connect(host, addresses, settings, gate, held)
        if isinstance(connected, PolicyFetch):
            return connected
        ip, tcp_stream = connected
        try:
            return await _fetch_over(host, ip, tcp_stream, tls, settings, now)
        finally:
            tcp_stream.close()


# ---------------------------------------------------------------- DNS and connect


def _dns_problem(host: str, a: AddressAnswer, aaaa: AddressAnswer) -> str:
    statuses = {a.status, aaaa.status}
    if DnsStatus.NXDOMAIN in statuses:
        return f"policy host {host} does not exist in DNS (NXDOMAIN); publish an A or AAAA record for it"
    if statuses == {DnsStatus.NODATA}:
        return f"policy host {host} has no A or AAAA record (NODATA)"
    if DnsStatus.TIMEOUT in statuses:
        return f"DNS lookup of policy host {host} timed out"
    if DnsStatus.SERVFAIL in statuses:
        return f"DNS lookup of policy host {host} failed (SERVFAIL); check its zone's name servers"
    parts = [
        f"{kind} {answer.status.value}" + (f" ({answer.detail})" if answer.detail else "")
        for kind, answer in (("A", a), ("AAAA", aaaa))
    ]
    return f"DNS lookup of policy host {host} gave no address: {'; '.join(parts)}"


async def _resolve(host: str, resolver: AddressResolver) -> tuple[str, ...] | PolicyFetch:
    # No deadline of its own here: the resolver holds each lookup's, from the moment
    # the lookup gets a slot. A deadline around the call would also count the wait
    # for a slot, which is the scanner's own queue and not the DNS being slow: under
    # full load that wrote "timed out" for policy hosts whose DNS answered at once.
    a, aaaa = await resolver.addresses(host)
    found = a.addresses + aaaa.addresses
    if found:
        return found
    return _fetch_error(PolicyCode.DNS, _dns_problem(host, a, aaaa))


async def _connect(
    host: str,
    addresses: Sequence[str],
    settings: FetchSettings,
    gate: ConnectionGate,
    held: AsyncExitStack,
) -> tuple[str, TcpStream] | PolicyFetch:
    """Connect to the first address that accepts; say what happened to each one otherwise.

    The gate's slot for the address that connects stays held (on `held`) until
    the fetch is over; slots of addresses that failed are released at once.
    """
    problems: list[str] = []
    refused_by_guard: list[str] = []
    excluded: list[str] = []
    for ip in addresses:
        refusal = gate.admit(ip)
        if refusal == REFUSED_EXCLUDED:
            excluded.append(ip)
            continue
        if refusal is not None and refusal.kind is InterruptionKind.OVER_LIMIT:
            problems.append(f"{ip}: not contacted, {reason_text(refusal)}")
            continue
        if refusal is not None:
            refused_by_guard.append(ip)
            continue
        async with AsyncExitStack() as attempt:
            await attempt.enter_async_context(gate.slot(ip))
            with trio.move_on_after(settings.timeout):
                try:
                    stream = await connect_tcp(ip, settings.https_port)
                except OSError as error:
                    problems.append(f"{ip}: {_connect_error(error)}")
                    continue
                held.push_async_exit(attempt.pop_all())  # the slot stays held with the stream
                return ip, stream
            problems.append(f"{ip}: connect timed out after {settings.timeout:g} s")
    if excluded and not problems and not refused_by_guard:
        return _fetch_error(
            PolicyCode.NOT_CONTACTED,
            f"policy host {host} resolves only to addresses listed in --exclude "
            f"({', '.join(excluded)}); it was not contacted",
            ip=excluded[0],
        )
    refused_by_guard += excluded
    if refused_by_guard and not problems:
        return _fetch_error(
            PolicyCode.NOT_CONTACTED,
            f"policy host {host} resolves only to addresses the scanner may not contact "
            f"({', '.join(refused_by_guard)}: loopback, private or reserved); "
            "use --allow-private for a lab",
            ip=refused_by_guard[0],
        )
    skipped = f" (not contacted: {', '.join(refused_by_guard)})" if refused_by_guard else ""
    return _fetch_error(
        PolicyCode.CONNECT,
        f"could not connect to policy host {host} port {settings.https_port}: "
        f"{'; '.join(problems)}{skipped}",
        ip=addresses[0] if len(addresses) == 1 else None,
    )


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ECONNRESET: "connection reset",
}


def _connect_error(error: OSError) -> str:
    """Name a connect failure by its errno."""
    if error.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[error.errno]
    return f"connect failed ({error})"


# ---------------------------------------------------------------- TLS, certificate, HTTP


@dataclass(slots=True)
class _Fetched:
    """What the fetch over one connection has learnt so far, kept in place, and its deadline.

    `deadline` is the cancel scope of the steps over the connection; each step moves
    it (`begin`) and says what the fetch failed to do when it passes (`late`).
    """

    ip: str
    certificate: CertificateCheck | None = None
    http_status: int | None = None
    content_type: str | None = None
    location: str | None = None
    text: str | None = None
    deadline: trio.CancelScope = field(default_factory=trio.CancelScope)
    late: tuple[PolicyCode, str] = (PolicyCode.TLS_HANDSHAKE, "")

    def begin(self, seconds: float, code: PolicyCode, late: str) -> None:
        """A step begins: it must end within `seconds`, or the fetch fails with `code`, `late`."""
        self.deadline.deadline = trio.current_time() + seconds
        self.late = (code, late)

    def ended(
        self, *, policy: Policy | None = None, failure: PolicyFailure | None = None
    ) -> PolicyFetch:
        return PolicyFetch(
            policy=policy,
            failure=failure,
            ip=self.ip,
            http_status=self.http_status,
            content_type=self.content_type,
            location=self.location,
            text=self.text,
            certificate=self.certificate,
        )

    def failed(self, code: PolicyCode, detail: str) -> PolicyFetch:
        """A `sts-policy-fetch-error` after the facts so far."""
        return self.ended(failure=fetch_error(code, detail))


async def _fetch_over(
    host: str,
    ip: str,
    tcp_stream: TcpStream,
    tls: TlsClient,
    settings: FetchSettings,
    now: datetime,
) -> PolicyFetch:
    fetched = _Fetched(ip)
    with fetched.deadline:
        return await _fetch_steps(host, tcp_stream, tls, settings, now, fetched)
    return fetched.failed(*fetched.late)


async def _fetch_steps(
    host: str,
    tcp_stream: TcpStream,
    tls: TlsClient,
    settings: FetchSettings,
    now: datetime,
    fetched: _Fetched,
) -> PolicyFetch:
    where = f"policy host {host} ({fetched.ip})"

    # RFC 8461 §7.1: SNI is the policy host name.
    fetched.begin(
        settings.timeout,
        PolicyCode.TLS_HANDSHAKE,
        f"TLS handshake with {where} timed out after {settings.timeout:g} s",
    )
    tls_stream = await tls.start(tcp_stream, host)
    if isinstance(tls_stream, TlsFailure):
        return fetched.failed(
            PolicyCode.TLS_HANDSHAKE, f"TLS handshake with {where} failed: {tls_stream.reason}"
        )
    # No close_notify at the end: the caller closes the TCP stream under the TLS one
    # (the request said "Connection: close"), which ends the fetch either way.
    # RFC 8461 §3.3: the certificate must be valid for the policy host, checked
    # before any request is sent.
    session = tls_stream.session()
    if session.leaf is None:
        failure = PolicyFailure(
            ResultType.STS_WEBPKI_INVALID,
            f"{where} presented no certificate",
            PolicyCode.WEBPKI_NO_CERTIFICATE,
        )
        return fetched.ended(failure=failure)
    check = tls.check(session, host, now, presented=tls_stream.presented_chain())
    fetched.certificate = check
    problem = certificate_failure(where, host, check)
    if problem is not None:
        return fetched.ended(failure=problem)
    return await _http_get(host, where, tls_stream, settings, fetched)


def _request_bytes(connection: h11.Connection, host: str) -> bytes:
    # RFC 8461 §3.3: GET of the fixed path; no HTTP cache (RFC 7234) and so no
    # conditional request headers.
    request = h11.Request(
        method="GET",
        target=POLICY_PATH,
        headers=[
            ("Host", host),
            ("User-Agent", USER_AGENT),
            ("Accept", "text/plain"),
            ("Cache-Control", "no-cache"),
            ("Connection", "close"),
        ],
    )
    return connection.send(request) + (connection.send(h11.EndOfMessage()) or b"")


def _header(response: h11.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _http_get(
    host: str,
    where: str,
    stream: trio.abc.Stream,
    settings: FetchSettings,
    fetched: _Fetched,
) -> PolicyFetch:
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEADERS)
    timeout = f"{settings.timeout:g} s"
    try:
        fetched.begin(
            settings.timeout,
            PolicyCode.HTTP_TIMEOUT,
            f"{where} sent no response headers within {timeout}",
        )
        await stream.send_all(_request_bytes(connection, host))
        response = await _receive_response(connection, stream)
        content_type = _header(response, b"content-type")
        fetched.http_status = response.status_code
        fetched.content_type = content_type
        location = _header(response, b"location")
        if 300 <= response.status_code < 400:
            fetched.location = location
        refused = head_failure(
            where,
            host,
            status=response.status_code,
            reason=bytes(response.reason).decode("latin-1"),
            location=location,
            content_length=_header(response, b"content-length"),
            max_body=settings.max_body,
        )
        if refused is not None:
            return fetched.ended(failure=refused)

        fetched.begin(
            settings.timeout,
            PolicyCode.HTTP_TIMEOUT,
            f"{where} did not finish sending the policy body within {timeout}",
        )
        body = await _receive_body(connection, stream, settings.max_body)
        if len(body) > settings.max_body:
            return fetched.ended(failure=oversized_body(where, settings.max_body))
    except h11.RemoteProtocolError as error:
        return fetched.failed(
            PolicyCode.HTTP_PROTOCOL, f"{where} sent a malformed HTTP response ({error})"
        )
    except _WireBudgetError as error:
        return fetched.failed(
            PolicyCode.HTTP_PROTOCOL,
            f"{where} sent too much for its HTTP response ({error}); reading stopped there",
        )
    except STREAM_ERRORS as error:
        return fetched.failed(
            PolicyCode.HTTP_PROTOCOL,
            f"connection to {where} broke during the HTTP exchange ({type(error).__name__}: {error})",
        )

    text = decode_body(where, body)
    if isinstance(text, PolicyFailure):
        return fetched.ended(failure=text)
    fetched.text = text
    parsed = policy_of(where, text, content_type)
    if isinstance(parsed, PolicyFailure):
        return fetched.ended(failure=parsed)
    return fetched.ended(policy=parsed)


class _WireBudgetError(Exception):
    """More bytes arrived for a step than its budget allows; the words say which step."""


@dataclass(slots=True)
class _Wire:
    """Bytes read from the stream for one step, against that step's budget."""

    budget: int
    what: str
    received: int = 0

    def count(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.budget:
            raise _WireBudgetError(f"{self.what} took more than {self.budget} bytes")


async def _receive_event(
    connection: h11.Connection, stream: trio.abc.Stream, size: int, wire: _Wire
) -> object:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = bytes(await stream.receive_some(size))
        wire.count(data)
        connection.receive_data(data)


async def _receive_response(connection: h11.Connection, stream: trio.abc.Stream) -> h11.Response:
    """The final response's headers, after any interim (1xx) responses, within
    `MAX_BEFORE_RESPONSE` bytes in all."""
    wire = _Wire(MAX_BEFORE_RESPONSE, "the response headers, interim responses included")
    while True:
        event = await _receive_event(connection, stream, RECEIVE_SIZE, wire)
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.InformationalResponse):
            continue
        raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} before the response")


async def _receive_body(connection: h11.Connection, stream: trio.abc.Stream, cap: int) -> bytes:
    """Body bytes until the end of the message, or the first `cap + 1` bytes when it is longer.

    The bytes read, framing included, stay within `BODY_WIRE_FACTOR` times the cap
    (beyond what arrived with the headers), so a body costs about its size in parsing,
    however it is framed: no more than a slow body.
    """
    chunks: list[bytes] = []
    size = 0
    wire = _Wire(BODY_WIRE_FACTOR * (cap + 1), "the body with its chunk framing")
    while size <= cap:
        # Never ask for much more than the cap allows: stop reading at the limit.
        event = await _receive_event(connection, stream, min(RECEIVE_SIZE, cap + 1 - size), wire)
        if isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
            size += len(event.data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    return b"".join(chunks)
