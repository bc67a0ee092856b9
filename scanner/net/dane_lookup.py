"""The TLSA lookups of MX hosts (RFC 7672 §2.2.2, §2.2.3), through the run's resolver.

The decisions are pure (`scanner.core.dane.tlsa_plan` names the candidate TLSA base
domains, `tlsa_search_continues` says when the next one is tried); this module only
asks the resolver, candidate after candidate, and records what it said as a
`HostDane`. A resolver that does not validate DNSSEC is not asked at all: its
answers could say nothing about DANE.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from scanner.core.dane import tlsa_owner, tlsa_plan, tlsa_search_continues
from scanner.models import AddressAnswer, DnssecStatus, HostDane
from scanner.net.resolver import Resolver


async def host_dane(
    resolver: Resolver, hostname: str, answers: Sequence[AddressAnswer], *, port: int
) -> HostDane:
    """Where TLSA was looked up for `hostname`, and the decisive answer."""
    if resolver.validating is False:
        return _unvalidated(hostname)
    plan = tlsa_plan(hostname, answers)
    if not plan.candidates:
        return HostDane(base_domain=hostname, address_dnssec=plan.address_dnssec)
    for position, base_domain in enumerate(plan.candidates, start=1):
        owner = tlsa_owner(port, base_domain)
        answer = await resolver.tlsa(owner)
        if position == len(plan.candidates) or not tlsa_search_continues(answer):
            return HostDane(base_domain, plan.address_dnssec, owner, answer)
    raise AssertionError("unreachable: the last candidate always decides")


def _unvalidated(hostname: str) -> HostDane:
    return HostDane(base_domain=hostname, address_dnssec=DnssecStatus.UNVALIDATED)


async def hosts_dane(
    resolver: Resolver,
    hosts: Sequence[tuple[str, Sequence[AddressAnswer]]],
    *,
    port: int,
) -> list[HostDane]:
    """`host_dane` of every (host name, address answers), looked up concurrently, in order."""
    if resolver.validating is False:
        # Nothing is looked up (see `host_dane`): no tasks for it either.
        return [_unvalidated(hostname) for hostname, _ in hosts]
    results: list[HostDane | None] = [None] * len(hosts)

    async def one(index: int, hostname: str, answers: Sequence[AddressAnswer]) -> None:
        results[index] = await host_dane(resolver, hostname, answers, port=port)

    async with trio.open_nursery() as nursery:
        for index, (hostname, answers) in enumerate(hosts):
            nursery.start_soon(one, index, hostname, answers)
    return [result for result in results if result is not None]
