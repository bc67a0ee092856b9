"""TLS client on any trio stream, with chain capture and separate verification.

Theory of operation
-------------------

OpenSSL never touches a socket here. Each `TlsStream` owns one
`OpenSSL.SSL.Connection` built with no socket, so OpenSSL reads ciphertext
from an incoming memory BIO and writes ciphertext to an outgoing memory BIO.
Every operation (handshake, send, receive, shutdown) goes through one loop,
`TlsStream._retry`:

1. call the OpenSSL function;
2. whatever it did, drain the outgoing BIO and `send_all` it on the transport
   (pending output is always flushed before waiting for input, or a peer
   waiting for our flight would deadlock with us);
3. if OpenSSL said `WantReadError`, read once from the transport, feed the
   bytes to the incoming BIO (or signal EOF with `bio_shutdown`) and go to 1;
   otherwise return the result.

Because the transport is just a `trio.abc.Stream`, the same code serves a TCP
stream after SMTP STARTTLS and a fresh TCP stream for HTTPS, and tests can put
any stream (one that delivers a byte at a time, say) underneath.

The handshake does not verify anything (`VERIFY_NONE`): the peer chain is
captured even when it is bad, and verified afterwards by `TrustStore.verify`
at an injected time, so expired, not-yet-valid, untrusted and wrong-name
certificates are told apart instead of all looking like "handshake failed".
The stream keeps the certificates as OpenSSL parsed them in the handshake
(`presented_chain()`), so that verification need not parse them again.

A `TlsStream` serves one operation at a time (SMTP and HTTP/1.1 are strictly
request/response); overlapping calls raise `trio.BusyResourceError`. Any
exception or cancellation in the middle of an operation leaves the stream
broken (later calls raise `trio.BrokenResourceError`), since OpenSSL and the
transport may disagree about what was sent. Deadlines belong to the caller.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import partial
from typing import TypeVar

import trio
from OpenSSL import SSL, crypto

from scanner.core.names import is_ip_literal, normalize_hostname
from scanner.models import CertificateCheck, TlsSession
from scanner.net.certificates import summarize_certificate
from scanner.net.trust import PresentedChain, TrustStore, check_certificate

_RECEIVE_SIZE = 65536
_SEND_CHUNK = 16384  # one TLS record's worth of plaintext

_T = TypeVar("_T")

# ---------------------------------------------------------------- errors


class TlsError(Exception):
    """A handshake that failed for a reason the peer or the path caused.

    `reason` is short and stable: "eof-during-handshake", "not-tls",
    "protocol-version", "connection-lost", "protocol-error: <openssl reason>", ...
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TlsFailure:
    """`start_tls` result when the handshake failed; `reason` as in `TlsError`."""

    reason: str


# OpenSSL reason strings (lower case, as in ERR_reason_error_string) that have a
# stable name of their own. Anything else becomes "protocol-error: <reason>".
_HANDSHAKE_REASONS: dict[str, str] = {
    # The peer's bytes are not TLS records at all (an SMTP reply, HTTP, ...).
    "wrong version number": "not-tls",
    "packet length too long": "not-tls",
    "record layer failure": "not-tls",
    "unknown protocol": "not-tls",
    "http request": "not-tls",
    "http https proxy request": "not-tls",
    "record length mismatch": "not-tls",
    # No protocol version both sides accept.
    "unsupported protocol": "protocol-version",
    "no protocols available": "protocol-version",
    "tlsv1 alert protocol version": "protocol-version",
    "sslv3 alert handshake failure": "peer-alert: handshake-failure",
    "tls alert handshake failure": "peer-alert: handshake-failure",  # OpenSSL 3 wording
    "tlsv1 alert internal error": "peer-alert: internal-error",
    "tlsv1 unrecognized name": "peer-alert: unrecognized-name",
    "tlsv1 alert unrecognized name": "peer-alert: unrecognized-name",
    "tlsv13 alert certificate required": "peer-alert: certificate-required",
    "sslv3 alert bad certificate": "peer-alert: bad-certificate",
    "unsafe legacy renegotiation disabled": "legacy-renegotiation",
    "no shared cipher": "no-shared-cipher",
    "no cipher match": "no-shared-cipher",
    "dh key too small": "weak-key",
    "ee key too small": "weak-key",
}


def _openssl_reason(exc: SSL.Error) -> str:
    """The first reason string of a pyOpenSSL error queue ([(lib, func, reason), ...])."""
    if exc.args and isinstance(exc.args[0], list):
        for entry in exc.args[0]:
            if isinstance(entry, tuple) and len(entry) == 3 and entry[2]:
                return str(entry[2]).lower()
    return str(exc).lower() or type(exc).__name__


def handshake_failure_reason(exc: SSL.Error | trio.BrokenResourceError) -> str:
    """Map a library exception raised during the handshake to a stable reason."""
    if isinstance(exc, trio.BrokenResourceError):
        return "connection-lost"
    if isinstance(exc, SSL.ZeroReturnError):
        return "closed-during-handshake"
    if isinstance(exc, SSL.SysCallError):
        # (-1, 'Unexpected EOF'): the transport ended before the handshake did.
        if exc.args and exc.args[0] in (-1, 0):
            return "eof-during-handshake"
        return f"syscall-error: {exc.args!r}"
    reason = _openssl_reason(exc)
    return _HANDSHAKE_REASONS.get(reason, f"protocol-error: {reason}")


# ---------------------------------------------------------------- client context


def build_client_context() -> SSL.Context:
    """The run's client context: no verification, every TLS version OpenSSL permits.

    Build it once and share it between connections. TLS 1.0 and 1.1 and weak
    ciphers stay enabled (security level 0) so that an old server is observed
    and reported rather than refused. Renegotiation is refused; compression off.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE)
    context.set_min_proto_version(SSL.TLS1_VERSION)
    context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    context.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_LEGACY_SERVER_CONNECT
    )
    return context


def sni_name(server_hostname: str | None) -> bytes | None:
    """The SNI value for `server_hostname`: its A-label form, or None for an IP literal.

    RFC 6066 §3: literal IPv4 and IPv6 addresses are not permitted in SNI.
    Raises `scanner.core.names.InvalidHostname` for an invalid name.
    """
    if server_hostname is None:
        return None
    if is_ip_literal(server_hostname.strip("[]")):
        return None
    return normalize_hostname(server_hostname, allow_underscore=True).encode("ascii")


# ---------------------------------------------------------------- the stream


class _State(Enum):
    NEW = "new"
    OPEN = "open"
    BROKEN = "broken"
    CLOSED = "closed"


class TlsStream(trio.abc.Stream):
    """TLS client over `transport`. Call `do_handshake` (or use `start_tls`) first.

    `receive_some` returns b"" once the peer closed, with or without a
    close_notify (SMTP servers commonly drop the connection after QUIT).
    `aclose` sends a close_notify when the session is healthy, then closes the
    transport. The transport belongs to this stream from construction on.
    """

    def __init__(
        self, transport: trio.abc.Stream, context: SSL.Context, server_hostname: str | None
    ) -> None:
        self.transport = transport
        self._connection = SSL.Connection(context, None)
        self._connection.set_connect_state()
        server_name = sni_name(server_hostname)
        if server_name is not None:
            # RFC 8461 §7.1: SNI is the MX host name; never an IP literal (RFC 6066 §3).
            self._connection.set_tlsext_host_name(server_name)
        self._state = _State.NEW
        self._busy = False
        self._transport_eof = False
        self._peer_closed = False
        self._session: TlsSession | None = None
        self._presented: PresentedChain | None = None

    # -- plumbing

    @contextmanager
    def _operation(self) -> Iterator[None]:
        if self._state is _State.CLOSED:
            raise trio.ClosedResourceError("the TLS stream is closed")
        if self._state is _State.BROKEN:
            raise trio.BrokenResourceError("the TLS stream is broken")
        if self._busy:
            raise trio.BusyResourceError("another task is using this TLS stream")
        self._busy = True
        try:
            yield
        except BaseException:
            self._mark_broken()
            raise
        finally:
            self._busy = False

    def _mark_broken(self) -> None:
        if self._state is not _State.CLOSED:
            self._state = _State.BROKEN

    async def _flush(self) -> None:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._connection.bio_read(_RECEIVE_SIZE)
            except SSL.WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < _RECEIVE_SIZE:
                break  # a short read emptied the BIO: no WantReadError to raise and catch
        if chunks:
            await self.transport.send_all(b"".join(chunks))

    async def _retry(self, operation: Callable[[], _T]) -> _T:
        while True:
            want_read = False
            try:
                result = operation()
            except SSL.WantReadError:
                want_read = True
            await self._flush()
            if not want_read:
                return result
            if self._transport_eof:
                # OpenSSL asked for more after the EOF was signalled: treat as EOF.
                raise SSL.SysCallError(-1, "Unexpected EOF")
            data = await self.transport.receive_some(_RECEIVE_SIZE)
            if data:
                self._connection.bio_write(data)
            else:
                self._transport_eof = True
                self._connection.bio_shutdown()

    # -- public API

    async def do_handshake(self) -> None:
        """Complete the handshake; a no-op once it succeeded.

        Raises `TlsError` for a failure caused by the peer or the path (the
        stream is then broken); cancellation propagates unchanged.
        """
        if self._state is _State.OPEN:
            await trio.lowlevel.checkpoint()
            return
        with self._operation():
            try:
                await self._retry(self._connection.do_handshake)
            except (SSL.Error, trio.BrokenResourceError) as exc:
                raise TlsError(handshake_failure_reason(exc)) from exc
            self._presented = self._capture_chain()
            self._session = self._capture_session(self._presented)
            self._state = _State.OPEN

    def _capture_chain(self) -> PresentedChain:
        certificates = tuple(self._connection.get_peer_cert_chain() or ())
        return PresentedChain(
            der=tuple(
                crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)
                for certificate in certificates
            ),
            certificates=certificates,
        )

    def _capture_session(self, presented: PresentedChain) -> TlsSession:
        return TlsSession(
            version=self._connection.get_protocol_version_name(),
            cipher=self._connection.get_cipher_name() or "",
            chain=tuple(summarize_certificate(der) for der in presented.der),
            chain_der=presented.der,
        )

    def session(self) -> TlsSession:
        """Negotiated version, cipher and the peer chain (leaf first) of the handshake."""
        if self._session is None:
            raise RuntimeError("the handshake has not completed")
        return self._session

    def presented_chain(self) -> PresentedChain:
        """The peer chain of `session()` as the handshake parsed it, for `TlsClient.check`."""
        if self._presented is None:
            raise RuntimeError("the handshake has not completed")
        return self._presented

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._state is _State.NEW:
            await self.do_handshake()
        with self._operation():
            view = memoryview(data)
            try:
                if not view:
                    await trio.lowlevel.checkpoint()
                while view:
                    chunk = bytes(view[:_SEND_CHUNK])
                    sent = await self._retry(partial(self._connection.send, chunk))
                    view = view[sent:]
            except SSL.Error as exc:
                raise trio.BrokenResourceError(f"TLS send failed: {exc!r}") from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = _RECEIVE_SIZE
        max_bytes = operator.index(max_bytes)  # a TypeError here leaves the stream whole
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._state is _State.NEW:
            await self.do_handshake()
        with self._operation():
            if self._peer_closed:
                await trio.lowlevel.checkpoint()
                return b""
            try:
                return await self._retry(partial(self._connection.recv, max_bytes))
            except (SSL.ZeroReturnError, SSL.SysCallError):
                # close_notify, or the transport ended without one: end of stream.
                self._peer_closed = True
                return b""
            except SSL.Error as exc:
                raise trio.BrokenResourceError(f"TLS receive failed: {exc!r}") from exc

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Send close_notify if the session is healthy, then close the transport."""
        if self._state is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        healthy = self._state is _State.OPEN and not self._busy and not self._peer_closed
        self._state = _State.CLOSED
        try:
            if healthy:
                with suppress(SSL.Error):  # nothing sensible to send then
                    self._connection.shutdown()
                # A peer that is gone already needs no close_notify.
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._flush()
        finally:
            await self.transport.aclose()


async def start_tls(
    transport: trio.abc.Stream, context: SSL.Context, server_hostname: str | None
) -> TlsStream | TlsFailure:
    """Handshake on `transport`; the open `TlsStream`, or a `TlsFailure` value.

    `server_hostname` is sent as SNI unless it is None or an IP literal (an
    invalid name raises `InvalidHostname`). On failure the transport is left
    for the caller to close. Deadlines are the
    caller's (`trio.fail_after` around this call); cancellation propagates.
    """
    stream = TlsStream(transport, context, server_hostname)
    try:
        await stream.do_handshake()
    except TlsError as exc:
        return TlsFailure(exc.reason)
    return stream


@dataclass(frozen=True, slots=True)
class TlsClient:
    """The client side of every TLS connection of a run: one context, one trust store.

    Built once per run (as trio's `SSLStream` takes one context); the probe and the
    policy fetch start sessions with it and check the peer's certificate against it.
    """

    context: SSL.Context
    trust: TrustStore

    @classmethod
    def create(cls, trust: TrustStore) -> TlsClient:
        return cls(build_client_context(), trust)

    async def start(
        self, transport: trio.abc.Stream, server_hostname: str | None
    ) -> TlsStream | TlsFailure:
        """`start_tls` with the run's context."""
        return await start_tls(transport, self.context, server_hostname)

    def check(
        self,
        session: TlsSession,
        expected_name: str,
        at: datetime,
        *,
        presented: PresentedChain | None = None,
    ) -> CertificateCheck:
        """`check_certificate` against the run's trust store.

        Pass the stream's `presented_chain()` along with its `session()`: the
        verdict is the same, without parsing the chain a second time.
        """
        return check_certificate(session, self.trust, expected_name, at, presented=presented)
