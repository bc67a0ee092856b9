"""Lab MTA-STS policy hosts: HTTPS on the shared port, HTTP/1.1 through h11.

Theory of operation: every policy address listens on the shared HTTPS port.
The certificate is picked during the handshake from the client's SNI among the
policy hosts on that address (RFC 6066 §3), the behaviour from the Host header
(an unknown host gets 404). One request is answered per
connection, then the connection is closed. Only
`GET /.well-known/mta-sts.txt` (RFC 8461 §3.2) is served; other paths get 404.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

import h11
import trio

from scanner.lab.certificates import CertificateMint
from scanner.lab.connections import IDLE_TIMEOUT, ConnectionStats, local_ip
from scanner.lab.latency import delayed_sends
from scanner.lab.world import CertificateKind, PolicyBehaviour, PolicyHost

WELL_KNOWN_PATH = b"/.well-known/mta-sts.txt"
OVERSIZE_BYTES = 70 * 1024  # over the 64 KiB cap of RFC 8461 §3.3's suggestion
MAX_REQUEST_BYTES = 16 * 1024
DEFAULT_SLOW_INTERVAL = 1.0  # seconds between body bytes of a "slow" host


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    location: str | None = None


def policy_response(host: PolicyHost) -> Response:
    """What `host` answers to GET /.well-known/mta-sts.txt."""
    body = host.body.encode("utf-8")
    match host.behaviour:
        case PolicyBehaviour.WRONG_CONTENT_TYPE:
            return Response(200, "text/html", body)
        case PolicyBehaviour.REDIRECT:
            # RFC 8461 §3.3: senders must not follow redirects.
            return Response(301, "text/plain", b"moved\n", location=host.location)
        case PolicyBehaviour.NOT_FOUND:
            return Response(404, "text/plain", b"not found\n")
        case PolicyBehaviour.OVERSIZE:
            return Response(200, "text/plain", _pad(body))
        case _:
            return Response(200, "text/plain", body)


def _pad(body: bytes) -> bytes:
    """The policy followed by extension lines until the body exceeds OVERSIZE_BYTES."""
    if body and not body.endswith(b"\n"):
        body += b"\n"
    line = b"padding: " + b"x" * 100 + b"\n"
    count = (OVERSIZE_BYTES - len(body)) // len(line) + 1
    return body + line * max(count, 1)


def https_context_factory(
    mint: CertificateMint, hosts_by_address: Mapping[str, Mapping[str, PolicyHost]]
) -> Callable[[str], ssl.SSLContext]:
    """One SNI-dispatching context per policy address, made on first use."""
    contexts: dict[str, ssl.SSLContext] = {}

    def context_for(address: str) -> ssl.SSLContext:
        context = contexts.get(address)
        if context is None:
            hosts = hosts_by_address[address]
            default = next(iter(hosts.values()))

            def choose(server_name: str | None) -> tuple[CertificateKind, str]:
                host = hosts.get((server_name or "").lower(), default)
                return host.certificate, host.hostname

            context = mint.dispatching_context(choose)
            contexts[address] = context
        return context

    return context_for


@dataclass(frozen=True, slots=True)
class HttpsHandler:
    """Serves every policy address of a lab."""

    hosts_by_address: Mapping[str, Mapping[str, PolicyHost]]
    context_for: Callable[[str], ssl.SSLContext]
    stats: ConnectionStats
    slow_interval: float = DEFAULT_SLOW_INTERVAL
    latency: float = 0.0  # seconds added before the response and every TLS flight reach the client
    # The server's clock, for the `Date` of every response (RFC 9110 §6.6.1): a lab can
    # set it wrong to show a scanning host whose clock is off (`scanner doctor`).
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    async def __call__(self, stream: trio.SocketStream) -> None:
        ip = local_ip(stream)
        hosts = self.hosts_by_address.get(ip)
        with self.stats.track(ip):
            try:
                async with delayed_sends(stream, self.latency) as link:
                    if hosts:
                        tls = trio.SSLStream(link, self.context_for(ip), server_side=True)
                        with trio.move_on_after(IDLE_TIMEOUT):
                            await tls.do_handshake()
                            await self._exchange(tls, hosts)
                            with trio.move_on_after(1):
                                await tls.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away or rejected our certificate
            finally:
                await trio.aclose_forcefully(stream)

    async def _exchange(
        self, tls: trio.SSLStream[trio.abc.Stream], hosts: Mapping[str, PolicyHost]
    ) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        request = await _read_request(tls, connection)
        if request is None:
            return
        host = _select_host(request, hosts)
        target = request.target.split(b"?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            response = Response(405, "text/plain", b"method not allowed\n")
        elif host is None or target != WELL_KNOWN_PATH:
            response = Response(404, "text/plain", b"not found\n")
        else:
            response = policy_response(host)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
            ("Date", format_datetime(self.clock(), usegmt=True)),
        ]
        if response.location is not None:
            headers.append(("Location", response.location))
        send = tls.send_all
        await send(connection.send(h11.Response(status_code=response.status, headers=headers)))
        if request.method == b"HEAD":
            return
        if host is not None and host.behaviour is PolicyBehaviour.SLOW:
            for index in range(len(response.body)):
                await send(connection.send(h11.Data(data=response.body[index : index + 1])))
                await trio.sleep(self.slow_interval)
        else:
            await send(connection.send(h11.Data(data=response.body)))
        await send(connection.send(h11.EndOfMessage()))


async def _read_request(
    tls: trio.SSLStream[trio.abc.Stream], connection: h11.Connection
) -> h11.Request | None:
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            return None
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await tls.receive_some(16384)))
            continue
        if isinstance(event, h11.Request):
            return event
        return None


def _select_host(request: h11.Request, hosts: Mapping[str, PolicyHost]) -> PolicyHost | None:
    for name, value in request.headers:
        if name == b"host":
            hostname = value.decode("ascii", errors="replace").lower()
            if hostname.startswith("["):
                hostname = hostname.split("]", 1)[0] + "]"
            else:
                hostname = hostname.rsplit(":", 1)[0] if ":" in hostname else hostname
            return hosts.get(hostname.rstrip("."))
    return None
