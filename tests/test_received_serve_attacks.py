"""`scanner tlsrpt serve` against hostile senders, built as an attacker would build them.

Each test starts the receiver on loopback, runs one attack with real POSTs (from
127.0.0.2, the attacker; good reports come from 127.0.0.3 and later addresses:
any address of 127.0.0.0/8 is this host's), and checks that the attack is refused
and that a good report sent while it runs is stored. Tests that wait out a
deadline run on `loopback_clock` (virtual time: a 10 s head deadline takes
milliseconds, and a busy machine never expires one).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trustme
from test_received_builders import clean_report, report_bytes, report_dict
from test_received_serve import (
    JSON,
    NOW,
    Answer,
    ca,
    connect,
    post,
    read_answer,
    request_bytes,
    running,
    stored,
)
from trio.testing import MockClock

from scanner.received.intake import source_key
from scanner.received.serve import MAX_HEADER_BYTES, StoreWriter
from scanner.received.store import ReportStore

__all__ = ["ca"]  # the module's CA fixture, shared

ATTACKER = "127.0.0.2"
GOOD = "127.0.0.3"


def good_report(number: int = 0) -> bytes:
    return report_bytes(clean_report(report_id=f"good-{number}"))


def with_unknown_key(text: bytes) -> bytes:
    """The RFC-shaped report, `"x-extension": <text>` added: no allowlist trick needed."""
    report = json.dumps(report_dict()).encode()
    return report[:-1] + b', "x-extension": ' + text + b"}"


# ---------------------------------------------------------------- bodies that cost the parser


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        pytest.param(
            with_unknown_key(b"[" * 970 + b"]" * 970),
            JSON,
            400,
            "nested more than 32 deep",
            id="deep-nesting-2kb",
        ),
        pytest.param(
            with_unknown_key(b"1e999999"),
            JSON,
            400,
            "1e999999 is not a finite number",
            id="infinite-number",
        ),
        pytest.param(
            json.dumps({**report_dict(), "policies": []}).encode(),
            JSON,
            400,
            "policies: empty",
            id="no-policies",
        ),
        pytest.param(
            gzip.compress(with_unknown_key(b"[" + b"{}," * (7 * 1024 * 1024) + b"{}]"), 9),
            "application/tlsrpt+gzip",
            413,
            "inflates to more than 4194304 bytes",
            id="width-bomb-20mib",
        ),
        pytest.param(
            gzip.compress(with_unknown_key(b"[" + b"{}," * (1024 * 1024) + b"{}]"), 9),
            "application/tlsrpt+gzip",
            400,
            "more than 200000 values",
            id="width-bomb-within-the-size-cap",
        ),
        pytest.param(
            gzip.compress(b"", mtime=0) * (5 * 1024 * 1024 // 20),
            "application/tlsrpt+gzip",
            413,
            "more than 16 members",
            id="262k-gzip-members",
        ),
        pytest.param(
            with_unknown_key(b'"x"')
            .replace(b"2026-04-01T00:00:00Z", b"0001-01-01T00:00:00Z")
            .replace(b"2026-04-01T23:59:59Z", b"9999-12-31T23:59:59Z"),
            JSON,
            400,
            "date-range: it lasts",
            id="range-0001-to-9999",
        ),
    ],
)
async def test_a_hostile_body_is_refused_while_a_good_report_is_stored(
    tmp_path: Path, body: bytes, content_type: str, status: int, words: str
) -> None:
    answers: dict[str, Answer] = {}
    async with running(tmp_path) as server, trio.open_nursery() as nursery:

        async def attack() -> None:
            answers["attack"] = await post(server, body, ATTACKER, content_type=content_type)

        nursery.start_soon(attack)
        answers["good"] = await post(server, good_report(), GOOD)
    assert answers["attack"].status == status, answers["attack"].body
    assert words in answers["attack"].body
    assert answers["good"].status == 200, answers["good"].body
    assert stored(server.database) == 1  # and it reads back: nothing poisoned the database


async def test_unknown_keys_are_not_stored(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        answer = await post(server, with_unknown_key(b'{"note": "x" }'), content_type=JSON)
    assert answer.status == 200, answer.body
    with ReportStore.open(server.database, create=False) as store:
        (report,) = store.reports()
    import sqlite3

    connection = sqlite3.connect(server.database)
    (text,) = connection.execute("SELECT report_json FROM reports").fetchone()
    connection.close()
    assert "x-extension" not in text
    assert report.report.organization_name == "Company-X"


async def test_nesting_at_any_depth_is_refused_and_the_server_stays_up(tmp_path: Path) -> None:
    """Near the interpreter's recursion limit a deep report once parsed but failed when
    re-encoded, which ended the server; where exactly depends on the stack, so every
    depth around it is sent (each from its own address: the rate limit is not the test)."""
    answers: list[Answer] = []
    async with running(tmp_path) as server:
        for depth in range(900, 1001):
            body = with_unknown_key(b"[" * depth + b"]" * depth)
            source = f"127.0.2.{depth - 899}"
            answers.append(await post(server, body, source, content_type=JSON))
        good = await post(server, good_report(), GOOD)
    assert {(answer.status, answer.body) for answer in answers} == {
        (400, "not an RFC 8460 report: the report is not JSON we read: nested more than 32 deep\n")
    }
    assert good.status == 200


# ---------------------------------------------------------------- bugs cost one request


async def test_an_unexpected_failure_answers_500_and_the_service_goes_on(tmp_path: Path) -> None:
    """A bug one request finds (here: the injected clock fails once) costs that request."""
    calls: list[int] = []

    def clock() -> datetime:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("clock \x1b[2J broken")
        return NOW

    async with running(tmp_path) as server:
        server.receiver.writer = StoreWriter(server.database, clock)
        first = await post(server, good_report(1))
        second = await post(server, good_report(2))
    assert first.status == 500
    assert "RuntimeError" not in first.body  # the operator's log says why, not the stranger
    assert second.status == 200, second.body
    (event,) = [event for event in server.events if event.status == 500]
    assert event.source == "127.0.0.1"
    assert "RuntimeError: clock \\x1b[2J broken" in event.detail
    assert stored(server.database) == 1


# ---------------------------------------------------------------- heads


@pytest.mark.parametrize(
    ("padding", "status"),
    [
        pytest.param(20 * 1024, 431, id="complete-20kib-head"),
        pytest.param(60 * 1024, 431, id="complete-60kib-head"),
        pytest.param(MAX_HEADER_BYTES - 400, 200, id="head-within-16kib"),
    ],
)
async def test_the_head_cap_holds_for_complete_heads(
    tmp_path: Path, padding: int, status: int
) -> None:
    async with running(tmp_path) as server:
        answer = await post(server, good_report(), extra=[("x-padding", "a" * padding)])
    assert answer.status == status, answer.body


# ---------------------------------------------------------------- slow and idle connections


async def trickle(
    server: Any, source: str, data: bytes, outcomes: list[str], per_byte: float = 1.0
) -> None:
    """A slowloris connection: `data` one byte per `per_byte` seconds; what became of it."""
    try:
        stream = await connect(server, source)
    except OSError:
        outcomes.append("not connected")
        return
    async with stream:
        try:
            for index in range(len(data)):
                await stream.send_all(data[index : index + 1])
                await trio.sleep(per_byte)
            outcomes.append("sent all")
        except (trio.BrokenResourceError, OSError):
            outcomes.append("cut")


def slow_head() -> bytes:
    return request_bytes(h11.Connection(h11.CLIENT), good_report())


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll `condition` every quarter of a (virtual) second: each poll lets the clock jump."""
    while not condition():  # noqa: ASYNC110 - the server's state, no event to wait on
        await trio.sleep(0.25)


async def attack_then_post(
    server: Any,
    attack: Callable[[trio.Nursery], Awaitable[None]],
    held: Callable[[], bool],
) -> Answer:
    """Start `attack`, wait until it holds what it takes, POST a good report, then stop."""
    async with trio.open_nursery() as nursery:
        await attack(nursery)
        await wait_for(held)
        answer = await post(server, good_report(), GOOD)
        nursery.cancel_scope.cancel()
    return answer


async def test_slowloris_from_one_address_leaves_room_for_others(
    tmp_path: Path, loopback_clock: MockClock
) -> None:
    outcomes: list[str] = []
    async with running(tmp_path) as server:

        async def attack(nursery: trio.Nursery) -> None:
            for _ in range(64):
                nursery.start_soon(trickle, server, ATTACKER, slow_head(), outcomes)

        sources = server.receiver.sources
        answer = await attack_then_post(server, attack, lambda: sources.held(ATTACKER) == 8)
    assert answer.status == 200, answer.body
    refused = [e for e in server.events if e.source == ATTACKER and e.status == 503]
    assert len(refused) >= 56  # the connections over 8 are answered 503 at once
    assert "too many connections from this address" in refused[0].detail


async def test_idle_tls_connections_from_one_address_leave_room_for_others(
    tmp_path: Path, ca: trustme.CA, loopback_clock: MockClock
) -> None:
    idle: list[trio.SocketStream] = []
    async with running(tmp_path, ca) as server:

        async def attack(nursery: trio.Nursery) -> None:
            for _ in range(64):
                idle.append(
                    await trio.open_tcp_stream("127.0.0.1", server.port, local_address=ATTACKER)
                )

        sources = server.receiver.sources
        answer = await attack_then_post(server, attack, lambda: sources.held(ATTACKER) == 8)
        for stream in idle:
            await stream.aclose()
    assert answer.status == 200, answer.body


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_the_head_has_a_deadline_even_when_bytes_keep_coming(
    tmp_path: Path, ca: trustme.CA, loopback_clock: MockClock, tls: bool
) -> None:
    outcomes: list[str] = []
    async with running(tmp_path, ca if tls else None, request_timeout=30.0) as server:
        started = trio.current_time()
        if tls:  # a TCP connection that never starts TLS: closed, unanswered, at the deadline
            stream = await trio.open_tcp_stream("127.0.0.1", server.port, local_address=ATTACKER)
            assert await stream.receive_some(100) == b""
            await stream.aclose()
        else:
            await trickle(server, ATTACKER, slow_head(), outcomes)
        ended = trio.current_time()
    # head_timeout (10 s), then the linger and the attacker's next byte; not request_timeout
    assert 10.0 <= ended - started < 15.0
    if not tls:
        assert outcomes == ["cut"]
        (event,) = server.events
        assert (event.status, event.detail) == (408, "the request head took longer than 10 s")


async def test_slowloris_from_many_addresses_holds_the_slots_for_head_timeout_only(
    tmp_path: Path, loopback_clock: MockClock
) -> None:
    outcomes: list[str] = []
    async with (
        running(tmp_path, max_connections=16, max_per_source=4) as server,
        trio.open_nursery() as nursery,
    ):
        for number in range(16):
            source = f"127.0.1.{number // 4 + 1}"
            nursery.start_soon(trickle, server, source, slow_head(), outcomes)
        connections = server.receiver.connections
        await wait_for(lambda: connections.borrowed_tokens == 16)
        started = trio.current_time()
        busy = await post(server, good_report(1), GOOD)
        await wait_for(lambda: connections.borrowed_tokens == 0)
        freed = trio.current_time() - started
        later = await post(server, good_report(2), GOOD)
    assert busy.status == 503
    assert freed < 12.0  # head_timeout (10 s) and the linger after the 408 (1 s)
    assert later.status == 200, later.body
    assert outcomes == ["cut"] * 16


async def test_a_trusted_proxy_is_capped_per_forwarded_address(tmp_path: Path) -> None:
    body = good_report()
    held: list[trio.abc.Stream] = []
    async with running(
        tmp_path, trusted_proxies=frozenset({"127.0.0.1"}), max_per_source=2
    ) as server:
        sources = server.receiver.sources
        for _ in range(2):  # the head, then a body that does not come
            stream = await connect(server)
            head = request_bytes(
                h11.Connection(h11.CLIENT), body, extra=[("x-forwarded-for", "198.51.100.7")]
            )
            await stream.send_all(head + body[:10])
            held.append(stream)
        await wait_for(lambda: sources.held("198.51.100.7") == 2)
        third = await post(server, body, extra=[("x-forwarded-for", "198.51.100.7")])
        other = await post(server, body, extra=[("x-forwarded-for", "198.51.100.8")])
        assert sources.held("127.0.0.1") == 0  # the proxy itself is not counted
        for stream in held:
            await stream.aclose()
    assert third.status == 503
    assert "from this address" in third.body
    assert other.status == 200, other.body


@pytest.mark.parametrize(
    ("address", "key"),
    [
        pytest.param("192.0.2.7", "192.0.2.7", id="ipv4"),
        pytest.param("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64", id="ipv6-by-64"),
        pytest.param("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64", id="same-64"),
        pytest.param("2001:db8:1:3::1", "2001:db8:1:3::/64", id="next-64"),
        pytest.param("::ffff:192.0.2.7", "192.0.2.7", id="ipv4-mapped"),
        pytest.param("unknown", "unknown", id="no-address"),
    ],
)
def test_source_key(address: str, key: str) -> None:
    assert source_key(address) == key


async def test_a_finished_request_frees_its_slots_at_once(
    tmp_path: Path, loopback_clock: MockClock
) -> None:
    """No linger after a request the client finished: the connection is closed and its
    slots go back once it is answered, even while the client keeps its end open."""
    body = good_report()
    async with running(tmp_path) as server:
        receiver = server.receiver
        stream = await connect(server, GOOD)
        connection = h11.Connection(h11.CLIENT)
        data = request_bytes(connection, body) + (connection.send(h11.Data(data=body)) or b"")
        await stream.send_all(data + (connection.send(h11.EndOfMessage()) or b""))
        answer = await read_answer(stream, connection)
        with trio.fail_after(0.5):
            await wait_for(lambda: receiver.connections.borrowed_tokens == 0)
            assert await stream.receive_some(100) == b""
        assert receiver.sources.held(GOOD) == 0
        await stream.aclose()
    assert answer.status == 200
