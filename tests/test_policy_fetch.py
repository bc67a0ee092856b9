"""HTTPS policy fetch (RFC 8461 §3.3, §7.1) against real loopback servers.

Each test runs a small HTTPS server on 127.0.0.1 (trio + trustme certificates)
that answers GET /.well-known/mta-sts.txt in one particular way, and a static
address resolver that points the policy host at it.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trustme
from trio.testing import MockClock

from scanner.lab import Lab, World, load_world, open_lab
from scanner.models import AddressAnswer, DnsStatus, PolicyFetch, PolicyMode, ResultType
from scanner.net.gate import Gate
from scanner.net.policy_fetch import FetchSettings, fetch_policy
from scanner.net.resolver import Nameserver, Resolver
from scanner.net.tls import TlsClient, build_client_context
from scanner.net.trust import TrustStore

DOMAIN = "example.com"
HOST = "mta-sts.example.com"
POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 604800\r\n"
FAST = 0.5  # per-step deadline for tests that expect a timeout (virtual seconds: loopback_clock)


@dataclass
class StaticResolver:
    """Answers every address lookup with the same A and AAAA answers."""

    a: AddressAnswer
    aaaa: AddressAnswer = field(default_factory=lambda: AddressAnswer(DnsStatus.NODATA))
    asked: list[str] = field(default_factory=list)

    async def addresses(self, name: str) -> tuple[AddressAnswer, AddressAnswer]:
        await trio.lowlevel.checkpoint()
        self.asked.append(name)
        return self.a, self.aaaa


def resolver_for(*ips: str) -> StaticResolver:
    return StaticResolver(AddressAnswer(DnsStatus.ANSWER, ips))


@dataclass
class Seen:
    requests: list[bytes] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)


Responder = Callable[[trio.SSLStream[trio.SocketStream]], Awaitable[None]]


def response(status: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body


def sends(data: bytes, *, then_sleep: bool = False) -> Responder:
    async def respond(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await stream.send_all(data)
        if then_sleep:
            await trio.sleep_forever()

    return respond


def policy_response(
    body: bytes = POLICY, content_type: str = "text/plain; charset=utf-8"
) -> Responder:
    return sends(
        response(
            "200 OK",
            [("Content-Type", content_type), ("Content-Length", str(len(body)))],
            body,
        )
    )


@dataclass
class Pki:
    ca: trustme.CA
    trust: TrustStore


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    path: Path = tmp_path_factory.mktemp("pki") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return Pki(ca, TrustStore.from_files([path], include_certifi=False))


def server_context(
    ca: trustme.CA, *names: str, seen: Seen, not_after: datetime | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if not_after is None:
        ca.issue_cert(*names).configure_cert(context)
    else:
        not_before = not_after - timedelta(days=30)
        ca.issue_cert(*names, not_before=not_before, not_after=not_after).configure_cert(context)

    def remember_sni(_: object, server_name: str | None, __: object) -> None:
        seen.sni.append(server_name)

    context.sni_callback = remember_sni
    return context


@asynccontextmanager
async def https_server(
    respond: Responder | None,
    context: ssl.SSLContext | None,
    seen: Seen,
) -> AsyncIterator[int]:
    """Serve on 127.0.0.1; `context` None serves plaintext junk, `respond` None never answers."""

    async def handle(tcp: trio.SocketStream) -> None:
        try:
            if context is None:
                await tcp.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\nnot TLS\r\n")
                await tcp.aclose()
                return
            stream = trio.SSLStream(tcp, context, server_side=True)
            await stream.do_handshake()
            request = b""
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(4096)
                if not data:
                    return
                request += data
            seen.requests.append(request)
            if respond is None:
                await trio.sleep_forever()
            await respond(stream)
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        yield port
        nursery.cancel_scope.cancel()


NOW = datetime.now(UTC)


async def fetch(
    pki: Pki,
    port: int,
    resolver: StaticResolver | None = None,
    *,
    step_timeout: float = 5.0,
    allow_private: bool = True,
) -> PolicyFetch:
    return await fetch_policy(
        DOMAIN,
        resolver=resolver or resolver_for("127.0.0.1"),
        tls=TlsClient(build_client_context(), pki.trust),
        settings=FetchSettings(https_port=port, timeout=step_timeout),
        now=NOW,
        gate=Gate(allow_private=allow_private),
    )


# The two responders that stall a step of the fetch: it must cost exactly one step deadline.
NO_RESPONSE: Responder | None = None
SLOW_BODY = sends(
    response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "200")], POLICY),
    then_sleep=True,
)


def assert_failure(result: PolicyFetch, result_type: ResultType, *fragments: str) -> None:
    assert result.policy is None
    assert result.failure is not None, result
    assert result.failure.result_type is result_type, result.failure
    for fragment in fragments:
        assert fragment in result.failure.detail, (fragment, result.failure.detail)


# ---------------------------------------------------------------- the good case, and what was sent


async def test_good_policy(pki: Pki) -> None:
    seen = Seen()
    resolver = resolver_for("127.0.0.1")
    context = server_context(pki.ca, HOST, seen=seen)
    async with https_server(policy_response(), context, seen) as port:
        result = await fetch(pki, port, resolver)
    assert result.failure is None
    assert result.policy is not None
    assert result.policy.mode is PolicyMode.ENFORCE
    assert result.policy.mx == ("mail.example.com",)
    assert result.http_status == 200
    assert result.ip == "127.0.0.1"
    assert result.text == POLICY.decode()
    assert result.certificate is not None
    assert result.certificate.chain.trusted
    assert result.certificate.name_matches
    assert resolver.asked == [HOST]


async def test_request_is_exact_url_host_and_sni_without_caching(pki: Pki) -> None:
    seen = Seen()
    async with https_server(
        policy_response(), server_context(pki.ca, HOST, seen=seen), seen
    ) as port:
        await fetch(pki, port)
    assert seen.sni == [HOST]
    (request,) = seen.requests
    head, *header_lines = request.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")
    headers = {
        line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in header_lines
    }
    assert head == "GET /.well-known/mta-sts.txt HTTP/1.1"
    assert headers["host"] == HOST
    assert headers["connection"] == "close"
    assert headers["user-agent"].startswith("scanner/")
    assert not {"if-modified-since", "if-none-match"} & set(headers)


# ---------------------------------------------------------------- HTTP outcomes


@pytest.mark.parametrize(
    ("respond", "result_type", "fragments"),
    [
        pytest.param(
            policy_response(content_type="TEXT/PLAIN; Charset=US-ASCII; x=y"),
            None,
            (),
            id="content-type-case-and-parameters",
        ),
        pytest.param(
            policy_response(content_type="text/html"),
            ResultType.STS_POLICY_INVALID,
            ("'text/html'", "lenient"),
            id="wrong-content-type-twin",
        ),
        pytest.param(
            policy_response(content_type="text/plain"),
            None,
            (),
            id="plain-content-type",
        ),
        pytest.param(
            sends(response("200 OK", [("Content-Length", str(len(POLICY)))], POLICY)),
            ResultType.STS_POLICY_INVALID,
            ("no Content-Type",),
            id="missing-content-type-twin",
        ),
        pytest.param(policy_response(), None, (), id="status-200"),
        pytest.param(
            sends(response("404 Not Found", [("Content-Length", "0")])),
            ResultType.STS_POLICY_FETCH_ERROR,
            ("HTTP 404 Not Found", "only 200"),
            id="not-found-twin",
        ),
        pytest.param(policy_response(), None, (), id="no-redirect"),
        pytest.param(
            sends(
                response(
                    "301 Moved Permanently",
                    [("Location", "https://www.example.com/mta-sts.txt"), ("Content-Length", "0")],
                )
            ),
            ResultType.STS_POLICY_FETCH_ERROR,
            ("301", "https://www.example.com/mta-sts.txt", "never followed"),
            id="redirect-twin",
        ),
        pytest.param(
            policy_response(b"x-pad: " + b"a" * 60000 + b"\n" + POLICY), None, (), id="under-64k"
        ),
        pytest.param(
            policy_response(b"x-pad: " + b"a" * 70000 + b"\n" + POLICY),
            ResultType.STS_POLICY_FETCH_ERROR,
            ("65536-byte limit", "Content-Length"),
            id="over-64k-announced-twin",
        ),
        pytest.param(
            sends(
                response(
                    "200 OK", [("Content-Type", "text/plain"), ("Connection", "close")], POLICY
                )
            ),
            None,
            (),
            id="close-delimited-body",
        ),
        pytest.param(
            sends(
                response(
                    "200 OK",
                    [("Content-Type", "text/plain"), ("Connection", "close")],
                    b"x" * 70000,
                )
            ),
            ResultType.STS_POLICY_FETCH_ERROR,
            ("65536-byte limit", "reading stopped"),
            id="over-64k-streamed-twin",
        ),
        pytest.param(policy_response(), None, (), id="valid-policy"),
        pytest.param(
            policy_response(POLICY.replace(b"STSv1", b"STSv2")),
            ResultType.STS_POLICY_INVALID,
            ("line 1",),
            id="invalid-policy-twin",
        ),
        pytest.param(
            policy_response(POLICY + "x-note: ünï\n".encode()), None, (), id="utf8-decoded"
        ),
        pytest.param(
            policy_response(POLICY + b"x-note: \xff\n"),
            ResultType.STS_POLICY_INVALID,
            ("not valid UTF-8",),
            id="not-utf8-twin",
        ),
        pytest.param(
            SLOW_BODY,
            ResultType.STS_POLICY_FETCH_ERROR,
            ("did not finish sending the policy body within 0.5 s",),
            id="slow-body-past-deadline",
        ),
        pytest.param(
            sends(b"HTTP/1.1 200 OK\r\nContent-Type text/plain\r\n\r\n"),
            ResultType.STS_POLICY_FETCH_ERROR,
            ("malformed HTTP response",),
            id="malformed-response",
        ),
        pytest.param(
            NO_RESPONSE,
            ResultType.STS_POLICY_FETCH_ERROR,
            ("no response headers within 0.5 s",),
            id="no-response-headers",
        ),
    ],
)
async def test_http_outcomes(
    pki: Pki,
    respond: Responder | None,
    result_type: ResultType | None,
    fragments: tuple[str, ...],
    loopback_clock: MockClock,
) -> None:
    seen = Seen()
    context = server_context(pki.ca, HOST, seen=seen)
    async with https_server(respond, context, seen) as port:
        started = trio.current_time()
        with trio.fail_after(5):
            result = await fetch(pki, port, step_timeout=FAST)
        waited = trio.current_time() - started
    # Virtual time moves only when the fetch waits out a deadline: a stalled step
    # costs exactly one step deadline, every other outcome none.
    stalled = respond is NO_RESPONSE or respond is SLOW_BODY
    assert waited == (pytest.approx(FAST) if stalled else 0)
    if result_type is None:
        assert result.failure is None, result.failure
        assert result.policy is not None
    else:
        assert_failure(result, result_type, *fragments)


async def test_redirect_location_recorded(pki: Pki) -> None:
    seen = Seen()
    redirect = sends(response("302 Found", [("Location", "https://elsewhere.example/p")]))
    async with https_server(redirect, server_context(pki.ca, HOST, seen=seen), seen) as port:
        result = await fetch(pki, port)
    assert result.http_status == 302
    assert result.location == "https://elsewhere.example/p"
    assert len(seen.requests) == 1  # nothing fetched at the Location


# ---------------------------------------------------------------- certificates


@pytest.mark.parametrize(
    ("names", "own_ca", "result_type", "fragments"),
    [
        pytest.param((HOST,), True, None, (), id="good-name"),
        pytest.param(
            ("www.example.com",),
            True,
            ResultType.STS_WEBPKI_INVALID,
            ("not valid for mta-sts.example.com", "www.example.com"),
            id="wrong-name-twin",
        ),
        pytest.param(("*.example.com",), True, None, (), id="wildcard"),
        pytest.param(
            ("*.mta-sts.example.com",),
            True,
            ResultType.STS_WEBPKI_INVALID,
            ("not valid for",),
            id="wildcard-too-deep-twin",
        ),
        pytest.param((HOST,), True, None, (), id="trusted"),
        pytest.param(
            (HOST,),
            False,
            ResultType.STS_WEBPKI_INVALID,
            ("X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY",),
            id="untrusted-twin",
        ),
    ],
)
async def test_certificate_outcomes(
    pki: Pki,
    names: tuple[str, ...],
    own_ca: bool,
    result_type: ResultType | None,
    fragments: tuple[str, ...],
) -> None:
    seen = Seen()
    ca = pki.ca if own_ca else trustme.CA()
    async with https_server(policy_response(), server_context(ca, *names, seen=seen), seen) as port:
        result = await fetch(pki, port)
    if result_type is None:
        assert result.failure is None, result.failure
    else:
        assert_failure(result, result_type, *fragments)
        assert result.certificate is not None
        assert seen.requests == []  # checked before the request was sent


@pytest.mark.parametrize(
    ("not_after", "expired"),
    [
        pytest.param(NOW + timedelta(days=1), False, id="valid-until-tomorrow"),
        pytest.param(NOW - timedelta(days=1), True, id="expired-yesterday-twin"),
    ],
)
async def test_expired_certificate(pki: Pki, not_after: datetime, expired: bool) -> None:
    seen = Seen()
    context = server_context(pki.ca, HOST, seen=seen, not_after=not_after)
    async with https_server(policy_response(), context, seen) as port:
        result = await fetch(pki, port)
    if expired:
        assert_failure(
            result, ResultType.STS_WEBPKI_INVALID, "expired on", "X509_V_ERR_CERT_HAS_EXPIRED"
        )
    else:
        assert result.policy is not None


# ---------------------------------------------------------------- DNS, addresses, connect, handshake


@pytest.mark.parametrize(
    ("a", "aaaa", "fragment"),
    [
        pytest.param(
            AddressAnswer(DnsStatus.NXDOMAIN, (), "name does not exist"),
            AddressAnswer(DnsStatus.NXDOMAIN, (), "name does not exist"),
            "does not exist in DNS (NXDOMAIN)",
            id="nxdomain",
        ),
        pytest.param(
            AddressAnswer(DnsStatus.NODATA),
            AddressAnswer(DnsStatus.NODATA),
            "has no A or AAAA record (NODATA)",
            id="nodata",
        ),
        pytest.param(
            AddressAnswer(DnsStatus.SERVFAIL),
            AddressAnswer(DnsStatus.SERVFAIL),
            "failed (SERVFAIL)",
            id="servfail",
        ),
        pytest.param(
            AddressAnswer(DnsStatus.TIMEOUT),
            AddressAnswer(DnsStatus.NODATA),
            "timed out",
            id="timeout",
        ),
        pytest.param(
            AddressAnswer(DnsStatus.REFUSED, (), "every nameserver refused the query"),
            AddressAnswer(DnsStatus.NODATA),
            "A refused (every nameserver refused the query)",
            id="refused",
        ),
    ],
)
async def test_no_address_for_policy_host(
    pki: Pki, a: AddressAnswer, aaaa: AddressAnswer, fragment: str
) -> None:
    result = await fetch(pki, 1, StaticResolver(a, aaaa))
    assert_failure(result, ResultType.STS_POLICY_FETCH_ERROR, HOST, fragment)


async def test_address_from_aaaa_only_is_used(pki: Pki) -> None:
    seen = Seen()
    resolver = StaticResolver(
        AddressAnswer(DnsStatus.NODATA), AddressAnswer(DnsStatus.ANSWER, ("127.0.0.1",))
    )
    async with https_server(
        policy_response(), server_context(pki.ca, HOST, seen=seen), seen
    ) as port:
        result = await fetch(pki, port, resolver)
    assert result.policy is not None


def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused(pki: Pki) -> None:
    result = await fetch(pki, unused_port())
    assert_failure(result, ResultType.STS_POLICY_FETCH_ERROR, "127.0.0.1: connection refused")


async def test_next_address_tried_after_refusal(pki: Pki) -> None:
    seen = Seen()
    async with https_server(
        policy_response(), server_context(pki.ca, HOST, seen=seen), seen
    ) as port:
        result = await fetch(pki, port, resolver_for("127.0.0.2", "127.0.0.1"))
    assert result.policy is not None
    assert result.ip == "127.0.0.1"


@pytest.mark.parametrize(
    ("allow_private", "fragment"),
    [
        pytest.param(True, None, id="allowed"),
        pytest.param(False, "may not contact", id="private-refused-twin"),
    ],
)
async def test_private_address_needs_allow_private(
    pki: Pki, allow_private: bool, fragment: str | None
) -> None:
    seen = Seen()
    async with https_server(
        policy_response(), server_context(pki.ca, HOST, seen=seen), seen
    ) as port:
        result = await fetch(pki, port, allow_private=allow_private)
    if fragment is None:
        assert result.policy is not None
    else:
        assert_failure(result, ResultType.STS_POLICY_FETCH_ERROR, fragment, "--allow-private")
        assert seen.sni == []  # never connected


async def test_handshake_failure(pki: Pki) -> None:
    seen = Seen()
    async with https_server(None, None, seen) as port:
        result = await fetch(pki, port)
    assert_failure(result, ResultType.STS_POLICY_FETCH_ERROR, "TLS handshake", "failed")


async def test_handshake_timeout(pki: Pki, loopback_clock: MockClock) -> None:
    async def silent(tcp: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, silent, listeners)
        started = trio.current_time()
        result = await fetch(pki, port, step_timeout=FAST)
        waited = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert_failure(
        result, ResultType.STS_POLICY_FETCH_ERROR, "TLS handshake", "timed out after 0.5 s"
    )
    assert waited == pytest.approx(FAST)


async def test_outer_cancellation_is_not_swallowed(pki: Pki, loopback_clock: MockClock) -> None:
    seen = Seen()
    async with https_server(None, server_context(pki.ca, HOST, seen=seen), seen) as port:
        started = trio.current_time()
        with trio.move_on_after(FAST) as scope:
            await fetch(pki, port, step_timeout=30.0)
            pytest.fail("fetch returned although its caller's deadline expired")
        waited = trio.current_time() - started
    assert scope.cancelled_caught
    assert waited == pytest.approx(FAST)  # the caller's deadline, not the 30 s step deadline
    assert len(seen.requests) == 1  # cancelled while waiting for the response


# ---------------------------------------------------------------- end to end against the fixture lab

FETCH_WORLD = Path(__file__).resolve().parent.parent / "fixtures" / "world-policy-fetch.toml"


@pytest.fixture(scope="module")
def fetch_world() -> World:
    return load_world(FETCH_WORLD)


@pytest.fixture
async def fetch_lab(fetch_world: World, tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(fetch_world, workdir=tmp_path / "lab", slow_interval=0.2) as lab:
        yield lab


async def fetch_from_lab(
    lab: Lab, domain: str, *, step_timeout: float = 1.0, allow_private: bool = True
) -> PolicyFetch:
    host, port = lab.resolver
    trust = TrustStore.from_files([lab.ca_file], include_certifi=False)
    return await fetch_policy(
        domain,
        resolver=Resolver.create([Nameserver(host, port)], timeout=step_timeout),
        tls=TlsClient(build_client_context(), trust),
        settings=FetchSettings(https_port=lab.https_port, timeout=step_timeout),
        now=datetime.now(UTC),
        gate=Gate(allow_private=allow_private),
    )


@pytest.mark.parametrize(
    ("domain", "result_type", "fragments"),
    [
        pytest.param("good.fetch.example", None, (), id="good"),
        pytest.param(
            "content-type.fetch.example",
            ResultType.STS_POLICY_INVALID,
            ("'text/html'", "not text/plain"),
            id="wrong-content-type",
        ),
        pytest.param(
            "redirect.fetch.example",
            ResultType.STS_POLICY_FETCH_ERROR,
            ("HTTP 301", "https://www.redirect.fetch.example/.well-known/mta-sts.txt"),
            id="redirect",
        ),
        pytest.param(
            "not-found.fetch.example",
            ResultType.STS_POLICY_FETCH_ERROR,
            ("HTTP 404",),
            id="not-found",
        ),
        pytest.param(
            "oversize.fetch.example",
            ResultType.STS_POLICY_FETCH_ERROR,
            ("65536-byte limit",),
            id="oversize",
        ),
        pytest.param(
            "slow.fetch.example",
            ResultType.STS_POLICY_FETCH_ERROR,
            ("did not finish sending the policy body within 1 s",),
            id="slow",
        ),
        pytest.param(
            "untrusted.fetch.example",
            ResultType.STS_WEBPKI_INVALID,
            ("X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY",),
            id="untrusted-cert",
        ),
        pytest.param(
            "wrong-name.fetch.example",
            ResultType.STS_WEBPKI_INVALID,
            ("not valid for mta-sts.wrong-name.fetch.example",),
            id="wrong-name-cert",
        ),
        pytest.param(
            "invalid.fetch.example",
            ResultType.STS_POLICY_INVALID,
            ("max_age above 31557600",),
            id="invalid-policy",
        ),
        pytest.param(
            "no-host.fetch.example",
            ResultType.STS_POLICY_FETCH_ERROR,
            ("mta-sts.no-host.fetch.example does not exist in DNS (NXDOMAIN)",),
            id="no-host",
        ),
        pytest.param(
            "servfail.fetch.example",
            ResultType.STS_POLICY_FETCH_ERROR,
            ("(SERVFAIL)",),
            id="servfail",
        ),
        pytest.param(
            "refused.fetch.example",
            ResultType.STS_POLICY_FETCH_ERROR,
            ("127.0.3.99: connection refused",),
            id="connection-refused",
        ),
    ],
)
async def test_lab_policy_hosts(
    fetch_lab: Lab,
    domain: str,
    result_type: ResultType | None,
    fragments: tuple[str, ...],
    loopback_clock: MockClock,
) -> None:
    with trio.fail_after(5):
        result = await fetch_from_lab(fetch_lab, domain)
    expected = fetch_lab.world.domain(domain).expect
    assert expected is not None
    assert expected.policy_error == result_type  # the world file agrees with this table
    if result_type is None:
        assert result.failure is None, result.failure
        assert result.policy is not None
        assert result.policy.mode is PolicyMode.ENFORCE
    else:
        assert_failure(result, result_type, *fragments)


async def test_lab_private_address_refused_without_allow_private(fetch_lab: Lab) -> None:
    result = await fetch_from_lab(fetch_lab, "good.fetch.example", allow_private=False)
    assert_failure(result, ResultType.STS_POLICY_FETCH_ERROR, "127.0.3.10", "--allow-private")
    assert fetch_lab.https_connections("127.0.3.10") == 0


async def test_demo_world_policy_hosts(demo_lab: Lab, loopback_clock: MockClock) -> None:
    """Every demo domain with a usable record gets the policy outcome its expectation names."""
    domains = [
        domain
        for domain in demo_lab.world.domains
        if domain.expect is not None and domain.expect.policy_type == "sts"
    ]
    outcomes: dict[str, PolicyFetch] = {}

    async def one(name: str) -> None:
        outcomes[name] = await fetch_from_lab(demo_lab, name)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for domain in domains:
                nursery.start_soon(one, domain.name)
    assert domains
    for domain in domains:
        assert domain.expect is not None
        failure = outcomes[domain.name].failure
        got = failure.result_type if failure is not None else None
        assert got == domain.expect.policy_error, (domain.name, failure)


async def test_lab_wrong_content_type_keeps_the_served_text(
    fetch_lab: Lab, loopback_clock: MockClock
) -> None:
    """RFC 8460 §4.5: the report's policy-string shows the policy as served, even when rejected."""
    with trio.fail_after(5):
        result = await fetch_from_lab(fetch_lab, "content-type.fetch.example")
    assert result.failure is not None
    assert result.failure.result_type is ResultType.STS_POLICY_INVALID
    assert result.text is not None
    assert "version: STSv1" in result.text


async def test_waiting_for_a_dns_slot_is_not_a_policy_host_timeout(
    fetch_world: World, tmp_path: Path, loopback_clock: MockClock
) -> None:
    """Under full load lookups queue for the resolver's slots: that wait is the scanner's own.

    One lookup in flight at a time, 0.15 s per DNS round trip: the sixth domain's
    policy-host lookups wait about 1.5 s for a slot, three times the 0.5 s step
    deadline, yet each lookup answers in 0.15 s once sent. No fetch may say its DNS
    lookup timed out.
    """
    domains = [
        "good.fetch.example",
        "content-type.fetch.example",
        "not-found.fetch.example",
        "invalid.fetch.example",
        "redirect.fetch.example",
        "oversize.fetch.example",
    ]
    async with open_lab(fetch_world, workdir=tmp_path / "lab", latency=0.15) as lab:
        host, port = lab.resolver
        resolver = Resolver.create([Nameserver(host, port)], timeout=0.5, max_in_flight=1)
        trust = TrustStore.from_files([lab.ca_file], include_certifi=False)
        tls = TlsClient(build_client_context(), trust)
        gate = Gate(allow_private=True)
        outcomes: dict[str, PolicyFetch] = {}

        async def one(domain: str) -> None:
            outcomes[domain] = await fetch_policy(
                domain,
                resolver=resolver,
                tls=tls,
                settings=FetchSettings(https_port=lab.https_port, timeout=0.5),
                now=datetime.now(UTC),
                gate=gate,
            )

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for domain in domains:
                    nursery.start_soon(one, domain)
    for domain in domains:
        expected = fetch_world.domain(domain).expect
        assert expected is not None
        failure = outcomes[domain].failure
        assert (failure.result_type if failure else None) == expected.policy_error, (
            domain,
            failure,
        )
        assert failure is None or "DNS lookup" not in failure.detail, (domain, failure)
