"""What a hostile domain owner can serve: crafted certificates, and SMTP servers presenting them.

`Forge` is a CA that issues leaves as `cryptography` builds them and, where a
certificate no builder makes is wanted (a date with fractional seconds, X.509 v4, a
duplicated extension, the year 0000), rewrites the tbsCertificate and signs it again,
so OpenSSL still verifies the result. `serve_certificates` runs the lab's own SMTP
server (`scanner.lab.smtp_server.SmtpHandler`) on loopback addresses with one chain
per address; DNS comes from a lab world the test writes.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scanner.lab.connections import ConnectionStats
from scanner.lab.listeners import bind_shared_port
from scanner.lab.smtp_server import SmtpHandler
from scanner.lab.world import SmtpServer

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

# ---------------------------------------------------------------- DER, by hand


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element (X.690 §8.1): tag, definite length, content."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def children(element: bytes) -> list[bytes]:
    """The elements inside one constructed DER element, each whole."""
    offset = 1
    first = element[offset]
    offset += 1 + (first & 0x7F if first & 0x80 else 0)
    found = []
    while offset < len(element):
        start = offset
        first = element[offset + 1]
        if first & 0x80:
            count = first & 0x7F
            size = int.from_bytes(element[offset + 2 : offset + 2 + count], "big")
            offset += 2 + count + size
        else:
            offset += 2 + first
        found.append(element[start:offset])
    return found


# tbsCertificate children, after the explicit version: serial, signature, issuer,
# validity, subject, spki, then [3] extensions.
VERSION, SERIAL, SIGNATURE, ISSUER, VALIDITY, SUBJECT, SPKI, EXTENSIONS = range(8)


def generalized_time(text: str) -> bytes:
    return tlv(0x18, text.encode("ascii"))


# ---------------------------------------------------------------- the forge


@dataclass(frozen=True, slots=True)
class Material:
    """A chain (leaf first) in DER and the leaf's private key."""

    chain: tuple[bytes, ...]
    key: ec.EllipticCurvePrivateKey

    @property
    def leaf(self) -> bytes:
        return self.chain[0]

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        pem = b"".join(ssl.DER_cert_to_PEM_cert(der).encode("ascii") for der in self.chain)
        key = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with trustme.Blob(key + pem).tempfile() as path:
            context.load_cert_chain(path)
        return context


class Forge:
    """A CA whose certificates may be rewritten and signed again (ECDSA P-256, SHA-256).

    Self-signed, or an intermediate issued by `parent`, its own certificate passed
    through `rewrite` first when given.
    """

    def __init__(
        self,
        name: str = "hostile test CA",
        *,
        parent: Forge | None = None,
        rewrite: Callable[[list[bytes]], list[bytes]] | None = None,
    ) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        if parent is None:
            builder = self._builder(self.subject, self.key, ca=True).issuer_name(self.subject)
            certificate = builder.sign(self.key, hashes.SHA256())
            self.der = certificate.public_bytes(serialization.Encoding.DER)
        else:
            self.der = parent.sign(self.subject, self.key, ca=True, rewrite=rewrite)

    @property
    def pem(self) -> bytes:
        return ssl.DER_cert_to_PEM_cert(self.der).encode("ascii")

    @staticmethod
    def _builder(
        subject: x509.Name, key: ec.EllipticCurvePrivateKey, *, ca: bool
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )

    def sign(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        *,
        names: Sequence[str] = (),
        ca: bool = False,
        rewrite: Callable[[list[bytes]], list[bytes]] | None = None,
    ) -> bytes:
        """The DER of a certificate for `subject` and `key`'s public key, issued here."""
        builder = self._builder(subject, key, ca=ca).issuer_name(self.subject)
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in names]),
                critical=False,
            )
        der = builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        return self.resign(der, rewrite) if rewrite is not None else der

    def issue(
        self,
        names: Sequence[str],
        *,
        rewrite: Callable[[list[bytes]], list[bytes]] | None = None,
    ) -> Material:
        """A leaf for `names` (SAN dNSNames), its tbsCertificate's elements passed through
        `rewrite` and signed again when it is given; the chain holds this CA when it is
        an intermediate."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile")])
        return Material((self.sign(subject, key, names=names, rewrite=rewrite),), key)

    def resign(self, der: bytes, rewrite: Callable[[list[bytes]], list[bytes]]) -> bytes:
        """`der` with its tbsCertificate's elements rewritten, signed again by this CA."""
        tbs, algorithm, _ = children(der)
        tbs = tlv(0x30, b"".join(rewrite(children(tbs))))
        signature = self.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
        return tlv(0x30, tbs + algorithm + tlv(0x03, b"\x00" + signature))


def with_dates(
    not_before: bytes | None = None, not_after: bytes | None = None
) -> Callable[[list[bytes]], list[bytes]]:
    """A rewrite putting these encoded times in the validity."""

    def rewrite(elements: list[bytes]) -> list[bytes]:
        before, after = children(elements[VALIDITY])
        elements[VALIDITY] = tlv(0x30, (not_before or before) + (not_after or after))
        return elements

    return rewrite


def as_version(number: int) -> Callable[[list[bytes]], list[bytes]]:
    """A rewrite giving the certificate X.509 version `number` (the field holds number - 1)."""

    def rewrite(elements: list[bytes]) -> list[bytes]:
        elements[VERSION] = tlv(0xA0, tlv(0x02, bytes([number - 1])))
        return elements

    return rewrite


def with_extension_twice(oid: x509.ObjectIdentifier) -> Callable[[list[bytes]], list[bytes]]:
    """A rewrite repeating the extension `oid` (RFC 5280 §4.2 forbids it)."""
    wanted = tlv(0x06, _oid_content(oid.dotted_string))

    def rewrite(elements: list[bytes]) -> list[bytes]:
        (sequence,) = children(elements[EXTENSIONS])
        extensions = children(sequence)
        twice = [e for e in extensions for _ in range(2 if e[2:].startswith(wanted) else 1)]
        assert len(twice) == len(extensions) + 1
        elements[EXTENSIONS] = tlv(0xA3, tlv(0x30, b"".join(twice)))
        return elements

    return rewrite


def _oid_content(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    content = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        content += bytes(reversed(chunk))
    return bytes(content)


# ---------------------------------------------------------------- SMTP servers


@asynccontextmanager
async def serve_certificates(
    chains: Mapping[str, ssl.SSLContext], hostname: str = "mx.hostile.example"
) -> AsyncIterator[int]:
    """The lab's good SMTP server on each address of `chains`, presenting that address's
    context after STARTTLS; yields the one port they share."""
    servers = {address: SmtpServer(address, (hostname,)) for address in chains}
    handler = SmtpHandler(servers, lambda server: chains[server.address], ConnectionStats())
    bound = bind_shared_port(list(chains))
    listeners = bound.listeners()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        try:
            yield bound.port
        finally:
            nursery.cancel_scope.cancel()
