"""A policy host that floods cheap bytes costs the fetch no more than a slow body.

Chunk extensions around one-byte chunks, or endless `100 Continue` responses, each
parsed in turn, kept a core busy until the step's deadline. The server here sends up
to 32 MB of them and counts what it got out before the client went away.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trustme
from trio.testing import MockClock

from scanner.models import AddressAnswer, DnsStatus, PolicyFetch, ResultType
from scanner.net.gate import Gate
from scanner.net.policy_fetch import FetchSettings, fetch_policy
from scanner.net.tls import TlsClient, build_client_context
from scanner.net.trust import TrustStore

DOMAIN = "example.com"
HOST = "mta-sts.example.com"
POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 604800\r\n"
FLOOD = 32 * 1024 * 1024
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"


class StaticResolver:
    async def addresses(self, name: str) -> tuple[AddressAnswer, AddressAnswer]:
        await trio.lowlevel.checkpoint()
        return AddressAnswer(DnsStatus.ANSWER, ("127.0.0.1",)), AddressAnswer(DnsStatus.NODATA)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def trust(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> TrustStore:
    path: Path = tmp_path_factory.mktemp("pki") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return TrustStore.from_files([path], include_certifi=False)


@dataclass
class Sent:
    bytes: int = 0
    done: trio.Event = field(default_factory=trio.Event)


@asynccontextmanager
async def flooding_server(
    ca: trustme.CA, head: bytes, piece: bytes, end: bytes, sent: Sent
) -> AsyncIterator[int]:
    """Answers the request with `head`, then `piece` over and over (up to `FLOOD` bytes),
    then `end`; `sent` gets the bytes it got out before the client went away."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(context)

    async def handle(tcp: trio.SocketStream) -> None:
        count = 0
        try:
            stream = trio.SSLStream(tcp, context, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(4096)
                if not data:
                    return
                request += data
            await stream.send_all(head)
            count = len(head)
            batch = piece * (65536 // max(1, len(piece)))
            while batch and count < FLOOD:
                await stream.send_all(batch)
                count += len(batch)
            await stream.send_all(end)
            count += len(end)
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            sent.bytes = count
            sent.done.set()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def fetch(trust: TrustStore, port: int) -> PolicyFetch:
    return await fetch_policy(
        DOMAIN,
        resolver=StaticResolver(),
        tls=TlsClient(build_client_context(), trust),
        settings=FetchSettings(https_port=port, timeout=5.0),
        now=datetime.now(UTC),
        gate=Gate(allow_private=True),
    )


@pytest.mark.parametrize(
    ("head", "piece", "end"),
    [
        (CHUNKED_HEAD, b"1;" + b"e" * 4000 + b"\r\nx\r\n", b"0\r\n\r\n"),
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 404 Not Found\r\n\r\n"),
    ],
    ids=["chunk-extensions", "100-continue"],
)
async def test_a_flood_of_framing_stops_at_its_budget(
    ca: trustme.CA,
    trust: TrustStore,
    loopback_clock: MockClock,
    head: bytes,
    piece: bytes,
    end: bytes,
) -> None:
    sent = Sent()
    async with flooding_server(ca, head, piece, end, sent) as port:
        result = await fetch(trust, port)
        with trio.fail_after(30):
            await sent.done.wait()
    assert result.failure is not None
    assert result.failure.result_type is ResultType.STS_POLICY_FETCH_ERROR
    assert "sent too much for its HTTP response" in result.failure.detail
    # What the client read is bounded; the rest waited in socket buffers at most.
    assert sent.bytes < FLOOD // 2


async def test_a_policy_in_one_byte_chunks_is_read(
    ca: trustme.CA, trust: TrustStore, loopback_clock: MockClock
) -> None:
    """The twin: legitimate chunking, however fine, is no flood."""
    body = b"".join(b"1\r\n" + bytes([byte]) + b"\r\n" for byte in POLICY) + b"0\r\n\r\n"
    async with flooding_server(ca, CHUNKED_HEAD + body, b"", b"", Sent()) as port:
        result = await fetch(trust, port)
    assert result.failure is None, result.failure
    assert result.policy is not None
    assert result.text == POLICY.decode()
