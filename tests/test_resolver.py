"""The DNS client against the fixture lab's authoritative server: every status and record shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import dns.rcode
import pytest
import trio
from trio.testing import MockClock

from scanner.core.dns_wire import EDNS_PAYLOAD, status_of_rcode
from scanner.lab import Lab, World, open_lab, parse_world
from scanner.models import DnsStatus, MxRecord
from scanner.net.resolver import Nameserver, Resolver

WORLD = """
[dns]
"example.test." = { mx = ["20 mx2.example.test", "10 MX1.Example.Test"], a = ["127.0.5.1"] }
"mx1.example.test." = { a = ["127.0.5.2"], aaaa = ["::1"] }
"_mta-sts.example.test." = { txt = [["v=STSv1; ", "id=multi", "string"], "unrelated record"] }
"_mta-sts.delegated.test." = { cname = "_mta-sts.provider.test" }
"_mta-sts.provider.test." = { txt = ["v=STSv1; id=provider"] }
"nullmx.test." = { mx = ["0 ."] }
"implicit.test." = { a = ["127.0.5.3"] }
"nomail.test." = { txt = ["just text"] }
"broken.test." = { servfail = true }
"stalled.test." = { timeout = true }
"long.test." = { txt = [
    "LONG_A",
    "LONG_B",
    "LONG_C",
    "LONG_D",
    "LONG_E",
    "LONG_F",
    "LONG_G",
] }

[domains."example.test"]
expect = { enforce_ready = false }
"""
LONG_RECORDS = [letter * 200 for letter in "abcdefg"]  # over the EDNS payload we offer
for _letter in "ABCDEFG":
    WORLD = WORLD.replace(f"LONG_{_letter}", _letter.lower() * 200)
assert sum(len(record) for record in LONG_RECORDS) > EDNS_PAYLOAD


@pytest.fixture(scope="module")
def world() -> World:
    return parse_world(WORLD)


@pytest.fixture
async def lab(world: World, tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(world, workdir=tmp_path / "lab") as running:
        yield running


def resolver_for(lab: Lab, *, timeout: float = 2.0, max_in_flight: int = 16) -> Resolver:
    host, port = lab.resolver
    return Resolver.create([Nameserver(host, port)], timeout=timeout, max_in_flight=max_in_flight)


async def test_mx_answer_sorted_and_normalised(lab: Lab) -> None:
    answer = await resolver_for(lab).mx("example.test")
    assert answer.status is DnsStatus.ANSWER
    assert answer.records == (MxRecord(10, "mx1.example.test"), MxRecord(20, "mx2.example.test"))
    assert not answer.null_mx
    assert not answer.implicit


async def test_null_mx(lab: Lab) -> None:
    answer = await resolver_for(lab).mx("nullmx.test")
    assert answer.null_mx
    assert answer.records == ()


async def test_implicit_mx_when_no_mx_but_an_address(lab: Lab) -> None:
    answer = await resolver_for(lab).mx("implicit.test")
    assert answer.implicit
    assert answer.records == (MxRecord(0, "implicit.test"),)


async def test_no_mx_and_no_address_is_nodata_without_implicit_mx(lab: Lab) -> None:
    answer = await resolver_for(lab).mx("nomail.test")
    assert answer.status is DnsStatus.NODATA
    assert answer.records == ()
    assert not answer.implicit


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("_mta-sts.example.test", DnsStatus.ANSWER),
        ("_mta-sts.missing.test", DnsStatus.NXDOMAIN),
        ("mx1.example.test", DnsStatus.NODATA),  # the name exists, without TXT
        ("broken.test", DnsStatus.SERVFAIL),
        ("stalled.test", DnsStatus.TIMEOUT),
    ],
)
async def test_txt_statuses_are_distinguished(
    lab: Lab, name: str, status: DnsStatus, loopback_clock: MockClock
) -> None:
    started = trio.current_time()
    answer = await resolver_for(lab, timeout=1.0).txt(name)
    assert answer.status is status
    assert (answer.records != ()) is (status is DnsStatus.ANSWER)
    # Only the stalled server makes the lookup wait, and then for its one deadline.
    waited = trio.current_time() - started
    assert waited == (pytest.approx(1.0) if status is DnsStatus.TIMEOUT else 0)


@pytest.mark.parametrize(
    ("rcode", "status"),
    [
        pytest.param(dns.rcode.NOERROR, DnsStatus.NODATA, id="noerror-without-answer"),
        pytest.param(dns.rcode.NXDOMAIN, DnsStatus.NXDOMAIN, id="nxdomain"),
        pytest.param(dns.rcode.SERVFAIL, DnsStatus.SERVFAIL, id="servfail"),
        pytest.param(dns.rcode.REFUSED, DnsStatus.REFUSED, id="refused"),
        pytest.param(dns.rcode.FORMERR, DnsStatus.ERROR, id="formerr"),
        pytest.param(dns.rcode.NOTIMP, DnsStatus.ERROR, id="notimp"),
        pytest.param(dns.rcode.YXDOMAIN, DnsStatus.ERROR, id="yxdomain"),
        pytest.param(dns.rcode.BADVERS, DnsStatus.ERROR, id="unexpected"),
    ],
)
def test_rcodes_map_to_statuses(rcode: dns.rcode.Rcode, status: DnsStatus) -> None:
    """The one table from response codes to statuses, for replies without an answer."""
    found, detail = status_of_rcode(rcode)
    assert found is status
    assert detail


async def test_multi_string_txt_joined_without_separator(lab: Lab) -> None:
    answer = await resolver_for(lab).txt("_mta-sts.example.test")
    assert sorted(answer.records) == ["unrelated record", "v=STSv1; id=multistring"]


async def test_cname_is_followed(lab: Lab) -> None:
    answer = await resolver_for(lab).txt("_mta-sts.delegated.test")
    assert answer.records == ("v=STSv1; id=provider",)


async def test_truncated_udp_answer_is_retried_over_tcp(lab: Lab) -> None:
    resolver = resolver_for(lab)
    answer = await resolver.txt("long.test")
    assert sorted(answer.records) == LONG_RECORDS
    assert lab.dns.queries["tcp"] >= 1
    assert resolver.stats.truncations == resolver.stats.tcp_queries == 1


async def test_addresses_a_and_aaaa(lab: Lab) -> None:
    a, aaaa = await resolver_for(lab).addresses("mx1.example.test")
    assert a.addresses == ("127.0.5.2",)
    assert aaaa.addresses == ("::1",)
    a, aaaa = await resolver_for(lab).addresses("mx2.example.test")
    assert a.status is DnsStatus.NXDOMAIN
    assert aaaa.status is DnsStatus.NXDOMAIN


async def test_answers_are_cached_for_the_run(lab: Lab) -> None:
    resolver = resolver_for(lab)
    await resolver.txt("_mta-sts.example.test")
    sent = sum(lab.dns.queries.values())
    again = await resolver.txt("_mta-sts.example.test")
    assert again.status is DnsStatus.ANSWER
    assert sum(lab.dns.queries.values()) == sent  # served from the cache


async def test_a_stalled_server_costs_one_deadline_not_more(
    lab: Lab, loopback_clock: MockClock
) -> None:
    resolver = resolver_for(lab, timeout=0.5)
    started = trio.current_time()
    answer = await resolver.mx("stalled.test")
    assert answer.status is DnsStatus.TIMEOUT
    # Exactly one: no address lookup (a second deadline) after a timed-out MX lookup.
    assert trio.current_time() - started == pytest.approx(0.5)


async def test_lookups_in_flight_are_bounded(lab: Lab, loopback_clock: MockClock) -> None:
    resolver = resolver_for(lab, timeout=0.3, max_in_flight=2)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(resolver.txt, "stalled.test")
    # four stalled lookups, two at a time: exactly two deadlines back to back
    assert trio.current_time() - started == pytest.approx(0.6)


async def test_invalid_name_is_an_error_value(lab: Lab) -> None:
    answer = await resolver_for(lab).txt("a" * 64 + ".test")
    assert answer.status is DnsStatus.ERROR
