"""The misconfiguration taxonomy: categories of problems, each a row of one data table.

A `Category` names its problems' kinds in a line (`observe`), the funnel stage whose
domains its shares are of (`base`), and whether its problems belong to a domain or to
an (MX host, address) session (`unit`). `CATEGORIES` is the whole taxonomy: the
statistics, the tables, the charts, the CSV and the JSON iterate over it, so a new
category is one row here and a new kind of problem is one row of a table in `kinds`.

Only the MX hosts from DNS (and the implicit MX) count, as in readiness and reports;
the standby hosts a policy names alone are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Final

from scanner.core.codes import RecordCode
from scanner.models import IndicatorCode, ResultType, StartTlsStatus
from scanner.research.kinds import (
    CAP_KINDS,
    OTHER,
    kind_of,
    policy_problem,
    verify_error_kind,
)
from scanner.research.lines import Address, MxHost, ScanLine
from scanner.research.measures import Stage

# docs/output.md#warnings: a certificate expiring within 14 days of the scan.
EXPIRY_WARNING: Final = timedelta(days=14)


class Unit(StrEnum):
    DOMAIN = "domain"
    ADDRESS = "address"


@dataclass(frozen=True, slots=True)
class Observation:
    """One problem of a kind; `address` ("<mx host> <ip>") for a session's problem."""

    kind: str
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    title: str
    base: Stage
    unit: Unit
    observe: Callable[[ScanLine], Iterable[Observation]]


def _sessions(line: ScanLine) -> Iterator[tuple[MxHost, Address]]:
    for host in line.dns_hosts:
        for address in host.addresses:
            yield host, address


def _key(host: MxHost, address: Address) -> str:
    return f"{host.hostname} {address.ip}"


# "Nothing published" is not adopting, counted beside the funnel, no misconfiguration.
_NOT_ADOPTED: Final = frozenset({RecordCode.NO_RECORD.value})


def record_errors(line: ScanLine) -> Iterator[Observation]:
    if line.sts_record is None and line.sts_error_code not in _NOT_ADOPTED:
        yield Observation(line.sts_error_code or OTHER)


def _policy_problems(part: str) -> Callable[[ScanLine], Iterator[Observation]]:
    def observe(line: ScanLine) -> Iterator[Observation]:
        if line.sts_record is None:
            return
        problem = policy_problem(line.sts_error_type, line.sts_error_code)
        if problem is not None and problem[0] == part:
            yield Observation(problem[1])

    return observe


def mx_coverage(line: ScanLine) -> Iterator[Observation]:
    if line.policy is None:
        return
    hosts = line.dns_hosts
    uncovered = [host for host in hosts if host.in_policy is False]
    if uncovered:
        yield Observation(
            "no-mx-covered" if len(uncovered) == len(hosts) else "some-mx-not-covered"
        )


def tlsrpt_errors(line: ScanLine) -> Iterator[Observation]:
    if (
        line.tlsrpt_record is None
        and line.error is None
        and line.tlsrpt_error_code not in _NOT_ADOPTED
    ):
        yield Observation(line.tlsrpt_error_code or OTHER)


def certificates(line: ScanLine) -> Iterator[Observation]:
    for host, address in _sessions(line):
        certificate = address.certificate
        if not address.tested or certificate is None:
            continue
        key = _key(host, address)
        if ResultType.CERTIFICATE_EXPIRED in address.result_types:
            yield Observation("expired", key)
        if ResultType.CERTIFICATE_NOT_TRUSTED in address.result_types:
            yield Observation(verify_error_kind(certificate.verify_error), key)
        if ResultType.CERTIFICATE_HOST_MISMATCH in address.result_types:
            yield Observation("host-mismatch", key)
        if certificate.not_after is not None and line.scanned_at is not None:
            left = certificate.not_after - line.scanned_at
            if timedelta(0) <= left <= EXPIRY_WARNING:
                yield Observation("expires-within-14-days", key)


_STARTTLS_PROBLEMS: Final = frozenset(
    {
        StartTlsStatus.MISSING,
        StartTlsStatus.STRIPPED,
        StartTlsStatus.GARBLED,
        StartTlsStatus.REFUSED,
    }
)


def _indicator_codes(line: ScanLine) -> dict[tuple[str | None, str | None], set[str]]:
    codes: dict[tuple[str | None, str | None], set[str]] = {}
    for indicator in line.indicators:
        codes.setdefault((indicator.mx, indicator.ip), set()).add(indicator.code)
    return codes


def starttls(line: ScanLine) -> Iterator[Observation]:
    codes = _indicator_codes(line)
    for host, address in _sessions(line):
        if not address.tested:
            continue
        key = _key(host, address)
        if address.starttls in _STARTTLS_PROBLEMS:
            yield Observation(str(address.starttls), key)
        elif address.starttls not in (None, StartTlsStatus.OFFERED):
            yield Observation(OTHER, key)
        if IndicatorCode.HELO_ONLY in codes.get((host.hostname, address.ip), set()):
            yield Observation(IndicatorCode.HELO_ONLY.value, key)


_SESSION_INDICATORS: Final = (
    IndicatorCode.TLS_HANDSHAKE_FAILED,
    IndicatorCode.WEAK_TLS_VERSION,
    IndicatorCode.PLAINTEXT_INJECTION,
)


def tls_sessions(line: ScanLine) -> Iterator[Observation]:
    codes = _indicator_codes(line)
    for host, address in _sessions(line):
        if not address.tested:
            continue
        key = _key(host, address)
        found = codes.get((host.hostname, address.ip), set())
        for code in _SESSION_INDICATORS:
            if code in found:
                yield Observation(code.value, key)
        if address.after_tls_error is not None:
            yield Observation("after-tls-error", key)
    if IndicatorCode.TLS_INCONSISTENT in codes.get((None, None), set()):
        yield Observation(IndicatorCode.TLS_INCONSISTENT.value)


# Not-testable reasons that are the scanning host's network, not the domain's.
SCANNER_NETWORK_PREFIX = "scanner-network:"


def _from_here(code: str | None) -> bool:
    return code is not None and code.startswith(SCANNER_NETWORK_PREFIX)


def not_testable(line: ScanLine) -> Iterator[Observation]:
    for host, address in _sessions(line):
        if address.not_testable and not _from_here(address.reason_code):
            yield Observation(address.reason_code or OTHER, _key(host, address))


def not_testable_from_here(line: ScanLine) -> Iterator[Observation]:
    """Addresses the scanning host could not reach (no IPv6 route): counted apart."""
    for host, address in _sessions(line):
        if address.not_testable and _from_here(address.reason_code):
            assert address.reason_code is not None
            yield Observation(address.reason_code, _key(host, address))


def busy_retries(line: ScanLine) -> Iterator[Observation]:
    for host, address in _sessions(line):
        if address.attempts is not None and address.attempts > 1:
            kind = "retried-then-tested" if address.tested else "retried-still-not-testable"
            yield Observation(kind, _key(host, address))


def dane(line: ScanLine) -> Iterator[Observation]:
    """DANE beside MTA-STS: each address's DANE status (adoption and failures)."""
    for host, address in _sessions(line):
        if address.dane_status is not None and address.dane_status != "unvalidated":
            yield Observation(address.dane_status, _key(host, address))


def over_limit(line: ScanLine) -> Iterator[Observation]:
    for entry in line.over_limit:
        yield Observation(kind_of(entry.cap, CAP_KINDS))


CATEGORIES: Final[tuple[Category, ...]] = (
    Category("record", "_mta-sts record problems", Stage.WITH_MX, Unit.DOMAIN, record_errors),
    Category(
        "policy-fetch",
        "Policy fetch errors",
        Stage.RECORD_VALID,
        Unit.DOMAIN,
        _policy_problems("fetch"),
    ),
    Category(
        "policy-syntax",
        "Policy syntax errors",
        Stage.POLICY_FETCHED,
        Unit.DOMAIN,
        _policy_problems("syntax"),
    ),
    Category(
        "mx-coverage",
        "MX hosts not covered by the policy",
        Stage.POLICY_VALID,
        Unit.DOMAIN,
        mx_coverage,
    ),
    Category("tlsrpt", "TLS-RPT record problems", Stage.WITH_MX, Unit.DOMAIN, tlsrpt_errors),
    Category("certificate", "Certificate problems", Stage.WITH_MX, Unit.ADDRESS, certificates),
    Category(
        "starttls",
        "STARTTLS missing, stripped, garbled, refused",
        Stage.WITH_MX,
        Unit.ADDRESS,
        starttls,
    ),
    Category("tls-session", "TLS session problems", Stage.WITH_MX, Unit.ADDRESS, tls_sessions),
    Category(
        "not-testable",
        "Addresses not testable, by reason",
        Stage.WITH_MX,
        Unit.ADDRESS,
        not_testable,
    ),
    Category(
        "not-testable-from-here",
        "Addresses the scanning host could not reach (its network, not the domain's)",
        Stage.WITH_MX,
        Unit.ADDRESS,
        not_testable_from_here,
    ),
    Category("busy-retry", "Busy servers tried again", Stage.WITH_MX, Unit.ADDRESS, busy_retries),
    Category(
        "over-limit", "Caps that cut hosts or addresses", Stage.DOMAINS, Unit.DOMAIN, over_limit
    ),
    Category("dane", "DANE status of addresses (RFC 7672)", Stage.WITH_MX, Unit.ADDRESS, dane),
)
