"""The network options: declared once, checked once, derived deadlines named."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from scanner.options import (
    DOMAIN_DEADLINE_MIN,
    NetworkOptions,
    network_options,
    scan_settings,
    usable_host_name,
    valid_ehlo_name,
    with_network_options,
)


@pytest.mark.parametrize(
    ("name", "usable"),
    [
        ("mail.example.net", True),
        ("scanner.research.example.org", True),
        ("localhost", False),  # no dot
        ("host.localdomain", False),
        ("box.local", False),
        ("scanner.invalid", False),
        ("lab.test", False),
        ("mx.example", False),
        ("-bad.example.net", False),
    ],
)
def test_which_host_names_may_be_the_default_ehlo_name(name: str, usable: bool) -> None:
    assert usable_host_name(name) is usable


@pytest.mark.parametrize(
    ("name", "valid"),
    [("scanner.example.net", True), ("[192.0.2.1]", True), ("[IPv6:2001:db8::1]", True),
     ("[not-an-ip]", False), ("bad name", False)],
)  # fmt: skip
def test_ehlo_name_must_be_a_hostname_or_address_literal(name: str, valid: bool) -> None:
    assert valid_ehlo_name(name) is valid


def test_a_bad_ehlo_name_is_a_usage_error() -> None:
    with pytest.raises(typer.BadParameter, match="not a hostname"):
        network_options(ehlo_name="bad name")


def test_derived_deadlines_follow_timeout_and_greeting_timeout() -> None:
    options = NetworkOptions(timeout=10.0, greeting_timeout=30.0)
    assert options.session_deadline == 10.0 * 8 + 30.0
    assert options.domain_deadline == 10.0 * 30 + 30.0
    short = NetworkOptions(timeout=0.5, greeting_timeout=0.5)
    assert short.domain_deadline == DOMAIN_DEADLINE_MIN
    settings = scan_settings(options)
    assert (settings.probe.step_timeout, settings.probe.total_timeout) == (10.0, 110.0)
    assert settings.retry_backoff == pytest.approx(2.0)


def test_the_decorator_declares_the_options_once_and_builds_one_object() -> None:
    seen: list[NetworkOptions] = []
    app = typer.Typer()

    @app.command()
    @with_network_options
    def probe_one(domain: str, *, network: NetworkOptions) -> None:
        seen.append(network)
        typer.echo(domain)

    result = CliRunner().invoke(
        app, ["x.example", "--per-ip", "2", "--max-mx-hosts", "3", "--ehlo-name", "a.example.net"]
    )
    assert result.exit_code == 0, result.output
    (network,) = seen
    assert (network.per_ip, network.caps.max_mx_hosts, network.ehlo_name) == (2, 3, "a.example.net")
    refused = CliRunner().invoke(app, ["x.example", "--per-ip", "0"])
    assert refused.exit_code == 2
