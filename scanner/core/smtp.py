"""Sans-IO SMTP client for the STARTTLS probe.

Theory of operation
-------------------
The client never touches a socket. The caller moves bytes:

* ``send_ehlo(name)``, ``send_helo(name)``, ``send_starttls()`` and ``send_quit()``
  return the bytes to write, and move the client to the state that awaits the reply;
* ``receive_data(data)`` hands over bytes read from the server (``b""`` means the
  server closed its side);
* ``next_event()`` returns the next complete ``Reply``, a ``LimitExceeded`` or
  ``MalformedReply`` error value, ``ConnectionClosed``, or one of two signals:
  ``NEED_DATA`` (read more and feed it) and ``PAUSED`` (no reply is awaited; bytes
  that arrive now wait in the buffer until a command makes them legal).

States and their transitions are data (``TRANSITIONS``); a move the table does not
list raises ``SmtpProtocolError``, which is a bug in the caller, never a server fault.
Server faults (bad grammar, oversized replies, early close) are events.

When the server answers STARTTLS with 220 the client enters ``ClientState.TLS`` and
stops parsing: whatever the server sent past that reply is exposed as
``trailing_data`` (the signature of plaintext injection, RFC 3207 §4.2 and
Poddebniak et al. 2021) and must never be fed to TLS. After the caller completes
the handshake it calls ``tls_established()``, which drops those bytes and starts a
fresh parser for the decrypted stream.

Bytes that arrive while no reply is awaited are kept: the next command takes them
as its reply, and ``unsolicited_data`` says they were there before it was sent
(before STARTTLS, that is pre-command response injection).

Nothing is sent before the greeting is complete (RFC 5321 §3.1: the client waits
for it). Greet-pause defences take any command sent before it, a goodbye included,
for a spambot's: Postfix postscreen sends ``220-`` lines, waits, and logs such a
command as PREGREET; sendmail's ``greet_pause`` and Exim's ``smtp_enforce_sync``
wait in silence. The table has no move that sends from ``GREETING`` or
``GREETING_BROKEN``. When a deadline ends the wait, ``partial_reply`` holds the
lines of the greeting received so far.

Reading is bounded by ``SmtpLimits``: once ``next_event()`` has returned
``NEED_DATA``, the buffer holds less than one reply line, and a reply under
construction never exceeds the line-count and byte limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Final, Literal

# ---------------------------------------------------------------- limits

# RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers exceed it, so
# the probe is lenient but still bounded.
MAX_REPLY_LINE_LENGTH: Final = 2048  # octets, including the line terminator
MAX_LINES_PER_REPLY: Final = 100
MAX_REPLY_BYTES: Final = 64 * 1024

# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
MAX_COMMAND_LINE_LENGTH: Final = 512


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    """Caps on what one reply may cost; exceeding one is a ``LimitExceeded`` event."""

    max_line_length: int = MAX_REPLY_LINE_LENGTH
    max_lines_per_reply: int = MAX_LINES_PER_REPLY
    max_reply_bytes: int = MAX_REPLY_BYTES

    def __post_init__(self) -> None:
        if self.max_line_length < 6:  # "250 x" CRLF is the shortest useful line
            raise ValueError("max_line_length must be at least 6")
        if self.max_lines_per_reply < 1:
            raise ValueError("max_lines_per_reply must be at least 1")
        if self.max_reply_bytes < self.max_line_length:
            raise ValueError("max_reply_bytes must be at least max_line_length")


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete SMTP reply.

    ``texts`` holds the text after the code and separator of each line (empty for a
    bare ``250``); ``lines`` holds each whole line as received, without terminator;
    ``bare_lf`` is true when some line ended in LF without CR (tolerated, noted).
    """

    code: int
    texts: tuple[str, ...]
    lines: tuple[str, ...]
    bare_lf: bool = False

    @property
    def text(self) -> str:
        """The texts of all lines joined by a single space."""
        return " ".join(t for t in self.texts if t)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 300


@dataclass(frozen=True, slots=True)
class LimitExceeded:
    """The server broke one of the ``SmtpLimits``; ``reason`` says which, in words."""

    reason: str


@dataclass(frozen=True, slots=True)
class MalformedReply:
    """The server's bytes do not follow the reply grammar of RFC 5321 §4.2."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The server closed its side; ``partial`` is true when a reply was cut short."""

    partial: bool = False


class Signal(Enum):
    NEED_DATA = "need-data"
    PAUSED = "paused"


NEED_DATA: Final = Signal.NEED_DATA
PAUSED: Final = Signal.PAUSED

ReplyEvent = Reply | LimitExceeded | MalformedReply | ConnectionClosed
Event = ReplyEvent | Signal


class SmtpProtocolError(Exception):
    """The caller asked for a move the client's state does not allow."""


# ---------------------------------------------------------------- reply grammar

# RFC 5321 §4.2:
#   Reply-line = *( Reply-code "-" [ textstring ] CRLF )
#                Reply-code [ SP textstring ] CRLF
#   Reply-code = %x32-35 %x30-35 %x30-39
_REPLY_CODE = re.compile(rb"[2-5][0-5][0-9]")
_TEXT_BLANKS: Final = " \t"


@dataclass(frozen=True, slots=True)
class _Line:
    code: int
    final: bool
    text: str
    raw: str


def _parse_line(content: bytes) -> _Line | MalformedReply:
    """One reply line without its terminator, or why it is not one."""
    shown = _show(content)
    if not _REPLY_CODE.fullmatch(content[:3]):
        return MalformedReply(f"reply line does not start with a reply code: {shown!r}")
    code = int(content[:3])
    raw = content.decode("utf-8", errors="backslashreplace")
    if len(content) == 3:
        return _Line(code, True, "", raw)  # final line with no text
    separator = content[3:4]
    if separator not in (b" ", b"-"):
        return MalformedReply(f"reply code not followed by space or hyphen: {shown!r}")
    # Only SP and HT surround text (RFC 5321 §4.2 textstring); str.strip() would also
    # eat VT, FF, NEL and the like, and so hide them from the EHLO keyword grammar.
    text = content[4:].decode("utf-8", errors="backslashreplace").strip(_TEXT_BLANKS)
    return _Line(code, separator == b" ", text, raw)


def _show(content: bytes, width: int = 60) -> str:
    text = content[:width].decode("ascii", errors="backslashreplace")
    return text + ("..." if len(content) > width else "")


class ReplyParser:
    """Incremental, bounded parser of a stream of SMTP replies (RFC 5321 §4.2).

    Feed bytes with ``receive_data`` and pull replies with ``next_reply``; the
    result does not depend on how the bytes were split. After an error value
    (``LimitExceeded``, ``MalformedReply``) or ``ConnectionClosed`` the parser is
    finished and keeps returning that value.
    """

    def __init__(self, limits: SmtpLimits = SmtpLimits()) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._eof = False
        self._lines: list[_Line] = []
        self._reply_bytes = 0
        self._bare_lf = False
        self._finished: ReplyEvent | None = None

    @property
    def buffered(self) -> bytes:
        """Bytes received and not yet consumed by a reply."""
        return bytes(self._buffer)

    @property
    def pending_lines(self) -> int:
        """Lines of the reply under construction."""
        return len(self._lines)

    @property
    def partial_lines(self) -> tuple[str, ...]:
        """The lines (as received, without terminator) of the reply under construction."""
        return tuple(line.raw for line in self._lines)

    @property
    def pending_bytes(self) -> int:
        """Bytes (with terminators) of the reply under construction."""
        return self._reply_bytes

    @property
    def eof_received(self) -> bool:
        return self._eof

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the server; ``b""`` marks the end of the stream."""
        if self._eof:
            raise SmtpProtocolError("data received after the end of the stream")
        if data:
            if self._finished is None:
                self._buffer += data
        else:
            self._eof = True

    def next_reply(self) -> ReplyEvent | Literal[Signal.NEED_DATA]:
        """The next complete reply, an error value, ``ConnectionClosed`` or ``NEED_DATA``."""
        if self._finished is not None:
            return self._finished
        limits = self.limits
        while True:
            newline = self._buffer.find(b"\n", 0, limits.max_line_length)
            if newline < 0:
                if len(self._buffer) >= limits.max_line_length:
                    return self._finish(
                        LimitExceeded(f"reply line longer than {limits.max_line_length} bytes")
                    )
                if self._eof:
                    return self._finish(
                        ConnectionClosed(partial=bool(self._buffer) or bool(self._lines))
                    )
                return NEED_DATA
            length = newline + 1
            if self._reply_bytes + length > limits.max_reply_bytes:
                return self._finish(
                    LimitExceeded(f"reply longer than {limits.max_reply_bytes} bytes")
                )
            if len(self._lines) >= limits.max_lines_per_reply:
                return self._finish(
                    LimitExceeded(f"more than {limits.max_lines_per_reply} lines in one reply")
                )
            content = bytes(self._buffer[:newline])
            del self._buffer[:length]
            # RFC 5321 §2.3.8: lines end in CRLF; a bare LF is tolerated and noted.
            if content.endswith(b"\r"):
                content = content[:-1]
            else:
                self._bare_lf = True
            line = _parse_line(content)
            if isinstance(line, MalformedReply):
                return self._finish(line)
            # RFC 5321 §4.2.1: every line of a multi-line reply carries the same code.
            if self._lines and line.code != self._lines[0].code:
                return self._finish(
                    MalformedReply(
                        f"reply lines carry different codes: {self._lines[0].code} then {line.code}"
                    )
                )
            self._lines.append(line)
            self._reply_bytes += length
            if line.final:
                return self._complete()

    def _complete(self) -> Reply:
        reply = Reply(
            code=self._lines[0].code,
            texts=tuple(line.text for line in self._lines),
            lines=tuple(line.raw for line in self._lines),
            bare_lf=self._bare_lf,
        )
        self._lines = []
        self._reply_bytes = 0
        self._bare_lf = False
        return reply

    def _finish(self, event: ReplyEvent) -> ReplyEvent:
        self._finished = event
        self._buffer.clear()
        self._lines = []
        self._reply_bytes = 0
        return event


# ---------------------------------------------------------------- EHLO reply

# RFC 5321 §4.1.1.1:
#   ehlo-ok-rsp  = ( "250" SP Domain [ SP ehlo-greet ] CRLF )
#                / ( "250-" Domain [ SP ehlo-greet ] CRLF
#                    *( "250-" ehlo-line CRLF ) "250" SP ehlo-line CRLF )
#   ehlo-line    = ehlo-keyword *( SP ehlo-param )
#   ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
#   ehlo-param   = 1*(%d33-126)
# §2.4: keywords are case-insensitive.
_EHLO_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


@dataclass(frozen=True, slots=True)
class EhloReply:
    """A parsed EHLO success reply.

    ``extensions`` maps each upper-cased keyword to its parameters (first occurrence
    wins); ``keywords`` keeps every keyword in order, upper-cased, duplicates
    included. Both hold only keywords that follow the ehlo-keyword grammar (ASCII
    letters, digits and hyphens); ``invalid_lines`` holds, verbatim, the extension
    lines whose keyword breaks it, so that a look-alike such as ``ſtarttls``
    (U+017F, which upper-cases to ``S``) never counts as STARTTLS.
    """

    domain: str
    greeting: str
    keywords: tuple[str, ...]
    extensions: Mapping[str, tuple[str, ...]]
    invalid_lines: tuple[str, ...] = ()

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    def params(self, keyword: str) -> tuple[str, ...] | None:
        return self.extensions.get(keyword.upper())


def _is_ehlo_keyword(word: str) -> bool:
    """True when ``word`` follows the ehlo-keyword grammar of RFC 5321 §4.1.1.1."""
    return word.isascii() and _EHLO_KEYWORD.fullmatch(word) is not None


def parse_ehlo_reply(reply: Reply) -> EhloReply:
    """The domain and extensions of an EHLO reply (RFC 5321 §4.1.1.1).

    Any reply shape is accepted (the code is the caller's business); an empty
    first line yields an empty domain. Words are separated by ASCII spaces only
    (``SP`` in the grammar): a keyword glued to a tab, VT, NEL or any other
    character breaks the grammar and the line is invalid.
    """
    first, *rest = reply.texts
    domain, _, greeting = first.partition(" ")
    keywords: list[str] = []
    extensions: dict[str, tuple[str, ...]] = {}
    invalid: list[str] = []
    for text in rest:
        words = [word for word in text.split(" ") if word]
        # The grammar is checked on the word as sent: upper-casing first would turn
        # non-ASCII look-alikes ("ſ", "ﬆ") into ASCII letters.
        if not words or not _is_ehlo_keyword(words[0]):
            invalid.append(text)
            continue
        keyword = words[0].upper()
        keywords.append(keyword)
        extensions.setdefault(keyword, tuple(words[1:]))
    return EhloReply(
        domain=domain,
        greeting=greeting.strip(_TEXT_BLANKS),
        keywords=tuple(keywords),
        extensions=MappingProxyType(extensions),
        invalid_lines=tuple(invalid),
    )


# Cisco ESMTP inspection overwrites the 8-octet STARTTLS keyword in place with X's
# (typically "XXXXXXXA") and blocks the verb (Cisco TAC 118550; Durumeric et al. 2015).
_MASKED_STARTTLS = re.compile(r"X{7}[A-Z]", re.IGNORECASE)


def find_masked_starttls(keywords: Iterable[str]) -> str | None:
    """The first keyword that looks like a masked STARTTLS, upper-cased, or None.

    A masked STARTTLS keeps the keyword's length (8) and is made of X's, possibly
    ending in another letter: ``XXXXXXXA``, ``XXXXXXXX``. The same inspection masks
    other extensions alike (``XXXXXXXB``), so when STARTTLS itself is among
    ``keywords`` no mask stands for it and the answer is None. Keywords outside the
    ehlo-keyword grammar (non-ASCII look-alikes) are neither STARTTLS nor a mask.
    """
    # Only grammatical keywords count: "ſtarttls".upper() == "STARTTLS".
    listed = [keyword.upper() for keyword in keywords if _is_ehlo_keyword(keyword)]
    if "STARTTLS" in listed:
        return None
    for keyword in listed:
        if _MASKED_STARTTLS.fullmatch(keyword):
            return keyword
    return None


# Cisco PIX "MailGuard" / ASA mask-banner replaces most banner characters with "*",
# e.g. "****************************2***0*0****".
MASKED_BANNER_MIN_STARS: Final = 8


def is_masked_banner(text: str) -> bool:
    """True when a greeting text is mostly asterisks (a middlebox banner mask)."""
    visible = [c for c in text if not c.isspace()]
    stars = visible.count("*")
    return stars >= MASKED_BANNER_MIN_STARS and stars * 2 >= len(visible)


# A greeting deadline that passed after "220-" lines of a multi-line greeting: the
# signature of a greet pause longer than the deadline (Postfix postscreen sends its
# "220-" teaser, then waits `postscreen_greet_wait`). The probe records it as the
# detail of the greeting timeout; the assessment turns it into advice.
PARTIAL_GREETING_NOTE: Final = "partial 220- received"


def is_partial_greeting(lines: Iterable[str]) -> bool:
    """True when ``lines`` (a reply cut short) begin a 220 greeting (RFC 5321 §4.2)."""
    first = next(iter(lines), "")
    return first[:4] == "220-"


# ---------------------------------------------------------------- client states


class ClientState(StrEnum):
    """Where the client is in the dialogue; ``*_SENT`` and ``GREETING`` await a reply."""

    GREETING = "greeting"  # connected, awaiting the 220 greeting
    GREETED = "greeted"  # 220 received
    GREETING_REFUSED = "greeting-refused"  # greeting other than 220 (421, 554, ...)
    EHLO_SENT = "ehlo-sent"
    EHLO_REFUSED = "ehlo-refused"  # may fall back to HELO
    HELO_SENT = "helo-sent"
    HELO_REFUSED = "helo-refused"
    SESSION = "session"  # EHLO or HELO accepted
    STARTTLS_SENT = "starttls-sent"
    STARTTLS_REFUSED = "starttls-refused"
    TLS = "tls"  # 220 to STARTTLS: the caller does the handshake now
    TLS_ESTABLISHED = "tls-established"
    EHLO_AFTER_TLS_SENT = "ehlo-after-tls-sent"
    TLS_SESSION = "tls-session"
    QUIT_SENT = "quit-sent"
    CLOSED = "closed"
    ERROR = "error"  # the server broke the grammar or a limit: only closing is left
    GREETING_BROKEN = (
        "greeting-broken"  # the greeting broke the grammar or a limit: close, say nothing
    )


class ClientInput(StrEnum):
    """What moves the client: a command sent, a reply's verdict, a caller notice."""

    SEND_EHLO = "send-ehlo"
    SEND_HELO = "send-helo"
    SEND_STARTTLS = "send-starttls"
    SEND_QUIT = "send-quit"
    REPLY_ACCEPTED = "reply-accepted"  # the code the awaiting state expects
    REPLY_REJECTED = "reply-rejected"  # any other code
    TLS_ESTABLISHED = "tls-established"
    SERVER_CLOSED = "server-closed"
    SERVER_FAULT = "server-fault"  # malformed reply or limit exceeded
    ABANDON = "abandon"  # the caller gives up on the session and says QUIT without waiting


_S = ClientState
_I = ClientInput

# The code each awaiting state accepts (RFC 5321 §4.3.2, RFC 3207 §4).
EXPECTED_CODE: Final[Mapping[ClientState, int]] = MappingProxyType(
    {
        _S.GREETING: 220,
        _S.EHLO_SENT: 250,
        _S.HELO_SENT: 250,
        _S.STARTTLS_SENT: 220,
        _S.EHLO_AFTER_TLS_SENT: 250,
        _S.QUIT_SENT: 221,
    }
)
AWAITING_REPLY: Final = frozenset(EXPECTED_CODE)
# States after which the client parses nothing more.
FINISHED: Final = frozenset({_S.CLOSED, _S.ERROR, _S.GREETING_BROKEN})

_transitions: dict[tuple[ClientState, ClientInput], ClientState] = {
    (_S.GREETING, _I.REPLY_ACCEPTED): _S.GREETED,
    (_S.GREETING, _I.REPLY_REJECTED): _S.GREETING_REFUSED,
    (_S.GREETED, _I.SEND_EHLO): _S.EHLO_SENT,
    (_S.GREETED, _I.SEND_HELO): _S.HELO_SENT,
    (_S.GREETED, _I.SEND_QUIT): _S.QUIT_SENT,
    # RFC 5321 §5.5: 554 greeting, the client should send QUIT.
    (_S.GREETING_REFUSED, _I.SEND_QUIT): _S.QUIT_SENT,
    (_S.EHLO_SENT, _I.REPLY_ACCEPTED): _S.SESSION,
    (_S.EHLO_SENT, _I.REPLY_REJECTED): _S.EHLO_REFUSED,
    # RFC 5321 §3.2: EHLO refused, fall back to HELO.
    (_S.EHLO_REFUSED, _I.SEND_HELO): _S.HELO_SENT,
    (_S.EHLO_REFUSED, _I.SEND_QUIT): _S.QUIT_SENT,
    (_S.HELO_SENT, _I.REPLY_ACCEPTED): _S.SESSION,
    (_S.HELO_SENT, _I.REPLY_REJECTED): _S.HELO_REFUSED,
    (_S.HELO_REFUSED, _I.SEND_QUIT): _S.QUIT_SENT,
    # The probe sends STARTTLS whether or not it was advertised.
    (_S.SESSION, _I.SEND_STARTTLS): _S.STARTTLS_SENT,
    (_S.SESSION, _I.SEND_QUIT): _S.QUIT_SENT,
    (_S.STARTTLS_SENT, _I.REPLY_ACCEPTED): _S.TLS,
    (_S.STARTTLS_SENT, _I.REPLY_REJECTED): _S.STARTTLS_REFUSED,
    (_S.STARTTLS_REFUSED, _I.SEND_QUIT): _S.QUIT_SENT,
    # RFC 3207 §4: after 220 the next thing on the wire is the handshake, no command.
    (_S.TLS, _I.TLS_ESTABLISHED): _S.TLS_ESTABLISHED,
    # RFC 3207 §4.2: a fresh EHLO after the handshake; never STARTTLS twice.
    (_S.TLS_ESTABLISHED, _I.SEND_EHLO): _S.EHLO_AFTER_TLS_SENT,
    (_S.TLS_ESTABLISHED, _I.SEND_QUIT): _S.QUIT_SENT,
    (_S.EHLO_AFTER_TLS_SENT, _I.REPLY_ACCEPTED): _S.TLS_SESSION,
    (_S.EHLO_AFTER_TLS_SENT, _I.REPLY_REJECTED): _S.TLS_SESSION,
    (_S.TLS_SESSION, _I.SEND_QUIT): _S.QUIT_SENT,
    (_S.QUIT_SENT, _I.REPLY_ACCEPTED): _S.CLOSED,
    (_S.QUIT_SENT, _I.REPLY_REJECTED): _S.CLOSED,
}
for _state in _S:
    if _state not in FINISHED:
        _transitions[(_state, _I.SERVER_CLOSED)] = _S.CLOSED
for _state in AWAITING_REPLY:
    _transitions[(_state, _I.SERVER_FAULT)] = _S.ERROR
_transitions[(_S.GREETING, _I.SERVER_FAULT)] = _S.GREETING_BROKEN
# docs/architecture.md#always-quit: a reply that never came (a phase deadline) or a reply
# stream that broke the grammar or a limit still earns a best-effort QUIT, except
# before a complete greeting (RFC 5321 §3.1): a greet pause (postscreen) takes a
# command sent then, even QUIT, for a spambot's pregreet.
for _state in (*(AWAITING_REPLY - {_S.QUIT_SENT, _S.GREETING}), _S.ERROR):
    _transitions[(_state, _I.ABANDON)] = _S.CLOSED

TRANSITIONS: Final[Mapping[tuple[ClientState, ClientInput], ClientState]] = MappingProxyType(
    _transitions
)
del _transitions, _state


# ---------------------------------------------------------------- client


class SmtpClient:
    """The client side of one SMTP session, as far as STARTTLS and QUIT.

    It never produces MAIL, RCPT or DATA. See the module docstring for the
    calling pattern.
    """

    def __init__(self, limits: SmtpLimits = SmtpLimits()) -> None:
        self.limits = limits
        self.state = ClientState.GREETING
        self._parser = ReplyParser(limits)
        self._unsolicited = b""

    # -- commands

    def send_ehlo(self, name: str) -> bytes:
        """``EHLO name`` (RFC 5321 §4.1.1.1); legal after the greeting or the handshake."""
        return self._command(ClientInput.SEND_EHLO, f"EHLO {_checked_name(name)}")

    def send_helo(self, name: str) -> bytes:
        """``HELO name`` (RFC 5321 §4.1.1.1); legal after the greeting or a refused EHLO."""
        return self._command(ClientInput.SEND_HELO, f"HELO {_checked_name(name)}")

    def send_starttls(self) -> bytes:
        """``STARTTLS`` (RFC 3207 §4), advertised or not."""
        return self._command(ClientInput.SEND_STARTTLS, "STARTTLS")

    def send_quit(self) -> bytes:
        """``QUIT`` (RFC 5321 §4.1.1.10)."""
        return self._command(ClientInput.SEND_QUIT, "QUIT")

    def abandon_with_quit(self) -> bytes:
        """``QUIT`` without awaiting the outstanding reply, or after a server fault.

        For the caller's best-effort goodbye when a phase deadline passed or the
        server broke the grammar or a limit (``ClientState.ERROR``): the client is
        ``CLOSED`` afterwards and parses nothing more. Never before a complete
        greeting (``GREETING``, ``GREETING_BROKEN``): there the caller just closes.
        """
        return self._command(ClientInput.ABANDON, "QUIT")

    def tls_established(self) -> None:
        """The caller completed the handshake: drop plaintext leftovers, parse afresh.

        RFC 3207 §4.2: everything learned before TLS is discarded.
        """
        self._move(ClientInput.TLS_ESTABLISHED)
        self._parser = ReplyParser(self.limits)

    # -- replies

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the server; ``b""`` when it closed its side."""
        self._parser.receive_data(data)

    def next_event(self) -> Event:
        """The next event; see the module docstring."""
        if self.state not in AWAITING_REPLY:
            if (
                self.state not in FINISHED
                and self._parser.eof_received
                and not self._parser.buffered
            ):
                self._move(ClientInput.SERVER_CLOSED)
                return ConnectionClosed()
            return PAUSED
        event = self._parser.next_reply()
        if isinstance(event, Reply):
            accepted = event.code == EXPECTED_CODE[self.state]
            self._move(ClientInput.REPLY_ACCEPTED if accepted else ClientInput.REPLY_REJECTED)
        elif isinstance(event, ConnectionClosed):
            self._move(ClientInput.SERVER_CLOSED)
        elif isinstance(event, LimitExceeded | MalformedReply):
            self._move(ClientInput.SERVER_FAULT)
        return event

    @property
    def trailing_data(self) -> bytes:
        """Bytes received past the last reply and not yet parsed.

        In ``ClientState.TLS`` these arrived after the 220 to STARTTLS and before the
        handshake: plaintext injection. They are never parsed as replies.
        """
        return self._parser.buffered

    @property
    def unsolicited_data(self) -> bytes:
        """Bytes that had arrived unasked when the last command was sent, else ``b""``.

        They came while no reply was awaited (after the previous reply, before the
        command), so the server could not have been answering the command. They
        are still parsed as its reply, but a scanner must not take them for one
        silently: before STARTTLS they are pre-command response injection (a
        ``220`` that makes the client start TLS on an attacker's say-so).
        ``abandon_with_quit`` leaves the record alone.
        """
        return self._unsolicited

    @property
    def partial_reply(self) -> tuple[str, ...]:
        """The lines of the awaited reply received so far, as received; ``()`` if none.

        A multi-line reply cut short by a deadline (``220-`` lines of a greeting held
        back by a greet pause) is no event; these are its lines, for the record.
        """
        if self.state not in AWAITING_REPLY:
            return ()
        return self._parser.partial_lines

    @property
    def buffered_bytes(self) -> int:
        """Bytes held by the client: unparsed bytes plus the reply under construction."""
        return len(self._parser.buffered) + self._parser.pending_bytes

    # -- internals

    def _command(self, move: ClientInput, line: str) -> bytes:
        idle = self.state not in AWAITING_REPLY
        self._move(move)
        if move is not ClientInput.ABANDON:
            # Not awaiting a reply, the parser holds no reply under construction:
            # whatever it buffered came unasked.
            self._unsolicited = self._parser.buffered if idle else b""
        return line.encode("ascii") + b"\r\n"

    def _move(self, move: ClientInput) -> None:
        try:
            self.state = TRANSITIONS[(self.state, move)]
        except KeyError:
            raise SmtpProtocolError(f"cannot {move.value} in state {self.state.value}") from None


def _checked_name(name: str) -> str:
    """The EHLO/HELO argument, refused if it could not be one command line."""
    if not name or not name.isascii() or any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError(f"not a usable EHLO name: {name!r}")
    if len(name) + len("EHLO \r\n") > MAX_COMMAND_LINE_LENGTH:
        raise ValueError("EHLO name makes a command line longer than 512 octets")
    return name
