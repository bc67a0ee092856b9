"""`connect_tcp` and `TcpStream` over real loopback connections on 127.0.0.1.

`TcpStream` promises trio's stream contract, so the strongest test is trio's
own: `trio.testing.check_half_closeable_stream` on pairs of `TcpStream`s (a
connected pair, and a "clogged" pair whose kernel buffers are full both ways).
The tests after it pin the behaviours the scanner relies on one by one, each
with the observation that would change if the behaviour broke.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing
from trio.testing import MockClock, wait_all_tasks_blocked

from scanner.net.connect import TcpStream, connect_address, connect_tcp

HOST = "127.0.0.1"
# Real seconds after which a test that would otherwise hang fails instead.
STALL = 10

Pair = tuple[TcpStream, TcpStream]


async def tcp_pair() -> Pair:
    """(client from `connect_tcp`, server `TcpStream` over the accepted socket)."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(1)
        listener.setblocking(False)
        client = await connect_tcp(HOST, listener.getsockname()[1])
        await trio.lowlevel.wait_readable(listener)
        accepted, _ = listener.accept()
    return client, TcpStream(accepted)


async def fill(stream: TcpStream) -> None:
    """Send until the kernel's buffers are full and `send_all` blocks."""

    async def sender() -> None:
        while True:
            await stream.send_all(b"x" * 10_000)

    with trio.fail_after(STALL):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()


async def clogged_pair() -> Pair:
    left, right = await tcp_pair()
    await fill(left)
    await fill(right)
    return left, right


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    client, server = await tcp_pair()
    try:
        yield client, server
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts open descriptors in /proc"
)


# ---------------------------------------------------------------- trio's stream contract


async def test_trio_half_closeable_stream_contract() -> None:
    """Checkpoints, argument checks, busy/closed/broken errors, EOF, duplex, wakeups."""
    with trio.fail_after(STALL):
        await trio.testing.check_half_closeable_stream(tcp_pair, clogged_pair)


# ---------------------------------------------------------------- data


async def test_round_trip_with_a_trio_server() -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            async for data in stream:
                await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, echo, 0)
        port: int = listeners[0].socket.getsockname()[1]
        async with await connect_tcp(HOST, port) as client:
            await client.send_all(b"EHLO scanner.example\r\n")
            assert await receive_exactly(client, 22) == b"EHLO scanner.example\r\n"
            await client.send_all(memoryview(b"QUIT\r\n"))
            assert await receive_exactly(client, 6) == b"QUIT\r\n"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("how", ["send_eof", "aclose"])
async def test_end_of_stream_reads_as_empty_bytes(pair: Pair, how: str) -> None:
    client, server = pair
    await client.send_all(b"221 bye\r\n")
    await (client.send_eof() if how == "send_eof" else client.aclose())
    assert await receive_exactly(server, 9) == b"221 bye\r\n"
    assert await server.receive_some() == b""
    assert await server.receive_some() == b""


async def test_after_send_eof_the_other_direction_still_works(pair: Pair) -> None:
    client, server = pair
    await client.send_eof()
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"late")
    await server.send_all(b"still here")
    assert await receive_exactly(client, 10) == b"still here"


async def test_send_eof_again_is_quiet_even_after_a_reset(pair: Pair) -> None:
    """A second shutdown(SHUT_WR) on a reset connection fails (ENOTCONN); send_eof does not."""
    client, server = pair
    await client.send_eof()
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await server.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    await client.send_eof()


@pytest.mark.parametrize("typed", [False, True], ids=["bytes", "memoryview-of-ints"])
async def test_a_large_send_to_a_slow_reader_waits_and_arrives_whole(
    pair: Pair, typed: bool
) -> None:
    """Partial sends with waits between them; a view of 4-byte ints is counted in bytes."""
    client, server = pair
    data = random.Random(25).randbytes(8 * 2**20)
    finished = trio.Event()

    async def send() -> None:
        await client.send_all(memoryview(data).cast("I") if typed else data)
        finished.set()

    with trio.fail_after(STALL):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await wait_all_tasks_blocked()
            assert not finished.is_set()  # the kernel's buffers are full: send_all waits
            received = hashlib.sha256()
            size = 0
            while size < len(data):
                chunk = await server.receive_some(4096)
                received.update(chunk)
                size += len(chunk)
    assert finished.is_set()
    assert size == len(data)
    assert received.digest() == hashlib.sha256(data).digest()


# ---------------------------------------------------------------- errors


async def test_a_reset_by_the_peer_is_a_broken_resource(pair: Pair) -> None:
    client, server = pair
    # SO_LINGER 0: the close sends a reset instead of a FIN.
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await server.aclose()
    with pytest.raises(trio.BrokenResourceError) as caught:
        await client.receive_some()
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ECONNRESET
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"QUIT\r\n")


Operation = Callable[[TcpStream], Awaitable[object]]

OPERATIONS = [
    pytest.param(lambda stream: stream.receive_some(), id="receive_some"),
    pytest.param(lambda stream: stream.send_all(b"x"), id="send_all"),
    pytest.param(lambda stream: stream.send_all(b""), id="send_all-empty"),
    pytest.param(lambda stream: stream.send_eof(), id="send_eof"),
    pytest.param(
        lambda stream: stream.wait_send_all_might_not_block(), id="wait_send_all_might_not_block"
    ),
]


async def close_now(stream: TcpStream) -> None:
    """`TcpStream.close`, the synchronous close, where a test awaits a close."""
    stream.close()


CLOSES = [
    pytest.param(TcpStream.aclose, id="aclose"),
    pytest.param(close_now, id="close"),
]


@pytest.mark.parametrize("close", CLOSES)
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_use_after_aclose_is_a_closed_resource(
    pair: Pair, operation: Operation, close: Callable[[TcpStream], Awaitable[None]]
) -> None:
    client, _ = pair
    await close(client)
    await client.aclose()  # idempotent, after either
    client.close()
    assert client.socket.fileno() == -1
    with pytest.raises(trio.ClosedResourceError):
        await operation(client)


async def test_overlapping_receives_are_busy(pair: Pair) -> None:
    """The second receive runs while the first, which got data, takes its schedule point."""
    client, server = pair
    await server.send_all(b"xy")
    await trio.lowlevel.wait_readable(client.socket)
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some, 1)
            nursery.start_soon(client.receive_some, 1)


async def test_overlapping_sends_are_busy(pair: Pair) -> None:
    """The second send runs while the first, whose bytes went out, takes its schedule point."""
    client, _ = pair
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"x")
            nursery.start_soon(client.send_all, b"y")


async def test_a_second_receiver_is_busy_and_the_first_keeps_the_stream(pair: Pair) -> None:
    client, server = pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.receive_some)
        await wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await client.receive_some()
        nursery.cancel_scope.cancel()
    await server.send_all(b"220 ready\r\n")
    assert await receive_exactly(client, 11) == b"220 ready\r\n"


async def test_a_second_sender_is_busy() -> None:
    client, server = await clogged_pair()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"x")
            await wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await client.send_all(b"y")
            nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)


@pytest.mark.parametrize("close", CLOSES)
async def test_closing_wakes_a_blocked_receiver(
    pair: Pair, close: Callable[[TcpStream], Awaitable[None]]
) -> None:
    client, _ = pair
    woken: list[type[BaseException]] = []

    async def receive() -> None:
        try:
            await client.receive_some()
        except trio.ClosedResourceError as exc:
            woken.append(type(exc))

    with trio.fail_after(STALL):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await wait_all_tasks_blocked()
            assert woken == []
            await close(client)
    assert woken == [trio.ClosedResourceError]


async def test_a_cancelled_receive_loses_no_data(pair: Pair) -> None:
    """Cancelled while waiting, or cancelled before starting: the bytes stay queued."""
    client, server = pair
    with trio.move_on_after(0.05) as waiting:
        await client.receive_some()
    assert waiting.cancelled_caught
    await server.send_all(b"250 ok\r\n")
    await wait_all_tasks_blocked()
    with trio.CancelScope() as already:
        already.cancel()
        await client.receive_some()
    assert already.cancelled_caught
    assert await receive_exactly(client, 8) == b"250 ok\r\n"


@pytest.mark.parametrize("max_bytes", [0, -1])
async def test_a_size_below_one_is_refused(pair: Pair, max_bytes: int) -> None:
    client, _ = pair
    with pytest.raises(ValueError, match="max_bytes"):
        await client.receive_some(max_bytes)


# ---------------------------------------------------------------- connect


@needs_proc
async def test_a_refused_connect_raises_its_errno_and_leaks_nothing() -> None:
    with socket.socket() as unused:  # a loopback port nobody listens on
        unused.bind((HOST, 0))
        port = unused.getsockname()[1]
    before = open_descriptors()
    with pytest.raises(ConnectionRefusedError) as caught:
        await connect_tcp(HOST, port)
    assert caught.value.errno == errno.ECONNREFUSED
    assert caught.value.strerror == os.strerror(errno.ECONNREFUSED)
    assert open_descriptors() == before


@needs_proc
async def test_a_pending_connect_is_cancellable_and_leaks_nothing(
    loopback_clock: MockClock,
) -> None:
    """With the listener's accept queue full, the kernel drops further SYNs: connect waits."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(0)  # Linux queues backlog + 1 connections
        port = listener.getsockname()[1]
        connected: list[TcpStream] = []
        try:
            before = open_descriptors()
            for _ in range(8):
                with trio.move_on_after(5) as deadline:
                    connected.append(await connect_tcp(HOST, port))
                if deadline.cancelled_caught:
                    break
            assert deadline.cancelled_caught, "every connect completed"
            assert 1 <= len(connected) < 8
            assert open_descriptors() == before + len(connected)
        finally:
            for stream in connected:
                await trio.aclose_forcefully(stream)


async def test_both_ends_set_tcp_nodelay(pair: Pair) -> None:
    with socket.socket() as plain:
        assert plain.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    for stream in pair:
        assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_a_datagram_socket_is_refused() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram,
        pytest.raises(ValueError, match="SOCK_STREAM"),
    ):
        TcpStream(datagram)


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        pytest.param("192.0.2.25", (socket.AF_INET, ("192.0.2.25", 25)), id="ipv4"),
        pytest.param("2001:db8::25", (socket.AF_INET6, ("2001:db8::25", 25)), id="ipv6"),
        pytest.param(
            "fe80::25%lo",
            (socket.AF_INET6, ("fe80::25", 25, 0, socket.if_nametoindex("lo"))),
            id="ipv6-zone",
        ),
    ],
)
async def test_connect_address(ip: str, expected: tuple[socket.AddressFamily, object]) -> None:
    """What `connect_tcp` hands to connect(2); a zone becomes the scope id."""
    assert await connect_address(ip, 25) == expected
