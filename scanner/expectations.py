"""Compare a result line with the verdict a world description expects for its domain.

Used by `scanner demo` (its summary table) and by the end-to-end tests, so both
judge the scanner by the same rule: `indicators` and `result_types` listed in
the expectation must be present (others may appear too), `starttls` must match
per address, `not_testable` reasons must start with the expected prefix.
"""

from __future__ import annotations

from typing import Any

from scanner.lab.world import Expectation


def _addresses(line: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(address.get("ip")): address
        for mx in line.get("mx") or []
        for address in mx.get("addresses") or []
    }


def mismatches(line: dict[str, Any], expect: Expectation) -> list[str]:
    """Every way `line` differs from `expect`; empty when the scanner got it right."""
    problems: list[str] = []
    if expect.error is not None:
        error = line.get("error") or ""
        if not str(error).startswith(expect.error):
            problems.append(f"error: expected {expect.error!r}..., got {error!r}")
        return problems
    if line.get("error"):
        problems.append(f"unexpected error: {line['error']}")
    if bool(line.get("enforce_ready")) != expect.enforce_ready:
        problems.append(
            f"enforce_ready: expected {expect.enforce_ready}, got {line.get('enforce_ready')}"
            f" (blockers: {'; '.join(line.get('blockers') or []) or 'none'})"
        )
    sts_error = (line.get("mta_sts") or {}).get("error") or {}
    got_policy_error = sts_error.get("result_type")
    if (expect.policy_error or None) != (got_policy_error or None):
        problems.append(f"policy error: expected {expect.policy_error}, got {got_policy_error}")
    if expect.policy_type is not None:
        policies = (line.get("report") or {}).get("policies") or [{}]
        got_type = (policies[0].get("policy") or {}).get("policy-type")
        if got_type != expect.policy_type:
            problems.append(f"policy-type: expected {expect.policy_type}, got {got_type}")
    got_indicators = {str(i.get("code")) for i in line.get("indicators") or []}
    for code in expect.indicators:
        if code.value not in got_indicators:
            problems.append(f"indicator {code.value} missing (got {sorted(got_indicators)})")
    addresses = _addresses(line)
    got_types = {str(t) for a in addresses.values() for t in a.get("result_types") or []}
    for result_type in expect.result_types:
        if result_type.value not in got_types:
            problems.append(f"result type {result_type.value} missing (got {sorted(got_types)})")
    for ip, status in expect.starttls.items():
        got = addresses.get(ip, {}).get("starttls")
        if got != status.value:
            problems.append(f"{ip}: starttls expected {status.value}, got {got}")
    for ip, prefix in expect.not_testable.items():
        address = addresses.get(ip, {})
        reason = str(address.get("reason") or "")
        if address.get("status") != "not-testable" or not reason.startswith(prefix):
            problems.append(
                f"{ip}: expected not-testable {prefix}..., got {address.get('status')} {reason}"
            )
    return problems
