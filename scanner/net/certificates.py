"""Summaries of X.509 certificates as the output shows them (subject, SAN, issuer, dates).

`summarize_certificate` reads DER with `cryptography`; a certificate it cannot parse
still gets a summary from pyOpenSSL, so a strange chain never breaks a probe.
Turning a Name into RFC 4514 text is the costliest part of a summary: names of the
common forms are read from the certificate's outline (`scanner.core.der`), exactly as
cryptography writes them, and only the others go through cryptography. The leaves of
one CA all name their issuer in the same octets: issuer texts are kept by those
octets. The SAN is always cryptography's: the name checks use it, and a certificate
cryptography refuses an extension of has none.
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

from scanner.core.der import CertificateOutline, DerError, certificate_outline, name_text
from scanner.models import CertificateSummary

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a text stands for when there is no parsed value (RFC 4514 text never starts with "<").
_UNPARSABLE = "<unparsable: "


def _asn1_time(value: bytes | None) -> datetime:
    # pyOpenSSL returns GeneralizedTime text: YYYYMMDDhhmmssZ.
    if not value:
        return _EPOCH
    try:
        return datetime.strptime(value.decode("ascii"), "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return _EPOCH


def _openssl_time(read: Callable[[], bytes | None]) -> datetime:
    try:
        return _asn1_time(read())
    except crypto.Error:  # a time OpenSSL loaded but cannot convert (a malformed UTCTime)
        return _EPOCH


def _summary_without_cryptography(der: bytes, fingerprint: str, why: str) -> CertificateSummary:
    """A summary from OpenSSL alone, for a certificate cryptography refuses to parse."""
    try:
        openssl_cert = crypto.load_certificate(crypto.FILETYPE_ASN1, der)
    except crypto.Error:
        return CertificateSummary(f"{_UNPARSABLE}{why}>", (), "", _EPOCH, _EPOCH, fingerprint)
    return CertificateSummary(
        subject=f"{_UNPARSABLE}{why}>",
        san=(),
        issuer="",
        not_before=_openssl_time(openssl_cert.get_notBefore),
        not_after=_openssl_time(openssl_cert.get_notAfter),
        sha256=fingerprint,
    )


def _utc(read: Callable[[], datetime]) -> datetime:
    try:
        return read()
    except ValueError:  # a time Python's datetime cannot hold: the year 0000
        return _EPOCH


def _name_text(read: Callable[[], x509.Name]) -> str:
    try:
        return read().rfc4514_string()
    except (ValueError, TypeError) as exc:  # TypeError: a value type its attribute cannot have
        return f"{_UNPARSABLE}{exc}>"


# A run meets a few hundred issuers; every leaf of one issuer names it in the same
# octets, and parsing a Name into rfc4514 text costs more than the rest of a summary.
_ISSUER_CACHE_SIZE = 1024
_issuer_texts: dict[bytes, str] = {}


def _subject_text(certificate: x509.Certificate, outline: CertificateOutline | None) -> str:
    text = name_text(outline.subject) if outline is not None else None
    return _name_text(lambda: certificate.subject) if text is None else text


def _issuer_text(
    certificate: x509.Certificate, outline: CertificateOutline | None, subject: str
) -> str:
    """`_name_text` of the issuer, kept by the issuer's encoding (the text is a function of it).

    `subject` is the subject's text; a self-issued certificate's issuer has the same.
    """
    if outline is None:
        return _name_text(lambda: certificate.issuer)
    issuer = outline.issuer
    if issuer == outline.subject and not subject.startswith(_UNPARSABLE):
        # Same octets, same text; not so for a parse error, whose message names the field.
        return subject
    text = _issuer_texts.get(issuer)
    if text is None:
        text = name_text(issuer)
        if text is None:
            text = _name_text(lambda: certificate.issuer)
        if len(_issuer_texts) >= _ISSUER_CACHE_SIZE:
            _issuer_texts.pop(next(iter(_issuer_texts)))  # the oldest
        _issuer_texts[issuer] = text
    return text


def _san(certificate: x509.Certificate) -> tuple[str, ...]:
    """SAN dNSNames; none when cryptography refuses the extensions."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return tuple(extension.value.get_values_for_type(x509.DNSName))
    except (
        x509.ExtensionNotFound,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,  # x400Address, ediPartyName
        ValueError,
    ):
        return ()


# Intermediates and shared hosts' leaves (a provider's one certificate behind thousands
# of MX names) come back session after session: their summaries are kept, keyed by the
# DER. An entry costs about 1.5 kB with its key; the hot set is a few hundred, and a
# larger cache only filled up with leaves met once (4,096 entries held 4.7 MB more at
# 20,000 domains than 1,024, for no more hits).
_SUMMARY_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_SUMMARY_CACHE_SIZE)
def summarize_certificate(der: bytes) -> CertificateSummary:
    """Subject and issuer (RFC 4514), SAN dNSNames, validity (UTC) and SHA-256 of `der`.

    Never raises for odd certificates: a missing or malformed SAN extension
    gives no names, a non-positive serial is tolerated, and a certificate that
    cannot be parsed at all gets an "<unparsable: ...>" subject and, where even
    OpenSSL cannot read it or its dates, 1970-01-01 dates; so does a date in the
    year 0000, which Python cannot represent.
    """
    fingerprint = hashlib.sha256(der).hexdigest()
    try:
        with warnings.catch_warnings():
            # Non-positive serials (RFC 5280 §4.1.2.2 violations) are common enough.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certificate = x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion) as exc:  # cryptography knows X.509 v1 and v3 only
        return _summary_without_cryptography(der, fingerprint, str(exc))
    try:
        outline: CertificateOutline | None = certificate_outline(der)
    except DerError:
        outline = None
    subject = _subject_text(certificate, outline)
    return CertificateSummary(
        subject=subject,
        san=_san(certificate),
        issuer=_issuer_text(certificate, outline, subject),
        not_before=_utc(lambda: certificate.not_valid_before_utc),
        not_after=_utc(lambda: certificate.not_valid_after_utc),
        sha256=fingerprint,
    )
