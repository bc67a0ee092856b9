"""The lab DNS server queried by dnspython over real UDP and TCP on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock

from scanner.lab import Lab, open_lab, parse_world
from scanner.lab.dns_server import Responder, Zone

STEP = 3.0

# Records for the shapes the demo world does not need.
SHAPES_WORLD = """
[dns]
"chain-a.shapes.example" = { cname = "chain-b.shapes.example" }
"chain-b.shapes.example" = { cname = "host.shapes.example" }
"dangling.shapes.example" = { cname = "nowhere.shapes.example" }
"loop-a.shapes.example" = { cname = "loop-b.shapes.example" }
"loop-b.shapes.example" = { cname = "loop-a.shapes.example" }
"host.shapes.example" = { a = ["127.0.1.1", "127.0.1.2"], aaaa = ["::1"] }
"big.shapes.example" = { txt = [
    "one record made of several character-strings because it is long: %s",
    "another long record to push the answer over the 512-byte UDP limit: %s",
    "and a third, for good measure, so that truncation surely happens: %s",
] }
"deep.under.sub.shapes.example" = { a = ["127.0.1.3"] }
"timeout.shapes.example" = { timeout = true }
"servfail.shapes.example" = { servfail = true }

[domains."shapes.example"]
dns."@" = { mx = ["10 mx1.shapes.example", "20 mx2.shapes.example"], txt = ["v=spf1 -all"] }
""".replace("%s", "x" * 150)
SHAPES = parse_world(SHAPES_WORLD)  # immutable; every lab and responder below serves it


@pytest.fixture
async def shapes_lab(tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(SHAPES, workdir=tmp_path) as lab:
        yield lab


async def query(
    lab: Lab, name: str, rdtype: str, *, tcp: bool = False, payload: int | None = None
) -> dns.message.Message:
    request = dns.message.make_query(name, rdtype)
    if payload is not None:
        request.use_edns(0, payload=payload)
    host, port = lab.resolver
    with trio.fail_after(STEP):
        if tcp:
            return await dns.asyncquery.tcp(request, host, port=port)
        return await dns.asyncquery.udp(request, host, port=port)


def texts(response: dns.message.Message, rdtype: str) -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return sorted(
        rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset
    )


# ---------------------------------------------------------------- demo world shapes


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        pytest.param("mx.testing-ready.example", "A", ["127.0.1.1"], id="a"),
        pytest.param("testing-ready.example", "MX", ["10 mx.testing-ready.example."], id="mx"),
        pytest.param("nullmx.example", "MX", ["0 ."], id="null-mx"),
        pytest.param(
            "_mta-sts.enforce-ready.example",
            "TXT",
            ['"v=STSv1; " "id=enforce2024"'],
            id="multi-string-txt",
        ),
        pytest.param("_mta-sts.testing-ready.example", "TXT", ['"v=STSv1; id=20240601"'], id="txt"),
        pytest.param(
            "_mta-sts.two-records.example",
            "TXT",
            ['"v=STSv1; id=first"', '"v=STSv1; id=second"'],
            id="two-txt",
        ),
        pytest.param("implicit-mx.example", "A", ["127.0.1.8"], id="implicit-mx-a"),
        pytest.param("mta-sts.testing-ready.example", "A", ["127.0.2.1"], id="policy-host-a"),
        pytest.param("MX.Testing-Ready.Example.", "A", ["127.0.1.1"], id="case-insensitive"),
    ],
)
async def test_answers(
    demo_lab: Lab, name: str, rdtype: str, expected: list[str], tcp: bool
) -> None:
    response = await query(demo_lab, name, rdtype, tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert texts(response, rdtype) == expected


async def test_cname_record_is_followed_in_the_answer(demo_lab: Lab) -> None:
    response = await query(demo_lab, "_mta-sts.cname-sts.example", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert texts(response, "CNAME") == ["_mta-sts.sts-provider.example."]
    assert texts(response, "TXT") == ['"v=STSv1; id=provider2024"']


async def test_cname_query_returns_only_the_cname(demo_lab: Lab) -> None:
    response = await query(demo_lab, "_mta-sts.cname-sts.example", "CNAME")
    assert texts(response, "CNAME") == ["_mta-sts.sts-provider.example."]
    assert texts(response, "TXT") == []


@pytest.mark.parametrize(
    ("name", "rdtype", "rcode", "soa"),
    [
        pytest.param("no-such-name.example", "A", dns.rcode.NXDOMAIN, True, id="nxdomain"),
        pytest.param(
            "_mta-sts.no-sts.example", "TXT", dns.rcode.NXDOMAIN, True, id="no-sts-record"
        ),
        pytest.param("testing-ready.example", "A", dns.rcode.NOERROR, True, id="nodata"),
        pytest.param(
            "_tls.testing-ready.example", "TXT", dns.rcode.NOERROR, True, id="empty-non-terminal"
        ),
        pytest.param("dns-servfail.example", "MX", dns.rcode.SERVFAIL, False, id="servfail"),
        pytest.param(
            "mta-sts.policy-no-host.example", "A", dns.rcode.NXDOMAIN, True, id="no-policy-host"
        ),
    ],
)
async def test_negative_answers(
    demo_lab: Lab, name: str, rdtype: str, rcode: dns.rcode.Rcode, soa: bool
) -> None:
    response = await query(demo_lab, name, rdtype)
    assert response.rcode() == rcode
    assert response.answer == []
    has_soa = any(rrset.rdtype == dns.rdatatype.SOA for rrset in response.authority)
    assert has_soa is soa


# ---------------------------------------------------------------- special shapes


async def test_cname_chain(shapes_lab: Lab) -> None:
    response = await query(shapes_lab, "chain-a.shapes.example", "A")
    assert [rrset.rdtype for rrset in response.answer] == [
        dns.rdatatype.CNAME,
        dns.rdatatype.CNAME,
        dns.rdatatype.A,
    ]
    assert texts(response, "A") == ["127.0.1.1", "127.0.1.2"]


@pytest.mark.parametrize(
    ("name", "rcode"),
    [
        pytest.param("chain-b.shapes.example", dns.rcode.NOERROR, id="ends-at-data"),
        pytest.param("dangling.shapes.example", dns.rcode.NXDOMAIN, id="dangling"),
        pytest.param("loop-a.shapes.example", dns.rcode.SERVFAIL, id="loop"),
    ],
)
async def test_cname_chain_ends(shapes_lab: Lab, name: str, rcode: dns.rcode.Rcode) -> None:
    response = await query(shapes_lab, name, "A")
    assert response.rcode() == rcode


async def test_aaaa(shapes_lab: Lab) -> None:
    response = await query(shapes_lab, "host.shapes.example", "AAAA")
    assert texts(response, "AAAA") == ["::1"]


async def test_empty_non_terminal_several_levels_up(shapes_lab: Lab) -> None:
    for name, rcode in (
        ("under.sub.shapes.example", dns.rcode.NOERROR),
        ("sub.shapes.example", dns.rcode.NOERROR),
        ("other.sub.shapes.example", dns.rcode.NXDOMAIN),
    ):
        assert (await query(shapes_lab, name, "A")).rcode() == rcode, name


@pytest.mark.parametrize(
    ("payload", "truncated"),
    [
        pytest.param(None, True, id="no-edns-512"),
        pytest.param(512, True, id="edns-512"),
        pytest.param(4096, False, id="edns-4096"),
    ],
)
async def test_udp_truncation(shapes_lab: Lab, payload: int | None, truncated: bool) -> None:
    response = await query(shapes_lab, "big.shapes.example", "TXT", payload=payload)
    assert bool(response.flags & dns.flags.TC) is truncated
    assert (response.answer == []) is truncated


async def test_tcp_carries_what_udp_truncates(shapes_lab: Lab) -> None:
    response = await query(shapes_lab, "big.shapes.example", "TXT", tcp=True)
    assert not response.flags & dns.flags.TC
    assert len(texts(response, "TXT")) == 3


async def test_resolver_falls_back_to_tcp(shapes_lab: Lab) -> None:
    resolver = dns.asyncresolver.Resolver(configure=False)
    host, port = shapes_lab.resolver
    resolver.nameservers = [host]
    resolver.port = port
    resolver.use_edns(-1)
    tcp_before = shapes_lab.dns.queries["tcp"]
    with trio.fail_after(STEP):
        answer = await resolver.resolve("big.shapes.example", "TXT", lifetime=STEP)
    assert len(answer) == 3
    assert shapes_lab.dns.queries["tcp"] == tcp_before + 1


async def test_timeout_name_is_never_answered(shapes_lab: Lab, loopback_clock: MockClock) -> None:
    host, port = shapes_lab.resolver
    request = dns.message.make_query("timeout.shapes.example", "A")
    with pytest.raises(dns.exception.Timeout):
        await dns.asyncquery.udp(request, host, port=port, timeout=0.3)
    assert shapes_lab.dns.queries["udp"] == 1  # it arrived, and was dropped


async def test_timeout_name_does_not_block_other_names(
    shapes_lab: Lab, loopback_clock: MockClock
) -> None:
    host, port = shapes_lab.resolver
    with trio.move_on_after(0.2) as unanswered:
        await dns.asyncquery.udp(
            dns.message.make_query("timeout.shapes.example", "A"), host, port=port
        )
    assert unanswered.cancelled_caught
    response = await query(shapes_lab, "host.shapes.example", "A")
    assert response.rcode() == dns.rcode.NOERROR


async def test_servfail_name_via_resolver(shapes_lab: Lab) -> None:
    resolver = dns.asyncresolver.Resolver(configure=False)
    host, port = shapes_lab.resolver
    resolver.nameservers = [host]
    resolver.port = port
    with trio.fail_after(STEP), pytest.raises(dns.resolver.NoNameservers):
        await resolver.resolve("servfail.shapes.example", "A", lifetime=STEP)


async def test_mx_and_txt_at_apex(shapes_lab: Lab) -> None:
    response = await query(shapes_lab, "shapes.example", "MX")
    assert texts(response, "MX") == ["10 mx1.shapes.example.", "20 mx2.shapes.example."]
    response = await query(shapes_lab, "shapes.example", "ANY")
    assert texts(response, "TXT") == ['"v=spf1 -all"']


# ---------------------------------------------------------------- the responder as a parser


@given(st.binary(max_size=600))
def test_responder_survives_arbitrary_bytes(wire: bytes) -> None:
    responder = Responder(Zone(SHAPES))
    reply = responder.reply(wire, transport="udp")
    if reply is not None:
        message = dns.message.from_wire(reply, question_only=True)
        assert message.flags & dns.flags.QR


@given(st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True))
def test_every_name_gets_a_well_formed_reply(name: str) -> None:
    responder = Responder(Zone(SHAPES))
    wire = dns.message.make_query(f"{name}.shapes.example", "A").to_wire()
    reply = responder.reply(wire, transport="udp")
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL)


@given(
    st.sampled_from(["www.shapes.example", "nowhere.shapes.example", "shapes.example"]),
    st.sampled_from(["A", "AAAA", "MX", "TXT"]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
)
def test_a_question_asked_again_gets_the_same_reply_under_its_own_id(
    name: str, rdtype: str, first_id: int, second_id: int
) -> None:
    responder = Responder(Zone(SHAPES))
    query = dns.message.make_query(name, rdtype)
    query.id = first_id
    first = responder.reply(query.to_wire(), transport="udp")
    query.id = second_id
    second = responder.reply(query.to_wire(), transport="udp")
    fresh = Responder(Zone(SHAPES)).reply(query.to_wire(), transport="udp")
    assert first is not None
    assert second is not None
    assert dns.message.from_wire(first).id == first_id
    assert second == fresh  # what a responder asked for the first time says
    assert responder.queries["udp"] == 2
