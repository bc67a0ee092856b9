"""The scanner against real Postfix: shared-host limits, postscreen, rejections.

The lab serves DNS and the MTA-STS policies; its SMTP servers are `closed`, so the
MX names point at the address of a private Postfix instance (`postfix_instance`),
which the scanner reaches with `--smtp-port`. The scanner runs in-process, built
from the same options as `scanner scan`.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from postfix_instance import (
    MYNETWORKS,
    POSTFIX_DNS_ADDRESS,
    POSTFIX_PORT,
    Postfix,
    in_mynetworks,
    instance_root,
    scanner_source_address,
)

from scanner.core.assess import EHLO_NAME_HINT, PARTIAL_GREETING_HINT
from scanner.core.reasons import reason_text
from scanner.core.result import DomainResult
from scanner.files import InputReader
from scanner.lab import Lab, default_mint, open_lab, parse_world
from scanner.lab.dns_server import serve_udp
from scanner.models import ProbeOutcome
from scanner.options import build_scanner, network_options

pytestmark = [pytest.mark.realmta, pytest.mark.usefixtures("postfix_ready")]

SERVER = "127.0.77.1"  # Postfix's listener
POLICY_HOST = "127.0.78.1"  # the lab's policy hosts
EHLO_NAME = "ehlo.realmta.example"  # resolves (in the lab's zone) to the scanning host
TEST_DEADLINE = 60.0
STEP = 1.0  # --timeout of every scan here


def world(domains: list[str]) -> str:
    """Each domain: one MX at Postfix's address, an enforce policy naming it, TLS-RPT."""
    mx_names = ", ".join(f'"mx.{d}"' for d in domains)
    text = f"""
[[servers]]
address = "{SERVER}"
hostnames = [{mx_names}]
behaviour = "closed"

[dns]
"{EHLO_NAME}" = {{ a = ["127.0.0.1"] }}
"""
    for domain in domains:
        body = f"version: STSv1\\nmode: enforce\\nmx: mx.{domain}\\nmax_age: 604800\\n"
        text += f"""
[domains."{domain}".dns]
"@" = {{ mx = ["10 mx.{domain}"] }}
"_mta-sts" = {{ txt = ["v=STSv1; id=realmta1"] }}
"_smtp._tls" = {{ txt = ["v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"] }}

[domains."{domain}".policy]
address = "{POLICY_HOST}"
body = "{body}"

[domains."{domain}".expect]
enforce_ready = true
"""
    return text


@dataclass
class Setup:
    lab: Lab
    postfix: Postfix


@asynccontextmanager
async def postfix_behind_lab(
    tmp_path: Path,
    domains: list[str],
    settings: Mapping[str, str],
    *,
    postscreen: bool = False,
) -> AsyncIterator[Setup]:
    """The lab for `domains`, its zone for Postfix on port 53, and a Postfix with `settings`."""
    async with open_lab(parse_world(world(domains)), tmp_path / "lab") as lab:
        dns = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await dns.bind((POSTFIX_DNS_ADDRESS, 53))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_udp, dns, lab.dns)
            leaf = default_mint().ca.issue_cert(*(f"mx.{d}" for d in domains))
            with instance_root() as root:
                postfix = Postfix(
                    root,
                    SERVER,
                    settings,
                    postscreen=postscreen,
                    cert_pem=b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
                    key_pem=leaf.private_key_pem.bytes(),
                )
                postfix.prepare(POSTFIX_DNS_ADDRESS)
                await postfix.start()
                try:
                    yield Setup(lab, postfix)
                finally:
                    with trio.CancelScope(shield=True):
                        await postfix.stop()
            nursery.cancel_scope.cancel()
        dns.close()


async def scan(lab: Lab, domains: list[str], **options: Any) -> dict[str, DomainResult]:
    """One `scanner scan` of `domains` against the lab (default --per-ip), in-process."""
    host, port = lab.resolver
    network = network_options(
        resolver=[f"{host}:{port}"],
        ca_file=[lab.ca_file],
        allow_private=True,
        timeout=STEP,
        smtp_port=POSTFIX_PORT,
        https_port=lab.https_port,
        **options,
    )
    scanner = build_scanner(network)
    results: dict[str, DomainResult] = {}

    class Collect:
        def domain_done(self, result: DomainResult) -> None:
            results[result.domain] = result

    async def items() -> AsyncIterator[str]:
        for name in domains:
            yield name

    await scanner.run(InputReader().stream(items()), lambda line: None, progress=Collect())
    assert set(results) == set(domains)
    return results


def probes(result: DomainResult) -> list[ProbeOutcome]:
    assert result.facts is not None, result.error
    return [outcome for host in result.facts.hosts for outcome in host.probes]


def reasons(result: DomainResult) -> list[str | None]:
    """Each address's not-testable reason (None when tested), as the line words it."""
    assert result.verdict is not None, result.error
    return [
        reason_text(address.interruption) if address.interruption is not None else None
        for host in result.verdict.mx
        for address in host.addresses
    ]


def assert_client_outside_mynetworks(results: dict[str, DomainResult], log: str) -> None:
    """Postfix saw the scanner at an address its mynetworks does not exempt."""
    sources = {p.local_ip for r in results.values() for p in probes(r) if p.local_ip}
    assert sources == {scanner_source_address(SERVER)}, sources
    for source in sources:
        assert source is not None
        assert not in_mynetworks(source), (source, MYNETWORKS)
        assert f"[{source}]" in log  # the client address Postfix logged


# ---------------------------------------------------------------- (a) shared host, anvil limit

SHARED = [f"{letter}.shared.realmta.example" for letter in "abcdef"]


TOO_MANY = "busy:421 4.7.0 mx.realmta.example Error: too many connections from "


@pytest.mark.parametrize(
    "retries",
    [
        pytest.param({}, id="default-retries"),
        # The twin: a scanner that takes the first 421 for an answer.
        pytest.param({"busy_retries": 0}, id="no-retries"),
    ],
)
async def test_connection_limit_of_a_shared_host(tmp_path: Path, retries: dict[str, int]) -> None:
    """Six domains' MX names on one Postfix that allows 2 connections per client.

    The default --per-ip (4) opens more than 2 at once; Postfix answers the extra ones
    `421 4.7.0 ... too many connections`. A sending MTA retries those later: so must the
    scanner, until every domain's address is tested.
    """
    limit = {"smtpd_client_connection_count_limit": "2"}
    with trio.fail_after(TEST_DEADLINE):
        async with postfix_behind_lab(tmp_path, SHARED, limit) as setup:
            results = await scan(setup.lab, SHARED, **retries)
            sessions = sum(p.attempts for r in results.values() for p in probes(r))
            log = await setup.postfix.wait_for_log("disconnect from", count=sessions)
    assert_client_outside_mynetworks(results, log)
    assert "Connection concurrency limit exceeded" in log  # the scan did meet the limit
    found = [reason for r in results.values() for reason in reasons(r)]
    if not retries:
        assert found == [None] * len(SHARED)
        assert all(r.enforce_ready for r in results.values())
    else:
        busy = [reason for reason in found if reason is not None]
        assert busy, found
        assert all(reason.startswith(TOO_MANY) for reason in busy), busy


# ---------------------------------------------------------------- (b) postscreen greet pause

GREET_WAIT = 3  # seconds of postscreen's pause: longer than --timeout
POSTSCREEN = {
    "postscreen_greet_wait": f"{GREET_WAIT}s",
    "postscreen_greet_action": "enforce",
    "postscreen_greet_banner": "$myhostname greet pause",
    "postscreen_dnsbl_sites": "",
}
PAUSED = ["paused.realmta.example"]


@pytest.mark.parametrize(
    ("greeting_timeout", "reason"),
    [
        pytest.param(GREET_WAIT + 7.0, None, id="greeting-deadline-past-the-pause"),
        # The twin: a greeting deadline shorter than the pause.
        pytest.param(
            STEP, "timeout:greeting (partial 220- received)", id="pause-past-the-deadline"
        ),
    ],
)
async def test_postscreen_greet_pause(
    tmp_path: Path, greeting_timeout: float, reason: str | None
) -> None:
    """postscreen sends `220-`, waits 3 s, then smtpd greets; --timeout is 1 s.

    The greeting has its own deadline: past the pause the address is tested; short of
    it, the partial greeting is named. Either way the scanner said nothing in the
    pause, so postscreen logged no PREGREET.
    """
    with trio.fail_after(TEST_DEADLINE):
        async with postfix_behind_lab(tmp_path, PAUSED, POSTSCREEN, postscreen=True) as setup:
            results = await scan(setup.lab, PAUSED, greeting_timeout=greeting_timeout)
            ending = "PASS NEW" if reason is None else "HANGUP after"
            log = await setup.postfix.wait_for_log(ending)
            twin_log = await pregreet_twin(setup.postfix) if reason is not None else None
    (result,) = results.values()
    assert reasons(result) == [reason]
    (outcome,) = probes(result)
    assert "S: 220-mx.realmta.example greet pause" in outcome.transcript
    assert_client_outside_mynetworks(results, log)
    assert f"CONNECT from [{outcome.local_ip}]" in log  # postscreen, not exempt, saw it
    assert ending in log
    assert "PREGREET" not in log
    assert result.verdict is not None
    if reason is None:
        assert result.enforce_ready
    else:
        assert "C: QUIT" not in outcome.transcript
        (blocker,) = result.verdict.blockers
        assert (blocker.code, blocker.cause) == ("not-testable", "timeout:greeting")
        assert blocker.text.endswith(f"could not be tested: {reason}; {PARTIAL_GREETING_HINT}")
        # The failing twin of "no PREGREET": a client that says QUIT in the pause is logged.
        assert twin_log is not None
        assert "PREGREET" in twin_log


async def pregreet_twin(postfix: Postfix) -> str:
    """What postscreen logs of a client that says QUIT in the pause (the old best-effort QUIT)."""
    stream = await trio.open_tcp_stream(SERVER, POSTFIX_PORT)
    async with stream:
        teaser = await stream.receive_some(1024)
        assert teaser.startswith(b"220-")
        await stream.send_all(b"QUIT\r\n")
    return await postfix.wait_for_log("PREGREET")


# ---------------------------------------------------------------- (c) 554 greeting

REFUSING = ["refused.realmta.example"]


async def test_554_greeting_is_a_rejection(tmp_path: Path) -> None:
    """`smtpd_client_restrictions = reject` without delay: the greeting is a 554."""
    settings = {"smtpd_client_restrictions": "reject", "smtpd_delay_reject": "no"}
    with trio.fail_after(TEST_DEADLINE):
        async with postfix_behind_lab(tmp_path, REFUSING, settings) as setup:
            results = await scan(setup.lab, REFUSING)
            log = await setup.postfix.wait_for_log("disconnect from")
    (result,) = results.values()
    source = scanner_source_address(SERVER)
    assert reasons(result) == [
        f"rejected:554 5.7.1 <unknown[{source}]>: Client host rejected: Access denied"
    ]
    assert not result.enforce_ready
    assert_client_outside_mynetworks(results, log)
    assert "quit=1" in log  # RFC 5321 §3.1: QUIT after a 554 greeting


# ---------------------------------------------------------------- (d) the EHLO name checked

HELO_CHECKED = ["helo.realmta.example"]
HELO_CHECK = {
    "smtpd_helo_required": "yes",
    "smtpd_helo_restrictions": "reject_unknown_helo_hostname",
    "smtpd_delay_reject": "no",
}


async def test_ehlo_name_that_does_not_resolve_is_refused(tmp_path: Path) -> None:
    """Postfix looks the EHLO name up in DNS: the default name fails, a resolving one passes."""
    with trio.fail_after(TEST_DEADLINE):
        async with postfix_behind_lab(tmp_path, HELO_CHECKED, HELO_CHECK) as setup:
            refused = await scan(setup.lab, HELO_CHECKED)
            accepted = await scan(setup.lab, HELO_CHECKED, ehlo_name=EHLO_NAME)
            log = await setup.postfix.wait_for_log("disconnect from", count=2)
    (result,) = refused.values()
    (outcome,) = probes(result)
    sent = next(line for line in outcome.transcript if line.startswith("C: EHLO "))
    default_name = sent.removeprefix("C: EHLO ")
    words = f"ehlo-rejected:450 4.7.1 <{default_name}>: Helo command rejected: Host not found"
    assert reasons(result) == [words]
    assert result.verdict is not None
    assert result.verdict.blockers[0].text.endswith(f"{words}; {EHLO_NAME_HINT}")
    assert f"reject: EHLO from unknown[{outcome.local_ip}]" in log
    # The twin: a name in DNS that leads back to the scanning host.
    (result,) = accepted.values()
    assert reasons(result) == [None]
    assert result.enforce_ready
    assert_client_outside_mynetworks({**refused, "twin": result}, log)
