"""The lab serves hostile text byte for byte: custom greetings, 421 replies and TXT records.

The hostile world (fixtures/world-hostile.toml) puts rich markup, emoji codes,
terminal escapes, bidi overrides, NUL, HTML and formulas where a server or a
record can put them. These tests check only the lab side: the world loads, and
what reaches a client is exactly the UTF-8 of the world's strings. How the
scanner shows that text is tests/test_untrusted.py's business.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest
import trio

from scanner.core.sts import parse_sts_record
from scanner.lab import Lab, SmtpBehaviour, SmtpServer, World, load_world, open_lab, parse_world
from scanner.models import StsRecord
from scanner.untrusted import DEFAULT_LIMIT

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
STEP = 5.0


@pytest.fixture(scope="module")
def hostile_world() -> World:
    return load_world(FIXTURES / "world-hostile.toml")


@pytest.fixture
async def hostile_lab(hostile_world: World, tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(hostile_world, workdir=tmp_path / "lab") as lab:
        yield lab


def expected_reply(code: int, lines: tuple[str, ...]) -> bytes:
    """RFC 5321 §4.2.1 framing of `lines`, written out independently of the lab."""
    framed = [f"{code}-{text}\r\n" for text in lines[:-1]] + [f"{code} {lines[-1]}\r\n"]
    return "".join(framed).encode("utf-8")


GREETING_CODES = {SmtpBehaviour.GREETING_421: 421, SmtpBehaviour.GREETING_554: 554}


def greeting_of(server: SmtpServer) -> bytes:
    assert server.greeting is not None
    return expected_reply(GREETING_CODES.get(server.behaviour, 220), server.greeting)


async def read_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data


async def read_to_end(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


# ---------------------------------------------------------------- the world file


def test_hostile_world_loads_with_an_expectation_per_domain(hostile_world: World) -> None:
    assert hostile_world.domains
    assert all(domain.expect is not None for domain in hostile_world.domains)
    assert all(server.address.startswith("127.0.6.") for server in hostile_world.servers)
    assert all(host.address.startswith("127.0.7.") for host in hostile_world.policy_hosts)
    behaviours = {s.behaviour for s in hostile_world.servers if s.greeting is not None}
    assert {SmtpBehaviour.GOOD, SmtpBehaviour.GREETING_421} <= behaviours


def test_hostile_world_carries_every_kind_of_hostile_text(hostile_world: World) -> None:
    greetings = [line for s in hostile_world.servers for line in s.greeting or ()]
    records = ["".join(strings) for node in hostile_world.records.values() for strings in node.txt]
    policies = [host.body for host in hostile_world.policy_hosts]
    everything = "\n".join(greetings + records + policies)
    for sample in (
        "[/bold]",
        "[bold green]Ready for mode: enforce[/]",
        "[link=https://evil.example]x[/link]",
        ":white_check_mark:",
        "\x1b]0;",  # OSC: window title
        "\x1b[2J",  # CSI: clear screen
        "\x1b]8;;",  # OSC 8: hyperlink (and a half-open one)
        "\x9b",  # C1 CSI
        "\u202e",  # bidi override
        "\x00",
        "<img src=x onerror=alert(1)>",
        "=HYPERLINK(",
    ):
        assert sample in everything, sample
    assert max(len(line) for line in greetings) > 2 * DEFAULT_LIMIT
    assert any(
        s.behaviour is SmtpBehaviour.GREETING_421 and "\x1b" in "".join(s.greeting or ())
        for s in hostile_world.servers
    )


def test_markup_in_the_sts_record_is_legal(hostile_world: World) -> None:
    """RFC 8461 §3.1 allows brackets and slashes in an extension value: the record is valid."""
    (strings,) = hostile_world.records["_mta-sts.markup-record.hostile.example"].txt
    record = "".join(strings)
    assert "ext=[/bold][red]x[/red]" in record
    assert isinstance(parse_sts_record(record), StsRecord)


# ---------------------------------------------------------------- what the servers send


async def test_every_custom_greeting_arrives_byte_exact(hostile_lab: Lab) -> None:
    servers = [s for s in hostile_lab.world.servers if s.greeting is not None]
    assert servers
    for server in servers:
        expected = greeting_of(server)
        with trio.fail_after(STEP):
            stream = await trio.open_tcp_stream(server.address, hostile_lab.smtp_port)
            async with stream:
                if server.behaviour is SmtpBehaviour.GREETING_421:
                    # RFC 5321 §3.1: the 421 is all there is; the server closes.
                    assert await read_to_end(stream) == expected, server.address
                else:
                    assert await read_exactly(stream, len(expected)) == expected, server.address


async def test_a_custom_greeting_leaves_the_dialogue_intact(hostile_lab: Lab) -> None:
    server = next(
        s for s in hostile_lab.world.servers if s.greeting and s.behaviour is SmtpBehaviour.GOOD
    )
    expected = greeting_of(server)
    with trio.fail_after(STEP):
        stream = await trio.open_tcp_stream(server.address, hostile_lab.smtp_port)
        async with stream:
            assert await read_exactly(stream, len(expected)) == expected
            await stream.send_all(b"EHLO probe.test\r\n")
            ehlo = b""
            while b"\r\n250 " not in ehlo:
                ehlo += await stream.receive_some(65536)
            assert b"\r\n250-STARTTLS\r\n" in ehlo
            await stream.send_all(b"STARTTLS\r\n")
            assert (await stream.receive_some(65536)).startswith(b"220 ")


async def test_every_txt_record_arrives_byte_exact(hostile_lab: Lab) -> None:
    names = [node for node in hostile_lab.world.records.values() if node.txt]
    assert names
    host, port = hostile_lab.resolver
    for node in names:
        query = dns.message.make_query(node.name, "TXT")
        with trio.fail_after(STEP):
            response = await dns.asyncquery.tcp(query, host, port=port)
        (rrset,) = response.answer
        assert rrset.rdtype == dns.rdatatype.TXT
        got = sorted(tuple(rdata.strings) for rdata in rrset)
        want = sorted(tuple(s.encode("utf-8") for s in strings) for strings in node.txt)
        assert got == want, node.name


# ---------------------------------------------------------------- the greeting key, served

GREETINGS_WORLD = """
[domains."greet.example"]
dns."@" = { mx = ["10 a.greet.example", "20 b.greet.example", "30 c.greet.example", "40 d.greet.example"] }
servers = [
    { hostname = "a.greet.example", address = "127.0.1.1", greeting = "plain \\u001b[31mred" },
    { hostname = "b.greet.example", address = "127.0.1.2", behaviour = "good-multiline-greeting", greeting = ["one", "two"] },
    { hostname = "c.greet.example", address = "127.0.1.3", behaviour = "greeting-554", greeting = "5.3.2 \\u202egone" },
    { hostname = "d.greet.example", address = "127.0.1.4", behaviour = "greeting-421" },
]
"""


@pytest.fixture
async def greetings_lab(tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(parse_world(GREETINGS_WORLD), workdir=tmp_path / "lab") as lab:
        yield lab


@pytest.mark.parametrize(
    ("address", "expected", "closes"),
    [
        pytest.param("127.0.1.1", b"220 plain \x1b[31mred\r\n", False, id="one-line-220"),
        pytest.param("127.0.1.2", b"220-one\r\n220 two\r\n", False, id="multi-line-220"),
        pytest.param("127.0.1.3", "554 5.3.2 \u202egone\r\n".encode(), False, id="554"),
        # The twin: without the key, the behaviour's own text.
        pytest.param(
            "127.0.1.4",
            b"421 4.3.2 d.greet.example busy, try again later\r\n",
            True,
            id="default-421",
        ),
    ],
)
async def test_greeting_key_sets_the_text_after_the_code(
    greetings_lab: Lab, address: str, expected: bytes, closes: bool
) -> None:
    with trio.fail_after(STEP):
        stream = await trio.open_tcp_stream(address, greetings_lab.smtp_port)
        async with stream:
            if closes:
                assert await read_to_end(stream) == expected
                return
            assert await read_exactly(stream, len(expected)) == expected
            await stream.send_all(b"QUIT\r\n")
            assert (await stream.receive_some(65536)).startswith(b"221 ")
