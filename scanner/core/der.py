"""The outline of a DER certificate (X.690 §8.1, RFC 5280 §4.1), read without parsing it.

DANE digests the SubjectPublicKeyInfo exactly as the certificate encodes it, and the
certificate summaries key issuer texts by the issuer Name's octets; both need only
where the fields of the tbsCertificate lie, which `certificate_outline` finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_DER: Final = 64 * 1024  # bytes of one certificate or key read

_SEQUENCE: Final = 0x30
_CONTEXT_0: Final = 0xA0


class DerError(ValueError):
    """Bytes that are not the DER the caller expected; the message says where."""


def _element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `offset` (X.690 §8.1)."""
    if offset + 2 > len(data):
        raise DerError(f"truncated element at offset {offset}")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError(f"multi-byte tag at offset {offset}")
    first = data[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 3 or start + count > len(data):
            raise DerError(f"bad length at offset {offset}")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise DerError(f"element at offset {offset} runs past the end")
    return tag, start, end


@dataclass(frozen=True, slots=True)
class CertificateOutline:
    """Fields of a certificate's tbsCertificate, each exactly as encoded in it."""

    issuer: bytes
    subject: bytes
    spki: bytes


def certificate_outline(certificate_der: bytes) -> CertificateOutline:
    """Where the issuer, subject and SubjectPublicKeyInfo lie (RFC 5280 §4.1).

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ... } ... }.
    Raises `DerError` for bytes not so laid out.
    """
    if len(certificate_der) > MAX_DER:
        raise DerError("certificate longer than 64 KiB")
    tag, start, _ = _element(certificate_der, 0)
    if tag != _SEQUENCE:
        raise DerError("not a certificate: no outer SEQUENCE")
    tag, offset, tbs_end = _element(certificate_der, start)
    if tag != _SEQUENCE:
        raise DerError("not a certificate: no tbsCertificate SEQUENCE")
    tag, _, element_end = _element(certificate_der, offset)
    if tag == _CONTEXT_0:  # the explicit version
        offset = element_end
    fields: list[bytes] = []
    for name in ("serialNumber", "signature", "issuer", "validity", "subject", "spki"):
        tag, _, end = _element(certificate_der, offset)
        if end > tbs_end:
            raise DerError(f"tbsCertificate ends before its {name}")
        if name in ("issuer", "subject", "spki") and tag != _SEQUENCE:
            raise DerError(f"no {name} SEQUENCE")
        fields.append(certificate_der[offset:end])
        offset = end
    return CertificateOutline(issuer=fields[2], subject=fields[4], spki=fields[5])
