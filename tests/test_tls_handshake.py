"""The TLS driver against real TLS servers on 127.0.0.1 (stdlib ssl and pyOpenSSL)."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from scanner.lab.certificates import issue_via_intermediate
from scanner.net import tls as tls_module
from scanner.net.tls import TlsFailure, TlsStream, build_client_context, start_tls
from scanner.net.trust import TrustStore, check_certificate

NOW = datetime.now(UTC)
DAY = timedelta(days=1)
HOST = "127.0.0.1"
MX = "mx.example.net"
DEADLINE = 5  # generous; every test finishes in milliseconds

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def trust(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> TrustStore:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return TrustStore.from_files([path])


@pytest.fixture(scope="module")
def client_context() -> SSL.Context:
    return build_client_context()


async def serve(nursery: trio.Nursery, handler: Handler) -> int:
    """Start a TCP server on 127.0.0.1 (cancelled with the nursery); return its port."""
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=HOST))
    port: int = listeners[0].socket.getsockname()[1]
    return port


# ---------------------------------------------------------------- stdlib ssl servers


@dataclass
class Credentials:
    cert_pem: bytes  # leaf, then whatever chain the server sends
    key_pem: bytes


def credentials(leaf: trustme.LeafCert, *, leaf_only: bool = False) -> Credentials:
    blobs = leaf.cert_chain_pems[:1] if leaf_only else leaf.cert_chain_pems
    return Credentials(b"".join(blob.bytes() for blob in blobs), leaf.private_key_pem.bytes())


def self_signed_credentials(name: str) -> Credentials:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Credentials(certificate.public_bytes(serialization.Encoding.PEM), key_pem)


def stdlib_server_context(
    creds: Credentials,
    tmp_path: Path,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    sni_seen: list[str | None] | None = None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert_file, key_file = tmp_path / "server-cert.pem", tmp_path / "server-key.pem"
    cert_file.write_bytes(creds.cert_pem)
    key_file.write_bytes(creds.key_pem)
    context.load_cert_chain(cert_file, key_file)
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    if sni_seen is not None:
        seen = sni_seen

        def record(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            seen.append(name)

        context.sni_callback = record
    return context


def tls_echo_handler(context: ssl.SSLContext) -> Handler:
    """Handshake, answer one message in upper case, then close cleanly."""

    async def handler(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        try:
            await tls.do_handshake()
            data = await tls.receive_some()
            if data:
                await tls.send_all(data.upper())
        except trio.BrokenResourceError:
            pass  # the client gave up on the handshake: expected in failure tests
        finally:
            await trio.aclose_forcefully(tls)

    return handler


async def handshake(
    port: int, context: SSL.Context, server_hostname: str | None = MX
) -> TlsStream | TlsFailure:
    transport = await trio.open_tcp_stream(HOST, port)
    with trio.fail_after(DEADLINE):
        result = await start_tls(transport, context, server_hostname)
    if isinstance(result, TlsFailure):
        await transport.aclose()
    return result


async def echo_round_trip(stream: TlsStream) -> None:
    await stream.send_all(b"ehlo scanner.example\r\n")
    assert await stream.receive_some() == b"EHLO SCANNER.EXAMPLE\r\n"
    assert await stream.receive_some() == b""  # the server closed
    await stream.aclose()


# ---------------------------------------------------------------- certificates end to end


@dataclass(frozen=True)
class CertificateCase:
    make: Callable[[trustme.CA], Credentials]
    expected_name: str
    trusted: bool
    verify_error: str | None
    name_matches: bool
    chain_length: int = 1


def bad_signature_credentials(ca: trustme.CA) -> Credentials:
    """A leaf of `ca` whose signature no longer matches (its last octet flipped)."""
    leaf = ca.issue_cert(MX)
    der = bytearray(
        x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(
            serialization.Encoding.DER
        )
    )
    der[-1] ^= 0x01
    pem = ssl.DER_cert_to_PEM_cert(bytes(der)).encode("ascii")
    return Credentials(pem, leaf.private_key_pem.bytes())


def expired_intermediate_credentials(ca: trustme.CA) -> Credentials:
    material = issue_via_intermediate(
        ca,
        MX,
        intermediate_validity=(NOW - 9 * DAY, NOW - DAY),
        leaf_validity=(NOW - DAY, NOW + DAY),
    )
    return Credentials(material.chain_pem, material.key_pem)


def _other_ca_leaf(
    not_before: datetime | None = None, not_after: datetime | None = None
) -> Callable[[trustme.CA], Credentials]:
    return lambda _ca: credentials(
        trustme.CA().issue_cert(MX, not_before=not_before, not_after=not_after)
    )


CERTIFICATE_CASES = {
    "good": CertificateCase(lambda ca: credentials(ca.issue_cert(MX)), MX, True, None, True),
    "intermediate": CertificateCase(
        lambda ca: credentials(ca.create_child_ca().issue_cert(MX)), MX, True, None, True, 2
    ),
    "missing-intermediate": CertificateCase(
        lambda ca: credentials(ca.create_child_ca().issue_cert(MX), leaf_only=True),
        MX,
        False,
        "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        True,
    ),
    "expired": CertificateCase(
        lambda ca: credentials(ca.issue_cert(MX, not_before=NOW - 9 * DAY, not_after=NOW - DAY)),
        MX,
        False,
        "X509_V_ERR_CERT_HAS_EXPIRED",
        True,
    ),
    "not-yet-valid": CertificateCase(
        lambda ca: credentials(ca.issue_cert(MX, not_before=NOW + DAY, not_after=NOW + 9 * DAY)),
        MX,
        False,
        "X509_V_ERR_CERT_NOT_YET_VALID",
        True,
    ),
    "self-signed": CertificateCase(
        lambda _ca: self_signed_credentials(MX),
        MX,
        False,
        "X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT",
        True,
    ),
    "unknown-ca": CertificateCase(
        _other_ca_leaf(), MX, False, "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY", True
    ),
    "unknown-ca-expired": CertificateCase(
        _other_ca_leaf(not_before=NOW - 9 * DAY, not_after=NOW - DAY),
        MX,
        False,
        "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        True,
    ),
    "bad-signature": CertificateCase(
        bad_signature_credentials, MX, False, "X509_V_ERR_CERT_SIGNATURE_FAILURE", True
    ),
    "intermediate-expired": CertificateCase(
        expired_intermediate_credentials, MX, False, "X509_V_ERR_CERT_HAS_EXPIRED", True, 2
    ),
    "wrong-name": CertificateCase(
        lambda ca: credentials(ca.issue_cert("other.example.net")), MX, True, None, False
    ),
    "wildcard": CertificateCase(
        lambda ca: credentials(ca.issue_cert("*.example.net")), MX, True, None, True
    ),
    "wildcard-too-deep": CertificateCase(
        lambda ca: credentials(ca.issue_cert("*.example.net")),
        "a.mx.example.net",
        True,
        None,
        False,
    ),
}


@pytest.mark.parametrize("case_id", list(CERTIFICATE_CASES))
async def test_certificate_cases(
    case_id: str,
    ca: trustme.CA,
    trust: TrustStore,
    client_context: SSL.Context,
    nursery: trio.Nursery,
    tmp_path: Path,
) -> None:
    case = CERTIFICATE_CASES[case_id]
    server_context = stdlib_server_context(case.make(ca), tmp_path)
    port = await serve(nursery, tls_echo_handler(server_context))
    stream = await handshake(port, client_context, case.expected_name)
    assert isinstance(stream, TlsStream)  # the handshake never verifies
    session = stream.session()
    assert len(session.chain) == case.chain_length == len(session.chain_der)
    at = datetime.now(UTC)
    check = check_certificate(session, trust, case.expected_name, at)
    assert check.chain.trusted is case.trusted
    assert check.chain.verify_error == case.verify_error
    assert check.name_matches is case.name_matches
    assert check.leaf == session.chain[0]
    # The handshake's own certificate objects give the very same check, depth included.
    presented = stream.presented_chain()
    assert presented.der == session.chain_der
    assert check_certificate(session, trust, case.expected_name, at, presented=presented) == check
    await echo_round_trip(stream)


async def test_certifi_alone_does_not_trust_the_test_ca(
    ca: trustme.CA, client_context: SSL.Context, nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = await serve(
        nursery, tls_echo_handler(stdlib_server_context(credentials(ca.issue_cert(MX)), tmp_path))
    )
    stream = await handshake(port, client_context)
    assert isinstance(stream, TlsStream)
    check = check_certificate(stream.session(), TrustStore.from_files([]), MX, NOW)
    assert not check.chain.trusted
    assert check.chain.verify_error == "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY"
    await stream.aclose()


# ---------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("minimum", "maximum", "version"),
    [
        (None, ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
        (ssl.TLSVersion.TLSv1_3, None, "TLSv1.3"),
    ],
    ids=["tls12-only", "tls13"],
)
async def test_negotiated_version_is_recorded(
    minimum: ssl.TLSVersion | None,
    maximum: ssl.TLSVersion | None,
    version: str,
    ca: trustme.CA,
    client_context: SSL.Context,
    nursery: trio.Nursery,
    tmp_path: Path,
) -> None:
    server_context = stdlib_server_context(
        credentials(ca.issue_cert(MX)), tmp_path, minimum=minimum, maximum=maximum
    )
    port = await serve(nursery, tls_echo_handler(server_context))
    stream = await handshake(port, client_context)
    assert isinstance(stream, TlsStream)
    assert stream.session().version == version
    assert stream.session().cipher
    await echo_round_trip(stream)


# ---------------------------------------------------------------- pyOpenSSL server (thread)


@dataclass
class PyOpenSslServer:
    """A blocking pyOpenSSL server in a worker thread, serving one connection."""

    context: SSL.Context
    servernames: list[bytes | None] = field(default_factory=list)
    listener: socket.socket = field(default_factory=socket.socket)

    def __post_init__(self) -> None:
        self.context.set_tlsext_servername_callback(
            lambda connection: self.servernames.append(connection.get_servername())
        )
        self.listener.settimeout(DEADLINE)
        self.listener.bind((HOST, 0))
        self.listener.listen(1)

    @property
    def port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port

    def serve_one(self) -> None:
        try:
            sock, _ = self.listener.accept()
        finally:
            self.listener.close()
        with sock:
            sock.settimeout(None)  # pyOpenSSL needs a blocking socket; the client's close ends it
            connection = SSL.Connection(self.context, sock)
            connection.set_accept_state()
            try:
                connection.do_handshake()
                data = connection.recv(1024)
                connection.sendall(data.upper())
                connection.shutdown()
            except SSL.Error:
                pass  # failure tests: the client hung up


def pyopenssl_server_context(leaf: trustme.LeafCert) -> SSL.Context:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    chain = [x509.load_pem_x509_certificate(blob.bytes()) for blob in leaf.cert_chain_pems]
    context.use_certificate(chain[0])
    for extra in chain[1:]:
        context.add_extra_chain_cert(extra)
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    context.use_privatekey(key)
    return context


@pytest.mark.parametrize(
    ("server_hostname", "sent"),
    [
        (MX, MX.encode()),
        ("MX.Example.NET.", MX.encode()),
        ("mx.bücher.example", b"mx.xn--bcher-kva.example"),
        ("127.0.0.1", None),
        ("::1", None),
        (None, None),
    ],
    ids=["hostname", "normalised", "idn-a-label", "ipv4-literal", "ipv6-literal", "none"],
)
async def test_sni(
    server_hostname: str | None,
    sent: bytes | None,
    ca: trustme.CA,
    client_context: SSL.Context,
    nursery: trio.Nursery,
) -> None:
    server = PyOpenSslServer(pyopenssl_server_context(ca.issue_cert(MX)))
    nursery.start_soon(partial(trio.to_thread.run_sync, server.serve_one, abandon_on_cancel=True))
    stream = await handshake(server.port, client_context, server_hostname)
    assert isinstance(stream, TlsStream)
    await stream.send_all(b"quit\r\n")
    assert await stream.receive_some() == b"QUIT\r\n"
    assert await stream.receive_some() == b""  # close_notify
    await stream.aclose()
    assert server.servernames == [sent]


async def test_pyopenssl_server_with_intermediate(
    ca: trustme.CA, trust: TrustStore, client_context: SSL.Context, nursery: trio.Nursery
) -> None:
    server = PyOpenSslServer(pyopenssl_server_context(ca.create_child_ca().issue_cert(MX)))
    nursery.start_soon(partial(trio.to_thread.run_sync, server.serve_one, abandon_on_cancel=True))
    stream = await handshake(server.port, client_context)
    assert isinstance(stream, TlsStream)
    session = stream.session()
    assert len(session.chain) == 2
    assert check_certificate(session, trust, MX, NOW).chain.trusted
    await stream.aclose()


async def test_tls10_server_is_observed_not_refused(
    ca: trustme.CA, client_context: SSL.Context, nursery: trio.Nursery
) -> None:
    server_context = pyopenssl_server_context(ca.issue_cert(MX))
    server_context.set_min_proto_version(SSL.TLS1_VERSION)
    server_context.set_max_proto_version(SSL.TLS1_VERSION)
    server_context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    server = PyOpenSslServer(server_context)
    nursery.start_soon(partial(trio.to_thread.run_sync, server.serve_one, abandon_on_cancel=True))
    stream = await handshake(server.port, client_context)
    assert isinstance(stream, TlsStream)
    assert stream.session().version == "TLSv1"
    await stream.aclose()


async def test_no_common_version_is_a_protocol_version_failure(
    ca: trustme.CA, nursery: trio.Nursery
) -> None:
    server_context = pyopenssl_server_context(ca.issue_cert(MX))
    server_context.set_min_proto_version(SSL.TLS1_3_VERSION)
    server = PyOpenSslServer(server_context)  # sends a protocol_version alert
    nursery.start_soon(partial(trio.to_thread.run_sync, server.serve_one, abandon_on_cancel=True))
    old_client = build_client_context()
    old_client.set_max_proto_version(SSL.TLS1_2_VERSION)
    assert await handshake(server.port, old_client) == TlsFailure("protocol-version")


# ---------------------------------------------------------------- misbehaving peers


async def close_after_client_hello(stream: trio.SocketStream) -> None:
    await stream.receive_some()
    await stream.aclose()


async def reset_after_client_hello(stream: trio.SocketStream) -> None:
    await stream.receive_some()
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def send_smtp_reply(stream: trio.SocketStream) -> None:
    await stream.receive_some()
    await stream.send_all(b"220 hello\r\n")
    await trio.sleep(DEADLINE)


async def send_http(stream: trio.SocketStream) -> None:
    await stream.receive_some()
    await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await stream.aclose()


async def close_immediately(stream: trio.SocketStream) -> None:
    await stream.aclose()


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (close_after_client_hello, "eof-during-handshake"),
        (close_immediately, "eof-during-handshake"),
        (reset_after_client_hello, "connection-lost"),
        (send_smtp_reply, "not-tls"),
        (send_http, "not-tls"),
    ],
    ids=["close-mid-handshake", "close-at-once", "reset", "smtp-reply", "http"],
)
async def test_handshake_failures_are_values(
    handler: Handler, reason: str, client_context: SSL.Context, nursery: trio.Nursery
) -> None:
    port = await serve(nursery, handler)
    result = await handshake(port, client_context)
    assert result == TlsFailure(reason)


async def stall(stream: trio.SocketStream) -> None:
    await stream.receive_some()
    await trio.sleep_forever()


async def test_stalled_peer_hits_the_callers_deadline(
    client_context: SSL.Context, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    port = await serve(nursery, stall)
    transport = await trio.open_tcp_stream(HOST, port)
    stream = TlsStream(transport, client_context, MX)
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(0.2):
            await stream.do_handshake()
    with pytest.raises(trio.BrokenResourceError):
        await stream.receive_some()  # cancelled mid-handshake: the stream is broken
    await stream.aclose()


async def test_start_tls_lets_cancellation_through(
    client_context: SSL.Context, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    port = await serve(nursery, stall)
    transport = await trio.open_tcp_stream(HOST, port)
    with trio.move_on_after(0.1) as scope:
        await start_tls(transport, client_context, MX)
    assert scope.cancelled_caught
    await transport.aclose()


# ---------------------------------------------------------------- odd transports and misuse


class OneByteStream(trio.abc.Stream):
    """Delivers at most one byte per receive_some, and sends one byte at a time."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.receives = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        for index in range(len(data)):
            await self.inner.send_all(bytes(data[index : index + 1]))

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self.receives += 1
        return bytes(await self.inner.receive_some(1))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_one_byte_at_a_time(
    ca: trustme.CA,
    trust: TrustStore,
    client_context: SSL.Context,
    nursery: trio.Nursery,
    tmp_path: Path,
) -> None:
    leaf = ca.create_child_ca().issue_cert(MX)
    port = await serve(
        nursery, tls_echo_handler(stdlib_server_context(credentials(leaf), tmp_path))
    )
    transport = OneByteStream(await trio.open_tcp_stream(HOST, port))
    with trio.fail_after(DEADLINE):
        stream = await start_tls(transport, client_context, MX)
    assert isinstance(stream, TlsStream)
    assert transport.receives > 100
    assert check_certificate(stream.session(), trust, MX, NOW).chain.trusted
    await stream.send_all(b"ping")
    received = b""
    while len(received) < 4:
        received += await stream.receive_some()
    assert received == b"PING"
    await stream.aclose()


async def test_misuse(
    ca: trustme.CA, client_context: SSL.Context, nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = await serve(
        nursery, tls_echo_handler(stdlib_server_context(credentials(ca.issue_cert(MX)), tmp_path))
    )
    stream = TlsStream(await trio.open_tcp_stream(HOST, port), client_context, MX)
    with pytest.raises(RuntimeError, match="handshake"):
        stream.session()
    with pytest.raises(RuntimeError, match="handshake"):
        stream.presented_chain()
    with pytest.raises(ValueError, match="max_bytes"):
        await stream.receive_some(0)
    await stream.do_handshake()
    await stream.do_handshake()  # a no-op once done
    await stream.send_all(b"")
    async with trio.open_nursery() as inner:
        inner.start_soon(stream.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await stream.send_all(b"x")
        inner.cancel_scope.cancel()
    await stream.aclose()
    await stream.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"x")


def count_bytes_handler(context: ssl.SSLContext, expected: int) -> Handler:
    """Read `expected` plaintext bytes, then answer with how many arrived."""

    async def handler(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        try:
            received = 0
            while received < expected:
                data = await tls.receive_some()
                if not data:
                    break
                received += len(data)
            await tls.send_all(str(received).encode())
        finally:
            await trio.aclose_forcefully(tls)

    return handler


async def test_send_all_handshakes_implicitly_and_sends_large_data(
    ca: trustme.CA, client_context: SSL.Context, nursery: trio.Nursery, tmp_path: Path
) -> None:
    size = 200_000  # many TLS records
    context = stdlib_server_context(credentials(ca.issue_cert(MX)), tmp_path)
    port = await serve(nursery, count_bytes_handler(context, size))
    stream = TlsStream(await trio.open_tcp_stream(HOST, port), client_context, MX)
    with trio.fail_after(DEADLINE):
        await stream.send_all(bytearray(size))
        assert await stream.receive_some() == str(size).encode()
        assert await stream.receive_some() == b""
    await stream.aclose()


async def test_output_larger_than_one_read_of_the_bio_goes_out_whole(
    ca: trustme.CA,
    client_context: SSL.Context,
    nursery: trio.Nursery,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flights and records larger than one read of the outgoing BIO go out whole.

    With reads of 512 bytes, the ClientHello and every 16 kB record take several.
    """
    monkeypatch.setattr(tls_module, "_RECEIVE_SIZE", 512)
    size = 100_000
    context = stdlib_server_context(credentials(ca.issue_cert(MX)), tmp_path)
    port = await serve(nursery, count_bytes_handler(context, size))
    stream = TlsStream(await trio.open_tcp_stream(HOST, port), client_context, MX)
    with trio.fail_after(DEADLINE):
        await stream.send_all(bytes(size))
        assert await stream.receive_some() == str(size).encode()
    await stream.aclose()
