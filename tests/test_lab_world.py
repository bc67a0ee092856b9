"""The world loader: the demo world, the format's rules and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.lab import (
    CertificateKind,
    PolicyBehaviour,
    SmtpBehaviour,
    World,
    WorldError,
    demo_world_path,
    load_world,
    parse_world,
)
from scanner.models import DaneStatus, IndicatorCode, ResultType, StartTlsStatus

MINIMAL = """
[domains."ok.example"]
dns."@" = { mx = ["10 mx.ok.example"] }
servers = [{ hostname = "mx.ok.example", address = "127.0.1.1" }]
"""


# ---------------------------------------------------------------- the demo world


def test_demo_world_path_is_in_the_source_tree() -> None:
    path = demo_world_path()
    assert path.name == "demo-world.toml"
    assert path.is_file()


def test_demo_world_covers_every_behaviour(demo_world: World) -> None:
    smtp = {server.behaviour for server in demo_world.servers}
    certificates = {server.certificate for server in demo_world.servers}
    policies = {host.behaviour for host in demo_world.policy_hosts}
    assert set(SmtpBehaviour) - smtp == set()
    assert set(CertificateKind) - certificates == set()
    assert set(PolicyBehaviour) - policies == set()


def test_demo_world_expectations_cover_the_vocabulary(demo_world: World) -> None:
    expectations = [d.expect for d in demo_world.domains if d.expect is not None]
    assert len(expectations) == len(demo_world.domains)
    indicators = {code for e in expectations for code in e.indicators}
    result_types = {t for e in expectations for t in e.result_types}
    result_types |= {e.policy_error for e in expectations if e.policy_error is not None}
    starttls = {status for e in expectations for status in e.starttls.values()}
    # DANE's words need a validating resolver, which the demo has not: the DANE world has them.
    assert set(IndicatorCode) - indicators == DANE_INDICATORS
    assert set(ResultType) - result_types == DANE_RESULT_TYPES
    assert set(StartTlsStatus) - starttls == set()
    ready = [d.name for d in demo_world.domains if d.expect and d.expect.enforce_ready]
    assert "testing-ready.example" in ready
    assert "enforce-ready.example" in ready


DANE_INDICATORS = {IndicatorCode.DANE_MISMATCH, IndicatorCode.DNSSEC_BOGUS}
DANE_RESULT_TYPES = {ResultType.TLSA_INVALID, ResultType.DNSSEC_INVALID}


def test_dane_world_expectations_cover_the_dane_vocabulary() -> None:
    world = load_world(Path(__file__).resolve().parent.parent / "fixtures" / "world-dane.toml")
    expectations = [d.expect for d in world.domains if d.expect is not None]
    assert len(expectations) == len(world.domains)
    assert {code for e in expectations for code in e.indicators} >= DANE_INDICATORS
    assert {t for e in expectations for t in e.result_types} >= DANE_RESULT_TYPES
    assert set(DaneStatus) - {s for e in expectations for s in e.dane.values()} == {
        DaneStatus.UNVALIDATED  # what every address gets without a validating resolver
    }


def test_demo_world_addresses_follow_the_convention(demo_world: World) -> None:
    assert all(s.address.startswith("127.0.1.") for s in demo_world.servers)
    assert all(h.address.startswith("127.0.2.") for h in demo_world.policy_hosts)
    addresses = [h.address for h in demo_world.policy_hosts]
    assert len(addresses) == len(set(addresses))


def test_demo_world_keeps_an_invalid_name_verbatim(demo_world: World) -> None:
    domain = demo_world.domain("invalid..example")
    assert domain.expect is not None
    assert domain.expect.error == "invalid-domain"
    assert "invalid..example" in demo_world.domain_names


# ---------------------------------------------------------------- what the loader derives


def test_servers_get_automatic_address_records() -> None:
    world = parse_world(MINIMAL)
    assert world.records["mx.ok.example"].a == ("127.0.1.1",)
    assert world.records["ok.example"].mx[0].host == "mx.ok.example"


def test_policy_host_gets_an_a_record_unless_named_in_dns() -> None:
    base = MINIMAL + 'policy = { address = "127.0.2.1", body = "x" }\n'
    assert parse_world(base).records["mta-sts.ok.example"].a == ("127.0.2.1",)
    delegated = base.replace(
        'dns."@"', 'dns."mta-sts" = { cname = "policy.provider.example" }\ndns."@"'
    )
    records = parse_world(delegated).records["mta-sts.ok.example"]
    assert records.a == ()
    assert records.cname == "policy.provider.example"


def test_servers_sharing_an_address_merge_their_hostnames() -> None:
    text = (
        MINIMAL
        + """
[[servers]]
hostnames = ["mx.other.example", "MX.OK.example."]
address = "127.0.1.1"
"""
    )
    world = parse_world(text)
    assert len(world.servers) == 1
    assert set(world.servers[0].hostnames) == {"mx.ok.example", "mx.other.example"}


@pytest.mark.parametrize(
    ("second_address", "a", "aaaa", "server_count"),
    [
        pytest.param("127.0.1.2", ("127.0.1.1", "127.0.1.2"), (), 2, id="two-a-records"),
        pytest.param("::1", ("127.0.1.1",), ("::1",), 2, id="a-and-aaaa"),
        pytest.param("127.0.1.1", ("127.0.1.1",), (), 1, id="same-address-twin"),
    ],
)
def test_one_hostname_on_several_servers_gets_every_address(
    second_address: str, a: tuple[str, ...], aaaa: tuple[str, ...], server_count: int
) -> None:
    text = (
        MINIMAL
        + f"""
[[servers]]
hostname = "mx.ok.example"
address = "{second_address}"
"""
    )
    world = parse_world(text)
    records = world.records["mx.ok.example"]
    assert (sorted(records.a), records.aaaa) == (list(a), aaaa)
    assert len(world.servers) == server_count
    assert all(server.hostnames == ("mx.ok.example",) for server in world.servers)


def test_one_hostname_may_differ_in_certificate_per_address() -> None:
    text = MINIMAL.replace(
        "servers = [",
        'servers = [{ hostname = "mx.ok.example", address = "127.0.1.2", certificate = "expired" }, ',
    )
    world = parse_world(text)
    assert sorted(world.records["mx.ok.example"].a) == ["127.0.1.1", "127.0.1.2"]
    certificates = {s.address: s.certificate for s in world.servers}
    assert certificates == {"127.0.1.1": CertificateKind.GOOD, "127.0.1.2": CertificateKind.EXPIRED}
    # The twin: one address cannot hold both certificates.
    clash = text.replace('"127.0.1.2"', '"127.0.1.1"')
    with pytest.raises(WorldError, match="servers sharing an address must behave alike"):
        parse_world(clash)


def test_demo_world_has_a_host_with_a_good_and_an_expired_address(demo_world: World) -> None:
    records = demo_world.records["mx.split-mx.example"]
    assert len(records.a) == 2
    servers = [demo_world.server(ip) for ip in records.a]
    kinds = {server.certificate for server in servers if server is not None}
    assert kinds == {CertificateKind.GOOD, CertificateKind.EXPIRED}


def test_crlf_line_endings() -> None:
    text = (
        MINIMAL
        + 'policy = { address = "127.0.2.1", body = "a\\nb\\r\\nc\\n", line_endings = "crlf" }\n'
    )
    policy = parse_world(text).domain("ok.example").policy
    assert policy is not None
    assert policy.body == "a\r\nb\r\nc\r\n"


def test_owner_names() -> None:
    text = MINIMAL.replace(
        'dns."@"',
        'dns."sub" = { a = ["127.0.9.1"] }\ndns."abs.other.example." = { a = ["127.0.9.2"] }\ndns."@"',
    )
    records = parse_world(text).records
    assert records["sub.ok.example"].a == ("127.0.9.1",)
    assert records["abs.other.example"].a == ("127.0.9.2",)


def test_load_world_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    world = load_world(path)
    assert world.source == str(path)
    assert world.domain_names == ("ok.example",)


# ---------------------------------------------------------------- custom greetings


def with_greeting(greeting: str, behaviour: str = "good") -> str:
    """MINIMAL with one server attribute set; `greeting` is TOML source."""
    return MINIMAL.replace(" }]", f', behaviour = "{behaviour}", greeting = {greeting} }}]')


def toml_string(text: str) -> str:
    """A TOML basic string holding exactly `text`, every character escaped."""
    return '"' + "".join(f"\\U{ord(c):08x}" for c in text) + '"'


@pytest.mark.parametrize(
    ("greeting", "behaviour", "lines"),
    [
        pytest.param(None, "good", None, id="default-twin"),
        pytest.param('"hello"', "good", ("hello",), id="one-line"),
        pytest.param('["a", "b"]', "good-multiline-greeting", ("a", "b"), id="lines"),
        pytest.param('"4.3.2 [bold]x[/]"', "greeting-421", ("4.3.2 [bold]x[/]",), id="busy"),
        pytest.param('"5.3.2 no"', "greeting-554", ("5.3.2 no",), id="no-service"),
        pytest.param(
            '"\\u001b]0;t\\u0007 \\u202e \\u0000 \\u009b"',
            "good",
            ("\x1b]0;t\x07 \u202e \x00 \x9b",),
            id="controls-verbatim",
        ),
        pytest.param('""', "good", ("",), id="empty-text"),
    ],
)
def test_greeting_key(greeting: str | None, behaviour: str, lines: tuple[str, ...] | None) -> None:
    text = with_greeting(greeting, behaviour) if greeting is not None else MINIMAL
    (server,) = parse_world(text).servers
    assert server.greeting == lines


@pytest.mark.parametrize(
    ("greeting", "behaviour", "message"),
    [
        pytest.param('"a\\r\\nb"', "good", "contains CR or LF", id="crlf"),
        pytest.param('["a", "b\\n"]', "good", "contains CR or LF", id="lf-in-a-line"),
        pytest.param("[]", "good", "at least one line", id="no-lines"),
        pytest.param("42", "good", "expected a string", id="not-text"),
        pytest.param('["a", 1]', "good", "expected a string", id="not-text-line"),
        pytest.param('"hi"', "silent", "never greets", id="silent"),
        pytest.param('"hi"', "closed", "never greets", id="closed"),
    ],
)
def test_greeting_key_errors(greeting: str, behaviour: str, message: str) -> None:
    with pytest.raises(WorldError, match=message) as raised:
        parse_world(with_greeting(greeting, behaviour), source="w.toml")
    assert "servers[0].greeting" in str(raised.value)


def test_servers_sharing_an_address_must_greet_alike() -> None:
    shared = '\n[[servers]]\nhostname = "mx.b.example"\naddress = "127.0.1.1"\n'
    same = with_greeting('"hi"') + shared + 'greeting = "hi"\n'
    assert set(parse_world(same).servers[0].hostnames) == {"mx.ok.example", "mx.b.example"}
    with pytest.raises(WorldError, match="must greet alike"):
        parse_world(with_greeting('"hi"') + shared + 'greeting = "hello"\n')
    with pytest.raises(WorldError, match="must greet alike"):
        parse_world(with_greeting('"hi"') + shared)


@given(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=300))
def test_any_greeting_text_but_line_ends_is_kept_verbatim(text: str) -> None:
    (server,) = parse_world(with_greeting(toml_string(text))).servers
    assert server.greeting == (text,)


# ---------------------------------------------------------------- error messages


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(MINIMAL, None, id="valid-twin"),
        pytest.param("[domains", "not valid TOML", id="bad-toml"),
        pytest.param("", "no [domains] defined", id="empty"),
        pytest.param(MINIMAL + "colour = 1\n", "unknown key colour", id="unknown-domain-key"),
        pytest.param(
            MINIMAL.replace('address = "127.0.1.1"', 'address = "192.0.2.1"'),
            "not a loopback address",
            id="public-address",
        ),
        pytest.param(
            MINIMAL.replace('address = "127.0.1.1"', 'address = "nope"'),
            "'nope' is not an IP address",
            id="bad-address",
        ),
        pytest.param(
            MINIMAL.replace(" }]", ', behaviour = "grumpy" }]'),
            "unknown value 'grumpy'",
            id="unknown-behaviour",
        ),
        pytest.param(
            MINIMAL.replace(" }]", ', certificate = "shiny" }]'),
            "servers[0].certificate: unknown value 'shiny'",
            id="unknown-certificate",
        ),
        pytest.param(
            MINIMAL.replace('"10 mx.ok.example"', '"ten mx.ok.example"'),
            "is not 'PREFERENCE HOST'",
            id="bad-mx",
        ),
        pytest.param(
            MINIMAL.replace('mx = ["10 mx.ok.example"]', 'txt = [["' + "x" * 256 + '"]]'),
            "longer than 255 bytes",
            id="long-character-string",
        ),
        pytest.param(
            MINIMAL.replace('mx = ["10 mx.ok.example"]', 'cname = "x.example", a = ["127.0.0.9"]'),
            "CNAME cannot sit beside other records",
            id="cname-and-data",
        ),
        pytest.param(
            MINIMAL + 'expect = { policy_type = "sts" }\n',
            "enforce_ready is required",
            id="expect-needs-ready",
        ),
        pytest.param(
            MINIMAL + 'expect = { enforce_ready = false, indicators = ["starttls-gone"] }\n',
            "unknown value 'starttls-gone'",
            id="bad-indicator",
        ),
        pytest.param(
            MINIMAL + 'expect = { enforce_ready = false, policy_error = "certificate-expired" }\n',
            "policy_error: unknown value 'certificate-expired'",
            id="policy-error-not-policy-level",
        ),
        pytest.param(
            MINIMAL
            + 'expect = { enforce_ready = false, starttls = { "127.0.1.99" = "offered" } }\n',
            "127.0.1.99 is not the address of any server",
            id="expect-unknown-ip",
        ),
        pytest.param(
            MINIMAL + 'expect = { enforce_ready = false, starttls = { "127.0.1.1" = "gone" } }\n',
            "unknown value 'gone'",
            id="bad-starttls-status",
        ),
        pytest.param(
            MINIMAL + 'policy = { address = "127.0.2.1" }\n',
            "body is required for behaviour good",
            id="policy-without-body",
        ),
        pytest.param(
            MINIMAL
            + '[[servers]]\nhostname = "mx.b.example"\naddress = "127.0.1.1"\nbehaviour = "silent"\n',
            "servers sharing an address must behave alike",
            id="address-conflict",
        ),
        pytest.param(
            '[domains."bad..example"]\ndns."@" = { a = ["127.0.0.1"] }\n',
            "not a valid DNS name",
            id="records-on-invalid-name",
        ),
        pytest.param(
            MINIMAL.replace('hostname = "mx.ok.example", ', ""),
            "give exactly one of hostname and hostnames",
            id="server-without-hostname",
        ),
    ],
)
def test_world_errors(text: str, message: str | None) -> None:
    if message is None:
        parse_world(text, source="w.toml")
        return
    with pytest.raises(WorldError) as raised:
        parse_world(text, source="w.toml")
    assert str(raised.value).startswith("w.toml: ")
    assert message in str(raised.value)


def test_missing_file_error(tmp_path: Path) -> None:
    with pytest.raises(WorldError, match="cannot read world file"):
        load_world(tmp_path / "absent.toml")


# ---------------------------------------------------------------- property tests


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
        max_size=900,
    )
)
def test_long_txt_values_split_into_character_strings(value: str) -> None:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    world = parse_world(MINIMAL.replace('mx = ["10 mx.ok.example"]', f'txt = ["{escaped}"]'))
    (strings,) = world.records["ok.example"].txt
    assert "".join(strings) == value
    assert all(len(s.encode()) <= 255 for s in strings)
    assert all(strings[:-1])


@given(st.integers(min_value=0, max_value=70000), st.sampled_from(["mx.a.example", "."]))
def test_mx_preferences(preference: int, host: str) -> None:
    text = MINIMAL.replace('"10 mx.ok.example"', f'"{preference} {host}"')
    if preference > 65535:
        with pytest.raises(WorldError, match="PREFERENCE HOST"):
            parse_world(text)
        return
    (mx,) = parse_world(text).records["ok.example"].mx
    assert (mx.preference, mx.host) == (preference, host)
