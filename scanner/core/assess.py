"""Judgement: facts of a scan → RFC 8460 result types, downgrade indicators, readiness.

Theory of operation. The I/O shell records what it saw in `DomainFacts` (DNS answers,
the policy fetch, one `ProbeOutcome` per (MX host, address)). This module turns those
facts into words, and nothing else does:

* `starttls_status` names what became of STARTTLS on one session;
* `session_failures` gives the RFC 8460 result types of one tested session (docs/output.md#result-types);
* `indicators_for` gives the downgrade indicators of one session, each with a detail an
  operator can read; every session failure has at least one matching indicator, so the
  readiness blockers (built from indicators) always explain every result type;
* `session_warnings` notes what is wrong with a session yet has no RFC 8460 result type
  (a failing EHLO after TLS, STARTTLS advertised after TLS, a masked banner);
* DANE (RFC 7672) joins the same table: `scanner.core.dane` decides each session's
  DANE status, and a failed match or a bogus TLSA lookup is a finding like any other
  (`tlsa-invalid` / `dane-mismatch`, `dnssec-invalid` / `dnssec-bogus`), so it blocks
  readiness whatever the MTA-STS mode;
* `assess_domain` puts it together per domain: per-address verdicts, the domain-wide
  `tls-inconsistent` indicator, and the enforce-readiness verdict with blockers and warnings.

Everything here is pure: times come in through the facts (`scanned_at`), never from a clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

from scanner.core.codes import Problem, ProblemCode
from scanner.core.dane import (
    AddressDane,
    HostDaneVerdict,
    host_verdict,
    host_warnings,
    session_dane,
)
from scanner.core.names import names_shown
from scanner.core.reasons import after_tls_text, blocks_delivery, reason_code, reason_text
from scanner.core.smtp import PARTIAL_GREETING_NOTE, is_masked_banner
from scanner.core.sts import policy_covers, policy_warnings
from scanner.models import (
    AddressAnswer,
    AddressStatus,
    DaneStatus,
    DnsStatus,
    DomainFacts,
    Indicator,
    IndicatorCode,
    Interruption,
    InterruptionKind,
    MxHostFacts,
    MxSource,
    Phase,
    Policy,
    PolicyMode,
    ProbeOutcome,
    ResultType,
    SessionFailure,
    StartTlsStatus,
)

# RFC 3207 §4: "220 Ready to start TLS" is the only reply that starts the handshake.
STARTTLS_READY = 220

# RFC 8461 §7.2: MTA-STS senders and receivers must support TLS 1.2 or later.
VERSIONS_BELOW_TLS_1_2 = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.0", "TLSv1.1"})

# docs/output.md#readiness: certificates expiring this soon after the scan are a warning.
EXPIRY_WARNING_WINDOW = timedelta(days=14)

X509_EXPIRED = "X509_V_ERR_CERT_HAS_EXPIRED"
X509_NOT_YET_VALID = "X509_V_ERR_CERT_NOT_YET_VALID"
X509_HOSTNAME_MISMATCH = "X509_V_ERR_HOSTNAME_MISMATCH"

# failure-reason-code values of `validation-failure` (docs/output.md#result-types)
REASON_HANDSHAKE_FAILED = "tls-handshake-failed"
REASON_TLS_BELOW_1_2 = "tls-version-below-1.2"
REASON_PLAINTEXT_INJECTION = "plaintext-injection"
REASON_MX_NOT_IN_POLICY = "mx-not-in-policy"
# failure-reason-code values of the DANE result types (docs/dane.md#report)
REASON_DANE_MISMATCH = "dane-mismatch"
REASON_DNSSEC_BOGUS = "dnssec-bogus"

# DNS statuses that say "there is no such address" (as opposed to "we could not find out")
DEFINITIVE_DNS = frozenset({DnsStatus.ANSWER, DnsStatus.NXDOMAIN, DnsStatus.NODATA})


# ---------------------------------------------------------------- verdict records


@dataclass(frozen=True, slots=True)
class AddressVerdict:
    """The judgement of one (MX host, address): docs/output.md#addresses.

    `probe` is the outcome the judgement was made from (None when DNS returned the address
    but nothing probed it: then `status` is not-testable with reason `not-probed`).
    """

    ip: str  # RFC 5952 form for IPv6
    status: AddressStatus
    interruption: Interruption | None  # why not testable, when it is not
    starttls: StartTlsStatus | None
    failures: tuple[SessionFailure, ...]
    indicators: tuple[Indicator, ...]
    probe: ProbeOutcome | None
    dane: AddressDane | None = None  # None: not tested, a policy-only host, or DANE not looked into

    @property
    def result_types(self) -> tuple[ResultType, ...]:
        """Distinct result types of the session, in order of first appearance."""
        return tuple(dict.fromkeys(failure.result_type for failure in self.failures))

    @property
    def passed(self) -> bool:
        """Tested, with no result type."""
        return self.status is AddressStatus.TESTED and not self.failures


@dataclass(frozen=True, slots=True)
class MxVerdict:
    """One MX host (DNS-sourced or policy-only) with its address verdicts.

    `in_policy` is None when there is no policy to match against.
    """

    hostname: str
    preference: int | None
    source: MxSource
    in_policy: bool | None
    addresses: tuple[AddressVerdict, ...]
    dane: HostDaneVerdict | None = None  # DNS-sourced hosts whose DANE was looked into


@dataclass(frozen=True, slots=True)
class DomainVerdict:
    """The judgement of one domain (docs/output.md#vocabularies).

    `enforce_ready` is true exactly when `blockers` is empty. `indicators` holds every
    session's indicators (DNS and policy-only hosts) followed by domain-wide ones.
    """

    domain: str
    mx: tuple[MxVerdict, ...]
    indicators: tuple[Indicator, ...]
    enforce_ready: bool
    blockers: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    # The MX lookup failed, or no address of a DNS MX host could be tested at all:
    # the scan says nothing about the domain (`scanner check` exits 2).
    could_not_scan: bool = False

    def dns_addresses(self) -> Iterable[tuple[MxVerdict, AddressVerdict]]:
        """(host, address) pairs of DNS-sourced MX hosts: the ones that count."""
        for host in self.mx:
            if host.source is MxSource.DNS:
                for address in host.addresses:
                    yield host, address


# ---------------------------------------------------------------- small helpers


def canonical_ip(text: str) -> str:
    """IPv4 dotted quad or IPv6 in RFC 5952 form; text that is no address comes back as is."""
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _day(moment: datetime | None) -> str:
    return as_utc(moment).date().isoformat() if moment is not None else "a date that does not parse"


def _reply(outcome: ProbeOutcome) -> str:
    if outcome.starttls_reply is None:
        what = (outcome.starttls_reply_text or "").strip()
        return f"no reply ({what})" if what else "no reply"
    text = (outcome.starttls_reply_text or "").strip()
    return f"{outcome.starttls_reply} {text}".strip()


def _policy_applies(policy: Policy | None) -> bool:
    # RFC 8461 §5: mode none means "as if no policy were active".
    return policy is not None and policy.mode is not PolicyMode.NONE


# ---------------------------------------------------------------- one session


def starttls_status(outcome: ProbeOutcome) -> StartTlsStatus | None:
    """What became of STARTTLS on one session; None when the address was not testable.

    The probe always sends STARTTLS, advertised or not (docs/output.md#vocabularies), which tells a stripped
    advertisement (command accepted) from a missing one (command refused). A masked
    keyword wins when STARTTLS itself is not advertised: it is the middlebox signature
    (the same middleboxes mask other extensions alike, `XXXXXXXB` beside a real STARTTLS).
    docs/output.md#starttls-statuses: STARTTLS answered by anything but 220 is refused (advertised) or missing
    (not advertised); a close or a malformed reply (`starttls_reply` None) is no 220.
    """
    if outcome.status is not AddressStatus.TESTED:
        return None
    if outcome.masked_keyword is not None and not outcome.starttls_advertised:
        return StartTlsStatus.GARBLED
    accepted = outcome.starttls_reply == STARTTLS_READY
    if outcome.starttls_advertised:
        return StartTlsStatus.OFFERED if accepted else StartTlsStatus.REFUSED
    return StartTlsStatus.STRIPPED if accepted else StartTlsStatus.MISSING


def _handshake_failed(outcome: ProbeOutcome) -> bool:
    """220 to STARTTLS, then no TLS session: an error, or (STARTTLS offered) no session at all."""
    if outcome.starttls_reply != STARTTLS_READY:
        return False
    if outcome.handshake_error is not None:
        return True
    return outcome.tls is None and starttls_status(outcome) is StartTlsStatus.OFFERED


def _weak_version(outcome: ProbeOutcome) -> bool:
    return outcome.tls is not None and outcome.tls.version in VERSIONS_BELOW_TLS_1_2


def _issuer_date_problem(outcome: ProbeOutcome) -> str | None:
    """Words for an expired or not-yet-valid certificate above the leaf, or None.

    docs/output.md#result-types: only the leaf's expiry is `certificate-expired`; a CA certificate of the
    chain out of its dates makes the chain untrusted. The date comes from the chain
    summaries of the session when the verdict's depth points into them.
    """
    check = outcome.certificate
    if check is None:
        return None
    chain = check.chain
    depth = chain.error_depth
    if depth is None or depth == 0 or not (chain.expired or chain.not_yet_valid):
        return None
    summaries = outcome.tls.chain if outcome.tls is not None else ()
    summary = summaries[depth] if depth < len(summaries) else None
    role = "intermediate" if depth < len(summaries) else "CA"
    if chain.expired:
        when = f" on {_day(summary.not_after)}" if summary is not None else ""
        return f"{role} certificate at depth {depth} expired{when}"
    when = f" before {_day(summary.not_before)}" if summary is not None else ""
    return f"{role} certificate at depth {depth} is not valid{when}"


def _leaf_error(outcome: ProbeOutcome) -> bool:
    """Does the verifier's error concern the leaf (depth 0, or depth unknown)?"""
    check = outcome.certificate
    return check is not None and check.chain.error_depth in (None, 0)


class LeafProblems(NamedTuple):
    """What is wrong with a session's leaf certificate, worked out once per session."""

    expired: bool
    untrusted: str | None  # the not-trusted reason (an X509_V_ERR_* name)
    not_yet_valid: str | None  # the day it becomes valid
    mismatch: bool  # its names do not match the MX host


def _certificate_problems(outcome: ProbeOutcome, at: datetime | None) -> LeafProblems:
    """(expired, not-trusted reason, not-yet-valid day, host mismatch) of the session's leaf.

    The verifier reports one `X509_V_ERR_*` only, so the leaf dates are also compared
    with the scan time `at` when it is given: a self-signed leaf can be expired too.
    An expired or not-yet-valid certificate above the leaf is a not-trusted reason
    (its `X509_V_ERR_*` name), never a leaf expiry.
    """
    check = outcome.certificate
    if check is None:
        return LeafProblems(False, None, None, False)
    leaf = check.leaf
    on_leaf = _leaf_error(outcome)
    expired = check.chain.expired and on_leaf
    untrusted: str | None = None
    not_yet_valid: str | None = None
    error = check.chain.verify_error
    if not check.chain.trusted and not expired:
        if error == X509_HOSTNAME_MISMATCH:
            pass  # a name problem, reported below as certificate-host-mismatch
        else:
            untrusted = error or "X509_V_ERR_UNSPECIFIED"
    if check.chain.not_yet_valid and on_leaf:
        not_yet_valid = _day(leaf.not_before)
    if at is not None:
        now = as_utc(at)
        if leaf.not_after is not None and as_utc(leaf.not_after) < now:
            expired = True
        if leaf.not_before is not None and as_utc(leaf.not_before) > now and not_yet_valid is None:
            not_yet_valid = _day(leaf.not_before)
            untrusted = untrusted or X509_NOT_YET_VALID
    mismatch = not check.name_matches or error == X509_HOSTNAME_MISMATCH
    return LeafProblems(expired, untrusted, not_yet_valid, mismatch)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with a session, in every form the output needs.

    `result_type` and `reason_code` are its RFC 8460 words (the report's
    `result-type` and `failure-reason-code`); `indicator` the downgrade indicator an
    operator sees, with `detail` saying what was observed. Both views come from the
    same finding, so every result type has its indicator by construction.
    """

    result_type: ResultType
    reason_code: str | None
    indicator: IndicatorCode
    detail: str

    @property
    def failure(self) -> SessionFailure:
        return SessionFailure(self.result_type, self.reason_code)


@dataclass(frozen=True, slots=True)
class Session:
    """What the rules of `SESSION_RULES` look at: one tested session and its context.

    `certificate` holds the leaf's problems, worked out once.
    """

    outcome: ProbeOutcome
    status: StartTlsStatus
    mx: str
    policy: Policy | None
    in_policy: bool | None
    dane: AddressDane | None
    certificate: LeafProblems

    @property
    def tls_attempted(self) -> bool:
        """STARTTLS was answered with 220, or the command went through a stripped advertisement."""
        return (
            self.status is not StartTlsStatus.MISSING and self.status is not StartTlsStatus.REFUSED
        )


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the session table: when it applies, and the finding it makes.

    `reason_code` is the RFC 8460 failure-reason-code, or a function of the session
    when the code names what was observed (the verifier's `X509_V_ERR_*`).
    """

    applies: Callable[[Session], bool]
    result_type: ResultType
    reason_code: str | Callable[[Session], str]
    indicator: IndicatorCode
    detail: Callable[[Session], str]

    def finding(self, session: Session) -> Finding:
        code = self.reason_code if isinstance(self.reason_code, str) else self.reason_code(session)
        return Finding(self.result_type, code, self.indicator, self.detail(session))


def _untrusted_detail(session: Session) -> str:
    outcome = session.outcome
    untrusted, not_yet_valid = session.certificate.untrusted, session.certificate.not_yet_valid
    check = outcome.certificate
    issuer_problem = _issuer_date_problem(outcome)
    if issuer_problem is not None and check is not None and untrusted == check.chain.verify_error:
        return f"certificate not trusted: {issuer_problem} ({untrusted})"
    if untrusted == X509_NOT_YET_VALID and not_yet_valid:
        return f"certificate not valid before {not_yet_valid} ({untrusted})"
    return f"certificate not trusted: {untrusted}"


def _untrusted_code(session: Session) -> str:
    return session.certificate.untrusted or "X509_V_ERR_UNSPECIFIED"


def _mismatch_detail(session: Session) -> str:
    assert session.outcome.certificate is not None
    leaf = session.outcome.certificate.leaf
    names = names_shown(leaf.san, leaf.san_total) or "no DNS name"
    return f"certificate names ({names}) do not match {session.mx}"


def _expired_detail(session: Session) -> str:
    assert session.outcome.certificate is not None
    return f"certificate expired on {_day(session.outcome.certificate.leaf.not_after)}"


def _not_in_policy_detail(session: Session) -> str:
    patterns = ", ".join(session.policy.mx) if session.policy is not None else ""
    return f"{session.mx} matches no mx pattern of the policy ({patterns or 'none'})"


_NOT_SUPPORTED = ResultType.STARTTLS_NOT_SUPPORTED

# RFC 8460 §4.3 result types per session (docs/output.md#result-types), in the order a
# session's findings are listed. Adding a check is one row here and one test.
SESSION_RULES: tuple[Rule, ...] = (
    # STARTTLS not completed (docs/output.md#starttls-statuses): at most one of these.
    Rule(
        lambda s: s.status is StartTlsStatus.GARBLED,
        _NOT_SUPPORTED,
        "starttls-garbled",
        IndicatorCode.STARTTLS_GARBLED,
        lambda s: (
            f"EHLO shows {s.outcome.masked_keyword!r} where STARTTLS belongs: "
            "an SMTP-inspecting middlebox masks it"
        ),
    ),
    Rule(
        lambda s: s.status is StartTlsStatus.MISSING and s.outcome.helo_only,
        _NOT_SUPPORTED,
        "helo-only",
        IndicatorCode.HELO_ONLY,
        lambda s: (
            "EHLO is rejected and only HELO works, so STARTTLS cannot be offered "
            f"(STARTTLS got {_reply(s.outcome)})"
        ),
    ),
    Rule(
        lambda s: s.status is StartTlsStatus.MISSING and not s.outcome.helo_only,
        _NOT_SUPPORTED,
        "starttls-missing",
        IndicatorCode.STARTTLS_MISSING,
        lambda s: f"STARTTLS is not offered and the command is refused ({_reply(s.outcome)})",
    ),
    Rule(
        lambda s: s.status is StartTlsStatus.STRIPPED,
        _NOT_SUPPORTED,
        "starttls-stripped",
        IndicatorCode.STARTTLS_STRIPPED,
        lambda s: (
            "STARTTLS is missing from EHLO yet the command is accepted (220): "
            "the advertisement is removed on the path"
        ),
    ),
    Rule(
        lambda s: s.status is StartTlsStatus.REFUSED,
        _NOT_SUPPORTED,
        "starttls-refused",
        IndicatorCode.STARTTLS_REFUSED,
        lambda s: f"STARTTLS is offered but the command gets {_reply(s.outcome)}",
    ),
    # From the 220 to STARTTLS on: injection, handshake, version, certificate.
    Rule(
        lambda s: s.tls_attempted and s.outcome.plaintext_injection > 0,
        ResultType.VALIDATION_FAILURE,
        REASON_PLAINTEXT_INJECTION,
        IndicatorCode.PLAINTEXT_INJECTION,
        lambda s: (
            f"{s.outcome.plaintext_injection} bytes of plaintext the client did not ask "
            "for arrived around the STARTTLS exchange (before the command was answered, or "
            "after the 220 and before the TLS handshake)"
        ),
    ),
    Rule(
        lambda s: s.tls_attempted and _handshake_failed(s.outcome),
        ResultType.VALIDATION_FAILURE,
        REASON_HANDSHAKE_FAILED,
        IndicatorCode.TLS_HANDSHAKE_FAILED,
        lambda s: f"TLS handshake failed: {s.outcome.handshake_error or 'no TLS session'}",
    ),
    Rule(
        lambda s: s.tls_attempted and _weak_version(s.outcome),
        ResultType.VALIDATION_FAILURE,
        REASON_TLS_BELOW_1_2,
        IndicatorCode.WEAK_TLS_VERSION,
        lambda s: f"negotiated {s.outcome.tls.version if s.outcome.tls else '?'}, below TLS 1.2",
    ),
    Rule(
        lambda s: s.tls_attempted and s.certificate.expired,
        ResultType.CERTIFICATE_EXPIRED,
        X509_EXPIRED,
        IndicatorCode.CERTIFICATE_EXPIRED,
        _expired_detail,
    ),
    Rule(
        lambda s: s.tls_attempted and s.certificate.untrusted is not None,
        ResultType.CERTIFICATE_NOT_TRUSTED,
        _untrusted_code,
        IndicatorCode.CERTIFICATE_NOT_TRUSTED,
        _untrusted_detail,
    ),
    Rule(
        lambda s: s.tls_attempted and s.certificate.mismatch,
        ResultType.CERTIFICATE_HOST_MISMATCH,
        X509_HOSTNAME_MISMATCH,
        IndicatorCode.CERTIFICATE_HOST_MISMATCH,
        _mismatch_detail,
    ),
    # RFC 8461 §4.1: the MX host must match a policy mx pattern.
    Rule(
        lambda s: _policy_applies(s.policy) and s.in_policy is False,
        ResultType.VALIDATION_FAILURE,
        REASON_MX_NOT_IN_POLICY,
        IndicatorCode.MX_NOT_IN_POLICY,
        _not_in_policy_detail,
    ),
    # RFC 7672 §3, RFC 8460 §4.3.2.1: DANE applies and no usable TLSA record matches
    # the chain (a session without TLS already has its STARTTLS or handshake row).
    Rule(
        lambda s: (
            s.dane is not None and s.dane.status is DaneStatus.FAIL and s.outcome.tls is not None
        ),
        ResultType.TLSA_INVALID,
        REASON_DANE_MISMATCH,
        IndicatorCode.DANE_MISMATCH,
        lambda s: s.dane.detail if s.dane is not None else "",
    ),
    # RFC 7672 §2.1.1: a bogus (or failed) TLSA lookup is no "no TLSA": senders defer.
    Rule(
        lambda s: s.dane is not None and s.dane.status is DaneStatus.BOGUS,
        ResultType.DNSSEC_INVALID,
        REASON_DNSSEC_BOGUS,
        IndicatorCode.DNSSEC_BOGUS,
        lambda s: f"{s.dane.detail if s.dane else ''}: DANE senders defer mail to {s.mx}",
    ),
)


def session_findings(
    outcome: ProbeOutcome,
    *,
    mx: str,
    policy: Policy | None,
    in_policy: bool | None,
    at: datetime | None = None,
    dane: AddressDane | None = None,
) -> tuple[Finding, ...]:
    """Everything wrong with one session, by `SESSION_RULES` in order; empty when not testable.

    `mx-not-in-policy` applies only when a policy in mode testing or enforce exists and
    `in_policy` is False. `at` (the scan time) lets a leaf's dates count even when the
    verifier stopped at another error. `dane` is the session's DANE status
    (`scanner.core.dane.session_dane`), when DANE was looked into.
    """
    status = starttls_status(outcome)
    if status is None:
        return ()
    session = Session(
        outcome=outcome,
        status=status,
        mx=mx,
        policy=policy,
        in_policy=in_policy,
        dane=dane,
        certificate=_certificate_problems(outcome, at),
    )
    return tuple(rule.finding(session) for rule in SESSION_RULES if rule.applies(session))


def session_failures(
    outcome: ProbeOutcome,
    *,
    policy: Policy | None,
    in_policy: bool | None,
    at: datetime | None = None,
) -> tuple[SessionFailure, ...]:
    """The RFC 8460 result types of one session: the findings' report view."""
    findings = session_findings(
        outcome, mx=outcome.hostname, policy=policy, in_policy=in_policy, at=at
    )
    return tuple(finding.failure for finding in findings)


def indicators_for(
    outcome: ProbeOutcome,
    *,
    mx: str,
    policy: Policy | None,
    in_policy: bool | None,
    at: datetime | None = None,
) -> tuple[Indicator, ...]:
    """The downgrade indicators of one session: the findings' operator view."""
    ip = canonical_ip(outcome.ip)
    findings = session_findings(outcome, mx=mx, policy=policy, in_policy=in_policy, at=at)
    return tuple(Indicator(f.indicator, mx, ip, f.detail) for f in findings)


# ---------------------------------------------------------------- one domain


def _address_verdicts(
    host: MxHostFacts,
    *,
    policy: Policy | None,
    in_policy: bool | None,
    at: datetime,
    dane: HostDaneVerdict | None = None,
    domain: str = "",
) -> tuple[AddressVerdict, ...]:
    """One verdict per address: DNS answer order, probes matched by address.

    An answered address without a probe is not-testable (`not-probed`); a probe whose
    address DNS did not list is kept, after the answered ones.
    """
    probes: dict[str, ProbeOutcome] = {}
    for outcome in host.probes:
        probes.setdefault(canonical_ip(outcome.ip), outcome)
    order = list(
        dict.fromkeys(canonical_ip(a) for answer in host.addresses for a in answer.addresses)
    )
    order += [ip for ip in probes if ip not in order]
    verdicts: list[AddressVerdict] = []
    for ip in order:
        probe = probes.get(ip)
        if probe is None:
            verdicts.append(
                AddressVerdict(
                    ip=ip,
                    status=AddressStatus.NOT_TESTABLE,
                    interruption=Interruption(InterruptionKind.NOT_PROBED),
                    starttls=None,
                    failures=(),
                    indicators=(),
                    probe=None,
                )
            )
            continue
        tested = probe.status is AddressStatus.TESTED
        address_dane = (
            session_dane(probe, dane.facts, mx_dnssec=dane.mx_dnssec, domain=domain)
            if dane is not None
            else None
        )
        findings = session_findings(
            probe, mx=host.hostname, policy=policy, in_policy=in_policy, at=at, dane=address_dane
        )
        verdicts.append(
            AddressVerdict(
                ip=ip,
                status=probe.status,
                interruption=None if tested else probe.interruption,
                starttls=starttls_status(probe),
                failures=tuple(finding.failure for finding in findings),
                indicators=tuple(
                    Indicator(f.indicator, host.hostname, ip, f.detail) for f in findings
                ),
                probe=probe,
                dane=address_dane,
            )
        )
    return tuple(verdicts)


def _tls_inconsistent(hosts: tuple[MxVerdict, ...]) -> Indicator | None:
    """docs/output.md#indicators `tls-inconsistent`: among tested addresses of DNS MX hosts, some complete
    valid TLS (no result type besides mx-not-in-policy) and others do not."""
    good: list[str] = []
    bad: list[str] = []
    for host in hosts:
        if host.source is not MxSource.DNS:
            continue
        for address in host.addresses:
            if address.status is not AddressStatus.TESTED:
                continue
            tls_failures = [f for f in address.failures if f.reason_code != REASON_MX_NOT_IN_POLICY]
            (bad if tls_failures else good).append(f"{host.hostname} ({address.ip})")
    if not good or not bad:
        return None
    return Indicator(
        code=IndicatorCode.TLS_INCONSISTENT,
        mx=None,
        ip=None,
        detail=f"valid TLS on {', '.join(good)}; not on {', '.join(bad)}: "
        "a downgrade lands on the weakest",
    )


def _dns_words(answer: AddressAnswer) -> str:
    return f"{answer.status.value}{': ' + answer.detail if answer.detail else ''}"


def _mx_blockers(facts: DomainFacts, dns_hosts: list[MxHostFacts]) -> list[Problem]:
    mx = facts.mx
    if mx.null_mx:
        return [
            Problem(
                ProblemCode.NULL_MX,
                "null MX (RFC 7505): the domain accepts no mail, so there is nothing to enforce",
            )
        ]
    if mx.status is DnsStatus.NXDOMAIN:
        return [Problem(ProblemCode.NXDOMAIN, "the domain does not exist (NXDOMAIN)")]
    if mx.status not in DEFINITIVE_DNS:
        detail = f": {mx.detail}" if mx.detail else ""
        return [
            Problem(
                ProblemCode.MX_LOOKUP_FAILED,
                f"MX lookup failed ({mx.status.value}{detail}): scan again",
                cause=mx.status.value,
            )
        ]
    if not dns_hosts:
        return [
            Problem(
                ProblemCode.NO_MX,
                "no MX record and no address for the domain: it cannot receive mail",
            )
        ]
    if all(not any(a.addresses for a in host.addresses) and not host.probes for host in dns_hosts):
        return [
            Problem(
                ProblemCode.NO_MX_ADDRESS,
                "no MX host has an A or AAAA address: the domain cannot receive mail",
            )
        ]
    return []


def _host_address_problems(host: MxHostFacts) -> tuple[list[Problem], list[Problem]]:
    """(blockers, warnings) about a host's address lookups."""
    name = host.hostname
    if host.probes or any(a.addresses for a in host.addresses):
        failed = [a for a in host.addresses if a.status not in DEFINITIVE_DNS]
        blockers = [
            Problem(
                ProblemCode.ADDRESS_LOOKUP_FAILED,
                f"{name}: an address lookup failed ({_dns_words(a)}), "
                "so some addresses could not be tested",
                host=name,
                cause=a.status.value,
            )
            for a in failed
        ]
        return blockers, []
    if host.addresses_cut:
        return [], []  # every address lay beyond a cap: the domain's over-limit blocker says so
    if all(a.status in DEFINITIVE_DNS for a in host.addresses):
        return [], [
            Problem(
                ProblemCode.NO_ADDRESS,
                f"{name} has no A or AAAA address: senders skip it",
                host=name,
            )
        ]
    failed = [a for a in host.addresses if a.status not in DEFINITIVE_DNS]
    words = ", ".join(_dns_words(a) for a in host.addresses)
    return [
        Problem(
            ProblemCode.ADDRESS_LOOKUP_FAILED,
            f"{name}: address lookup failed ({words}), so it could not be tested",
            host=name,
            cause=failed[0].status.value if failed else None,
        )
    ], []


def _expiry_warnings(host: str, address: AddressVerdict, at: datetime) -> list[Problem]:
    probe = address.probe
    if probe is None or probe.certificate is None or probe.certificate.leaf.not_after is None:
        return []
    not_after = as_utc(probe.certificate.leaf.not_after)
    now = as_utc(at)
    if now <= not_after <= now + EXPIRY_WARNING_WINDOW:
        days = (not_after - now).days
        return [
            Problem(
                ProblemCode.CERTIFICATE_EXPIRES_SOON,
                f"{host} ({address.ip}): certificate expires on {_day(not_after)}, "
                f"{days} days after the scan",
                host=host,
                address=address.ip,
            )
        ]
    return []


def session_warnings(mx: str, address: AddressVerdict) -> list[Problem]:
    """Warnings about one session that are no RFC 8460 result type, naming MX and address.

    * A post-TLS EHLO that times out, is cut off or is refused: TLS completed, yet no
      mail can be sent over it. A QUIT problem is not worth a warning.
    * STARTTLS still advertised after TLS (RFC 3207 §4.2: the server must not).
    * A greeting masked with `*`: a middlebox rewrites the SMTP dialogue.
    """
    probe = address.probe
    if probe is None:
        return []
    where = f"{mx} ({address.ip})"
    warnings: list[Problem] = []
    trouble = probe.after_tls
    if trouble is not None and blocks_delivery(trouble):
        warnings.append(
            Problem(
                ProblemCode.EHLO_AFTER_TLS_FAILED,
                f"{where}: EHLO after TLS failed ({after_tls_text(trouble)}): TLS completes, "
                "but no mail can be delivered over it",
                host=mx,
                address=address.ip,
                cause=reason_code(trouble),
            )
        )
    if probe.starttls_after_tls:
        warnings.append(
            Problem(
                ProblemCode.STARTTLS_AFTER_TLS,
                f"{where}: STARTTLS is still advertised after TLS (RFC 3207 §4.2 forbids it)",
                host=mx,
                address=address.ip,
            )
        )
    if probe.greeting is not None and is_masked_banner(probe.greeting):
        warnings.append(
            Problem(
                ProblemCode.MASKED_BANNER,
                f"{where}: SMTP banner masked by a middlebox (Cisco PIX/ASA MailGuard signature)",
                host=mx,
                address=address.ip,
            )
        )
    return warnings


# The blocker of a policy failure, by its result type: code and leading words.
_POLICY_FAILURE_WORDS = {
    ResultType.STS_POLICY_FETCH_ERROR: (ProblemCode.POLICY_FETCH_ERROR, "policy fetch failed"),
    ResultType.STS_POLICY_INVALID: (ProblemCode.POLICY_INVALID, "policy is invalid"),
    ResultType.STS_WEBPKI_INVALID: (ProblemCode.POLICY_WEBPKI_INVALID, ""),
}


def _policy_blockers(facts: DomainFacts) -> tuple[list[Problem], Policy | None]:
    if facts.sts_record is None:
        error = facts.sts_record_error
        why = error.detail if error is not None else "none published"
        return [
            Problem(
                ProblemCode.NO_STS_RECORD,
                f"no usable _mta-sts record at _mta-sts.{facts.domain}: {why}",
                cause=error.code.value if error is not None else None,
            )
        ], None
    fetch = facts.policy_fetch
    if fetch is None:
        return [Problem(ProblemCode.POLICY_NOT_FETCHED, "the policy was not fetched")], None
    if fetch.policy is None:
        failure = fetch.failure
        if failure is None:
            return [Problem(ProblemCode.POLICY_FETCH_ERROR, "policy fetch failed: no policy")], None
        code, words = _POLICY_FAILURE_WORDS[failure.result_type]
        words = words or f"certificate of mta-sts.{facts.domain} is not valid"
        return [Problem(code, f"{words}: {failure.detail}", cause=failure.code.value)], None
    policy = fetch.policy
    if policy.mode is PolicyMode.NONE:
        return [
            Problem(
                ProblemCode.MODE_NONE,
                "mode is none: the policy is switched off; publish mode testing or enforce",
            )
        ], policy
    return [], policy


# Advice for reasons the scan itself can overcome, after the reason in a blocker.
PARTIAL_GREETING_HINT = (
    "the server is likely postscreen with a greet pause longer than the greeting deadline: "
    "raise --greeting-timeout"
)
EHLO_NAME_HINT = (
    "servers that check the EHLO name refuse one that does not resolve: "
    "set --ehlo-name to a name that resolves to the scanning host"
)
_PARTIAL_GREETING = Interruption(InterruptionKind.TIMEOUT, Phase.GREETING, PARTIAL_GREETING_NOTE)


def not_testable_hint(interruption: Interruption) -> str | None:
    """What the operator of the scan can do about `interruption`, or None."""
    if interruption == _PARTIAL_GREETING:
        return PARTIAL_GREETING_HINT
    if interruption.kind is InterruptionKind.EHLO_REJECTED:
        return EHLO_NAME_HINT
    return None


def _untested(name: str, ip: str, interruption: Interruption) -> Problem:
    if interruption.kind is InterruptionKind.SCANNER_NETWORK:
        return Problem(
            ProblemCode.NOT_TESTABLE_FROM_HERE,
            f"{name} ({ip}) could not be tested from this scanning host, which has no IPv6 "
            "route: readiness is undetermined for this address (scan from a host with IPv6)",
            host=name,
            address=ip,
            cause=reason_code(interruption),
        )
    words = f"{name} ({ip}) could not be tested: {reason_text(interruption)}"
    hint = not_testable_hint(interruption)
    return Problem(
        ProblemCode.NOT_TESTABLE,
        words if hint is None else f"{words}; {hint}",
        host=name,
        address=ip,
        cause=reason_code(interruption),
    )


def _standby(problem: Problem) -> Problem:
    """A problem of a host only the policy names: a warning, said so."""
    return replace(problem, text=f"policy-only host {problem.text}")


def _judge_hosts(facts: DomainFacts, policy: Policy | None) -> list[MxVerdict]:
    """One verdict per MX host (DNS and policy-only), in the order of the facts."""
    hosts: list[MxVerdict] = []
    for host in facts.hosts:
        in_policy = policy_covers(policy, host.hostname) if policy is not None else None
        # RFC 7672 §2.2: DANE concerns the hosts of the MX RRset, never policy-only hosts.
        dane = (
            host_verdict(facts.mx.dnssec, host.dane, domain=facts.domain)
            if host.dane is not None and host.source is MxSource.DNS
            else None
        )
        hosts.append(
            MxVerdict(
                hostname=host.hostname,
                preference=host.preference,
                source=host.source,
                in_policy=in_policy,
                addresses=_address_verdicts(
                    host,
                    policy=policy,
                    in_policy=in_policy,
                    at=facts.scanned_at,
                    dane=dane,
                    domain=facts.domain,
                ),
                dane=dane,
            )
        )
    return hosts


def _address_problems(name: str, address: AddressVerdict) -> list[Problem]:
    """What keeps one address from passing: why it was not tested, or its findings."""
    if address.interruption is not None:
        return [_untested(name, address.ip, address.interruption)]
    # mx-not-in-policy is the host's blocker, not each address's
    return [
        Problem(
            indicator.code.value, f"{name} ({address.ip}): {indicator.detail}", name, address.ip
        )
        for indicator in address.indicators
        if indicator.code is not IndicatorCode.MX_NOT_IN_POLICY
    ]


def _host_problems(
    facts_host: MxHostFacts, host: MxVerdict, policy: Policy | None, at: datetime
) -> tuple[list[Problem], list[Problem]]:
    """(blockers, warnings) of one host; a policy-only host's blockers are its warnings."""
    name = host.hostname
    dns = host.source is MxSource.DNS
    blockers: list[Problem] = []
    warnings: list[Problem] = []
    lookup_blockers, lookup_warnings = _host_address_problems(facts_host)
    if dns:
        # RFC 8461 §4.1: every MX host must match a policy mx pattern.
        if _policy_applies(policy) and host.in_policy is False:
            assert policy is not None
            patterns = ", ".join(policy.mx) or "none"
            blockers.append(
                Problem(
                    ProblemCode.MX_NOT_IN_POLICY,
                    f"{name} is not covered by the policy's mx patterns ({patterns})",
                    host=name,
                )
            )
        blockers += lookup_blockers
        warnings += lookup_warnings
        blockers += _dane_starttls_blockers(host)
        if host.dane is not None and host.dane.requires_starttls:
            warnings += [
                Problem(ProblemCode.DANE_WARNING, text, host=name)
                for text in host_warnings(name, host.dane.facts)
            ]
    else:
        warnings += [_standby(problem) for problem in lookup_blockers + lookup_warnings]
    for address in host.addresses:
        problems = _address_problems(name, address)
        notes = session_warnings(name, address)
        if dns:
            here = [p for p in problems if p.code == ProblemCode.NOT_TESTABLE_FROM_HERE]
            blockers += [p for p in problems if p.code != ProblemCode.NOT_TESTABLE_FROM_HERE]
            warnings += here + notes
        else:
            warnings += [_standby(problem) for problem in problems + notes]
        warnings += _expiry_warnings(name, address, at)
    return blockers, warnings


# docs/output.md#readiness.
def assess_domain(facts: DomainFacts) -> DomainVerdict:
    """Judge one domain: per-address verdicts, indicators, readiness, blockers, warnings.

    Ready only with a usable record, a valid policy in mode testing or enforce, every DNS
    MX host covered by the policy, and every address of every DNS MX host tested and
    passed with no result type. Policy-only hosts never block: their problems are
    warnings.
    """
    policy_blockers, policy = _policy_blockers(facts)
    dns_hosts = [h for h in facts.hosts if h.source is MxSource.DNS]
    blockers = _mx_blockers(facts, dns_hosts) + policy_blockers
    warnings: list[Problem] = []
    # The policy object of the facts, even in mode none: in_policy is reported for it.
    hosts = _judge_hosts(facts, policy)
    for facts_host, verdict_host in zip(facts.hosts, hosts, strict=True):
        host_blockers, host_warnings_ = _host_problems(
            facts_host, verdict_host, policy, facts.scanned_at
        )
        blockers += host_blockers
        warnings += host_warnings_

    indicators = [i for host in hosts for address in host.addresses for i in address.indicators]
    inconsistent = _tls_inconsistent(tuple(hosts))
    if inconsistent is not None:
        indicators.append(inconsistent)

    over_blockers, over_warnings = _over_limit_problems(facts)
    blockers += over_blockers
    warnings += over_warnings
    warnings += _domain_warnings(facts, policy, dns_hosts)
    blockers += _undetermined(hosts)
    unique_blockers = tuple(dict.fromkeys(blockers))
    warnings = merged(list(dict.fromkeys(warnings)))
    verdict = DomainVerdict(
        domain=facts.domain,
        mx=tuple(hosts),
        indicators=tuple(indicators),
        enforce_ready=not unique_blockers,
        blockers=unique_blockers,
        warnings=tuple(warnings),
    )
    return replace(verdict, could_not_scan=_could_not_scan(facts, verdict))


# A domain's owner chooses how many of these it gets (65,536 `mx:` lines, blank lines):
# beyond `MERGE_ABOVE` of one code, one warning names the first few and counts the rest.
MERGED_CODES: Final = frozenset(
    {
        ProblemCode.UNUSED_MX_PATTERN,
        ProblemCode.BROAD_MX_PATTERN,
        ProblemCode.POLICY_SYNTAX_WARNING,
        ProblemCode.STS_RECORD_WARNING,
        ProblemCode.DANE_WARNING,
    }
)
MERGE_ABOVE: Final = 3


def merged(warnings: list[Problem]) -> list[Problem]:
    """`warnings` with those of a `MERGED_CODES` code beyond `MERGE_ABOVE` merged into one,
    in the place of the first: the first few texts and how many more there are."""
    by_code: dict[str, list[Problem]] = {}
    for warning in warnings:
        if warning.code in MERGED_CODES:
            by_code.setdefault(warning.code, []).append(warning)
    crowded = {code: group for code, group in by_code.items() if len(group) > MERGE_ABOVE}
    if not crowded:
        return warnings
    kept: list[Problem] = []
    for warning in warnings:
        group = crowded.get(warning.code)
        if group is None:
            kept.append(warning)
        elif warning is group[0]:
            shown = "; ".join(problem.text for problem in group[:MERGE_ABOVE])
            more = len(group) - MERGE_ABOVE
            kept.append(replace(warning, text=f"{shown}; and {more} more of this kind"))
    return kept


def _from_here(address: AddressVerdict) -> bool:
    interruption = address.interruption
    return interruption is not None and interruption.kind is InterruptionKind.SCANNER_NETWORK


def _undetermined(hosts: list[MxVerdict]) -> list[Problem]:
    """No DNS MX address tested, some only for the scanning host's network: undetermined.

    Not the domain's fault, so never its only word: without this blocker a domain whose
    every MX address is IPv6 would be "ready" on the strength of nothing tested.
    """
    addresses = [a for h in hosts if h.source is MxSource.DNS for a in h.addresses]
    if any(a.status is AddressStatus.TESTED for a in addresses):
        return []
    unreachable = [a.ip for a in addresses if _from_here(a)]
    if not unreachable:
        return []
    return [
        Problem(
            ProblemCode.READINESS_UNDETERMINED,
            f"readiness undetermined: no MX address could be tested from this scanning host "
            f"({', '.join(unreachable)}: it has no IPv6 route); scan from a host with IPv6",
            cause="scanner-network:no-ipv6-route",
        )
    ]


def _dane_starttls_blockers(host: MxVerdict) -> list[Problem]:
    """RFC 7672 §2.2: TLSA records (usable or not) oblige DANE senders to use STARTTLS."""
    if host.dane is None or not host.dane.requires_starttls:
        return []
    return [
        Problem(
            ProblemCode.DANE_REQUIRES_STARTTLS,
            f"{host.hostname} ({address.ip}): its TLSA records oblige DANE senders to use "
            "STARTTLS, and no TLS session was made: they will not deliver to it",
            host=host.hostname,
            address=address.ip,
        )
        for address in host.addresses
        if address.status is AddressStatus.TESTED
        and address.probe is not None
        and address.probe.tls is None
    ]


def _could_not_scan(facts: DomainFacts, verdict: DomainVerdict) -> bool:
    """The MX lookup failed, or DNS gave addresses and none of them could be tested."""
    if facts.mx.status not in DEFINITIVE_DNS:
        return True
    statuses = [address.status for _, address in verdict.dns_addresses()]
    return bool(statuses) and AddressStatus.TESTED not in statuses


# What each cap cuts off, in words (docs/output.md#caps).
_CUT_WHAT = {
    "--max-mx-hosts": "MX hosts",
    "--max-addresses-per-host": "addresses of MX hosts",
    "--max-addresses": "addresses of MX hosts",
    "--max-standby-hosts": "standby hosts named only by the policy",
}


def _over_limit_problems(facts: DomainFacts) -> tuple[list[Problem], list[Problem]]:
    """A domain over a cap is never ready on the strength of the hosts tested alone.

    Standby hosts never block, so their cap is a warning only.
    """
    blockers: list[Problem] = []
    warnings: list[Problem] = []
    for over in facts.over_limit:
        what = _CUT_WHAT.get(over.cap, "hosts or addresses")
        examples = f" (first: {', '.join(over.examples)})" if over.examples else ""
        cut = f"{over.skipped} {what} beyond {over.cap} {over.limit} were not contacted{examples}"
        warnings.append(
            Problem(
                ProblemCode.OVER_LIMIT,
                f"over-limit: {cut}; raise {over.cap} to test them",
                cause=over.cap,
            )
        )
        if over.cap != "--max-standby-hosts":
            blockers.append(
                Problem(
                    ProblemCode.OVER_LIMIT,
                    f"over-limit: {cut}: readiness cannot rest on the hosts that were tested alone",
                    cause=over.cap,
                )
            )
    return blockers, warnings


def _domain_warnings(
    facts: DomainFacts, policy: Policy | None, dns_hosts: list[MxHostFacts]
) -> list[Problem]:
    warnings: list[Problem] = []
    if facts.mx.implicit:
        warnings.append(
            Problem(
                ProblemCode.IMPLICIT_MX,
                "no MX record: mail goes to the domain's own address (implicit MX, RFC 5321 §5.1)",
            )
        )
    if facts.tlsrpt_record is None:
        error = facts.tlsrpt_error
        why = error.detail if error is not None else "none published"
        warnings.append(
            Problem(
                ProblemCode.NO_TLSRPT_RECORD,
                f"no TLS-RPT record at _smtp._tls.{facts.domain} ({why}): "
                "senders cannot report TLS failures to you",
                cause=error.code.value if error is not None else None,
            )
        )
    if facts.sts_record is not None:
        warnings += [
            Problem(ProblemCode.STS_RECORD_WARNING, f"_mta-sts record: {w}")
            for w in facts.sts_record.warnings
        ]
    if policy is not None:
        warnings += [
            Problem(ProblemCode.POLICY_SYNTAX_WARNING, f"policy: {w}") for w in policy.warnings
        ]
        # mode none, short max_age, broad wildcards, mx patterns matching no MX host
        warnings += policy_warnings(policy, tuple(h.hostname for h in dns_hosts))
    fetch = facts.policy_fetch
    if fetch is not None and fetch.certificate is not None and fetch.certificate.leaf.not_after:
        not_after = as_utc(fetch.certificate.leaf.not_after)
        now = as_utc(facts.scanned_at)
        if now <= not_after <= now + EXPIRY_WARNING_WINDOW:
            warnings.append(
                Problem(
                    ProblemCode.POLICY_CERTIFICATE_EXPIRES_SOON,
                    f"policy host mta-sts.{facts.domain}: certificate expires on "
                    f"{_day(not_after)}, {(not_after - now).days} days after the scan",
                    host=f"mta-sts.{facts.domain}",
                )
            )
    return warnings
