"""Summaries of X.509 certificates as the output shows them (subject, SAN, issuer, dates).

`summarize_certificate` reads DER with `cryptography`; a certificate it cannot parse
still gets a summary from pyOpenSSL, so a strange chain never breaks a probe.
Turning a Name into RFC 4514 text is the costliest part of a summary: names of the
common forms are read from the certificate's outline (`scanner.core.der`), exactly as
cryptography writes them, and only the others go through cryptography. The leaves of
one CA all name their issuer in the same octets: issuer texts are kept by those
octets. The SAN is cryptography's; for a certificate cryptography refuses (an X.509
version it does not know, dates it cannot read) it is read from the octets
(`scanner.core.der.san_dns_names`), since OpenSSL, which pyOpenSSL gives no
extension reader of, may well accept it and a client checks those names.

What is kept is bounded by bytes: the first `MAX_SAN_KEPT` names with the count
(`certificate_dns_names` reads all of them again for a name check), dates a
certificate cannot hold are None (never a placeholder), and the caches are keyed by
digest and sized in bytes.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from OpenSSL import crypto

from scanner.core.der import (
    CertificateOutline,
    DerError,
    certificate_outline,
    name_text,
    san_dns_names,
)
from scanner.core.sized_cache import SizedCache
from scanner.models import MAX_SAN_KEPT, MAX_SAN_NAME, CertificateSummary

# What a text stands for when there is no parsed value (RFC 4514 text never starts with "<").
_UNPARSABLE = "<unparsable: "
MAX_TEXT: Final = 1024  # characters of a subject or issuer text kept


def _asn1_time(value: bytes | None) -> datetime | None:
    # pyOpenSSL returns GeneralizedTime text: YYYYMMDDhhmmssZ.
    if not value:
        return None
    try:
        return datetime.strptime(value.decode("ascii"), "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
    except (ValueError, UnicodeDecodeError):  # fractional seconds, offsets, garbage
        return None


def _openssl_time(read: Callable[[], bytes | None]) -> datetime | None:
    try:
        return _asn1_time(read())
    except crypto.Error:  # a time OpenSSL loaded but cannot convert (a malformed UTCTime)
        return None


def _kept_san(names: tuple[str, ...]) -> tuple[tuple[str, ...], int | None]:
    """(the names kept, the count when they are not all of them as presented)."""
    kept = tuple(
        name if len(name) <= MAX_SAN_NAME else name[: MAX_SAN_NAME - 1] + "…"
        for name in names[:MAX_SAN_KEPT]
    )
    whole = len(names) <= MAX_SAN_KEPT and all(len(name) <= MAX_SAN_NAME for name in names)
    return kept, None if whole else len(names)


def _der_san(der: bytes) -> tuple[str, ...]:
    try:
        return san_dns_names(der)
    except DerError:
        return ()


def _summary_without_cryptography(der: bytes, fingerprint: str, why: str) -> CertificateSummary:
    """A summary from OpenSSL (dates) and the certificate's octets (SAN), for a
    certificate cryptography refuses to parse."""
    subject = _cut_text(f"{_UNPARSABLE}{why}>")
    try:
        openssl_cert = crypto.load_certificate(crypto.FILETYPE_ASN1, der)
    except crypto.Error:
        return CertificateSummary(subject, (), "", None, None, fingerprint)
    san, count = _kept_san(_der_san(der))
    return CertificateSummary(
        subject=subject,
        san=san,
        issuer="",
        not_before=_openssl_time(openssl_cert.get_notBefore),
        not_after=_openssl_time(openssl_cert.get_notAfter),
        sha256=fingerprint,
        san_count=count,
    )


def _utc(read: Callable[[], datetime]) -> datetime | None:
    try:
        return read()
    except ValueError:  # a time Python's datetime cannot hold: the year 0000
        return None


def _cut_text(text: str) -> str:
    """A subject or issuer text of at most `MAX_TEXT` characters (a longer one ends in "…")."""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _name_text(read: Callable[[], x509.Name]) -> str:
    try:
        return read().rfc4514_string()
    except (ValueError, TypeError) as exc:  # TypeError: a value type its attribute cannot have
        return f"{_UNPARSABLE}{exc}>"


# A run meets a few hundred issuers; every leaf of one issuer names it in the same
# octets, and parsing a Name into rfc4514 text costs more than the rest of a summary.
# Kept by those octets, within a byte budget (a hostile issuer Name may be 60 kB).
ISSUER_CACHE_BYTES: Final = 512 * 1024
_issuer_texts: SizedCache[bytes, str] = SizedCache(ISSUER_CACHE_BYTES)


def _subject_text(certificate: x509.Certificate, outline: CertificateOutline | None) -> str:
    text = name_text(outline.subject) if outline is not None else None
    return _cut_text(_name_text(lambda: certificate.subject) if text is None else text)


def _issuer_text(
    certificate: x509.Certificate, outline: CertificateOutline | None, subject: str
) -> str:
    """`_name_text` of the issuer, kept by the issuer's encoding (the text is a function of it).

    `subject` is the subject's text; a self-issued certificate's issuer has the same.
    """
    if outline is None:
        return _cut_text(_name_text(lambda: certificate.issuer))
    issuer = outline.issuer
    if issuer == outline.subject and not subject.startswith(_UNPARSABLE):
        # Same octets, same text; not so for a parse error, whose message names the field.
        return subject
    text = _issuer_texts.get(issuer)
    if text is None:
        text = name_text(issuer)
        if text is None:
            text = _name_text(lambda: certificate.issuer)
        text = _cut_text(text)
        _issuer_texts.put(issuer, text, _ENTRY_OVERHEAD + len(issuer) + len(text))
    return text


def _san(certificate: x509.Certificate, der: bytes) -> tuple[str, ...]:
    """SAN dNSNames; read from the octets when cryptography refuses a name beside them
    (an x400Address, an ediPartyName: OpenSSL checks the dNSNames all the same)."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return tuple(extension.value.get_values_for_type(x509.DNSName))
    except (x509.ExtensionNotFound, x509.DuplicateExtension):
        return ()
    except (x509.UnsupportedGeneralNameType, ValueError):
        return _der_san(der)


def _load(der: bytes) -> x509.Certificate:
    with warnings.catch_warnings():
        # Non-positive serials (RFC 5280 §4.1.2.2 violations) are common enough.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_der_x509_certificate(der)


def certificate_dns_names(der: bytes) -> tuple[str, ...]:
    """Every SAN dNSName of `der`, for a name check when its summary keeps only some.

    cryptography's reading, or the octets' for a certificate it refuses; none when
    neither reads them.
    """
    try:
        certificate = _load(der)
    except (ValueError, x509.InvalidVersion):
        return _der_san(der)
    return _san(certificate, der)


# Intermediates and shared hosts' leaves (a provider's one certificate behind thousands
# of MX names) come back session after session: their summaries are kept, keyed by the
# SHA-256 of the DER (the fingerprint a summary computes anyway), within a byte budget.
# An entry costs about 1.5 kB; the hot set is a few hundred, and a larger cache only
# filled up with leaves met once (4,096 entries held 4.7 MB more at 20,000 domains
# than 1,024, for no more hits).
SUMMARY_CACHE_BYTES: Final = 2 * 1024 * 1024
_ENTRY_OVERHEAD: Final = 200  # bytes of an entry beyond its texts: objects, key, links
_summaries: SizedCache[bytes, CertificateSummary] = SizedCache(SUMMARY_CACHE_BYTES)


def summary_cost(summary: CertificateSummary) -> int:
    """About the bytes a summary holds: its texts and the objects around them."""
    texts = len(summary.subject) + len(summary.issuer) + len(summary.sha256)
    return _ENTRY_OVERHEAD + texts + sum(56 + len(name) for name in summary.san)


def summarize_certificate(der: bytes) -> CertificateSummary:
    """Subject and issuer (RFC 4514), SAN dNSNames, validity (UTC) and SHA-256 of `der`.

    Never raises for odd certificates: a missing or malformed SAN extension
    gives no names, a non-positive serial is tolerated, and a certificate that
    cannot be parsed at all gets an "<unparsable: ...>" subject, with the SAN and
    dates OpenSSL and the octets give. A date that cannot be read (OpenSSL cannot
    convert it, or it lies in the year 0000, which Python cannot represent) is
    None. At most `MAX_SAN_KEPT` names are kept, with the count when there are more.
    """
    digest = hashlib.sha256(der).digest()
    summary = _summaries.get(digest)
    if summary is None:
        summary = _summarize(der, digest.hex())
        _summaries.put(digest, summary, summary_cost(summary))
    return summary


def _summarize(der: bytes, fingerprint: str) -> CertificateSummary:
    try:
        certificate = _load(der)
    except (ValueError, x509.InvalidVersion) as exc:  # cryptography knows X.509 v1 and v3 only
        return _summary_without_cryptography(der, fingerprint, str(exc))
    try:
        outline: CertificateOutline | None = certificate_outline(der)
    except DerError:
        outline = None
    subject = _subject_text(certificate, outline)
    san, count = _kept_san(_san(certificate, der))
    return CertificateSummary(
        subject=subject,
        san=san,
        issuer=_issuer_text(certificate, outline, subject),
        not_before=_utc(lambda: certificate.not_valid_before_utc),
        not_after=_utc(lambda: certificate.not_valid_after_utc),
        sha256=fingerprint,
        san_count=count,
    )
