"""Which addresses may be contacted, and how many connections each may have at once.

Every outgoing connection of a run (SMTP probes and policy fetches) passes
through one `ConnectionGate`: `refusal(ip)` names why an address must not be
contacted (`address-not-allowed` for loopback, private and reserved targets
without `--allow-private`; `excluded` for `--exclude`), `name_refusal(host)`
does the same for a host name listed (or under a domain listed) in `--exclude`,
and `slot(ip)` is held
for the life of a connection so that no address sees more than `per_ip` at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import trio

from scanner.core.addresses import Exclusions, is_address_allowed
from scanner.models import Interruption, InterruptionKind

REFUSED_PRIVATE = Interruption(InterruptionKind.ADDRESS_NOT_ALLOWED)
REFUSED_EXCLUDED = Interruption(InterruptionKind.EXCLUDED)


class ConnectionGate(Protocol):
    def refusal(self, ip: str) -> Interruption | None: ...

    def name_refusal(self, hostname: str) -> Interruption | None: ...

    def slot(self, ip: str) -> AbstractAsyncContextManager[None]: ...


class Gate:
    """The run's gate: the address guard, `--exclude`, and a limiter per address.

    Limiters exist only while someone holds or waits for one, so the table
    does not grow with the number of addresses a run has seen.
    """

    def __init__(
        self, *, allow_private: bool, exclusions: Exclusions | None = None, per_ip: int = 4
    ) -> None:
        self.allow_private = allow_private
        self.exclusions = exclusions
        self.per_ip = per_ip
        self._limiters: dict[str, tuple[trio.CapacityLimiter, int]] = {}

    def refusal(self, ip: str) -> Interruption | None:
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

    @asynccontextmanager
    async def slot(self, ip: str) -> AsyncIterator[None]:
        limiter, users = self._limiters.get(ip, (trio.CapacityLimiter(self.per_ip), 0))
        self._limiters[ip] = (limiter, users + 1)
        try:
            async with limiter:
                yield
        finally:
            limiter, users = self._limiters[ip]
            if users <= 1:
                del self._limiters[ip]
            else:
                self._limiters[ip] = (limiter, users - 1)
