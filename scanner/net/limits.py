"""Taking a `trio.CapacityLimiter` or `trio.Semaphore` token without a schedule point
when one is free.

`async with limiter` always yields to the scheduler, even with tokens to spare: a
task switch per DNS lookup and per domain. `holding(limiter)` takes a free token at
once and waits only when there is none (in turn: trio's limiter and semaphore stay
fair, as `acquire_nowait` refuses while others wait). It is for callers that reach a
checkpoint of their own soon after, such as a lookup waiting for its reply.

A semaphore costs less per token than a limiter (no borrower is recorded): the DNS
lookups take one; the domains take the governor's limiter, whose size changes.
"""

from __future__ import annotations

from types import TracebackType

import trio


def holding(limiter: trio.CapacityLimiter | trio.Semaphore) -> _Holding:
    """`async with holding(limiter):` holds a token of `limiter` for the block."""
    return _Holding(limiter)


class _Holding:
    __slots__ = ("_limiter",)

    def __init__(self, limiter: trio.CapacityLimiter | trio.Semaphore) -> None:
        self._limiter = limiter

    async def __aenter__(self) -> None:
        try:
            self._limiter.acquire_nowait()
        except trio.WouldBlock:
            await self._limiter.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._limiter.release()
