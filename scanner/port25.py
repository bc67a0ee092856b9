"""The run's watch on port 25: results are held until the network is known to let it out.

The writer of a scan (one process, or the parent of worker processes) hands each
finished result here with its connect tally (`scanner.core.egress.tally_of_facts`).
While no port-25 handshake has completed, results are held, not written. The first
completed handshake releases them all, and every later result goes straight
through. When only failures have been seen, across enough networks (or when the
input ends, or too many results are held), the canaries and controls are asked
once (`scanner.net.canaries`); `scanner.core.egress.decide` then says open (the
held results are written) or blocked (they are dropped and `on_blocked` stops the
run): no verdict from blind probes is written.

Every result's connect attempts are counted for the whole run, after the decision
too. When the run ends open with the domains' port-25 connects failing markedly
(`scanner.core.egress.rates_low`), the canaries are asked `CANARY_ROUNDS` times
and their rate compared with the domains' (`compare_rates`): the decision then
carries the comparison, and whether the host appears throttled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from scanner.core.egress import (
    CANARY_ROUNDS,
    ConnectRate,
    ConnectTally,
    ControlEvidence,
    Decision,
    Egress,
    Thresholds,
    ask_canaries,
    canary_rate,
    compare_rates,
    decide,
    rates_low,
)

_T = TypeVar("_T")


class Port25Watch(Generic[_T]):
    """Holds results of type `_T` until the decision; see the module's theory of operation."""

    def __init__(
        self,
        thresholds: Thresholds,
        consult: Callable[[], Awaitable[ControlEvidence]],
        release: Callable[[_T], None],
        on_blocked: Callable[[Decision], None],
    ) -> None:
        self._thresholds = thresholds
        self._consult = consult
        self._release = release
        self._on_blocked = on_blocked
        self._state = ConnectTally()
        self._rate = ConnectRate()  # every attempt of the run, after the decision too
        self.compares_rates = True
        self._held: list[_T] = []
        self._asking = False
        self.decision = Decision(Egress.PENDING)

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def pending(self) -> bool:
        """Undecided: results still need their tallies."""
        return self.decision.egress is Egress.PENDING

    async def add(self, item: _T, connects: ConnectTally) -> None:
        """Write `item` now, hold it, or drop it (blocked); may ask the canaries first."""
        egress = self.decision.egress
        self._rate = self._rate.plus(connects.rate)
        if egress is Egress.OPEN:
            self._release(item)
            return
        if egress is Egress.BLOCKED:
            return
        self._state = self._state.plus(connects)
        self._held.append(item)
        await self._settle(ended=False)

    async def finish(self) -> Decision:
        """The input has ended: decide now (asking the canaries if need be), and release."""
        if self.decision.egress is Egress.PENDING:
            await self._settle(ended=True)
        if self.decision.egress is Egress.PENDING:
            self._open(Decision(Egress.OPEN, self._state))
        low = rates_low(self._rate, self._thresholds)
        if self.compares_rates and self.decision.egress is Egress.OPEN and low:
            rounds = [await self._consult() for _ in range(CANARY_ROUNDS)]
            rates = compare_rates(self._rate, canary_rate(rounds), self._thresholds)
            self.decision = dataclasses.replace(self.decision, rates=rates)
        return self.decision

    async def _settle(self, *, ended: bool) -> None:
        decision = decide(self._state, None, self._thresholds, ended=ended)
        if decision.egress is Egress.OPEN:
            self._open(decision)
            return
        if not self._state.failed and len(self._held) >= self._thresholds.hold:
            self._open(Decision(Egress.OPEN, self._state))  # no port-25 attempt so far
            return
        if self._asking or not ask_canaries(
            self._state, self._thresholds, held=len(self._held), ended=ended
        ):
            return
        self._asking = True
        try:
            evidence = await self._consult()
        finally:
            self._asking = False
        if self.decision.egress is not Egress.PENDING:
            return  # a result that arrived meanwhile decided it
        decision = decide(self._state, evidence, self._thresholds, ended=ended)
        if decision.egress is Egress.BLOCKED:
            self.decision = decision
            self._held.clear()
            self._on_blocked(decision)
        else:
            self._open(decision)

    def _open(self, decision: Decision) -> None:
        self.decision = decision
        held, self._held = self._held, []
        for item in held:
            self._release(item)


def disabled_watch(release: Callable[[_T], None]) -> Port25Watch[_T]:
    """A watch that writes everything at once (the check is off)."""

    async def never() -> ControlEvidence:
        raise AssertionError("a disabled watch asks nothing")

    watch: Port25Watch[_T] = Port25Watch(Thresholds(), never, release, lambda _: None)
    watch.decision = Decision(Egress.OPEN)
    watch.compares_rates = False
    return watch
