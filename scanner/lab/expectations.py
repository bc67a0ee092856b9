"""Compare a scan result with the verdict a world description expects for its domain.

Used by `scanner demo` (its summary table) and by the end-to-end tests, so both
judge the scanner by the same rule: `indicators` and `result_types` listed in
the expectation must be present (others may appear too), `starttls` must match
per address, `not_testable` reasons must start with the expected prefix, `dane`
statuses must match per address.
"""

from __future__ import annotations

from scanner.core.assess import AddressVerdict, DomainVerdict
from scanner.core.reasons import reason_text
from scanner.core.result import DomainResult
from scanner.core.tlsrpt import policy_type
from scanner.lab.world import Expectation
from scanner.models import AddressStatus, DomainFacts


def _addresses(result: DomainResult) -> dict[str, AddressVerdict]:
    if result.verdict is None:
        return {}
    return {address.ip: address for host in result.verdict.mx for address in host.addresses}


def mismatches(result: DomainResult, expect: Expectation) -> list[str]:
    """Every way `result` differs from `expect`; empty when the scanner got it right."""
    if expect.error is not None:
        error = str(result.error) if result.error is not None else ""
        if not error.startswith(expect.error):
            return [f"error: expected {expect.error!r}..., got {error!r}"]
        return []
    if result.error is not None or result.verdict is None or result.facts is None:
        return [f"unexpected error: {result.error}"]
    addresses = _addresses(result)
    return [
        *_domain_mismatches(result.facts, result.verdict, expect),
        *_address_mismatches(addresses, expect),
    ]


def _domain_mismatches(
    facts: DomainFacts, verdict: DomainVerdict, expect: Expectation
) -> list[str]:
    """Readiness, the policy's error and type, and the indicators."""
    problems: list[str] = []
    if verdict.enforce_ready != expect.enforce_ready:
        problems.append(
            f"enforce_ready: expected {expect.enforce_ready}, got {verdict.enforce_ready}"
            f" (blockers: {'; '.join(b.text for b in verdict.blockers) or 'none'})"
        )
    fetch = facts.policy_fetch
    got_policy_error = fetch.failure.result_type if fetch and fetch.failure else None
    if expect.policy_error != got_policy_error:
        problems.append(f"policy error: expected {expect.policy_error}, got {got_policy_error}")
    if expect.policy_type is not None and policy_type(facts) != expect.policy_type:
        problems.append(f"policy-type: expected {expect.policy_type}, got {policy_type(facts)}")
    got_indicators = {indicator.code for indicator in verdict.indicators}
    problems += [
        f"indicator {code.value} missing (got {sorted(c.value for c in got_indicators)})"
        for code in expect.indicators
        if code not in got_indicators
    ]
    return problems


def _address_mismatches(addresses: dict[str, AddressVerdict], expect: Expectation) -> list[str]:
    """Result types, and per address STARTTLS, not-testable reasons and DANE."""
    got_types = {t for address in addresses.values() for t in address.result_types}
    problems = [
        f"result type {result_type.value} missing (got {sorted(t.value for t in got_types)})"
        for result_type in expect.result_types
        if result_type not in got_types
    ]
    for ip, status in expect.starttls.items():
        found = addresses.get(ip)
        got = found.starttls if found is not None else None
        if got is not status:
            problems.append(f"{ip}: starttls expected {status.value}, got {got}")
    for ip, prefix in expect.not_testable.items():
        found = addresses.get(ip)
        reason = reason_text(found.interruption) if found and found.interruption else ""
        got_status = found.status if found is not None else None
        if got_status is not AddressStatus.NOT_TESTABLE or not reason.startswith(prefix):
            problems.append(f"{ip}: expected not-testable {prefix}..., got {got_status} {reason}")
    for ip, dane_status in expect.dane.items():
        found = addresses.get(ip)
        got_dane = found.dane if found is not None else None
        if got_dane is None or got_dane.status is not dane_status:
            words = f"{got_dane.status.value} ({got_dane.detail})" if got_dane else "none"
            problems.append(f"{ip}: DANE expected {dane_status.value}, got {words}")
    return problems
