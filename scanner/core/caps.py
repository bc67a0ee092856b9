"""Per-domain caps: how many hosts and addresses one domain may make the scanner contact.

A domain owner decides what its MX RRset, its address records and its policy name;
without a bound, one domain could aim the scanner at any number of third-party
addresses. Sending MTAs bound this too (Postfix: `smtp_mx_address_limit` 5,
`smtp_mx_session_limit` 2). The scanner tests more than a sender would try, but not
without limit (docs/output.md#caps).

Every record is read first (the DNS message size bounds them), then ordered the
same way in every scan (MX preference, then name; addresses numerically, IPv4
first), and only then cut, so repeated scans test the same hosts. What lies beyond
a cap is never contacted and is named in an `OverLimit`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from scanner.models import MxRecord, OverLimit

EXAMPLES = 3  # names of cut-off hosts or addresses kept in an OverLimit


@dataclass(frozen=True, slots=True)
class Caps:
    """The limits of one run; `scanner.options` documents each default's reasoning."""

    max_mx_hosts: int = 16
    max_addresses_per_host: int = 8
    max_addresses: int = 32
    max_standby_hosts: int = 8
    max_connections: int = 64  # connection attempts per domain: probes, retries, policy fetch
    max_names_per_address: int = 256  # distinct MX names probed on one address, whole scan


def _over(cap: str, limit: int, skipped: Sequence[str]) -> OverLimit:
    return OverLimit(cap=cap, limit=limit, skipped=len(skipped), examples=tuple(skipped[:EXAMPLES]))


def ordered_mx(records: Sequence[MxRecord]) -> list[MxRecord]:
    """MX records by preference, then name; one entry per host (its best preference)."""
    best: dict[str, MxRecord] = {}
    for record in sorted(records, key=lambda r: (r.preference, r.host)):
        best.setdefault(record.host, record)
    return list(best.values())


def cut_mx(records: Sequence[MxRecord], caps: Caps) -> tuple[list[MxRecord], list[OverLimit]]:
    """The MX hosts to test, in order, and what `--max-mx-hosts` cut off."""
    ordered = ordered_mx(records)
    kept, beyond = ordered[: caps.max_mx_hosts], ordered[caps.max_mx_hosts :]
    over = [_over("--max-mx-hosts", caps.max_mx_hosts, [r.host for r in beyond])] if beyond else []
    return kept, over


def cut_standby(names: Sequence[str], caps: Caps) -> tuple[list[str], list[OverLimit]]:
    """The policy-only hosts to test (sorted by name) and what `--max-standby-hosts` cut off."""
    ordered = sorted(dict.fromkeys(names))
    kept, beyond = ordered[: caps.max_standby_hosts], ordered[caps.max_standby_hosts :]
    over = [_over("--max-standby-hosts", caps.max_standby_hosts, beyond)] if beyond else []
    return kept, over


def ordered_addresses(addresses: Sequence[str]) -> list[str]:
    """Distinct addresses, IPv4 before IPv6, each numerically; text that is no address last."""

    def key(text: str) -> tuple[int, int, str]:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return (2, 0, text)
        return (address.version // 6, int(address), "")

    return sorted(dict.fromkeys(addresses), key=key)


def plan_addresses(
    hosts: Sequence[tuple[str, Sequence[str]]], caps: Caps
) -> tuple[list[list[str]], list[OverLimit]]:
    """The addresses to probe per host, in host order, within both address caps.

    Each host keeps at most `max_addresses_per_host` of its ordered addresses; then,
    host by host in MX order, the domain keeps at most `max_addresses` in all.
    """
    per_host_cut: list[str] = []
    domain_cut: list[str] = []
    plans: list[list[str]] = []
    left = caps.max_addresses
    for hostname, addresses in hosts:
        ordered = ordered_addresses(addresses)
        kept = ordered[: caps.max_addresses_per_host]
        per_host_cut += [f"{hostname} {ip}" for ip in ordered[caps.max_addresses_per_host :]]
        allowed, refused = kept[: max(left, 0)], kept[max(left, 0) :]
        domain_cut += [f"{hostname} {ip}" for ip in refused]
        left -= len(allowed)
        plans.append(allowed)
    over: list[OverLimit] = []
    if per_host_cut:
        over.append(_over("--max-addresses-per-host", caps.max_addresses_per_host, per_host_cut))
    if domain_cut:
        over.append(_over("--max-addresses", caps.max_addresses, domain_cut))
    return plans, over


class ConnectionBudget:
    """Connection attempts one domain may still make (probes, retries, policy fetches)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        """Count one attempt; False (and nothing counted) when the budget is spent."""
        if self.used >= self.limit:
            return False
        self.used += 1
        return True
