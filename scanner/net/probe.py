"""One STARTTLS probe of one (MX host, address), the way a sending MTA would try.

Theory of operation
-------------------
The dialogue is fixed (docs/architecture.md#phases):

    connect → greeting → EHLO (HELO if EHLO gets 5xx) → STARTTLS → handshake
            → EHLO again → QUIT

STARTTLS is sent whether or not EHLO advertised it, so that a stripped
advertisement (the command still works) is told apart from a missing one. MAIL,
RCPT and DATA are never sent.

`scanner.core.smtp.SmtpClient` decides everything about the SMTP bytes; this
module only moves them, holds one deadline per phase (`ProbeSettings.step_timeout`;
the greeting has its own, `greeting_timeout`) inside one deadline for the whole
session (`total_timeout`), and records facts. Both deadlines are one cancel scope:
each phase moves its deadline to the phase's end or the session's, whichever comes
first, and when it passes, the phase it was in is the reason. Moving a deadline
costs less than entering and leaving a cancel scope per phase, and the facts are
kept in place (`_Facts`) and become a `ProbeOutcome` once, at the end.

The greeting (RFC 5321 §3.1, §4.5.3.2.1: a client may wait 5 minutes for it) is
awaited longer than other replies: greet-pause defences such as Postfix postscreen
send `220-` lines, pause (`postscreen_greet_wait`, 6 s by default) and only then
finish the greeting. Nothing is sent before the greeting is complete, not even a
QUIT after a deadline: postscreen logs a command sent in its pause as PREGREET and
may refuse the client for a day. A greeting deadline that passes after `220-` lines
is `timeout:greeting (partial 220- received)`, and those lines stay in the
transcript.

Failures are values. An MX name that DNS allows but that is no hostname
(`-mx.example`, `*.example`) is *not testable* (`invalid-mx-name: <why>`) and is
never contacted: it could be neither SNI nor a certificate reference identity.
Before STARTTLS is answered, a timeout, a close by the server or a reply that
breaks the grammar or a limit makes the address not testable (`reason` =
`timeout:<phase>`, `closed:<phase>`, `protocol-error: <why>`), as do a refused
greeting (`busy:<code> <text>`) and connect errors (`connect-refused`,
`connect-failed: <errno name>`). A phase timeout is never a finding (docs/output.md#vocabularies),
so a handshake that stalls is not testable either (`timeout:handshake`), as is
a STARTTLS command left unanswered (`timeout:starttls`).

Whatever else answers STARTTLS is a finding and the session counts as *tested*:
a reply other than 220, and also a close, a reset or a malformed reply
(`starttls_reply` None, `starttls_reply_text` saying what happened). From the
220 on, a handshake that fails (close, garbage, alert) sets `handshake_error`,
and trouble after the handshake sets `after_tls_error` (`timeout:<phase>`,
`closed:<phase>`, `protocol-error:<phase>: <why>`, or
`ehlo-after-tls rejected: <code> <text>`), keeping what was learnt. Only the
first such trouble is kept.

Plaintext injection (RFC 3207 §4.2): bytes past the 220 to STARTTLS, whether in
the same read or arriving within `ProbeSettings.injection_wait`, are counted and
never handed to TLS. Bytes already waiting, unasked, when STARTTLS is sent
(pre-command response injection: a queued 220 taken as the answer) count too.

docs/architecture.md#always-quit: after a reply-cap breach, a malformed reply or a phase
timeout, a best-effort QUIT is sent (within `QUIT_GRACE`, no reply awaited,
errors ignored) while the connection is still open; before a complete greeting
the connection is only closed.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import trio

from scanner.core.names import InvalidHostname, is_ip_literal, normalize_hostname
from scanner.core.reasons import reason_text
from scanner.core.smtp import (
    NEED_DATA,
    PARTIAL_GREETING_NOTE,
    TRANSITIONS,
    ClientInput,
    ClientState,
    ConnectionClosed,
    LimitExceeded,
    MalformedReply,
    Reply,
    SmtpClient,
    SmtpLimits,
    find_masked_starttls,
    is_partial_greeting,
    parse_ehlo_reply,
)
from scanner.models import (
    AddressStatus,
    CertificateCheck,
    Interruption,
    InterruptionKind,
    Phase,
    ProbeOutcome,
    TlsSession,
)
from scanner.net.connect import TcpStream, connect_tcp
from scanner.net.tls import TlsClient, TlsFailure

SERVICE_NOT_AVAILABLE: Final = 421  # RFC 5321 §4.2.3: the server is closing; try later
RECEIVE_CHUNK: Final = 4096  # bytes per read; the client buffers at most a line more
TRANSCRIPT_MAX_LINES: Final = 100
TRANSCRIPT_MAX_LINE_LENGTH: Final = 200
CLOSE_GRACE: Final = 1.0  # seconds allowed for a polite close (TLS close_notify)
QUIT_GRACE: Final = 1.0  # seconds at most for a best-effort QUIT after trouble
INJECTION_CAP: Final = 64 * 1024  # bytes of injected plaintext read at most


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """Knobs of one probe; the CLI builds them from its options."""

    smtp_port: int = 25
    ehlo_name: str = "scanner.invalid"
    step_timeout: float = 10.0  # seconds, each phase of `models.Phase` but the greeting
    # seconds for the greeting: above postscreen's default greet pause (6 s), below
    # the 5 minutes RFC 5321 §4.5.3.2.1 allows a client to wait
    greeting_timeout: float = 30.0
    total_timeout: float = 110.0  # seconds, the whole session: 8 steps and the greeting
    limits: SmtpLimits = field(default_factory=SmtpLimits)
    # seconds to wait after the 220 to STARTTLS for plaintext sent in a later write
    # (a TLS server says nothing before the ClientHello, so this costs only time)
    injection_wait: float = 0.1


# ---------------------------------------------------------------- transcript


def _printable(text: str) -> str:
    if text.isprintable():  # nearly every line: no per-character work
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


class Transcript:
    """A bounded, sanitised record of the dialogue.

    Lines are `C: <command>`, `S: <reply line>` or `[note] ...`; non-printable
    characters are escaped, each line is cut at `TRANSCRIPT_MAX_LINE_LENGTH`
    characters and the whole at `TRANSCRIPT_MAX_LINES` lines (the last one then
    says so).
    """

    def __init__(
        self, max_lines: int = TRANSCRIPT_MAX_LINES, max_length: int = TRANSCRIPT_MAX_LINE_LENGTH
    ) -> None:
        self._lines: list[str] = []
        self._max_lines = max_lines
        self._max_length = max_length
        self._dropped = 0

    def add(self, line: str) -> None:
        if len(self._lines) >= self._max_lines - 1:
            self._dropped += 1
            return
        line = _printable(line)
        if len(line) > self._max_length:
            line = line[: self._max_length - 3] + "..."
        self._lines.append(line)

    def sent(self, command: bytes) -> None:
        self.add("C: " + command.rstrip(b"\r\n").decode("ascii", errors="backslashreplace"))

    def received(self, reply: Reply) -> None:
        for line in reply.lines:
            self.add("S: " + line)

    def lines(self) -> tuple[str, ...]:
        if self._dropped:
            return (*self._lines, f"[transcript truncated: {self._dropped} more lines]")
        return tuple(self._lines)


# ---------------------------------------------------------------- failures


class _Interrupted(Exception):
    """The dialogue cannot go on; `interruption` says why, as a typed value.

    Raised and caught inside this module only.
    """

    def __init__(self, interruption: Interruption) -> None:
        super().__init__(interruption)
        self.interruption = interruption

    @property
    def kind(self) -> InterruptionKind:
        return self.interruption.kind


# Connect errors that have a kind of their own (docs/output.md#not-testable-reasons).
_CONNECT_KINDS: Final = {errno.ECONNREFUSED: InterruptionKind.CONNECT_REFUSED}


NO_IPV6_ROUTE: Final = "no-ipv6-route"


def no_ipv6_route() -> Interruption:
    """The scanning host has no route to an IPv6 address: its network's fault, not the domain's."""
    return Interruption(
        InterruptionKind.SCANNER_NETWORK, Phase.CONNECT, NO_IPV6_ROUTE, errno="ENETUNREACH"
    )


def connect_failure(exc: OSError, ip: str = "") -> Interruption:
    """`connect-refused`, `scanner-network` for ENETUNREACH to an IPv6 address (the local
    routing table has no route: never a timeout), or `connect-failed` with the errno name."""
    code = exc.errno
    if code == errno.ENETUNREACH and ":" in ip:
        return no_ipv6_route()
    if code is None:
        return Interruption(InterruptionKind.CONNECT_FAILED, Phase.CONNECT, str(exc))
    kind = _CONNECT_KINDS.get(code, InterruptionKind.CONNECT_FAILED)
    name = errno.errorcode.get(code, str(code))
    detail = "" if kind is InterruptionKind.CONNECT_REFUSED else name
    return Interruption(kind, Phase.CONNECT, detail, errno=name)


def _refusal(reply: Reply, phase: Phase) -> Interruption:
    """The server declined the session: `busy` for 4xx, `rejected` for 5xx (RFC 5321 §4.2.1)."""
    words = f"{reply.code} {reply.text}".rstrip()
    if reply.code == SERVICE_NOT_AVAILABLE:
        kind = InterruptionKind.BUSY
    elif phase is Phase.EHLO:
        kind = InterruptionKind.EHLO_REJECTED
    elif reply.code >= 500:
        kind = InterruptionKind.REJECTED
    else:
        kind = InterruptionKind.BUSY
    return Interruption(kind, phase, words, reply_code=reply.code)


def _sni(hostname: str) -> str | None:
    if is_ip_literal(hostname.strip("[]")):
        return None  # RFC 6066 §3: no IP literal in SNI
    return hostname


# ---------------------------------------------------------------- the session


@dataclass(slots=True)
class _Facts:
    """What the session has observed so far, kept in place; `ProbeOutcome` says what each is."""

    local_ip: str | None = None
    greeting: str | None = None
    ehlo_keywords: tuple[str, ...] = ()
    helo_only: bool = False
    starttls_advertised: bool = False
    masked_keyword: str | None = None
    starttls_reply: int | None = None
    starttls_reply_text: str | None = None
    plaintext_injection: int = 0
    handshake_error: str | None = None
    tls: TlsSession | None = None
    certificate: CertificateCheck | None = None
    ehlo_after_tls: tuple[str, ...] | None = None
    starttls_after_tls: bool = False
    after_tls: Interruption | None = None


class _Session:
    """The mutable state of one probe: the stream, the SMTP client, the deadline and the facts so far."""

    def __init__(
        self,
        hostname: str,
        ip: str,
        *,
        tls: TlsClient,
        settings: ProbeSettings,
        now: datetime,
    ) -> None:
        self.hostname = hostname
        self.ip = ip
        self.tls = tls
        self.settings = settings
        self.now = now
        self.client = SmtpClient(settings.limits)
        self.transcript = Transcript()
        self.facts = _Facts()
        self.phase = Phase.CONNECT
        self.tcp: TcpStream | None = None
        self.stream: trio.abc.Stream | None = None
        self.tls_started = False  # the 220 to STARTTLS was received
        self.refusal: Interruption | None = None  # the server declined to serve us
        # The session's one cancel scope (`probe` enters it) and its own deadline.
        self.deadline = trio.CancelScope(deadline=trio.current_time() + settings.total_timeout)
        self.session_ends = self.deadline.deadline
        self.phase_ends_first = False  # the phase's deadline comes before the session's

    def note_after_tls(self, trouble: Interruption) -> None:
        """Record the first trouble after a completed handshake; ignored before TLS."""
        if self.facts.tls is not None and self.facts.after_tls is None:
            self.facts.after_tls = trouble

    def finish(self, interruption: Interruption | None = None) -> ProbeOutcome:
        status = AddressStatus.TESTED if interruption is None else AddressStatus.NOT_TESTABLE
        facts = self.facts
        return ProbeOutcome(
            hostname=self.hostname,
            ip=self.ip,
            status=status,
            interruption=interruption,
            local_ip=facts.local_ip,
            greeting=facts.greeting,
            ehlo_keywords=facts.ehlo_keywords,
            helo_only=facts.helo_only,
            starttls_advertised=facts.starttls_advertised,
            masked_keyword=facts.masked_keyword,
            starttls_reply=facts.starttls_reply,
            starttls_reply_text=facts.starttls_reply_text,
            plaintext_injection=facts.plaintext_injection,
            handshake_error=facts.handshake_error,
            tls=facts.tls,
            certificate=facts.certificate,
            ehlo_after_tls=facts.ehlo_after_tls,
            starttls_after_tls=facts.starttls_after_tls,
            transcript=self.transcript.lines(),
            after_tls=facts.after_tls,
        )

    # -- deadlines

    def begin(self, phase: Phase, seconds: float | None) -> None:
        """`phase` begins and must end within `seconds` (None: only the session's deadline).

        Moves the session's cancel scope to whichever deadline comes first; `probe`
        tells them apart when it passes (`expired`).
        """
        self.phase = phase
        if seconds is None:
            self.phase_ends_first = False
            self.deadline.deadline = self.session_ends
            return
        ends = trio.current_time() + seconds
        self.phase_ends_first = ends < self.session_ends
        self.deadline.deadline = min(ends, self.session_ends)

    def expired(self) -> Interruption:
        """The deadline of the session's scope passed in `self.phase`: say which, and why."""
        phase = self.phase
        if self.phase_ends_first:
            return self.timed_out(phase, f"[timeout during {phase.value}]")
        return self.timed_out(phase, f"[session deadline during {phase.value}]")

    # -- moving bytes

    async def _read_reply(self) -> Reply:
        assert self.stream is not None
        while True:
            event = self.client.next_event()
            if event is NEED_DATA:
                try:
                    data = bytes(await self.stream.receive_some(RECEIVE_CHUNK))
                except trio.BrokenResourceError:
                    data = b""  # reset by the peer: the same as a close here
                self.client.receive_data(data)
                continue
            if isinstance(event, Reply):
                self.transcript.received(event)
                if event.bare_lf:
                    self.transcript.add("[note] reply lines end in bare LF")
                return event
            if isinstance(event, ConnectionClosed):
                self.transcript.add(f"[closed by server during {self.phase.value}]")
                raise _Interrupted(Interruption(InterruptionKind.CLOSED, self.phase))
            if isinstance(event, LimitExceeded | MalformedReply):
                self.transcript.add(f"[protocol error] {event.reason}")
                raise _Interrupted(
                    Interruption(InterruptionKind.PROTOCOL_ERROR, self.phase, event.reason)
                )
            raise AssertionError(f"unexpected SMTP client event {event!r}")

    def phase_timeout(self, phase: Phase) -> float:
        """Seconds the reply of `phase` is awaited: the greeting has its own deadline."""
        if phase is Phase.GREETING:
            return self.settings.greeting_timeout
        return self.settings.step_timeout

    async def exchange(self, phase: Phase, command: bytes | None) -> Reply:
        """Send `command` (if any) and read one reply, within the phase's deadline."""
        assert self.stream is not None
        self.begin(phase, self.phase_timeout(phase))
        if command is not None:
            self.transcript.sent(command)
            try:
                await self.stream.send_all(command)
            except trio.BrokenResourceError:
                self.transcript.add(f"[closed by server during {phase.value}]")
                raise _Interrupted(Interruption(InterruptionKind.CLOSED, phase)) from None
        return await self._read_reply()

    def timed_out(self, phase: Phase, marker: str) -> Interruption:
        """A deadline passed in `phase`: keep what arrived of the reply, and say so.

        The lines of a multi-line reply cut short go to the transcript before
        `marker`. A greeting cut short after `220-` lines is named (a greet pause,
        such as postscreen's, longer than the greeting deadline).
        """
        partial = self.client.partial_reply
        for line in partial:
            self.transcript.add("S: " + line)
        self.transcript.add(marker)
        if phase is Phase.GREETING and is_partial_greeting(partial):
            return Interruption(InterruptionKind.TIMEOUT, phase, PARTIAL_GREETING_NOTE)
        return Interruption(InterruptionKind.TIMEOUT, phase)

    # -- the dialogue

    async def connect(self) -> None:
        self.begin(Phase.CONNECT, self.settings.step_timeout)
        try:
            self.tcp = await connect_tcp(self.ip, self.settings.smtp_port)
        except OSError as exc:
            failure = connect_failure(exc, self.ip)
            self.transcript.add(f"[{reason_text(failure)}]")
            raise _Interrupted(failure) from None
        self.stream = self.tcp
        local = self.tcp.socket.getsockname()
        self.facts.local_ip = str(local[0])
        self.transcript.add(f"[connected to {self.ip} port {self.settings.smtp_port}]")

    async def abandon(self) -> None:
        """Best-effort QUIT after a deadline or a server fault (docs/architecture.md#always-quit).

        Only where the client still may say it (a reply outstanding, or a server fault)
        and the connection is open; within `QUIT_GRACE` seconds, no reply awaited, any
        trouble ignored. Never before a complete greeting (RFC 5321 §3.1): a greet
        pause (postscreen) would log the QUIT as PREGREET, so the connection is only
        closed. Cancellation from the caller propagates.
        """
        if self.stream is None:
            return
        if self.client.state in (ClientState.GREETING, ClientState.GREETING_BROKEN):
            self.transcript.add("[no QUIT: the greeting is incomplete]")
            return
        if (self.client.state, ClientInput.ABANDON) not in TRANSITIONS:
            return
        command = self.client.abandon_with_quit()
        self.transcript.sent(command)
        self.begin(self.phase, None)  # within the session's deadline, if still inside it
        with trio.move_on_after(min(QUIT_GRACE, self.settings.step_timeout)):
            try:
                await self.stream.send_all(command)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.transcript.add("[QUIT not delivered: connection gone]")
            return
        self.transcript.add("[QUIT not delivered: timeout]")

    async def refuse(self, reply: Reply) -> None:
        """The server declined the session with `reply`: QUIT, then give up."""
        self.refusal = _refusal(reply, self.phase)
        await self.quit()
        raise _Interrupted(self.refusal)

    async def dialogue(self) -> None:
        """Greeting to STARTTLS; raises `_Interrupted` when the address is not testable."""
        await self.connect()

        greeting = await self.exchange(Phase.GREETING, None)
        self.facts.greeting = greeting.text
        if greeting.code != 220:
            # RFC 5321 §3.1: 554 means no service here; QUIT anyway, politely.
            await self.refuse(greeting)

        name = self.settings.ehlo_name
        ehlo = await self.exchange(Phase.EHLO, self.client.send_ehlo(name))
        if ehlo.code == 250:
            parsed = parse_ehlo_reply(ehlo)
            self.facts.ehlo_keywords = tuple(dict.fromkeys(parsed.keywords))
            self.facts.starttls_advertised = parsed.has("STARTTLS")
            self.facts.masked_keyword = find_masked_starttls(parsed.keywords)
        elif 500 <= ehlo.code < 600:
            # RFC 5321 §3.2: EHLO refused, fall back to HELO (no extensions, no STARTTLS).
            helo = await self.exchange(Phase.EHLO, self.client.send_helo(name))
            if helo.code != 250:
                await self.refuse(helo)
            self.facts.helo_only = True
        else:
            await self.refuse(ehlo)

        command = self.client.send_starttls()
        self.note_unsolicited()
        try:
            starttls = await self.exchange(Phase.STARTTLS, command)
        except _Interrupted as interrupted:
            if interrupted.kind is InterruptionKind.TIMEOUT:
                raise  # a phase timeout is not testable (docs/output.md#not-testable-reasons)
            # STARTTLS answered by anything but 220 is refused or missing;
            # a close, a reset or a malformed reply is no 220 either.
            closed = interrupted.kind is InterruptionKind.CLOSED
            self.facts.starttls_reply = None
            self.facts.starttls_reply_text = (
                "connection closed" if closed else reason_text(interrupted.interruption)
            )
            await self.abandon()
            return
        self.facts.starttls_reply = starttls.code
        self.facts.starttls_reply_text = starttls.text
        if starttls.code != 220:
            await self.quit()
            return
        self.tls_started = True
        await self.secure()

    def note_unsolicited(self) -> None:
        """Count bytes that were waiting, unasked, when STARTTLS was sent.

        Pre-command response injection: a reply (typically ``220``) queued before
        the command would be taken as its answer. The bytes count as plaintext
        injection like those past the 220 (RFC 3207 §4.2, Poddebniak et al. 2021).
        """
        early = self.client.unsolicited_data
        if early:
            self.facts.plaintext_injection += len(early)
            self.transcript.add(f"[unsolicited data before STARTTLS: {len(early)} bytes]")

    async def collect_injection(self) -> None:
        """Count the plaintext past the 220 to STARTTLS: RFC 3207 §4.2, Poddebniak et al. 2021.

        The bytes read along with the 220, and whatever arrives within
        `injection_wait` seconds after it (a TLS server says nothing before the
        ClientHello), up to `INJECTION_CAP` bytes. They are never handed to TLS.
        """
        assert self.tcp is not None
        injected = bytearray(self.client.trailing_data)
        self.begin(Phase.HANDSHAKE, None)  # the handshake's deadline starts after this wait
        if self.settings.injection_wait > 0:
            with trio.move_on_after(self.settings.injection_wait):
                while len(injected) < INJECTION_CAP:
                    try:
                        data = await self.tcp.receive_some(RECEIVE_CHUNK)
                    except trio.BrokenResourceError:
                        break  # reset: the handshake will say so
                    if not data:
                        break  # closed: likewise
                    injected += data
        if injected:
            self.facts.plaintext_injection += len(injected)
            self.transcript.add(
                "[plaintext after 220] " + injected.decode("ascii", errors="backslashreplace")
            )

    async def secure(self) -> None:
        """Handshake and the post-TLS EHLO; failures are recorded, a stall is raised.

        A handshake that does not end within the phase deadline ends the session
        (`timeout:handshake`, docs/output.md#not-testable-reasons: not testable).
        """
        assert self.tcp is not None
        await self.collect_injection()
        self.begin(Phase.HANDSHAKE, self.settings.step_timeout)
        result = await self.tls.start(self.tcp, _sni(self.hostname))
        if isinstance(result, TlsFailure):
            self.facts.handshake_error = result.reason
            self.transcript.add(f"[tls] handshake failed: {result.reason}")
            return
        self.stream = result
        session = result.session()
        self.transcript.add(f"[tls] {session.version} {session.cipher}")
        self.facts.tls = session
        self.facts.certificate = (
            self.tls.check(session, self.hostname, self.now, presented=result.presented_chain())
            if session.leaf is not None
            else None
        )
        self.client.tls_established()

        try:
            ehlo = await self.exchange(
                Phase.EHLO_AFTER_TLS, self.client.send_ehlo(self.settings.ehlo_name)
            )
        except _Interrupted as interrupted:
            self.note_after_tls(interrupted.interruption)
            if interrupted.kind is InterruptionKind.PROTOCOL_ERROR:
                await self.abandon()  # the TLS stream is healthy: say goodbye on it
            return  # the TLS facts stand
        if ehlo.code == 250:
            parsed = parse_ehlo_reply(ehlo)
            self.facts.ehlo_after_tls = tuple(dict.fromkeys(parsed.keywords))
            # RFC 3207 §4.2: a server must not advertise STARTTLS after TLS.
            self.facts.starttls_after_tls = parsed.has("STARTTLS")
        else:
            # RFC 3207 §4.2: the client must send EHLO again; a server refusing it
            # accepts no mail over this TLS session.
            words = f"{ehlo.code} {ehlo.text}".rstrip()
            self.note_after_tls(
                Interruption(
                    InterruptionKind.REJECTED, Phase.EHLO_AFTER_TLS, words, reply_code=ehlo.code
                )
            )
        await self.quit()

    async def quit(self) -> None:
        """QUIT and read the 221, within the QUIT deadline; trouble is only noted."""
        try:
            await self.exchange(Phase.QUIT, self.client.send_quit())
        except _Interrupted as interrupted:
            self.note_after_tls(interrupted.interruption)

    async def close(self) -> None:
        """Close the stream (TLS close_notify if healthy), then make sure the socket is gone."""
        try:
            if self.stream is not None and self.stream is not self.tcp:
                with trio.move_on_after(CLOSE_GRACE):
                    await self.stream.aclose()
        finally:
            if self.tcp is not None:
                self.tcp.close()


async def probe(
    hostname: str,
    ip: str,
    *,
    tls: TlsClient,
    settings: ProbeSettings,
    now: datetime,
) -> ProbeOutcome:
    """Probe `ip` as an MX for `hostname` (SNI, certificate name) and report what it did.

    Never raises for anything the server or the network does; cancellation from
    the caller propagates. `now` is the time certificates are verified at. Whether
    `ip` may be contacted at all is the gate's decision (`scanner.net.gate`), made
    before this is called; an MX name that is no hostname (`invalid_mx_name`) is
    never contacted.
    """
    invalid = invalid_mx_name(hostname)
    if invalid is not None:
        return ProbeOutcome(
            hostname=hostname, ip=ip, status=AddressStatus.NOT_TESTABLE, interruption=invalid
        )
    session = _Session(hostname, ip, tls=tls, settings=settings, now=now)
    reason: Interruption | None = None
    try:
        with session.deadline:
            try:
                await session.dialogue()
            except _Interrupted as interrupted:
                reason = interrupted.interruption
        if session.deadline.cancelled_caught:
            # A deadline passed: the phase's or the session's. Either way the phase
            # it was in is the reason, or after TLS the trouble noted.
            phase = session.phase
            timeout = session.expired()
            if phase in (Phase.EHLO_AFTER_TLS, Phase.QUIT):
                reason = session.refusal  # the facts gathered so far stand
                session.note_after_tls(timeout)
            else:
                reason = timeout
        if reason is not None and not session.tls_started:
            # docs/architecture.md#safety: a deadline or a server fault before TLS still gets a QUIT.
            await session.abandon()
    finally:
        await session.close()
    return session.finish(reason)


def invalid_mx_name(hostname: str) -> Interruption | None:
    """`invalid-mx-name` with the reason for an MX name that is no usable hostname, else None.

    DNS lets an MX exchange be any name (`-mx.example`, `*.example`, RFC 2181 §11),
    but only a hostname can be sent as SNI (RFC 6066 §3) and matched against a
    certificate (RFC 8461 §4.2). Underscores are tolerated, as everywhere in the
    scanner's name handling; an IP literal is left alone (it gets no SNI).
    """
    if _sni(hostname) is None:
        return None
    try:
        normalize_hostname(hostname, allow_underscore=True)
    except InvalidHostname as exc:
        return Interruption(InterruptionKind.INVALID_MX_NAME, None, str(exc))
    return None
