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

A `TlsStream` serves one operation at a time (SMTP and HTTP/1.1 are strictly
request/response); overlapping calls raise `trio.BusyResourceError`. Any
exception or cancellation in the middle of an operation leaves the stream
broken (later calls raise `trio.BrokenResourceError`), since OpenSSL and the
transport may disagree about what was sent. Deadlines belong to the caller.
"""

from __future__ import annotations

import hashlib
import operator
import ipaddress
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from pathlib import Path
from typing import TypeVar

import certifi
import trio
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from OpenSSL import SSL, crypto

from scanner.core.names import certificate_matches, normalize_hostname
from scanner.models import CertificateCheck, CertificateSummary, ChainVerdict, TlsSession

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
    try:
        ipaddress.ip_address(server_hostname.strip("[]"))
    except ValueError:
        return normalize_hostname(server_hostname, allow_underscore=True).encode("ascii")
    return None


# ---------------------------------------------------------------- certificates


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _asn1_time(value: bytes | None) -> datetime:
    # pyOpenSSL returns GeneralizedTime text: YYYYMMDDhhmmssZ.
    if not value:
        return _EPOCH
    try:
        return datetime.strptime(value.decode("ascii"), "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return _EPOCH


def _summary_without_cryptography(der: bytes, fingerprint: str, why: str) -> CertificateSummary:
    """A summary from OpenSSL alone, for a certificate cryptography refuses to parse."""
    try:
        openssl_cert = crypto.load_certificate(crypto.FILETYPE_ASN1, der)
    except crypto.Error:
        return CertificateSummary(f"<unparsable: {why}>", (), "", _EPOCH, _EPOCH, fingerprint)
    return CertificateSummary(
        subject=f"<unparsable: {why}>",
        san=(),
        issuer="",
        not_before=_asn1_time(openssl_cert.get_notBefore()),
        not_after=_asn1_time(openssl_cert.get_notAfter()),
        sha256=fingerprint,
    )


def _name_text(read: Callable[[], x509.Name]) -> str:
    try:
        return read().rfc4514_string()
    except ValueError as exc:
        return f"<unparsable: {exc}>"


def summarize_certificate(der: bytes) -> CertificateSummary:
    """Subject and issuer (RFC 4514), SAN dNSNames, validity (UTC) and SHA-256 of `der`.

    Never raises for odd certificates: a missing or malformed SAN extension
    gives no names, a non-positive serial is tolerated, and a certificate that
    cannot be parsed at all gets an "<unparsable: ...>" subject and, where even
    OpenSSL cannot read it, 1970-01-01 dates.
    """
    fingerprint = hashlib.sha256(der).hexdigest()
    try:
        with warnings.catch_warnings():
            # Non-positive serials (RFC 5280 §4.1.2.2 violations) are common enough.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certificate = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return _summary_without_cryptography(der, fingerprint, str(exc))
    san: tuple[str, ...] = ()
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        san = tuple(extension.value.get_values_for_type(x509.DNSName))
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        san = ()
    return CertificateSummary(
        subject=_name_text(lambda: certificate.subject),
        san=san,
        issuer=_name_text(lambda: certificate.issuer),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        sha256=fingerprint,
    )


# OpenSSL's X509_V_ERR_* codes (include/openssl/x509_vfy.h; the numbers never change).
# A code missing here (newer OpenSSL) is named X509_V_ERR_UNKNOWN_<n>.
_VERIFY_ERROR_NAMES: dict[int, str] = {
    1: "X509_V_ERR_UNSPECIFIED",
    2: "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT",
    3: "X509_V_ERR_UNABLE_TO_GET_CRL",
    4: "X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE",
    5: "X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE",
    6: "X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
    7: "X509_V_ERR_CERT_SIGNATURE_FAILURE",
    8: "X509_V_ERR_CRL_SIGNATURE_FAILURE",
    9: "X509_V_ERR_CERT_NOT_YET_VALID",
    10: "X509_V_ERR_CERT_HAS_EXPIRED",
    11: "X509_V_ERR_CRL_NOT_YET_VALID",
    12: "X509_V_ERR_CRL_HAS_EXPIRED",
    13: "X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD",
    14: "X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD",
    15: "X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD",
    16: "X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD",
    17: "X509_V_ERR_OUT_OF_MEM",
    18: "X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT",
    19: "X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN",
    20: "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    21: "X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    22: "X509_V_ERR_CERT_CHAIN_TOO_LONG",
    23: "X509_V_ERR_CERT_REVOKED",
    24: "X509_V_ERR_NO_ISSUER_PUBLIC_KEY",
    25: "X509_V_ERR_PATH_LENGTH_EXCEEDED",
    26: "X509_V_ERR_INVALID_PURPOSE",
    27: "X509_V_ERR_CERT_UNTRUSTED",
    28: "X509_V_ERR_CERT_REJECTED",
    29: "X509_V_ERR_SUBJECT_ISSUER_MISMATCH",
    30: "X509_V_ERR_AKID_SKID_MISMATCH",
    31: "X509_V_ERR_AKID_ISSUER_SERIAL_MISMATCH",
    32: "X509_V_ERR_KEYUSAGE_NO_CERTSIGN",
    33: "X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER",
    34: "X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION",
    35: "X509_V_ERR_KEYUSAGE_NO_CRL_SIGN",
    36: "X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION",
    37: "X509_V_ERR_INVALID_NON_CA",
    38: "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
    39: "X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE",
    40: "X509_V_ERR_PROXY_CERTIFICATES_NOT_ALLOWED",
    41: "X509_V_ERR_INVALID_EXTENSION",
    42: "X509_V_ERR_INVALID_POLICY_EXTENSION",
    43: "X509_V_ERR_NO_EXPLICIT_POLICY",
    44: "X509_V_ERR_DIFFERENT_CRL_SCOPE",
    45: "X509_V_ERR_UNSUPPORTED_EXTENSION_FEATURE",
    46: "X509_V_ERR_UNNESTED_RESOURCE",
    47: "X509_V_ERR_PERMITTED_VIOLATION",
    48: "X509_V_ERR_EXCLUDED_VIOLATION",
    49: "X509_V_ERR_SUBTREE_MINMAX",
    50: "X509_V_ERR_APPLICATION_VERIFICATION",
    51: "X509_V_ERR_UNSUPPORTED_CONSTRAINT_TYPE",
    52: "X509_V_ERR_UNSUPPORTED_CONSTRAINT_SYNTAX",
    53: "X509_V_ERR_UNSUPPORTED_NAME_SYNTAX",
    54: "X509_V_ERR_CRL_PATH_VALIDATION_ERROR",
    55: "X509_V_ERR_PATH_LOOP",
    56: "X509_V_ERR_SUITE_B_INVALID_VERSION",
    57: "X509_V_ERR_SUITE_B_INVALID_ALGORITHM",
    58: "X509_V_ERR_SUITE_B_INVALID_CURVE",
    59: "X509_V_ERR_SUITE_B_INVALID_SIGNATURE_ALGORITHM",
    60: "X509_V_ERR_SUITE_B_LOS_NOT_ALLOWED",
    61: "X509_V_ERR_SUITE_B_CANNOT_SIGN_P_384_WITH_P_256",
    62: "X509_V_ERR_HOSTNAME_MISMATCH",
    63: "X509_V_ERR_EMAIL_MISMATCH",
    64: "X509_V_ERR_IP_ADDRESS_MISMATCH",
    65: "X509_V_ERR_DANE_NO_MATCH",
    66: "X509_V_ERR_EE_KEY_TOO_SMALL",
    67: "X509_V_ERR_CA_KEY_TOO_SMALL",
    68: "X509_V_ERR_CA_MD_TOO_WEAK",
    69: "X509_V_ERR_INVALID_CALL",
    70: "X509_V_ERR_STORE_LOOKUP",
    71: "X509_V_ERR_NO_VALID_SCTS",
    72: "X509_V_ERR_PROXY_SUBJECT_NAME_VIOLATION",
    73: "X509_V_ERR_OCSP_VERIFY_NEEDED",
    74: "X509_V_ERR_OCSP_VERIFY_FAILED",
    75: "X509_V_ERR_OCSP_CERT_UNKNOWN",
    76: "X509_V_ERR_UNSUPPORTED_SIGNATURE_ALGORITHM",
    77: "X509_V_ERR_SIGNATURE_ALGORITHM_MISMATCH",
    78: "X509_V_ERR_SIGNATURE_ALGORITHM_INCONSISTENCY",
    79: "X509_V_ERR_INVALID_CA",
    80: "X509_V_ERR_PATHLEN_INVALID_FOR_NON_CA",
    81: "X509_V_ERR_PATHLEN_WITHOUT_KU_KEY_CERT_SIGN",
    82: "X509_V_ERR_KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA",
    83: "X509_V_ERR_ISSUER_NAME_EMPTY",
    84: "X509_V_ERR_SUBJECT_NAME_EMPTY",
    85: "X509_V_ERR_MISSING_AUTHORITY_KEY_IDENTIFIER",
    86: "X509_V_ERR_MISSING_SUBJECT_KEY_IDENTIFIER",
    87: "X509_V_ERR_EMPTY_SUBJECT_ALT_NAME",
    88: "X509_V_ERR_EMPTY_SUBJECT_SAN_NOT_CRITICAL",
    89: "X509_V_ERR_CA_BCONS_NOT_CRITICAL",
    90: "X509_V_ERR_AUTHORITY_KEY_IDENTIFIER_CRITICAL",
    91: "X509_V_ERR_SUBJECT_KEY_IDENTIFIER_CRITICAL",
    92: "X509_V_ERR_CA_CERT_MISSING_KEY_USAGE",
    93: "X509_V_ERR_EXTENSIONS_REQUIRE_VERSION_3",
    94: "X509_V_ERR_EC_KEY_EXPLICIT_PARAMS",
}

# Reported when there is no certificate, or the leaf cannot be loaded at all.
NO_CERTIFICATE_ERROR = "X509_V_ERR_UNSPECIFIED"


def verify_error_name(code: int) -> str:
    """The `X509_V_ERR_*` name of an OpenSSL verification code."""
    return _VERIFY_ERROR_NAMES.get(code, f"X509_V_ERR_UNKNOWN_{code}")


class TrustStore:
    """The run's trust anchors (certifi plus `--ca-file`) and chain verification.

    Build it once per run: the anchors are parsed once. Each `verify` builds a
    fresh `X509Store` from them (about 0.1 ms for certifi's roots), because the
    verification time is a property of the store and OpenSSL does not let a
    store's time be changed again once set; a store is also never shared
    between concurrent verifications that way.
    """

    def __init__(self, anchors: Sequence[crypto.X509]) -> None:
        self._anchors = tuple(anchors)

    @property
    def anchor_count(self) -> int:
        return len(self._anchors)

    @classmethod
    def from_files(
        cls, extra_ca_files: Sequence[Path] = (), *, include_certifi: bool = True
    ) -> TrustStore:
        """certifi's roots (unless `include_certifi` is false) plus every certificate of each PEM file.

        Raises `ValueError` naming the file when one cannot be read, holds no
        PEM certificate or holds one OpenSSL cannot load.
        """
        anchors: list[crypto.X509] = []
        paths = [Path(certifi.where())] if include_certifi else []
        for path in [*paths, *extra_ca_files]:
            anchors.extend(_read_pem_certificates(path))
        return cls(anchors)

    # OpenSSL X509_verify_cert builds the chain first and checks validity
    # dates afterwards, stopping at the first error. Hence the precedence:
    #   1. untrusted (unknown CA, self-signed, missing intermediate) — even
    #      when the certificate is also expired;
    #   2. then signatures, extensions and dates, top of the chain first; the
    #      verdict's `error_depth` says which certificate failed (an expired
    #      intermediate is not an expired leaf).
    # No purpose (serverAuth) check is made.
    def verify(self, chain_der: Sequence[bytes], at: datetime) -> ChainVerdict:
        """Verify the leaf `chain_der[0]` with the presented intermediates at time `at`.

        `at` must be timezone-aware. Returns `ChainVerdict(trusted=True)` or the
        `X509_V_ERR_*` name of the first error with `error_depth`, the index in
        `chain_der` of the certificate it concerns (OpenSSL's depth in the chain
        it built when that certificate was not presented, e.g. an anchor); an
        empty chain or an unloadable leaf gives `NO_CERTIFICATE_ERROR`. Presented certificates are never
        trusted themselves, only used to build a path to an anchor.
        """
        if at.tzinfo is None:
            raise ValueError("verification time must be timezone-aware")
        if not chain_der:
            return ChainVerdict(trusted=False, verify_error=NO_CERTIFICATE_ERROR)
        try:
            leaf = crypto.load_certificate(crypto.FILETYPE_ASN1, chain_der[0])
        except crypto.Error:
            return ChainVerdict(trusted=False, verify_error=NO_CERTIFICATE_ERROR, error_depth=0)
        intermediates = []
        for der in chain_der[1:]:
            try:
                intermediates.append(crypto.load_certificate(crypto.FILETYPE_ASN1, der))
            except crypto.Error:
                continue  # an unreadable extra certificate simply does not help
        store = crypto.X509Store()
        for anchor in self._anchors:
            store.add_cert(anchor)
        store.set_time(at.astimezone(UTC))
        context = crypto.X509StoreContext(store, leaf, intermediates)
        try:
            context.verify_certificate()
        except crypto.X509StoreContextError as exc:
            return ChainVerdict(
                trusted=False,
                verify_error=_context_error_name(exc),
                error_depth=_context_error_depth(exc, chain_der),
            )
        return ChainVerdict(trusted=True)


def _context_error_name(exc: crypto.X509StoreContextError) -> str:
    errors = exc.errors
    if errors and isinstance(errors[0], int):
        return verify_error_name(errors[0])
    return NO_CERTIFICATE_ERROR


def _context_error_depth(
    exc: crypto.X509StoreContextError, chain_der: Sequence[bytes]
) -> int | None:
    """Index in `chain_der` of the certificate the error concerns, else OpenSSL's depth.

    pyOpenSSL's error carries the failing certificate and `errors` =
    [code, depth, message], the depth counting in the chain OpenSSL built.
    """
    failing = getattr(exc, "certificate", None)
    if isinstance(failing, crypto.X509):
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, failing)
        if der in chain_der:
            return list(chain_der).index(der)
    errors = exc.errors
    if len(errors) > 1 and isinstance(errors[1], int) and errors[1] >= 0:
        return errors[1]
    return None


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL
)


def _read_pem_certificates(path: Path) -> list[crypto.X509]:
    """Every certificate of a PEM file, loaded by OpenSSL (which tolerates odd serials)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read CA file {str(path)!r}: {exc.strerror or exc}") from exc
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ValueError(f"CA file {str(path)!r} holds no PEM certificate")
    certificates = []
    for number, block in enumerate(blocks, start=1):
        try:
            certificates.append(crypto.load_certificate(crypto.FILETYPE_PEM, block))
        except crypto.Error as exc:
            raise ValueError(
                f"CA file {str(path)!r}: certificate {number} is not a valid PEM certificate"
            ) from exc
    return certificates


def check_certificate(
    session: TlsSession, trust: TrustStore, expected_name: str, at: datetime
) -> CertificateCheck:
    """The chain verdict at `at` and whether the leaf's SAN dNSNames cover `expected_name`.

    RFC 8461 §4.2: chain to a trusted root, not expired, SAN DNS-ID matching
    the MX host (no CN fallback). Raises `ValueError` for a session without a
    peer certificate (the client context never negotiates anonymous ciphers).
    """
    leaf = session.leaf
    if leaf is None:
        raise ValueError("the TLS session has no peer certificate")
    return CertificateCheck(
        leaf=leaf,
        chain=trust.verify(session.chain_der, at),
        name_matches=certificate_matches(expected_name, leaf.san),
    )


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
                chunks.append(self._connection.bio_read(_RECEIVE_SIZE))
            except SSL.WantReadError:
                break
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
            self._session = self._capture_session()
            self._state = _State.OPEN

    def _capture_session(self) -> TlsSession:
        peer_chain = self._connection.get_peer_cert_chain() or []
        chain_der = tuple(
            crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate) for certificate in peer_chain
        )
        return TlsSession(
            version=self._connection.get_protocol_version_name(),
            cipher=self._connection.get_cipher_name() or "",
            chain=tuple(summarize_certificate(der) for der in chain_der),
            chain_der=chain_der,
        )

    def session(self) -> TlsSession:
        """Negotiated version, cipher and the peer chain (leaf first) of the handshake."""
        if self._session is None:
            raise RuntimeError("the handshake has not completed")
        return self._session

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

    def check(self, session: TlsSession, expected_name: str, at: datetime) -> CertificateCheck:
        """`check_certificate` against the run's trust store."""
        return check_certificate(session, self.trust, expected_name, at)
