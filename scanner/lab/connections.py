"""Connection bookkeeping shared by the lab's TCP servers."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import trio

# A lab server drops a client that stays silent this long (seconds).
IDLE_TIMEOUT = 60.0


class ConnectionStats:
    """Per-address counts of accepted connections: total, open now and the peak."""

    def __init__(self) -> None:
        self._total: Counter[str] = Counter()
        self._open: Counter[str] = Counter()
        self._peak: Counter[str] = Counter()

    @contextmanager
    def track(self, ip: str) -> Iterator[None]:
        """Count one connection to `ip` for as long as the block runs."""
        self._total[ip] += 1
        self._open[ip] += 1
        self._peak[ip] = max(self._peak[ip], self._open[ip])
        try:
            yield
        finally:
            self._open[ip] -= 1

    def total(self, ip: str) -> int:
        return self._total[_canonical(ip)]

    def open_now(self, ip: str) -> int:
        return self._open[_canonical(ip)]

    def peak(self, ip: str) -> int:
        return self._peak[_canonical(ip)]

    def addresses(self) -> list[str]:
        """Every address that accepted a connection since the start (or the last `reset`)."""
        return list(self._total)

    def reset(self) -> None:
        """Count afresh from now (a benchmark between runs); open connections stay open."""
        self._total = Counter()
        self._peak = Counter({ip: count for ip, count in self._open.items() if count})


def _canonical(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def local_ip(stream: trio.SocketStream) -> str:
    """The lab address a client connected to (canonical text form)."""
    return _canonical(str(stream.socket.getsockname()[0]))
