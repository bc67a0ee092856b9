"""`holding`: a limiter token at once when one is free, in turn when none is."""

from __future__ import annotations

import pytest
import trio
from trio.testing import assert_checkpoints, assert_no_checkpoints, wait_all_tasks_blocked

from scanner.net.limits import holding


async def test_a_free_token_is_taken_without_a_checkpoint() -> None:
    limiter = trio.CapacityLimiter(1)
    with assert_no_checkpoints():
        async with holding(limiter):
            assert limiter.borrowed_tokens == 1
    assert limiter.borrowed_tokens == 0


async def test_without_a_free_token_the_holder_waits_its_turn() -> None:
    limiter = trio.CapacityLimiter(1)
    order: list[str] = []

    async def hold(name: str) -> None:
        async with holding(limiter):
            order.append(name)
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        await limiter.acquire()
        nursery.start_soon(hold, "waiting first")
        await wait_all_tasks_blocked()
        limiter.release()  # the waiter's now: a newcomer must not take it first
        with assert_checkpoints():
            await hold("newcomer")
    assert order == ["waiting first", "newcomer"]


async def test_the_token_is_given_back_on_an_exception() -> None:
    limiter = trio.CapacityLimiter(1)
    with pytest.raises(KeyError):
        async with holding(limiter):
            raise KeyError("x")
    assert limiter.borrowed_tokens == 0


async def test_a_cancelled_wait_takes_no_token() -> None:
    limiter = trio.CapacityLimiter(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire_on_behalf_of, "another holder")
        await wait_all_tasks_blocked()
        with trio.move_on_after(0.01) as scope:
            async with holding(limiter):
                pytest.fail("the token was not free")
        assert scope.cancelled_caught
        assert limiter.statistics().tasks_waiting == 0
        limiter.release_on_behalf_of("another holder")
    assert limiter.borrowed_tokens == 0
