"""Result records and vocabulary shared across the scanner.

Every record is a frozen, slotted dataclass; every vocabulary is a string enum
whose values are the wire strings of the JSON output (docs/output.md#vocabularies). Nothing in
this module touches the network, the clock or OpenSSL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final

from scanner.core.codes import PolicyCode, RecordCode


class ResultType(StrEnum):
    """RFC 8460 §4.3 / IANA "STARTTLS Validation Result Types" used by the scanner."""

    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"
    # RFC 8460 §4.3.2.1, DANE: no TLSA record matched; the TLSA answer failed DNSSEC
    # validation. `dane-required` is never used: the scanner requires DANE of nobody.
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"


class IndicatorCode(StrEnum):
    """Downgrade indicators (docs/output.md#indicators)."""

    STARTTLS_MISSING = "starttls-missing"
    STARTTLS_STRIPPED = "starttls-stripped"
    STARTTLS_GARBLED = "starttls-garbled"
    STARTTLS_REFUSED = "starttls-refused"
    PLAINTEXT_INJECTION = "plaintext-injection"
    TLS_HANDSHAKE_FAILED = "tls-handshake-failed"
    WEAK_TLS_VERSION = "weak-tls-version"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    MX_NOT_IN_POLICY = "mx-not-in-policy"
    HELO_ONLY = "helo-only"
    TLS_INCONSISTENT = "tls-inconsistent"
    DANE_MISMATCH = "dane-mismatch"  # DANE applies and no TLSA record matches the chain
    DNSSEC_BOGUS = "dnssec-bogus"  # the TLSA lookup failed DNSSEC validation (or SERVFAIL)


class StartTlsStatus(StrEnum):
    """What became of STARTTLS on one session (docs/output.md#starttls-statuses)."""

    OFFERED = "offered"
    MISSING = "missing"
    STRIPPED = "stripped"
    GARBLED = "garbled"
    REFUSED = "refused"


class AddressStatus(StrEnum):
    TESTED = "tested"
    NOT_TESTABLE = "not-testable"


class MxSource(StrEnum):
    DNS = "dns"
    POLICY = "policy"


class PolicyMode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class Phase(StrEnum):
    """Phases of one probe session; each has its own deadline."""

    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    HANDSHAKE = "handshake"
    EHLO_AFTER_TLS = "ehlo-after-tls"
    QUIT = "quit"


class InterruptionKind(StrEnum):
    """Why a session stopped short of a verdict, or what went wrong after TLS.

    The values are the leading words of the `reason` and `after_tls_error` strings of
    the JSON line (docs/output.md#not-testable-reasons); `scanner.core.reasons`
    renders the whole string from an `Interruption`.
    """

    CONNECT_REFUSED = "connect-refused"
    CONNECT_FAILED = "connect-failed"
    TIMEOUT = "timeout"
    CLOSED = "closed"
    PROTOCOL_ERROR = "protocol-error"
    BUSY = "busy"  # 421 and other 4xx refusals of the session: the server may serve us later
    REJECTED = "rejected"  # a 5xx refusal of the session, or a refused post-TLS EHLO
    EHLO_REJECTED = "ehlo-rejected"  # EHLO and HELO refused before TLS
    ADDRESS_NOT_ALLOWED = "address-not-allowed"
    EXCLUDED = "excluded"
    INVALID_MX_NAME = "invalid-mx-name"
    NOT_PROBED = "not-probed"
    OVER_LIMIT = "over-limit"  # a per-domain or per-address cap kept the scanner away
    # The scanning host's own network could not reach the address (it has no IPv6
    # route): says nothing about the domain (docs/output.md#not-testable-reasons).
    SCANNER_NETWORK = "scanner-network"


class DnsStatus(StrEnum):
    ANSWER = "answer"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    ERROR = "error"


# ---------------------------------------------------------------- DNS


@dataclass(frozen=True, slots=True)
class MxRecord:
    preference: int
    host: str  # normalised: A-label, lower case, no trailing dot


class DnssecStatus(StrEnum):
    """What the resolver said about an answer's DNSSEC validation (RFC 4035 §3.2.3, RFC 6840 §5.7).

    `secure`: the validating resolver set AD. `insecure`: it validated and found no
    signatures to check (an unsigned zone). `bogus`: validation failed (SERVFAIL that
    goes away with CD set, or an RFC 8914 extended error saying so). `unvalidated`:
    the resolver does not validate, so nothing is known.
    """

    SECURE = "secure"
    INSECURE = "insecure"
    BOGUS = "bogus"
    UNVALIDATED = "unvalidated"


@dataclass(frozen=True, slots=True)
class TxtAnswer:
    """TXT lookup: each record's character-strings joined with no separator (RFC 8461 §3.1)."""

    status: DnsStatus
    records: tuple[str, ...] = ()
    detail: str = ""
    dnssec: DnssecStatus = DnssecStatus.UNVALIDATED


@dataclass(frozen=True, slots=True)
class MxAnswer:
    """MX lookup. `null_mx` is RFC 7505 (`0 .`); `implicit` is RFC 5321 §5.1."""

    status: DnsStatus
    records: tuple[MxRecord, ...] = ()
    null_mx: bool = False
    implicit: bool = False
    detail: str = ""
    dnssec: DnssecStatus = DnssecStatus.UNVALIDATED


@dataclass(frozen=True, slots=True)
class AddressAnswer:
    """A or AAAA lookup, after following CNAMEs.

    `canonical_name` is the last name of the CNAME chain (the name itself when there is
    none); `cname_chain_secure` says whether every CNAME of the chain was secure
    (RFC 7672 §2.2.2 bases TLSA on the canonical name only then).
    """

    status: DnsStatus
    addresses: tuple[str, ...] = ()
    detail: str = ""
    dnssec: DnssecStatus = DnssecStatus.UNVALIDATED
    canonical_name: str | None = None
    cname_chain_secure: bool = False


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    """One TLSA record (RFC 6698 §2.1): usage, selector, matching type, association data."""

    usage: int
    selector: int
    matching_type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    """TLSA lookup at `_<port>._tcp.<base>`. `extended_error` is the RFC 8914 EDE, if any."""

    status: DnsStatus
    records: tuple[TlsaRecord, ...] = ()
    detail: str = ""
    dnssec: DnssecStatus = DnssecStatus.UNVALIDATED
    extended_error: str | None = None


class DaneStatus(StrEnum):
    """DANE for one session (RFC 7672; docs/dane.md#statuses)."""

    PASS = "pass"  # a usable TLSA record matched the presented chain
    FAIL = "fail"  # usable TLSA records, and none matched (or no TLS session at all)
    NO_TLSA = "no-tlsa"  # DNSSEC proved that there is no TLSA record
    UNUSABLE = "unusable"  # TLSA records, none usable for SMTP: STARTTLS still required
    INSECURE = "insecure"  # an unsigned MX RRset, host or TLSA RRset: DANE does not apply
    BOGUS = "bogus"  # the TLSA lookup failed DNSSEC validation or got SERVFAIL
    UNVALIDATED = "unvalidated"  # the resolver does not validate: nothing can be said


@dataclass(frozen=True, slots=True)
class HostDane:
    """What DNS said about DANE for one MX host (RFC 7672 §2.2.2, §2.2.3).

    `address_dnssec` is the DNSSEC status of the host's address records (with their
    CNAME chain); `base_domain` the TLSA base domain chosen by §2.2.2; `owner` the
    TLSA query name `_<port>._tcp.<base_domain>` and `tlsa` its answer, both None when
    no TLSA lookup was made (address records not secure, resolver not validating).
    """

    base_domain: str
    address_dnssec: DnssecStatus
    owner: str | None = None
    tlsa: TlsaAnswer | None = None


@dataclass(frozen=True, slots=True)
class DaneCheck:
    """The presented chain of one session against the host's usable TLSA records.

    `matched` is the record that matched, with `depth` the chain position it matched
    (0 the leaf; for DANE-TA the trust anchor's position, the chain's length for a
    bare key above it); `detail` says what matched, or why each record did not.
    """

    base_domain: str
    matched: TlsaRecord | None
    depth: int | None
    detail: str


# ---------------------------------------------------------------- TLS and certificates


# A certificate may name 18,000 hosts; the summary keeps the first few, with the count.
MAX_SAN_KEPT: Final = 100
MAX_SAN_NAME: Final = 255  # characters; a DNS name has at most 253


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What the output and the verdicts read of one certificate.

    `san` keeps the first `MAX_SAN_KEPT` SAN dNSName entries as presented, a longer
    name cut to `MAX_SAN_NAME` characters (ending in "…"); `san_count` is how many
    the certificate holds when `san` is not all of them as presented (names left out
    or cut), else None; `san_total` is the count either way. A date that cannot be
    read is None, never a placeholder.
    """

    subject: str
    san: tuple[str, ...]  # SAN dNSName entries as presented, at most MAX_SAN_KEPT
    issuer: str
    not_before: datetime | None
    not_after: datetime | None
    sha256: str  # hex of the DER encoding
    san_count: int | None = None  # the certificate's SAN dNSNames, when `san` is not all

    @property
    def san_total(self) -> int:
        return self.san_count if self.san_count is not None else len(self.san)

    @property
    def san_complete(self) -> bool:
        """Is `san` every name as presented (none left out, none cut)?"""
        return self.san_count is None


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """Outcome of verifying a presented chain against the run's trust store.

    `verify_error` is the OpenSSL `X509_V_ERR_*` name when `trusted` is false;
    `error_depth` is the position of the certificate it concerns in the presented
    chain (0 = the leaf), when known. `expired` and `not_yet_valid` name the error
    only: whether it concerns the leaf is `error_depth`'s to say.
    """

    trusted: bool
    verify_error: str | None = None
    error_depth: int | None = None

    @property
    def expired(self) -> bool:
        return self.verify_error == "X509_V_ERR_CERT_HAS_EXPIRED"

    @property
    def not_yet_valid(self) -> bool:
        return self.verify_error == "X509_V_ERR_CERT_NOT_YET_VALID"


@dataclass(frozen=True, slots=True)
class TlsSession:
    """What one completed handshake showed: negotiated parameters and the peer chain."""

    version: str  # "TLSv1.3", "TLSv1.2", ...
    cipher: str
    chain: tuple[CertificateSummary, ...]  # leaf first
    chain_der: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def leaf(self) -> CertificateSummary | None:
        return self.chain[0] if self.chain else None


@dataclass(frozen=True, slots=True)
class CertificateCheck:
    """Leaf summary plus the verdicts against the trust store and the expected name."""

    leaf: CertificateSummary
    chain: ChainVerdict
    name_matches: bool


# ---------------------------------------------------------------- SMTP probe facts


@dataclass(frozen=True, slots=True)
class Interruption:
    """A typed reason: what kind of trouble, in which phase, and the server's words.

    `detail` holds what the kind alone does not say: the reply (`421 4.7.0 busy`),
    the errno name of a connect error, the grammar rule a reply broke.
    """

    kind: InterruptionKind
    phase: Phase | None = None
    detail: str = ""
    # The errno name of a connect error or reset (`ECONNRESET`), read by code; `detail`
    # holds the words.
    errno: str | None = None
    # The reply code of a refusal (`busy`, `rejected`, `ehlo-rejected`).
    reply_code: int | None = None


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """Everything one STARTTLS probe of one (MX host, address) observed.

    Facts only; judgement (status words, result types, indicators) is made by
    `scanner.core.assess` from these facts.
    """

    hostname: str
    ip: str
    status: AddressStatus
    interruption: Interruption | None = None  # why not testable, when it is not
    local_ip: str | None = None
    greeting: str | None = None
    ehlo_keywords: tuple[str, ...] = ()  # pre-TLS EHLO keywords, upper case
    helo_only: bool = False  # EHLO rejected, HELO accepted
    starttls_advertised: bool = False
    masked_keyword: str | None = None  # e.g. "XXXXXXXA" where STARTTLS was
    starttls_reply: int | None = None  # reply code to the STARTTLS command
    starttls_reply_text: str | None = None
    plaintext_injection: int = 0  # bytes received after the 220 and before the handshake
    handshake_error: str | None = None
    tls: TlsSession | None = None
    certificate: CertificateCheck | None = None
    ehlo_after_tls: tuple[str, ...] | None = None
    starttls_after_tls: bool = False
    transcript: tuple[str, ...] = ()
    # The first trouble after a completed handshake (a timeout, a close, a protocol
    # error or a refused EHLO in phase ehlo-after-tls or quit); the TLS facts stand.
    after_tls: Interruption | None = None
    # Sessions this outcome took: more than 1 when the server said it was busy (421)
    # and the probe was tried again after a pause, as a sending MTA would.
    attempts: int = 1
    # The DANE match of the chain against the host's usable TLSA records, computed
    # where the chain's DER is at hand (right after the probe); None without them.
    dane: DaneCheck | None = None


# ---------------------------------------------------------------- MTA-STS and TLS-RPT


@dataclass(frozen=True, slots=True)
class StsRecord:
    """A parsed `_mta-sts` TXT record (RFC 8461 §3.1)."""

    raw: str
    id: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed MTA-STS policy body (RFC 8461 §3.2)."""

    version: str
    mode: PolicyMode
    max_age: int
    mx: tuple[str, ...]
    lines: tuple[str, ...]  # as served, for the report's policy-string
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyFailure:
    """A policy-level failure: one of the three sts-* result types, its code and an actionable detail."""

    result_type: ResultType
    detail: str
    code: PolicyCode


@dataclass(frozen=True, slots=True)
class RecordError:
    """Why there is no usable `_mta-sts` or `_smtp._tls` record: a code and the words."""

    code: RecordCode
    detail: str


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    """A parsed `_smtp._tls` TXT record (RFC 8460 §3)."""

    raw: str
    rua: tuple[str, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyFetch:
    """Outcome of fetching and validating https://mta-sts.<domain>/.well-known/mta-sts.txt.

    Exactly one of `policy` and `failure` is set.
    """

    policy: Policy | None
    failure: PolicyFailure | None
    ip: str | None = None  # address of the policy host that was used
    http_status: int | None = None
    content_type: str | None = None
    location: str | None = None  # Location of a 3xx (never followed)
    text: str | None = None  # body as served (decoded), when one was read
    certificate: CertificateCheck | None = None


# ---------------------------------------------------------------- per-domain facts and verdicts


@dataclass(frozen=True, slots=True)
class MxHostFacts:
    """One MX host of a domain (from DNS, or an exact `mx:` name of the policy) and its probes."""

    hostname: str
    preference: int | None
    source: MxSource
    addresses: tuple[AddressAnswer, ...]  # the A answer, then the AAAA answer, as used
    probes: tuple[ProbeOutcome, ...]  # one per address, in address order
    addresses_cut: int = 0  # addresses DNS gave beyond the caps: not in `addresses`
    dane: HostDane | None = None  # None when DANE was not looked into


@dataclass(frozen=True, slots=True)
class OverLimit:
    """What one per-domain cap cut off: never contacted, so never judged.

    `cap` is the option that sets the limit (`--max-mx-hosts`), `skipped` how many
    hosts or addresses lay beyond it, `examples` the first few of them.
    """

    cap: str
    limit: int
    skipped: int
    examples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DomainFacts:
    """Everything the I/O shell gathered about one domain; the input of `core.assess`."""

    domain: str
    scanned_at: datetime
    sts_txt: TxtAnswer
    sts_record: StsRecord | None
    sts_record_error: RecordError | None  # why there is no usable record, when there is none
    policy_fetch: PolicyFetch | None  # None when there was no usable record
    tlsrpt_txt: TxtAnswer
    tlsrpt_record: TlsRptRecord | None
    tlsrpt_error: RecordError | None
    mx: MxAnswer
    hosts: tuple[MxHostFacts, ...]
    over_limit: tuple[OverLimit, ...] = ()  # caps that cut hosts or addresses off


@dataclass(frozen=True, slots=True)
class SessionFailure:
    """One RFC 8460 result type that applies to a tested session."""

    result_type: ResultType
    reason_code: str | None = None  # RFC 8460 failure-reason-code


@dataclass(frozen=True, slots=True)
class Indicator:
    code: IndicatorCode
    mx: str | None
    ip: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """Report metadata from the command line (`--org`, `--contact`)."""

    organization_name: str = "scanner"
    contact_info: str = "postmaster@localhost"
    submitter: str = "scanner.invalid"
