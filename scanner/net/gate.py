"""Which addresses may be contacted, how many connections each may have at once, and when.

Theory of operation
-------------------
Every outgoing connection of a run (SMTP probes and policy fetches) passes through
one `Gate`. Per domain, a `DomainGate` wraps it with the domain's connection budget
(`scanner.core.caps.ConnectionBudget`): the one object a domain's code asks.

* `admit(ip)` decides whether one connection attempt may be made now, and counts
  it: `address-not-allowed` for loopback, private and reserved targets without
  `--allow-private`; `excluded` for `--exclude`; `over-limit` when the domain's
  budget of attempts is spent. `name_refusal(host)` does the same for a host
  name listed (or under a domain listed) in `--exclude`; `admit_name(ip, host)`
  refuses a new MX name on an address that has already been probed under
  `max_names_per_address` names in this run (`over-limit`), so that many cheap
  domains cannot aim the scanner at one victim under many names.
* `slot(ip)` is held for the life of a connection. Each address has its own
  limit of simultaneous connections, between 1 and `per_ip`: `busy(ip)` (the
  server answered 421 or another 4xx, as shared hosts with a per-client
  connection limit do) halves it, `served(ip)` raises it by one, as TCP's
  congestion control does (additive increase, multiplicative decrease). A
  sending MTA facing 421 retries later; the scanner's probe does the same
  (`scanner.scan`), and the lowered limit keeps the retry from meeting the same
  pressure. `was_busy(ip)` tells whether an address has said so in this run.

Connection state exists only for addresses in use or with lowered limits; idle
addresses at full limit are forgotten. What the whole run must remember is the MX names
each address was probed under (for `max_names_per_address`), kept apart as a tuple per
address: about 150 bytes for an address probed under one name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from scanner.core.addresses import Exclusions, is_address_allowed
from scanner.core.caps import ConnectionBudget
from scanner.models import Interruption, InterruptionKind

REFUSED_PRIVATE = Interruption(InterruptionKind.ADDRESS_NOT_ALLOWED)
REFUSED_EXCLUDED = Interruption(InterruptionKind.EXCLUDED)


class ConnectionGate(Protocol):
    """What a domain's connections ask: may this address be contacted, and a slot."""

    def admit(self, ip: str) -> Interruption | None: ...

    def name_refusal(self, hostname: str) -> Interruption | None: ...

    def slot(self, ip: str) -> AbstractAsyncContextManager[None]: ...


class RunGate(ConnectionGate, Protocol):
    """The run's gate: `Gate` in one process, `scanner.workers.RemoteGate` in a worker."""

    busy_signals: int

    async def admit_name(self, ip: str, hostname: str) -> Interruption | None: ...

    def was_busy(self, ip: str) -> bool: ...

    def busy(self, ip: str) -> None: ...

    def served(self, ip: str) -> None: ...


@dataclass(slots=True)
class _Address:
    """One address's connection state."""

    limit: int
    active: int = 0
    waiting: int = 0
    was_busy: bool = False
    wakeup: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)


class Gate:
    """The run's gate: the address guard, `--exclude`, adaptive per-address limits."""

    def __init__(
        self,
        *,
        allow_private: bool,
        exclusions: Exclusions | None = None,
        per_ip: int = 4,
        max_names_per_address: int | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.exclusions = exclusions
        self.per_ip = per_ip
        self.max_names_per_address = max_names_per_address
        self._addresses: dict[str, _Address] = {}
        # The MX names each address was probed under, for the whole scan: kept apart from
        # the connection state (forgotten when idle) and as a tuple, since nearly every
        # address has one name; this is the one table that grows with the scan.
        self._names: dict[str, tuple[str, ...]] = {}
        self.busy_signals = 0  # 421s and their kin seen in this run

    # -- who may be contacted

    def admit(self, ip: str) -> Interruption | None:
        if self.exclusions is not None and self.exclusions.excludes_address(ip):
            return REFUSED_EXCLUDED
        if not is_address_allowed(ip, allow_private=self.allow_private):
            return REFUSED_PRIVATE
        return None

    def name_refusal(self, hostname: str) -> Interruption | None:
        """`excluded` when `--exclude` lists the host name or a parent domain of it."""
        if self.exclusions is not None and self.exclusions.excludes_domain(hostname):
            return REFUSED_EXCLUDED
        return None

    async def admit_name(self, ip: str, hostname: str) -> Interruption | None:
        """`over-limit` for a new name on an address probed under too many names already."""
        if self.max_names_per_address is None:
            return None
        names = self._names.get(ip, ())
        if hostname in names:
            return None
        if len(names) >= self.max_names_per_address:
            return Interruption(
                InterruptionKind.OVER_LIMIT,
                None,
                f"--max-probes-per-address {self.max_names_per_address}: {ip} was already "
                f"probed under {len(names)} other MX names in this scan",
            )
        self._names[ip] = (*names, hostname)
        return None

    # -- how many at once

    def limit(self, ip: str) -> int:
        state = self._addresses.get(ip)
        return state.limit if state is not None else self.per_ip

    def was_busy(self, ip: str) -> bool:
        state = self._addresses.get(ip)
        return state is not None and state.was_busy

    def busy(self, ip: str) -> None:
        """The server said it is busy (421, 4xx): halve the address's limit, down to 1."""
        state = self._state(ip)
        state.limit = max(1, state.limit // 2)
        state.was_busy = True
        self.busy_signals += 1

    def served(self, ip: str) -> None:
        """A session completed: raise the address's limit by one, up to `per_ip`."""
        state = self._addresses.get(ip)
        if state is None or state.limit >= self.per_ip:
            return
        state.limit += 1
        state.wakeup.unpark()

    def acquire_nowait(self, ip: str) -> bool:
        """Take a slot of `ip` if one is free and nobody waits for one; `release` gives it back."""
        state = self._state(ip)
        if state.waiting or state.active >= state.limit:
            self._forget_if_idle(ip, state)
            return False
        state.active += 1
        return True

    def release(self, ip: str) -> None:
        """Give back a slot taken by `acquire_nowait`."""
        state = self._addresses[ip]
        state.active -= 1
        if state.active < state.limit:
            state.wakeup.unpark()
        self._forget_if_idle(ip, state)

    @asynccontextmanager
    async def slot(self, ip: str) -> AsyncIterator[None]:
        state = self._state(ip)
        state.waiting += 1
        try:
            while state.active >= state.limit:
                await state.wakeup.park()
        except BaseException:
            state.waiting -= 1
            self._forget_if_idle(ip, state)
            raise
        state.waiting -= 1
        state.active += 1
        try:
            yield
        finally:
            state.active -= 1
            if state.active < state.limit:
                state.wakeup.unpark()
            self._forget_if_idle(ip, state)

    def _state(self, ip: str) -> _Address:
        state = self._addresses.get(ip)
        if state is None:
            state = self._addresses[ip] = _Address(limit=self.per_ip)
        return state

    def _forget_if_idle(self, ip: str, state: _Address) -> None:
        idle = state.active == 0 and state.waiting == 0
        if idle and state.limit >= self.per_ip and not state.was_busy:
            del self._addresses[ip]


class DomainGate:
    """One domain's view of the run's gate: the same decisions, plus its attempt budget."""

    def __init__(self, gate: RunGate, budget: ConnectionBudget) -> None:
        self.gate = gate
        self.budget = budget

    def admit(self, ip: str) -> Interruption | None:
        """The gate's decision; when admitted, one attempt of the budget is spent."""
        refusal = self.gate.admit(ip)
        if refusal is not None:
            return refusal
        if not self.budget.take():
            return Interruption(
                InterruptionKind.OVER_LIMIT,
                None,
                f"--max-connections-per-domain {self.budget.limit}: the domain's "
                "connection attempts are spent",
            )
        return None

    def name_refusal(self, hostname: str) -> Interruption | None:
        return self.gate.name_refusal(hostname)

    def slot(self, ip: str) -> AbstractAsyncContextManager[None]:
        return self.gate.slot(ip)
