"""Certificates for lab servers: one lab CA, minted once per (kind, hostname) and cached.

The lab CA is the only trust anchor the scanner is given (`Lab.ca_file`). Every
other kind of certificate is wrong in exactly one way:

| kind                 | chain served        | what a verifier should say                    |
|----------------------|---------------------|-----------------------------------------------|
| good                 | leaf (lab CA)       | valid for the hostname                        |
| wildcard             | leaf (lab CA)       | valid: SAN `*.<parent of hostname>`           |
| wrong-name           | leaf (lab CA)       | SAN `wrong-name.invalid`; CN is the hostname  |
| expired              | leaf (lab CA)       | X509_V_ERR_CERT_HAS_EXPIRED                   |
| not-yet-valid        | leaf (lab CA)       | X509_V_ERR_CERT_NOT_YET_VALID                 |
| unknown-ca           | leaf (other CA)     | X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY  |
| self-signed          | the leaf itself     | X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT        |
| missing-intermediate | leaf (intermediate) | X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY  |
| expired-intermediate | leaf, intermediate  | X509_V_ERR_CERT_HAS_EXPIRED at depth 1; the   |
|                      |                     | leaf itself is valid                          |
| intermediate         | leaf, intermediate  | valid (for DANE-TA on the intermediate)       |
| expired-wrong-name   | leaf (lab CA)       | expired, SAN `wrong-name.invalid` (DANE-EE    |
|                      |                     | passes where PKIX fails twice)                |

Keys are ECDSA P-256 (fast to make). The mint is process-wide (`default_mint()`),
so many labs in one test run share the CA and the leaves.

A server context is either modern (the stdlib defaults: TLS 1.2 and up) or
legacy (`legacy_tls=True`: TLS 1.0 and 1.1 only, security level 0, the only
way OpenSSL 3 agrees to speak them). A dispatching context hands every SNI
name a context of its own kind: switching to a modern context in the SNI
callback would reset the security level and leave no usable cipher.
"""

from __future__ import annotations

import datetime
import functools
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scanner.lab.world import CertificateKind

WRONG_NAME = "wrong-name.invalid"
VALIDITY_DAYS = 365
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"  # OpenSSL 3 refuses TLS 1.0/1.1 at level 1 and up

# Picks (kind, hostname) for the SNI name a client sent (None when it sent none).
CertificateChooser = Callable[[str | None], tuple[CertificateKind, str]]


@dataclass(frozen=True, slots=True)
class LeafMaterial:
    """PEM of a served chain (leaf first, no root) and its private key."""

    chain_pem: bytes
    key_pem: bytes

    @property
    def combined_pem(self) -> bytes:
        return self.key_pem + self.chain_pem


class CertificateMint:
    """Makes and caches lab certificates and server-side `ssl.SSLContext`s."""

    def __init__(self) -> None:
        self.ca = trustme.CA(organization_name="scanner lab CA")
        self._other_ca: trustme.CA | None = None
        self._intermediate: trustme.CA | None = None
        self._leaves: dict[tuple[CertificateKind, str], LeafMaterial] = {}
        self._contexts: dict[tuple[CertificateKind, str, bool], ssl.SSLContext] = {}

    @property
    def ca_pem(self) -> bytes:
        """PEM of the lab CA certificate: the trust anchor to give the scanner."""
        pem: bytes = self.ca.cert_pem.bytes()
        return pem

    def leaf(self, kind: CertificateKind, hostname: str) -> LeafMaterial:
        """The certificate a server of `kind` presents for `hostname` (cached)."""
        key = (kind, hostname)
        material = self._leaves.get(key)
        if material is None:
            material = self._mint(kind, hostname)
            self._leaves[key] = material
        return material

    def context(
        self, kind: CertificateKind, hostname: str, *, legacy_tls: bool = False
    ) -> ssl.SSLContext:
        """A server context presenting `leaf(kind, hostname)` (cached; do not mutate).

        `legacy_tls`: accept only TLS 1.0 and 1.1 (see the module docstring).
        """
        key = (kind, hostname, legacy_tls)
        context = self._contexts.get(key)
        if context is None:
            context = _server_context(self.leaf(kind, hostname), legacy_tls=legacy_tls)
            self._contexts[key] = context
        return context

    def dispatching_context(
        self, choose: CertificateChooser, *, legacy_tls: bool = False
    ) -> ssl.SSLContext:
        """A fresh server context that picks its certificate from the client's SNI.

        RFC 6066 §3: without SNI the server presents its default (`choose(None)`).
        Every context it switches to has the same `legacy_tls` setting.
        """
        default_kind, default_host = choose(None)
        context = _server_context(self.leaf(default_kind, default_host), legacy_tls=legacy_tls)

        def on_server_name(
            connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
        ) -> None:
            kind, host = choose(server_name)
            connection.context = self.context(kind, host, legacy_tls=legacy_tls)

        context.sni_callback = on_server_name
        return context

    def chain_der(self, kind: CertificateKind, hostname: str) -> tuple[bytes, ...]:
        """The DER of the chain a server of `kind` presents for `hostname`, leaf first."""
        certificates = x509.load_pem_x509_certificates(self.leaf(kind, hostname).chain_pem)
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in certificates)

    def issuer_der(self, kind: CertificateKind, hostname: str) -> bytes:
        """The DER of the certificate that issued that leaf (for a lab TLSA `issuer` record).

        The next certificate sent when there is one; else the lab CA, the other CA or
        the unsent intermediate, whichever is named as the leaf's issuer; else the leaf
        itself (self-signed).
        """
        chain = self.chain_der(kind, hostname)
        if len(chain) > 1:
            return chain[1]
        leaf = x509.load_der_x509_certificate(chain[0])
        for ca in (self.ca, self._other_ca, self._intermediate):
            if ca is None:
                continue
            certificate = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
            if certificate.subject == leaf.issuer:
                return certificate.public_bytes(serialization.Encoding.DER)
        return chain[0]

    # ------------------------------------------------------------ minting

    def _mint(self, kind: CertificateKind, hostname: str) -> LeafMaterial:
        now = datetime.datetime.now(datetime.UTC)
        day = datetime.timedelta(days=1)
        match kind:
            case CertificateKind.GOOD:
                return _material(self.ca.issue_cert(hostname))
            case CertificateKind.WILDCARD:
                parent = hostname.partition(".")[2] or hostname
                return _material(self.ca.issue_cert(f"*.{parent}"))
            case CertificateKind.WRONG_NAME:
                return _material(self.ca.issue_cert(WRONG_NAME, common_name=hostname))
            case CertificateKind.EXPIRED:
                return _material(
                    self.ca.issue_cert(
                        hostname, not_before=now - 60 * day, not_after=now - 30 * day
                    )
                )
            case CertificateKind.NOT_YET_VALID:
                return _material(
                    self.ca.issue_cert(
                        hostname, not_before=now + 30 * day, not_after=now + 400 * day
                    )
                )
            case CertificateKind.UNKNOWN_CA:
                if self._other_ca is None:
                    self._other_ca = trustme.CA(organization_name="scanner lab unknown CA")
                return _material(self._other_ca.issue_cert(hostname))
            case CertificateKind.MISSING_INTERMEDIATE:
                if self._intermediate is None:
                    self._intermediate = self.ca.create_child_ca()
                return _material(self._intermediate.issue_cert(hostname), leaf_only=True)
            case CertificateKind.SELF_SIGNED:
                return _self_signed(hostname, now)
            case CertificateKind.EXPIRED_INTERMEDIATE:
                return issue_via_intermediate(
                    self.ca,
                    hostname,
                    intermediate_validity=(now - 400 * day, now - 30 * day),
                    leaf_validity=(now - day, now + VALIDITY_DAYS * day),
                )
            case CertificateKind.INTERMEDIATE:
                return issue_via_intermediate(
                    self.ca,
                    hostname,
                    intermediate_validity=(now - day, now + 3 * VALIDITY_DAYS * day),
                    leaf_validity=(now - day, now + VALIDITY_DAYS * day),
                )
            case CertificateKind.EXPIRED_WRONG_NAME:
                return _material(
                    self.ca.issue_cert(
                        WRONG_NAME,
                        common_name=hostname,
                        not_before=now - 60 * day,
                        not_after=now - 30 * day,
                    )
                )


@functools.cache
def default_mint() -> CertificateMint:
    """The process-wide mint shared by every lab."""
    return CertificateMint()


def _material(leaf: trustme.LeafCert, *, leaf_only: bool = False) -> LeafMaterial:
    pems = leaf.cert_chain_pems[:1] if leaf_only else leaf.cert_chain_pems
    return LeafMaterial(
        chain_pem=b"".join(pem.bytes() for pem in pems),
        key_pem=leaf.private_key_pem.bytes(),
    )


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue_via_intermediate(
    ca: trustme.CA,
    hostname: str,
    *,
    intermediate_validity: tuple[datetime.datetime, datetime.datetime],
    leaf_validity: tuple[datetime.datetime, datetime.datetime],
) -> LeafMaterial:
    """A leaf for `hostname` under a fresh intermediate of `ca`, each with the dates given.

    trustme's `create_child_ca` takes no validity dates, hence this. The chain
    served is the leaf, then the intermediate (RFC 8446 §4.4.2 order).
    """
    root = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    root_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    if not isinstance(root_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the lab CA key is expected to be ECDSA")
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scanner lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "scanner lab intermediate"),
        ]
    )
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(intermediate_name)
        .issuer_name(root.subject)
        .public_key(intermediate_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(intermediate_validity[0])
        .not_valid_after(intermediate_validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(intermediate_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(intermediate_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf_validity[0])
        .not_valid_after(leaf_validity[1])
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(intermediate_key.public_key()),
            critical=False,
        )
        .sign(intermediate_key, hashes.SHA256())
    )
    return LeafMaterial(
        chain_pem=b"".join(
            certificate.public_bytes(serialization.Encoding.PEM)
            for certificate in (leaf, intermediate)
        ),
        key_pem=_private_key_pem(leaf_key),
    )


def _self_signed(hostname: str, now: datetime.datetime) -> LeafMaterial:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return LeafMaterial(
        chain_pem=certificate.public_bytes(serialization.Encoding.PEM),
        key_pem=_private_key_pem(key),
    )


def _server_context(material: LeafMaterial, *, legacy_tls: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # The stdlib loads key material from files only.
    with trustme.Blob(material.combined_pem).tempfile() as path:
        context.load_cert_chain(path)
    if legacy_tls:
        # RFC 8996 deprecates TLS 1.0 and 1.1; the lab serves them on purpose,
        # so the stdlib's DeprecationWarning for naming them is expected here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers(LEGACY_CIPHERS)
    return context
