"""`scanner tlsrpt serve`: the decisions (tables, properties) and real POSTs over loopback.

The receiver runs in the test's trio loop on 127.0.0.1 (plain HTTP and HTTPS with a
trustme certificate); the client is h11 over trio, as a sending MTA's HTTP client
would be. The command itself runs as a subprocess for the signal and usage tests.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trustme
from commands import process_of, run_command
from hypothesis import given
from hypothesis import strategies as st
from test_received_builders import POLICY_DOMAIN, clean_report, report_bytes, report_dict

from scanner.received.authenticity import AuthMethod
from scanner.received.evidence import received_evidence
from scanner.received.intake import (
    Accepted,
    Head,
    MediaType,
    Reply,
    TokenBuckets,
    accept_body,
    check_head,
    source_address,
)
from scanner.received.limits import ReceivedLimits
from scanner.received.serve import (
    Receiver,
    ServeEvent,
    ServeSettings,
    StoreWriter,
    parse_listen,
    serve_reports,
)
from scanner.received.store import ReportStore, load_domain_reports

NOW = datetime(2026, 4, 3, 12, 0, tzinfo=UTC)
GZIP = MediaType.GZIP.value
JSON = MediaType.JSON.value
SMALL = ReceivedLimits(max_compressed_bytes=64 * 1024, max_decompressed_bytes=256 * 1024)


# ---------------------------------------------------------------- decisions


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(Head("POST", "/", GZIP, 100), MediaType.GZIP, id="gzip"),
        pytest.param(
            Head("POST", "/x", "Application/TLSRPT+JSON; charset=utf-8", None),
            MediaType.JSON,
            id="json-params",
        ),
        pytest.param(Head("GET", "/", GZIP, 0), 405, id="get"),
        pytest.param(Head("PUT", "/", GZIP, 10), 405, id="put"),
        pytest.param(Head("POST", "/", "application/json", 10), 415, id="plain-json"),
        pytest.param(Head("POST", "/", "application/gzip", 10), 415, id="plain-gzip"),
        pytest.param(Head("POST", "/", None, 10), 415, id="no-type"),
        pytest.param(
            Head("POST", "/", GZIP, SMALL.max_compressed_bytes), MediaType.GZIP, id="at-limit"
        ),
        pytest.param(Head("POST", "/", GZIP, SMALL.max_compressed_bytes + 1), 413, id="over-limit"),
    ],
)
def test_check_head(head: Head, expected: MediaType | int) -> None:
    result = check_head(head, SMALL)
    if isinstance(expected, int):
        assert isinstance(result, Reply)
        assert result.status == expected
        assert result.reason
        assert (result.allow == "POST") == (expected == 405)
    else:
        assert result is expected


def bomb(size: int) -> bytes:
    return gzip.compress(b"{" + b" " * size + b"}", compresslevel=9, mtime=0)


ALLOWED = frozenset({POLICY_DOMAIN})


@pytest.mark.parametrize(
    ("kind", "body", "status"),
    [
        pytest.param(MediaType.GZIP, report_bytes(report_dict()), None, id="gzip-report"),
        pytest.param(
            MediaType.JSON, report_bytes(report_dict(), gzipped=False), None, id="json-report"
        ),
        pytest.param(
            MediaType.GZIP,
            report_bytes(report_dict(), gzipped=False),
            400,
            id="gzip-declared-json-sent",
        ),
        pytest.param(
            MediaType.JSON, report_bytes(report_dict()), 400, id="json-declared-gzip-sent"
        ),
        pytest.param(MediaType.GZIP, bomb(SMALL.max_decompressed_bytes + 1), 413, id="gzip-bomb"),
        pytest.param(
            MediaType.GZIP,
            bomb(SMALL.max_decompressed_bytes - 2),
            400,
            id="inflates-within-limit-not-report",
        ),
        pytest.param(MediaType.GZIP, report_bytes(report_dict())[:40], 400, id="truncated-gzip"),
        pytest.param(MediaType.JSON, b"", 400, id="empty"),
        pytest.param(MediaType.JSON, b'{"organization-name": "x"}', 400, id="not-a-report"),
        pytest.param(
            MediaType.GZIP,
            report_bytes(report_dict(domain="other.example")),
            403,
            id="foreign-domain",
        ),
        pytest.param(
            MediaType.GZIP,
            report_bytes(report_dict(domain="Company-Y.Example.")),
            None,
            id="domain-case-and-dot",
        ),
    ],
)
def test_accept_body(kind: MediaType, body: bytes, status: int | None) -> None:
    result = accept_body(kind, body, ALLOWED, SMALL)
    if status is None:
        assert isinstance(result, Accepted), result
    else:
        assert isinstance(result, Reply)
        assert result.status == status, result.reason


def test_a_json_body_over_the_inflated_limit_is_too_large_not_bad() -> None:
    body = report_bytes(report_dict(), gzipped=False)
    limits = ReceivedLimits(max_decompressed_bytes=len(body) - 1)
    result = accept_body(MediaType.JSON, body, ALLOWED, limits)
    assert isinstance(result, Reply)
    assert result.status == 413
    assert f"reads at most {len(body) - 1}" in result.reason
    twin = accept_body(
        MediaType.JSON, body, ALLOWED, ReceivedLimits(max_decompressed_bytes=len(body))
    )
    assert isinstance(twin, Accepted)


def test_foreign_domain_reason_names_it_visibly() -> None:
    result = accept_body(
        MediaType.GZIP, report_bytes(report_dict(domain="evil\x1b[2J.example")), ALLOWED, SMALL
    )
    assert isinstance(result, Reply)
    assert result.status == 403
    assert "\x1b" not in result.reason
    assert "evil\\x1b[2j.example" in result.reason


def test_token_bucket_burst_then_refill() -> None:
    buckets = TokenBuckets(rate=0.5, burst=3)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == pytest.approx(2.0)  # one token takes 2 s
    assert buckets.take("b", 0.0) == 0.0  # another source has its own bucket
    assert buckets.take("a", 2.0) == 0.0
    assert buckets.take("a", 2.0) > 0


def test_token_bucket_table_is_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_sources=100)
    for number in range(1000):
        buckets.take(f"192.0.2.{number}", 0.0)
    assert len(buckets) == 100


@given(
    rate=st.floats(0.01, 10.0),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=200),
)
def test_token_bucket_never_allows_more_than_burst_plus_refill(
    rate: float, burst: int, gaps: list[float]
) -> None:
    buckets = TokenBuckets(rate=rate, burst=burst)
    now = 0.0
    allowed = 0
    for gap in gaps:
        now += gap
        if buckets.take("a", now) == 0.0:
            allowed += 1
    assert allowed <= burst + now * rate + 1e-6


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        pytest.param("192.0.2.1", [], frozenset(), "192.0.2.1", id="direct"),
        pytest.param(
            "192.0.2.1",
            ["198.51.100.7"],
            frozenset(),
            "192.0.2.1",
            id="untrusted-peer-header-ignored",
        ),
        pytest.param(
            "127.0.0.1", ["198.51.100.7"], frozenset({"127.0.0.1"}), "198.51.100.7", id="proxy"
        ),
        pytest.param(
            "127.0.0.1",
            ["10.0.0.1, 198.51.100.7"],
            frozenset({"127.0.0.1"}),
            "198.51.100.7",
            id="last-hop",
        ),
        pytest.param("127.0.0.1", ["junk"], frozenset({"127.0.0.1"}), "127.0.0.1", id="proxy-junk"),
        pytest.param("127.0.0.1", [], frozenset({"127.0.0.1"}), "127.0.0.1", id="proxy-no-header"),
    ],
)
def test_source_address(
    peer: str, forwarded: list[str], trusted: frozenset[str], expected: str
) -> None:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    assert source_address(peer, headers, trusted) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8443", ("127.0.0.1", 8443)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8443", ":8443", "127.0.0.1:x", "127.0.0.1:70000"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--listen"):
        parse_listen(text)


# ---------------------------------------------------------------- over loopback


@dataclass
class Server:
    port: int
    database: Path
    stop: trio.Event
    events: list[ServeEvent]
    client_tls: ssl.SSLContext | None = None
    stopped: trio.Event = field(default_factory=trio.Event)
    receiver: Receiver | None = None


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@asynccontextmanager
async def running(
    tmp_path: Path, ca: trustme.CA | None = None, **changes: Any
) -> AsyncIterator[Server]:
    settings = ServeSettings(allowed_domains=ALLOWED, **changes)
    database = tmp_path / "reports.sqlite"
    events: list[ServeEvent] = []
    tls = server_context(ca) if ca is not None else None
    receiver = Receiver(settings, StoreWriter(database, lambda: NOW), events.append, tls)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server = Server(
        listeners[0].socket.getsockname()[1],
        database,
        trio.Event(),
        events,
        client_context(ca) if ca is not None else None,
        receiver=receiver,
    )

    async def serve() -> None:
        await serve_reports(receiver, listeners, server.stop)
        server.stopped.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        yield server
        server.stop.set()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


async def connect(server: Server, source: str = "127.0.0.1") -> trio.abc.Stream:
    """A connection to the server from `source` (any address of 127.0.0.0/8 is this host's)."""
    stream: trio.abc.Stream = await trio.open_tcp_stream(
        "127.0.0.1", server.port, local_address=source
    )
    if server.client_tls is not None:
        stream = trio.SSLStream(stream, server.client_tls, server_hostname="localhost")
    return stream


def request_bytes(
    connection: h11.Connection,
    body: bytes,
    *,
    content_type: str | None = GZIP,
    method: str = "POST",
    length: int | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    headers = [
        ("host", "tlsrpt.company-y.example"),
        ("content-length", str(len(body) if length is None else length)),
    ]
    if content_type is not None:
        headers.append(("content-type", content_type))
    headers += extra or []
    return connection.send(h11.Request(method=method, target="/v1/tlsrpt", headers=headers)) or b""


async def read_answer(stream: trio.abc.Stream, connection: h11.Connection) -> Answer:
    status = 0
    headers: dict[str, str] = {}
    body = b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return Answer(status, headers, body.decode())


async def post(server: Server, body: bytes, source: str = "127.0.0.1", **options: Any) -> Answer:
    stream = await connect(server, source)
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        data = request_bytes(connection, body, **options)
        if options.get("length") is None:
            data += (connection.send(h11.Data(data=body)) or b"") + (
                connection.send(h11.EndOfMessage()) or b""
            )
        await stream.send_all(data)
        return await read_answer(stream, connection)


def stored(database: Path) -> int:
    if not database.exists():
        return 0
    with ReportStore.open(database, create=False) as store:
        return len(store.reports())


async def test_https_post_is_stored_and_counts_for_readiness(
    tmp_path: Path, ca: trustme.CA
) -> None:
    async with running(
        tmp_path, ca, destinations=frozenset({"https://tlsrpt.company-y.example/v1/tlsrpt"})
    ) as server:
        answer = await post(server, report_bytes(report_dict()))
        assert answer.status == 200, answer.body
        assert answer.headers["connection"] == "close"
        assert "stored" in answer.body
        again = await post(server, report_bytes(report_dict(), gzipped=False), content_type=JSON)
        assert again.status == 200
        assert "already stored" in again.body
    reports = load_domain_reports(server.database, POLICY_DOMAIN)
    assert len(reports.reports) == 1
    authenticity = reports.reports[0].authenticity
    assert authenticity.method is AuthMethod.HTTPS_RECEIVER
    assert not authenticity.verified  # no DKIM: not "verified", but counted below
    assert reports.reports[0].origin == "https POST from 127.0.0.1"
    evidence = received_evidence(
        reports, POLICY_DOMAIN, NOW, rua=("https://tlsrpt.company-y.example/v1/tlsrpt",)
    )
    assert evidence.reports == 1
    assert evidence.unverified_reports == 0
    assert evidence.blockers  # 303 failed of 5629: the report's numbers count
    assert not any("rua" in warning.text for warning in evidence.warnings)


async def test_https_reports_without_the_receiver_still_need_the_flag(tmp_path: Path) -> None:
    """The twin: the same report imported from a file (NOT_EMAIL) is not counted."""
    from scanner.received.authenticity import NOT_EMAIL
    from scanner.received.records import Provenance
    from scanner.received.report import ParsedReport, parse_report

    parsed = parse_report(report_bytes(report_dict()))
    assert isinstance(parsed, ParsedReport)
    with ReportStore.open(tmp_path / "r.sqlite") as store:
        store.add(parsed, Provenance(NOT_EMAIL, "file"), NOW)
    evidence = received_evidence(
        load_domain_reports(tmp_path / "r.sqlite", POLICY_DOMAIN), POLICY_DOMAIN, NOW
    )
    assert (evidence.reports, evidence.unverified_reports) == (0, 1)


@pytest.mark.parametrize(
    ("options", "status", "words"),
    [
        pytest.param({"method": "GET"}, 405, "only POST", id="get"),
        pytest.param({"content_type": "application/json"}, 415, "Content-Type", id="wrong-type"),
        pytest.param({"content_type": None}, 415, "not none", id="no-type"),
        pytest.param({"length": 10 * 1024 * 1024}, 413, "at most", id="declared-too-large"),
    ],
)
async def test_bad_requests_get_4xx_with_a_reason(
    tmp_path: Path, ca: trustme.CA, options: dict[str, Any], status: int, words: str
) -> None:
    async with running(tmp_path, ca, limits=SMALL) as server:
        answer = await post(server, report_bytes(report_dict()), **options)
    assert answer.status == status
    assert words in answer.body
    if status == 405:
        assert answer.headers["allow"] == "POST"
    assert stored(server.database) == 0


# Each body is made when its test runs, not at collection in every test process: the
# bomb is 50 MiB compressed.
@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        pytest.param(lambda: bomb(50 * 1024 * 1024), 413, "inflates to more than", id="gzip-bomb"),
        pytest.param(
            lambda: b"\x1f\x8b" + os.urandom(100 * 1024), 413, "at most", id="body-too-large"
        ),
        pytest.param(
            lambda: report_bytes(report_dict(domain="other.example")),
            403,
            "other.example",
            id="foreign-domain",
        ),
        pytest.param(
            lambda: report_bytes({"organization-name": "<b>x</b>"}),
            400,
            "not an RFC 8460 report",
            id="bad-report",
        ),
    ],
)
async def test_bad_bodies_are_refused_and_nothing_is_stored(
    tmp_path: Path, body: Callable[[], bytes], status: int, words: str
) -> None:
    async with running(tmp_path, limits=SMALL) as server:
        answer = await post(server, body())
        good = await post(server, report_bytes(report_dict()))  # the failing twin: still served
    assert answer.status == status, answer.body
    assert words in answer.body
    assert good.status == 200
    assert stored(server.database) == 1


async def test_concurrent_posts_are_all_stored(tmp_path: Path, ca: trustme.CA) -> None:
    answers: list[Answer] = []
    async with running(tmp_path, ca) as server, trio.open_nursery() as nursery:
        for number in range(24):
            body = report_bytes(
                clean_report(report_id=f"r{number}", organization=f"Org {number % 4}")
            )

            async def send(body: bytes = body, source: str = f"127.0.0.{10 + number}") -> None:
                answers.append(await post(server, body, source))

            nursery.start_soon(send)
    assert [answer.status for answer in answers] == [200] * 24
    assert stored(server.database) == 24


async def test_rate_limit_per_source(tmp_path: Path) -> None:
    async with running(tmp_path, rate=0.01, burst=2) as server:
        first = [
            await post(server, report_bytes(clean_report(report_id=f"r{n}"))) for n in range(2)
        ]
        third = await post(server, report_bytes(clean_report(report_id="r3")))
        forwarded = await post(
            server,
            report_bytes(clean_report(report_id="r4")),
            extra=[("x-forwarded-for", "198.51.100.7")],
        )
    assert [answer.status for answer in first] == [200, 200]
    assert third.status == 429
    assert int(third.headers["retry-after"]) >= 1
    assert forwarded.status == 429  # the header is not believed from an untrusted peer
    assert stored(server.database) == 2


async def test_rate_limit_behind_a_trusted_proxy(tmp_path: Path) -> None:
    async with running(
        tmp_path, rate=0.01, burst=1, trusted_proxies=frozenset({"127.0.0.1"})
    ) as server:
        answers = [
            await post(
                server,
                report_bytes(clean_report(report_id=f"r{n}")),
                extra=[("x-forwarded-for", client)],
            )
            for n, client in enumerate(["198.51.100.1", "198.51.100.2", "198.51.100.1"])
        ]
    assert [answer.status for answer in answers] == [200, 200, 429]


async def test_slow_request_gets_408(tmp_path: Path) -> None:
    async with running(tmp_path, request_timeout=0.5) as server:
        stream = await connect(server)
        async with stream:
            connection = h11.Connection(h11.CLIENT)
            await stream.send_all(request_bytes(connection, b"x" * 100))
            answer = await read_answer(stream, connection)
    assert answer.status == 408


async def test_shutdown_finishes_requests_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    body = report_bytes(report_dict())
    async with running(tmp_path, shutdown_grace=1.0) as server:
        slow = await connect(server)
        stuck = await connect(server)
        slow_connection = h11.Connection(h11.CLIENT)
        stuck_connection = h11.Connection(h11.CLIENT)
        await slow.send_all(request_bytes(slow_connection, body) + body[:50])
        await stuck.send_all(request_bytes(stuck_connection, body) + body[:50])
        await trio.sleep(0.2)
        started = trio.current_time()
        server.stop.set()
        await trio.sleep(0.2)
        with pytest.raises(OSError, match=r"refused|connect"):  # the listener is closed
            await trio.open_tcp_stream("127.0.0.1", server.port)
        await slow.send_all(body[50:])
        answer = await read_answer(slow, slow_connection)
        assert answer.status == 200  # finished within the grace period, and stored
        with trio.fail_after(5):
            await server.stopped.wait()  # the stuck one is cancelled at the deadline
        assert 0.9 < trio.current_time() - started < 4.5  # the grace, not the fail_after
        await slow.aclose()
        await stuck.aclose()
    assert stored(server.database) == 1


async def test_retention_deletes_old_reports(tmp_path: Path) -> None:
    from scanner.received.authenticity import HTTPS_RECEIVED
    from scanner.received.records import Provenance
    from scanner.received.report import ParsedReport, parse_report

    database = tmp_path / "r.sqlite"
    with ReportStore.open(database) as store:
        for day in ("2026-01-01", "2026-03-30"):
            parsed = parse_report(report_bytes(report_dict(day=day, report_id=day)))
            assert isinstance(parsed, ParsedReport)
            store.add(parsed, Provenance(HTTPS_RECEIVED, "test"), NOW)
    writer = StoreWriter(database, lambda: NOW)
    assert await writer.purge(30) == 1
    assert await writer.purge(30) == 0
    with ReportStore.open(database) as store:
        assert [r.report.report_id for r in store.reports()] == ["2026-03-30"]
    assert NOW - timedelta(days=30) > datetime(2026, 1, 2, tzinfo=UTC)


# ---------------------------------------------------------------- the command


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "scanner", "tlsrpt", "serve", *args]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(
            ["--listen", "0.0.0.0:0", "--domain", POLICY_DOMAIN],
            "plain HTTP only on a loopback",
            id="plain-not-loopback",
        ),
        pytest.param(
            ["--listen", "127.0.0.1", "--domain", POLICY_DOMAIN], "HOST:PORT", id="no-port"
        ),
        pytest.param(
            ["--listen", "127.0.0.1:0", "--domain", POLICY_DOMAIN, "--tls-cert", "x.pem"],
            "both",
            id="cert-without-key",
        ),
        pytest.param(
            ["--listen", "127.0.0.1:0", "--domain", POLICY_DOMAIN, "--trusted-proxy", "proxy"],
            "not an IP",
            id="proxy-name",
        ),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], words: str) -> None:
    done = run_command("tlsrpt", "serve", *args, "--db", str(tmp_path / "r.sqlite"))
    assert done.returncode == 2
    assert words in done.stderr


async def test_command_serves_https_and_stops_on_sigterm(tmp_path: Path, ca: trustme.CA) -> None:
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    database = tmp_path / "r.sqlite"
    async with process_of(
        command(
            "--listen",
            "127.0.0.1:0",
            "--domain",
            POLICY_DOMAIN,
            "--tls-cert",
            str(pem),
            "--tls-key",
            str(pem),
            "--db",
            str(database),
            "--keep-days",
            "3650",
        ),
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "300"},
    ) as process:
        assert process.stderr is not None
        output = b""
        with trio.fail_after(60):
            while b"listening on https://127.0.0.1:" not in output or not output.endswith(b"\n"):
                chunk = await process.stderr.receive_some(4096)
                assert chunk, output
                output += chunk
        port = int(output.split(b"https://127.0.0.1:")[1].split(b"/")[0])
        server = Server(port, database, trio.Event(), [], client_context(ca))
        answer = await post(
            server, report_bytes(report_dict(organization="<img src=x onerror=alert(1)>"))
        )
        assert answer.status == 200, answer.body
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            code = await process.wait()
        while chunk := await process.stderr.receive_some(4096):
            output += chunk
    assert code == 0
    text = output.decode()
    assert "127.0.0.1 200 stored" in text
    assert "stopped" in text
    assert stored(database) == 1
    assert json.loads(json.dumps(text))  # printable
