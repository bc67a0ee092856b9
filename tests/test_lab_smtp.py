"""Raw SMTP dialogues with every lab SMTP behaviour and certificate kind (real sockets, loopback)."""

from __future__ import annotations

import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
from trio.testing import MockClock

from scanner.lab import CertificateKind, Lab, SmtpBehaviour, SmtpServer, World

STEP = 5.0  # seconds; every dialogue step is far quicker on loopback
POLL = 0.001  # seconds between looks at the lab's connection counters


def server_with(
    world: World,
    behaviour: SmtpBehaviour | None = SmtpBehaviour.GOOD,
    certificate: CertificateKind | None = CertificateKind.GOOD,
) -> SmtpServer:
    """The first demo server with that behaviour and certificate (None: any)."""
    for server in world.servers:
        if behaviour not in (None, server.behaviour):
            continue
        if certificate in (None, server.certificate):
            return server
    raise LookupError(f"no demo server with {behaviour} and {certificate}")


class SmtpClient:
    """A minimal SMTP client for the tests: reads whole replies, any stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    async def reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        while True:
            line = (await self.line()).decode()
            lines.append(line[4:])
            if line[3:4] == " ":
                return int(line[:3]), lines

    async def command(self, text: str) -> tuple[int, list[str]]:
        await self.stream.send_all(text.encode() + b"\r\n")
        return await self.reply()


Connect = Callable[[SmtpServer], Awaitable[SmtpClient]]


@pytest.fixture
async def connect(demo_lab: Lab) -> AsyncIterator[Connect]:
    """Opens SMTP connections to demo servers and closes them all after the test."""
    streams: list[trio.SocketStream] = []

    async def open_session(server: SmtpServer) -> SmtpClient:
        stream = await trio.open_tcp_stream(server.address, demo_lab.smtp_port)
        streams.append(stream)
        return SmtpClient(stream)

    yield open_session
    for stream in streams:
        await trio.aclose_forcefully(stream)


def client_context(lab: Lab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(lab.ca_file))


async def upgrade(lab: Lab, client: SmtpClient, hostname: str) -> SmtpClient:
    assert client.buffer == b"", "plaintext left over before the handshake"
    tls = trio.SSLStream(client.stream, client_context(lab), server_hostname=hostname)
    await tls.do_handshake()
    return SmtpClient(tls)


# ---------------------------------------------------------------- complete sessions


@pytest.mark.parametrize(
    ("behaviour", "greeting_lines", "advertised"),
    [
        pytest.param(SmtpBehaviour.GOOD, 1, True, id="good"),
        pytest.param(SmtpBehaviour.GOOD_MULTILINE_GREETING, 3, True, id="multiline-greeting"),
        pytest.param(SmtpBehaviour.STARTTLS_HIDDEN, 1, False, id="hidden-starttls-still-works"),
        pytest.param(SmtpBehaviour.STARTTLS_AFTER_TLS, 1, True, id="starttls-after-tls"),
    ],
)
async def test_session_upgrades_to_verified_tls(
    demo_lab: Lab, connect: Connect, behaviour: SmtpBehaviour, greeting_lines: int, advertised: bool
) -> None:
    server = next(s for s in demo_lab.world.servers if s.behaviour is behaviour)
    host = server.hostnames[0]
    with trio.fail_after(STEP):
        client = await connect(server)
        code, greeting = await client.reply()
        assert (code, len(greeting)) == (220, greeting_lines)
        assert greeting[0].startswith(host)
        code, ehlo = await client.command("EHLO probe.test")
        assert code == 250
        assert len(ehlo) > 1
        assert ("STARTTLS" in ehlo[1:]) is advertised
        assert (await client.command("STARTTLS"))[0] == 220
        tls = await upgrade(demo_lab, client, host)
        code, after = await tls.command("EHLO probe.test")
        assert code == 250
        assert ("STARTTLS" in after) is (behaviour is SmtpBehaviour.STARTTLS_AFTER_TLS)
        assert (await tls.command("STARTTLS"))[0] == 503
        assert (await tls.command("MAIL FROM:<a@b.example>"))[0] == 502
        assert (await tls.command("QUIT"))[0] == 221


@pytest.mark.parametrize(
    ("behaviour", "keyword", "starttls_code", "text"),
    [
        pytest.param(SmtpBehaviour.GOOD, "STARTTLS", 220, "Ready", id="good-twin"),
        pytest.param(SmtpBehaviour.NO_STARTTLS, None, 502, "not implemented", id="no-starttls"),
        pytest.param(
            SmtpBehaviour.STARTTLS_MASKED,
            "XXXXXXXA",
            500,
            "#5.5.1 command not recognized",
            id="masked",
        ),
        pytest.param(SmtpBehaviour.STARTTLS_454, "STARTTLS", 454, "4.7.0", id="starttls-454"),
        pytest.param(SmtpBehaviour.STARTTLS_HIDDEN, None, 220, "Ready", id="hidden"),
    ],
)
async def test_starttls_advertisement_and_reply(
    demo_lab: Lab,
    connect: Connect,
    behaviour: SmtpBehaviour,
    keyword: str | None,
    starttls_code: int,
    text: str,
) -> None:
    server = next(s for s in demo_lab.world.servers if s.behaviour is behaviour)
    with trio.fail_after(STEP):
        client = await connect(server)
        assert (await client.reply())[0] == 220
        code, ehlo = await client.command("EHLO probe.test")
        assert code == 250
        offered = [k for k in ehlo[1:] if k in ("STARTTLS", "XXXXXXXA")]
        assert offered == ([keyword] if keyword else [])
        code, lines = await client.command("STARTTLS")
        assert code == starttls_code
        assert text in lines[0]
        if code != 220:
            assert (await client.command("QUIT"))[0] == 221


async def test_starttls_with_a_parameter_is_a_syntax_error(demo_lab: Lab, connect: Connect) -> None:
    server = server_with(demo_lab.world)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        await client.command("EHLO probe.test")
        assert (await client.command("STARTTLS now"))[0] == 501
        assert (await client.command("STARTTLS"))[0] == 220


async def test_plaintext_injection_sends_bytes_after_the_220(
    demo_lab: Lab, connect: Connect
) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.PLAINTEXT_INJECTION)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        await client.command("EHLO probe.test")
        assert (await client.command("STARTTLS"))[0] == 220
        assert await client.line() == b"250 injected"
        # Having discarded the injected bytes, TLS still works.
        tls = await upgrade(demo_lab, client, server.hostnames[0])
        assert (await tls.command("QUIT"))[0] == 221


async def test_good_server_injects_nothing(
    demo_lab: Lab, connect: Connect, loopback_clock: MockClock
) -> None:
    server = server_with(demo_lab.world)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        await client.command("EHLO probe.test")
        assert (await client.command("STARTTLS"))[0] == 220
        # Virtual time: a late injection (the lab's comes after a trio sleep) would
        # arrive within this window on any machine, however loaded.
        with trio.move_on_after(1.0) as waited:
            client.buffer += await client.stream.receive_some(1024)
        assert waited.cancelled_caught
        assert client.buffer == b""


async def test_220_then_plaintext_fails_the_handshake(demo_lab: Lab, connect: Connect) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.STARTTLS_220_NO_TLS)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        await client.command("EHLO probe.test")
        assert (await client.command("STARTTLS"))[0] == 220
        with pytest.raises(trio.BrokenResourceError):
            await upgrade(demo_lab, client, server.hostnames[0])


async def test_late_injection_sends_bytes_in_a_later_write(demo_lab: Lab, connect: Connect) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.LATE_INJECTION)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        await client.command("EHLO probe.test")
        assert (await client.command("STARTTLS"))[0] == 220
        assert await client.line() == b"250 injected"
        tls = await upgrade(demo_lab, client, server.hostnames[0])
        assert (await tls.command("QUIT"))[0] == 221


async def test_starttls_close_closes_on_the_command(demo_lab: Lab, connect: Connect) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.STARTTLS_CLOSE)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        _, keywords = await client.command("EHLO probe.test")
        assert "STARTTLS" in keywords
        with pytest.raises(EOFError):
            await client.command("STARTTLS")


async def test_handshake_stall_never_answers_the_client_hello(
    demo_lab: Lab, connect: Connect, loopback_clock: MockClock
) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.HANDSHAKE_STALL)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        await client.command("EHLO probe.test")
        assert (await client.command("STARTTLS"))[0] == 220
        with trio.move_on_after(0.3) as waited:
            await upgrade(demo_lab, client, server.hostnames[0])
        assert waited.cancelled_caught


def legacy_client_context(lab: Lab) -> ssl.SSLContext:
    """A verifying client that also accepts TLS 1.0 and 1.1 (security level 0)."""
    context = client_context(lab)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@pytest.mark.parametrize(
    ("behaviour", "sni", "version"),
    [
        pytest.param(SmtpBehaviour.WEAK_TLS, True, "TLSv1.1", id="weak-with-sni"),
        pytest.param(SmtpBehaviour.WEAK_TLS, False, "TLSv1.1", id="weak-without-sni"),
        pytest.param(SmtpBehaviour.GOOD, True, "TLSv1.3", id="good-twin"),
    ],
)
async def test_weak_tls_negotiates_at_most_tls_1_1(
    demo_lab: Lab, connect: Connect, behaviour: SmtpBehaviour, sni: bool, version: str
) -> None:
    server = server_with(demo_lab.world, behaviour)
    host = server.hostnames[0]
    context = legacy_client_context(demo_lab)
    context.check_hostname = sni
    with trio.fail_after(STEP):
        client = await connect(server)
        assert (await client.reply())[0] == 220
        code, ehlo = await client.command("EHLO probe.test")
        assert code == 250
        assert "STARTTLS" in ehlo[1:]
        assert (await client.command("STARTTLS"))[0] == 220
        tls = trio.SSLStream(client.stream, context, server_hostname=host if sni else None)
        await tls.do_handshake()
        assert tls.version() == version
        assert tls.getpeercert() is not None  # the lab CA's good certificate verified
        session = SmtpClient(tls)
        code, after = await session.command("EHLO probe.test")
        assert code == 250
        assert "STARTTLS" not in after
        assert (await session.command("QUIT"))[0] == 221


async def test_weak_tls_refuses_a_client_that_requires_tls_1_2(
    demo_lab: Lab, connect: Connect
) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.WEAK_TLS)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        await client.command("EHLO probe.test")
        assert (await client.command("STARTTLS"))[0] == 220
        with pytest.raises(trio.BrokenResourceError) as raised:
            await upgrade(demo_lab, client, server.hostnames[0])
        cause = raised.value.__cause__
        assert isinstance(cause, ssl.SSLError)
        assert not isinstance(cause, ssl.SSLCertVerificationError)


async def test_greeting_421_closes(demo_lab: Lab, connect: Connect) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.GREETING_421)
    with trio.fail_after(STEP):
        client = await connect(server)
        code, _ = await client.reply()
        assert code == 421
        with pytest.raises(EOFError):
            await client.line()


async def test_greeting_554_waits_for_quit(demo_lab: Lab, connect: Connect) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.GREETING_554)
    with trio.fail_after(STEP):
        client = await connect(server)
        assert (await client.reply())[0] == 554
        assert (await client.command("EHLO probe.test"))[0] == 503
        assert (await client.command("QUIT"))[0] == 221


async def test_helo_only(demo_lab: Lab, connect: Connect) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.HELO_ONLY)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        assert (await client.command("EHLO probe.test"))[0] == 500
        assert (await client.command("HELO probe.test"))[0] == 250
        assert (await client.command("STARTTLS"))[0] == 502
        assert (await client.command("QUIT"))[0] == 221


async def test_silent_server_never_greets(
    demo_lab: Lab, connect: Connect, loopback_clock: MockClock
) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.SILENT)
    client = await connect(server)
    with trio.move_on_after(0.3) as scope:
        await client.reply()
    assert scope.cancelled_caught
    await client.stream.aclose()


async def test_flood_never_ends_its_ehlo_reply(demo_lab: Lab, connect: Connect) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.FLOOD)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        await client.stream.send_all(b"EHLO probe.test\r\n")
        received = 0
        while received < 1024 * 1024:
            line = await client.line()
            assert line.startswith(b"250-")
            received += len(line) + 2
        await client.stream.aclose()


async def test_closed_address_refuses(demo_lab: Lab) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.CLOSED)
    with trio.fail_after(STEP), pytest.raises(OSError, match="connect"):
        await trio.open_tcp_stream(server.address, demo_lab.smtp_port)


async def test_unknown_command_and_long_line(demo_lab: Lab, connect: Connect) -> None:
    server = server_with(demo_lab.world)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        assert (await client.command("FROB"))[0] == 500
        assert (await client.command("NOOP"))[0] == 250
        assert (await client.command("X" * 5000))[0] == 500


# ---------------------------------------------------------------- certificates


VERIFY_CODES = {
    CertificateKind.EXPIRED: 10,  # X509_V_ERR_CERT_HAS_EXPIRED
    CertificateKind.NOT_YET_VALID: 9,  # X509_V_ERR_CERT_NOT_YET_VALID
    CertificateKind.UNKNOWN_CA: 20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    CertificateKind.MISSING_INTERMEDIATE: 20,
    CertificateKind.SELF_SIGNED: 18,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    CertificateKind.WRONG_NAME: 62,  # X509_V_ERR_HOSTNAME_MISMATCH
    CertificateKind.EXPIRED_INTERMEDIATE: 10,  # at depth 1; the leaf is valid
}


@pytest.mark.parametrize(
    ("kind", "verify_code"),
    [
        pytest.param(CertificateKind.GOOD, None, id="good"),
        pytest.param(CertificateKind.WILDCARD, None, id="wildcard"),
        *(pytest.param(kind, code, id=str(kind)) for kind, code in VERIFY_CODES.items()),
    ],
)
async def test_certificate_kind_verification(
    demo_lab: Lab, connect: Connect, kind: CertificateKind, verify_code: int | None
) -> None:
    server = server_with(demo_lab.world, behaviour=None, certificate=kind)
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        await client.command("EHLO probe.test")
        assert (await client.command("STARTTLS"))[0] == 220
        if verify_code is None:
            tls = await upgrade(demo_lab, client, server.hostnames[0])
            assert (await tls.command("QUIT"))[0] == 221
            return
        with pytest.raises(trio.BrokenResourceError) as raised:
            await upgrade(demo_lab, client, server.hostnames[0])
        cause = raised.value.__cause__
        assert isinstance(cause, ssl.SSLCertVerificationError)
        assert cause.verify_code == verify_code


async def test_wrong_name_certificate_has_the_host_only_in_the_common_name(
    demo_lab: Lab, connect: Connect
) -> None:
    server = server_with(demo_lab.world, certificate=CertificateKind.WRONG_NAME)
    context = ssl.create_default_context(cafile=str(demo_lab.ca_file))
    context.check_hostname = False
    with trio.fail_after(STEP):
        client = await connect(server)
        await client.reply()
        await client.command("EHLO probe.test")
        await client.command("STARTTLS")
        tls = trio.SSLStream(client.stream, context, server_hostname=server.hostnames[0])
        await tls.do_handshake()
        certificate = tls.getpeercert()
        assert certificate is not None
        assert certificate["subjectAltName"] == (("DNS", "wrong-name.invalid"),)
        assert (("commonName", server.hostnames[0]),) in certificate["subject"]
        await tls.aclose()


# ---------------------------------------------------------------- connection counting


async def open_now_becomes(lab: Lab, address: str, count: int) -> None:
    """Wait until the lab's accept loop and handlers have caught up with our sockets.

    Polling a counter instead of waiting for a quiet spell: nothing here depends
    on how fast a loaded machine schedules the server's tasks.
    """
    while lab.smtp_stats.open_now(address) != count:  # noqa: ASYNC110
        await trio.sleep(POLL)


async def test_connection_counts(demo_lab: Lab) -> None:
    server = server_with(demo_lab.world, SmtpBehaviour.SILENT)
    other = server_with(demo_lab.world)
    assert demo_lab.smtp_connections(server.address) == 0
    streams = []
    with trio.fail_after(STEP):
        for _ in range(3):
            streams.append(await trio.open_tcp_stream(server.address, demo_lab.smtp_port))
        await open_now_becomes(demo_lab, server.address, 3)
        for stream in streams:
            await stream.aclose()
        await open_now_becomes(demo_lab, server.address, 0)
        last = await trio.open_tcp_stream(server.address, demo_lab.smtp_port)
        await open_now_becomes(demo_lab, server.address, 1)
        await last.aclose()
        await open_now_becomes(demo_lab, server.address, 0)
    assert demo_lab.smtp_connections(server.address) == 4
    assert demo_lab.smtp_max_concurrent(server.address) == 3
    assert demo_lab.smtp_connections(other.address) == 0
    assert demo_lab.smtp_max_concurrent(other.address) == 0
