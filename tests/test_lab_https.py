"""Every lab policy-host behaviour fetched by a real HTTPS client (stdlib ssl over trio, h11)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import h11
import pytest
import trio
from trio.testing import MockClock

from scanner.lab import Lab, PolicyBehaviour, PolicyHost, World, open_lab, parse_world
from scanner.lab.https_server import DEFAULT_SLOW_INTERVAL

STEP = 5.0
WELL_KNOWN = "/.well-known/mta-sts.txt"


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes


def host_with(world: World, behaviour: PolicyBehaviour) -> PolicyHost:
    return next(host for host in world.policy_hosts if host.behaviour is behaviour)


async def open_tls(
    lab: Lab, address: str, server_name: str, *, verify: bool = True
) -> trio.SSLStream[trio.SocketStream]:
    context = ssl.create_default_context(cafile=str(lab.ca_file))
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    stream = await trio.open_tcp_stream(address, lab.https_port)
    tls = trio.SSLStream(stream, context, server_hostname=server_name)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


async def fetch(
    lab: Lab,
    host: PolicyHost,
    *,
    method: str = "GET",
    path: str = WELL_KNOWN,
    host_header: str | None = None,
    verify: bool = True,
) -> Fetched:
    tls = await open_tls(lab, host.address, host.hostname, verify=verify)
    async with tls:
        client = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method=method,
            target=path,
            headers=[("Host", host_header or host.hostname), ("Connection", "close")],
        )
        await tls.send_all(client.send(request) + (client.send(h11.EndOfMessage()) or b""))
        status, headers, body = 0, {}, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(bytes(await tls.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return Fetched(status, headers, body)


# ---------------------------------------------------------------- behaviours


@pytest.mark.parametrize(
    ("behaviour", "status", "content_type"),
    [
        pytest.param(PolicyBehaviour.GOOD, 200, "text/plain", id="good"),
        pytest.param(PolicyBehaviour.WRONG_CONTENT_TYPE, 200, "text/html", id="wrong-content-type"),
        pytest.param(PolicyBehaviour.NOT_FOUND, 404, "text/plain", id="not-found"),
        pytest.param(PolicyBehaviour.REDIRECT, 301, "text/plain", id="redirect"),
    ],
)
async def test_status_and_content_type(
    demo_lab: Lab, behaviour: PolicyBehaviour, status: int, content_type: str
) -> None:
    host = host_with(demo_lab.world, behaviour)
    with trio.fail_after(STEP):
        fetched = await fetch(demo_lab, host)
    assert fetched.status == status
    assert fetched.headers["content-type"] == content_type
    if status == 200:
        assert fetched.body == host.body.encode()
    assert ("location" in fetched.headers) is (behaviour is PolicyBehaviour.REDIRECT)


async def test_redirect_location_comes_from_the_world(demo_lab: Lab) -> None:
    host = host_with(demo_lab.world, PolicyBehaviour.REDIRECT)
    with trio.fail_after(STEP):
        fetched = await fetch(demo_lab, host)
    assert fetched.headers["location"] == host.location


@pytest.mark.parametrize(
    ("domain", "line_ending"),
    [
        pytest.param("testing-ready.example", b"\n", id="lf"),
        pytest.param("enforce-ready.example", b"\r\n", id="crlf"),
    ],
)
async def test_policy_line_endings(demo_lab: Lab, domain: str, line_ending: bytes) -> None:
    policy = demo_lab.world.domain(domain).policy
    assert policy is not None
    with trio.fail_after(STEP):
        fetched = await fetch(demo_lab, policy)
    assert fetched.body.startswith(b"version: STSv1" + line_ending + b"mode: ")
    assert fetched.body.count(b"\r\n") == (4 if line_ending == b"\r\n" else 0)


@pytest.mark.parametrize(
    ("behaviour", "oversize"),
    [
        pytest.param(PolicyBehaviour.GOOD, False, id="good-twin"),
        pytest.param(PolicyBehaviour.OVERSIZE, True, id="oversize"),
    ],
)
async def test_oversize_body(demo_lab: Lab, behaviour: PolicyBehaviour, oversize: bool) -> None:
    host = host_with(demo_lab.world, behaviour)
    with trio.fail_after(STEP):
        fetched = await fetch(demo_lab, host)
    assert (len(fetched.body) > 64 * 1024) is oversize
    assert fetched.body.startswith(b"version: STSv1")
    assert int(fetched.headers["content-length"]) == len(fetched.body)


async def test_slow_body_trickles(demo_lab: Lab, loopback_clock: MockClock) -> None:
    """Headers at once, then one body byte per interval (virtual time: exact)."""
    host = host_with(demo_lab.world, PolicyBehaviour.SLOW)
    with trio.fail_after(STEP):
        tls = await open_tls(demo_lab, host.address, host.hostname)
    async with tls:
        request = f"GET {WELL_KNOWN} HTTP/1.1\r\nHost: {host.hostname}\r\n\r\n"
        await tls.send_all(request.encode())
        received = b""
        with trio.fail_after(STEP):
            while b"\r\n\r\n" not in received:
                received += await tls.receive_some(65536)
        headers_at = trio.current_time()
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert f"content-length: {len(host.body)}".encode() in head.lower()
        with trio.move_on_after(DEFAULT_SLOW_INTERVAL / 2):
            while True:
                body += await tls.receive_some(65536)
        assert len(body) == 1  # the first byte at once, the second only an interval later
        with trio.fail_after(STEP):
            while len(body) < 3:
                body += await tls.receive_some(65536)
        assert len(body) == 3
        assert trio.current_time() - headers_at == pytest.approx(2 * DEFAULT_SLOW_INTERVAL)
        assert body == host.body.encode()[:3]


@pytest.mark.parametrize(
    ("behaviour", "verify_code"),
    [
        pytest.param(PolicyBehaviour.GOOD, None, id="good-twin"),
        pytest.param(PolicyBehaviour.UNTRUSTED_CERT, 20, id="untrusted-cert"),
        pytest.param(PolicyBehaviour.WRONG_NAME_CERT, 62, id="wrong-name-cert"),
    ],
)
async def test_policy_host_certificates(
    demo_lab: Lab, behaviour: PolicyBehaviour, verify_code: int | None
) -> None:
    host = host_with(demo_lab.world, behaviour)
    with trio.fail_after(STEP):
        if verify_code is None:
            assert (await fetch(demo_lab, host)).status == 200
            return
        with pytest.raises(trio.BrokenResourceError) as raised:
            await fetch(demo_lab, host)
        cause = raised.value.__cause__
        assert isinstance(cause, ssl.SSLCertVerificationError)
        assert cause.verify_code == verify_code
        # Without verification the policy is still served: only the certificate is wrong.
        assert (await fetch(demo_lab, host, verify=False)).status == 200


@pytest.mark.parametrize(
    ("method", "path", "host_header", "status"),
    [
        pytest.param("GET", WELL_KNOWN, None, 200, id="twin"),
        pytest.param("GET", WELL_KNOWN + "?x=1", None, 200, id="query-ignored"),
        pytest.param("GET", "/", None, 404, id="other-path"),
        pytest.param("POST", WELL_KNOWN, None, 405, id="post"),
        pytest.param("GET", WELL_KNOWN, "mta-sts.unknown.example", 404, id="unknown-host"),
        pytest.param(
            "GET", WELL_KNOWN, "MTA-STS.Testing-Ready.Example:443", 200, id="host-case-port"
        ),
    ],
)
async def test_request_routing(
    demo_lab: Lab, method: str, path: str, host_header: str | None, status: int
) -> None:
    host = demo_lab.world.domain("testing-ready.example").policy
    assert host is not None
    with trio.fail_after(STEP):
        fetched = await fetch(demo_lab, host, method=method, path=path, host_header=host_header)
    assert fetched.status == status


async def test_malformed_request_just_closes(demo_lab: Lab) -> None:
    host = host_with(demo_lab.world, PolicyBehaviour.GOOD)
    with trio.fail_after(STEP):
        tls = await open_tls(demo_lab, host.address, host.hostname)
        async with tls:
            await tls.send_all(b"\x00\x01 nonsense\r\n\r\n")
            assert await tls.receive_some(1024) == b""


# ---------------------------------------------------------------- hosts sharing an address

SHARED_WORLD = """
[domains."a.example"]
policy = { address = "127.0.3.1", body = "version: STSv1\\nmode: none\\nmax_age: 1\\n" }
[domains."b.example"]
policy = { address = "127.0.3.1", behaviour = "untrusted-cert", body = "version: STSv1\\n" }
"""


@pytest.fixture
async def shared_lab(tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(parse_world(SHARED_WORLD), workdir=tmp_path) as lab:
        yield lab


@pytest.mark.parametrize(
    ("server_name", "trusted"),
    [
        pytest.param("mta-sts.a.example", True, id="good-host"),
        pytest.param("mta-sts.b.example", False, id="untrusted-host"),
    ],
)
async def test_certificate_chosen_by_sni(shared_lab: Lab, server_name: str, trusted: bool) -> None:
    with trio.fail_after(STEP):
        if trusted:
            tls = await open_tls(shared_lab, "127.0.3.1", server_name)
            await tls.aclose()
        else:
            with pytest.raises(trio.BrokenResourceError):
                await open_tls(shared_lab, "127.0.3.1", server_name)


async def test_body_chosen_by_host_header(shared_lab: Lab) -> None:
    hosts = {host.hostname: host for host in shared_lab.world.policy_hosts}
    with trio.fail_after(STEP):
        a = await fetch(shared_lab, hosts["mta-sts.a.example"])
        b = await fetch(shared_lab, hosts["mta-sts.b.example"], verify=False)
    assert a.body == b"version: STSv1\nmode: none\nmax_age: 1\n"
    assert b.body == b"version: STSv1\n"
    assert shared_lab.https_connections("127.0.3.1") == 2
