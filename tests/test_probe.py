"""The STARTTLS probe end to end, against real servers on loopback.

Two kinds of server: small scripted servers written here, for exact byte-level
misbehaviour (malformed replies, stalls at a chosen phase), and the fixture lab
serving its worlds, for every SMTP behaviour and certificate kind it knows.
Every test runs on `loopback_clock`: deadlines of seconds pass in milliseconds, and
CPU time on a busy machine never expires one.
"""

from __future__ import annotations

import errno
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from OpenSSL import SSL
from trio.testing import MockClock

from scanner.core.assess import REASON_PLAINTEXT_INJECTION, indicators_for, session_failures
from scanner.core.reasons import after_tls_text, reason_text
from scanner.core.smtp import SmtpLimits
from scanner.lab import (
    CertificateKind,
    Lab,
    SmtpBehaviour,
    SmtpServer,
    default_mint,
    load_world,
    open_lab,
)
from scanner.models import (
    AddressStatus,
    IndicatorCode,
    InterruptionKind,
    ProbeOutcome,
    ResultType,
    SessionFailure,
)
from scanner.net.connect import connect_tcp
from scanner.net.probe import ProbeSettings, Transcript, connect_failure, probe
from scanner.net.tls import TlsClient, build_client_context
from scanner.net.trust import TrustStore

MX = "mx.probe.example"
STEP = 1.0  # virtual seconds (loopback_clock)


@pytest.fixture(scope="module")
def context() -> SSL.Context:
    return build_client_context()


@pytest.fixture(scope="module")
def lab_trust(tmp_path_factory: pytest.TempPathFactory) -> TrustStore:
    ca_file = tmp_path_factory.mktemp("ca") / "lab-ca.pem"
    ca_file.write_bytes(default_mint().ca_pem)
    return TrustStore.from_files([ca_file], include_certifi=False)


def reason_of(outcome: ProbeOutcome) -> str | None:
    """The outcome's not-testable reason as the JSON line words it."""
    return reason_text(outcome.interruption) if outcome.interruption is not None else None


def after_tls_of(outcome: ProbeOutcome) -> str | None:
    """The outcome's `after_tls_error` as the JSON line words it."""
    return after_tls_text(outcome.after_tls) if outcome.after_tls is not None else None


def settings(port: int, **changes: Any) -> ProbeSettings:
    base = ProbeSettings(
        smtp_port=port,
        ehlo_name="probe.scanner.example",
        step_timeout=STEP,
        greeting_timeout=STEP,
        total_timeout=10.0,
    )
    return replace(base, **changes)


# ---------------------------------------------------------------- scripted servers


class Peer:
    """The server side of one scripted connection: line reads and raw writes."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""
        self.received: list[bytes] = []
        self.done = trio.Event()  # set when the script ended and the connection is closed

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def line(self) -> bytes:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(4096)
            if not data:
                raise trio.BrokenResourceError("client closed")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        self.received.append(line.rstrip(b"\r"))
        return line.rstrip(b"\r")

    async def expect(self, verb: bytes, reply: bytes) -> None:
        line = await self.line()
        assert line.split(b" ")[0].upper() == verb, line
        await self.send(reply)


Script = Callable[[Peer], Awaitable[None]]


async def start_server(nursery: trio.Nursery, script: Script) -> tuple[int, list[Peer]]:
    """Serve `script` on 127.0.0.1 (a fresh port); returns the port and the peers seen."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    peers: list[Peer] = []

    async def handler(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        peers.append(peer)
        try:
            async with stream:
                await script(peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            pass
        finally:
            peer.done.set()

    nursery.start_soon(trio.serve_listeners, handler, listeners)
    return port, peers


async def run_probe(
    port: int, context: SSL.Context, trust: TrustStore, **changes: Any
) -> ProbeOutcome:
    return await probe(
        MX,
        "127.0.0.1",
        tls=TlsClient(context, trust),
        settings=settings(port, **changes),
        now=datetime.now(UTC),
    )


async def greet_and_ehlo(peer: Peer, ehlo: bytes = b"250-mx\r\n250 STARTTLS\r\n") -> None:
    await peer.send(b"220 mx.probe.example ESMTP\r\n")
    await peer.expect(b"EHLO", ehlo)


async def good_tls_session(
    peer: Peer, *, after_tls: bytes = b"250-mx\r\n250 SIZE 1000\r\n"
) -> None:
    await greet_and_ehlo(peer)
    await peer.expect(b"STARTTLS", b"220 go ahead\r\n")
    tls = trio.SSLStream(
        peer.stream, default_mint().context(CertificateKind.GOOD, MX), server_side=True
    )
    await tls.do_handshake()
    secure = Peer(tls)
    await secure.expect(b"EHLO", after_tls)
    await secure.expect(b"QUIT", b"221 bye\r\n")
    peer.received += secure.received


async def test_scripted_good_session(
    loopback_clock: MockClock, nursery: trio.Nursery, context: SSL.Context, lab_trust: TrustStore
) -> None:
    port, peers = await start_server(nursery, good_tls_session)
    outcome = await run_probe(port, context, lab_trust)
    assert outcome.status is AddressStatus.TESTED
    assert reason_of(outcome) is None
    assert outcome.local_ip == "127.0.0.1"
    assert outcome.greeting == "mx.probe.example ESMTP"
    assert outcome.ehlo_keywords == ("STARTTLS",)
    assert outcome.starttls_advertised
    assert outcome.starttls_reply == 220
    assert outcome.plaintext_injection == 0
    assert outcome.handshake_error is None
    assert outcome.tls is not None
    assert outcome.tls.version in ("TLSv1.2", "TLSv1.3")
    assert outcome.certificate is not None
    assert outcome.certificate.chain.trusted
    assert outcome.certificate.name_matches
    assert outcome.ehlo_after_tls == ("SIZE",)
    assert not outcome.starttls_after_tls
    assert after_tls_of(outcome) is None
    assert peers[0].received == [
        b"EHLO probe.scanner.example",
        b"STARTTLS",
        b"EHLO probe.scanner.example",
        b"QUIT",
    ]
    assert outcome.transcript[1:5] == (
        "S: 220 mx.probe.example ESMTP",
        "C: EHLO probe.scanner.example",
        "S: 250-mx",
        "S: 250 STARTTLS",
    )
    assert any(line.startswith("[tls] TLSv1.") for line in outcome.transcript)
    assert "C: QUIT" in outcome.transcript


async def test_scripted_session_untrusted_without_lab_ca(
    loopback_clock: MockClock, nursery: trio.Nursery, context: SSL.Context, tmp_path: Path
) -> None:
    """The failing twin of the good session: the same server, a trust store without the lab CA."""
    other = tmp_path / "other.pem"
    other.write_bytes(trustme.CA().cert_pem.bytes())
    port, _ = await start_server(nursery, good_tls_session)
    outcome = await run_probe(port, context, TrustStore.from_files([other], include_certifi=False))
    assert outcome.status is AddressStatus.TESTED
    assert outcome.certificate is not None
    assert not outcome.certificate.chain.trusted
    assert outcome.certificate.chain.verify_error == "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY"


async def _malformed_greeting(peer: Peer) -> None:
    await peer.send(b"hello there\r\n")
    await trio.sleep_forever()


async def _long_greeting_line(peer: Peer) -> None:
    await peer.send(b"220 " + b"x" * 100 + b"\r\n")
    await trio.sleep_forever()


async def _mismatched_ehlo(peer: Peer) -> None:
    await greet_and_ehlo(peer, b"250-mx\r\n251 STARTTLS\r\n")
    await trio.sleep_forever()


async def _close_on_ehlo(peer: Peer) -> None:
    await peer.send(b"220 mx ESMTP\r\n")
    await peer.line()


async def _silent_on_starttls(peer: Peer) -> None:
    await greet_and_ehlo(peer)
    await peer.line()
    await trio.sleep_forever()


async def _slow_greeting(peer: Peer) -> None:
    await trio.sleep(STEP / 2)
    await peer.send(b"220-mx\r\n")
    await trio.sleep(STEP / 2)
    await peer.send(b"220-still here\r\n")
    await trio.sleep_forever()


async def _ehlo_421(peer: Peer) -> None:
    await peer.send(b"220 mx ESMTP\r\n")
    await peer.expect(b"EHLO", b"421 4.7.0 try again later\r\n")
    await peer.expect(b"QUIT", b"221 bye\r\n")


async def _ehlo_and_helo_refused(peer: Peer) -> None:
    await peer.send(b"220 mx ESMTP\r\n")
    await peer.expect(b"EHLO", b"502 5.5.2 what\r\n")
    await peer.expect(b"HELO", b"550 5.7.1 go away\r\n")
    await peer.expect(b"QUIT", b"221 bye\r\n")


async def _refused_starttls(peer: Peer) -> None:
    await greet_and_ehlo(peer, b"250 mx\r\n")
    await peer.expect(b"STARTTLS", b"502 5.5.1 unrecognized\r\n")
    await peer.expect(b"QUIT", b"221 bye\r\n")


async def _stall_handshake(peer: Peer) -> None:
    await greet_and_ehlo(peer)
    await peer.expect(b"STARTTLS", b"220 go ahead\r\n")
    await trio.sleep_forever()


NOT_TESTABLE_SCRIPTS = [
    pytest.param(
        _malformed_greeting,
        {},
        "protocol-error: reply line does not start with a reply code: 'hello there'",
        id="malformed-greeting",
    ),
    pytest.param(
        _long_greeting_line,
        {"limits": SmtpLimits(max_line_length=64, max_reply_bytes=1024)},
        "protocol-error: reply line longer than 64 bytes",
        id="long-line",
    ),
    pytest.param(
        _mismatched_ehlo,
        {},
        "protocol-error: reply lines carry different codes: 250 then 251",
        id="mismatched-codes",
    ),
    pytest.param(_close_on_ehlo, {}, "closed:ehlo", id="closed-during-ehlo"),
    pytest.param(_silent_on_starttls, {}, "timeout:starttls", id="silent-on-starttls"),
    pytest.param(
        _slow_greeting,
        {"greeting_timeout": STEP * 5, "total_timeout": STEP},
        "timeout:greeting (partial 220- received)",
        id="session-deadline",
    ),
    pytest.param(_stall_handshake, {}, "timeout:handshake", id="handshake-stalled"),
    pytest.param(
        _stall_handshake,
        {"step_timeout": 5.0, "total_timeout": STEP / 2},
        "timeout:handshake",
        id="handshake-session-deadline",
    ),
    pytest.param(_ehlo_421, {}, "busy:421 4.7.0 try again later", id="ehlo-421"),
    pytest.param(_ehlo_and_helo_refused, {}, "ehlo-rejected:550 5.7.1 go away", id="helo-refused"),
]


@pytest.mark.parametrize(("script", "changes", "reason"), NOT_TESTABLE_SCRIPTS)
async def test_scripted_not_testable(
    loopback_clock: MockClock,
    nursery: trio.Nursery,
    context: SSL.Context,
    lab_trust: TrustStore,
    script: Script,
    changes: dict[str, Any],
    reason: str,
) -> None:
    port, _ = await start_server(nursery, script)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(port, context, lab_trust, **changes)
    assert outcome.status is AddressStatus.NOT_TESTABLE
    assert reason_of(outcome) == reason
    assert outcome.tls is None
    assert after_tls_of(outcome) is None
    assert outcome.handshake_error is None


@pytest.mark.parametrize(
    ("changes", "marker", "other", "reason"),
    [
        # The greeting deadline (5 s) is past the test's own deadline: only the session's
        # can end it, after the first 220- line arrived (at STEP / 2).
        pytest.param(
            {"greeting_timeout": STEP * 5, "total_timeout": STEP},
            "[session deadline during greeting]",
            "[timeout during greeting]",
            "timeout:greeting (partial 220- received)",
            id="session-deadline",
        ),
        # The step deadline is not the greeting's: a short one changes nothing.
        pytest.param(
            {"step_timeout": STEP * 0.3, "greeting_timeout": STEP * 5, "total_timeout": STEP},
            "[session deadline during greeting]",
            "[timeout during greeting]",
            "timeout:greeting (partial 220- received)",
            id="step-deadline-not-for-greeting",
        ),
        # The twin: the greeting deadline ends the greeting first, before any line came.
        pytest.param(
            {"greeting_timeout": STEP * 0.3, "total_timeout": STEP * 5},
            "[timeout during greeting]",
            "[session deadline during greeting]",
            "timeout:greeting",
            id="greeting-deadline",
        ),
    ],
)
async def test_which_deadline_ends_a_slow_greeting(
    loopback_clock: MockClock,
    nursery: trio.Nursery,
    context: SSL.Context,
    lab_trust: TrustStore,
    changes: dict[str, Any],
    marker: str,
    other: str,
    reason: str,
) -> None:
    port, _ = await start_server(nursery, _slow_greeting)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(port, context, lab_trust, **changes)
    assert outcome.status is AddressStatus.NOT_TESTABLE
    assert reason_of(outcome) == reason
    assert marker in outcome.transcript
    assert other not in outcome.transcript


# ---------------------------------------------------------------- greet pause (postscreen)

GREET_PAUSE = STEP / 2  # shorter than STEP, longer than the short step deadline below


async def _teaser_then_silence(peer: Peer) -> None:
    """postscreen with a greet pause longer than the client's patience: 220-, then nothing."""
    await peer.send(b"220-mx.probe.example greet pause\r\n")
    await listen(peer)


async def _greet_pause(peer: Peer) -> None:
    """postscreen passing a patient client: 220-, a pause, then the real greeting."""
    await peer.send(b"220-mx.probe.example greet pause\r\n")
    with trio.move_on_after(GREET_PAUSE):
        early = await peer.stream.receive_some(4096)
        peer.received.append(b"PREGREET " + bytes(early))  # what postscreen would log
    await good_tls_session(peer)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"greeting_timeout": 0.3}, id="greeting-deadline"),
        pytest.param({"greeting_timeout": 5.0, "total_timeout": 0.3}, id="session-deadline"),
    ],
)
async def test_partial_greeting_is_named_and_gets_no_quit(
    loopback_clock: MockClock,
    nursery: trio.Nursery,
    context: SSL.Context,
    lab_trust: TrustStore,
    changes: dict[str, Any],
) -> None:
    """A deadline in a greet pause: the 220- line is kept, and the connection just closes."""
    port, peers = await start_server(nursery, _teaser_then_silence)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(port, context, lab_trust, **changes)
        await peers[0].done.wait()
    assert outcome.status is AddressStatus.NOT_TESTABLE
    assert reason_of(outcome) == "timeout:greeting (partial 220- received)"
    assert outcome.transcript[1] == "S: 220-mx.probe.example greet pause"
    assert outcome.transcript[-1] == "[no QUIT: the greeting is incomplete]"
    assert peers[0].received == []  # no QUIT, nothing at all: postscreen logs no PREGREET
    assert not any(line.startswith("C: ") for line in outcome.transcript)


async def test_greet_pause_within_the_greeting_deadline_is_tested(
    loopback_clock: MockClock, nursery: trio.Nursery, context: SSL.Context, lab_trust: TrustStore
) -> None:
    """The twin: the pause ends before the greeting deadline, though after the step deadline."""
    port, peers = await start_server(nursery, _greet_pause)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(
            port, context, lab_trust, step_timeout=GREET_PAUSE / 2, greeting_timeout=STEP * 2
        )
    assert outcome.status is AddressStatus.TESTED
    assert reason_of(outcome) is None
    assert outcome.transcript[1:3] == (
        "S: 220-mx.probe.example greet pause",
        "S: 220 mx.probe.example ESMTP",
    )
    assert outcome.greeting == "mx.probe.example greet pause mx.probe.example ESMTP"
    assert peers[0].received[0] == b"EHLO probe.scanner.example"  # nothing before the greeting
    assert outcome.tls is not None


async def test_scripted_refused_starttls_is_tested(
    loopback_clock: MockClock, nursery: trio.Nursery, context: SSL.Context, lab_trust: TrustStore
) -> None:
    """The twin of the not-testable cases: a refusal of STARTTLS itself is a finding."""
    port, peers = await start_server(nursery, _refused_starttls)
    outcome = await run_probe(port, context, lab_trust)
    assert outcome.status is AddressStatus.TESTED
    assert (outcome.starttls_advertised, outcome.starttls_reply) == (False, 502)
    assert outcome.starttls_reply_text == "5.5.1 unrecognized"
    assert peers[0].received[-1] == b"QUIT"


async def _close_before_handshake(peer: Peer) -> None:
    await greet_and_ehlo(peer)
    await peer.expect(b"STARTTLS", b"220 go ahead\r\n")


async def _garbage_for_handshake(peer: Peer) -> None:
    await greet_and_ehlo(peer)
    await peer.expect(b"STARTTLS", b"220 go ahead\r\n")
    await peer.stream.receive_some(4096)  # the ClientHello
    await peer.send(b"500 what is this\r\n")


async def _alert_for_handshake(peer: Peer) -> None:
    await greet_and_ehlo(peer)
    await peer.expect(b"STARTTLS", b"220 go ahead\r\n")
    await peer.stream.receive_some(4096)  # the ClientHello
    await peer.send(bytes([21, 3, 3, 0, 2, 2, 40]))  # fatal handshake_failure alert


@pytest.mark.parametrize(
    ("script", "errors"),
    [
        # Which one depends on whether the ClientHello was sent before the close.
        pytest.param(
            _close_before_handshake, {"eof-during-handshake", "connection-lost"}, id="closed"
        ),
        pytest.param(_garbage_for_handshake, {"not-tls"}, id="garbage"),
        pytest.param(_alert_for_handshake, {"peer-alert: handshake-failure"}, id="alert"),
    ],
)
async def test_trouble_after_220_is_a_handshake_failure(
    loopback_clock: MockClock,
    nursery: trio.Nursery,
    context: SSL.Context,
    lab_trust: TrustStore,
    script: Script,
    errors: set[str],
) -> None:
    port, _ = await start_server(nursery, script)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(port, context, lab_trust)
    assert outcome.status is AddressStatus.TESTED
    assert outcome.starttls_reply == 220
    assert outcome.handshake_error in errors
    assert outcome.tls is None


async def test_connection_refused(
    loopback_clock: MockClock, context: SSL.Context, lab_trust: TrustStore
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there any more
    outcome = await run_probe(port, context, lab_trust)
    assert (outcome.status, reason_of(outcome)) == (AddressStatus.NOT_TESTABLE, "connect-refused")
    assert outcome.local_ip is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(ConnectionRefusedError(111, "refused"), "connect-refused", id="refused"),
        pytest.param(OSError(113, "no route"), "connect-failed: EHOSTUNREACH", id="unreachable"),
        pytest.param(OSError("no errno"), "connect-failed: no errno", id="no-errno"),
    ],
)
def test_connect_failure_reason(error: OSError, reason: str) -> None:
    assert reason_text(connect_failure(error)) == reason


async def test_a_refused_connect_carries_its_errno(loopback_clock: MockClock) -> None:
    """`connect_tcp` raises the kernel's error itself, so the reason is exact."""
    with socket.socket() as probe_port:  # a loopback port nobody listens on
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    with pytest.raises(ConnectionRefusedError) as caught:
        await connect_tcp("127.0.0.1", port)
    assert caught.value.errno == errno.ECONNREFUSED
    assert connect_failure(caught.value).kind is InterruptionKind.CONNECT_REFUSED


async def _chatty_greeting(peer: Peer) -> None:
    lines = [b"220-" + b"\x01line %d " % i + b"y" * 300 + b"\r\n" for i in range(150)]
    await peer.send(b"".join(lines) + b"220 ok\r\n")
    await peer.expect(b"EHLO", b"250 mx\r\n")
    await peer.expect(b"STARTTLS", b"454 later\r\n")
    await peer.expect(b"QUIT", b"221 bye\r\n")


async def test_transcript_is_bounded_and_sanitised(
    loopback_clock: MockClock, nursery: trio.Nursery, context: SSL.Context, lab_trust: TrustStore
) -> None:
    port, _ = await start_server(nursery, _chatty_greeting)
    outcome = await run_probe(port, context, lab_trust, limits=SmtpLimits(max_lines_per_reply=200))
    assert outcome.status is AddressStatus.TESTED
    assert outcome.starttls_reply == 454
    transcript = outcome.transcript
    assert len(transcript) == 100
    assert transcript[-1].startswith("[transcript truncated:")
    assert all(len(line) <= 200 for line in transcript)
    assert transcript[1].startswith("S: 220-\\x01line 0 yyy")
    assert all(c.isprintable() for line in transcript for c in line)


@pytest.mark.parametrize(
    ("lines", "kept"),
    [
        pytest.param(["a"] * 3, ("a", "a", "a"), id="short"),
        pytest.param(
            ["a"] * 5, ("a", "a", "a", "a", "[transcript truncated: 1 more lines]"), id="full"
        ),
        pytest.param(["x" * 12], ("xxxxxxx...",), id="long-line"),
        pytest.param(["\r\n\x00"], ("\\r\\n\\x00",), id="control-characters"),
    ],
)
def test_transcript_limits(lines: list[str], kept: tuple[str, ...]) -> None:
    transcript = Transcript(max_lines=5, max_length=10)
    for line in lines:
        transcript.add(line)
    assert transcript.lines() == kept


# ---------------------------------------------------------------- trouble after the handshake


async def tls_peer(peer: Peer) -> Peer:
    """Greet, take STARTTLS, complete the handshake; the secure side of `peer`."""
    await greet_and_ehlo(peer)
    await peer.expect(b"STARTTLS", b"220 go ahead\r\n")
    tls = trio.SSLStream(
        peer.stream, default_mint().context(CertificateKind.GOOD, MX), server_side=True
    )
    await tls.do_handshake()
    return Peer(tls)


async def _stall_ehlo_after_tls(peer: Peer) -> None:
    secure = await tls_peer(peer)
    await secure.line()
    await trio.sleep_forever()


async def _close_after_handshake(peer: Peer) -> None:
    await tls_peer(peer)  # the TCP connection closes under the TLS session


async def _close_notify_after_handshake(peer: Peer) -> None:
    secure = await tls_peer(peer)
    await secure.stream.aclose()


async def _reject_ehlo_after_tls(peer: Peer) -> None:
    secure = await tls_peer(peer)
    await secure.expect(b"EHLO", b"554 5.7.0 no mail for you\r\n")
    await secure.expect(b"QUIT", b"221 bye\r\n")


async def _garble_ehlo_after_tls(peer: Peer) -> None:
    secure = await tls_peer(peer)
    await secure.expect(b"EHLO", b"garbage\r\n")
    await trio.sleep_forever()


async def _stall_quit_after_tls(peer: Peer) -> None:
    secure = await tls_peer(peer)
    await secure.expect(b"EHLO", b"250-mx\r\n250 SIZE 1000\r\n")
    await secure.line()
    await trio.sleep_forever()


async def _close_on_quit_after_tls(peer: Peer) -> None:
    secure = await tls_peer(peer)
    await secure.expect(b"EHLO", b"250-mx\r\n250 SIZE 1000\r\n")
    await secure.line()


async def _stall_quit_before_tls(peer: Peer) -> None:
    await greet_and_ehlo(peer, b"250 mx\r\n")
    await peer.expect(b"STARTTLS", b"454 4.7.0 not now\r\n")
    await peer.line()
    await trio.sleep_forever()


FAST = {"step_timeout": 0.3}
AFTER_TLS_SCRIPTS = [
    pytest.param(_stall_ehlo_after_tls, FAST, "timeout:ehlo-after-tls", id="ehlo-stalled"),
    pytest.param(
        _stall_ehlo_after_tls,
        {"step_timeout": 5.0, "total_timeout": 0.5},
        "timeout:ehlo-after-tls",
        id="ehlo-session-deadline",
    ),
    pytest.param(_close_after_handshake, FAST, "closed:ehlo-after-tls", id="tcp-closed"),
    pytest.param(_close_notify_after_handshake, FAST, "closed:ehlo-after-tls", id="close-notify"),
    pytest.param(
        _reject_ehlo_after_tls,
        FAST,
        "ehlo-after-tls rejected: 554 5.7.0 no mail for you",
        id="ehlo-rejected",
    ),
    pytest.param(
        _garble_ehlo_after_tls,
        FAST,
        "protocol-error:ehlo-after-tls: reply line does not start with a reply code: 'garbage'",
        id="ehlo-garbled",
    ),
    pytest.param(_stall_quit_after_tls, FAST, "timeout:quit", id="quit-stalled"),
    pytest.param(_close_on_quit_after_tls, FAST, "closed:quit", id="quit-closed"),
    # The twins: nothing goes wrong after TLS, or TLS never happened.
    pytest.param(good_tls_session, FAST, None, id="good"),
    pytest.param(_stall_quit_before_tls, FAST, None, id="quit-stalled-before-tls"),
]


@pytest.mark.parametrize(("script", "changes", "error"), AFTER_TLS_SCRIPTS)
async def test_trouble_after_tls_is_recorded(
    loopback_clock: MockClock,
    nursery: trio.Nursery,
    context: SSL.Context,
    lab_trust: TrustStore,
    script: Script,
    changes: dict[str, Any],
    error: str | None,
) -> None:
    """Trouble after the handshake keeps the address tested and its TLS facts."""
    port, _ = await start_server(nursery, script)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(port, context, lab_trust, **changes)
    assert outcome.status is AddressStatus.TESTED
    assert reason_of(outcome) is None
    assert after_tls_of(outcome) == error
    if script is _stall_quit_before_tls:
        assert (outcome.starttls_reply, outcome.tls) == (454, None)
        assert "[timeout during quit]" in outcome.transcript
        return
    assert outcome.handshake_error is None
    assert outcome.tls is not None
    assert outcome.certificate is not None
    assert outcome.certificate.chain.trusted
    ehlo_answered = error is None or error.endswith(":quit")
    assert (outcome.ehlo_after_tls is not None) is ehlo_answered


# ---------------------------------------------------------------- against the lab

PROBE_WORLD = Path(__file__).resolve().parent.parent / "fixtures" / "world-probe.toml"
INJECTED_BYTES = len(b"250 injected\r\n")

# What a probe must record for each lab behaviour (with a good certificate).
BEHAVIOUR_FACTS: dict[SmtpBehaviour, dict[str, object]] = {
    SmtpBehaviour.GOOD: {
        "starttls_advertised": True,
        "starttls_reply": 220,
        "handshake_error": None,
        "plaintext_injection": 0,
        "starttls_after_tls": False,
    },
    SmtpBehaviour.GOOD_MULTILINE_GREETING: {
        "starttls_advertised": True,
        "starttls_reply": 220,
        "handshake_error": None,
    },
    SmtpBehaviour.NO_STARTTLS: {
        "starttls_advertised": False,
        "masked_keyword": None,
        "starttls_reply": 502,
        "tls": None,
        "handshake_error": None,
    },
    SmtpBehaviour.STARTTLS_HIDDEN: {
        "starttls_advertised": False,
        "masked_keyword": None,
        "starttls_reply": 220,
        "handshake_error": None,
    },
    SmtpBehaviour.STARTTLS_MASKED: {
        "starttls_advertised": False,
        "masked_keyword": "XXXXXXXA",
        "starttls_reply": 500,
        "starttls_reply_text": "#5.5.1 command not recognized",
        "tls": None,
    },
    SmtpBehaviour.STARTTLS_454: {
        "starttls_advertised": True,
        "starttls_reply": 454,
        "tls": None,
        "handshake_error": None,
    },
    SmtpBehaviour.STARTTLS_220_NO_TLS: {
        "starttls_advertised": True,
        "starttls_reply": 220,
        "tls": None,
        "handshake_error": "not-tls",
    },
    SmtpBehaviour.PLAINTEXT_INJECTION: {
        "starttls_advertised": True,
        "starttls_reply": 220,
        "plaintext_injection": INJECTED_BYTES,
        "handshake_error": None,
    },
    SmtpBehaviour.HELO_ONLY: {
        "helo_only": True,
        "ehlo_keywords": (),
        "starttls_advertised": False,
        "starttls_reply": 502,
        "tls": None,
    },
    SmtpBehaviour.STARTTLS_AFTER_TLS: {
        "starttls_advertised": True,
        "handshake_error": None,
        "starttls_after_tls": True,
    },
    SmtpBehaviour.WEAK_TLS: {
        "starttls_advertised": True,
        "starttls_reply": 220,
        "handshake_error": None,
    },
    SmtpBehaviour.STARTTLS_CLOSE: {
        "starttls_advertised": True,
        "starttls_reply": None,
        "starttls_reply_text": "connection closed",
        "tls": None,
        "handshake_error": None,
    },
    SmtpBehaviour.LATE_INJECTION: {
        "starttls_advertised": True,
        "starttls_reply": 220,
        "plaintext_injection": INJECTED_BYTES,
        "handshake_error": None,
    },
}
NOT_TESTABLE_REASONS: dict[SmtpBehaviour, str] = {
    SmtpBehaviour.GREETING_421: "busy:421 4.3.2 ",
    SmtpBehaviour.GREETING_554: "rejected:554 5.3.2 ",
    SmtpBehaviour.SILENT: "timeout:greeting",
    SmtpBehaviour.FLOOD: "protocol-error: more than 100 lines in one reply",
    SmtpBehaviour.CLOSED: "connect-refused",
    SmtpBehaviour.HANDSHAKE_STALL: "timeout:handshake",
}
TLS_BEHAVIOURS = frozenset(
    {
        SmtpBehaviour.GOOD,
        SmtpBehaviour.GOOD_MULTILINE_GREETING,
        SmtpBehaviour.STARTTLS_HIDDEN,
        SmtpBehaviour.PLAINTEXT_INJECTION,
        SmtpBehaviour.STARTTLS_AFTER_TLS,
        SmtpBehaviour.WEAK_TLS,
        SmtpBehaviour.LATE_INJECTION,
    }
)
# TLS versions each TLS behaviour may negotiate.
MODERN_TLS = ("TLSv1.2", "TLSv1.3")
TLS_VERSIONS: dict[SmtpBehaviour, tuple[str, ...]] = {SmtpBehaviour.WEAK_TLS: ("TLSv1", "TLSv1.1")}
# (verify_error, name_matches) for each certificate kind, checked against the MX host name.
CERTIFICATE_VERDICTS: dict[CertificateKind, tuple[str | None, bool]] = {
    CertificateKind.EXPIRED_INTERMEDIATE: ("X509_V_ERR_CERT_HAS_EXPIRED", True),
    CertificateKind.GOOD: (None, True),
    CertificateKind.WILDCARD: (None, True),
    CertificateKind.WRONG_NAME: (None, False),
    CertificateKind.EXPIRED: ("X509_V_ERR_CERT_HAS_EXPIRED", True),
    CertificateKind.NOT_YET_VALID: ("X509_V_ERR_CERT_NOT_YET_VALID", True),
    CertificateKind.UNKNOWN_CA: ("X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY", True),
    CertificateKind.SELF_SIGNED: ("X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT", True),
    CertificateKind.MISSING_INTERMEDIATE: ("X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY", True),
    CertificateKind.INTERMEDIATE: (None, True),
    CertificateKind.EXPIRED_WRONG_NAME: ("X509_V_ERR_CERT_HAS_EXPIRED", False),
}


def test_every_lab_behaviour_has_an_expectation() -> None:
    assert set(BEHAVIOUR_FACTS) | set(NOT_TESTABLE_REASONS) == set(SmtpBehaviour)
    assert set(CERTIFICATE_VERDICTS) == set(CertificateKind)
    probe_world = load_world(PROBE_WORLD)
    assert {s.behaviour for s in probe_world.servers} == set(SmtpBehaviour)
    assert {s.certificate for s in probe_world.servers} == set(CertificateKind)


def check_outcome(outcome: ProbeOutcome, server: SmtpServer) -> None:
    """Assert what a probe of `server` must have recorded, given its behaviour and certificate."""
    behaviour = server.behaviour
    if behaviour in NOT_TESTABLE_REASONS:
        assert outcome.status is AddressStatus.NOT_TESTABLE
        assert reason_of(outcome) is not None
        assert reason_of(outcome).startswith(NOT_TESTABLE_REASONS[behaviour])
        assert outcome.tls is None
        return
    assert outcome.status is AddressStatus.TESTED
    assert reason_of(outcome) is None
    assert outcome.local_ip is not None
    for name, value in BEHAVIOUR_FACTS[behaviour].items():
        assert getattr(outcome, name) == value, name
    if behaviour not in TLS_BEHAVIOURS:
        assert outcome.certificate is None
        assert outcome.ehlo_after_tls is None
        return
    assert outcome.tls is not None
    assert outcome.tls.version in TLS_VERSIONS.get(behaviour, MODERN_TLS)
    assert f"[tls] {outcome.tls.version} {outcome.tls.cipher}" in outcome.transcript
    assert outcome.ehlo_after_tls is not None
    assert "PIPELINING" in outcome.ehlo_after_tls
    certificate = outcome.certificate
    assert certificate is not None
    verify_error, name_matches = CERTIFICATE_VERDICTS[server.certificate]
    assert certificate.chain.verify_error == verify_error
    if server.certificate is CertificateKind.EXPIRED_INTERMEDIATE:
        assert certificate.chain.error_depth == 1
        assert len(outcome.tls.chain) == 2
        assert outcome.tls.chain[1].not_after < datetime.now(UTC) < outcome.tls.chain[0].not_after
    elif verify_error is not None:
        assert certificate.chain.error_depth == 0
    assert certificate.chain.trusted is (verify_error is None)
    assert certificate.name_matches is name_matches
    assert outcome.transcript[-2:] == ("C: QUIT", "S: 221 2.0.0 Bye")
    assert after_tls_of(outcome) is None


async def probe_lab_server(
    lab: Lab, server: SmtpServer, context: SSL.Context, hostname: str | None = None
) -> ProbeOutcome:
    return await probe(
        hostname or server.hostnames[0],
        server.address,
        tls=TlsClient(context, TrustStore.from_files([lab.ca_file], include_certifi=False)),
        settings=settings(lab.smtp_port),
        now=datetime.now(UTC),
    )


PROBE_SERVERS = load_world(PROBE_WORLD).servers


@pytest.mark.parametrize(
    "server",
    [pytest.param(s, id=f"{s.behaviour.value}+{s.certificate.value}") for s in PROBE_SERVERS],
)
async def test_probe_lab_server(
    loopback_clock: MockClock, server: SmtpServer, context: SSL.Context, tmp_path: Path
) -> None:
    async with open_lab(load_world(PROBE_WORLD), tmp_path) as lab:
        with trio.fail_after(STEP * 5):
            outcome = await probe_lab_server(lab, server, context)
        check_outcome(outcome, server)
        if server.behaviour is not SmtpBehaviour.CLOSED:
            assert lab.smtp_connections(server.address) == 1


async def test_certificate_is_checked_against_the_mx_name(
    loopback_clock: MockClock, context: SSL.Context, tmp_path: Path
) -> None:
    """The twin of the good server: same certificate, probed as another MX host name."""
    world = load_world(PROBE_WORLD)
    good = world.server("127.0.9.1")
    assert good is not None
    async with open_lab(world, tmp_path) as lab:
        outcome = await probe_lab_server(lab, good, context, hostname="other.probe.example")
    assert outcome.certificate is not None
    assert outcome.certificate.chain.trusted
    assert not outcome.certificate.name_matches


async def test_multiline_greeting_is_recorded_whole(
    loopback_clock: MockClock, context: SSL.Context, tmp_path: Path
) -> None:
    world = load_world(PROBE_WORLD)
    server = world.server("127.0.9.2")
    assert server is not None
    async with open_lab(world, tmp_path) as lab:
        outcome = await probe_lab_server(lab, server, context)
    assert outcome.greeting == (
        "multiline.probe.example ESMTP scanner lab This server greets on several lines. Ready"
    )
    assert outcome.transcript[1:4] == (
        "S: 220-multiline.probe.example ESMTP scanner lab",
        "S: 220-This server greets on several lines.",
        "S: 220 Ready",
    )


async def test_plaintext_injection_is_not_fed_to_tls(
    loopback_clock: MockClock, context: SSL.Context, tmp_path: Path
) -> None:
    world = load_world(PROBE_WORLD)
    server = world.server("127.0.9.8")
    assert server is not None
    async with open_lab(world, tmp_path) as lab:
        outcome = await probe_lab_server(lab, server, context)
    assert outcome.plaintext_injection == INJECTED_BYTES
    assert "[plaintext after 220] 250 injected\\r\\n" in outcome.transcript
    assert outcome.tls is not None  # the handshake still ran on the bytes after the injection


async def test_every_demo_world_server(
    demo_lab: Lab, context: SSL.Context, loopback_clock: MockClock
) -> None:
    """Every SMTP server of the demo world, probed at once, records what its behaviour implies.

    On virtual time: some 40 probes at once must not let CPU load decide whether the
    lab's late plaintext injection arrives within the injection wait.
    """
    outcomes: dict[str, ProbeOutcome] = {}

    async def one(server: SmtpServer) -> None:
        outcomes[server.address] = await probe_lab_server(demo_lab, server, context)

    with trio.fail_after(STEP * 5):
        async with trio.open_nursery() as nursery:
            for server in demo_lab.world.servers:
                nursery.start_soon(one, server)
    for server in demo_lab.world.servers:
        check_outcome(outcomes[server.address], server)


# ---------------------------------------------------------------- invalid MX names


@pytest.mark.parametrize(
    ("hostname", "why"),
    [
        pytest.param("-mx.x.example", "starts or ends with a hyphen", id="leading-hyphen"),
        pytest.param("*.x.example", "invalid characters", id="wildcard"),
        pytest.param("mx .x.example", "invalid characters", id="space"),
        pytest.param("a..x.example", "empty label", id="empty-label"),
        # The twins: names the probe takes as they are.
        pytest.param("mx_1.x.example", None, id="underscore-tolerated"),
        pytest.param("MX.X.Example.", None, id="upper-case-trailing-dot"),
        pytest.param("127.0.0.1", None, id="ip-literal"),
    ],
)
async def test_invalid_mx_name_is_not_testable_and_not_contacted(
    loopback_clock: MockClock,
    nursery: trio.Nursery,
    context: SSL.Context,
    lab_trust: TrustStore,
    hostname: str,
    why: str | None,
) -> None:
    port, peers = await start_server(nursery, good_tls_session)
    with trio.fail_after(STEP * 4):
        outcome = await probe(
            hostname,
            "127.0.0.1",
            tls=TlsClient(context, lab_trust),
            settings=settings(port),
            now=datetime.now(UTC),
        )
    if why is None:
        assert outcome.status is AddressStatus.TESTED
        assert outcome.tls is not None
        assert len(peers) == 1
        return
    assert outcome.status is AddressStatus.NOT_TESTABLE
    assert reason_of(outcome) is not None
    assert reason_of(outcome).startswith("invalid-mx-name: ")
    assert why in reason_of(outcome)
    assert peers == []


# ---------------------------------------------------------------- STARTTLS answered by no reply


async def _close_on_starttls(peer: Peer) -> None:
    await greet_and_ehlo(peer)
    await peer.line()


async def _reset_on_starttls(peer: Peer) -> None:
    await greet_and_ehlo(peer)
    await peer.line()
    assert isinstance(peer.stream, trio.SocketStream)
    # SO_LINGER 0: the close sends a reset instead of a FIN.
    peer.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _garbage_on_starttls(peer: Peer) -> None:
    await greet_and_ehlo(peer)
    await peer.expect(b"STARTTLS", b"hello?\r\n")
    await peer.line()  # the best-effort QUIT


async def _oversized_on_starttls(peer: Peer) -> None:
    await greet_and_ehlo(peer)
    await peer.expect(b"STARTTLS", b"454-" + b"x" * 100 + b"\r\n")
    await peer.line()  # the best-effort QUIT


async def _close_on_hidden_starttls(peer: Peer) -> None:
    await greet_and_ehlo(peer, b"250 mx\r\n")
    await peer.line()


@pytest.mark.parametrize(
    ("script", "changes", "advertised", "text"),
    [
        pytest.param(_close_on_starttls, {}, True, "connection closed", id="closed"),
        pytest.param(_reset_on_starttls, {}, True, "connection closed", id="reset"),
        pytest.param(
            _garbage_on_starttls,
            {},
            True,
            "protocol-error: reply line does not start with a reply code: 'hello?'",
            id="malformed",
        ),
        pytest.param(
            _oversized_on_starttls,
            {"limits": SmtpLimits(max_line_length=64, max_reply_bytes=1024)},
            True,
            "protocol-error: reply line longer than 64 bytes",
            id="over-the-cap",
        ),
        pytest.param(
            _close_on_hidden_starttls, {}, False, "connection closed", id="closed-not-advertised"
        ),
    ],
)
async def test_starttls_without_a_reply_is_tested(
    loopback_clock: MockClock,
    nursery: trio.Nursery,
    context: SSL.Context,
    lab_trust: TrustStore,
    script: Script,
    changes: dict[str, Any],
    advertised: bool,
    text: str,
) -> None:
    """docs/output.md#starttls-statuses: anything but 220 to STARTTLS is a finding; the twin (no reply in time)
    is `timeout:starttls` among the not-testable cases."""
    port, _ = await start_server(nursery, script)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(port, context, lab_trust, **changes)
    assert outcome.status is AddressStatus.TESTED
    assert reason_of(outcome) is None
    assert outcome.starttls_advertised is advertised
    assert (outcome.starttls_reply, outcome.starttls_reply_text) == (None, text)
    assert outcome.tls is None
    assert outcome.handshake_error is None


# ---------------------------------------------------------------- injection in a later write


async def _late_injection(peer: Peer, *, delay: float) -> None:
    await greet_and_ehlo(peer)
    await peer.expect(b"STARTTLS", b"220 go ahead\r\n")
    await trio.sleep(delay)
    await peer.send(b"250 late\r\n")
    await _serve_tls(peer)


async def _injection_after_client_hello(peer: Peer) -> None:
    """The late bytes follow the ClientHello, so they can never share a read with the 220."""
    await greet_and_ehlo(peer)
    await peer.expect(b"STARTTLS", b"220 go ahead\r\n")
    hello = await peer.stream.receive_some(4096)
    assert hello[:1] == b"\x16"  # the ClientHello
    await peer.send(b"250 late\r\n")
    while await peer.stream.receive_some(4096):  # until the client gives up
        pass


async def _serve_tls(peer: Peer) -> None:
    tls = trio.SSLStream(
        peer.stream, default_mint().context(CertificateKind.GOOD, MX), server_side=True
    )
    await tls.do_handshake()
    secure = Peer(tls)
    await secure.expect(b"EHLO", b"250 mx\r\n")
    await secure.expect(b"QUIT", b"221 bye\r\n")


@pytest.mark.parametrize(
    ("delay", "wait", "injected"),
    [
        pytest.param(0.02, 0.5, len(b"250 late\r\n"), id="late-write-counted"),
        pytest.param(0.0, 0.5, len(b"250 late\r\n"), id="immediate-write-counted"),
        # The twin: the probe does not wait, so the late bytes (sent once the
        # ClientHello is in) reach TLS and break it.
        pytest.param(None, 0.0, 0, id="no-wait"),
    ],
)
async def test_injection_in_a_later_write(
    loopback_clock: MockClock,
    nursery: trio.Nursery,
    context: SSL.Context,
    lab_trust: TrustStore,
    delay: float | None,
    wait: float,
    injected: int,
) -> None:
    async def script(peer: Peer) -> None:
        if delay is None:
            await _injection_after_client_hello(peer)
        else:
            await _late_injection(peer, delay=delay)

    port, _ = await start_server(nursery, script)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(port, context, lab_trust, injection_wait=wait)
    assert outcome.status is AddressStatus.TESTED
    assert outcome.plaintext_injection == injected
    if injected:
        assert "[plaintext after 220] 250 late\\r\\n" in outcome.transcript
        assert outcome.tls is not None  # the injected bytes were not handed to TLS
        assert outcome.handshake_error is None
    else:
        assert outcome.tls is None
        assert outcome.handshake_error is not None


async def _starttls_answered_in_advance(peer: Peer) -> None:
    """Pre-command response injection: a 220 queued behind the EHLO reply, before STARTTLS."""
    await peer.send(b"220 mx.probe.example ESMTP\r\n")
    await peer.expect(b"EHLO", b"250-mx\r\n250 STARTTLS\r\n220 go ahead\r\n")
    assert await peer.line() == b"STARTTLS"  # already "answered": no reply from here
    await _serve_tls(peer)


@pytest.mark.parametrize(
    ("script", "injected"),
    [
        pytest.param(_starttls_answered_in_advance, len(b"220 go ahead\r\n"), id="in-advance"),
        # The twin: the same 220, sent once STARTTLS is in.
        pytest.param(good_tls_session, 0, id="in-turn"),
    ],
)
async def test_reply_queued_before_starttls_is_injection(
    loopback_clock: MockClock,
    nursery: trio.Nursery,
    context: SSL.Context,
    lab_trust: TrustStore,
    script: Script,
    injected: int,
) -> None:
    port, _ = await start_server(nursery, script)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(port, context, lab_trust)
    assert outcome.status is AddressStatus.TESTED
    assert outcome.starttls_reply == 220
    assert outcome.tls is not None  # the handshake itself went fine
    assert outcome.plaintext_injection == injected
    note = f"[unsolicited data before STARTTLS: {injected} bytes]"
    assert (note in outcome.transcript) is bool(injected)
    if injected:
        assert outcome.transcript.index(note) + 1 == outcome.transcript.index("C: STARTTLS")
    failures = session_failures(outcome, policy=None, in_policy=None)
    assert (
        SessionFailure(ResultType.VALIDATION_FAILURE, REASON_PLAINTEXT_INJECTION) in failures
    ) is bool(injected)
    codes = {i.code for i in indicators_for(outcome, mx=MX, policy=None, in_policy=None)}
    assert (IndicatorCode.PLAINTEXT_INJECTION in codes) is bool(injected)


async def test_injection_wait_leaves_a_quiet_tls_server_alone(
    loopback_clock: MockClock, nursery: trio.Nursery, context: SSL.Context, lab_trust: TrustStore
) -> None:
    port, _ = await start_server(nursery, good_tls_session)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(port, context, lab_trust, injection_wait=0.2)
    assert outcome.plaintext_injection == 0
    assert outcome.tls is not None
    assert outcome.certificate is not None
    assert outcome.certificate.chain.trusted
    assert after_tls_of(outcome) is None


# ---------------------------------------------------------------- always QUIT


async def listen(peer: Peer) -> None:
    """Record the client's lines until it closes."""
    with trio.move_on_after(STEP * 3):
        try:
            while True:
                await peer.line()
        except trio.BrokenResourceError:
            pass


async def _malformed_greeting_then_listen(peer: Peer) -> None:
    await peer.send(b"hello there\r\n")
    await listen(peer)


async def _flood_ehlo_then_listen(peer: Peer) -> None:
    await peer.send(b"220 mx ESMTP\r\n")
    await peer.line()
    await peer.send(b"250-flood\r\n" * 200)
    await listen(peer)


async def _silent_then_listen(peer: Peer) -> None:
    await listen(peer)


async def _stall_ehlo_then_listen(peer: Peer) -> None:
    await peer.send(b"220 mx ESMTP\r\n")
    await listen(peer)


async def _garble_ehlo_after_tls_then_listen(peer: Peer) -> None:
    secure = await tls_peer(peer)
    await secure.expect(b"EHLO", b"garbage\r\n")
    await listen(secure)
    peer.received += secure.received


async def _close_on_ehlo_then_listen(peer: Peer) -> None:
    await peer.send(b"220 mx ESMTP\r\n")
    await peer.line()


@pytest.mark.parametrize(
    ("script", "changes", "quit_sent"),
    [
        # Before a complete greeting nothing is sent (a greet pause would log a PREGREET).
        pytest.param(_malformed_greeting_then_listen, {}, False, id="malformed-greeting"),
        pytest.param(
            _flood_ehlo_then_listen,
            {"limits": SmtpLimits(max_lines_per_reply=100)},
            True,
            id="reply-cap",
        ),
        pytest.param(_silent_then_listen, {"greeting_timeout": 0.3}, False, id="greeting-timeout"),
        pytest.param(_stall_ehlo_then_listen, {"step_timeout": 0.3}, True, id="ehlo-timeout"),
        pytest.param(
            _stall_ehlo_then_listen,
            {"step_timeout": 5.0, "total_timeout": 0.3},
            True,
            id="session-deadline",
        ),
        pytest.param(_garble_ehlo_after_tls_then_listen, {}, True, id="malformed-after-tls"),
        # The twin: the server closed, so there is nobody to say QUIT to.
        pytest.param(_close_on_ehlo_then_listen, {}, False, id="closed"),
    ],
)
async def test_quit_after_trouble(
    loopback_clock: MockClock,
    nursery: trio.Nursery,
    context: SSL.Context,
    lab_trust: TrustStore,
    script: Script,
    changes: dict[str, Any],
    quit_sent: bool,
) -> None:
    """docs/architecture.md#always-quit: a best-effort QUIT after a fault or a deadline."""
    port, peers = await start_server(nursery, script)
    with trio.fail_after(STEP * 4):
        outcome = await run_probe(port, context, lab_trust, **changes)
        await peers[0].done.wait()
    assert (peers[0].received[-1:] == [b"QUIT"]) is quit_sent
    assert ("C: QUIT" in outcome.transcript) is quit_sent
