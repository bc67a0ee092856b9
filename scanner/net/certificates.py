"""Summaries of X.509 certificates as the output shows them (subject, SAN, issuer, dates).

`summarize_certificate` reads DER with `cryptography`; a certificate it cannot parse
still gets a summary from pyOpenSSL, so a strange chain never breaks a probe.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from OpenSSL import crypto

from scanner.models import CertificateSummary

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


# Intermediates and shared hosts' leaves come back session after session: their
# summaries are kept (a summary is a few hundred octets; 4,096 of them about 2 MB).
_SUMMARY_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=_SUMMARY_CACHE_SIZE)
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
