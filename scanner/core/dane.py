"""DANE for SMTP (RFC 7672) over DER bytes: where TLSA applies, and whether a chain matches.

Theory of operation. pyOpenSSL has no DANE API, so the match is made here, in pure
code over the DER of the presented chain, with `cryptography` for parsing and
signatures. Three decisions live in this module, each a function of its inputs only:

* **Where to look** (RFC 7672 §2.2.2): `tlsa_plan` reads a host's address answers
  (their DNSSEC status and CNAME chain) and names the candidate TLSA base domains,
  the CNAME-expanded name first when the whole chain is secure, then the original
  name; `tlsa_search_continues` says whether a TLSA answer at one candidate ends
  the search (records, or a lookup error) or lets the next candidate be tried (a
  denial or an unsigned answer), as Postfix does.
* **Which records count** (RFC 7672 §3.1, RFC 6698 §2.1): `classify` sorts a
  TLSA RRset into usable records (DANE-TA(2), DANE-EE(3), selectors 0/1,
  matching types 0/1/2, well-formed data), PKIX records (usages 0/1: unusable
  for SMTP, §3.1.3) and skipped ones (unknown parameters, malformed data).
* **Does the chain match** (RFC 7672 §3.1.1, §3.1.2, §3.2.2): `check_chain`.
  DANE-EE matches the leaf certificate or its SubjectPublicKeyInfo, ignoring
  names and dates. DANE-TA matches a certificate or key above the leaf (OpenSSL,
  and so Postfix, never match DANE-TA against the leaf), then the chain from
  that trust anchor down to the leaf must verify (issuer names, signatures,
  CA flags, validity dates at the scan time) and the leaf's SAN dNSName must
  match the MX host or the TLSA base domain. A `2 1 x` record names a bare key:
  the certificate carrying it is not itself checked, only the signature it made;
  a `2 1 0` record whose key is in no presented certificate is tried as the
  signer of each certificate of the chain (a trust anchor above the chain).

`session_dane` then turns the facts of one session (the domain's MX DNSSEC status,
the host's `HostDane`, the probe with its `DaneCheck`) into the session's
`DaneStatus`, and `host_warnings` into the words about a host's TLSA RRset.
Nothing here touches DNS, a socket or a clock: times come in as arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from scanner.core.der import MAX_DER, DerError, certificate_outline
from scanner.core.names import certificate_matches, names_shown
from scanner.models import (
    AddressAnswer,
    AddressStatus,
    DaneCheck,
    DaneStatus,
    DnssecStatus,
    DnsStatus,
    HostDane,
    ProbeOutcome,
    TlsaAnswer,
    TlsaRecord,
)

# RFC 6698 §2.1 with the RFC 7218 mnemonics.


class Usage(IntEnum):
    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class Selector(IntEnum):
    CERT = 0
    SPKI = 1


class MatchingType(IntEnum):
    FULL = 0
    SHA2_256 = 1
    SHA2_512 = 2


DIGEST_LENGTHS = {MatchingType.SHA2_256: 32, MatchingType.SHA2_512: 64}
MAX_CHAIN = 16  # certificates of a chain looked at; a real chain has 2 to 4
SHOWN_HEX = 16  # hex digits of association data shown in words


def tlsa_text(record: TlsaRecord) -> str:
    """RFC 8460 §4.4 `policy-string` form: the four fields, single spaces, hex data."""
    return f"{record.usage} {record.selector} {record.matching_type} {record.data.hex().upper()}"


def short_text(record: TlsaRecord) -> str:
    """The record in words: its parameters and the start of its data."""
    data = record.data.hex().upper()
    cut = data[:SHOWN_HEX] + ("…" if len(data) > SHOWN_HEX else "")
    return f"{record.usage} {record.selector} {record.matching_type} {cut}"


# ---------------------------------------------------------------- DER


def spki_der(certificate_der: bytes) -> bytes:
    """The SubjectPublicKeyInfo of a certificate, exactly as encoded in it (RFC 5280 §4.1).

    The bytes are taken from the certificate, not re-encoded, so a TLSA `x 1 x`
    digest is computed over what the server's certificate really holds. Raises
    `DerError` for bytes that are no certificate.
    """
    return certificate_outline(certificate_der).spki


# ---------------------------------------------------------------- which records count


@dataclass(frozen=True, slots=True)
class TlsaSet:
    """A TLSA RRset sorted by usability for SMTP (RFC 7672 §3.1)."""

    usable: tuple[TlsaRecord, ...]
    pkix: tuple[TlsaRecord, ...]  # usages 0 and 1: unusable for SMTP (§3.1.3)
    skipped: tuple[tuple[TlsaRecord, str], ...]  # unknown parameters or malformed data, why


def record_problem(record: TlsaRecord) -> str | None:
    """Why a DANE-TA/DANE-EE record cannot be used, or None (RFC 6698 §2.1, RFC 7672 §3.1.3).

    Unknown selectors and matching types make a record unusable; so does data of the
    wrong length for its digest, or full data that is no certificate or public key.
    """
    if record.usage not in (Usage.DANE_TA, Usage.DANE_EE, Usage.PKIX_TA, Usage.PKIX_EE):
        return f"unknown certificate usage {record.usage}"
    if record.selector not in (Selector.CERT, Selector.SPKI):
        return f"unknown selector {record.selector}"
    if record.matching_type not in (
        MatchingType.FULL,
        MatchingType.SHA2_256,
        MatchingType.SHA2_512,
    ):
        return f"unknown matching type {record.matching_type}"
    if record.matching_type != MatchingType.FULL:
        expected = DIGEST_LENGTHS[MatchingType(record.matching_type)]
        if len(record.data) != expected:
            return f"{len(record.data)} bytes of digest, not {expected}"
        return None
    if not record.data or len(record.data) > MAX_DER:
        return f"{len(record.data)} bytes of full data"
    try:
        if record.selector == Selector.CERT:
            x509.load_der_x509_certificate(record.data)
        else:
            load_der_public_key(record.data)
    except (ValueError, UnsupportedAlgorithm) as error:
        what = "certificate" if record.selector == Selector.CERT else "public key"
        return f"the full data is no {what}: {error}"
    return None


def classify(records: Sequence[TlsaRecord]) -> TlsaSet:
    """Usable, PKIX (usages 0/1) and skipped records, each in RRset order."""
    usable: list[TlsaRecord] = []
    pkix: list[TlsaRecord] = []
    skipped: list[tuple[TlsaRecord, str]] = []
    for record in records:
        problem = record_problem(record)
        if problem is not None:
            skipped.append((record, problem))
        elif record.usage in (Usage.PKIX_TA, Usage.PKIX_EE):
            pkix.append(record)
        else:
            usable.append(record)
    return TlsaSet(tuple(usable), tuple(pkix), tuple(skipped))


# ---------------------------------------------------------------- where to look


@dataclass(frozen=True, slots=True)
class TlsaPlan:
    """The candidate TLSA base domains of one MX host, in lookup order (RFC 7672 §2.2.2).

    Empty when no TLSA lookup is due: `address_dnssec` then says why (insecure,
    bogus, unvalidated) or the host has no address at all.
    """

    candidates: tuple[str, ...]
    address_dnssec: DnssecStatus


def _combined(statuses: Sequence[DnssecStatus]) -> DnssecStatus:
    """The weakest of several statuses: bogus, then unvalidated, then insecure, then secure."""
    for weakest in (DnssecStatus.BOGUS, DnssecStatus.UNVALIDATED, DnssecStatus.INSECURE):
        if weakest in statuses:
            return weakest
    return DnssecStatus.SECURE


# RFC 7672 §2.2.2: "If the A and/or AAAA RRsets [...] are 'secure' [...] the TLSA base
# domain [is] the fully CNAME-expanded name [...], then [...] the original name."
def tlsa_plan(hostname: str, answers: Sequence[AddressAnswer]) -> TlsaPlan:
    """Where to look up TLSA for `hostname`, given its A and AAAA answers.

    * The answers that hold addresses decide; a bogus one makes the host bogus, an
      unvalidated one unvalidated (the resolver does not validate).
    * Secure address records (and a secure CNAME chain leading to them): the
      expanded name first, then the original name when they differ.
    * Insecure address records reached through a secure CNAME chain: the original
      name only (its CNAME is secure, so its TLSA records would be too).
    * Insecure otherwise: no lookup; DANE does not apply to the host.
    """
    answered = [answer for answer in answers if answer.addresses]
    if not answered:
        statuses = [answer.dnssec for answer in answers if answer.status is DnsStatus.ANSWER]
        status = _combined(statuses) if statuses else DnssecStatus.UNVALIDATED
        if any(answer.dnssec is DnssecStatus.BOGUS for answer in answers):
            status = DnssecStatus.BOGUS
        return TlsaPlan((), status)
    status = _combined([answer.dnssec for answer in answered])
    expanded = next((answer.canonical_name for answer in answered if answer.canonical_name), None)
    is_cname = expanded is not None and expanded.rstrip(".").lower() != hostname
    if status is DnssecStatus.SECURE:
        if is_cname:
            assert expanded is not None
            return TlsaPlan((expanded.rstrip(".").lower(), hostname), status)
        return TlsaPlan((hostname,), status)
    if status is DnssecStatus.INSECURE and is_cname and all(a.cname_chain_secure for a in answered):
        return TlsaPlan((hostname,), status)
    return TlsaPlan((), status)


def tlsa_owner(port: int, base_domain: str) -> str:
    """RFC 7672 §2.2.3 (RFC 6698 §3): `_<port>._tcp.<base domain>`, the SMTP port in use."""
    return f"_{port}._tcp.{base_domain}"


def tlsa_search_continues(answer: TlsaAnswer) -> bool:
    """Does this answer let the next candidate base domain be tried?

    Yes for a denial (NXDOMAIN, NODATA) and for an unsigned answer; no for secure
    records (usable or not) and for a failed lookup: a sender defers then, and
    does not fall back to the original name (Postfix `tls_dane_resolve`).
    """
    if answer.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA):
        return answer.dnssec is not DnssecStatus.BOGUS
    if answer.status is DnsStatus.ANSWER:
        return answer.dnssec is DnssecStatus.INSECURE
    return False


# ---------------------------------------------------------------- does the chain match


def _digest(data: bytes, matching_type: int) -> bytes:
    if matching_type == MatchingType.SHA2_256:
        return hashlib.sha256(data).digest()
    if matching_type == MatchingType.SHA2_512:
        return hashlib.sha512(data).digest()
    return data


@dataclass(frozen=True, slots=True)
class _Certificate:
    der: bytes
    parsed: x509.Certificate | None
    spki: bytes | None

    @classmethod
    def of(cls, der: bytes) -> _Certificate:
        try:
            parsed = x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
            parsed = None
        try:
            spki = spki_der(der)
        except DerError:
            spki = None
        return cls(der, parsed, spki)

    def selected(self, selector: int) -> bytes | None:
        return self.der if selector == Selector.CERT else self.spki


def _matches(record: TlsaRecord, certificate: _Certificate) -> bool:
    selected = certificate.selected(record.selector)
    return selected is not None and _digest(selected, record.matching_type) == record.data


def _signed_by(child: x509.Certificate, key: object) -> bool:
    """Does `key` verify the signature on `child`? (RFC 5280 §6.1.3 (a)(1))."""
    try:
        parameters = child.signature_algorithm_parameters
        if isinstance(key, rsa.RSAPublicKey):
            hash_algorithm = child.signature_hash_algorithm
            if hash_algorithm is None or not isinstance(parameters, padding.PKCS1v15 | padding.PSS):
                return False
            key.verify(child.signature, child.tbs_certificate_bytes, parameters, hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(parameters, ec.ECDSA):
                return False
            key.verify(child.signature, child.tbs_certificate_bytes, parameters)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


# What cryptography raises for a field it cannot read: it reads a field when it is asked
# for it, so a certificate that loaded may still fail here (a date in the year 0000, a
# duplicated extension, a general name of a type it does not know).
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def _unparsable(depth: int, what: str) -> str:
    return f"the certificate at depth {depth} does not parse ({what})"


def _ca_problem(certificate: x509.Certificate, depth: int) -> str | None:
    """Why the certificate at `depth` may not issue certificates (RFC 5280 §4.2.1.9), or None."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return f"the certificate at depth {depth} is no CA certificate"
    except _PARSE_ERRORS:
        return _unparsable(depth, "its extensions")
    return (
        None if constraints.value.ca else f"the certificate at depth {depth} is no CA certificate"
    )


def _dates_problem(certificate: x509.Certificate, depth: int, at: datetime) -> str | None:
    moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    try:
        not_before = certificate.not_valid_before_utc
        not_after = certificate.not_valid_after_utc
    except _PARSE_ERRORS:
        return _unparsable(depth, "its validity dates")
    if not_after < moment:
        return f"the certificate at depth {depth} expired on {not_after.date()}"
    if not_before > moment:
        return f"the certificate at depth {depth} is not valid before {not_before.date()}"
    return None


def _public_key(certificate: x509.Certificate) -> object | None:
    try:
        return certificate.public_key()
    except _PARSE_ERRORS:
        return None


def _path_problem(
    chain: Sequence[_Certificate], anchor_depth: int, anchor_key: object, at: datetime
) -> str | None:
    """Why the certificates below a trust anchor do not verify down to the leaf, or None.

    `anchor_key` signed the certificate at `anchor_depth - 1`; every certificate from
    there down is checked for its dates, its issuer's signature and (above the
    leaf) the CA flag; issuer names must chain below the anchor (RFC 5280 §6.1.3).
    """
    for depth in range(anchor_depth - 1, -1, -1):
        certificate = chain[depth].parsed
        if certificate is None:
            return f"the certificate at depth {depth} does not parse"
        if depth < anchor_depth - 1:
            issuer = chain[depth + 1].parsed
            assert issuer is not None  # parsed on the previous turn
            try:
                chained = certificate.issuer == issuer.subject
            except _PARSE_ERRORS:
                return _unparsable(depth, "its issuer or the subject above it")
            if not chained:
                return f"the certificate at depth {depth} was not issued by the one at depth {depth + 1}"
            key = _public_key(issuer)
            if key is None:
                return _unparsable(depth + 1, "its public key")
            if not _signed_by(certificate, key):
                return f"the signature on the certificate at depth {depth} does not verify"
        elif not _signed_by(certificate, anchor_key):
            return f"the signature on the certificate at depth {depth} does not verify with the trust anchor's key"
        problem = _ca_problem(certificate, depth) if depth > 0 else None
        if problem is not None:
            return problem
        problem = _dates_problem(certificate, depth, at)
        if problem is not None:
            return problem
    return None


def _leaf_names(chain: Sequence[_Certificate]) -> tuple[str, ...] | None:
    """The leaf's SAN dNSNames; None when they do not parse."""
    leaf = chain[0].parsed
    if leaf is None:
        return None
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return ()
    except _PARSE_ERRORS:
        return None


def _trust_anchor_result(
    record: TlsaRecord,
    chain: Sequence[_Certificate],
    names: Sequence[str],
    at: datetime,
) -> tuple[int | None, str]:
    """(anchor depth, words) for one DANE-TA record: depth None when it does not authenticate."""
    reasons: list[str] = []
    anchors: list[tuple[int, object]] = []
    for depth in range(1, len(chain)):
        certificate = chain[depth]
        if not _matches(record, certificate) or certificate.parsed is None:
            continue
        if record.selector == Selector.CERT:
            # A certificate as trust anchor: its own dates count too.
            problem = _dates_problem(certificate.parsed, depth, at)
            if problem is not None:
                reasons.append(f"matches the certificate at depth {depth}, but {problem}")
                continue
        try:
            anchors.append((depth, certificate.parsed.public_key()))
        except (ValueError, UnsupportedAlgorithm):
            reasons.append(f"matches the certificate at depth {depth}, whose key does not load")
    if (
        not anchors
        and record.selector == Selector.SPKI
        and record.matching_type == MatchingType.FULL
    ):
        # `2 1 0`: a bare key may sign the topmost presented certificate (or any).
        try:
            bare_key: object = load_der_public_key(record.data)
        except (ValueError, UnsupportedAlgorithm):
            return None, "the key in the record does not load"
        for depth in range(len(chain) - 1, -1, -1):
            parsed = chain[depth].parsed
            if parsed is not None and _signed_by(parsed, bare_key):
                anchors.append((depth + 1, bare_key))
                break
    if not anchors:
        return None, "; ".join(reasons) or "no certificate above the leaf matches"
    names_seen = _leaf_names(chain)
    for depth, anchor_key in anchors:
        problem = _path_problem(chain, depth, anchor_key, at)
        if problem is not None:
            reasons.append(f"trust anchor at depth {depth}, but {problem}")
            continue
        if names_seen is None:
            reasons.append(f"trust anchor at depth {depth}, but {_unparsable(0, 'its names')}")
            continue
        if not any(certificate_matches(name, names_seen) for name in names):
            shown = names_shown(names_seen) or "no DNS name"
            wanted = " or ".join(dict.fromkeys(names))
            reasons.append(
                f"trust anchor at depth {depth}, but the leaf's names ({shown}) "
                f"match neither {wanted} (RFC 7672 §3.2.2)"
            )
            continue
        return depth, f"DANE-TA: {short_text(record)} is the trust anchor at depth {depth}"
    return None, "; ".join(reasons)


def check_chain(
    records: Sequence[TlsaRecord],
    chain_der: Sequence[bytes],
    *,
    mx_host: str,
    base_domain: str,
    at: datetime,
) -> DaneCheck:
    """Match a presented chain (leaf first) against usable TLSA records (RFC 7672 §3).

    DANE-EE records are tried first (the leaf only; names and dates ignored, §3.1.1),
    then DANE-TA records (§3.1.2, §3.2.2: the chain up to the anchor verifies at `at`
    and the leaf names `mx_host` or `base_domain`). The first record that matches
    wins; otherwise the detail gives every record's reason.
    """
    chain = [_Certificate.of(der) for der in chain_der[:MAX_CHAIN]]
    if not chain:
        return DaneCheck(base_domain, None, None, "the server presented no certificate")
    reasons: list[str] = []
    for record in records:
        if record.usage != Usage.DANE_EE:
            continue
        if _matches(record, chain[0]):
            what = "certificate" if record.selector == Selector.CERT else "public key"
            return DaneCheck(
                base_domain, record, 0, f"DANE-EE: {short_text(record)} matches the leaf's {what}"
            )
        what = "certificate" if record.selector == Selector.CERT else "public key"
        reasons.append(f"{short_text(record)}: the leaf's {what} does not match")
    for record in records:
        if record.usage != Usage.DANE_TA:
            continue
        depth, words = _trust_anchor_result(record, chain, (mx_host, base_domain), at)
        if depth is not None:
            return DaneCheck(base_domain, record, depth, words)
        reasons.append(f"{short_text(record)}: {words}")
    return DaneCheck(base_domain, None, None, "; ".join(reasons) or "no usable TLSA record")


def attach_check(
    outcome: ProbeOutcome, host: HostDane | None, *, mx_host: str, at: datetime
) -> ProbeOutcome:
    """The outcome with its `DaneCheck`, when the host has usable records and TLS showed a chain."""
    if host is None or host.tlsa is None or outcome.tls is None or not outcome.tls.chain_der:
        return outcome
    usable = classify(host.tlsa.records).usable
    if not usable:
        return outcome
    check = check_chain(
        usable, outcome.tls.chain_der, mx_host=mx_host, base_domain=host.base_domain, at=at
    )
    return replace(outcome, dane=check)


# ---------------------------------------------------------------- one session


@dataclass(frozen=True, slots=True)
class AddressDane:
    """DANE for one session: its status, the record that matched, and words."""

    status: DaneStatus
    matched: TlsaRecord | None
    depth: int | None
    detail: str


def host_status(
    mx_dnssec: DnssecStatus, host: HostDane, *, domain: str
) -> tuple[DaneStatus | None, str]:
    """The DANE status every session of a host shares, or None when each session decides.

    None means: the MX RRset, the host and its TLSA RRset are secure and hold usable
    records, so the chain of each session is what counts. An insecure MX RRset turns
    every other outcome into `insecure` (RFC 7672 §2.2.1), with the would-be outcome
    in the words.
    """
    if DnssecStatus.UNVALIDATED in (mx_dnssec, host.address_dnssec):
        return DaneStatus.UNVALIDATED, "the resolver does not validate DNSSEC: DANE was not checked"
    status, words = _tlsa_status(host)
    if mx_dnssec is DnssecStatus.INSECURE and status is not DaneStatus.UNVALIDATED:
        would = f"; its TLSA answer: {words}" if words else ""
        return (
            DaneStatus.INSECURE,
            f"the MX RRset of {domain} is not signed, so DANE senders do not apply "
            f"TLSA (RFC 7672 §2.2.1){would}",
        )
    if mx_dnssec is DnssecStatus.BOGUS:
        return DaneStatus.BOGUS, f"the MX RRset of {domain} failed DNSSEC validation"
    return status, words


def _tlsa_status(host: HostDane) -> tuple[DaneStatus | None, str]:
    if host.address_dnssec is DnssecStatus.BOGUS:
        return DaneStatus.BOGUS, "the host's address records failed DNSSEC validation"
    answer = host.tlsa
    if host.address_dnssec is DnssecStatus.INSECURE and answer is None:
        return DaneStatus.INSECURE, "the host's address records are not signed"
    if answer is None:
        return DaneStatus.UNVALIDATED, "no TLSA lookup was made"
    owner = host.owner or host.base_domain
    if answer.dnssec is DnssecStatus.BOGUS or answer.status is DnsStatus.SERVFAIL:
        extended = f" ({answer.extended_error})" if answer.extended_error else ""
        return DaneStatus.BOGUS, f"the TLSA lookup at {owner} failed DNSSEC validation{extended}"
    if answer.status not in (DnsStatus.ANSWER, DnsStatus.NXDOMAIN, DnsStatus.NODATA):
        detail = f": {answer.detail}" if answer.detail else ""
        return (
            DaneStatus.UNVALIDATED,
            f"the TLSA lookup at {owner} failed ({answer.status.value}{detail})",
        )
    if answer.dnssec is DnssecStatus.UNVALIDATED:
        return DaneStatus.UNVALIDATED, "the resolver does not validate DNSSEC: DANE was not checked"
    if answer.dnssec is DnssecStatus.INSECURE:
        return DaneStatus.INSECURE, f"the TLSA answer at {owner} is not signed"
    if answer.status is not DnsStatus.ANSWER or not answer.records:
        return DaneStatus.NO_TLSA, f"DNSSEC proves there is no TLSA record at {owner}"
    if not classify(answer.records).usable:
        return (
            DaneStatus.UNUSABLE,
            f"no TLSA record at {owner} is usable for SMTP: STARTTLS is still required",
        )
    return None, f"{len(classify(answer.records).usable)} usable TLSA records at {owner}"


def session_dane(
    probe: ProbeOutcome | None,
    host: HostDane | None,
    *,
    mx_dnssec: DnssecStatus,
    domain: str,
) -> AddressDane | None:
    """The DANE status of one tested session; None when untested or DANE was not looked into."""
    if probe is None or host is None or probe.status is not AddressStatus.TESTED:
        return None
    status, words = host_status(mx_dnssec, host, domain=domain)
    if status is DaneStatus.INSECURE and probe.dane is not None:
        # Not applied, yet worth knowing: what a signed MX RRset would have led to.
        outcome = "would match" if probe.dane.matched is not None else "would not match"
        return AddressDane(status, None, None, f"{words}; the chain {outcome}: {probe.dane.detail}")
    if status is not None:
        return AddressDane(status, None, None, words)
    if probe.tls is None:
        return AddressDane(
            DaneStatus.FAIL,
            None,
            None,
            "no TLS session: DANE senders require STARTTLS and an authenticated chain",
        )
    check = probe.dane
    if check is None:
        return AddressDane(
            DaneStatus.UNVALIDATED, None, None, "the chain was not checked against the TLSA records"
        )
    if check.matched is not None:
        return AddressDane(DaneStatus.PASS, check.matched, check.depth, check.detail)
    return AddressDane(DaneStatus.FAIL, None, None, f"no TLSA record matches: {check.detail}")


@dataclass(frozen=True, slots=True)
class HostDaneVerdict:
    """DANE for one MX host of a domain: the facts, and what senders make of them.

    `status` is the status every session shares, or None when each session's chain
    decides; `applies` says whether DANE senders hold the host to TLSA (usable records,
    or a bogus TLSA lookup they defer on); `requires_starttls` whether they require
    STARTTLS of it (usable or unusable records).
    """

    facts: HostDane
    mx_dnssec: DnssecStatus  # of the domain's MX RRset
    status: DaneStatus | None
    detail: str
    applies: bool
    requires_starttls: bool


def host_verdict(mx_dnssec: DnssecStatus, host: HostDane, *, domain: str) -> HostDaneVerdict:
    """What DANE senders make of one MX host of `domain` (RFC 7672 §2.2)."""
    status, words = host_status(mx_dnssec, host, domain=domain)
    return HostDaneVerdict(
        facts=host,
        mx_dnssec=mx_dnssec,
        status=status,
        detail=words,
        applies=status is None or status is DaneStatus.BOGUS,
        requires_starttls=status is None or status is DaneStatus.UNUSABLE,
    )


# ---------------------------------------------------------------- words about a host


def host_warnings(hostname: str, host: HostDane | None) -> list[str]:
    """Warnings about a host's secure TLSA RRset: unusable and skipped records, rollover."""
    if host is None or host.tlsa is None or host.tlsa.dnssec is not DnssecStatus.SECURE:
        return []
    sorted_records = classify(host.tlsa.records)
    warnings: list[str] = []
    for record in sorted_records.pkix:
        name = "PKIX-TA" if record.usage == Usage.PKIX_TA else "PKIX-EE"
        warnings.append(
            f"{hostname}: TLSA record {short_text(record)}: usage {record.usage} ({name}) is "
            "unusable for SMTP (RFC 7672 §3.1.3); DANE senders ignore it"
        )
    for record, why in sorted_records.skipped:
        warnings.append(f"{hostname}: TLSA record {short_text(record)} is skipped: {why}")
    if host.tlsa.records and not sorted_records.usable:
        warnings.append(
            f"{hostname}: no TLSA record is usable: DANE senders must still use STARTTLS, "
            "but cannot authenticate the server; publish DANE-EE (3 1 1) or DANE-TA (2 1 1) records"
        )
    ee = [r for r in sorted_records.usable if r.usage == Usage.DANE_EE]
    ta = [r for r in sorted_records.usable if r.usage == Usage.DANE_TA]
    if len(ee) == 1 and not ta:
        warnings.append(
            f"{hostname}: the TLSA RRset has a single DANE-EE record ({short_text(ee[0])}), "
            "no record for the next key and no DANE-TA (2 x x) record for the issuer: "
            "it cannot survive a key rollover; publish the next key's record before the "
            "change (RFC 7672 §4)"
        )
    return warnings
