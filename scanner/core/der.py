"""The outline of a DER certificate (X.690 §8.1, RFC 5280 §4.1), read without parsing it.

DANE digests the SubjectPublicKeyInfo exactly as the certificate encodes it, and the
certificate summaries key issuer texts by the issuer Name's octets; both need only
where the fields of the tbsCertificate lie, which `certificate_outline` finds.

The summaries also show names as RFC 4514 text: `name_text` reads the common forms of
a Name from these octets, exactly as `cryptography` writes them, and answers None for
anything else, which the caller then leaves to cryptography (which builds an object
per attribute first, at three times the cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_DER: Final = 64 * 1024  # bytes of one certificate or key read

_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_OID: Final = 0x06
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


# ---------------------------------------------------------------- names, as shown


def _strict(data: bytes, offset: int, limit: int) -> tuple[int, int, int]:
    """`_element`, refusing BER's freedoms DER forbids (X.690 §10.1: the shortest length)
    and anything running past `limit`, the end of the enclosing element."""
    tag, start, end = _element(data, offset)
    first = data[offset + 1]
    if first > 0x80 and (data[offset + 2] == 0 or end - start < 0x80):
        raise DerError(f"length at offset {offset} is not in its shortest form")
    if end > limit:
        raise DerError(f"element at offset {offset} runs past its parent")
    return tag, start, end


# RFC 4514 §3 short names, the ones `cryptography` writes (its _NAMEOID_TO_NAME); the
# keys are the attribute types' OID contents (X.690 §8.19).
_SHORT_NAMES: Final = {
    bytes.fromhex("550403"): "CN",
    bytes.fromhex("550407"): "L",
    bytes.fromhex("550408"): "ST",
    bytes.fromhex("55040a"): "O",
    bytes.fromhex("55040b"): "OU",
    bytes.fromhex("550406"): "C",
    bytes.fromhex("550409"): "STREET",
    bytes.fromhex("0992268993f22c640119"): "DC",  # 0.9.2342.19200300.100.1.25
    bytes.fromhex("0992268993f22c640101"): "UID",  # 0.9.2342.19200300.100.1.1
}
_UTF8_STRING: Final = 0x0C
_PRINTABLE_STRING: Final = 0x13
_IA5_STRING: Final = 0x16
_PRINTABLE: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"
)
# RFC 4514 §2.4, in cryptography's order (the backslash first).
_ESCAPES: Final = (
    ("\\", "\\\\"),
    ('"', '\\"'),
    ("+", "\\+"),
    (",", "\\,"),
    (";", "\\;"),
    ("<", "\\<"),
    (">", "\\>"),
    ("\0", "\\00"),
)


def _string_value(tag: int, octets: bytes) -> str | None:
    """The text of a directory string of the three common types; None for the others."""
    if tag == _PRINTABLE_STRING:
        return octets.decode("ascii") if _PRINTABLE.issuperset(octets) else None
    if tag == _UTF8_STRING:
        try:
            return octets.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if tag == _IA5_STRING:
        return octets.decode("ascii") if octets.isascii() else None
    return None


def _escaped(value: str) -> str:
    """An attribute value escaped as `cryptography` escapes it (RFC 4514 §2.4)."""
    if not value:
        return ""
    for special, escaped in _ESCAPES:
        if special in value:
            value = value.replace(special, escaped)
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


def name_text(name_der: bytes) -> str | None:
    """The RFC 4514 text of a DER Name, as `cryptography`'s `Name.rfc4514_string()` writes it.

    Reads names whose every RDN holds one attribute of a type with a short name
    (CN, O, OU, C, ST, L, STREET, DC, UID) in a UTF8String, PrintableString or
    IA5String, in DER. None for any other name (multi-valued RDNs, other types,
    other string types, values or encodings cryptography would refuse): ask
    cryptography then.
    """
    try:
        tag, offset, end = _strict(name_der, 0, len(name_der))
        if tag != _SEQUENCE or end != len(name_der):
            return None
        parts: list[str] = []
        while offset < end:
            tag, start, rdn_end = _strict(name_der, offset, end)
            if tag != _SET:
                return None
            tag, start, attribute_end = _strict(name_der, start, rdn_end)
            if tag != _SEQUENCE or attribute_end != rdn_end:  # one attribute per RDN
                return None
            tag, start, oid_end = _strict(name_der, start, attribute_end)
            short = _SHORT_NAMES.get(name_der[start:oid_end]) if tag == _OID else None
            if short is None:
                return None
            tag, start, value_end = _strict(name_der, oid_end, attribute_end)
            value = _string_value(tag, name_der[start:value_end])
            if value is None or value_end != attribute_end:
                return None
            parts.append(f"{short}={_escaped(value)}")
            offset = rdn_end
    except DerError:
        return None
    parts.reverse()  # RFC 4514 §2.1: the last RDN first
    return ",".join(parts)


# ---------------------------------------------------------------- the SAN, read by hand

MAX_SAN_DER: Final = 1024 * 1024  # a certificate larger than this is not read for its SAN
_CONTEXT_3: Final = 0xA3
_BOOLEAN: Final = 0x01
_OCTET_STRING: Final = 0x04
_DNS_NAME: Final = 0x82  # GeneralName dNSName: [2] IMPLICIT IA5String
_SUBJECT_ALT_NAME: Final = bytes.fromhex("551d11")  # 2.5.29.17


def san_dns_names(certificate_der: bytes) -> tuple[str, ...]:
    """The SAN dNSName entries of a certificate, read from its octets (RFC 5280 §4.2.1.6).

    For a certificate `cryptography` refuses (an X.509 version it does not know, a
    date it cannot read) but OpenSSL accepts: the names are what a TLS client checks.
    Extensions ::= [3] EXPLICIT SEQUENCE OF Extension { extnID, critical BOOLEAN
    DEFAULT FALSE, extnValue OCTET STRING }; GeneralNames ::= SEQUENCE OF GeneralName,
    dNSName [2] IA5String. Names that are not ASCII are read with replacement
    characters (they can match no host name). Raises `DerError` for bytes not so laid
    out, or when the certificate has no SAN extension or two of them.
    """
    if len(certificate_der) > MAX_SAN_DER:
        raise DerError("certificate longer than 1 MiB")
    tag, start, _ = _element(certificate_der, 0)
    if tag != _SEQUENCE:
        raise DerError("not a certificate: no outer SEQUENCE")
    tag, offset, tbs_end = _element(certificate_der, start)
    if tag != _SEQUENCE:
        raise DerError("not a certificate: no tbsCertificate SEQUENCE")
    values: list[bytes] = []
    while offset < tbs_end:
        tag, content, end = _element(certificate_der, offset)
        offset = end
        if tag != _CONTEXT_3:
            continue
        tag, extension, extensions_end = _element(certificate_der, content)
        if tag != _SEQUENCE:
            raise DerError("no Extensions SEQUENCE")
        while extension < extensions_end:
            tag, field, extension_end = _element(certificate_der, extension)
            extension = extension_end
            tag, oid_start, oid_end = _element(certificate_der, field)
            if tag != _OID or certificate_der[oid_start:oid_end] != _SUBJECT_ALT_NAME:
                continue
            tag, value_start, value_end = _element(certificate_der, oid_end)
            if tag == _BOOLEAN:
                tag, value_start, value_end = _element(certificate_der, value_end)
            if tag != _OCTET_STRING or value_end > extension_end:
                raise DerError("a subjectAltName without its OCTET STRING")
            values.append(certificate_der[value_start:value_end])
    if len(values) != 1:
        raise DerError("no subjectAltName extension" if not values else "two subjectAltNames")
    names = values[0]
    tag, offset, end = _element(names, 0)
    if tag != _SEQUENCE:
        raise DerError("GeneralNames is no SEQUENCE")
    found: list[str] = []
    while offset < end:
        tag, start, name_end = _element(names, offset)
        if tag == _DNS_NAME:
            found.append(names[start:name_end].decode("ascii", "replace"))
        offset = name_end
    return tuple(found)
