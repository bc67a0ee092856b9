"""`TlsStream` against trio's generic stream contract (`trio.testing.check_*_stream`).

The client under test talks to trio's own `SSLStream` (stdlib ssl, trustme
certificate) over in-memory transports: `memory_stream_pair` (buffered) and
`lockstep_stream_pair` (every send waits for the peer's receive, trio's
"clogged" stream). No sockets and no threads, so the tests run on pytest-trio's
`autojump_clock` and never depend on how busy the machine is.

`TlsStream` meets the sending half of the contract (`check_one_way_stream` with
`TlsStream` as the sender, clogged variant included). It does not meet
`check_two_way_stream`, whose flipped half (`TlsStream` receiving) and duplex
transfer fail, in three places:

- by design (see `scanner.net.tls`), one operation at a time: a send while a
  receive waits raises `BusyResourceError`, so there is no full duplex;
- by design, any cancelled or failed operation leaves the stream broken, a
  cancelled receive included (trio's contract wants it usable afterwards);
- a size that is no integer (`receive_some(1.5)`) is a `TypeError` that leaves the
  stream whole.

The receiving behaviours it does promise are tested one by one.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
import trustme
from OpenSSL import SSL

from scanner.net.tls import TlsStream, build_client_context

MX = "mx.example.net"

Pair = tuple[TlsStream, trio.SSLStream[trio.abc.Stream]]
PairMaker = Callable[[], Awaitable[Pair]]


@pytest.fixture(scope="module")
def server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert(MX).configure_cert(context)
    # No TLS 1.3 session tickets: they would be a server write after the handshake,
    # which on a lockstep transport blocks until the client happens to read.
    context.num_tickets = 0
    return context


@pytest.fixture(scope="module")
def client_context() -> SSL.Context:
    return build_client_context()


def pair_maker(
    transports: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]],
    client_context: SSL.Context,
    server_context: ssl.SSLContext,
) -> PairMaker:
    """Connected (client `TlsStream`, server `SSLStream`) pairs, handshake done."""

    async def make() -> Pair:
        client_transport, server_transport = transports()
        client = TlsStream(client_transport, client_context, MX)
        server = trio.SSLStream(server_transport, server_context, server_side=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.do_handshake)
            nursery.start_soon(server.do_handshake)
        return client, server

    return make


@pytest.fixture
def buffered(client_context: SSL.Context, server_context: ssl.SSLContext) -> PairMaker:
    return pair_maker(trio.testing.memory_stream_pair, client_context, server_context)


@pytest.fixture
def clogged(client_context: SSL.Context, server_context: ssl.SSLContext) -> PairMaker:
    return pair_maker(trio.testing.lockstep_stream_pair, client_context, server_context)


# ---------------------------------------------------------------- the sending half, generically


async def test_sending_half_meets_the_one_way_stream_contract(
    buffered: PairMaker, clogged: PairMaker, autojump_clock: trio.testing.MockClock
) -> None:
    await trio.testing.check_one_way_stream(buffered, clogged)


# ---------------------------------------------------------------- the receiving half, one by one


async def test_receive_gets_data_then_end_of_stream_after_close_notify(
    buffered: PairMaker, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await buffered()
    await server.send_all(b"221 bye\r\n")
    await server.aclose()  # sends close_notify
    assert await client.receive_some() == b"221 bye\r\n"
    assert await client.receive_some(1) == b""
    assert await client.receive_some(1) == b""  # and stays at the end
    await client.aclose()


async def test_transport_eof_without_close_notify_is_end_of_stream(
    buffered: PairMaker, autojump_clock: trio.testing.MockClock
) -> None:
    """SMTP servers commonly drop the connection after QUIT without a close_notify."""
    client, server = await buffered()
    await server.send_all(b"221 bye\r\n")
    await server.transport_stream.aclose()
    assert await client.receive_some() == b"221 bye\r\n"
    assert await client.receive_some() == b""
    await client.aclose()


@pytest.mark.parametrize("max_bytes", [0, -1])
async def test_receive_rejects_a_size_below_one(
    buffered: PairMaker, max_bytes: int, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await buffered()
    with pytest.raises(ValueError, match="max_bytes"):
        await client.receive_some(max_bytes)
    # a rejected argument is not an operation: the stream still works
    await server.send_all(b"x")
    assert await client.receive_some(1) == b"x"
    await client.aclose()


async def test_receive_honours_max_bytes(
    buffered: PairMaker, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await buffered()
    await server.send_all(b"abc")
    assert await client.receive_some(1) == b"a"
    assert await client.receive_some(None) == b"bc"
    await client.aclose()


async def test_concurrent_receives_are_busy(
    buffered: PairMaker, autojump_clock: trio.testing.MockClock
) -> None:
    client, _ = await buffered()
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some, 1)
            nursery.start_soon(client.receive_some, 1)
    await client.aclose()


async def test_receive_after_close_is_closed(
    buffered: PairMaker, autojump_clock: trio.testing.MockClock
) -> None:
    client, _ = await buffered()
    await client.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some(1)


async def test_closing_wakes_a_blocked_receive(
    buffered: PairMaker, autojump_clock: trio.testing.MockClock
) -> None:
    client, _ = await buffered()

    async def receive_expecting_closed() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await client.receive_some(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_expecting_closed)
        await trio.testing.wait_all_tasks_blocked()
        await trio.aclose_forcefully(client)


# ---------------------------------------------------------------- where it parts from the contract


async def test_a_cancelled_receive_breaks_the_stream(
    buffered: PairMaker, autojump_clock: trio.testing.MockClock
) -> None:
    """trio's contract wants the stream usable after a cancelled receive; ours is broken."""
    client, server = await buffered()
    with trio.move_on_after(1):
        await client.receive_some(1)
    await server.send_all(b"x")
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some(1)
    await client.aclose()


async def test_send_while_receiving_is_busy(
    buffered: PairMaker, autojump_clock: trio.testing.MockClock
) -> None:
    """No full duplex: one operation at a time (SMTP and HTTP/1.1 are request/response)."""
    client, _ = await buffered()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.receive_some, 1)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await client.send_all(b"x")
        nursery.cancel_scope.cancel()
    await client.aclose()


async def test_a_non_integer_size_is_rejected_without_breaking_the_stream(
    buffered: PairMaker, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await buffered()
    with pytest.raises(TypeError):
        await client.receive_some(1.5)  # type: ignore[arg-type]
    await server.send_all(b"x")
    assert await client.receive_some(1) == b"x"
