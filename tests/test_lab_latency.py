"""The lab's latency option: every round trip of every server grows by the delay, and 0 adds nothing.

These tests measure round trips over real loopback sockets on virtual time
(`loopback_clock`): a delayed reply can never come early, so the lower bounds are
exact, and the clock stands still while the machine computes, so the upper bounds
hold however loaded it is. The command-line test measures a real `lab serve`
process with the real clock (time.perf_counter), best of a few tries.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.query
import h11
import pytest
import trio
from trio.testing import MockClock

from scanner.lab import Lab, open_lab, parse_world
from scanner.lab.latency import delayed_sends

DELAY = 0.2
SLACK = 0.1  # what loopback, TLS and Python may add to a round trip (best of TRIES)
TRIES = 3
STEP = 10.0
ROUNDING = 1e-9  # a difference of two float clock readings may miss the delay by that much

WORLD = """
[domains."slow.example"]
dns."@" = { mx = ["10 mx.slow.example"] }
servers = [{ hostname = "mx.slow.example", address = "127.0.44.1" }]
policy = { address = "127.0.44.2", body = "version: STSv1\\nmode: none\\nmax_age: 1\\n" }

[domains."late.example"]
dns."@" = { mx = ["10 mx.late.example"] }
servers = [{ hostname = "mx.late.example", address = "127.0.44.3", behaviour = "late-injection" }]
"""
MX = ("127.0.44.1", "mx.slow.example")
POLICY = ("127.0.44.2", "mta-sts.slow.example")
LATE_MX = "127.0.44.3"


@pytest.fixture(params=[0.0, DELAY], ids=["no-latency", "latency-200ms"])
async def lab(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Lab]:
    async with open_lab(parse_world(WORLD), tmp_path, latency=request.param) as served:
        yield served


async def best_of(measure: Callable[[], Awaitable[float]]) -> tuple[float, float]:
    """The shortest and the longest of TRIES measurements (seconds)."""
    times = [await measure() for _ in range(TRIES)]
    return min(times), max(times)


def check(times: tuple[float, float], delay: float, step: str = "round trip") -> None:
    """Every try took at least `delay`; the best one no more than `delay` + SLACK."""
    shortest, _ = times
    assert shortest >= delay - ROUNDING, (
        f"{step}: {shortest:.3f} s is shorter than the delay {delay} s"
    )
    assert shortest < delay + SLACK, f"{step}: {shortest:.3f} s is over {delay} s + {SLACK} s"


class Replies:
    """SMTP replies from a stream (a reply ends at a line whose fourth byte is a space)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = await self.stream.receive_some(4096)
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    async def reply(self) -> bytes:
        lines = [await self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(await self.line())
        return b"\r\n".join(lines)


def client_context(lab: Lab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(lab.ca_file))


def lab_delay(request: pytest.FixtureRequest) -> float:
    return float(request.node.callspec.params["lab"])


# ---------------------------------------------------------------- each server, each round trip


async def test_dns_udp_round_trip(
    loopback_clock: MockClock, lab: Lab, request: pytest.FixtureRequest
) -> None:
    query = dns.message.make_query("slow.example", "MX")

    async def measure() -> float:
        began = trio.current_time()
        response = await dns.asyncquery.udp(
            query, lab.resolver[0], port=lab.resolver[1], timeout=STEP
        )
        assert response.answer
        return trio.current_time() - began

    check(await best_of(measure), lab_delay(request))


async def test_dns_tcp_round_trip(
    loopback_clock: MockClock, lab: Lab, request: pytest.FixtureRequest
) -> None:
    query = dns.message.make_query("slow.example", "MX")

    async def measure() -> float:
        began = trio.current_time()
        response = await dns.asyncquery.tcp(
            query, lab.resolver[0], port=lab.resolver[1], timeout=STEP
        )
        assert response.answer
        return trio.current_time() - began

    # The connection is set up by the kernel, so only the query's round trip is delayed.
    check(await best_of(measure), lab_delay(request))


async def test_smtp_round_trips(
    loopback_clock: MockClock, lab: Lab, request: pytest.FixtureRequest
) -> None:
    """Greeting, EHLO, STARTTLS, the TLS handshake and EHLO over TLS: each one delay, no more."""
    address, hostname = MX
    delay = lab_delay(request)
    steps: dict[str, list[float]] = {}

    def lap(name: str, began: float) -> float:
        now = trio.current_time()
        steps.setdefault(name, []).append(now - began)
        return now

    for _ in range(TRIES):
        with trio.fail_after(STEP):
            began = trio.current_time()
            stream = await trio.open_tcp_stream(address, lab.smtp_port)
            async with stream:
                replies = Replies(stream)
                assert (await replies.reply()).startswith(b"220 ")
                began = lap("greeting", began)
                await stream.send_all(b"EHLO client.example\r\n")
                assert b"STARTTLS" in await replies.reply()
                began = lap("ehlo", began)
                await stream.send_all(b"STARTTLS\r\n")
                assert (await replies.reply()).startswith(b"220 ")
                began = lap("starttls", began)
                tls = trio.SSLStream(stream, client_context(lab), server_hostname=hostname)
                await tls.do_handshake()  # TLS 1.3: one round trip
                began = lap("handshake", began)
                # The server's session tickets follow its flight; they must not hold up this reply.
                await tls.send_all(b"EHLO client.example\r\n")
                assert (await Replies(tls).reply()).startswith(b"250-")
                lap("ehlo-over-tls", began)
                await tls.send_all(b"QUIT\r\n")

    for name, times in steps.items():
        assert len(times) == TRIES, name
        check((min(times), max(times)), delay, name)


async def test_https_round_trips(
    loopback_clock: MockClock, lab: Lab, request: pytest.FixtureRequest
) -> None:
    address, hostname = POLICY
    delay = lab_delay(request)
    handshakes: list[float] = []
    exchanges: list[float] = []
    for _ in range(TRIES):
        with trio.fail_after(STEP):
            stream = await trio.open_tcp_stream(address, lab.https_port)
            tls = trio.SSLStream(stream, client_context(lab), server_hostname=hostname)
            async with tls:
                began = trio.current_time()
                await tls.do_handshake()
                handshakes.append(trio.current_time() - began)
                client = h11.Connection(h11.CLIENT)
                request_bytes = client.send(
                    h11.Request(
                        method="GET",
                        target="/.well-known/mta-sts.txt",
                        headers=[("Host", hostname), ("Connection", "close")],
                    )
                )
                began = trio.current_time()
                await tls.send_all(request_bytes + (client.send(h11.EndOfMessage()) or b""))
                body = b""
                while True:
                    event = client.next_event()
                    if event is h11.NEED_DATA:
                        client.receive_data(bytes(await tls.receive_some(65536)))
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                exchanges.append(trio.current_time() - began)
                assert body.startswith(b"version: STSv1")
    check((min(handshakes), max(handshakes)), delay)
    check((min(exchanges), max(exchanges)), delay)  # headers, body and end: one flight


# ---------------------------------------------------------------- a link, not a slow server


@pytest.mark.parametrize("delay", [pytest.param(DELAY, id="latency-200ms")])
async def test_replies_in_flight_side_by_side(
    loopback_clock: MockClock, tmp_path: Path, delay: float
) -> None:
    """Twenty DNS queries at once all come back after one delay, not twenty."""
    async with open_lab(parse_world(WORLD), tmp_path, latency=delay) as lab:
        query = dns.message.make_query("slow.example", "MX")
        answered = 0

        async def ask() -> None:
            nonlocal answered
            await dns.asyncquery.udp(query, lab.resolver[0], port=lab.resolver[1], timeout=STEP)
            answered += 1

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(ask)
        elapsed = trio.current_time() - began
    assert answered == 20
    assert delay - ROUNDING <= elapsed < 2 * delay


@pytest.mark.parametrize(
    "delay", [pytest.param(0.0, id="no-latency"), pytest.param(DELAY, id="latency-200ms")]
)
async def test_spacing_between_writes_is_kept(
    loopback_clock: MockClock, tmp_path: Path, delay: float
) -> None:
    """Late injection writes 20 ms after its 220: the client still sees 20 ms, not 20 ms + delay."""
    async with open_lab(parse_world(WORLD), tmp_path, latency=delay) as lab:
        with trio.fail_after(STEP):
            stream = await trio.open_tcp_stream(LATE_MX, lab.smtp_port)
            async with stream:
                replies = Replies(stream)
                await replies.reply()
                await stream.send_all(b"EHLO client.example\r\n")
                await replies.reply()
                await stream.send_all(b"STARTTLS\r\n")
                assert (await replies.reply()).startswith(b"220 ")
                ready = trio.current_time()
                assert await replies.line() == b"250 injected"
                gap = trio.current_time() - ready
    assert gap < delay / 2 + 0.05 if delay else gap < 0.1


async def test_session_ends_after_the_last_reply_arrives(
    loopback_clock: MockClock, tmp_path: Path
) -> None:
    """QUIT's 221 is still delivered when the server closes right after sending it."""
    async with open_lab(parse_world(WORLD), tmp_path, latency=DELAY) as lab:
        with trio.fail_after(STEP):
            stream = await trio.open_tcp_stream(MX[0], lab.smtp_port)
            async with stream:
                replies = Replies(stream)
                await replies.reply()
                await stream.send_all(b"QUIT\r\n")
                assert (await replies.reply()).startswith(b"221 ")


async def test_zero_latency_wraps_nothing() -> None:
    left, _ = trio.testing.memory_stream_pair()
    async with delayed_sends(left, 0) as link:
        assert link is left
    async with delayed_sends(left, 0.01) as link:
        assert link is not left


async def test_negative_latency_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="latency"):
        async with open_lab(parse_world(WORLD), tmp_path, latency=-0.1):
            pass


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("latency_ms", "delay"),
    [pytest.param("0", 0.0, id="no-latency"), pytest.param("200", DELAY, id="latency-200ms")],
)
def test_lab_serve_latency_option(tmp_path: Path, latency_ms: str, delay: float) -> None:
    world = tmp_path / "world.toml"
    world.write_text(WORLD, encoding="utf-8")
    lab = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scanner",
            "lab",
            "serve",
            str(world),
            "--workdir",
            str(tmp_path / "lab"),
            "--latency-ms",
            latency_ms,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert lab.stdout is not None
        resolver = None
        for line in lab.stdout:
            match = re.match(r"resolver:\s+([\d.]+):(\d+)", line)
            if match:
                resolver = match.group(1), int(match.group(2))
                break
        assert resolver is not None
        query = dns.message.make_query("slow.example", "MX")
        times = []
        for _ in range(TRIES):
            began = time.perf_counter()
            dns.query.udp(query, resolver[0], port=resolver[1], timeout=STEP)
            times.append(time.perf_counter() - began)
        check((min(times), max(times)), delay)
    finally:
        lab.terminate()
        lab.wait(timeout=STEP)
        if lab.stdout is not None:
            lab.stdout.close()
