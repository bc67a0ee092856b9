"""Binding lab sockets: every lab address on one shared port per protocol.

Labs run side by side (parallel tests, other processes), so a port is chosen by
the kernel on the first address and then claimed on every other address; when
any address is taken on that port, everything is closed and another port is
tried. Sockets are bound synchronously (binding a numeric loopback address does
not block) and handed to trio afterwards.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import trio

BACKLOG = 1024
ATTEMPTS = 50


class PortUnavailableError(OSError):
    """No shared free port could be found for a set of lab addresses."""


@dataclass(frozen=True, slots=True)
class BoundTcp:
    port: int
    sockets: tuple[socket.socket, ...]

    def listeners(self) -> list[trio.SocketListener]:
        return [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in self.sockets]


@dataclass(frozen=True, slots=True)
class BoundDns:
    port: int
    udp: socket.socket
    tcp: socket.socket


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _tcp_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _close_all(sockets: Sequence[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def free_port(avoid: Collection[int] = ()) -> int:
    """A port free on 127.0.0.1 right now (for a protocol with no listener at all)."""
    for _ in range(ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in avoid:
            return port
    raise PortUnavailableError("no free port on 127.0.0.1")


def bind_shared_port(addresses: Sequence[str], avoid: Collection[int] = ()) -> BoundTcp:
    """Listen on every address with one common port (not in `avoid`)."""
    if not addresses:
        return BoundTcp(port=free_port(avoid), sockets=())
    for _ in range(ATTEMPTS):
        bound: list[socket.socket] = []
        try:
            first = _tcp_socket(addresses[0], 0)
            bound.append(first)
            port: int = first.getsockname()[1]
            if port in avoid:
                _close_all(bound)
                continue
            for address in addresses[1:]:
                bound.append(_tcp_socket(address, port))
        except OSError as error:
            _close_all(bound)
            if error.errno == errno.EADDRINUSE:
                continue
            raise
        return BoundTcp(port=port, sockets=tuple(bound))
    raise PortUnavailableError(f"no common free port for {len(addresses)} lab addresses")


def bind_dns(address: str = "127.0.0.1", avoid: Collection[int] = ()) -> BoundDns:
    """A UDP and a TCP socket on the same free port of `address` (never 53)."""
    for _ in range(ATTEMPTS):
        udp = socket.socket(_family(address), socket.SOCK_DGRAM)
        try:
            udp.bind((address, 0))
            port: int = udp.getsockname()[1]
            if port in avoid or port == 53:
                udp.close()
                continue
            tcp = _tcp_socket(address, port)
        except OSError as error:
            udp.close()
            if error.errno == errno.EADDRINUSE:
                continue
            raise
        return BoundDns(port=port, udp=udp, tcp=tcp)
    raise PortUnavailableError(f"no free UDP+TCP port on {address}")
