"""Lab SMTP servers: one behaviour per address, each a deliberate (mis)implementation.

Theory of operation: every lab SMTP address listens on the shared SMTP port and
one handler serves them all, looking the behaviour up by the local address the
client reached. A session greets, answers EHLO/HELO/NOOP/RSET/QUIT and
STARTTLS according to the behaviour, upgrades to TLS with the certificate the
world assigns (chosen by SNI among the hostnames of the address), and after TLS
answers EHLO and QUIT properly. MAIL, RCPT and DATA are refused: the lab
accepts no mail.

Wire forms used (RFC 5321 §4.2 replies, RFC 3207 §4 STARTTLS):
- masked keyword: `250-XXXXXXXA`, STARTTLS answered `500 #5.5.1 command not recognized`
  (the signature of an SMTP-inspecting firewall);
- plaintext injection: `220 2.0.0 Ready to start TLS\\r\\n250 injected\\r\\n` in one write;
- late injection: the 220, then `250 injected\\r\\n` in a write `LATE_INJECTION_DELAY` later;
- STARTTLS close: the connection is closed in answer to STARTTLS (no reply at all);
- handshake stall: the 220, then silence (the ClientHello is read and ignored);
- weak TLS: a good dialogue whose TLS side speaks only TLS 1.0 and 1.1 (RFC 8996
  deprecates both), so a client refusing them fails the handshake;
- custom greeting: the world's `greeting` lines after the behaviour's code (220, 421 or
  554), encoded as UTF-8 and nothing else: hostile text reaches the client byte for byte.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import trio

from scanner.lab.certificates import CertificateMint
from scanner.lab.connections import IDLE_TIMEOUT, ConnectionStats, local_ip
from scanner.lab.latency import delayed_sends
from scanner.lab.world import CertificateKind, SmtpBehaviour, SmtpServer

MAX_LINE = 4096  # RFC 5321 §4.5.3.1.4 allows 512; the lab is generous but bounded
FLOOD_LINE = b"250-" + b"x" * 72 + b"\r\n"
FLOOD_LIMIT = 64 * 1024 * 1024  # bytes sent by a flooding server before it gives up
NO_TLS_GARBAGE = b"this is not TLS, just plaintext\r\n"
EXTENSIONS = ("PIPELINING", "SIZE 10240000", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME")
MASKED_STARTTLS = "XXXXXXXA"
INJECTED = b"250 injected\r\n"
LATE_INJECTION_DELAY = 0.02  # seconds between the 220 and the late plaintext

Send = Callable[[bytes], Awaitable[None]]

# How each behaviour answers STARTTLS before TLS, when it does not start TLS.
STARTTLS_REFUSALS: Mapping[SmtpBehaviour, bytes] = {
    SmtpBehaviour.NO_STARTTLS: b"502 5.5.1 STARTTLS not implemented\r\n",
    SmtpBehaviour.HELO_ONLY: b"502 5.5.1 command not implemented\r\n",
    SmtpBehaviour.STARTTLS_MASKED: b"500 #5.5.1 command not recognized\r\n",
    SmtpBehaviour.STARTTLS_454: b"454 4.7.0 TLS not available due to temporary reason\r\n",
}


class LineTooLongError(Exception):
    """The client sent a line over MAX_LINE bytes."""


class LineReader:
    """CRLF (or bare LF) terminated lines from a stream, bounded by MAX_LINE."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def read_line(self) -> bytes | None:
        """The next line without its terminator; None at end of stream."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line.removesuffix(b"\r")
            if len(self.buffer) > MAX_LINE:
                raise LineTooLongError
            data = await self.stream.receive_some(4096)
            if not data:
                return None
            self.buffer += data


@dataclass(frozen=True, slots=True)
class SmtpHandler:
    """Serves every SMTP address of a lab; `servers` maps address to its server."""

    servers: Mapping[str, SmtpServer]
    context_for: Callable[[SmtpServer], ssl.SSLContext]
    stats: ConnectionStats
    latency: float = 0.0  # seconds added before every reply and TLS flight reaches the client

    async def __call__(self, stream: trio.SocketStream) -> None:
        ip = local_ip(stream)
        server = self.servers.get(ip)
        with self.stats.track(ip):
            try:
                async with delayed_sends(stream, self.latency) as link:
                    if server is not None and _over_limit(server, self.stats.open_now(ip)):
                        # Postfix anvil: "421 4.7.0 <host> Error: too many connections from <ip>"
                        await link.send_all(
                            f"421 4.7.0 {server.hostnames[0]} Error: too many connections\r\n".encode()
                        )
                    elif server is not None:
                        await _Session(server, link, self.context_for).run()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away or the TLS handshake failed
            finally:
                await trio.aclose_forcefully(stream)


def _over_limit(server: SmtpServer, open_now: int) -> bool:
    """More connections open to the server's address than its `connection_limit` allows."""
    return server.connection_limit is not None and open_now > server.connection_limit


def smtp_context_factory(mint: CertificateMint) -> Callable[[SmtpServer], ssl.SSLContext]:
    """One SNI-dispatching server context per address, made on first use."""
    contexts: dict[str, ssl.SSLContext] = {}

    def context_for(server: SmtpServer) -> ssl.SSLContext:
        context = contexts.get(server.address)
        if context is None:

            def choose(server_name: str | None) -> tuple[CertificateKind, str]:
                name = (server_name or "").lower()
                host = name if name in server.hostnames else server.hostnames[0]
                return server.certificate, host

            legacy_tls = server.behaviour is SmtpBehaviour.WEAK_TLS
            context = mint.dispatching_context(choose, legacy_tls=legacy_tls)
            contexts[server.address] = context
        return context

    return context_for


class _Session:
    """One SMTP session with one client."""

    def __init__(
        self,
        server: SmtpServer,
        stream: trio.abc.Stream,
        context_for: Callable[[SmtpServer], ssl.SSLContext],
    ) -> None:
        self.server = server
        self.behaviour = server.behaviour
        self.host = server.hostnames[0]
        self.raw = stream
        self.context_for = context_for

    async def run(self) -> None:
        behaviour = self.behaviour
        if behaviour is SmtpBehaviour.SILENT:
            await self._drain()
            return
        if behaviour is SmtpBehaviour.GREETING_421:
            # RFC 5321 §3.1: a 421 greeting closes the connection.
            await self.raw.send_all(
                self._greeting(421, [f"4.3.2 {self.host} busy, try again later"])
            )
            return
        if behaviour is SmtpBehaviour.GREETING_554:
            # RFC 5321 §3.1: after a 554 greeting the server waits for QUIT.
            await self.raw.send_all(
                self._greeting(554, [f"5.3.2 {self.host} no SMTP service here"])
            )
            await self._refuse_all(LineReader(self.raw))
            return
        if behaviour is SmtpBehaviour.GOOD_MULTILINE_GREETING:
            default = [
                f"{self.host} ESMTP scanner lab",
                "This server greets on several lines.",
                "Ready",
            ]
        else:
            default = [f"{self.host} ESMTP scanner lab"]
        await self.raw.send_all(self._greeting(220, default))
        tls = await self._plaintext_dialogue(LineReader(self.raw))
        if tls is not None:
            await self._tls_dialogue(tls)

    def _greeting(self, code: int, default: list[str]) -> bytes:
        """The greeting reply: the world's text when it gives one (sent verbatim), else `default`."""
        greeting = self.server.greeting
        return _multiline(code, list(greeting) if greeting is not None else default)

    async def _read_line(self, reader: LineReader, send: Send) -> bytes | None:
        """A line, or None at end of stream, after an idle timeout or an over-long line."""
        with trio.move_on_after(IDLE_TIMEOUT):
            try:
                return await reader.read_line()
            except LineTooLongError:
                await send(b"500 5.5.2 line too long\r\n")
                return None
        return None

    async def _drain(self) -> None:
        with trio.move_on_after(IDLE_TIMEOUT):
            while await self.raw.receive_some(4096):
                pass

    async def _refuse_all(self, reader: LineReader) -> None:
        while (line := await self._read_line(reader, self.raw.send_all)) is not None:
            if _verb(line) == "QUIT":
                await self.raw.send_all(b"221 2.0.0 Bye\r\n")
                return
            await self.raw.send_all(b"503 5.5.1 no SMTP service here\r\n")

    def _ehlo_reply(self, argument: str, *, after_tls: bool) -> bytes:
        keywords = list(EXTENSIONS)
        behaviour = self.behaviour
        if after_tls:
            # RFC 3207 §4.2: STARTTLS must not be offered after TLS; one behaviour breaks this.
            if behaviour is not SmtpBehaviour.STARTTLS_AFTER_TLS:
                keywords.remove("STARTTLS")
        elif behaviour in (SmtpBehaviour.NO_STARTTLS, SmtpBehaviour.STARTTLS_HIDDEN):
            keywords.remove("STARTTLS")
        elif behaviour is SmtpBehaviour.STARTTLS_MASKED:
            keywords[keywords.index("STARTTLS")] = MASKED_STARTTLS
        lines = [f"{self.host} greets {argument or 'client'}", *keywords]
        return _multiline(250, lines)

    async def _flood(self) -> None:
        chunk = FLOOD_LINE * 256
        sent = 0
        while sent < FLOOD_LIMIT:
            await self.raw.send_all(chunk)
            sent += len(chunk)

    async def _plaintext_dialogue(
        self, reader: LineReader
    ) -> trio.SSLStream[trio.abc.Stream] | None:
        """Serve commands before TLS; the TLS stream once STARTTLS succeeds, else None."""
        behaviour = self.behaviour
        send = self.raw.send_all
        while (line := await self._read_line(reader, send)) is not None:
            verb, argument = _verb(line), _argument(line)
            if verb == "EHLO":
                if behaviour is SmtpBehaviour.HELO_ONLY:
                    await send(b"500 5.5.1 command not recognized\r\n")
                elif behaviour is SmtpBehaviour.FLOOD:
                    await self._flood()
                    return None
                else:
                    await send(self._ehlo_reply(argument, after_tls=False))
            elif verb == "HELO":
                await send(f"250 {self.host}\r\n".encode())
            elif verb == "STARTTLS":
                if argument:
                    # RFC 3207 §4: STARTTLS takes no parameters.
                    await send(b"501 5.5.4 syntax error (no parameters allowed)\r\n")
                elif behaviour in STARTTLS_REFUSALS:
                    await send(STARTTLS_REFUSALS[behaviour])
                elif behaviour is SmtpBehaviour.STARTTLS_220_NO_TLS:
                    await send(b"220 2.0.0 Ready to start TLS\r\n")
                    await self._answer_hello_with_garbage()
                    return None
                elif behaviour is SmtpBehaviour.PLAINTEXT_INJECTION:
                    await send(b"220 2.0.0 Ready to start TLS\r\n" + INJECTED)
                    return await self._start_tls()
                elif behaviour is SmtpBehaviour.LATE_INJECTION:
                    await send(b"220 2.0.0 Ready to start TLS\r\n")
                    await trio.sleep(LATE_INJECTION_DELAY)
                    await send(INJECTED)
                    return await self._start_tls()
                elif behaviour is SmtpBehaviour.STARTTLS_CLOSE:
                    return None  # the handler closes the connection
                elif behaviour is SmtpBehaviour.HANDSHAKE_STALL:
                    await send(b"220 2.0.0 Ready to start TLS\r\n")
                    await self._drain()
                    return None
                else:
                    await send(b"220 2.0.0 Ready to start TLS\r\n")
                    return await self._start_tls()
            elif not await self._common_command(verb, send):
                return None
        return None

    async def _answer_hello_with_garbage(self) -> None:
        """Wait for the client's first TLS bytes, then answer with plaintext and close."""
        with trio.move_on_after(IDLE_TIMEOUT):
            await self.raw.receive_some(4096)
        await self.raw.send_all(NO_TLS_GARBAGE)

    async def _start_tls(self) -> trio.SSLStream[trio.abc.Stream] | None:
        # RFC 3207 §4.2: the plaintext state is discarded; nothing buffered is kept.
        tls = trio.SSLStream(self.raw, self.context_for(self.server), server_side=True)
        with trio.move_on_after(IDLE_TIMEOUT):
            await tls.do_handshake()
            return tls
        return None

    async def _tls_dialogue(self, tls: trio.SSLStream[trio.abc.Stream]) -> None:
        reader = LineReader(tls)
        send = tls.send_all
        while (line := await self._read_line(reader, send)) is not None:
            verb, argument = _verb(line), _argument(line)
            if verb == "EHLO":
                await send(self._ehlo_reply(argument, after_tls=True))
            elif verb == "HELO":
                await send(f"250 {self.host}\r\n".encode())
            elif verb == "STARTTLS":
                # RFC 3207 §4.2: a client must not start TLS twice.
                await send(b"503 5.5.1 TLS already active\r\n")
            elif not await self._common_command(verb, send):
                with trio.move_on_after(1):
                    await tls.aclose()
                return

    async def _common_command(self, verb: str, send: Send) -> bool:
        """Answer a command every behaviour treats alike; False after QUIT."""
        reply: bytes
        if verb == "QUIT":
            reply = b"221 2.0.0 Bye\r\n"
        elif verb in ("NOOP", "RSET"):
            reply = b"250 2.0.0 OK\r\n"
        elif verb in ("MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN"):
            reply = b"502 5.5.1 this lab accepts no mail\r\n"
        else:
            reply = b"500 5.5.2 command not recognized\r\n"
        await send(reply)
        return verb != "QUIT"


def _verb(line: bytes) -> str:
    return line.split(b" ", 1)[0].decode("ascii", errors="replace").upper()


def _argument(line: bytes) -> str:
    parts = line.split(b" ", 1)
    return parts[1].decode("ascii", errors="replace").strip() if len(parts) == 2 else ""


def _multiline(code: int, lines: list[str]) -> bytes:
    """RFC 5321 §4.2.1: `code-text` on every line but the last, `code text` on the last (UTF-8)."""
    out = [f"{code}-{text}\r\n" for text in lines[:-1]]
    out.append(f"{code} {lines[-1]}\r\n")
    return "".join(out).encode()
