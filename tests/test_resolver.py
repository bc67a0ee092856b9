"""The DNS client against the fixture lab's authoritative server: every status and record shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import dns.exception
import dns.resolver
import pytest
import trio
from trio.testing import MockClock

from scanner.lab import Lab, World, open_lab, parse_world
from scanner.models import DnsStatus, MxRecord
from scanner.net.resolver import Nameserver, Resolver, _status_of

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
] }

[domains."example.test"]
expect = { enforce_ready = false }
""".replace("LONG_A", "a" * 200).replace("LONG_B", "b" * 200).replace("LONG_C", "c" * 200)


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
    ("error", "status"),
    [
        pytest.param(
            dns.resolver.LifetimeTimeout(timeout=1.0, errors=[]), DnsStatus.TIMEOUT, id="lifetime"
        ),
        pytest.param(dns.resolver.NXDOMAIN(), DnsStatus.NXDOMAIN, id="nxdomain"),
        pytest.param(dns.resolver.NoAnswer(), DnsStatus.NODATA, id="no-answer"),
        pytest.param(dns.resolver.NoNameservers(), DnsStatus.SERVFAIL, id="no-nameservers"),
        pytest.param(dns.exception.FormError(), DnsStatus.ERROR, id="other-dns-error"),
    ],
)
def test_dnspython_errors_map_to_statuses(error: Exception, status: DnsStatus) -> None:
    """The mapping, including dnspython's own lifetime expiry.

    Against the lab that expiry races the resolver's trio deadline (both are the
    timeout); on `loopback_clock` the trio deadline always wins, so the table holds it.
    """
    assert _status_of(error)[0] is status


async def test_multi_string_txt_joined_without_separator(lab: Lab) -> None:
    answer = await resolver_for(lab).txt("_mta-sts.example.test")
    assert sorted(answer.records) == ["unrelated record", "v=STSv1; id=multistring"]


async def test_cname_is_followed(lab: Lab) -> None:
    answer = await resolver_for(lab).txt("_mta-sts.delegated.test")
    assert answer.records == ("v=STSv1; id=provider",)


async def test_truncated_udp_answer_is_retried_over_tcp(lab: Lab) -> None:
    answer = await resolver_for(lab).txt("long.test")
    assert sorted(answer.records) == ["a" * 200, "b" * 200, "c" * 200]
    assert lab.dns.queries["tcp"] >= 1


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
