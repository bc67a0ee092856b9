"""The run's trust store and chain verification at an injected time.

Built once per run from certifi's roots plus `--ca-file` anchors; `verify` tells
expired, not-yet-valid, untrusted and other chain errors apart by their OpenSSL
`X509_V_ERR_*` names and the depth they concern; `check_certificate` adds the
RFC 8461 §4.2 name check (SAN dNSNames only). A `PresentedChain` hands over the
certificates the handshake parsed already, so the leaf is not parsed twice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import certifi
from OpenSSL import crypto

from scanner.core.names import certificate_matches
from scanner.core.sized_cache import SizedCache
from scanner.models import CertificateCheck, ChainVerdict, TlsSession
from scanner.net.certificates import certificate_dns_names

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


@dataclass(frozen=True, slots=True)
class PresentedChain:
    """A peer chain as presented, leaf first: its DER and the same certificates as
    the OpenSSL objects the handshake parsed.

    Verifying with it spares parsing the chain again (the leaf is new in nearly
    every session). It stays with the TLS stream that produced it and never
    crosses a process: `TlsSession` carries the DER alone.
    """

    der: tuple[bytes, ...]
    certificates: tuple[crypto.X509, ...]

    def __post_init__(self) -> None:
        if len(self.der) != len(self.certificates):
            raise ValueError("a presented chain needs one OpenSSL certificate per DER")


class TrustStore:
    """The run's trust anchors (certifi plus `--ca-file`) and chain verification.

    Build it once per run: the anchors are parsed once. The verification time is
    a property of an `X509Store` that OpenSSL does not let be changed once set,
    and building one from certifi's roots costs about 0.1 ms, a third of a
    verification: so a store is kept per whole second (OpenSSL checks validity
    dates in whole seconds, `X509_VERIFY_PARAM_set_time` takes a `time_t`) and
    shared by every verification at that second. The stores of the last
    `_STORES_KEPT` seconds are kept: a verification is at the time its session
    began, sessions that began in different seconds finish interleaved, and with
    one store kept they rebuilt it over and over (173 stores for 2,000 domains in
    14 s). Verification is synchronous, so two never use a store at once within a
    thread; the store of a second is only ever read.

    Presented intermediates are parsed once and kept (a cache bounded in bytes,
    keyed by their digest), since the same few come back in session after session.
    """

    def __init__(self, anchors: Sequence[crypto.X509]) -> None:
        self._anchors = tuple(anchors)
        self._stores: dict[int, crypto.X509Store] = {}  # by second, oldest first
        # by the SHA-256 of the DER; cost: the DER three times (OpenSSL's parsed copy)
        self._intermediates: SizedCache[bytes, crypto.X509 | None] = SizedCache(
            _INTERMEDIATE_CACHE_BYTES
        )

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
    def verify(
        self, chain_der: Sequence[bytes], at: datetime, *, presented: PresentedChain | None = None
    ) -> ChainVerdict:
        """Verify the leaf `chain_der[0]` with the presented intermediates at time `at`.

        `at` must be timezone-aware. Returns `ChainVerdict(trusted=True)` or the
        `X509_V_ERR_*` name of the first error with `error_depth`, the index in
        `chain_der` of the certificate it concerns (OpenSSL's depth in the chain
        it built when that certificate was not presented, e.g. an anchor); an
        empty chain or an unloadable leaf gives `NO_CERTIFICATE_ERROR`. Presented certificates are never
        trusted themselves, only used to build a path to an anchor.

        `presented`, the same chain as the handshake's OpenSSL objects, gives the
        same verdict without parsing `chain_der` again; a `presented` whose DER is
        not `chain_der` raises `ValueError`.
        """
        if at.tzinfo is None:
            raise ValueError("verification time must be timezone-aware")
        if presented is not None and presented.der != tuple(chain_der):
            raise ValueError("the presented certificates are not those of chain_der")
        if not chain_der:
            return ChainVerdict(trusted=False, verify_error=NO_CERTIFICATE_ERROR)
        if presented is not None:
            leaf, *intermediates = presented.certificates
        else:
            try:
                leaf = crypto.load_certificate(crypto.FILETYPE_ASN1, chain_der[0])
            except crypto.Error:
                return ChainVerdict(trusted=False, verify_error=NO_CERTIFICATE_ERROR, error_depth=0)
            intermediates = [
                certificate
                for certificate in map(self._intermediate, chain_der[1:])
                if certificate is not None  # an unreadable extra certificate simply does not help
            ]
        context = crypto.X509StoreContext(self._store_at(at), leaf, intermediates)
        try:
            context.verify_certificate()
        except crypto.X509StoreContextError as exc:
            return ChainVerdict(
                trusted=False,
                verify_error=_context_error_name(exc),
                error_depth=_context_error_depth(exc, chain_der),
            )
        return ChainVerdict(trusted=True)

    def _store_at(self, at: datetime) -> crypto.X509Store:
        second = int(at.timestamp())
        store = self._stores.get(second)
        if store is not None:
            return store
        store = crypto.X509Store()
        for anchor in self._anchors:
            store.add_cert(anchor)
        store.set_time(datetime.fromtimestamp(second, UTC))
        if len(self._stores) >= _STORES_KEPT:
            self._stores.pop(next(iter(self._stores)))  # the oldest second
        self._stores[second] = store
        return store

    def _intermediate(self, der: bytes) -> crypto.X509 | None:
        key = hashlib.sha256(der).digest()
        if key in self._intermediates:
            return self._intermediates.get(key)
        try:
            certificate: crypto.X509 | None = crypto.load_certificate(crypto.FILETYPE_ASN1, der)
        except crypto.Error:
            certificate = None
        self._intermediates.put(key, certificate, 200 + 3 * len(der))
        return certificate


# Seconds whose stores are kept: sessions last a few seconds at most (--timeout).
_STORES_KEPT = 8

# Distinct intermediates a run meets: a few hundred on the internet, a few kB each.
_INTERMEDIATE_CACHE_BYTES = 4 * 1024 * 1024


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
    session: TlsSession,
    trust: TrustStore,
    expected_name: str,
    at: datetime,
    *,
    presented: PresentedChain | None = None,
) -> CertificateCheck:
    """The chain verdict at `at` and whether the leaf's SAN dNSNames cover `expected_name`.

    RFC 8461 §4.2: chain to a trusted root, not expired, SAN DNS-ID matching
    the MX host (no CN fallback). Raises `ValueError` for a session without a
    peer certificate (the client context never negotiates anonymous ciphers).
    `presented` is the session's chain as the handshake parsed it
    (`TlsStream.presented_chain()`); see `TrustStore.verify`.
    """
    leaf = session.leaf
    if leaf is None:
        raise ValueError("the TLS session has no peer certificate")
    # The summary keeps the first names only; the check reads them all again then.
    full = not leaf.san_complete and session.chain_der
    names = certificate_dns_names(session.chain_der[0]) if full else leaf.san
    return CertificateCheck(
        leaf=leaf,
        chain=trust.verify(session.chain_der, at, presented=presented),
        name_matches=certificate_matches(expected_name, names),
    )
