"""Simulated link latency for the lab's TCP servers (the kernel here has no netem).

Theory of operation: a server's connection is wrapped in a `DelayedSendStream`,
which stands for the server's end of a slow link. `send_all` stamps the bytes
with a due time (now + delay), queues them and returns; one delivery task per
connection writes them to the socket in order, each when due. The server goes on
at once (reads the next command, sleeps, sends again) while earlier bytes are in
flight, as over a real link, so:

- every reply, and every TLS flight (TLS runs above the wrapper), reaches the
  client `delay` after the server sent it: each round trip grows by `delay`;
- bytes sent in quick succession keep their spacing (a late injection 20 ms
  after the 220 still arrives 20 ms after it), and a server flight the client
  does not wait for (TLS 1.3 session tickets) does not hold up the next reply.

Receives pass straight through: the whole round-trip delay sits on the server's
side. With a delay of 0 nothing is wrapped: the servers see the socket stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

LINK_QUEUE = 64  # sends in flight per connection before `send_all` waits (backpressure)


class DelayedSendStream(trio.abc.Stream):
    """`transport` as seen by a client across a link that delivers each send `delay` seconds late.

    Run `deliver` in a task for as long as the stream is used (`delayed_sends`
    does). Like closing a kernel socket with data still in its send buffer,
    `aclose` returns at once and the bytes in flight still go out: `deliver`
    closes the transport after the last of them. After the client goes away,
    `send_all` raises BrokenResourceError; after `aclose`, ClosedResourceError.
    """

    def __init__(self, transport: trio.abc.Stream, delay: float) -> None:
        self.transport = transport
        self.delay = delay
        self._in_flight, self._arriving = trio.open_memory_channel[tuple[float, bytes]](LINK_QUEUE)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._in_flight.send((trio.current_time() + self.delay, bytes(data)))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()  # a spurious wake-up is allowed by the contract

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.transport.receive_some(max_bytes)

    async def deliver(self) -> None:
        """Write queued bytes to the transport, each when due; then close it."""
        try:
            async with self._arriving:
                async for due, data in self._arriving:
                    await trio.sleep_until(due)
                    await self.transport.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away: the next send_all finds the queue closed
        finally:
            await self.transport.aclose()

    async def aclose(self) -> None:
        self._in_flight.close()
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def delayed_sends(stream: trio.abc.Stream, delay: float) -> AsyncIterator[trio.abc.Stream]:
    """`stream` itself when `delay` is 0, else a DelayedSendStream over it for the block.

    Leaving the block closes the stream once the bytes still in flight are
    delivered (at most `delay` later). An exception raised in the block comes
    out unwrapped (the delivery task never raises).
    """
    if delay <= 0:
        yield stream
        return
    link = DelayedSendStream(stream, delay)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.deliver)
            try:
                yield link
            finally:
                await link.aclose()  # delivery goes on until the queue is empty
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
