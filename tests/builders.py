"""Small realistic facts for the assessment, report and output tests.

`probe`, `host`, `domain_facts` and friends build `scanner.models` records the way the
probe and the pipeline would; each test changes only what it is about.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from scanner.core.assess import (
    DomainVerdict,
    assess_domain,
)
from scanner.core.codes import PolicyCode, Problem, RecordCode
from scanner.models import (
    AddressAnswer,
    AddressStatus,
    CertificateCheck,
    CertificateSummary,
    ChainVerdict,
    DnsStatus,
    DomainFacts,
    Interruption,
    InterruptionKind,
    MxAnswer,
    MxHostFacts,
    MxRecord,
    MxSource,
    Phase,
    Policy,
    PolicyFailure,
    PolicyFetch,
    PolicyMode,
    ProbeOutcome,
    RecordError,
    ReportOptions,
    ResultType,
    StsRecord,
    TlsRptRecord,
    TlsSession,
    TxtAnswer,
)

DOMAIN = "example.com"
SCANNED = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
WINDOW = (SCANNED, SCANNED + timedelta(seconds=42))
OPTIONS = ReportOptions(
    organization_name="Example Scanner",
    contact_info="reports@scanner.example",
    submitter="scanner.example",
)
LOCAL_IP = "127.0.0.1"

# ---------------------------------------------------------------- builders


def certificate(
    host: str,
    *,
    trusted: bool = True,
    verify_error: str | None = None,
    name_matches: bool = True,
    not_before: datetime = SCANNED - timedelta(days=30),
    not_after: datetime = SCANNED + timedelta(days=60),
    san: tuple[str, ...] | None = None,
    error_depth: int | None = None,
) -> CertificateCheck:
    leaf = CertificateSummary(
        subject=f"CN={host}",
        san=san if san is not None else (host,),
        issuer="CN=Example Test CA",
        not_before=not_before,
        not_after=not_after,
        sha256="ab" * 32,
    )
    return CertificateCheck(
        leaf=leaf,
        chain=ChainVerdict(trusted=trusted, verify_error=verify_error, error_depth=error_depth),
        name_matches=name_matches,
    )


def probe(host: str, ip: str, **changes: object) -> ProbeOutcome:
    """A session that passed everything: STARTTLS offered, 220, TLS 1.3, valid certificate."""
    good = ProbeOutcome(
        hostname=host,
        ip=ip,
        status=AddressStatus.TESTED,
        local_ip=LOCAL_IP if ":" not in ip else "::1",
        greeting=f"220 {host} ESMTP",
        ehlo_keywords=("PIPELINING", "SIZE", "STARTTLS", "8BITMIME"),
        starttls_advertised=True,
        starttls_reply=220,
        starttls_reply_text="2.0.0 Ready to start TLS",
        tls=TlsSession(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", chain=()),
        certificate=certificate(host),
        ehlo_after_tls=("PIPELINING", "SIZE", "8BITMIME"),
        transcript=(f"S: 220 {host} ESMTP", "C: EHLO scanner.example", "C: STARTTLS"),
    )
    if "starttls_reply" in changes:
        changes.setdefault("starttls_reply_text", None)
    if isinstance(changes.get("after_tls"), str):
        changes["after_tls"] = AFTER_TLS[str(changes["after_tls"])]
    return dataclasses.replace(good, **changes)  # type: ignore[arg-type]


# The typed values behind the reason strings the tests name, as the probe records them.
# `scanner.core.reasons` must render each back to its key (tested in test_output.py).
REASONS: dict[str, Interruption] = {
    "connect-refused": Interruption(InterruptionKind.CONNECT_REFUSED, Phase.CONNECT),
    "connect-failed: ENETUNREACH": Interruption(
        InterruptionKind.CONNECT_FAILED, Phase.CONNECT, "ENETUNREACH"
    ),
    "timeout:connect": Interruption(InterruptionKind.TIMEOUT, Phase.CONNECT),
    "timeout:greeting": Interruption(InterruptionKind.TIMEOUT, Phase.GREETING),
    "timeout:ehlo": Interruption(InterruptionKind.TIMEOUT, Phase.EHLO),
    "closed:starttls": Interruption(InterruptionKind.CLOSED, Phase.STARTTLS),
    "busy:421 ****": Interruption(InterruptionKind.BUSY, Phase.GREETING, "421 ****"),
    "rejected:554 5.3.2 no SMTP service here": Interruption(
        InterruptionKind.REJECTED, Phase.GREETING, "554 5.3.2 no SMTP service here"
    ),
    "ehlo-rejected:450 4.7.1 Helo command rejected": Interruption(
        InterruptionKind.EHLO_REJECTED, Phase.EHLO, "450 4.7.1 Helo command rejected"
    ),
    "protocol-error: reply line too long": Interruption(
        InterruptionKind.PROTOCOL_ERROR, Phase.EHLO, "reply line too long"
    ),
    "address-not-allowed": Interruption(InterruptionKind.ADDRESS_NOT_ALLOWED),
    "excluded": Interruption(InterruptionKind.EXCLUDED),
    "invalid-mx-name: empty label": Interruption(
        InterruptionKind.INVALID_MX_NAME, None, "empty label"
    ),
    "not-probed": Interruption(InterruptionKind.NOT_PROBED),
}
AFTER_TLS: dict[str, Interruption] = {
    "timeout:ehlo-after-tls": Interruption(InterruptionKind.TIMEOUT, Phase.EHLO_AFTER_TLS),
    "closed:ehlo-after-tls": Interruption(InterruptionKind.CLOSED, Phase.EHLO_AFTER_TLS),
    "ehlo-after-tls rejected: 554 5.7.0 no": Interruption(
        InterruptionKind.REJECTED, Phase.EHLO_AFTER_TLS, "554 5.7.0 no"
    ),
    "protocol-error:ehlo-after-tls: bad": Interruption(
        InterruptionKind.PROTOCOL_ERROR, Phase.EHLO_AFTER_TLS, "bad"
    ),
    "timeout:quit": Interruption(InterruptionKind.TIMEOUT, Phase.QUIT),
    "closed:quit": Interruption(InterruptionKind.CLOSED, Phase.QUIT),
    "protocol-error:quit: bad": Interruption(InterruptionKind.PROTOCOL_ERROR, Phase.QUIT, "bad"),
}


def untestable(host: str, ip: str, reason: str) -> ProbeOutcome:
    """A not-testable session; `reason` names one of `REASONS` by its wire string."""
    return ProbeOutcome(
        hostname=host, ip=ip, status=AddressStatus.NOT_TESTABLE, interruption=REASONS[reason]
    )


def host(
    name: str,
    *probes: ProbeOutcome,
    preference: int | None = 10,
    source: MxSource = MxSource.DNS,
) -> MxHostFacts:
    """An MX host whose A and AAAA answers list exactly its probes' addresses."""
    v4 = tuple(p.ip for p in probes if ipaddress.ip_address(p.ip).version == 4)
    v6 = tuple(p.ip for p in probes if ipaddress.ip_address(p.ip).version == 6)
    return MxHostFacts(
        hostname=name,
        preference=preference,
        source=source,
        addresses=(
            AddressAnswer(DnsStatus.ANSWER if v4 else DnsStatus.NODATA, v4),
            AddressAnswer(DnsStatus.ANSWER if v6 else DnsStatus.NODATA, v6),
        ),
        probes=probes,
    )


def policy(*mx: str, mode: PolicyMode = PolicyMode.TESTING, max_age: int = 604800) -> Policy:
    patterns = mx or ("mx1.example.com", "mx2.example.com")
    lines = (
        "version: STSv1",
        f"mode: {mode}",
        *(f"mx: {p}" for p in patterns),
        f"max_age: {max_age}",
    )
    return Policy(version="STSv1", mode=mode, max_age=max_age, mx=patterns, lines=lines)


def fetched(p: Policy) -> PolicyFetch:
    return PolicyFetch(
        policy=p,
        failure=None,
        ip="127.0.0.1",
        http_status=200,
        content_type="text/plain",
        text="\r\n".join(p.lines) + "\r\n",
        certificate=certificate(f"mta-sts.{DOMAIN}"),
    )


def texts(problems: Iterable[Problem]) -> list[str]:
    """The words of blockers or warnings, in order."""
    return [problem.text for problem in problems]


# A code for each policy result type, where a test does not name one.
_DEFAULT_POLICY_CODES = {
    ResultType.STS_POLICY_FETCH_ERROR: PolicyCode.HTTP_STATUS,
    ResultType.STS_POLICY_INVALID: PolicyCode.LINE_SYNTAX,
    ResultType.STS_WEBPKI_INVALID: PolicyCode.WEBPKI_UNTRUSTED,
}


def failed_fetch(
    result_type: ResultType, detail: str, text: str | None = None, code: PolicyCode | None = None
) -> PolicyFetch:
    failure = PolicyFailure(result_type, detail, code or _DEFAULT_POLICY_CODES[result_type])
    return PolicyFetch(policy=None, failure=failure, text=text)


STS_RECORD = StsRecord(raw="v=STSv1; id=20261128T0400", id="20261128T0400")
TLSRPT_RECORD = TlsRptRecord(
    raw="v=TLSRPTv1; rua=mailto:tlsrpt@example.com", rua=("mailto:tlsrpt@example.com",)
)


def good_hosts() -> tuple[MxHostFacts, ...]:
    return (
        host("mx1.example.com", probe("mx1.example.com", "127.0.1.1"), preference=10),
        host("mx2.example.com", probe("mx2.example.com", "127.0.1.2"), preference=20),
    )


def domain_facts(
    *hosts: MxHostFacts,
    fetch: PolicyFetch | str | None = "default",
    record: StsRecord | None = STS_RECORD,
    record_error: RecordError | None = None,
    tlsrpt: TlsRptRecord | None = TLSRPT_RECORD,
    mx: MxAnswer | None = None,
) -> DomainFacts:
    """A domain; by default both MX hosts are good and a testing policy covers them."""
    hosts = hosts or good_hosts()
    policy_fetch = fetched(policy()) if fetch == "default" else fetch
    assert not isinstance(policy_fetch, str)
    if record is None:
        policy_fetch = None
    if mx is None:
        records = tuple(
            MxRecord(h.preference or 0, h.hostname) for h in hosts if h.source is MxSource.DNS
        )
        mx = MxAnswer(DnsStatus.ANSWER, records)
    return DomainFacts(
        domain=DOMAIN,
        scanned_at=SCANNED,
        sts_txt=TxtAnswer(DnsStatus.ANSWER, (STS_RECORD.raw,))
        if record
        else TxtAnswer(DnsStatus.NXDOMAIN),
        sts_record=record,
        sts_record_error=None
        if record
        else (record_error or RecordError(RecordCode.NO_RECORD, "no v=STSv1 record")),
        policy_fetch=policy_fetch,
        tlsrpt_txt=TxtAnswer(DnsStatus.ANSWER, (TLSRPT_RECORD.raw,))
        if tlsrpt
        else TxtAnswer(DnsStatus.NXDOMAIN),
        tlsrpt_record=tlsrpt,
        tlsrpt_error=None if tlsrpt else RecordError(RecordCode.NO_RECORD, "no v=TLSRPTv1 record"),
        mx=mx,
        hosts=hosts,
    )


def no_hosts(facts: DomainFacts) -> DomainFacts:
    return dataclasses.replace(facts, hosts=())


def assess(facts: DomainFacts) -> DomainVerdict:
    return assess_domain(facts)


def bad_mx2() -> MxHostFacts:
    return host(
        "mx2.example.com",
        probe("mx2.example.com", "127.0.1.5", starttls_advertised=False, starttls_reply=502, tls=None, certificate=None),
        preference=20,
    )  # fmt: skip


def expired_mx2() -> MxHostFacts:
    cert = certificate(
        "mx2.example.com",
        trusted=False,
        verify_error="X509_V_ERR_CERT_HAS_EXPIRED",
        not_after=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return host(
        "mx2.example.com", probe("mx2.example.com", "127.0.1.5", certificate=cert), preference=20
    )
