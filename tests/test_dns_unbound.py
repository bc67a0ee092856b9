"""The resolver's DNSSEC statuses against a real validating resolver (unbound) on the signed lab.

The lab serves fixtures/world-dane.toml as a signed tree; unbound validates in front of
it with the lab's trust anchor and RFC 8914 extended errors on. The scripted servers of
tests/test_dns_transport.py play each flag; this is the same code against the real thing.
Skipped (marker `dnssec`) when unbound is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from unbound_lab import NEEDS_UNBOUND, validated_dane_lab

from scanner.lab import Lab
from scanner.models import DnssecStatus, DnsStatus
from scanner.net.resolver import Nameserver, Resolver

pytestmark = NEEDS_UNBOUND


@dataclass(frozen=True)
class Validating:
    lab: Lab
    unbound: tuple[str, int]

    def resolver(self) -> Resolver:
        return Resolver.create([Nameserver(*self.unbound)], timeout=5.0)

    def tlsa_owner(self, host: str) -> str:
        return f"_{self.lab.smtp_port}._tcp.{host}"


@pytest.fixture
async def validating(tmp_path: Path) -> AsyncIterator[Validating]:
    async with validated_dane_lab(tmp_path) as served:
        yield Validating(served.lab, served.unbound)


async def test_unbound_validates_and_the_lab_does_not(validating: Validating) -> None:
    assert await validating.resolver().detect_validation() is True
    lab_resolver = Resolver.create([Nameserver(*validating.lab.resolver)], timeout=5.0)
    assert await lab_resolver.detect_validation() is False


async def test_statuses_from_a_validating_resolver(validating: Validating) -> None:
    resolver = validating.resolver()
    await resolver.detect_validation()

    secure = await resolver.tlsa(validating.tlsa_owner("mx.dane-ee.example"))
    assert (secure.status, secure.dnssec) == (DnsStatus.ANSWER, DnssecStatus.SECURE)
    assert [(r.usage, r.selector, r.matching_type) for r in secure.records] == [(3, 1, 1)]
    assert len(secure.records[0].data) == 32

    insecure = await resolver.tlsa(validating.tlsa_owner("mx.dane-unsigned.example"))
    assert (insecure.status, insecure.dnssec) == (DnsStatus.ANSWER, DnssecStatus.INSECURE)

    none = await resolver.tlsa(validating.tlsa_owner("mx.no-tlsa.example"))
    assert none.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA)
    assert none.dnssec is DnssecStatus.SECURE  # denial of existence, proven

    bogus = await resolver.tlsa(validating.tlsa_owner("mx.dane-bogus.example"))
    assert (bogus.status, bogus.dnssec) == (DnsStatus.SERVFAIL, DnssecStatus.BOGUS)
    assert bogus.records == ()
    # unbound says why (RFC 8914): the TLSA RRset's signatures have expired.
    assert bogus.extended_error is not None
    assert bogus.extended_error.startswith("7 Signature Expired")


async def test_secure_cname_chain_into_a_signed_zone(validating: Validating) -> None:
    resolver = validating.resolver()
    await resolver.detect_validation()
    a, _ = await resolver.addresses("mx.dane-cname.example")
    assert a.status is DnsStatus.ANSWER
    assert a.addresses == ("127.0.11.8",)
    assert a.canonical_name == "mail.provider.example"
    assert a.cname_chain_secure is True
    assert a.dnssec is DnssecStatus.SECURE
    plain, _ = await resolver.addresses("mx.dane-unsigned.example")
    assert plain.canonical_name == "mx.dane-unsigned.example"
    assert plain.dnssec is DnssecStatus.INSECURE
